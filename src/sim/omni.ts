/**
 * A simulator of Hesong's 全媒体 (QMT) contact center, for tests and the sandbox: it serves the
 * staffService message API of seed 004 (APP → 全媒体) over node:http with the vendor's rules and
 * answers, records what it accepts, can be told to fail or be slow, and plays agents answering
 * customers (全媒体 → APP).
 *
 * Protocol decisions (vendor behaviour from test/fixtures/omni/SOURCES.md, the weChatAdapter's
 * `APIController`):
 * - Checks run in the vendor's order: `timestamp`/`signature` query present (30001), appid known
 *   (30002), signature (30003); then the body (30005). Every answer is HTTP 200 with
 *   `{"errcode":N,"errmsg":"..."}`, and the vendor's errmsg texts are used verbatim.
 * - Stricter than the vendor, as protocol.md §6 asks: the timestamp must be milliseconds within
 *   `windowMs` of the clock, and a timestamp+signature pair is accepted once (30003 on replay).
 *   Since the signature does not cover the body, two requests signed in the same millisecond
 *   collide: a sender must use strictly increasing timestamps (this simulator's agent replies do).
 * - Content-Type: the seed requires `application/json`. The vendor never looks at the header (its
 *   servlet reads the body whatever it is labelled, so a form-encoded body ends as a JSON error):
 *   a missing or other type is refused with 30005, after the signature checks, like any body
 *   error. A `charset` other than UTF-8 is refused too (RFC 8259).
 * - Bodies over 1 MB get HTTP 413; unknown paths 404 and other methods 405, each with a JSON body.
 * - Injected failures come before any check (the 全媒体 is down or stuck, whatever the request):
 *   "http500" answers a Tomcat-style HTML error page with HTTP 500 (the vendor runs in a servlet
 *   container: do not expect JSON there); "errcode" answers 30004 with a Java exception text as
 *   errmsg, as the vendor does when its queue fails. A failed request consumes nothing (no replay
 *   entry), and nothing is recorded.
 * @module
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import {
  encodeOmniFromBody,
  OMNI_SIGNATURE_WINDOW_MS,
  OmniErrcode,
  OmniError,
  type OmniFromBody,
  type OmniToBody,
  omniReply,
  omniSignature,
  parseOmniBody,
  verifyOmniSignature,
} from "../omni/index.js";

/** Largest request body the simulator reads: 1 MB (larger ones get HTTP 413). */
export const OMNI_SIM_BODY_LIMIT = 1024 * 1024;

/** Options of {@link OmniSimulator.start}. */
export interface OmniSimOptions {
  /** The one appid this 全媒体 knows (others get 30002). */
  appId: string;
  /** Signature secret for APP → 全媒体. */
  secret: string;
  /** API version in the path; default "v1": serves POST /api/{version}/{appId}/staffService/message. */
  version?: string;
  /** Context path in front of /api, e.g. "/weChatAdapter" as the vendor deploys it; default "". */
  basePath?: string;
  /** Listen address; default 127.0.0.1. */
  host?: string;
  /** Listen port; default 0 (any free port). */
  port?: number;
  /** Signature freshness window, ms; default 5 minutes; `Infinity` turns the check off (the vendor's behaviour). */
  windowMs?: number;
  /** The clock, ms; default `Date.now`. */
  now?: () => number;
  /** Where agent replies go (全媒体 → APP): the gateway's base URL, e.g. http://127.0.0.1:8080. */
  appUrl?: string;
  /** Path prefix of the APP's API, e.g. "/qmtapi" (the default). */
  pathPrefix?: string;
  /** Secret used to sign 全媒体 → APP requests (default: `secret`); protocol.md says one vendor build used another per direction. */
  replySecret?: string;
  /** Receives one line per request; never a secret or a signature. Default: silent. */
  log?: (line: string) => void;
}

/** A message the simulator accepted. */
export interface OmniReceived {
  /** The validated body (as {@link parseOmniBody} returns it). */
  body: OmniToBody;
  /** The JSON object exactly as received, unknown keys included. */
  raw: Record<string, unknown>;
  /** When it was accepted, by the simulator's clock (ms). */
  at: number;
  /** The `timestamp` query parameter, as received. */
  timestamp: string;
  /** The `signature` query parameter, as received. */
  signature: string;
}

