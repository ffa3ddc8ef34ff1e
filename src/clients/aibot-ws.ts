/**
 * The client of WeCom's AI bot long connection (智能机器人长连接): one WebSocket per bot, on the
 * `ws` package, written for a gateway that must stay connected for months.
 *
 * - Subscribes with `aibot_subscribe {bot_id, secret}` on every connection; `generation` counts the
 *   successful subscribes. A callback's req_id is valid only on the connection it came on, so
 *   {@link AibotWsClient.respond} refuses a req_id of an older generation at once.
 * - Reconnects for ever: capped exponential backoff with jitter after a lost connection; the
 *   longest backoff after a refused subscribe (a secret may be fixed at any time); a quiet period
 *   after `disconnected_event` (another connection took the bot over: never fight it). The backoff
 *   starts again from `backoffMinMs` only once a connection proved stable (a ping acked with
 *   errcode 0), not at the subscribe: a link cut right after each subscribe (a NAT or proxy,
 *   846609) backs off like any other failure.
 * - Heartbeat: a `ping` every `pingIntervalMs`; two pings in a row without an ack mean the link is
 *   dead: the socket is terminated and a new one made.
 * - Every request waits for its ack (matched by req_id) at most `ackTimeoutMs`. Frames that share a
 *   req_id (the parts of one answer) go one at a time, each after the previous one's ack, error or
 *   timeout, because an ack names only the req_id. A timed-out frame is still owed its ack: the
 *   next frame on that req_id waits for it (then swallowed: it settles nothing), or for
 *   `ackTimeoutMs` more, after which the ack is taken as lost.
 * - The reader never waits: callbacks are handed to `onInbound` synchronously, its exceptions are
 *   caught and logged.
 * - The secret appears in no log line and no error; frames are never logged, only their command,
 *   req_id, errcode and errmsg.
 * @module
 */
import WebSocket from "ws";
import { BridgeError } from "../errors.js";
import type { Logger } from "../log.js";
import {
  AIBOT_CMD,
  type AibotMediaType,
  type AibotParsedFrame,
  buildAibotFrame,
  buildAibotPing,
  buildAibotSubscribe,
  isAibotDisconnectedEvent,
  newAibotReqId,
  parseAibotFrame,
  planAibotUpload,
} from "../wecom/bot/ws-frames.js";

/**
 * Where the client is:
 * - `idle`: not started;
 * - `connecting`: opening the WebSocket;
 * - `subscribing`: open, waiting for the subscribe's ack;
 * - `open`: subscribed: requests can be sent;
 * - `backoff`: the connection was lost or could not be made; waiting before the next try;
 * - `kicked`: another connection took the bot over (`disconnected_event`); waiting `kickedQuietMs`;
 * - `auth_failed`: the subscribe was refused (bot id or secret); waiting `backoffMaxMs`;
 * - `stopped`: {@link AibotWsClient.stop} was called.
 */
export type AibotWsState = "idle" | "connecting" | "subscribing" | "open" | "backoff" | "kicked" | "auth_failed" | "stopped";

/** The server's answer to a request, whatever its errcode. */
export interface AibotAck {
  /** 0 when the request was accepted. */
  errcode: number;
  /** WeCom's message ("ok" on success). */
  errmsg: string;
  /** Data of the answer, for the commands that return some (media upload init and finish). */
  body?: Record<string, unknown>;
}

/** A callback from the server (`aibot_msg_callback`, `aibot_event_callback`, or a command this client does not know). */
export interface AibotInbound {
  /** The command, e.g. `aibot_msg_callback`. */
  cmd: string;
  /** The callback's req_id: answer with {@link AibotWsClient.respond} on it. */
  reqId: string;
  /** The callback's body (the message or the event, as WeCom sent it). */
  body: Record<string, unknown>;
  /** The generation of the connection it came on; pass it to {@link AibotWsClient.respond}. */
  generation: number;
}

/** What {@link AibotWsOptions.onState} is told with a new state. */
export interface AibotWsStateDetail {
  /** Why the state changed (no secrets, no frame content). */
  reason?: string;
  /** For `backoff`, `kicked` and `auth_failed`: the wait before the next connection, ms. */
  delayMs?: number;
}

