/**
 * AI bots in long-connection mode (智能机器人长连接) in the WeCom simulator: a WebSocket endpoint
 * (`/aibot/ws`) speaking WeCom's frames `{cmd, headers: {req_id}, body}` with acks
 * `{headers: {req_id}, errcode, errmsg, body?}`. A connection must first `aibot_subscribe` with the
 * bot's id and secret; one connection per bot is subscribed at a time (a newer subscribe kicks the
 * older one with a `disconnected_event`). Users' messages and events are pushed as
 * `aibot_msg_callback` / `aibot_event_callback` frames with fresh server req_ids, and media in them
 * is served encrypted with a key of its own (`aeskey`). The bot's replies are checked and recorded
 * by bot-ws-replies.ts. Tests can make a connection silent (a half-dead link), drop it, or inject
 * errcodes. Socket-level delays (closing after a failed subscribe or a kick) run on real time; every
 * window runs on the simulator's clock.
 * @module
 */
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { type RawData, type WebSocket, WebSocketServer } from "ws";
import { type CallbackInfo, eventBody, serverReqId, userMessageBody, WsMediaUrls } from "./bot-ws-callbacks.js";
import { BotWsReplies, pushCapped, setCapped, WS_PER_CONNECTION_MAX, WS_RECORDS_MAX, type WsConn, type WsOutcome } from "./bot-ws-replies.js";
import type { Answer, SimBot, SimContext } from "./context.js";
import { WECOM_RULES } from "./rules.js";
import type {
  WeComSimWsConnection,
  WeComSimWsEvent,
  WeComSimWsEventReply,
  WeComSimWsFrame,
  WeComSimWsMedia,
  WeComSimWsPushed,
  WeComSimWsSend,
  WeComSimWsStream,
  WeComSimWsUpload,
  WeComSimWsUserMessage,
} from "./types.js";

type Json = Record<string, unknown>;

const RULES = WECOM_RULES.botWs;
const E = RULES.errcodes;
/** The largest frame taken (ours; WeCom does not say): an upload chunk is about 700 KB of JSON. */
const MAX_FRAME_BYTES = 4 * 1024 * 1024;
/** How many frames the frame log keeps. */
const FRAME_LOG_MAX = 2000;

/** A frame as the log keeps it: the subscribe secret and upload chunk data elided. */
function forLog(frame: unknown): unknown {
  if (typeof frame !== "object" || frame === null) return frame;
  const f = frame as Json;
  const body = f.body;
  if (typeof body !== "object" || body === null) return frame;
  const b = { ...(body as Json) };
  if (typeof b.secret === "string") b.secret = "***";
  if (typeof b.base64_data === "string") b.base64_data = `<${b.base64_data.length} base64 characters>`;
  return { ...f, body: b };
}

/** What a pushed callback was, kept to repeat it. */
interface Pushed {
  botId: string;
  cmd: string;
  body: Json;
  issued: CallbackInfo;
}

/** The long-connection endpoint: its connections, callbacks, faults and records. */
export class BotWsService {
  readonly #ctx: SimContext;
  readonly #findBot: (nameOrId: string) => SimBot;
  readonly #wss = new WebSocketServer({ noServer: true, autoPong: false, maxPayload: MAX_FRAME_BYTES });
  readonly #open = new Set<WsConn>();
  readonly #views: WeComSimWsConnection[] = [];
  /** The subscribed connection of each bot. */
  readonly #current = new Map<string, WsConn>();
  /** Recent callbacks by req_id, to repeat them. */
  readonly #pushed = new Map<string, Pushed>();
  readonly #mediaUrls: WsMediaUrls;
  readonly #failNext = new Map<string, { cmd: string; errcode: number; times: number }[]>();
  readonly #frames: WeComSimWsFrame[] = [];
  readonly #replies: BotWsReplies;
  #seq = 0;
  #closed = false;

