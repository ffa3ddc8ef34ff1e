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

/** How a media download is bounded. */
export interface MediaDownloadOptions {
  /**
   * Largest file accepted, bytes (`limits.mediaBytes`). A larger `Content-Length` is refused before
   * the body is read; a body that grows past it is aborted. Both are final failures.
   */
  maxBytes: number;
}

/**
 * A media answer being read. `body` yields the bytes as they arrive and must be consumed (or
 * abandoned) inside the callback that received it. It throws a {@link WeComApiError}: `final` once
 * the file passes `maxBytes`, `transient` when the connection fails or no bytes come for
 * `timeoutMs`.
 */
export interface MediaDownload {
  /** Content-Type as sent. */
  contentType: string;
  /** The file name of `Content-Disposition`, decoded (see {@link fileNameOf}). */
  fileName?: string;
  /** Content-Length, when sent. */
  length?: number;
  /** The bytes, chunk by chunk. */
  body: AsyncIterable<Uint8Array>;
}

function tokenKey(c: WeComCredentials): string {
  return createHash("sha256").update(`${c.corpId}\u0000${c.secret}`).digest("hex").slice(0, 32);
}

/** Parameters of a `Content-Disposition` value, names lower-cased, quoted strings unquoted; the first of a name wins. */
function dispositionParams(value: string): Map<string, string> {
  const params = new Map<string, string>();
  const re = /;\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)/g;
  const text = `;${value}`; // the disposition type has no "=", so it is skipped
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    const name = (m[1] as string).toLowerCase();
    let v = (m[2] as string).trim();
    if (v.startsWith('"')) v = v.slice(1, v.endsWith('"') && v.length > 1 ? -1 : undefined).replace(/\\(.)/g, "$1");
    if (!params.has(name)) params.set(name, v);
  }
  return params;
}

