/**
 * AI bots (智能机器人) in webhook mode in the WeCom simulator, as WeCom runs them: a user's message
 * is a signed, encrypted callback carrying a `response_url`; when the bot answers with a stream,
 * WeCom polls it by itself with `msgtype: stream` refresh callbacks about once a second until an
 * answer has `finish: true` or 6 minutes after the user's message have passed (later updates are
 * refused with 846608). Every answer is recorded per stream with what WeCom would do with it
 * (replace semantics: the user sees the last accepted content). A `response_url` takes one POST of
 * markdown or a template card within an hour.
 * @module
 */
import { createHash } from "node:crypto";
import { utf8Length } from "../../wecom/fields.js";
import type { Callbacks } from "./callbacks.js";
import type { Handler, SimBot, SimContext } from "./context.js";
import { SimApiError, jsonBody, objectField, requireString } from "./errors.js";
import { WECOM_RULES } from "./rules.js";
import type { CallbackWithReply, WeComSimStream, WeComSimStreamFrame } from "./types.js";

/** msgtypes of a user's message (they open a stream when the bot answers with one). */
const USER_MSGTYPES = new Set(["text", "image", "mixed", "voice", "file", "video"]);

type Json = Record<string, unknown>;

interface StreamState {
  view: WeComSimStream;
  bot: SimBot;
  cancelPoll?: () => void;
}

/** True for the bytes of a JPG or PNG image. */
function isJpgOrPng(b: Buffer): boolean {
  return (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) || b.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
}

/** Why WeCom would not take a stream's msg_item, or undefined when it would. */
function msgItemProblem(items: unknown, finish: boolean): string | undefined {
  if (items === undefined || items === null) return undefined;
  if (!Array.isArray(items)) return "msg_item must be a list";
  if (items.length === 0) return undefined;
  const rules = WECOM_RULES.bot;
  if (!finish) return "msg_item images are allowed only in the finishing answer (finish=true)";
  if (items.length > rules.msgItemMaxImages) return `msg_item holds ${items.length} images, at most ${rules.msgItemMaxImages}`;
  for (const it of items) {
    const item = (typeof it === "object" && it !== null ? it : {}) as Json;
    if (item.msgtype !== "image") return "msg_item supports msgtype image only";
    const image = (typeof item.image === "object" && item.image !== null ? item.image : {}) as Json;
    if (typeof image.base64 !== "string" || typeof image.md5 !== "string") return "msg_item image needs base64 and md5";
    const bytes = Buffer.from(image.base64, "base64");
    if (bytes.length > rules.msgItemImageMaxBytes) return "msg_item image over 10 MB";
    if (!isJpgOrPng(bytes)) return "msg_item image must be JPG or PNG";
    if (createHash("md5").update(bytes).digest("hex") !== image.md5.toLowerCase()) return "msg_item image md5 does not match";
  }
  return undefined;
}

/** The bots' callbacks, streams and response_urls. */
export class BotWebhookService {
  readonly #ctx: SimContext;
  readonly #callbacks: Callbacks;
  readonly #pollIntervalMs: number;
  readonly #responseCodes = new Map<string, { botId: string; msgid: string; expiresAt: number; used: boolean }>();
  /** The current stream of each (bot, stream id). */
  readonly #streams = new Map<string, StreamState>();
  /** Every stream opened, oldest first. */
  readonly #all: StreamState[] = [];

  /**
   * @param ctx the shared simulator context
   * @param callbacks posts the bot callbacks
   * @param pollIntervalMs how often WeCom polls an open stream, ms
   */
  constructor(ctx: SimContext, callbacks: Callbacks, pollIntervalMs: number) {
    this.#ctx = ctx;
    this.#callbacks = callbacks;
    this.#pollIntervalMs = pollIntervalMs;
  }

  /** A bot by botId or name. */
  bot(nameOrId: string | number): SimBot {
    for (const b of this.#ctx.bots.values()) {
      if (b.cfg.botId === nameOrId || (b.cfg.name !== undefined && b.cfg.name === nameOrId)) return b;
    }
    throw new Error(`unknown bot ${String(nameOrId)}`);
  }

