/**
 * What AI bots send over the long connection (智能机器人长连接) in the WeCom simulator, and what
 * WeCom answers: `aibot_respond_msg` (streams with replace semantics and the 6-minute window, or a
 * one-off markdown, template card or media reply), `aibot_respond_welcome_msg` and
 * `aibot_respond_update_msg` (once, within 5 s of their event), `aibot_send_msg`, and the chunked
 * media upload (`aibot_upload_media_init` / `_chunk` / `_finish`). Each frame is checked as WeCom
 * checks it, answered with an errcode, and recorded with that errcode. The connections themselves
 * (subscribe, ping, callbacks, kicks) are in bot-ws.ts.
 * @module
 */
import { createHash, randomBytes } from "node:crypto";
import type { WebSocket } from "ws";
import { utf8Length } from "../../wecom/fields.js";
import type { SimBot, SimContext } from "./context.js";
import { type UploadType, WECOM_RULES } from "./rules.js";
import type { WeComSimWsConnection, WeComSimWsEventReply, WeComSimWsMedia, WeComSimWsSend, WeComSimWsStream, WeComSimWsStreamFrame, WeComSimWsUpload } from "./types.js";

type Json = Record<string, unknown>;

const RULES = WECOM_RULES.botWs;
const E = RULES.errcodes;

/** How many records of each kind (streams, sends, event replies, uploads) the simulator keeps; older ones are dropped. */
export const WS_RECORDS_MAX = 10_000;
/** How many callbacks (req_ids) and streams one connection remembers; older ones answer 846605. */
export const WS_PER_CONNECTION_MAX = 1000;
/** How many uploaded media files are kept (beyond, the oldest are forgotten as if expired). */
const MEDIA_MAX = 256;

/** Append to a record list, dropping the oldest entries beyond `max`. */
export function pushCapped<T>(list: T[], item: T, max: number): void {
  list.push(item);
  if (list.length > max) list.splice(0, list.length - max);
}

/** Set in a map, dropping the oldest entries (insertion order) beyond `max`. */
export function setCapped<K, V>(map: Map<K, V>, key: K, value: V, max: number): void {
  map.delete(key);
  map.set(key, value);
  while (map.size > max) {
    const first = map.keys().next();
    if (first.done === true) break;
    map.delete(first.value);
  }
}

/** An error answer to a frame; `headerless` ones go out without `headers` (WeCom's schema errors). */
export class WsFrameError extends Error {
  /** The errcode answered. */
  readonly errcode: number;
  /** True when the answer carries no `headers.req_id`. */
  readonly headerless: boolean;
  /**
   * @param errcode WeCom errcode
   * @param message the errmsg
   * @param headerless answer without headers (as WeCom does for malformed frames)
   */
  constructor(errcode: number, message: string, headerless = false) {
    super(message);
    this.name = "WsFrameError";
    this.errcode = errcode;
    this.headerless = headerless;
  }
}

/** What a frame is answered: errcode 0 with an optional body, or an error. */
export interface WsOutcome {
  /** The errcode. */
  errcode: number;
  /** The errmsg. */
  errmsg: string;
  /** The ack's body (upload init and finish). */
  body?: Json;
  /** Answer without headers. */
  headerless?: boolean;
}

/** A callback a connection pushed: its req_id is the key of the replies to it. */
export interface IssuedCallback {
  /** A user message (aibot_msg_callback) or an event (aibot_event_callback). */
  kind: "msg" | "event";
  /** The message's or event's msgid. */
  msgid: string;
  /** When the user's message or event happened, per the simulator's clock (the windows start here). */
  at: number;
  /** The user. */
  userId: string;
  /** The group chat, when in a group. */
  chatId?: string;
  /** The event's eventtype. */
  eventtype?: string;
  /** An event reply was taken (one per event). */
  answered: boolean;
  /** Template cards taken for the message. */
  cards: number;
}

/** An upload under way on a connection. */
export interface UploadState {
  /** Its record. */
  view: WeComSimWsUpload;
  /** The chunks received, by index. */
  chunks: Map<number, Buffer>;
}

/** One long connection, as the replies see it. */
export interface WsConn {
  /** The public record. */
  view: WeComSimWsConnection;
  /** The socket. */
  socket: WebSocket;
  /** The bot it subscribed. */
  bot?: SimBot;
  /** The callbacks pushed on it, by req_id (replies must name one of them). */
  issued: Map<string, IssuedCallback>;
  /** Its streams, by req_id and stream id. */
  streams: Map<string, WeComSimWsStream>;
  /** Its unfinished uploads, by upload_id. */
  uploads: Map<string, UploadState>;
  /** Its pending close timers. */
  timers: Set<NodeJS.Timeout>;
}