/** Options of {@link AibotWsClient}. */
export interface AibotWsOptions {
  /** The WebSocket URL, `wss://openws.work.weixin.qq.com` for WeCom's cloud. */
  url: string;
  /** The bot's id. */
  botId: string;
  /** The bot's secret (sent in the subscribe frame only; never logged). */
  secret: string;
  /** Interval of the heartbeat pings, ms. Default 30 000. */
  pingIntervalMs?: number;
  /** How long a request, a respond or a ping waits for its ack, ms. Default 10 000. */
  ackTimeoutMs?: number;
  /**
   * First reconnect delay, ms, doubled at each further attempt until a connection proves stable
   * (its first ping acked with errcode 0: a subscribe alone does not reset the backoff). Default 1 000.
   */
  backoffMinMs?: number;
  /** Longest reconnect delay, ms; also the delay after a refused subscribe. Default 30 000. */
  backoffMaxMs?: number;
  /** Wait after a `disconnected_event` before connecting again, ms. Default 60 000. */
  kickedQuietMs?: number;
  /**
   * Deadline of the WebSocket opening handshake (TCP, TLS, HTTP upgrade), ms, and, once open, of the
   * subscribe's ack. Default 10 000.
   */
  handshakeTimeoutMs?: number;
  /** Most frames queued (in flight included) per callback req_id; more are refused. Default 64. */
  maxQueuePerReqId?: number;
  /** The logger; the secret is never given to it. */
  log: Logger;
  /**
   * Receives the callbacks (not `disconnected_event`, which the client handles itself). Called
   * synchronously by the reader: it must not block (hand the work to a queue); its exceptions are
   * caught and logged.
   */
  onInbound(frame: AibotInbound): void;
  /** Told of every state change. Its exceptions are caught and logged. */
  onState?(state: AibotWsState, detail: AibotWsStateDetail): void;
  /** A source of numbers in [0, 1) for the backoff jitter and the req_ids (tests). Default `Math.random`. */
  random?: () => number;
}

/** What the client counted since it was made (for metrics). */
export interface AibotWsCounters {
  /** Successful subscribes (sessions established). */
  connects: number;
  /** Connection attempts made after a lost or failed connection (every attempt but the first of a start). */
  reconnects: number;
  /** `disconnected_event`s received: another connection took the bot over. */
  kicks: number;
  /** Connections declared dead after two pings in a row went without an ack. */
  deadByPing: number;
  /** Subscribes refused with a non-zero errcode. */
  authFailures: number;
}

/** Base class of the client's errors; `cmd` is the command the failure concerns. */
export class AibotWsError extends BridgeError {
  /** The command that failed (e.g. `aibot_respond_msg`). */
  readonly cmd: string;

  /**
   * @param code stable code
   * @param cmd the command
   * @param message one readable line, free of secrets
   */
  constructor(code: string, cmd: string, message: string) {
    super(code, `${cmd}: ${message}`);
    this.cmd = cmd;
  }
}

/** WeCom answered a step of a composite call ({@link AibotWsClient.uploadMedia}) with a non-zero errcode (or a malformed answer: errcode -1). */
export class AibotWsApiError extends AibotWsError {
  /** WeCom's errcode; -1 when the answer lacked a field it must have. */
  readonly errcode: number;
  /** WeCom's errmsg. */
  readonly errmsg: string;

  /**
   * @param cmd the command answered
   * @param errcode WeCom's errcode
   * @param errmsg WeCom's errmsg
   */
  constructor(cmd: string, errcode: number, errmsg: string) {
    super("aibot_ws_api", cmd, `errcode ${errcode} ${errmsg}`);
    this.errcode = errcode;
    this.errmsg = errmsg;
  }
}

/** The client is not subscribed (not started, connecting, waiting to reconnect, stopped): nothing was sent. */
export class AibotWsNotOpenError extends AibotWsError {
  /**
   * @param cmd the command refused
   * @param state the client's state
   */
  constructor(cmd: string, state: AibotWsState) {
    super("aibot_ws_not_open", cmd, `the long connection is not open (${state})`);
  }
}

/** No ack came within `ackTimeoutMs`: the frame may or may not have been taken. */
export class AibotWsTimeoutError extends AibotWsError {
  /**
   * @param cmd the command
   * @param ms the timeout
   */
  constructor(cmd: string, ms: number) {
    super("aibot_ws_timeout", cmd, `no ack within ${ms} ms`);
  }
}

/** The socket closed (or the client stopped) while the frame waited for its ack: it may or may not have been taken. */
export class AibotWsClosedError extends AibotWsError {
  /** @param cmd the command */
  constructor(cmd: string) {
    super("aibot_ws_closed", cmd, "the long connection closed before the ack");
  }
}

/**
 * The callback's req_id died with its connection (another generation, or the connection of its
 * generation is gone): nothing was sent. Answer with `aibot_send_msg` instead.
 */
export class AibotWsStaleError extends AibotWsError {
  /**
   * @param cmd the command refused
   * @param detail which generation, or why
   */
  constructor(cmd: string, detail: string) {
    super("aibot_ws_stale", cmd, `req_id of a closed connection (${detail})`);
  }
}