/** A request the simulator refused (a failed check, not an injected failure). */
export interface OmniRejected {
  /** Why, one readable line (the errmsg sent back). */
  reason: string;
  /** The errcode sent back (30001, 30002, 30003 or 30005). */
  errcode: number;
  /** When, by the simulator's clock (ms). */
  at: number;
  /** The HTTP status sent back (200, or 413 for an oversized body). */
  status: number;
}

/** A failure mode of {@link OmniSimulator.setFailure}. */
export type OmniFailureMode = "http500" | "errcode" | "timeout";

/** A request failed on purpose by {@link OmniSimulator.setFailure}. */
export interface OmniFailed {
  /** The failure mode that hit it. */
  mode: OmniFailureMode;
  /** When, by the simulator's clock (ms). */
  at: number;
}

/** A customer's 留言 accepted at `POST /api/{version}/{appid}/leavemessage`. */
export interface OmniLeaveMessage {
  /** The JSON body as received (`FromUserId, user_id, contact, callback, tel, email, subject, content, user_data`). */
  body: Record<string, unknown>;
  /** When it was accepted (ms). */
  at: number;
  /** The `timestamp` query parameter. */
  timestamp: string;
  /** The `signature` query parameter. */
  signature: string;
}

/** Options of {@link OmniSimulator.sendAgentReply}. */
export interface OmniAgentReplyOptions {
  /** Sign with this secret instead of `replySecret` (to test a gateway's refusal). */
  secret?: string;
  /** Use this timestamp (ms) instead of the clock (strictly increasing by default). */
  timestamp?: number;
  /** Send this signature instead of the computed one. */
  signature?: string;
  /** Send no timestamp/signature at all, as one vendor build did. */
  unsigned?: boolean;
  /** Send this text as the body instead of the JSON of `body` (to test malformed bodies). */
  rawBody?: string;
  /** Give up after this many ms; default 10 s. */
  timeoutMs?: number;
}

/** What the APP answered to an agent reply. */
export interface OmniAgentReplyResult {
  /** HTTP status. */
  status: number;
  /** The parsed JSON answer (normally `{errcode, errmsg}`), or the text when it is not JSON. */
  reply: unknown;
}

interface Waiter {
  n: number;
  resolve: (v: OmniReceived[]) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

interface RequestState {
  /** Set when the client went away before the answer. */
  gone: boolean;
  /** Releases a request held by the "timeout" failure. */
  release?: () => void;
}

interface Answer {
  status: number;
  body: string;
  contentType: string;
  note: string;
}

const MSG = {
  missing: "signature或timestamp参数不存在。",
  unknownApp: "Appsecret不存在，请检查appid参数。",
  badSignature: "Signature验证失败。",
} as const;

const ROUTE = /^\/api\/([^/]+)\/([^/]+)\/(staffService\/message|leavemessage)$/;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function normalizePrefix(p: string, what: string): string {
  if (p === "" || p === "/") return "";
  if (!p.startsWith("/")) throw new TypeError(`omni simulator: ${what} must start with "/" (got ${JSON.stringify(p)})`);
  return p.replace(/\/+$/, "");
}

/** `null` when the Content-Type is JSON in UTF-8, else the reason. */
function contentTypeProblem(header: string | undefined): string | null {
  if (!header) return "Content-Type must be application/json (none sent)";
  const [type, ...params] = header.split(";");
  if ((type ?? "").trim().toLowerCase() !== "application/json") return `Content-Type must be application/json (got ${JSON.stringify(header.slice(0, 100))})`;
  for (const p of params) {
    const [k, v] = p.split("=");
    if ((k ?? "").trim().toLowerCase() !== "charset") continue;
    const cs = (v ?? "").trim().replace(/^"|"$/g, "").toLowerCase();
    if (cs !== "utf-8" && cs !== "utf8") return `JSON must be UTF-8 (Content-Type says charset=${cs})`;
  }
  return null;
}

/** Read a body up to `limit` bytes; `undefined` when it is larger. */
function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers["content-length"]);
    if (Number.isFinite(declared) && declared > limit) {
      req.resume();
      resolve(undefined);
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on("data", (c: Buffer) => {
      if (over) return;
      size += c.length;
      if (size > limit) {
        over = true;
        chunks.length = 0;
        resolve(undefined);
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => {
      if (!over) resolve(Buffer.concat(chunks));
    });
    req.on("error", reject);
  });
}

function json(status: number, body: unknown, note: string): Answer {
  return { status, body: JSON.stringify(body), contentType: "application/json", note };
}