/** An object field or a headerless 40058 naming it (WeCom's schema error). */
function field(body: Json, key: string, path: string): Json {
  const v = body[key];
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new WsFrameError(E.invalidParam, `missing field \`${path}\``, true);
  return v as Json;
}

/** A non-empty string field or a headerless 40058 naming it. */
function text(body: Json, key: string, path: string): string {
  const v = body[key];
  if (typeof v !== "string" || v === "") throw new WsFrameError(E.invalidParam, `missing field \`${path}\``, true);
  return v;
}

/** A whole number field within [min, max], else 40058. */
function integer(body: Json, key: string, min: number, max: number): number {
  const v = body[key];
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) throw new WsFrameError(E.uploadInvalid, `invalid Request Parameter, ${key} must be an integer in ${min}..${max}`);
  return v;
}

/** Run a check and turn its WsFrameError into an outcome (anything else is a bug and rethrown). */
function attempt(run: () => Json | undefined): WsOutcome {
  try {
    const body = run();
    return body === undefined ? { errcode: 0, errmsg: "ok" } : { errcode: 0, errmsg: "ok", body };
  } catch (e) {
    if (!(e instanceof WsFrameError)) throw e;
    return e.headerless ? { errcode: e.errcode, errmsg: e.message, headerless: true } : { errcode: e.errcode, errmsg: e.message };
  }
}

/** The reply commands of the long connection, their checks and their records. */
export class BotWsReplies {
  readonly #ctx: SimContext;
  /** Every stream, oldest first. */
  readonly streams: WeComSimWsStream[] = [];
  /** Every aibot_send_msg and one-off aibot_respond_msg, oldest first. */
  readonly sends: WeComSimWsSend[] = [];
  /** Every welcome and card update, oldest first. */
  readonly eventReplies: WeComSimWsEventReply[] = [];
  /** Every upload started, oldest first. */
  readonly uploads: WeComSimWsUpload[] = [];
  readonly #media = new Map<string, WeComSimWsMedia>();

  /** @param ctx the shared simulator context */
  constructor(ctx: SimContext) {
    this.#ctx = ctx;
  }

  /** An uploaded media file (any age), or undefined. */
  media(mediaId: string): WeComSimWsMedia | undefined {
    return this.#media.get(mediaId);
  }

  /** Mark streams whose window passed unfinished as expired (they are refused from then on anyway). */
  expireStreams(): void {
    const now = this.#ctx.now();
    for (const s of this.streams) if (s.status === "open" && now >= s.deadline) s.status = "expired";
  }