/** Too many frames already wait for one req_id (or for acks overall): nothing was sent. */
export class AibotWsQueueFullError extends AibotWsError {
  /**
   * @param cmd the command refused
   * @param limit the limit reached
   */
  constructor(cmd: string, limit: number) {
    super("aibot_ws_queue_full", cmd, `${limit} frames already waiting`);
  }
}

/** Largest frame accepted from the server, bytes. */
const MAX_PAYLOAD_BYTES = 4 * 1024 * 1024;
/** Time a closing socket gets to finish the close handshake before it is terminated, ms. */
const CLOSE_GRACE_MS = 2000;
/** Most requests waiting for their acks at once (each is also bounded by `ackTimeoutMs`). */
const MAX_PENDING = 10_000;
/** Most req_ids remembered as owed a late ack (the oldest is forgotten beyond). */
const MAX_OWED = 10_000;
/** "aibot websocket not subscribed": the socket is open but the server no longer serves it. */
const ERRCODE_NOT_SUBSCRIBED = 846609;
/** Misses of the heartbeat that declare a connection dead. */
const DEAD_AFTER_MISSED_PINGS = 2;

/** One WebSocket and what belongs to it. */
interface Conn {
  ws: WebSocket;
  subscribed: boolean;
  subscribeReqId?: string;
  pingTimer?: NodeJS.Timeout;
  /** The last ping's req_id while it waits for its ack. */
  pingReqId?: string;
  /** Pings missed in a row. */
  missed: number;
}

/** A frame waiting for its ack. */
interface Pending {
  cmd: string;
  timer: NodeJS.Timeout;
  settle(result: AibotAck | Error): void;
}

/** A frame queued on a callback's req_id. */
interface QueuedFrame {
  cmd: string;
  body: Record<string, unknown>;
  resolve(ack: AibotAck): void;
  reject(error: Error): void;
}

/** The frames of one callback req_id, sent one at a time. */
interface RespondQueue {
  reqId: string;
  generation: number;
  items: QueuedFrame[];
  /** A frame is in flight, or the req_id is held after a timeout (`graceTimer`). */
  busy: boolean;
  /** Set while the req_id is held after a timeout: until the late ack, or this timer (`ackTimeoutMs`). */
  graceTimer?: NodeJS.Timeout;
}

