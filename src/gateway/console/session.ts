/**
 * The console's sessions: a login with the admin token gives a signed cookie (HttpOnly,
 * SameSite=Strict), valid on every replica and across restarts, and a CSRF token derived from it
 * that every state-changing request must carry in `X-CSRF-Token`. Both are keyed by the admin
 * token: rotating it ends every session. A logout revokes its session in the store (shared by the
 * replicas) until the session would have expired anyway.
 *
 * Failed logins are limited per client address ({@link LOGIN_FAILURES} a minute; at most
 * {@link LOGIN_TRACKED} addresses tracked, the oldest forgotten first).
 * @module
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { Store } from "../../store/types.js";

/** Name of the session cookie. */
export const SESSION_COOKIE = "wb_console";
/** How long a session lasts, seconds. */
export const SESSION_TTL_SEC = 12 * 3600;
/** Failed logins allowed per address and minute. */
export const LOGIN_FAILURES = 5;
/** Addresses whose failures are tracked at once. */
export const LOGIN_TRACKED = 1000;

const b64 = (b: Buffer): string => b.toString("base64url");

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** A valid session: its nonce (its identity) and when it ends. */
export interface Session {
  nonce: string;
  expiresAt: number;
  csrf: string;
}

/** Issues and checks sessions. */
export class Sessions {
  readonly #key: Buffer;
  readonly #store: Store;
  readonly #now: () => number;
  readonly #failures = new Map<string, { count: number; since: number }>();
  readonly #secure: boolean;

  /**
   * @param adminToken the admin token (the key of sessions is derived from it)
   * @param store where logouts are remembered
   * @param now the clock, ms
   * @param secure add `Secure` to the cookie (the public URL is https)
   */
  constructor(adminToken: string, store: Store, now: () => number, secure: boolean) {
    this.#key = createHmac("sha256", adminToken).update("wecom-bridge console sessions").digest();
    this.#store = store;
    this.#now = now;
    this.#secure = secure;
  }

  #mac(text: string): string {
    return b64(createHmac("sha256", this.#key).update(text).digest());
  }

  /** A new session: its cookie value and CSRF token. */
  issue(): { cookie: string; session: Session } {
    const nonce = b64(randomBytes(18));
    const expiresAt = this.#now() + SESSION_TTL_SEC * 1000;
    const body = `v1.${expiresAt}.${nonce}`;
    return { cookie: `${body}.${this.#mac(body)}`, session: { nonce, expiresAt, csrf: this.#mac(`csrf.${nonce}`) } };
  }

  /** The session of a cookie value, when it is genuine, unexpired and not logged out. */
  async check(value: string | undefined): Promise<Session | undefined> {
    if (value === undefined || value.length > 200) return undefined;
    const parts = value.split(".");
    if (parts.length !== 4 || parts[0] !== "v1") return undefined;
    const [, exp, nonce, mac] = parts as [string, string, string, string];
    if (!same(mac, this.#mac(`v1.${exp}.${nonce}`))) return undefined;
    const expiresAt = Number(exp);
    const now = this.#now();
    if (!Number.isSafeInteger(expiresAt) || expiresAt <= now) return undefined;
    if ((await this.#store.getState("", `console:logout:${nonce}`, now)) !== undefined) return undefined;
    return { nonce, expiresAt, csrf: this.#mac(`csrf.${nonce}`) };
  }

  /** True while a session checked before has not expired nor been logged out (a long Live stream asks). */
  async stillValid(session: Session): Promise<boolean> {
    const now = this.#now();
    return session.expiresAt > now && (await this.#store.getState("", `console:logout:${session.nonce}`, now)) === undefined;
  }

  /** End a session on every replica. */
  async revoke(session: Session): Promise<void> {
    await this.#store.updateState("", `console:logout:${session.nonce}`, null, this.#now(), () => ({ value: 1, expiresAt: session.expiresAt }));
  }

  /** True when the CSRF token is the session's. */
  csrfMatches(session: Session, token: string | undefined): boolean {
    return token !== undefined && same(token, session.csrf);
  }

  /** The `Set-Cookie` of a session (or, without one, the one that clears it). */
  setCookie(value: string | undefined): string {
    const attrs = `Path=/; HttpOnly; SameSite=Strict${this.#secure ? "; Secure" : ""}`;
    return value === undefined ? `${SESSION_COOKIE}=; ${attrs}; Max-Age=0` : `${SESSION_COOKIE}=${value}; ${attrs}; Max-Age=${SESSION_TTL_SEC}`;
  }

  /** False when the address failed too often this minute (refuse without checking the token). */
  mayTry(address: string): boolean {
    const f = this.#failures.get(address);
    return f === undefined || f.count < LOGIN_FAILURES || this.#now() - f.since > 60_000;
  }

  /** Count a failed login of the address. */
  failed(address: string): void {
    const now = this.#now();
    const f = this.#failures.get(address);
    this.#failures.delete(address);
    this.#failures.set(address, f === undefined || now - f.since > 60_000 ? { count: 1, since: now } : { count: f.count + 1, since: f.since });
    if (this.#failures.size > LOGIN_TRACKED) this.#failures.delete(this.#failures.keys().next().value as string);
  }

  /** Forget the failures of an address that logged in. */
  succeeded(address: string): void {
    this.#failures.delete(address);
  }
}

/** The value of one cookie of a `Cookie` header. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}