  /** Every stream the bots opened, oldest first (filtered by bot, user message or user). */
  streams(filter: { botId?: string; msgid?: string; userId?: string } = {}): WeComSimStream[] {
    return this.#all
      .map((s) => s.view)
      .filter((v) => (filter.botId === undefined || v.botId === filter.botId) && (filter.msgid === undefined || v.msgid === filter.msgid) && (filter.userId === undefined || v.userId === filter.userId));
  }

  /** One stream by bot and stream id. */
  stream(botId: string, streamId: string): WeComSimStream | undefined {
    return this.#streams.get(`${this.bot(botId).cfg.botId}\u0000${streamId}`)?.view;
  }

  /**
   * POST any bot callback (with WeCom's retries); `reply` is the bot's decrypted answer. A user's
   * message answered with a stream opens it (and WeCom polls it); a `stream` refresh answered for a
   * known stream is recorded as a manual frame.
   */
  async sends(botId: string, message: Json, opts: { sameTimestampOnRetry?: boolean } = {}): Promise<CallbackWithReply<unknown>> {
    const bot = this.bot(botId);
    const startedAt = this.#ctx.now();
    const r = await this.#callbacks.toBot(bot, JSON.stringify(message), opts.sameTimestampOnRetry ?? false);
    const msgtype = typeof message.msgtype === "string" ? message.msgtype : "";
    if (USER_MSGTYPES.has(msgtype)) this.#maybeOpen(bot, message, r, startedAt);
    else if (msgtype === "stream") {
      const id = (message.stream as Json | undefined)?.id;
      if (typeof id === "string") this.#maybeRecord(bot, id, r, "manual");
    }
    return r;
  }

  /** A member's text message to a bot (single chat, or a group with `chatId`), with a response_url. */
  async userSendsText(botId: string, userId: string, text: string, opts: { chatId?: string } = {}): Promise<CallbackWithReply<unknown> & { msgid: string; stream?: WeComSimStream }> {
    const bot = this.bot(botId);
    const msgid = this.#ctx.ids.botMsgId();
    const message: Json = { msgid, aibotid: bot.cfg.botId };
    if (opts.chatId !== undefined) message.chatid = opts.chatId;
    message.chattype = opts.chatId !== undefined ? "group" : "single";
    message.from = { userid: userId };
    message.response_url = this.#newResponseUrl(bot.cfg.botId, msgid);
    message.msgtype = "text";
    message.text = { content: text };
    const startedAt = this.#ctx.now();
    const r = await this.#callbacks.toBot(bot, JSON.stringify(message), false);
    const stream = this.#maybeOpen(bot, message, r, startedAt);
    return stream === undefined ? { ...r, msgid } : { ...r, msgid, stream };
  }

  /** A test polls a stream by hand: a msgtype "stream" callback with that id; returns the decrypted answer. */
  async pollStream(botId: string, streamId: string, userId: string, opts: { chatId?: string } = {}): Promise<CallbackWithReply<unknown>> {
    const bot = this.bot(botId);
    const r = await this.#callbacks.toBot(bot, JSON.stringify(this.#pollMessage(bot, streamId, userId, opts.chatId)), false);
    this.#maybeRecord(bot, streamId, r, "manual");
    return r;
  }

  #pollMessage(bot: SimBot, streamId: string, userId: string, chatId: string | undefined): Json {
    const message: Json = { msgid: this.#ctx.ids.botMsgId(), aibotid: bot.cfg.botId };
    if (chatId !== undefined) message.chatid = chatId;
    message.chattype = chatId !== undefined ? "group" : "single";
    message.from = { userid: userId };
    message.msgtype = "stream";
    message.stream = { id: streamId };
    return message;
  }