/** The text of an error, for a log line. */
function errorText(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

/**
 * A long connection of one AI bot. Call {@link AibotWsClient.start} once; it connects and keeps
 * reconnecting until {@link AibotWsClient.stop}.
 */
export class AibotWsClient {
  readonly #url: string;
  readonly #botId: string;
  readonly #secret: string;
  readonly #pingIntervalMs: number;
  readonly #ackTimeoutMs: number;
  readonly #backoffMinMs: number;
  readonly #backoffMaxMs: number;
  readonly #kickedQuietMs: number;
  readonly #handshakeTimeoutMs: number;
  readonly #maxQueue: number;
  readonly #log: Logger;
  readonly #onInbound: (frame: AibotInbound) => void;
  readonly #onState: ((state: AibotWsState, detail: AibotWsStateDetail) => void) | undefined;
  readonly #random: () => number;

  #state: AibotWsState = "idle";
  #generation = 0;
  #counters: AibotWsCounters = { connects: 0, reconnects: 0, kicks: 0, deadByPing: 0, authFailures: 0 };
  #running = false;
  #conn: Conn | undefined;
  #reconnectTimer: NodeJS.Timeout | undefined;
  /** Attempts since the last connection that proved stable (a ping acked): the backoff exponent. */
  #attempt = 0;
  readonly #pending = new Map<string, Pending>();
  readonly #queues = new Map<string, RespondQueue>();
  /**
   * req_id → frames on it that timed out (or whose wait was given up) and whose late ack may still
   * come: that many next acks on the req_id are swallowed. Entries go at 0, at a close, or beyond
   * MAX_OWED (oldest first).
   */
  readonly #owed = new Map<string, number>();
  /** Sockets being closed (their close handshake may outlive the client's use of them). */
  readonly #closing = new Set<Promise<void>>();

  /** @param opts the options; see {@link AibotWsOptions} for the defaults */
  constructor(opts: AibotWsOptions) {
    this.#url = opts.url;
    this.#botId = opts.botId;
    this.#secret = opts.secret;
    this.#pingIntervalMs = opts.pingIntervalMs ?? 30_000;
    this.#ackTimeoutMs = opts.ackTimeoutMs ?? 10_000;
    this.#backoffMinMs = opts.backoffMinMs ?? 1_000;
    this.#backoffMaxMs = Math.max(opts.backoffMaxMs ?? 30_000, this.#backoffMinMs);
    this.#kickedQuietMs = opts.kickedQuietMs ?? 60_000;
    this.#handshakeTimeoutMs = opts.handshakeTimeoutMs ?? 10_000;
    this.#maxQueue = opts.maxQueuePerReqId ?? 64;
    this.#log = opts.log.child({ component: "aibot-ws", botId: opts.botId });
    this.#onInbound = opts.onInbound;
    this.#onState = opts.onState;
    this.#random = opts.random ?? Math.random;
  }

  /** The current state. */
  get state(): AibotWsState {
    return this.#state;
  }

  /** Successful subscribes so far: the generation of the current (or last) connection; 0 before the first. */
  get generation(): number {
    return this.#generation;
  }

  /** A copy of the counters. */
  get counters(): AibotWsCounters {
    return { ...this.#counters };
  }

  /** Connect, and keep reconnecting for ever until {@link AibotWsClient.stop}. A second call does nothing. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#attempt = 0;
    this.#connect(false);
  }

  /**
   * Stop: no more reconnects; the socket is closed (resolves once it is, or terminated after a
   * grace of 2 s). Frames waiting for their acks reject with {@link AibotWsClosedError}; frames
   * queued behind them on a callback's req_id with {@link AibotWsStaleError}.
   */
  async stop(): Promise<void> {
    this.#running = false;
    if (this.#reconnectTimer !== undefined) clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
    const conn = this.#conn;
    if (conn !== undefined) {
      this.#detach(conn);
      this.#close(conn, "close");
    }
    this.#setState("stopped", { reason: "stop()" });
    await Promise.all([...this.#closing]);
  }

  /**
   * Send a request on a fresh req_id (`${cmd}_${ms}_${8 hex}`) and wait for its ack. Resolves with
   * the ack whatever its errcode.
   * @throws AibotWsNotOpenError when not subscribed
   * @throws AibotWsTimeoutError when no ack came within `ackTimeoutMs`
   * @throws AibotWsClosedError when the socket closed while waiting
   * @throws AibotWsQueueFullError when 10 000 requests already wait for acks
   */
  send(cmd: string, body: Record<string, unknown>): Promise<AibotAck> {
    const conn = this.#openConn();
    if (conn === undefined) return Promise.reject(new AibotWsNotOpenError(cmd, this.#state));
    if (this.#pending.size >= MAX_PENDING) return Promise.reject(new AibotWsQueueFullError(cmd, MAX_PENDING));
    const reqId = this.#freshReqId(cmd);
    return new Promise((resolve, reject) => {
      this.#request(conn, cmd, reqId, buildAibotFrame(cmd, reqId, body), this.#ackTimeoutMs, (r) => (r instanceof Error ? reject(r) : resolve(r)));
    });
  }

  /**
   * Answer a callback on its req_id and wait for the ack (resolves with it whatever its errcode).
   * Frames of one req_id are sent one at a time, in call order: each after the previous one's ack,
   * error or timeout. After a timeout the req_id is held: the next frame waits for the timed-out
   * frame's late ack (swallowed: it settles nothing) or for `ackTimeoutMs` more (the ack is then
   * taken as lost), so that a late ack does not settle the wrong frame.
   * @param reqId the callback's req_id
   * @param cmd `aibot_respond_msg` (a message), `aibot_respond_welcome_msg` (enter_chat),
   *   `aibot_respond_update_msg` (template_card_event)
   * @param body the answer
   * @param generation the callback's {@link AibotInbound.generation}
   * @throws AibotWsStaleError at once when `generation` is not the current one or its connection is gone
   * @throws AibotWsQueueFullError when `maxQueuePerReqId` frames already wait on this req_id
   * @throws AibotWsTimeoutError, AibotWsClosedError as {@link AibotWsClient.send}; queued frames not
   *   yet sent when the connection closes reject with AibotWsStaleError
   */
  respond(reqId: string, cmd: "aibot_respond_msg" | "aibot_respond_welcome_msg" | "aibot_respond_update_msg", body: Record<string, unknown>, generation: number): Promise<AibotAck> {
    if (generation !== this.#generation) return Promise.reject(new AibotWsStaleError(cmd, `generation ${generation}, current ${this.#generation}`));
    if (this.#openConn() === undefined) return Promise.reject(new AibotWsStaleError(cmd, `generation ${generation} is no longer connected (${this.#state})`));
    let q = this.#queues.get(reqId);
    if (q === undefined) {
      q = { reqId, generation, items: [], busy: false };
      this.#queues.set(reqId, q);
    }
    if (q.items.length + (q.busy ? 1 : 0) >= this.#maxQueue) return Promise.reject(new AibotWsQueueFullError(cmd, this.#maxQueue));
    const queue = q;
    return new Promise((resolve, reject) => {
      queue.items.push({ cmd, body, resolve, reject });
      this.#pump(queue);
    });
  }

  /**
   * Upload a file for a `media_id` (valid 3 days): `aibot_upload_media_init` (with the md5 hex of
   * the file), then chunks of at most 512 KiB (0-based `chunk_index`, `base64_data`), one at a
   * time, then `aibot_upload_media_finish`.
   * @returns the media_id, its type and `created_at` as WeCom gives it (unix seconds)
   * @throws EncodeError when the file is empty or larger than 100 chunks (50 MiB)
   * @throws AibotWsApiError on any non-zero errcode (or an answer without upload_id / media_id: errcode -1)
   * @throws AibotWsNotOpenError, AibotWsTimeoutError, AibotWsClosedError as {@link AibotWsClient.send}
   */
  async uploadMedia(type: AibotMediaType, filename: string, bytes: Buffer): Promise<{ mediaId: string; type: string; createdAt: number }> {
    const plan = planAibotUpload(type, filename, bytes);
    const init = await this.#call(AIBOT_CMD.uploadMediaInit, plan.init);
    const uploadId = init.body?.upload_id;
    if ((typeof uploadId !== "string" && typeof uploadId !== "number") || uploadId === "") throw new AibotWsApiError(AIBOT_CMD.uploadMediaInit, -1, "the answer has no upload_id");
    const id = String(uploadId);
    for (let i = 0; i < plan.totalChunks; i++) await this.#call(AIBOT_CMD.uploadMediaChunk, plan.chunk(id, i));
    const finish = await this.#call(AIBOT_CMD.uploadMediaFinish, { upload_id: id });
    const mediaId = finish.body?.media_id;
    if (typeof mediaId !== "string" || mediaId === "") throw new AibotWsApiError(AIBOT_CMD.uploadMediaFinish, -1, "the answer has no media_id");
    const answeredType = finish.body?.type;
    const createdAt = Number(finish.body?.created_at);
    return {
      mediaId,
      type: typeof answeredType === "string" && answeredType !== "" ? answeredType : type,
      createdAt: Number.isFinite(createdAt) && createdAt > 0 ? createdAt : Math.floor(Date.now() / 1000),
    };
  }

  /** {@link AibotWsClient.send}, throwing an AibotWsApiError on a non-zero errcode. */
  async #call(cmd: string, body: Record<string, unknown>): Promise<AibotAck> {
    const ack = await this.send(cmd, body);
    if (ack.errcode !== 0) throw new AibotWsApiError(cmd, ack.errcode, ack.errmsg);
    return ack;
  }

  // ---- connection life ------------------------------------------------------------------------

  #connect(isReconnect: boolean): void {
    this.#reconnectTimer = undefined;
    if (!this.#running) return;
    if (isReconnect) this.#counters.reconnects++;
    this.#setState("connecting", { reason: isReconnect ? "reconnect" : "start" });
    let ws: WebSocket;
    try {
      ws = new WebSocket(this.#url, { handshakeTimeout: this.#handshakeTimeoutMs, maxPayload: MAX_PAYLOAD_BYTES });
    } catch (e) {
      // an invalid URL throws here; keep trying (the configuration may be reloaded), loudly
      this.#log.error("aibot ws: cannot open the connection", { error: errorText(e) });
      this.#scheduleReconnect("backoff", "cannot open the connection");
      return;
    }
    const conn: Conn = { ws, subscribed: false, missed: 0 };
    this.#conn = conn;
    ws.on("open", () => {
      if (conn === this.#conn) this.#subscribe(conn);
    });
    ws.on("message", (data, isBinary) => {
      if (conn === this.#conn) this.#onMessage(conn, data, isBinary);
    });
    ws.on("error", (err) => {
      if (conn === this.#conn) this.#log.warn("aibot ws: socket error", { error: err.message });
    });
    ws.on("close", (code) => {
      if (conn !== this.#conn) return;
      this.#detach(conn);
      this.#log.warn("aibot ws: connection closed", { code, subscribed: conn.subscribed });
      this.#scheduleReconnect("backoff", conn.subscribed ? `connection closed (${code})` : `connection failed (${code})`);
    });
  }

  #subscribe(conn: Conn): void {
    this.#setState("subscribing", {});
    const reqId = this.#freshReqId(AIBOT_CMD.subscribe);
    conn.subscribeReqId = reqId;
    const text = buildAibotSubscribe(reqId, this.#botId, this.#secret);
    this.#request(conn, AIBOT_CMD.subscribe, reqId, text, this.#handshakeTimeoutMs, (r) => {
      if (conn !== this.#conn) return;
      if (r instanceof AibotWsTimeoutError) {
        this.#log.warn("aibot ws: no answer to the subscribe", { timeoutMs: this.#handshakeTimeoutMs });
        this.#lose(conn, "terminate", "backoff", "no answer to the subscribe");
      } else if (!(r instanceof Error)) this.#onSubscribeAck(conn, r);
    });
  }

  #onSubscribeAck(conn: Conn, ack: AibotAck): void {
    if (ack.errcode === 0) {
      conn.subscribed = true;
      this.#generation++;
      this.#counters.connects++;
      this.#log.info("aibot ws: subscribed", { generation: this.#generation });
      this.#setState("open", { reason: "subscribed" });
      conn.pingTimer = setInterval(() => this.#ping(conn), this.#pingIntervalMs);
      return;
    }
    this.#counters.authFailures++;
    const errmsg = this.#secret === "" ? ack.errmsg : ack.errmsg.split(this.#secret).join("[redacted]");
    this.#log.error("aibot ws: the subscribe was refused: check the bot id and secret; retrying at the longest backoff", { errcode: ack.errcode, errmsg });
    this.#lose(conn, "close", "auth_failed", `subscribe refused: errcode ${ack.errcode}`);
  }

  #ping(conn: Conn): void {
    if (conn !== this.#conn) return;
    if (conn.pingReqId !== undefined && this.#forget(conn.pingReqId)) {
      // the previous ping is still unanswered at the next tick (ackTimeoutMs ≥ the interval)
      conn.pingReqId = undefined;
      if (this.#missedPing(conn)) return;
    }
    const reqId = this.#freshReqId(AIBOT_CMD.ping);
    conn.pingReqId = reqId;
    this.#request(conn, AIBOT_CMD.ping, reqId, buildAibotPing(reqId), this.#ackTimeoutMs, (r) => {
      if (conn.pingReqId === reqId) conn.pingReqId = undefined;
      if (r instanceof AibotWsTimeoutError && conn === this.#conn) this.#missedPing(conn);
      else if (!(r instanceof Error) && r.errcode === 0 && conn === this.#conn && this.#attempt !== 0) {
        // the link carried a heartbeat both ways: it is stable, the backoff starts again from the bottom
        this.#attempt = 0;
        this.#log.debug("aibot ws: the connection is stable; the backoff is reset", { generation: this.#generation });
      }
    });
  }

  /** Count a missed ping; true when that made the connection dead (it is then torn down). */
  #missedPing(conn: Conn): boolean {
    conn.missed++;
    this.#log.debug("aibot ws: ping without ack", { missed: conn.missed });
    if (conn.missed < DEAD_AFTER_MISSED_PINGS) return false;
    this.#counters.deadByPing++;
    this.#log.warn("aibot ws: no ack to two pings in a row; the connection is dead, reconnecting", { generation: this.#generation });
    this.#lose(conn, "terminate", "backoff", "no ack to two pings in a row");
    return true;
  }

  #onKick(conn: Conn): void {
    this.#counters.kicks++;
    this.#log.warn(
      "aibot ws: the bot was taken over by another connection (disconnected_event); two deployments, or replicas without a shared store, may share one bot. Not reconnecting during the quiet period",
      { quietMs: this.#kickedQuietMs, kicks: this.#counters.kicks },
    );
    this.#lose(conn, "close", "kicked", "disconnected_event: another connection took the bot over");
  }

  /** Give up a connection: detach it, close or terminate its socket, then wait and reconnect. */
  #lose(conn: Conn, how: "close" | "terminate", next: "backoff" | "kicked" | "auth_failed", reason: string): void {
    if (conn !== this.#conn) return;
    this.#detach(conn);
    this.#close(conn, how);
    this.#scheduleReconnect(next, reason);
  }

  /**
   * Make `conn` no longer the client's: stop its heartbeat; frames waiting for acks reject with
   * AibotWsClosedError, frames queued behind them with AibotWsStaleError.
   */
  #detach(conn: Conn): void {
    if (this.#conn === conn) this.#conn = undefined;
    if (conn.pingTimer !== undefined) clearInterval(conn.pingTimer);
    conn.pingTimer = undefined;
    const queues = [...this.#queues.values()];
    this.#queues.clear();
    this.#owed.clear();
    for (const q of queues) {
      if (q.graceTimer !== undefined) clearTimeout(q.graceTimer);
      q.graceTimer = undefined;
      for (const item of q.items.splice(0)) item.reject(new AibotWsStaleError(item.cmd, `generation ${q.generation} closed before this frame was sent`));
    }
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.settle(new AibotWsClosedError(p.cmd));
    }
  }

  /** Close a detached socket (politely, terminated after a grace) or terminate it; tracked until closed. */
  #close(conn: Conn, how: "close" | "terminate"): void {
    const ws = conn.ws;
    if (ws.readyState === WebSocket.CLOSED) return;
    const closed = new Promise<void>((resolve) => {
      const grace = setTimeout(() => ws.terminate(), CLOSE_GRACE_MS);
      ws.once("close", () => {
        clearTimeout(grace);
        resolve();
      });
    });
    this.#closing.add(closed);
    void closed.then(() => this.#closing.delete(closed));
    try {
      if (how === "terminate" || ws.readyState === WebSocket.CONNECTING) ws.terminate();
      else ws.close(1000);
    } catch (e) {
      this.#log.debug("aibot ws: close failed; terminating", { error: errorText(e) });
      ws.terminate();
    }
  }

  #scheduleReconnect(next: "backoff" | "kicked" | "auth_failed", reason: string): void {
    if (!this.#running) return;
    let delayMs: number;
    if (next === "kicked") delayMs = this.#kickedQuietMs;
    else if (next === "auth_failed") delayMs = this.#jitter(this.#backoffMaxMs);
    else {
      delayMs = this.#jitter(Math.min(this.#backoffMaxMs, this.#backoffMinMs * 2 ** Math.min(this.#attempt, 30)));
      this.#attempt++;
    }
    this.#setState(next, { reason, delayMs });
    if (this.#reconnectTimer !== undefined) clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = setTimeout(() => this.#connect(true), delayMs);
  }

  /** A delay drawn in [d/2, d]. */
  #jitter(d: number): number {
    const r = Math.min(Math.max(this.#random(), 0), 1);
    return Math.round(d / 2 + (r * d) / 2);
  }

  #setState(state: AibotWsState, detail: AibotWsStateDetail): void {
    if (state === this.#state) return;
    this.#state = state;
    if (this.#onState === undefined) return;
    try {
      this.#onState(state, detail);
    } catch (e) {
      this.#log.error("aibot ws: onState threw", { state, error: errorText(e) });
    }
  }

  /** The connection when subscribed and open. */
  #openConn(): Conn | undefined {
    const conn = this.#conn;
    return conn?.subscribed && this.#state === "open" && conn.ws.readyState === WebSocket.OPEN ? conn : undefined;
  }

  // ---- frames ---------------------------------------------------------------------------------

  #freshReqId(cmd: string): string {
    const now = Date.now();
    for (let n = 0; ; n++) {
      const id = newAibotReqId(cmd, this.#random, now, n);
      if (!this.#pending.has(id) && !this.#queues.has(id) && !this.#owed.has(id)) return id;
    }
  }

  /** Send a frame and wait up to `timeoutMs` for the ack of `reqId`; `settle` is called exactly once. */
  #request(conn: Conn, cmd: string, reqId: string, text: string, timeoutMs: number, settle: (r: AibotAck | Error) => void): void {
    const entry: Pending = {
      cmd,
      settle,
      timer: setTimeout(() => {
        if (this.#pending.get(reqId) !== entry) return;
        this.#pending.delete(reqId);
        this.#owe(reqId);
        settle(new AibotWsTimeoutError(cmd, timeoutMs));
      }, timeoutMs),
    };
    this.#pending.set(reqId, entry);
    conn.ws.send(text, (err) => {
      if (err === undefined || err === null || this.#pending.get(reqId) !== entry) return;
      this.#log.debug("aibot ws: a frame could not be written", { cmd, error: err.message });
      this.#pending.delete(reqId);
      clearTimeout(entry.timer);
      settle(new AibotWsClosedError(cmd));
    });
  }

  /** Drop the wait for `reqId` without settling it (its late ack is then owed); true when there was one. */
  #forget(reqId: string): boolean {
    const p = this.#pending.get(reqId);
    if (p === undefined) return false;
    clearTimeout(p.timer);
    this.#pending.delete(reqId);
    this.#owe(reqId);
    return true;
  }

  /** Remember that a frame on `reqId` was given up while its ack may still come. */
  #owe(reqId: string): void {
    const n = this.#owed.get(reqId) ?? 0;
    if (n === 0 && this.#owed.size >= MAX_OWED) {
      const oldest = this.#owed.keys().next();
      if (oldest.done !== true) this.#owed.delete(oldest.value);
    }
    this.#owed.set(reqId, n + 1);
  }

  /** End the hold of a req_id after a timeout (late ack or grace over) and send its next frame. */
  #release(q: RespondQueue, why: string): void {
    if (q.graceTimer === undefined) return;
    clearTimeout(q.graceTimer);
    q.graceTimer = undefined;
    // no late ack within the grace: it is taken as lost, else every later frame's ack on the
    // req_id would be swallowed in its place (a cascade of timeouts); an ack later still than the
    // grace would settle the next frame (acks name only the req_id: the lesser harm)
    if (why === "grace over") this.#owed.delete(q.reqId);
    q.busy = false;
    this.#log.debug("aibot ws: a req_id held after a timeout is free again", { reqId: q.reqId, why, queued: q.items.length });
    this.#pump(q);
  }

  /** Send the next frame queued on a req_id, when none is in flight. */
  #pump(q: RespondQueue): void {
    if (q.busy || this.#queues.get(q.reqId) !== q) return;
    const item = q.items.shift();
    if (item === undefined) {
      this.#queues.delete(q.reqId);
      return;
    }
    const conn = this.#openConn();
    if (conn === undefined || q.generation !== this.#generation) {
      item.reject(new AibotWsStaleError(item.cmd, `generation ${q.generation} is no longer connected`));
      this.#pump(q);
      return;
    }
    q.busy = true;
    this.#request(conn, item.cmd, q.reqId, buildAibotFrame(item.cmd, q.reqId, item.body), this.#ackTimeoutMs, (r) => {
      if (r instanceof Error) item.reject(r);
      else item.resolve(r);
      if (r instanceof AibotWsTimeoutError && this.#queues.get(q.reqId) === q) {
        // the timed-out frame's ack may still come, and would settle the next frame: hold the req_id
        // (busy) until that late ack or for ackTimeoutMs more
        q.graceTimer = setTimeout(() => this.#release(q, "grace over"), this.#ackTimeoutMs);
        return;
      }
      q.busy = false;
      this.#pump(q);
    });
  }

  #onMessage(conn: Conn, data: WebSocket.RawData, isBinary: boolean): void {
    if (isBinary) {
      this.#log.warn("aibot ws: a binary frame, ignored");
      return;
    }
    const text = Buffer.isBuffer(data) ? data.toString("utf8") : Array.isArray(data) ? Buffer.concat(data).toString("utf8") : Buffer.from(data).toString("utf8");
    const frame = parseAibotFrame(text);
    if (frame.kind === "invalid") this.#log.warn("aibot ws: a frame that is not of the protocol, ignored", { reason: frame.reason, bytes: text.length });
    else if (frame.kind === "ack") this.#onAck(conn, frame);
    else this.#onCallback(conn, frame);
  }

  #onAck(conn: Conn, frame: Extract<AibotParsedFrame, { kind: "ack" }>): void {
    conn.missed = 0;
    const ack: AibotAck = { errcode: frame.errcode, errmsg: frame.errmsg };
    if (frame.body !== undefined) ack.body = frame.body;
    let reqId = frame.reqId;
    if (reqId === undefined) {
      // before the subscribe is answered it is the only request: an error frame without req_id answers it
      if (!conn.subscribed && conn.subscribeReqId !== undefined && this.#pending.has(conn.subscribeReqId)) reqId = conn.subscribeReqId;
      else {
        this.#log.warn("aibot ws: WeCom answered a malformed request with an error frame without req_id", { errcode: frame.errcode, errmsg: frame.errmsg });
        return;
      }
    }
    let cmd: string | undefined;
    const owed = this.#owed.get(reqId);
    if (owed !== undefined) {
      // acks of one req_id come in order: the first ones are those of its timed-out frames
      if (owed <= 1) this.#owed.delete(reqId);
      else this.#owed.set(reqId, owed - 1);
      this.#log.debug("aibot ws: the late ack of a frame that timed out, swallowed: it settles nothing", { reqId, errcode: frame.errcode });
      const q = this.#queues.get(reqId);
      if (q !== undefined) this.#release(q, "late ack");
    } else {
      const p = this.#pending.get(reqId);
      if (p === undefined) {
        this.#log.debug("aibot ws: an ack that matches no waiting request (unknown)", { reqId, errcode: frame.errcode });
        return;
      }
      this.#pending.delete(reqId);
      clearTimeout(p.timer);
      cmd = p.cmd;
      p.settle(ack);
    }
    if (ack.errcode === ERRCODE_NOT_SUBSCRIBED && conn.subscribed && conn === this.#conn) {
      this.#log.warn("aibot ws: WeCom no longer treats this connection as subscribed (846609); reconnecting", { cmd: cmd ?? "(late ack)" });
      this.#lose(conn, "terminate", "backoff", "846609 not subscribed");
    }
  }

  #onCallback(conn: Conn, frame: Extract<AibotParsedFrame, { kind: "callback" }>): void {
    if (isAibotDisconnectedEvent(frame.cmd, frame.body)) {
      this.#onKick(conn);
      return;
    }
    if (!conn.subscribed) {
      this.#log.warn("aibot ws: a callback before the subscribe was answered, ignored", { cmd: frame.cmd, reqId: frame.reqId });
      return;
    }
    try {
      this.#onInbound({ cmd: frame.cmd, reqId: frame.reqId, body: frame.body, generation: this.#generation });
    } catch (e) {
      this.#log.error("aibot ws: onInbound threw", { cmd: frame.cmd, reqId: frame.reqId, error: errorText(e) });
    }
  }
}
