/**
 * A small keep-alive HTTP client for the gateway's outbound calls (WeCom's API, the 全媒体), on
 * `node:http` / `node:https` agents: sockets are kept open and reused (most recently freed first),
 * which is what lets one process make tens of thousands of calls a second where Node 20's global
 * `fetch` tops out near 3,400 (issue 7, benchmark section).
 *
 * - Every request has a deadline (`timeoutMs`) covering the connection, the headers and, for
 *   {@link HttpClient.request}, the whole body; on expiry the request is aborted and its socket
 *   destroyed (never handed to another request). {@link HttpClient.stream} switches to an idle
 *   deadline once the headers are in: the body must keep moving.
 * - A buffered answer is capped (`maxResponseBytes`, default 4 MiB): a larger `Content-Length` is
 *   refused before the body is read, a body that grows past it is cut off.
 * - Failures are {@link HttpClientError}s with a stable `code` and `network: true` when no complete
 *   answer came (refused, reset, timed out), so a caller can classify them (see
 *   `wecom/errcodes.ts`: network failures are transient). An HTTP status, any status, is an
 *   answer, not an error: the caller decides what a 4xx or 5xx means.
 * - Messages name the method, origin and path only: never the query string (WeCom URLs carry
 *   `access_token`) nor the URL's `user:password@`.
 * - An idempotent request (GET, HEAD, OPTIONS, PUT, DELETE, without a streamed body) that fails on a
 *   reused keep-alive socket before any answer (the server closed it as we sent) is tried once more
 *   on a fresh connection; any other request is never sent twice by this client.
 * @module
 */
import { Agent as HttpAgent, type AgentOptions, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, request as httpRequest } from "node:http";
import { Agent as HttpsAgent, type AgentOptions as HttpsAgentOptions, request as httpsRequest } from "node:https";
import { Readable, Transform } from "node:stream";
import { BridgeError } from "../errors.js";

/** The default cap of a buffered response body: 4 MiB. */
export const DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024;

/**
 * Stable codes of {@link HttpClientError}:
 * - `http_timeout`: no (complete) answer within the deadline (`network: true`);
 * - `http_network`: the connection failed or broke before the answer was complete: refused, reset,
 *   DNS, TLS (`network: true`; `errno` says which);
 * - `http_response_too_large`: the body is larger than `maxResponseBytes` (an answer came: `httpStatus` is set);
 * - `http_bad_json`: {@link HttpClient.json} got a body that is not JSON (`httpStatus` is set);
 * - `http_request_body`: the request body stream failed;
 * - `http_aborted`: the caller's `signal` aborted the request;
 * - `http_invalid_request`: the URL is not an absolute http(s) URL;
 * - `http_closed`: the client was closed.
 */
export type HttpErrorCode =
  | "http_timeout"
  | "http_network"
  | "http_response_too_large"
  | "http_bad_json"
  | "http_request_body"
  | "http_aborted"
  | "http_invalid_request"
  | "http_closed";

/** A failed request. The message names the method, origin and path, never the query or credentials. */
export class HttpClientError extends BridgeError {
  /** The stable code (see {@link HttpErrorCode}). */
  declare readonly code: HttpErrorCode;
  /** True when no complete answer came (refused, reset, timed out): worth trying again later. */
  readonly network: boolean;
  /** The answer's HTTP status, when one came before the failure. */
  readonly httpStatus: number | undefined;
  /** The system error code behind an `http_network` failure (`ECONNREFUSED`, `ECONNRESET`, `ENOTFOUND`, …). */
  readonly errno: string | undefined;
  /** The request method. */
  readonly method: string;
  /** The request's origin and path (no query, no credentials). */
  readonly target: string;

  /**
   * @param code stable code
   * @param detail what went wrong, one readable line free of secrets
   * @param at the request: method and target (origin and path only)
   * @param extra network flag, HTTP status and system error code
   */
  constructor(code: HttpErrorCode, detail: string, at: { method: string; target: string }, extra: { network?: boolean; httpStatus?: number; errno?: string } = {}) {
    super(code, `${at.method} ${at.target}: ${detail}`);
    this.network = extra.network ?? false;
    this.httpStatus = extra.httpStatus;
    this.errno = extra.errno;
    this.method = at.method;
    this.target = at.target;
  }
}

