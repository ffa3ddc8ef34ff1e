/**
 * The WeCom API client: access tokens (cached in the store, refreshed early, single-flight,
 * refreshed once on 40014/42001), KF `sync_msg`, `media/get`, and the outbound APIs (`kf/send_msg`,
 * `kf/send_msg_on_event`, `kf/service_state/get|trans`, `message/send`, `media/upload`). Every
 * call goes to the configured `apiBase` (so the gateway can be pointed at the simulator or a
 * proxy) through the keep-alive {@link HttpClient}: sockets are reused instead of a connection per
 * call, which is what Node 20's global `fetch` costs. Secrets and tokens never appear in errors or
 * logs.
 * @module
 */
import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { Readable } from "node:stream";
import { BridgeError } from "../errors.js";
import { encodeKfSyncMsgRequest, type KfSyncMsgRequestInput } from "../wecom/kf/encode.js";
import { decodeKfSyncMsg, type KfSyncMsgResponse } from "../wecom/kf/decode.js";
import type { Leases } from "../store/leases.js";
import type { Store } from "../store/types.js";
import { classifyWeComFailure, type WeComErrorClass } from "../wecom/errcodes.js";
import { HttpClient, HttpClientError, type HttpRequestOptions, type HttpResponse, type HttpStreamResponse } from "./http.js";

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
  /**
   * Per-request timeout, ms, also on a shared `http` client. Default 10 s. A download's body may take
   * longer while bytes keep coming; an upload gets more time by its size (see `uploadMedia`).
   */
  timeoutMs?: number;
  now?: () => number;
  /**
   * The keep-alive HTTP client to call through, shared with other clients; default a new one of
   * this client's own (closed by {@link WeComClient.close}).
   */
  http?: HttpClient;
  /**
   * Leases shared with other replicas: one `gettoken` per credentials at a time across them (the
   * others wait up to {@link TOKEN_WAIT_MS} for its token in the store, then ask WeCom themselves).
   */
  leases?: Leases;
}

/** How long a replica waits for the token another replica is fetching, ms. */
export const TOKEN_WAIT_MS = 5000;
/** How long a `gettoken` lease lasts, ms. */
const TOKEN_LEASE_MS = 10_000;

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

/** What {@link WeComClient.kfServiceStateGet} answers. */
export interface KfServiceState {
  /** service_state: 0 unhandled, 1 smart assistant, 2 waiting pool, 3 human servicer, 4 ended or not started. */
  serviceState: number;
  /** The servicer (接待人员) of the session, when WeCom names one (state 3). */
  servicerUserId?: string;
}

/** A `kf/service_state/trans` request. */
export interface KfServiceStateTransInput {
  /** The KF account. */
  openKfId: string;
  /** The customer. */
  externalUserId: string;
  /** The target service_state (0–4). */
  serviceState: number;
  /** The servicer to hand the session to; required by WeCom for state 3. */
  servicerUserId?: string;
}

/** A file for {@link WeComClient.uploadMedia}: from `path` (streamed) or `data`. */
export interface MediaUploadInput {
  /** WeCom's media type, which sets its size and format rules. */
  type: "image" | "voice" | "video" | "file";
  /** The file name WeCom shows (any Unicode; sent as RFC 5987 `filename*` with an ASCII fallback). */
  fileName: string;
  /** The file's Content-Type. */
  contentType: string;
  /** A file to stream from (preferred for large files: it is never held in memory). */
  path?: string;
  /** The bytes, when there is no file. */
  data?: Uint8Array;
  /** The size in bytes: `data`'s length, or the file's size. */
  size: number;
}

/** The largest JSON answer read from WeCom (a `sync_msg` page of 1000 long messages stays well below). */
const MAX_JSON_ANSWER_BYTES = 32 * 1024 * 1024;
/** The largest JSON error body read in place of a media file. */
const MAX_MEDIA_ERROR_BYTES = 1024 * 1024;
/** Redirects a media download follows (as `fetch` did), at most. */
const MAX_MEDIA_REDIRECTS = 5;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
/** The slowest upload rate allowed for: an upload's deadline is `timeoutMs` plus its size at this rate. */
const UPLOAD_MIN_BYTES_PER_SEC = 128 * 1024;

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