/** One-line summary of a received message, for logs and errors. */
function summary(r: OmniReceived): string {
  const c = r.body.Content.length > 40 ? `${r.body.Content.slice(0, 40)}…` : r.body.Content;
  return `${r.body.FromUserId} ${r.body.MsgType} ${JSON.stringify(c)}`;
}

/**
 * The 全媒体 simulator. Start it with {@link OmniSimulator.start}, point the gateway's
 * `omni.baseUrl` at {@link OmniSimulator.url}, and read what arrived in
 * {@link OmniSimulator.received}.
 * @example
 * const sim = await OmniSimulator.start({ appId: "1001", secret: "abcdef" });
 * // …the gateway delivers…
 * const [msg] = await sim.waitFor(1);
 * await sim.close();
 */
export class OmniSimulator {
  /** The baseUrl the gateway is configured with, e.g. http://127.0.0.1:40123 (plus `basePath`). */
  readonly url: string;
  /** The appid this 全媒体 knows. */
  readonly appId: string;
  /** Accepted messages, in arrival order. */
  readonly received: OmniReceived[] = [];
  /** Refused requests (failed checks), in arrival order. */
  readonly rejected: OmniRejected[] = [];
  /** Requests failed on purpose by {@link OmniSimulator.setFailure}, in arrival order. */
  readonly failed: OmniFailed[] = [];
  /** Accepted 留言 (`leavemessage`), in arrival order. */
  readonly leaveMessages: OmniLeaveMessage[] = [];

  private readonly server: http.Server;
  private readonly secret: string;
  private readonly replySecret: string;
  private readonly version: string;
  private readonly basePath: string;
  private readonly windowMs: number;
  private readonly now: () => number;
  private readonly log: (line: string) => void;
  private appUrl: string | undefined;
  private pathPrefix: string;
  private failure: { mode: OmniFailureMode; remaining: number | undefined } | undefined;
  private delayMs = 0;
  /** Used timestamp+signature pairs → their timestamp, roughly in timestamp order. */
  private readonly seen = new Map<string, number>();
  private readonly held = new Set<RequestState>();
  private readonly waiters = new Set<Waiter>();
  private lastSentTimestamp = 0;
  private closed = false;

  private constructor(server: http.Server, url: string, opts: OmniSimOptions, basePath: string) {
    this.server = server;
    this.url = url;
    this.appId = opts.appId;
    this.secret = opts.secret;
    this.replySecret = opts.replySecret ?? opts.secret;
    this.version = opts.version ?? "v1";
    this.basePath = basePath;
    this.windowMs = opts.windowMs ?? OMNI_SIGNATURE_WINDOW_MS;
    this.now = opts.now ?? Date.now;
    this.log = opts.log ?? (() => {});
    this.appUrl = opts.appUrl?.replace(/\/+$/, "");
    this.pathPrefix = normalizePrefix(opts.pathPrefix ?? "/qmtapi", "pathPrefix");
  }

