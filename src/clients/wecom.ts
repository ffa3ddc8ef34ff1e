/**
 * The WeCom API client: access tokens (cached in the store, refreshed early, single-flight,
 * refreshed once on 40014/42001), KF `sync_msg`, `media/get`. Every call goes to the configured
 * `apiBase`, so the gateway can be pointed at the simulator or a proxy. Secrets and tokens never
 * appear in errors or logs.
 * @module
 */
import { createHash } from "node:crypto";
import { BridgeError } from "../errors.js";
import { encodeKfSyncMsgRequest, type KfSyncMsgRequestInput } from "../wecom/kf/encode.js";
import { decodeKfSyncMsg, type KfSyncMsgResponse } from "../wecom/kf/decode.js";
import type { Store } from "../store/types.js";
import { classifyWeComFailure, type WeComErrorClass } from "../wecom/errcodes.js";

/** WeCom answered with a non-zero errcode, or could not be reached. */
export class WeComApiError extends BridgeError {
  /** The errcode (0 when the failure was HTTP or the network). */
  readonly errcode: number;
  /** The API path, e.g. `kf/sync_msg`. */
  readonly api: string;
  /** HTTP status of the answer; undefined when none came (network error, timeout). */
  readonly httpStatus: number | undefined;
  /** What the failure means (see `wecom/errcodes.ts`): transient, token, configuration or final. */
  readonly kind: WeComErrorClass;
  /** True when trying again later may succeed (every class but `final`). */
  readonly retryable: boolean;

  /**
   * @param api the API path
   * @param errcode WeCom's errcode, or 0 for HTTP/network failures
   * @param message one readable line, free of secrets
   * @param httpStatus the answer's HTTP status; undefined when no answer came
   * @param kind the class, when the caller knows better than the errcode (e.g. an oversized file is final)
   */
  constructor(api: string, errcode: number, message: string, httpStatus: number | undefined, kind?: WeComErrorClass) {
    super(errcode === 0 ? (httpStatus === undefined ? "wecom_unreachable" : "wecom_http") : `wecom_${errcode}`, `${api}: ${errcode !== 0 ? `errcode ${errcode} ` : ""}${message}`);
    this.errcode = errcode;
    this.api = api;
    this.httpStatus = httpStatus;
    this.kind = kind ?? classifyWeComFailure(httpStatus === undefined ? { api, errcode, network: true } : { api, errcode, httpStatus });
    this.retryable = this.kind !== "final";
  }
}

/** Credentials of one token: a corp and an app secret. */
export interface WeComCredentials {
  corpId: string;
  secret: string;
}

/** Options of {@link WeComClient}. */
export interface WeComClientOptions {
  apiBase: string;
  store: Store;
  /** Refresh this long before expiry, ms. Default 5 minutes. */
  refreshEarlyMs?: number;
  /** Per-request timeout, ms. Default 10 s. */
  timeoutMs?: number;
  now?: () => number;
}

/** A downloaded media file. */
export interface MediaFile {
  bytes: Buffer;
  contentType: string;
  fileName?: string;
}

function tokenKey(c: WeComCredentials): string {
  return createHash("sha256").update(`${c.corpId}\u0000${c.secret}`).digest("hex").slice(0, 32);
}

function fileNameOf(disposition: string | null): string | undefined {
  if (!disposition) return undefined;
  const star = /filename\*=(?:UTF-8'')?([^;]+)/i.exec(disposition);
  if (star?.[1]) {
    try {
      return decodeURIComponent(star[1].trim().replace(/^"|"$/g, "")) as string;
    } catch {
      /* fall through */
    }
  }
  return /filename="?([^";]+)"?/i.exec(disposition)?.[1];
}

/** The WeCom API client. */
export class WeComClient {
  readonly #o: Required<Omit<WeComClientOptions, "store">> & { store: Store };
  readonly #inflight = new Map<string, Promise<string>>();
  readonly #memory = new Map<string, { token: string; expiresAt: number }>();
  /** Count of calls by api and errcode, for metrics. */
  onResult?: (api: string, errcode: number) => void;

  /** @param options where and how to call */
  constructor(options: WeComClientOptions) {
    this.#o = { refreshEarlyMs: 5 * 60_000, timeoutMs: 10_000, now: Date.now, ...options };
  }