/** A header parameter value fit for RFC 5987 (`filename*=UTF-8''…`): `attr-char`s stay, all else is %-encoded. */
function rfc5987(value: string): string {
  return encodeURIComponent(value).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** An ASCII stand-in of a file name for `filename="…"`: printable ASCII only, no quotes or backslashes. */
function asciiFallback(name: string): string {
  const ascii = name.replace(/[^\x20-\x7e]|["\\]/g, "_").trim();
  return ascii === "" ? "file" : ascii;
}

/** The head of the one-part multipart body of `media/upload` (WeCom's example, plus `filename*`). */
function uploadHead(boundary: string, input: MediaUploadInput): Buffer {
  const name = input.fileName.replace(/[\u0000-\u001f\u007f]/g, "");
  const contentType = /^[\x21-\x7e][\x20-\x7e]*$/.test(input.contentType) ? input.contentType : "application/octet-stream";
  return Buffer.from(
    `--${boundary}\r\n` +
      `Content-Disposition: form-data; name="media"; filename="${asciiFallback(name)}"; filename*=UTF-8''${rfc5987(name)}; filelength=${input.size}\r\n` +
      `Content-Type: ${contentType}\r\n\r\n`,
    "latin1",
  );
}

/** A file's bytes, failing when they are more or fewer than `size` (the Content-Length announced). */
async function* fileBytes(path: string, size: number): AsyncGenerator<Buffer> {
  let seen = 0;
  for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) {
    seen += chunk.length;
    if (seen > size) throw new Error(`the file grew past ${size} bytes`);
    yield chunk;
  }
  if (seen !== size) throw new Error(`the file has ${seen} bytes, not ${size}`);
}

/** The whole body of a stream, up to `cap` bytes (undefined past it). */
async function readUpTo(body: Readable, cap: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > cap) return undefined;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, size);
}