  /** Answer a reply or upload command; undefined when `cmd` is not one. */
  handle(conn: WsConn, bot: SimBot, cmd: string, reqId: string, body: Json): WsOutcome | undefined {
    switch (cmd) {
      case "aibot_respond_msg":
        return this.#respond(conn, bot, reqId, body);
      case "aibot_respond_welcome_msg":
      case "aibot_respond_update_msg":
        return this.#eventReply(conn, bot, cmd, reqId, body);
      case "aibot_send_msg":
        return this.#send(conn, bot, reqId, body);
      case "aibot_upload_media_init":
        return attempt(() => this.#uploadInit(conn, bot, body));
      case "aibot_upload_media_chunk":
        return attempt(() => this.#uploadChunk(conn, body));
      case "aibot_upload_media_finish":
        return attempt(() => this.#uploadFinish(conn, bot, body));
      default:
        return undefined;
    }
  }

  /** A msg callback of this connection named by `reqId`, else 846605. */
  #message(conn: WsConn, reqId: string): IssuedCallback {
    const issued = conn.issued.get(reqId);
    if (issued === undefined || issued.kind !== "msg") throw new WsFrameError(E.invalidReqId, "invalid req_id");
    return issued;
  }

  #respond(conn: WsConn, bot: SimBot, reqId: string, body: Json): WsOutcome {
    const msgtype = typeof body.msgtype === "string" ? body.msgtype : "";
    if (msgtype === "stream" || msgtype === "stream_with_template_card") return this.#streamFrame(conn, bot, reqId, msgtype, body);
    let issued: IssuedCallback | undefined;
    const outcome = attempt(() => {
      issued = this.#message(conn, reqId);
      this.#content(bot, msgtype, body, RULES.respondMsgtypes);
      return undefined;
    });
    const record: WeComSimWsSend = { botId: bot.cfg.botId, connectionId: conn.view.id, cmd: "aibot_respond_msg", reqId, at: this.#ctx.now(), chatid: issued?.chatId ?? issued?.userId ?? "", msgtype, body, errcode: outcome.errcode, errmsg: outcome.errmsg };
    if (issued !== undefined) record.msgid = issued.msgid;
    pushCapped(this.sends, record, WS_RECORDS_MAX);
    return outcome;
  }

  #streamFrame(conn: WsConn, bot: SimBot, reqId: string, msgtype: string, body: Json): WsOutcome {
    let frame: WeComSimWsStreamFrame | undefined;
    let stream: WeComSimWsStream | undefined;
    const outcome = attempt(() => {
      const issued = this.#message(conn, reqId);
      const s = field(body, "stream", "body.stream");
      const id = text(s, "id", "body.stream.id");
      const at = this.#ctx.now();
      const key = `${reqId}\u0000${id}`;
      stream = conn.streams.get(key);
      if (stream === undefined) {
        stream = { botId: bot.cfg.botId, connectionId: conn.view.id, reqId, msgid: issued.msgid, streamId: id, userId: issued.userId, startedAt: issued.at, deadline: issued.at + RULES.streamWindowMs, status: "open", frames: [], shown: "", templateCards: [] };
        if (issued.chatId !== undefined) stream.chatId = issued.chatId;
        setCapped(conn.streams, key, stream, WS_PER_CONNECTION_MAX);
        pushCapped(this.streams, stream, WS_RECORDS_MAX);
      }
      const content = typeof s.content === "string" ? s.content : "";
      const f: WeComSimWsStreamFrame = { at, content, finish: s.finish === true, errcode: 0, errmsg: "ok" };
      frame = f;
      if (Array.isArray(s.msg_item)) f.msgItem = s.msg_item;
      const feedback = s.feedback;
      if (typeof feedback === "object" && feedback !== null && typeof (feedback as Json).id === "string") f.feedbackId = (feedback as Json).id as string;
      const card = msgtype === "stream_with_template_card" && typeof body.template_card === "object" && body.template_card !== null ? (body.template_card as Json) : undefined;
      if (card !== undefined) f.templateCard = card;
      if (stream.status === "finished") throw new WsFrameError(E.streamFinished, "invalid Request Parameter, the stream already finished");
      if (at >= stream.deadline) {
        stream.status = "expired";
        throw new WsFrameError(E.streamExpired, "stream message update expired");
      }
      if (utf8Length(content) > RULES.streamMaxBytes) throw new WsFrameError(E.contentTooLong, `invalid Request Parameter, stream.content is ${utf8Length(content)} bytes, over ${RULES.streamMaxBytes}`);
      if (f.feedbackId !== undefined && utf8Length(f.feedbackId) > RULES.feedbackIdMaxBytes) throw new WsFrameError(E.invalidParam, `invalid Request Parameter, feedback.id over ${RULES.feedbackIdMaxBytes} bytes`);
      // taken: the user now sees this content (replace semantics)
      stream.shown = content;
      if (f.feedbackId !== undefined && stream.frames.length === 0) stream.feedbackId = f.feedbackId;
      if (card !== undefined && issued.cards < RULES.templateCardsPerMessage) {
        issued.cards++;
        stream.templateCards.push(card);
      }
      if (f.finish) stream.status = "finished";
      return undefined;
    });
    if (stream !== undefined && frame !== undefined) {
      frame.errcode = outcome.errcode;
      frame.errmsg = outcome.errmsg;
      stream.frames.push(frame);
    }
    return outcome;
  }

  /** Check a one-off message body (markdown, template card, media by media_id) as WeCom does. */
  #content(bot: SimBot, msgtype: string, body: Json, allowed: readonly string[]): void {
    if (!allowed.includes(msgtype)) throw new WsFrameError(E.invalidMsgtype, "invalid message type");
    if (msgtype === "markdown") {
      const content = text(field(body, "markdown", "body.markdown"), "content", "body.markdown.content");
      if (utf8Length(content) > RULES.markdownMaxBytes) throw new WsFrameError(E.contentTooLong, `invalid Request Parameter, markdown.content is ${utf8Length(content)} bytes, over ${RULES.markdownMaxBytes}`);
    } else if (msgtype === "template_card") {
      field(body, "template_card", "body.template_card");
    } else if ((RULES.mediaMsgtypes as readonly string[]).includes(msgtype)) {
      const mediaId = text(field(body, msgtype, `body.${msgtype}`), "media_id", `body.${msgtype}.media_id`);
      const m = this.#media.get(mediaId);
      if (m === undefined || m.botId !== bot.cfg.botId || this.#ctx.now() - m.createdAt >= RULES.mediaTtlMs) throw new WsFrameError(E.invalidMediaId, "invalid media_id");
    }
  }

  #send(conn: WsConn, bot: SimBot, reqId: string, body: Json): WsOutcome {
    const chatid = typeof body.chatid === "string" ? body.chatid : "";
    const msgtype = typeof body.msgtype === "string" ? body.msgtype : "";
    const outcome = attempt(() => {
      if (chatid === "") throw new WsFrameError(E.missingChatId, "chatid is required");
      this.#content(bot, msgtype, body, RULES.sendMsgtypes);
      return undefined;
    });
    pushCapped(this.sends, { botId: bot.cfg.botId, connectionId: conn.view.id, cmd: "aibot_send_msg", reqId, at: this.#ctx.now(), chatid, msgtype, body, errcode: outcome.errcode, errmsg: outcome.errmsg }, WS_RECORDS_MAX);
    return outcome;
  }

  #eventReply(conn: WsConn, bot: SimBot, cmd: "aibot_respond_welcome_msg" | "aibot_respond_update_msg", reqId: string, body: Json): WsOutcome {
    const at = this.#ctx.now();
    const issued = conn.issued.get(reqId);
    const wanted = cmd === "aibot_respond_welcome_msg" ? "enter_chat" : "template_card_event";
    const outcome = attempt(() => {
      if (issued === undefined || issued.kind !== "event" || issued.eventtype !== wanted) throw new WsFrameError(E.invalidReqId, "invalid req_id");
      if (issued.answered) throw new WsFrameError(E.eventReplyExpired, "invalid req_id, the event was already answered");
      if (at - issued.at > RULES.eventReplyWindowMs) throw new WsFrameError(E.eventReplyExpired, "invalid req_id, more than 5 s after the event");
      if (cmd === "aibot_respond_welcome_msg") {
        const msgtype = typeof body.msgtype === "string" ? body.msgtype : "";
        if (!(RULES.welcomeMsgtypes as readonly string[]).includes(msgtype)) throw new WsFrameError(E.invalidMsgtype, "invalid message type");
        if (msgtype === "text") text(field(body, "text", "body.text"), "content", "body.text.content");
        else field(body, "template_card", "body.template_card");
      } else {
        if (body.response_type !== "update_template_card") throw new WsFrameError(E.invalidParam, "invalid Request Parameter, response_type must be update_template_card");
        field(body, "template_card", "body.template_card");
      }
      issued.answered = true;
      return undefined;
    });
    const record: WeComSimWsEventReply = { botId: bot.cfg.botId, connectionId: conn.view.id, cmd, reqId, at, body, errcode: outcome.errcode, errmsg: outcome.errmsg };
    if (issued?.kind === "event") {
      if (issued.eventtype !== undefined) record.eventtype = issued.eventtype;
      record.msgid = issued.msgid;
      record.userId = issued.userId;
    }
    pushCapped(this.eventReplies, record, WS_RECORDS_MAX);
    return outcome;
  }

  #uploadInit(conn: WsConn, bot: SimBot, body: Json): Json {
    const rules = RULES.upload;
    const type = typeof body.type === "string" ? body.type : "";
    if (!Object.hasOwn(WECOM_RULES.media.types, type)) throw new WsFrameError(rules.invalidTypeErrcode, "invalid media type");
    const filename = text(body, "filename", "body.filename");
    const totalSize = integer(body, "total_size", 1, Number.MAX_SAFE_INTEGER);
    const totalChunks = integer(body, "total_chunks", 1, rules.maxChunks);
    const md5 = body.md5;
    if (md5 !== undefined && (typeof md5 !== "string" || !/^[0-9a-fA-F]{32}$/.test(md5))) throw new WsFrameError(E.uploadInvalid, "invalid Request Parameter, md5 must be 32 hex digits");
    if (conn.uploads.size >= rules.openPerConnection) throw new WsFrameError(E.uploadInvalid, `invalid Request Parameter, more than ${rules.openPerConnection} uploads in progress`);
    const uploadId = randomBytes(16).toString("hex");
    const view: WeComSimWsUpload = { botId: bot.cfg.botId, connectionId: conn.view.id, uploadId, type, filename, totalSize, totalChunks, startedAt: this.#ctx.now(), chunks: 0, status: "open" };
    if (typeof md5 === "string") view.md5 = md5.toLowerCase();
    conn.uploads.set(uploadId, { view, chunks: new Map() });
    pushCapped(this.uploads, view, WS_RECORDS_MAX);
    return { upload_id: uploadId };
  }

  /** An upload of this connection by the body's upload_id, else 40058. */
  #upload(conn: WsConn, body: Json): UploadState {
    const id = text(body, "upload_id", "body.upload_id");
    const u = conn.uploads.get(id);
    if (u === undefined) throw new WsFrameError(E.uploadInvalid, "invalid Request Parameter, invalid upload_id");
    return u;
  }