  async #fetch(api: string, url: string, init: RequestInit): Promise<Response> {
    try {
      return await fetch(url, { ...init, signal: AbortSignal.timeout(this.#o.timeoutMs) });
    } catch (e) {
      this.onResult?.(api, -2);
      throw new WeComApiError(api, 0, `request failed (${(e as Error).name === "TimeoutError" ? "timeout" : "network error"})`, undefined);
    }
  }

  async #json(api: string, res: Response): Promise<Record<string, unknown>> {
    if (res.status >= 500) throw new WeComApiError(api, 0, `HTTP ${res.status}`, res.status);
    let body: unknown;
    try {
      body = await res.json();
    } catch {
      throw new WeComApiError(api, 0, `HTTP ${res.status} with a body that is not JSON`, res.status);
    }
    if (typeof body !== "object" || body === null) throw new WeComApiError(api, 0, "answer is not a JSON object", res.status, "final");
    const errcode = Number((body as { errcode?: unknown }).errcode ?? 0);
    this.onResult?.(api, errcode);
    if (errcode !== 0) {
      const errmsg = String((body as { errmsg?: unknown }).errmsg ?? "").split(",")[0] ?? "";
      throw new WeComApiError(api, errcode, errmsg, res.status);
    }
    return body as Record<string, unknown>;
  }

  /**
   * An access token for these credentials: from memory, else the store, else `gettoken`;
   * refreshed early; concurrent callers share one request.
   */
  async token(c: WeComCredentials, force = false): Promise<string> {
    const key = tokenKey(c);
    const now = this.#o.now();
    const fresh = (t: { expiresAt: number } | undefined) => t !== undefined && t.expiresAt - this.#o.refreshEarlyMs > now;
    if (!force) {
      const mem = this.#memory.get(key);
      if (mem && fresh(mem)) return mem.token;
    }
    const running = this.#inflight.get(key);
    if (running) return running;
    const p = (async () => {
      if (!force) {
        const row = await this.#o.store.getToken(c.corpId, key);
        if (row && fresh(row)) {
          this.#memory.set(key, row);
          return row.token;
        }
      }
      const url = `${this.#o.apiBase}/cgi-bin/gettoken?corpid=${encodeURIComponent(c.corpId)}&corpsecret=${encodeURIComponent(c.secret)}`;
      const body = await this.#json("gettoken", await this.#fetch("gettoken", url, { method: "GET" }));
      const token = String(body.access_token ?? "");
      if (token === "") throw new WeComApiError("gettoken", 0, "answer has no access_token", 200, "final");
      const expiresAt = this.#o.now() + Number(body.expires_in ?? 7200) * 1000;
      this.#memory.set(key, { token, expiresAt });
      await this.#o.store.putToken({ tenant: c.corpId, key, token, expiresAt });
      return token;
    })();
    this.#inflight.set(key, p);
    try {
      return await p;
    } finally {
      this.#inflight.delete(key);
    }
  }

  /** Forget a token (after WeCom called it invalid). */
  async invalidate(c: WeComCredentials): Promise<void> {
    const key = tokenKey(c);
    this.#memory.delete(key);
    await this.#o.store.deleteToken(c.corpId, key);
  }

  /** Call an API with a token, refreshing it once on 40014/42001. */
  async #withToken<T>(c: WeComCredentials, call: (token: string) => Promise<T>): Promise<T> {
    try {
      return await call(await this.token(c));
    } catch (e) {
      if (e instanceof WeComApiError && e.kind === "token") {
        await this.invalidate(c);
        return call(await this.token(c, true));
      }
      throw e;
    }
  }

  /** POST a JSON API and return its answer. */
  async postJson(c: WeComCredentials, api: string, body: unknown): Promise<Record<string, unknown>> {
    return this.#withToken(c, async (token) => {
      const res = await this.#fetch(api, `${this.#o.apiBase}/cgi-bin/${api}?access_token=${encodeURIComponent(token)}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      return this.#json(api, res);
    });
  }

  /** One `kf/sync_msg` page. */
  async syncMsg(c: WeComCredentials, input: KfSyncMsgRequestInput): Promise<KfSyncMsgResponse> {
    const body = await this.postJson(c, "kf/sync_msg", encodeKfSyncMsgRequest(input));
    return decodeKfSyncMsg(body as never, { corpId: c.corpId });
  }

  /** Download a media file by media_id (`media/get`). */
  async getMedia(c: WeComCredentials, mediaId: string): Promise<MediaFile> {
    return this.#withToken(c, async (token) => {
      const url = `${this.#o.apiBase}/cgi-bin/media/get?access_token=${encodeURIComponent(token)}&media_id=${encodeURIComponent(mediaId)}`;
      const res = await this.#fetch("media/get", url, { method: "GET" });
      const type = res.headers.get("content-type") ?? "application/octet-stream";
      if (type.includes("json") || type.startsWith("text/plain")) {
        await this.#json("media/get", res); // throws WeCom's errcode
        throw new WeComApiError("media/get", 0, "answer is JSON, not a file", res.status, "final");
      }
      if (res.status !== 200) throw new WeComApiError("media/get", 0, `HTTP ${res.status}`, res.status);
      this.onResult?.("media/get", 0);
      const file: MediaFile = { bytes: Buffer.from(await res.arrayBuffer()), contentType: type };
      const name = fileNameOf(res.headers.get("content-disposition"));
      if (name !== undefined) file.fileName = name;
      return file;
    });
  }

  /** Download a URL (an AI bot's encrypted media URL); the bytes are returned as sent. */
  async download(url: string): Promise<MediaFile> {
    const res = await this.#fetch("bot/media", url, { method: "GET" });
    if (res.status !== 200) throw new WeComApiError("bot/media", 0, `HTTP ${res.status}`, res.status);
    const file: MediaFile = { bytes: Buffer.from(await res.arrayBuffer()), contentType: res.headers.get("content-type") ?? "application/octet-stream" };
    const name = fileNameOf(res.headers.get("content-disposition"));
    if (name !== undefined) file.fileName = name;
    return file;
  }
}