/** One header's value (the first, when repeated). */
function header(headers: HttpResponse["headers"], name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** The WeCom API client. */
export class WeComClient {
  readonly #o: Required<Omit<WeComClientOptions, "store" | "http" | "leases">> & { store: Store; leases?: Leases };
  readonly #http: HttpClient;
  readonly #ownHttp: boolean;
  readonly #inflight = new Map<string, Promise<string>>();
  readonly #memory = new Map<string, { token: string; expiresAt: number }>();
  /** Count of calls by api and errcode, for metrics. */
  onResult?: (api: string, errcode: number) => void;

  /** @param options where and how to call */
  constructor(options: WeComClientOptions) {
    const { http, ...rest } = options;
    this.#o = { refreshEarlyMs: 5 * 60_000, timeoutMs: 10_000, now: Date.now, ...rest };
    this.#ownHttp = http === undefined;
    this.#http = http ?? new HttpClient({ timeoutMs: this.#o.timeoutMs });
  }

  /** Close the HTTP client this client created (a shared one given as `http` is left open). */
  close(): void {
    if (this.#ownHttp) this.#http.close();
  }

  /** The error of a call that got no (usable) answer: counted as errcode -2, transient. */
  #unreachable(api: string, e: unknown, what: string): WeComApiError {
    this.onResult?.(api, -2);
    const timeout = e instanceof HttpClientError && e.code === "http_timeout";
    return new WeComApiError(api, 0, `${what} (${timeout ? "timeout" : "network error"})`, undefined);
  }

  /** One buffered request; failures become {@link WeComApiError}s. */
  async #request(api: string, options: Omit<HttpRequestOptions, "timeoutMs" | "maxResponseBytes"> & { timeoutMs?: number }): Promise<HttpResponse> {
    try {
      return await this.#http.request({ timeoutMs: this.#o.timeoutMs, ...options, maxResponseBytes: MAX_JSON_ANSWER_BYTES });
    } catch (e) {
      if (e instanceof HttpClientError && e.code === "http_response_too_large") {
        throw new WeComApiError(api, 0, `the answer is larger than ${MAX_JSON_ANSWER_BYTES} bytes`, e.httpStatus);
      }
      if (e instanceof HttpClientError && e.code === "http_request_body") {
        throw new WeComApiError(api, 0, "the file to send could not be read in full", undefined, "final");
      }
      throw this.#unreachable(api, e, "request failed");
    }
  }

  /** WeCom's JSON answer: its object when errcode is 0, else a {@link WeComApiError} of its class. */
  #json(api: string, status: number, raw: Buffer): Record<string, unknown> {
    if (status >= 500) throw new WeComApiError(api, 0, `HTTP ${status}`, status);
    let body: unknown;
    try {
      const text = raw.toString("utf8");
      body = JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
    } catch {
      throw new WeComApiError(api, 0, `HTTP ${status} with a body that is not JSON`, status);
    }
    if (typeof body !== "object" || body === null) throw new WeComApiError(api, 0, "answer is not a JSON object", status, "final");
    const errcode = Number((body as { errcode?: unknown }).errcode ?? 0);
    this.onResult?.(api, errcode);
    if (errcode !== 0) {
      const errmsg = String((body as { errmsg?: unknown }).errmsg ?? "").split(",")[0] ?? "";
      throw new WeComApiError(api, errcode, errmsg, status);
    }
    // an HTTP refusal whose JSON carries no errcode is not WeCom's success
    if (status >= 400) throw new WeComApiError(api, 0, `HTTP ${status}`, status);
    return body as Record<string, unknown>;
  }

  /** `${apiBase}/cgi-bin/${api}?access_token=…` plus more query parameters. */
  #url(api: string, token: string, query = ""): string {
    return `${this.#o.apiBase}/cgi-bin/${api}?access_token=${encodeURIComponent(token)}${query}`;
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
    // a forced refresh replaces the token WeCom refused: another replica's newer one will do
    const refused = force ? this.#memory.get(key)?.token : undefined;
    const p = (async () => {
      const stored = async () => {
        const row = await this.#o.store.getToken(c.corpId, key);
        if (row && fresh(row) && (!force || row.token !== refused)) {
          this.#memory.set(key, row);
          return row.token;
        }
        return undefined;
      };
      if (!force || refused !== undefined) {
        const t = await stored();
        if (t !== undefined) return t;
      }
      const leases = this.#o.leases;
      if (leases === undefined) return this.#fetchToken(c, key);
      if (!(await leases.acquire(c.corpId, `token:${key}`, TOKEN_LEASE_MS))) {
        // another replica is asking WeCom: take its token when it lands
        const until = this.#o.now() + TOKEN_WAIT_MS;
        while (this.#o.now() < until) {
          await new Promise((r) => setTimeout(r, 100));
          const t = await stored();
          if (t !== undefined) return t;
        }
      }
      try {
        return await this.#fetchToken(c, key);
      } finally {
        await leases.release(c.corpId, `token:${key}`).catch(() => undefined);
      }
    })();
    this.#inflight.set(key, p);
    try {
      return await p;
    } finally {
      this.#inflight.delete(key);
    }
  }

  /** Ask WeCom for a token and keep it (memory and store). */
  async #fetchToken(c: WeComCredentials, key: string): Promise<string> {
    {
      const url = `${this.#o.apiBase}/cgi-bin/gettoken?corpid=${encodeURIComponent(c.corpId)}&corpsecret=${encodeURIComponent(c.secret)}`;
      const res = await this.#request("gettoken", { method: "GET", url });
      const body = this.#json("gettoken", res.status, res.body);
      const token = String(body.access_token ?? "");
      if (token === "") throw new WeComApiError("gettoken", 0, "answer has no access_token", 200, "final");
      const expiresAt = this.#o.now() + Number(body.expires_in ?? 7200) * 1000;
      this.#memory.set(key, { token, expiresAt });
      await this.#o.store.putToken({ tenant: c.corpId, key, token, expiresAt });
      return token;
    }
  }

  /**
   * The state of an app's access token as the store has it (the console's Accounts page): `cached`
   * with its expiry, `expired`, or `none`. The token itself is never returned.
   */
  async tokenState(c: WeComCredentials): Promise<{ state: "cached" | "expired" | "none"; expiresAt: number | null }> {
    const row = await this.#o.store.getToken(c.corpId, tokenKey(c));
    if (row === undefined) return { state: "none", expiresAt: null };
    return { state: row.expiresAt > this.#o.now() ? "cached" : "expired", expiresAt: row.expiresAt };
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
    const payload = JSON.stringify(body);
    return this.#withToken(c, async (token) => {
      const res = await this.#request(api, { method: "POST", url: this.#url(api, token), headers: { "content-type": "application/json" }, body: payload });
      return this.#json(api, res.status, res.body);
    });
  }

  /** One `kf/sync_msg` page. */
  async syncMsg(c: WeComCredentials, input: KfSyncMsgRequestInput): Promise<KfSyncMsgResponse> {
    const body = await this.postJson(c, "kf/sync_msg", encodeKfSyncMsgRequest(input));
    return decodeKfSyncMsg(body as never, { corpId: c.corpId });
  }

  /**
   * Send a KF message (`kf/send_msg`). `body` is WeCom's whole body: `touser`, `open_kfid`,
   * `msgid` (the idempotency key, ≤ 32 bytes of `[0-9a-zA-Z_-]`), `msgtype` and the type's object.
   * @returns the msgid WeCom answered (the one sent when WeCom names none)
   * @throws WeComApiError of WeCom's errcode (95018 state, 95001/95002 budget and window, …)
   */
  async kfSendMsg(c: WeComCredentials, body: Record<string, unknown>): Promise<{ msgid: string }> {
    const answer = await this.postJson(c, "kf/send_msg", body);
    return { msgid: msgIdOf(answer, body) };
  }

  /**
   * Send the one message a KF event code allows (`kf/send_msg_on_event`): `{code, msgid?, msgtype:
   * "text" | "msgmenu", text | msgmenu}`, with a `welcome_code` of enter_session or a `msg_code` of a
   * session change.
   * @returns the msgid WeCom answered (the one sent when WeCom names none)
   */
  async kfSendMsgOnEvent(c: WeComCredentials, body: Record<string, unknown>): Promise<{ msgid: string }> {
    const answer = await this.postJson(c, "kf/send_msg_on_event", body);
    return { msgid: msgIdOf(answer, body) };
  }

  /** A KF session's state (`kf/service_state/get`) and, in state 3, its servicer. */
  async kfServiceStateGet(c: WeComCredentials, openKfId: string, externalUserId: string): Promise<KfServiceState> {
    const answer = await this.postJson(c, "kf/service_state/get", { open_kfid: openKfId, external_userid: externalUserId });
    const state: KfServiceState = { serviceState: Number(answer.service_state ?? 0) };
    if (typeof answer.servicer_userid === "string" && answer.servicer_userid !== "") state.servicerUserId = answer.servicer_userid;
    return state;
  }

  /**
   * Move a KF session to another state (`kf/service_state/trans`); state 3 needs `servicerUserId`.
   * @returns the `msg_code` WeCom answers for states 2, 3 and 4 (for `kfSendMsgOnEvent`), when given
   */
  async kfServiceStateTrans(c: WeComCredentials, input: KfServiceStateTransInput): Promise<{ msgCode?: string }> {
    const body: Record<string, unknown> = { open_kfid: input.openKfId, external_userid: input.externalUserId, service_state: input.serviceState };
    if (input.servicerUserId !== undefined) body.servicer_userid = input.servicerUserId;
    const answer = await this.postJson(c, "kf/service_state/trans", body);
    return typeof answer.msg_code === "string" && answer.msg_code !== "" ? { msgCode: answer.msg_code } : {};
  }

  /**
   * Send a self-built app's message (`message/send`); `body` is WeCom's whole body (`touser`,
   * `agentid`, `msgtype`, …). Recipients WeCom does not know come back in `invalidUser`; when none
   * is valid WeCom answers 81013, thrown as a (final) {@link WeComApiError}.
   */
  async appSendMessage(c: WeComCredentials, body: Record<string, unknown>): Promise<{ invalidUser: string[]; msgid?: string }> {
    const answer = await this.postJson(c, "message/send", body);
    const invalid = typeof answer.invaliduser === "string" ? answer.invaliduser.split("|").filter((u) => u !== "") : [];
    const result: { invalidUser: string[]; msgid?: string } = { invalidUser: invalid };
    if (typeof answer.msgid === "string" && answer.msgid !== "") result.msgid = answer.msgid;
    return result;
  }

  /**
   * Upload a temporary media file (`media/upload`, valid 3 days) as `multipart/form-data` with one
   * part `media` (`filename` as ASCII, `filename*` in UTF-8, `filelength`, Content-Type). A `path`
   * is streamed from disk, never held in memory; the bytes sent must be exactly `size`. The deadline
   * is `timeoutMs` plus the time the file takes at 128 KiB/s.
   * @throws WeComApiError of WeCom's errcode (40009/40006 too large, 40123 format, …), or final when
   *   the file cannot be read or is not `size` bytes
   */
  async uploadMedia(c: WeComCredentials, input: MediaUploadInput): Promise<{ mediaId: string; createdAt?: number }> {
    const api = "media/upload";
    const bad = (why: string) => new WeComApiError(api, 0, why, undefined, "final");
    if ((input.path === undefined) === (input.data === undefined)) throw bad("give either path or data");
    if (!Number.isSafeInteger(input.size) || input.size < 0) throw bad("size is not a byte count");
    if (input.data !== undefined && input.data.byteLength !== input.size) throw bad(`the data has ${input.data.byteLength} bytes, not size ${input.size}`);
    if (input.path !== undefined) {
      const info = await stat(input.path).catch(() => undefined);
      if (info === undefined || !info.isFile()) throw bad("the file to upload cannot be read");
      if (info.size !== input.size) throw bad(`the file has ${info.size} bytes, not size ${input.size}`);
    }
    const timeoutMs = this.#o.timeoutMs + Math.ceil((input.size * 1000) / UPLOAD_MIN_BYTES_PER_SEC);
    const answer = await this.#withToken(c, async (token) => {
      const boundary = `----wecom-bridge-${randomBytes(12).toString("hex")}`;
      const head = uploadHead(boundary, input);
      const tail = Buffer.from(`\r\n--${boundary}--\r\n`, "latin1");
      let body: Buffer | Readable;
      if (input.data !== undefined) body = Buffer.concat([head, input.data, tail]);
      else {
        const path = input.path as string;
        body = Readable.from(
          (async function* () {
            yield head;
            yield* fileBytes(path, input.size);
            yield tail;
          })(),
          { objectMode: false },
        );
      }
      const res = await this.#request(api, {
        method: "POST",
        url: this.#url(api, token, `&type=${encodeURIComponent(input.type)}`),
        headers: { "content-type": `multipart/form-data; boundary=${boundary}`, "content-length": head.length + input.size + tail.length },
        body,
        timeoutMs,
      });
      return this.#json(api, res.status, res.body);
    });
    const mediaId = typeof answer.media_id === "string" ? answer.media_id : "";
    if (mediaId === "") throw new WeComApiError(api, 0, "answer has no media_id", 200, "final");
    const createdAt = Number(answer.created_at);
    return answer.created_at !== undefined && answer.created_at !== "" && Number.isFinite(createdAt) ? { mediaId, createdAt } : { mediaId };
  }

  /**
   * One media request, streamed: the connection and the headers must come within `timeoutMs`, then
   * the body may take as long as it needs while bytes keep coming (no gap of `timeoutMs`), so a
   * 20 MB file on a slow link is not cut off by a per-request timeout meant for API calls.
   * Redirects are followed (at most 5), as `fetch` did.
   */
  async #media<T>(api: string, url: string, options: MediaDownloadOptions, wecomErrors: boolean, consume: (d: MediaDownload) => Promise<T>): Promise<T> {
    let res: HttpStreamResponse | undefined;
    try {
      let target = url;
      for (let hop = 0; ; hop++) {
        try {
          res = await this.#http.stream({ method: "GET", url: target, timeoutMs: this.#o.timeoutMs });
        } catch (e) {
          throw this.#unreachable(api, e, "request failed");
        }
        const location = header(res.headers, "location");
        if (!REDIRECT_STATUSES.has(res.status) || location === undefined || hop >= MAX_MEDIA_REDIRECTS) break;
        res.body.destroy();
        try {
          target = new URL(location, target).toString();
        } catch {
          throw new WeComApiError(api, 0, `HTTP ${res.status} with a Location that is not a URL`, res.status);
        }
      }
      const { status, headers, body: source } = res;
      const contentType = header(headers, "content-type") ?? "application/octet-stream";
      if (wecomErrors && (contentType.includes("json") || contentType.startsWith("text/plain"))) {
        let raw: Buffer | undefined;
        try {
          raw = await readUpTo(source, MAX_MEDIA_ERROR_BYTES);
        } catch (e) {
          throw this.#unreachable(api, e, "download failed");
        }
        this.#json(api, status, raw ?? Buffer.alloc(0)); // throws WeCom's errcode
        throw new WeComApiError(api, 0, "answer is JSON, not a file", status, "final");
      }
      if (status !== 200) throw new WeComApiError(api, 0, `HTTP ${status}`, status);
      const lengthHeader = header(headers, "content-length");
      const length = lengthHeader !== undefined && /^\d+$/.test(lengthHeader) ? Number(lengthHeader) : undefined;
      if (length !== undefined && length > options.maxBytes) {
        throw new WeComApiError(api, 0, `the file is ${length} bytes, more than limits.mediaBytes (${options.maxBytes})`, status, "final");
      }
      if (wecomErrors) this.onResult?.(api, 0);
      const failed = (e: unknown) => this.#unreachable(api, e, "download failed");
      async function* body(): AsyncGenerator<Uint8Array> {
        let size = 0;
        try {
          for await (const chunk of source as AsyncIterable<Uint8Array>) {
            size += chunk.length;
            if (size > options.maxBytes) throw new WeComApiError(api, 0, `the file is more than limits.mediaBytes (${options.maxBytes} bytes)`, status, "final");
            yield chunk;
          }
        } catch (e) {
          if (e instanceof WeComApiError) throw e;
          throw failed(e);
        }
      }
      const d: MediaDownload = { contentType, body: body() };
      const name = fileNameOf(header(headers, "content-disposition") ?? null);
      if (name !== undefined) d.fileName = name;
      if (length !== undefined) d.length = length;
      return await consume(d);
    } finally {
      res?.body.destroy(); // releases the connection when the body was not read to its end
    }
  }

  /**
   * Download a media file by media_id (`media/get`) and hand it to `consume` as a stream. WeCom's
   * JSON errors throw a {@link WeComApiError} of their class; a token-class answer refreshes the
   * token once.
   */
  async getMedia<T>(c: WeComCredentials, mediaId: string, options: MediaDownloadOptions, consume: (d: MediaDownload) => Promise<T>): Promise<T> {
    return this.#withToken(c, (token) => this.#media("media/get", this.#url("media/get", token, `&media_id=${encodeURIComponent(mediaId)}`), options, true, consume));
  }

  /**
   * Download a URL (an AI bot's encrypted media URL) and hand it to `consume` as a stream; the
   * bytes are as sent. A 4xx answer (expired, unknown) is final, a 5xx transient.
   */
  async download<T>(url: string, options: MediaDownloadOptions, consume: (d: MediaDownload) => Promise<T>): Promise<T> {
    return this.#media("bot/media", url, options, false, consume);
  }
}

/** The msgid of a send's answer, else the one the request carried, else "". */
function msgIdOf(answer: Record<string, unknown>, request: Record<string, unknown>): string {
  if (typeof answer.msgid === "string" && answer.msgid !== "") return answer.msgid;
  return typeof request.msgid === "string" ? request.msgid : "";
}
