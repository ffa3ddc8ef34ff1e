/**
 * Access tokens of the WeCom simulator: `gettoken` (one token per app, the same one while it
 * lives), expiry by the simulator's clock, revocation, and the checks every other API runs first.
 * @module
 */
import type { Handler, SimApp, SimContext } from "./context.js";
import { SimApiError } from "./errors.js";

interface TokenInfo {
  app: SimApp;
  expiresAt: number;
  revoked: boolean;
}

/** gettoken and the access_token checks. */
export class TokenService {
  readonly #ctx: SimContext;
  readonly #ttlMs: number;
  readonly #tokens = new Map<string, TokenInfo>();
  readonly #appTokens = new Map<number, string>();
  /** Every access token issued, in order (tests check that none leaks). */
  readonly issued: string[] = [];

  /**
   * @param ctx the shared simulator context
   * @param ttlMs a token's life, ms
   */
  constructor(ctx: SimContext, ttlMs: number) {
    this.#ctx = ctx;
    this.#ttlMs = ttlMs;
  }

  /** The routes of this family. */
  readonly routes: Record<string, Handler> = {
    gettoken: ({ url }) => {
      const corpid = url.searchParams.get("corpid");
      const secret = url.searchParams.get("corpsecret");
      if (corpid === null || corpid === "") throw new SimApiError(41002, "corpid missing");
      if (secret === null || secret === "") throw new SimApiError(41004, "corpsecret missing");
      if (corpid !== this.#ctx.corpId) throw new SimApiError(40013, "invalid corpid");
      const app = [...this.#ctx.apps.values()].find((a) => a.cfg.secret === secret);
      if (app === undefined) throw new SimApiError(40001, "invalid credential");
      const now = this.#ctx.now();
      const current = this.#appTokens.get(app.cfg.agentId);
      const info = current === undefined ? undefined : this.#tokens.get(current);
      if (current !== undefined && info !== undefined && !info.revoked && now < info.expiresAt) {
        // within its lifetime WeCom answers the same token
        return { json: { errcode: 0, errmsg: "ok", access_token: current, expires_in: Math.floor((info.expiresAt - now) / 1000) } };
      }
      const token = this.#ctx.ids.accessToken();
      this.issued.push(token);
      this.#tokens.set(token, { app, expiresAt: now + this.#ttlMs, revoked: false });
      this.#appTokens.set(app.cfg.agentId, token);
      return { json: { errcode: 0, errmsg: "ok", access_token: token, expires_in: Math.floor(this.#ttlMs / 1000) } };
    },
  };

  /** Every token issued so far becomes invalid: its next use answers 42001, and gettoken issues a new one. */
  expireAll(): void {
    for (const t of this.#tokens.values()) t.revoked = true;
  }

  /** The app of a valid access_token. @throws SimApiError 41001, 40014, 42001 */
  auth(url: URL): SimApp {
    const token = url.searchParams.get("access_token");
    if (token === null || token === "") throw new SimApiError(41001, "access_token missing");
    const info = this.#tokens.get(token);
    if (info === undefined) throw new SimApiError(40014, "invalid access_token");
    if (info.revoked || this.#ctx.now() >= info.expiresAt) throw new SimApiError(42001, "access_token expired");
    return info.app;
  }

  /** The app of a valid token that may call kf/* (the app authorised for KF). @throws SimApiError 48002 */
  authKf(url: URL): SimApp {
    const app = this.auth(url);
    if (app.cfg.kf !== true) throw new SimApiError(48002, "api forbidden, the app is not authorised for WeChat Customer Service");
    return app;
  }
}