  /**
   * Start listening (port 0 by default) and resolve once the socket is bound.
   * @throws TypeError for a missing appId or secret, or a malformed option
   */
  static async start(opts: OmniSimOptions): Promise<OmniSimulator> {
    if (typeof opts.appId !== "string" || opts.appId === "") throw new TypeError("omni simulator: appId is required");
    if (typeof opts.secret !== "string" || opts.secret === "") throw new TypeError("omni simulator: secret is required");
    if (opts.windowMs !== undefined && !(opts.windowMs >= 0)) throw new TypeError("omni simulator: windowMs must be >= 0");
    const basePath = normalizePrefix(opts.basePath ?? "", "basePath");
    normalizePrefix(opts.pathPrefix ?? "/qmtapi", "pathPrefix");
    const host = opts.host ?? "127.0.0.1";
    const server = http.createServer({ requestTimeout: 0 });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(opts.port ?? 0, host, () => {
        server.off("error", reject);
        resolve();
      });
    });
    const { port } = server.address() as AddressInfo;
    const shownHost = host.includes(":") ? `[${host}]` : host;
    const sim = new OmniSimulator(server, `http://${shownHost}:${port}${basePath}`, opts, basePath);
    server.on("request", (req, res) => sim.handle(req, res));
    return sim;
  }

  /** Stop listening, drop open connections (held requests included) and reject pending {@link OmniSimulator.waitFor}s. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.reject(new Error(`omni simulator closed while waiting for ${w.n} messages (got ${this.received.length})`));
    }
    this.waiters.clear();
    const closing = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    this.releaseHeld();
    await closing;
  }

  /**
   * Fail incoming requests: "http500" (HTTP 500, an HTML page), "errcode" (HTTP 200 with errcode
   * 30004), "timeout" (never answers until the mode changes or the socket is closed) or false to
   * accept again. `times` limits how many requests fail (default: until changed). Any call
   * releases the requests held by "timeout": they are then handled under the new mode.
   */
  setFailure(mode: false | OmniFailureMode, times?: number): void {
    if (times !== undefined && !(Number.isInteger(times) && times > 0)) throw new TypeError("omni simulator: times must be a positive integer");
    this.failure = mode === false ? undefined : { mode, remaining: times };
    this.log(`omni-sim failure mode: ${mode === false ? "off" : mode}${times === undefined ? "" : ` ×${times}`}`);
    this.releaseHeld();
  }

  /** Wait this long (ms) before handling each request (0 = answer at once). A client that gives up meanwhile gets nothing recorded. */
  setDelay(ms: number): void {
    if (!(ms >= 0)) throw new TypeError("omni simulator: delay must be >= 0");
    this.delayMs = ms;
  }

  /** Set (or change) where agent replies go, once the gateway's port is known. */
  setAppUrl(appUrl: string, pathPrefix?: string): void {
    this.appUrl = appUrl.replace(/\/+$/, "");
    if (pathPrefix !== undefined) this.pathPrefix = normalizePrefix(pathPrefix, "pathPrefix");
  }

  /**
   * Resolve when at least n messages have been accepted (with all of them); reject after
   * timeoutMs (default 5 s) with an error listing what arrived and what was refused.
   */
  waitFor(n: number, timeoutMs = 5000): Promise<OmniReceived[]> {
    if (this.received.length >= n) return Promise.resolve([...this.received]);
    if (this.closed) return Promise.reject(new Error("omni simulator is closed"));
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        n,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.delete(waiter);
          reject(new Error(this.describeWait(n, timeoutMs)));
        }, timeoutMs),
      };
      this.waiters.add(waiter);
    });
  }

  /** Messages accepted for one customer address (FromUserId), in order. */
  conversation(fromUserId: string): OmniToBody[] {
    return this.received.filter((r) => r.body.FromUserId === fromUserId).map((r) => r.body);
  }

  /**
   * An agent answers a customer: `POST {appUrl}{pathPrefix}/staffService/message?timestamp=&signature=`
   * with `{ToUserId, WorkerNum, WorkerName, ServiceId, MsgType, Content, Tag}` (as given, validated
   * by encodeOmniFromBody), signed with `replySecret` and a strictly increasing ms timestamp.
   * @returns the HTTP status and the parsed answer (`{errcode, errmsg}` normally)
   * @throws Error when no appUrl is set, on a network error or a timeout; EncodeError for a body missing ToUserId, MsgType or Content
   */
  async sendAgentReply(body: OmniFromBody, opts: OmniAgentReplyOptions = {}): Promise<OmniAgentReplyResult> {
    if (!this.appUrl) throw new Error("omni simulator: no appUrl to send agent replies to (pass appUrl to start() or call setAppUrl())");
    const text = opts.rawBody ?? JSON.stringify(encodeOmniFromBody({ ...body }));
    let query = "";
    if (!opts.unsigned) {
      const ts = String(opts.timestamp ?? this.nextTimestamp());
      const sig = opts.signature ?? omniSignature(this.appId, opts.secret ?? this.replySecret, ts);
      query = `?timestamp=${encodeURIComponent(ts)}&signature=${encodeURIComponent(sig)}`;
    }
    const path = `${this.pathPrefix}/staffService/message`;
    const target = new URL(`${this.appUrl}${path}${query}`);
    if (target.protocol !== "http:") throw new Error(`omni simulator: appUrl must be http:// (got ${target.protocol})`);
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const started = Date.now();
    const result = await new Promise<OmniAgentReplyResult>((resolve, reject) => {
      const req = http.request(
        target,
        { method: "POST", headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) } },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on("data", (c: Buffer) => {
            size += c.length;
            if (size <= OMNI_SIM_BODY_LIMIT) chunks.push(c);
          });
          res.on("end", () => {
            const answer = Buffer.concat(chunks).toString("utf8");
            let reply: unknown = answer;
            try {
              reply = JSON.parse(answer);
            } catch {
              // not JSON: keep the text
            }
            resolve({ status: res.statusCode ?? 0, reply });
          });
          res.on("error", reject);
        },
      );
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`omni simulator: agent reply to ${target.host}${path} timed out after ${timeoutMs} ms`)));
      req.on("error", reject);
      req.end(text);
    }).catch((e: Error) => {
      this.log(`omni-sim agent reply POST ${target.host}${path} → error ${e.message}`);
      throw e;
    });
    const errcode = isPlainObject(result.reply) ? ` errcode=${String(result.reply.errcode)}` : "";
    this.log(`omni-sim agent reply POST ${target.host}${path} to=${body.ToUserId} type=${body.MsgType} → ${result.status}${errcode} (${Date.now() - started} ms)`);
    return result;
  }

  /** A timestamp (ms) strictly greater than the previous one this simulator signed with. */
  private nextTimestamp(): number {
    const t = Math.max(Math.floor(this.now()), this.lastSentTimestamp + 1);
    this.lastSentTimestamp = t;
    return t;
  }

  private releaseHeld(): void {
    const held = [...this.held];
    this.held.clear();
    for (const h of held) h.release?.();
  }

  private describeWait(n: number, timeoutMs: number): string {
    const got = this.received.map((r, i) => `  ${i + 1}. ${summary(r)}`);
    const refused = this.rejected.map((r) => `  ${r.errcode} ${r.reason}`);
    return [
      `omni simulator: waited ${timeoutMs} ms for ${n} messages, got ${this.received.length}${got.length ? ":" : ""}`,
      ...got,
      ...(refused.length ? [`refused ${refused.length}:`, ...refused] : []),
      ...(this.failed.length ? [`failed on purpose: ${this.failed.length}`] : []),
    ].join("\n");
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const started = Date.now();
    const state: RequestState = { gone: false };
    const method = req.method ?? "?";
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    res.once("close", () => {
      if (res.writableFinished) return;
      state.gone = true;
      this.held.delete(state);
      state.release?.();
    });
    this.process(req, state)
      .catch((e: unknown) => json(500, omniReply(OmniErrcode.Internal, `simulator error: ${(e as Error).message}`), "simulator error"))
      .then((answer) => {
        const ms = Date.now() - started;
        if (!answer) {
          this.log(`omni-sim ${method} ${path} → no answer, client gone (${ms} ms)`);
          return;
        }
        this.log(`omni-sim ${method} ${path} → ${answer.status} ${answer.note} (${ms} ms)`);
        if (state.gone || res.headersSent) return;
        const headers: http.OutgoingHttpHeaders = { "Content-Type": answer.contentType, "Content-Length": Buffer.byteLength(answer.body) };
        if (answer.status === 405) headers.Allow = "POST";
        if (answer.status === 413) headers.Connection = "close";
        res.writeHead(answer.status, headers).end(answer.body);
      });
  }

  /** Handle one request; `undefined` when the client went away first (nothing to answer). */
  private async process(req: http.IncomingMessage, state: RequestState): Promise<Answer | undefined> {
    const url = new URL(req.url ?? "/", "http://omni.invalid");
    let pathname = url.pathname;
    if (this.basePath) pathname = pathname.startsWith(`${this.basePath}/`) ? pathname.slice(this.basePath.length) : "";
    const m = ROUTE.exec(pathname);
    let version: string | undefined;
    let appId: string | undefined;
    try {
      version = m ? decodeURIComponent(m[1] as string) : undefined;
      appId = m ? decodeURIComponent(m[2] as string) : undefined;
    } catch {
      version = undefined;
    }
    if (!m || version !== this.version || appId === undefined) {
      req.resume();
      return json(404, { errcode: 404, errmsg: `no such API: ${url.pathname}` }, "not found");
    }
    if (req.method !== "POST") {
      req.resume();
      return json(405, { errcode: 405, errmsg: `${req.method} not allowed: use POST` }, "method not allowed");
    }
    const kind = m[3] === "leavemessage" ? "leavemessage" : "message";

    const raw = await readBody(req, OMNI_SIM_BODY_LIMIT);
    if (raw === undefined) return this.refuse(413, OmniErrcode.BadJson, `request body exceeds ${OMNI_SIM_BODY_LIMIT} bytes`);
    if (this.delayMs > 0) await sleep(this.delayMs);

    for (;;) {
      if (state.gone || this.closed) return undefined;
      const mode = this.takeFailure();
      if (mode === undefined) break;
      this.failed.push({ mode, at: this.now() });
      if (mode === "http500") {
        const page = "<html><head><title>Apache Tomcat - Error report</title></head><body><h1>HTTP Status 500 - </h1><p>injected failure</p></body></html>";
        return { status: 500, body: page, contentType: "text/html;charset=utf-8", note: "injected HTTP 500" };
      }
      if (mode === "errcode") {
        return json(200, omniReply(OmniErrcode.Internal, "java.lang.InterruptedException (injected failure)"), "errcode=30004 injected");
      }
      await new Promise<void>((resolve) => {
        state.release = resolve;
        this.held.add(state);
      });
      state.release = undefined;
    }

    const timestamp = url.searchParams.get("timestamp");
    const signature = url.searchParams.get("signature");
    if (timestamp === null || signature === null) return this.refuse(200, OmniErrcode.MissingSignature, MSG.missing);
    if (appId !== this.appId) return this.refuse(200, OmniErrcode.UnknownAppId, MSG.unknownApp);
    const now = this.now();
    try {
      verifyOmniSignature({ appId, secret: this.secret, timestamp, signature, now, windowMs: this.windowMs });
    } catch (e) {
      if (!(e instanceof OmniError)) throw e;
      if (e.errcode === OmniErrcode.MissingSignature) return this.refuse(200, e.errcode, MSG.missing);
      const detail = e.message.replace(/^\d+ /, "");
      return this.refuse(200, e.errcode, detail === "signature mismatch" ? MSG.badSignature : `${MSG.badSignature}(${detail})`);
    }
    const key = `${timestamp}:${signature.toLowerCase()}`;
    this.pruneSeen(now);
    if (this.seen.has(key)) return this.refuse(200, OmniErrcode.BadSignature, `${MSG.badSignature}(replay: this timestamp and signature were already used)`);
    this.seen.set(key, Number(timestamp));

    const ctProblem = contentTypeProblem(req.headers["content-type"]);
    if (ctProblem) return this.refuse(200, OmniErrcode.BadJson, ctProblem);
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(raw);
    } catch {
      return this.refuse(200, OmniErrcode.BadJson, "body is not valid UTF-8");
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      return this.refuse(200, OmniErrcode.BadJson, `body is not valid JSON (${(e as Error).message.split("\n")[0]})`);
    }
    if (!isPlainObject(parsed)) return this.refuse(200, OmniErrcode.BadJson, "body must be a JSON object");

    if (kind === "leavemessage") {
      if (typeof parsed.FromUserId !== "string" || parsed.FromUserId === "") return this.refuse(200, OmniErrcode.BadJson, "FromUserId is required and must be a non-empty string");
      this.leaveMessages.push({ body: parsed, at: now, timestamp, signature });
      return json(200, omniReply(), `errcode=0 leavemessage from=${parsed.FromUserId}`);
    }

    if (parsed.FromUserId === undefined || parsed.FromUserId === null) return this.refuse(200, OmniErrcode.BadJson, "FromUserId is required and must be a non-empty string");
    // the vendor ignores keys it does not know: a stray ToUserId must not turn this into the other direction
    const { ToUserId: _ignored, ...rest } = parsed;
    let body: OmniToBody;
    try {
      const b = parseOmniBody(rest);
      if (!("FromUserId" in b)) throw new Error("FromUserId is required");
      body = b;
    } catch (e) {
      return this.refuse(200, OmniErrcode.BadJson, (e as Error).message.replace(/^omni: /, ""));
    }
    const record: OmniReceived = { body, raw: parsed, at: now, timestamp, signature };
    this.received.push(record);
    this.notifyWaiters();
    return json(200, omniReply(), `errcode=0 ${summary(record)}`);
  }

  private refuse(status: number, errcode: number, reason: string): Answer {
    this.rejected.push({ reason, errcode, at: this.now(), status });
    return json(status, omniReply(errcode, reason), `errcode=${errcode} ${reason}`);
  }

  private takeFailure(): OmniFailureMode | undefined {
    const f = this.failure;
    if (!f) return undefined;
    if (f.remaining !== undefined && --f.remaining <= 0) this.failure = undefined;
    return f.mode;
  }

  /** Forget pairs whose timestamp left the window (they are refused as stale anyway). */
  private pruneSeen(now: number): void {
    if (!Number.isFinite(this.windowMs)) return;
    for (const [k, ts] of this.seen) {
      if (Math.abs(now - ts) <= this.windowMs) break;
      this.seen.delete(k);
    }
  }

  private notifyWaiters(): void {
    for (const w of this.waiters) {
      if (this.received.length < w.n) continue;
      clearTimeout(w.timer);
      this.waiters.delete(w);
      w.resolve([...this.received]);
    }
  }
}