  /**
   * @param ctx the shared simulator context
   * @param findBot a bot by id or name (throws when unknown)
   */
  constructor(ctx: SimContext, findBot: (nameOrId: string) => SimBot) {
    this.#ctx = ctx;
    this.#findBot = findBot;
    this.#replies = new BotWsReplies(ctx);
    this.#mediaUrls = new WsMediaUrls(ctx);
  }

  // --- the server side --------------------------------------------------------------------------

  /** Take an HTTP upgrade of the endpoint's path. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (this.#closed) {
      socket.destroy();
      return;
    }
    this.#wss.handleUpgrade(req, socket, head, (ws) => this.#opened(ws));
  }

  /** Terminate every connection and cancel the pending closes. */
  close(): void {
    this.#closed = true;
    for (const conn of [...this.#open]) {
      conn.view.endedBy ??= "server";
      conn.socket.terminate();
      this.#ended(conn);
    }
    this.#wss.close();
  }

  #opened(ws: WebSocket): void {
    const view: WeComSimWsConnection = { id: `ws${++this.#seq}`, subscribed: false, open: true, silent: false, openedAt: this.#ctx.now() };
    const conn: WsConn = { view, socket: ws, issued: new Map(), streams: new Map(), uploads: new Map(), timers: new Set() };
    this.#open.add(conn);
    pushCapped(this.#views, view, WS_RECORDS_MAX);
    this.#ctx.log(`${view.id} opened`);
    ws.on("message", (data, isBinary) => this.#received(conn, data, isBinary));
    // WS-level pings are answered by hand: a silent connection does not answer them
    ws.on("ping", (data) => {
      if (!conn.view.silent) ws.pong(data);
    });
    ws.on("error", (e) => this.#ctx.log(`${view.id} socket error: ${e.message}`));
    ws.on("close", (code) => {
      this.#ctx.log(`${view.id} closed (${code})`);
      this.#ended(conn);
    });
  }

  #ended(conn: WsConn): void {
    if (!this.#open.delete(conn)) return;
    const v = conn.view;
    v.open = false;
    v.closedAt = this.#ctx.now();
    v.endedBy ??= "client";
    if (v.botId !== undefined && this.#current.get(v.botId) === conn) this.#current.delete(v.botId);
    v.subscribed = false;
    for (const t of conn.timers) clearTimeout(t);
    conn.timers.clear();
    this.#replies.closed(conn);
  }

  /** Close a connection `RULES.closeDelayMs` later (real time): `close` with a close frame, `terminate` without. */
  #closeSoon(conn: WsConn, how: "close" | "terminate"): void {
    const t = setTimeout(() => {
      conn.timers.delete(t);
      if (how === "close") conn.socket.close(1000);
      else conn.socket.terminate();
    }, RULES.closeDelayMs);
    t.unref();
    conn.timers.add(t);
  }

  #log(conn: WsConn, direction: "in" | "out", frame: unknown, extra: { ignored?: boolean } = {}): void {
    const entry: WeComSimWsFrame = { at: this.#ctx.now(), connectionId: conn.view.id, direction, frame: forLog(frame) };
    if (conn.view.botId !== undefined) entry.botId = conn.view.botId;
    if (typeof frame === "object" && frame !== null) {
      const f = frame as Json;
      if (typeof f.cmd === "string") entry.cmd = f.cmd;
      const reqId = (f.headers as Json | undefined)?.req_id;
      if (typeof reqId === "string") entry.reqId = reqId;
      if (typeof f.errcode === "number") entry.errcode = f.errcode;
    }
    if (extra.ignored === true) entry.ignored = true;
    pushCapped(this.#frames, entry, FRAME_LOG_MAX);
  }

  /** Send a frame when the socket is open; false when it is not. */
  #write(conn: WsConn, frame: Json): boolean {
    if (conn.socket.readyState !== conn.socket.OPEN) return false;
    conn.socket.send(JSON.stringify(frame));
    this.#log(conn, "out", frame);
    return true;
  }

  #answer(conn: WsConn, reqId: string | undefined, cmd: string, o: WsOutcome): void {
    const frame: Json = o.headerless === true || reqId === undefined ? { errcode: o.errcode, errmsg: o.errmsg } : { headers: { req_id: reqId }, errcode: o.errcode, errmsg: o.errmsg };
    if (o.body !== undefined) frame.body = o.body;
    this.#write(conn, frame);
    this.#ctx.log(`${conn.view.id}${conn.view.botId !== undefined ? ` bot ${conn.view.botId}` : ""} ${cmd || "frame"} → ${o.errcode}`);
  }

  #received(conn: WsConn, data: RawData, isBinary: boolean): void {
    const raw = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
    const textData = raw.toString("utf8");
    let frame: unknown;
    try {
      frame = isBinary ? undefined : JSON.parse(textData);
    } catch {
      frame = undefined;
    }
    if (conn.view.silent) {
      this.#log(conn, "in", frame ?? textData, { ignored: true });
      return;
    }
    if (typeof frame !== "object" || frame === null || Array.isArray(frame)) {
      this.#log(conn, "in", textData.slice(0, 1024));
      this.#answer(conn, undefined, "", { errcode: E.invalidParam, errmsg: "invalid json" });
      return;
    }
    this.#log(conn, "in", frame);
    const f = frame as Json;
    const cmd = typeof f.cmd === "string" ? f.cmd : "";
    const headers = f.headers;
    const reqId = typeof headers === "object" && headers !== null ? (headers as Json).req_id : undefined;
    if (typeof reqId !== "string" || reqId === "") {
      this.#answer(conn, undefined, cmd, { errcode: E.invalidParam, errmsg: "missing field `headers.req_id`" });
      return;
    }
    const body = typeof f.body === "object" && f.body !== null && !Array.isArray(f.body) ? (f.body as Json) : {};
    if (cmd === "aibot_subscribe") {
      this.#subscribe(conn, reqId, body);
      return;
    }
    const bot = conn.bot;
    if (!conn.view.subscribed || bot === undefined) {
      this.#answer(conn, reqId, cmd, { errcode: E.notSubscribed, errmsg: "aibot websocket not subscribed" });
      return;
    }
    const injected = this.#consumeFail(bot.cfg.botId, cmd);
    if (injected !== undefined) {
      this.#answer(conn, reqId, cmd, injected);
      return;
    }
    if (cmd === "ping") {
      this.#answer(conn, reqId, cmd, { errcode: 0, errmsg: "ok" });
      return;
    }
    this.#answer(conn, reqId, cmd, this.#replies.handle(conn, bot, cmd, reqId, body) ?? { errcode: E.unknownCmd, errmsg: "invalid cmd" });
  }

  #subscribe(conn: WsConn, reqId: string, body: Json): void {
    const cmd = "aibot_subscribe";
    const botId = typeof body.bot_id === "string" ? body.bot_id : "";
    const bot = this.#ctx.bots.get(botId);
    const refuse = (o: WsOutcome): void => {
      this.#answer(conn, reqId, cmd, o);
      if (conn.view.endedBy === undefined) conn.view.endedBy = "auth";
      this.#closeSoon(conn, "close");
    };
    if (bot === undefined) {
      refuse({ errcode: E.invalidBotId, errmsg: "invalid bot_id" });
      return;
    }
    const injected = this.#consumeFail(bot.cfg.botId, cmd);
    if (injected !== undefined) {
      // an injected answer does nothing else (a failed subscribe still closes, as WeCom does)
      if (injected.errcode !== 0) refuse(injected);
      else this.#answer(conn, reqId, cmd, injected);
      return;
    }
    const secret = bot.cfg.secret;
    if (secret === undefined || body.secret !== secret) {
      refuse({ errcode: E.badSecret, errmsg: "signature is incorrect, please check if the bot secret is correct" });
      return;
    }
    if (conn.bot !== undefined && conn.bot !== bot) {
      this.#answer(conn, reqId, cmd, { errcode: E.invalidParam, errmsg: "invalid Request Parameter, this connection subscribed another bot" });
      return;
    }
    const old = this.#current.get(bot.cfg.botId);
    if (old !== undefined && old !== conn) this.#kick(old);
    conn.bot = bot;
    conn.view.botId = bot.cfg.botId;
    conn.view.subscribed = true;
    this.#current.set(bot.cfg.botId, conn);
    this.#answer(conn, reqId, cmd, { errcode: 0, errmsg: "ok" });
  }

  /** A newer subscribe took the bot: the old connection hears disconnected_event, then closes. */
  #kick(old: WsConn): void {
    const bot = old.bot;
    old.view.subscribed = false;
    old.view.endedBy = "kicked";
    this.#ctx.log(`${old.view.id} bot ${old.view.botId ?? "?"} kicked by a newer subscribe`);
    if (old.view.silent || bot === undefined) {
      // a half-dead link hears nothing: the server just drops it
      old.socket.terminate();
      return;
    }
    const now = this.#ctx.now();
    const body: Json = { msgid: this.#ctx.ids.botMsgId(), create_time: Math.floor(now / 1000), aibotid: bot.cfg.botId, msgtype: "event", event: { eventtype: "disconnected_event" } };
    this.#write(old, { cmd: "aibot_event_callback", headers: { req_id: serverReqId() }, body });
    this.#closeSoon(old, "close");
  }

  #consumeFail(botId: string, cmd: string): WsOutcome | undefined {
    const list = this.#failNext.get(botId);
    const i = list?.findIndex((f) => f.cmd === cmd) ?? -1;
    const f = i >= 0 ? list?.[i] : undefined;
    if (list === undefined || f === undefined) return undefined;
    f.times--;
    if (f.times <= 0) list.splice(i, 1);
    if (list.length === 0) this.#failNext.delete(botId);
    return { errcode: f.errcode, errmsg: f.errcode === 0 ? "ok" : `simulated errcode ${f.errcode}` };
  }