/** An RFC 8187 (5987) `ext-value` (`charset'lang'pct-encoded`); undefined when it cannot be decoded. */
function decodeExtValue(v: string): string | undefined {
  const m = /^([A-Za-z0-9!#$%&+^_`{}~-]*)'[^']*'(.*)$/.exec(v);
  if (!m) return undefined;
  const charset = (m[1] as string).toLowerCase();
  const encoded = m[2] as string;
  try {
    if (charset === "iso-8859-1" || charset === "latin1") return encoded.replace(/%([0-9A-Fa-f]{2})/g, (_m, h: string) => String.fromCharCode(Number.parseInt(h, 16)));
    return decodeURIComponent(encoded);
  } catch {
    return undefined;
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * A header value as fetch hands it over: each byte one char (latin1). WeCom sends UTF-8 file names
 * as raw bytes, so `发票.pdf` arrives as `åç¥¨.pdf`: when the chars are bytes that form valid
 * UTF-8, that is what they were; otherwise (a real latin1 name) they stay as they are.
 */
function recoverUtf8(s: string): string {
  if (!/[\u0080-\u00ff]/.test(s) || /[^\u0000-\u00ff]/.test(s)) return s;
  try {
    return utf8.decode(Buffer.from(s, "latin1"));
  } catch {
    return s;
  }
}

/** A file name fit to show and to serve: no control characters, no folders. */
function cleanFileName(name: string): string | undefined {
  const base = name.replace(/[\u0000-\u001f\u007f]/g, "").split(/[/\\]/).pop()?.trim() ?? "";
  return base === "" || base === "." || base === ".." ? undefined : base;
}

/**
 * The file name of a `Content-Disposition` header as fetch reads it (latin1): RFC 6266's
 * `filename*=UTF-8''…` (RFC 8187) when present, else `filename="…"` with raw UTF-8 bytes recovered
 * (what WeCom's `media/get` sends for a non-ASCII name). Control characters and folders are removed.
 */
export function fileNameOf(disposition: string | null): string | undefined {
  if (!disposition) return undefined;
  const params = dispositionParams(disposition);
  const ext = params.get("filename*");
  const fromExt = ext === undefined ? undefined : decodeExtValue(ext);
  if (fromExt !== undefined) {
    const name = cleanFileName(fromExt);
    if (name !== undefined) return name;
  }
  const plain = params.get("filename");
  return plain === undefined ? undefined : cleanFileName(recoverUtf8(plain));
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
    // an HTTP refusal whose JSON carries no errcode is not WeCom's success
    if (res.status >= 400) throw new WeComApiError(api, 0, `HTTP ${res.status}`, res.status);
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

  /**
   * Call an API with a token, refreshing it once on a token-class answer (40014, 42001, 40001). When
   * a freshly issued token is refused too, the secret yields tokens WeCom refuses: configuration.
   */
  async #withToken<T>(c: WeComCredentials, call: (token: string) => Promise<T>): Promise<T> {
    try {
      return await call(await this.token(c));
    } catch (e) {
      if (!(e instanceof WeComApiError) || e.kind !== "token") throw e;
      await this.invalidate(c);
      try {
        return await call(await this.token(c, true));
      } catch (again) {
        if (again instanceof WeComApiError && again.kind === "token") throw new WeComApiError(again.api, again.errcode, "a freshly issued access token was refused", again.httpStatus, "configuration");
        throw again;
      }
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

  /**
   * One media request, streamed: the connection and the headers must come within `timeoutMs`, then
   * the body may take as long as it needs while bytes keep coming (no gap of `timeoutMs`), so a
   * 20 MB file on a slow link is not cut off by a per-request timeout meant for API calls.
   */
  async #media<T>(api: string, url: string, options: MediaDownloadOptions, wecomErrors: boolean, consume: (d: MediaDownload) => Promise<T>): Promise<T> {
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, this.#o.timeoutMs);
    const failed = (what: string) => {
      this.onResult?.(api, -2);
      return new WeComApiError(api, 0, `${what} (${timedOut ? "timeout" : "network error"})`, undefined);
    };
    try {
      let res: Response;
      try {
        res = await fetch(url, { method: "GET", signal: controller.signal });
      } catch {
        throw failed("request failed");
      }
      const contentType = res.headers.get("content-type") ?? "application/octet-stream";
      if (wecomErrors && (contentType.includes("json") || contentType.startsWith("text/plain"))) {
        await this.#json(api, res); // throws WeCom's errcode
        throw new WeComApiError(api, 0, "answer is JSON, not a file", res.status, "final");
      }
      if (res.status !== 200) throw new WeComApiError(api, 0, `HTTP ${res.status}`, res.status);
      const lengthHeader = res.headers.get("content-length");
      const length = lengthHeader !== null && /^\d+$/.test(lengthHeader) ? Number(lengthHeader) : undefined;
      if (length !== undefined && length > options.maxBytes) {
        throw new WeComApiError(api, 0, `the file is ${length} bytes, more than limits.mediaBytes (${options.maxBytes})`, res.status, "final");
      }
      if (wecomErrors) this.onResult?.(api, 0);
      const status = res.status;
      const source = res.body;
      async function* body(): AsyncGenerator<Uint8Array> {
        if (source === null) return;
        let size = 0;
        try {
          for await (const chunk of source as AsyncIterable<Uint8Array>) {
            size += chunk.length;
            if (size > options.maxBytes) throw new WeComApiError(api, 0, `the file is more than limits.mediaBytes (${options.maxBytes} bytes)`, status, "final");
            timer.refresh();
            yield chunk;
          }
        } catch (e) {
          if (e instanceof WeComApiError) throw e;
          throw failed("download failed");
        }
      }
      timer.refresh();
      const d: MediaDownload = { contentType, body: body() };
      const name = fileNameOf(res.headers.get("content-disposition"));
      if (name !== undefined) d.fileName = name;
      if (length !== undefined) d.length = length;
      return await consume(d);
    } finally {
      clearTimeout(timer);
      controller.abort(); // releases the connection when the body was not read to its end
    }
  }

  /**
   * Download a media file by media_id (`media/get`) and hand it to `consume` as a stream. WeCom's
   * JSON errors throw a {@link WeComApiError} of their class; a token-class answer refreshes the
   * token once.
   */
  async getMedia<T>(c: WeComCredentials, mediaId: string, options: MediaDownloadOptions, consume: (d: MediaDownload) => Promise<T>): Promise<T> {
    return this.#withToken(c, (token) =>
      this.#media("media/get", `${this.#o.apiBase}/cgi-bin/media/get?access_token=${encodeURIComponent(token)}&media_id=${encodeURIComponent(mediaId)}`, options, true, consume),
    );
  }

  /**
   * Download a URL (an AI bot's encrypted media URL) and hand it to `consume` as a stream; the
   * bytes are as sent. A 4xx answer (expired, unknown) is final, a 5xx transient.
   */
  async download<T>(url: string, options: MediaDownloadOptions, consume: (d: MediaDownload) => Promise<T>): Promise<T> {
    return this.#media("bot/media", url, options, false, consume);
  }
}