/** Options of {@link HttpClient}. */
export interface HttpClientOptions {
  /** Default deadline of a request, ms (`delivery.timeoutMs`). */
  timeoutMs: number;
  /** Default cap of a buffered response body, bytes. Default {@link DEFAULT_MAX_RESPONSE_BYTES}. */
  maxResponseBytes?: number;
  /**
   * Options of both agents, over the defaults `{ keepAlive: true, maxSockets: 64, maxFreeSockets: 64,
   * scheduling: "lifo" }` (e.g. `ca` for a private CA, or another `maxSockets`).
   */
  agentOptions?: AgentOptions & HttpsAgentOptions;
}

/** One request. */
export interface HttpRequestOptions {
  /** The method, e.g. `GET`, `POST`. */
  method: string;
  /** An absolute http: or https: URL. */
  url: string | URL;
  /** Request headers. `Content-Length` is set for a string or buffer body when absent. */
  headers?: OutgoingHttpHeaders;
  /** The body: bytes, a string (sent as UTF-8) or a stream (sent chunked unless a length header is given). */
  body?: string | Uint8Array | Readable;
  /** This request's deadline, ms, instead of the client's. */
  timeoutMs?: number;
  /** This request's body cap, bytes: for `request` and `json` instead of the client's; for `stream`, none unless given. */
  maxResponseBytes?: number;
  /** Aborts the request (`http_aborted`). */
  signal?: AbortSignal;
}

/** A complete answer. */
export interface HttpResponse {
  /** HTTP status. */
  status: number;
  /** Response headers, names lower-cased. */
  headers: IncomingHttpHeaders;
  /** The whole body. */
  body: Buffer;
}

/** An answer whose body is still arriving. */
export interface HttpStreamResponse {
  /** HTTP status. */
  status: number;
  /** Response headers, names lower-cased. */
  headers: IncomingHttpHeaders;
  /**
   * The body. It fails with an {@link HttpClientError} when the connection breaks, when no bytes
   * move for the deadline (whether the server or the reader is slow), or past `maxResponseBytes`.
   * Read it to its end (the socket then serves the next request) or destroy it.
   */
  body: Readable;
}

/** A JSON answer of {@link HttpClient.json}. */
export interface HttpJsonResponse {
  /** HTTP status. */
  status: number;
  /** Response headers, names lower-cased. */
  headers: IncomingHttpHeaders;
  /** The parsed body; `undefined` for an empty body. */
  body: unknown;
}

const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"]);

/** Failures on a reused socket before any answer: the keep-alive race, safe to retry once when idempotent. */
const staleSocketFailures = new WeakSet<HttpClientError>();

function hasHeader(headers: OutgoingHttpHeaders, name: string): boolean {
  return Object.keys(headers).some((k) => k.toLowerCase() === name);
}

/** A keep-alive HTTP client (see the module comment). */
export class HttpClient {
  readonly #timeoutMs: number;
  readonly #maxResponseBytes: number;
  readonly #http: HttpAgent;
  readonly #https: HttpsAgent;
  #closed = false;

  /** @param options deadlines, the body cap and agent options */
  constructor(options: HttpClientOptions) {
    this.#timeoutMs = options.timeoutMs;
    this.#maxResponseBytes = options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
    const agentOptions = { keepAlive: true, maxSockets: 64, maxFreeSockets: 64, scheduling: "lifo" as const, ...options.agentOptions };
    this.#http = new HttpAgent(agentOptions);
    this.#https = new HttpsAgent(agentOptions);
  }