  // --- what tests do ----------------------------------------------------------------------------

  /** The bot's subscribed connection. @throws Error when it has none */
  #subscribed(bot: SimBot): WsConn {
    const conn = this.#current.get(bot.cfg.botId);
    if (conn === undefined) throw new Error(`bot ${bot.cfg.botId} has no subscribed long connection`);
    return conn;
  }

  /** Push a callback frame on the bot's subscribed connection; a silent connection loses it. */
  #push(bot: SimBot, cmd: string, body: Json, issued: CallbackInfo): WeComSimWsPushed {
    const conn = this.#subscribed(bot);
    const reqId = serverReqId();
    setCapped(conn.issued, reqId, { ...issued, answered: false, cards: 0 }, WS_PER_CONNECTION_MAX);
    setCapped(this.#pushed, reqId, { botId: bot.cfg.botId, cmd, body, issued }, WS_PER_CONNECTION_MAX);
    const delivered = !conn.view.silent && this.#write(conn, { cmd, headers: { req_id: reqId }, body });
    this.#ctx.log(`${conn.view.id} bot ${bot.cfg.botId} ${cmd} ${issued.kind === "event" ? `(${issued.eventtype ?? ""}) ` : ""}${delivered ? "sent" : "lost (silent connection)"}`);
    return { msgid: issued.msgid, reqId, connectionId: conn.view.id, delivered };
  }

  /** A user's message over the long connection (aibot_msg_callback). @throws Error when the bot has no subscribed connection */
  userSends(nameOrId: string, msg: WeComSimWsUserMessage): WeComSimWsPushed {
    const bot = this.#findBot(nameOrId);
    this.#subscribed(bot);
    const { body, info } = userMessageBody(this.#ctx, bot.cfg.botId, msg, this.#mediaUrls);
    return this.#push(bot, "aibot_msg_callback", body, info);
  }

  /** An event over the long connection (aibot_event_callback). @throws Error when the bot has no subscribed connection */
  event(nameOrId: string, ev: WeComSimWsEvent): WeComSimWsPushed {
    const bot = this.#findBot(nameOrId);
    this.#subscribed(bot);
    const { body, info } = eventBody(this.#ctx, bot.cfg.botId, ev);
    return this.#push(bot, "aibot_event_callback", body, info);
  }

  /** The callback of `reqId` again (same msgid and time, a new req_id) on its bot's subscribed connection. */
  repeat(reqId: string): WeComSimWsPushed {
    const p = this.#pushed.get(reqId);
    if (p === undefined) throw new Error("unknown req_id: not a recent callback of the simulator");
    return this.#push(this.#findBot(p.botId), p.cmd, p.body, p.issued);
  }

  /** Make the bot's subscribed connection answer nothing (or answer again). @throws Error when it has none */
  silence(nameOrId: string, silent: boolean): void {
    const conn = this.#subscribed(this.#findBot(nameOrId));
    conn.view.silent = silent;
    this.#ctx.log(`${conn.view.id} ${silent ? "silent (half-dead)" : "answers again"}`);
  }

  /** Terminate the bot's subscribed connection without a close frame. @throws Error when it has none */
  drop(nameOrId: string): void {
    const conn = this.#subscribed(this.#findBot(nameOrId));
    conn.view.endedBy = "dropped";
    conn.socket.terminate();
  }

  /** Answer the next `times` frames of `cmd` from the bot's connections with `errcode` (and do nothing else). */
  failNext(nameOrId: string, cmd: string, errcode: number, times: number): void {
    const botId = this.#findBot(nameOrId).cfg.botId;
    const list = this.#failNext.get(botId) ?? [];
    list.push({ cmd, errcode, times });
    this.#failNext.set(botId, list);
  }

  /** The answer to `GET /aibot-ws-media/{key}`: the encrypted bytes, 404 unknown, 403 expired. */
  serveMedia(key: string): Answer {
    return this.#mediaUrls.serve(key);
  }

  // --- records ----------------------------------------------------------------------------------

  #botId(nameOrId: string | undefined): string | undefined {
    return nameOrId === undefined ? undefined : this.#findBot(nameOrId).cfg.botId;
  }

  /** Every connection, oldest first (of one bot: those that subscribed it). */
  connections(nameOrId?: string): WeComSimWsConnection[] {
    const id = this.#botId(nameOrId);
    return this.#views.filter((v) => id === undefined || v.botId === id);
  }

  /** Every stream, oldest first. */
  streams(nameOrId?: string): WeComSimWsStream[] {
    this.#replies.expireStreams();
    const id = this.#botId(nameOrId);
    return this.#replies.streams.filter((s) => id === undefined || s.botId === id);
  }

  /** Every aibot_send_msg and one-off aibot_respond_msg, oldest first. */
  sends(nameOrId?: string): WeComSimWsSend[] {
    const id = this.#botId(nameOrId);
    return this.#replies.sends.filter((s) => id === undefined || s.botId === id);
  }

  /** Every welcome or card update, oldest first. */
  eventReplies(cmd: WeComSimWsEventReply["cmd"], nameOrId?: string): WeComSimWsEventReply[] {
    const id = this.#botId(nameOrId);
    return this.#replies.eventReplies.filter((r) => r.cmd === cmd && (id === undefined || r.botId === id));
  }

  /** Every upload, oldest first. */
  uploads(nameOrId?: string): WeComSimWsUpload[] {
    const id = this.#botId(nameOrId);
    return this.#replies.uploads.filter((u) => id === undefined || u.botId === id);
  }

  /** An uploaded media file, or undefined. */
  media(mediaId: string): WeComSimWsMedia | undefined {
    return this.#replies.media(mediaId);
  }

  /** The last frames either way, oldest first. */
  frames(nameOrId?: string): WeComSimWsFrame[] {
    const id = this.#botId(nameOrId);
    return this.#frames.filter((f) => id === undefined || f.botId === id);
  }
}