  /** The stream part of a bot's answer, when it is a stream answer. */
  #streamOf(reply: unknown): { stream: Json; card?: Json } | undefined {
    if (typeof reply !== "object" || reply === null) return undefined;
    const r = reply as Json;
    if (r.msgtype !== "stream" && r.msgtype !== "stream_with_template_card") return undefined;
    if (typeof r.stream !== "object" || r.stream === null) return undefined;
    const card = r.msgtype === "stream_with_template_card" && typeof r.template_card === "object" && r.template_card !== null ? (r.template_card as Json) : undefined;
    return card === undefined ? { stream: r.stream as Json } : { stream: r.stream as Json, card };
  }

  /** Open the stream a user's message was answered with (WeCom then polls it). */
  #maybeOpen(bot: SimBot, message: Json, r: CallbackWithReply<unknown>, startedAt: number): WeComSimStream | undefined {
    const s = this.#streamOf(r.reply);
    const id = s?.stream.id;
    if (s === undefined || typeof id !== "string" || id === "") return undefined;
    const key = `${bot.cfg.botId}\u0000${id}`;
    let state = this.#streams.get(key);
    const msgid = typeof message.msgid === "string" ? message.msgid : "";
    if (state !== undefined && state.view.msgid !== msgid) {
      // another message answered with the same id: a new stream under that id (the old record stays listed)
      state.cancelPoll?.();
      state = undefined;
    }
    if (state === undefined) {
      const from = (message.from ?? {}) as Json;
      const view: WeComSimStream = {
        botId: bot.cfg.botId,
        streamId: id,
        msgid,
        userId: typeof from.userid === "string" ? from.userid : "",
        startedAt,
        deadline: startedAt + WECOM_RULES.bot.pollWindowMs,
        status: "open",
        frames: [],
        polls: 0,
        pollErrors: 0,
        shown: "",
        images: [],
        templateCards: [],
      };
      if (typeof message.chatid === "string") view.chatId = message.chatid;
      state = { view, bot };
      this.#streams.set(key, state);
      this.#all.push(state);
    }
    this.#addFrame(state, s.stream, s.card, "reply");
    if (state.view.status === "open") this.#schedulePoll(state, this.#ctx.now() + this.#pollIntervalMs);
    return state.view;
  }

  /** Record a manual poll's answer for a known stream. */
  #maybeRecord(bot: SimBot, streamId: string, r: CallbackWithReply<unknown>, source: WeComSimStreamFrame["source"]): void {
    const state = this.#streams.get(`${bot.cfg.botId}\u0000${streamId}`);
    const s = this.#streamOf(r.reply);
    if (state === undefined || s === undefined || s.stream.id !== streamId) return;
    this.#addFrame(state, s.stream, s.card, source);
  }

  /** Record one answer and apply it as WeCom would: replace the content shown, finish, or refuse. */
  #addFrame(state: StreamState, stream: Json, card: Json | undefined, source: WeComSimStreamFrame["source"]): void {
    const v = state.view;
    const at = this.#ctx.now();
    const content = typeof stream.content === "string" ? stream.content : "";
    const finish = stream.finish === true;
    const frame: WeComSimStreamFrame = { at, source, content, finish, accepted: false };
    if (Array.isArray(stream.msg_item)) frame.msgItem = stream.msg_item;
    if (card !== undefined) frame.templateCard = card;
    v.frames.push(frame);
    const rules = WECOM_RULES.bot;
    if (at > v.deadline && v.status === "open") this.#expire(state);
    let reason: string | undefined;
    if (v.status === "expired") {
      frame.errcode = rules.expiredErrcode;
      reason = "stream message update expired: more than 6 minutes after the user's message";
    } else if (v.status === "finished") reason = "the stream already finished";
    else if (utf8Length(content) > rules.streamMaxBytes) reason = `content is ${utf8Length(content)} bytes, over ${rules.streamMaxBytes}`;
    else reason = msgItemProblem(stream.msg_item, finish);
    if (reason !== undefined) {
      frame.reason = reason;
      return;
    }
    frame.accepted = true;
    v.shown = content;
    if (card !== undefined) {
      // one template card per message: a later one is not shown
      if (v.templateCards.length < rules.templateCardsPerMessage) v.templateCards.push(card);
      else frame.reason = "template card ignored: one per message";
    }
    if (finish) {
      v.status = "finished";
      if (Array.isArray(stream.msg_item)) v.images = stream.msg_item;
      state.cancelPoll?.();
      delete state.cancelPoll;
    }
  }

  /** Poll at `at`, or mark the stream expired at its deadline when `at` is past it. */
  #schedulePoll(state: StreamState, at: number): void {
    state.cancelPoll?.();
    const v = state.view;
    if (at > v.deadline) {
      state.cancelPoll = this.#ctx.scheduler.at(v.deadline, `stream ${v.streamId} expires`, () => this.#expire(state));
      return;
    }
    state.cancelPoll = this.#ctx.scheduler.at(at, `poll stream ${v.streamId}`, () => this.#poll(state));
  }

  #expire(state: StreamState): void {
    state.cancelPoll?.();
    delete state.cancelPoll;
    const v = state.view;
    if (v.status !== "open") return;
    v.status = "expired";
    v.errcode = WECOM_RULES.bot.expiredErrcode;
    this.#ctx.log(`stream ${v.streamId} of bot ${v.botId}: no finish within 6 minutes, WeCom stops polling (846608)`);
  }

  /** WeCom's own refresh poll: one try; the next one about a second after this one started. */
  async #poll(state: StreamState): Promise<void> {
    delete state.cancelPoll;
    const v = state.view;
    if (v.status !== "open") return;
    const startedAt = this.#ctx.now();
    v.polls++;
    const r = await this.#callbacks.toBot(state.bot, JSON.stringify(this.#pollMessage(state.bot, v.streamId, v.userId, v.chatId)), false, { tries: 1 });
    const s = this.#streamOf(r.reply);
    if (s === undefined || s.stream.id !== v.streamId) v.pollErrors++;
    else this.#addFrame(state, s.stream, s.card, "poll");
    if (v.status === "open" && !this.#callbacks.client.closed) this.#schedulePoll(state, Math.max(startedAt + this.#pollIntervalMs, this.#ctx.now()));
  }

  /** A response_url for a bot message: one use within an hour, served by the simulator. */
  #newResponseUrl(botId: string, msgid: string): string {
    const code = this.#ctx.ids.responseCode();
    this.#responseCodes.set(code, { botId, msgid, expiresAt: this.#ctx.now() + WECOM_RULES.bot.responseUrl.ttlMs, used: false });
    return `${this.#ctx.baseUrl()}/cgi-bin/aibot/response?response_code=${code}`;
  }

  /** The routes of this family. */
  readonly routes: Record<string, Handler> = {
    "aibot/response": ({ url, body }) => {
      const code = url.searchParams.get("response_code") ?? "";
      const entry = this.#responseCodes.get(code);
      const now = this.#ctx.now();
      const errcodes = this.#ctx.errcodes;
      if (entry === undefined || now > entry.expiresAt) throw new SimApiError(errcodes.responseUrlUsed, "invalid Request Parameter, response_code invalid or expired");
      if (entry.used) throw new SimApiError(errcodes.responseUrlUsed, "invalid Request Parameter, response_code already used");
      const b = jsonBody(body);
      const msgtype = requireString(b, "msgtype");
      const rule = WECOM_RULES.bot.responseUrl;
      if (!(rule.msgtypes as readonly string[]).includes(msgtype)) throw new SimApiError(40008, "invalid message type, markdown or template_card");
      if (msgtype === "markdown") {
        const content = objectField(b, "markdown").content;
        if (typeof content !== "string" || content === "") throw new SimApiError(44004, "empty content");
        if (utf8Length(content) > rule.maxBytes) throw new SimApiError(errcodes.textTooLong, `content size out of limit, ${utf8Length(content)} bytes > ${rule.maxBytes}`);
      } else {
        objectField(b, "template_card");
      }
      entry.used = true;
      this.#ctx.record({ api: "aibot/response", body: { response_code: code, bot_id: entry.botId, msgid: entry.msgid, ...b }, at: now, delivered: true });
      return { json: { errcode: 0, errmsg: "ok" } };
    },
  };
}