  #uploadChunk(conn: WsConn, body: Json): undefined {
    const u = this.#upload(conn, body);
    const index = integer(body, "chunk_index", 0, u.view.totalChunks - 1);
    const data = text(body, "base64_data", "body.base64_data");
    if (data.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(data)) throw new WsFrameError(E.uploadInvalid, "invalid Request Parameter, base64_data is not base64");
    const bytes = Buffer.from(data, "base64");
    if (bytes.length > RULES.upload.chunkMaxBytes) throw new WsFrameError(E.uploadInvalid, `invalid Request Parameter, chunk is ${bytes.length} bytes, over ${RULES.upload.chunkMaxBytes}`);
    u.chunks.set(index, bytes);
    u.view.chunks = u.chunks.size;
    return undefined;
  }

  #uploadFinish(conn: WsConn, bot: SimBot, body: Json): Json {
    const u = this.#upload(conn, body);
    const v = u.view;
    conn.uploads.delete(v.uploadId);
    try {
      const missing: number[] = [];
      for (let i = 0; i < v.totalChunks; i++) if (!u.chunks.has(i)) missing.push(i);
      if (missing.length > 0) throw new WsFrameError(E.uploadInvalid, `invalid Request Parameter, missing chunks ${missing.join(",")}`);
      const bytes = Buffer.concat([...u.chunks.entries()].sort((a, b) => a[0] - b[0]).map(([, b]) => b));
      if (bytes.length !== v.totalSize) throw new WsFrameError(E.uploadInvalid, `invalid Request Parameter, received ${bytes.length} bytes, total_size is ${v.totalSize}`);
      if (v.md5 !== undefined && createHash("md5").update(bytes).digest("hex") !== v.md5) throw new WsFrameError(E.uploadInvalid, "invalid Request Parameter, md5 does not match");
      const type = v.type as UploadType;
      if (bytes.length <= WECOM_RULES.media.minBytesExclusive) throw new WsFrameError(40006, "invalid file size, a file must be larger than 5 bytes");
      const max = WECOM_RULES.media.types[type].maxBytes;
      if (bytes.length > max) throw new WsFrameError(RULES.upload.sizeErrcodes[type], `invalid ${type} size, ${bytes.length} bytes > ${max}`);
      const now = this.#ctx.now();
      const mediaId = this.#ctx.ids.mediaId();
      for (const [id, m] of this.#media) if (now - m.createdAt >= RULES.mediaTtlMs) this.#media.delete(id);
      setCapped(this.#media, mediaId, { botId: bot.cfg.botId, type, filename: v.filename, bytes, createdAt: now }, MEDIA_MAX);
      const createdAt = Math.floor(now / 1000);
      Object.assign(v, { status: "finished", errcode: 0, errmsg: "ok", mediaId, createdAt });
      return { type, media_id: mediaId, created_at: createdAt };
    } catch (e) {
      if (e instanceof WsFrameError) Object.assign(v, { status: "failed", errcode: e.errcode, errmsg: e.message });
      throw e;
    }
  }

  /** A connection ended: its unfinished uploads fail. */
  closed(conn: WsConn): void {
    for (const u of conn.uploads.values()) Object.assign(u.view, { status: "failed", errmsg: "the connection closed before finish" });
    conn.uploads.clear();
    conn.streams.clear();
    conn.issued.clear();
  }
}
