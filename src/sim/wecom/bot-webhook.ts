/**
 * AI bots (智能机器人) in webhook mode in the WeCom simulator: users' messages as signed,
 * encrypted callbacks, stream refresh polls, and each message's `response_url`.
 * @module
 */
import { utf8Length } from "../../wecom/fields.js";
import type { Callbacks } from "./callbacks.js";
import type { Handler, SimBot, SimContext } from "./context.js";
import { SimApiError, jsonBody, requireString } from "./errors.js";
import { WECOM_RULES } from "./rules.js";
import type { CallbackWithReply } from "./types.js";

/** The bots' callbacks, streams and response_urls. */
export class BotWebhookService {
  readonly #ctx: SimContext;
  readonly #callbacks: Callbacks;
  readonly #responseCodes = new Map<string, { botId: string; expiresAt: number; used: boolean }>();

  /**
   * @param ctx the shared simulator context
   * @param callbacks posts the bot callbacks
   */
  constructor(ctx: SimContext, callbacks: Callbacks) {
    this.#ctx = ctx;
    this.#callbacks = callbacks;
  }

  /** A bot by botId or name. */
  bot(nameOrId: string | number): SimBot {
    for (const b of this.#ctx.bots.values()) {
      if (b.cfg.botId === nameOrId || (b.cfg.name !== undefined && b.cfg.name === nameOrId)) return b;
    }
    throw new Error(`unknown bot ${String(nameOrId)}`);
  }

  /** POST any bot callback (with WeCom's retries); `reply` is the bot's decrypted answer. */
  sends(botId: string, message: Record<string, unknown>, opts: { sameTimestampOnRetry?: boolean } = {}): Promise<CallbackWithReply<unknown>> {
    return this.#callbacks.toBot(this.bot(botId), JSON.stringify(message), opts.sameTimestampOnRetry ?? false);
  }

  /** A member's text message to a bot (single chat, or a group with `chatId`), with a response_url. */
  async userSendsText(botId: string, userId: string, text: string, opts: { chatId?: string } = {}): Promise<CallbackWithReply<unknown> & { msgid: string }> {
    const bot = this.bot(botId);
    const msgid = this.#ctx.ids.botMsgId();
    const message: Record<string, unknown> = { msgid, aibotid: bot.cfg.botId };
    if (opts.chatId !== undefined) message.chatid = opts.chatId;
    message.chattype = opts.chatId !== undefined ? "group" : "single";
    message.from = { userid: userId };
    message.response_url = this.#newResponseUrl(bot.cfg.botId);
    message.msgtype = "text";
    message.text = { content: text };
    const r = await this.#callbacks.toBot(bot, JSON.stringify(message), false);
    return { ...r, msgid };
  }

  /** WeCom polls an open stream: a msgtype "stream" callback with that id; returns the decrypted answer. */
  pollStream(botId: string, streamId: string, userId: string, opts: { chatId?: string } = {}): Promise<CallbackWithReply<unknown>> {
    const bot = this.bot(botId);
    return this.#callbacks.toBot(bot, JSON.stringify(this.#pollMessage(bot, streamId, userId, opts.chatId)), false);
  }

  #pollMessage(bot: SimBot, streamId: string, userId: string, chatId: string | undefined): Record<string, unknown> {
    const message: Record<string, unknown> = { msgid: this.#ctx.ids.botMsgId(), aibotid: bot.cfg.botId };
    if (chatId !== undefined) message.chatid = chatId;
    message.chattype = chatId !== undefined ? "group" : "single";
    message.from = { userid: userId };
    message.msgtype = "stream";
    message.stream = { id: streamId };
    return message;
  }

  /** A response_url for a bot message: one use within an hour, served by the simulator. */
  #newResponseUrl(botId: string): string {
    const code = this.#ctx.ids.responseCode();
    this.#responseCodes.set(code, { botId, expiresAt: this.#ctx.now() + WECOM_RULES.bot.responseUrl.ttlMs, used: false });
    return `${this.#ctx.baseUrl()}/cgi-bin/aibot/response?response_code=${code}`;
  }

  /** The routes of this family. */
  readonly routes: Record<string, Handler> = {
    "aibot/response": ({ url, body }) => {
      const code = url.searchParams.get("response_code") ?? "";
      const entry = this.#responseCodes.get(code);
      const now = this.#ctx.now();
      const used = this.#ctx.errcodes.responseUrlUsed;
      if (entry === undefined || now > entry.expiresAt) throw new SimApiError(used, "invalid Request Parameter, response_code invalid or expired");
      if (entry.used) throw new SimApiError(used, "invalid Request Parameter, response_code already used");
      const b = jsonBody(body);
      const msgtype = requireString(b, "msgtype");
      if (msgtype !== "markdown" && msgtype !== "template_card") throw new SimApiError(40008, "invalid message type, markdown or template_card");
      if (msgtype === "markdown") {
        const m = b.markdown;
        const content = typeof m === "object" && m !== null ? (m as Record<string, unknown>).content : undefined;
        if (typeof content !== "string" || content === "") throw new SimApiError(44004, "empty content");
        if (utf8Length(content) > WECOM_RULES.bot.responseUrl.maxBytes) throw new SimApiError(45002, "content size out of limit");
      }
      entry.used = true;
      this.#ctx.record({ api: "aibot/response", body: { response_code: code, bot_id: entry.botId, ...b }, at: now, delivered: true });
      return { json: { errcode: 0, errmsg: "ok" } };
    },
  };
}