  /**
   * Send a request and read the whole answer (up to `maxResponseBytes`) within the deadline.
   * @throws HttpClientError when no complete answer came, or it was too large
   */
  async request(options: HttpRequestOptions): Promise<HttpResponse> {
    return (await this.#withStaleRetry(options, "buffer")) as HttpResponse;
  }

  /**
   * Send a request and hand over the answer as soon as its headers are in; the body is a stream
   * with an idle deadline (see {@link HttpStreamResponse}).
   * @throws HttpClientError when no answer came within the deadline, or its `Content-Length` is over the cap
   */
  async stream(options: HttpRequestOptions): Promise<HttpStreamResponse> {
    return (await this.#withStaleRetry(options, "stream")) as HttpStreamResponse;
  }

  /**
   * A JSON call: `json` (when given) is sent as the body with `Content-Type: application/json`, and
   * the answer is parsed whatever its status (WeCom and the 全媒体 put their errcode in the body).
   * @throws HttpClientError as {@link request}, or `http_bad_json` when the body is not JSON
   */
  async json(options: Omit<HttpRequestOptions, "body"> & { json?: unknown }): Promise<HttpJsonResponse> {
    const { json, ...rest } = options;
    const request: HttpRequestOptions = { ...rest };
    if (json !== undefined) {
      request.body = JSON.stringify(json);
      request.headers = { "content-type": "application/json", ...rest.headers };
    }
    const res = await this.request(request);
    if (res.body.length === 0) return { status: res.status, headers: res.headers, body: undefined };
    try {
      return { status: res.status, headers: res.headers, body: JSON.parse(res.body.toString("utf8")) };
    } catch {
      throw new HttpClientError("http_bad_json", `HTTP ${res.status} with a body that is not JSON (${res.body.length} bytes)`, describe(options.method, options.url), { httpStatus: res.status });
    }
  }

  /** Close every socket, idle or busy; later requests fail with `http_closed`. */
  close(): void {
    this.#closed = true;
    this.#http.destroy();
    this.#https.destroy();
  }

  async #withStaleRetry(options: HttpRequestOptions, mode: "buffer" | "stream"): Promise<HttpResponse | HttpStreamResponse> {
    try {
      return await this.#once(options, mode);
    } catch (e) {
      const retry = e instanceof HttpClientError && staleSocketFailures.has(e) && IDEMPOTENT.has(e.method) && !(options.body instanceof Readable);
      if (!retry) throw e;
      return this.#once(options, mode);
    }
  }

  #once(options: HttpRequestOptions, mode: "buffer" | "stream"): Promise<HttpResponse | HttpStreamResponse> {
    const method = options.method.toUpperCase();
    const at = describe(method, options.url);
    if (this.#closed) return Promise.reject(new HttpClientError("http_closed", "the client is closed", at));
    let url: URL;
    try {
      url = options.url instanceof URL ? options.url : new URL(options.url);
    } catch {
      return Promise.reject(new HttpClientError("http_invalid_request", "not an absolute URL", at));
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      return Promise.reject(new HttpClientError("http_invalid_request", `scheme ${url.protocol} is not http: or https:`, at));
    }
    if (options.signal?.aborted) return Promise.reject(new HttpClientError("http_aborted", "aborted", at));
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    const cap = options.maxResponseBytes ?? (mode === "buffer" ? this.#maxResponseBytes : Number.POSITIVE_INFINITY);

    const headers: OutgoingHttpHeaders = { ...options.headers };
    let payload: Buffer | Readable | undefined;
    if (typeof options.body === "string") payload = Buffer.from(options.body, "utf8");
    else if (options.body instanceof Readable) payload = options.body;
    else if (options.body !== undefined) payload = Buffer.from(options.body.buffer, options.body.byteOffset, options.body.byteLength);
    if (Buffer.isBuffer(payload) && !hasHeader(headers, "content-length") && !hasHeader(headers, "transfer-encoding")) headers["content-length"] = payload.length;

    const isHttps = url.protocol === "https:";
    const req = (isHttps ? httpsRequest : httpRequest)(url, { method, headers, agent: isHttps ? this.#https : this.#http });

    return new Promise<HttpResponse | HttpStreamResponse>((resolve, reject) => {
      let settled = false;
      let answered = false;
      let status: number | undefined;
      let failure: HttpClientError | undefined; // why we tore the request down ourselves
      let timer: NodeJS.Timeout | undefined;
      let abortHandler = () => fail(new HttpClientError("http_aborted", "aborted", at));
      const onAbort = () => abortHandler();

      const cleanup = () => {
        clearTimeout(timer);
        options.signal?.removeEventListener("abort", onAbort);
      };
      const fail = (e: HttpClientError) => {
        failure ??= e;
        if (!settled) {
          settled = true;
          cleanup();
          reject(failure);
        }
        req.destroy();
        if (payload instanceof Readable) payload.destroy();
      };
      /** A failure Node reported: ours when we caused it, else a network failure. */
      const fromNode = (e: NodeJS.ErrnoException | undefined, during: string): HttpClientError => {
        if (failure) return failure;
        const errno = typeof e?.code === "string" ? e.code : undefined;
        const err = new HttpClientError("http_network", `${during} (${errno ?? "connection closed"})`, at, { network: true, errno, httpStatus: status });
        if (!answered && req.reusedSocket) staleSocketFailures.add(err);
        return err;
      };
      timer = setTimeout(() => fail(new HttpClientError("http_timeout", answered ? `the answer was not complete within ${timeoutMs} ms` : `no answer within ${timeoutMs} ms`, at, { network: true, httpStatus: status })), timeoutMs);
      options.signal?.addEventListener("abort", onAbort, { once: true });

      req.on("error", (e) => fail(fromNode(e, answered ? "the connection broke during the answer" : "request failed")));
      req.on("response", (res: IncomingMessage) => {
        answered = true;
        const code = res.statusCode ?? 0;
        status = code;
        const lengthHeader = res.headers["content-length"];
        const length = lengthHeader !== undefined && /^\d+$/.test(lengthHeader) ? Number(lengthHeader) : undefined;
        if (length !== undefined && length > cap) {
          fail(new HttpClientError("http_response_too_large", `the answer is ${length} bytes, more than the ${cap} allowed`, at, { httpStatus: status }));
          return;
        }
        const tooLarge = () => new HttpClientError("http_response_too_large", `the answer is more than the ${cap} bytes allowed`, at, { httpStatus: status });
        const broken = (e?: NodeJS.ErrnoException) => fromNode(e, "the connection broke during the answer");

        if (mode === "buffer") {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on("data", (chunk: Buffer) => {
            size += chunk.length;
            if (size > cap) fail(tooLarge());
            else chunks.push(chunk);
          });
          res.on("error", (e) => fail(broken(e)));
          res.on("close", () => {
            if (!res.complete) fail(broken());
          });
          res.on("end", () => {
            if (settled) return;
            settled = true;
            cleanup();
            resolve({ status: code, headers: res.headers, body: Buffer.concat(chunks, size) });
          });
          return;
        }

        // stream: the deadline becomes an idle one, refreshed by every chunk the reader takes
        let size = 0;
        let done = false;
        const body = new Transform({
          transform(chunk: Buffer, _encoding, callback) {
            timer?.refresh();
            size += chunk.length;
            if (size > cap) callback(tooLarge());
            else callback(null, chunk);
          },
        });
        const endBody = (e?: HttpClientError) => {
          if (done) return;
          done = true;
          cleanup();
          if (e) {
            body.destroy(e);
            req.destroy();
          }
        };
        clearTimeout(timer);
        timer = setTimeout(() => endBody(new HttpClientError("http_timeout", `the answer stalled for ${timeoutMs} ms`, at, { network: true, httpStatus: status })), timeoutMs);
        abortHandler = () => endBody(new HttpClientError("http_aborted", "aborted", at, { httpStatus: status }));
        res.on("error", (e) => endBody(broken(e)));
        res.on("close", () => {
          if (!res.complete) endBody(broken());
        });
        body.on("error", (e) => endBody(e instanceof HttpClientError ? e : broken()));
        body.on("end", () => endBody());
        body.on("close", () => {
          // the reader destroyed the stream before its end: the socket cannot be reused
          if (!res.complete) req.destroy();
          endBody();
        });
        res.pipe(body);
        settled = true;
        resolve({ status: code, headers: res.headers, body });
      });

      if (payload instanceof Readable) {
        payload.on("error", () => fail(new HttpClientError("http_request_body", "the request body stream failed", at)));
        payload.pipe(req);
      } else {
        req.end(payload);
      }
    });
  }
}

/** Method and target of a request for messages: origin and path, never the query or credentials. */
function describe(method: string, url: string | URL): { method: string; target: string } {
  const m = method.toUpperCase();
  try {
    const u = url instanceof URL ? url : new URL(url);
    return { method: m, target: u.origin !== "null" ? `${u.origin}${u.pathname}` : `${u.protocol}…` };
  } catch {
    return { method: m, target: "(invalid URL)" };
  }
}
