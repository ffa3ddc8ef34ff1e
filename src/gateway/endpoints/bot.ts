/**
 * `GET|POST /wecom/bot/{name}`: URL verification and the encrypted JSON callbacks of an AI bot
 * (webhook mode). A user's message is stored, then answered with an encrypted stream reply that
 * opens its stream (`outbound/bot.ts`); WeCom's refresh polls of a stream are answered from the
 * stream's shared state (the agents' answers so far, replace semantics). Events
 * (`enter_chat`, `template_card_event`, `feedback_event`, unknown ones) are stored and delivered
 * to the 全媒体 like messages (`MsgType: "event"`, `Content` the event's name) and answered empty.
 * @module
 */
import { createHash } from "node:crypto";
import type { BotConfig } from "../../config.js";
import { decodeBotCallback } from "../../wecom/bot/decode.js";
import { encodeBotReply } from "../../wecom/bot/encode.js";
import type { WeComCrypto } from "../../wecom/crypto.js";
import { openBotStream, refreshBotStream } from "../outbound/bot.js";
import { handoffEntries } from "../handoff.js";
import { messageItem } from "../pipeline.js";
import { wecomCallback } from "./callback.js";
import { type EndpointContext, error, type GatewayRequest, type GatewayResponse, text } from "./http.js";

/** A configured bot with its callback crypto. */
export interface BotEndpoint {
  cfg: BotConfig;
  crypto: WeComCrypto;
}

/** The stream id of a bot message: derived from its msgid, so WeCom's retries get the same one. */
export function botStreamId(botId: string, msgid: string): string {
  return `s${createHash("sha1").update(`${botId}\n${msgid}`).digest("hex").slice(0, 24)}`;
}

/** Answer one bot callback (`bot` undefined: no bot of that name). */
export async function botCallback(ctx: EndpointContext, name: string, bot: BotEndpoint | undefined, req: GatewayRequest): Promise<GatewayResponse> {
  if (!bot) return error(404, "unknown_bot", "no bot of that name is configured (the path is /wecom/bot/{wecom.bots[].name})");
  const reply = (payload: Parameters<typeof encodeBotReply>[0]): GatewayResponse => ({
    status: 200,
    headers: { "content-type": "application/json; charset=utf-8" },
    body: bot.crypto.encryptJsonReply(JSON.stringify(encodeBotReply(payload))),
  });
  return wecomCallback(ctx, "bot", bot.crypto, req, async (plain) => {
    const msg = decodeBotCallback(plain, { receivedAt: ctx.now() });
    if (msg.content.type === "stream_refresh") {
      ctx.metrics.callbacks.inc({ channel: "bot", outcome: "stream_refresh" });
      return reply(await refreshBotStream(ctx.store, ctx.tenant, bot.cfg, { botId: msg.botId, streamId: msg.content.streamId, address: msg.conversationId }, ctx.now()));
    }
    // events (template_card_event included) go to the 全媒体 as event messages, like messages
    const r = await ctx.ingestor.submit(messageItem(ctx.tenant, msg, { kind: "bot", bot: name }, (m) => ({ entries: handoffEntries(ctx.config.handoff, m) })));
    ctx.countStored("bot", r.stored);
    if (msg.content.type === "event") return text(200, "");
    // a new message opens its stream; WeCom's retry of the callback (same msgid, so the same
    // stream id) gets the stream as it is now, never a reset one
    const open = { botId: msg.botId, streamId: botStreamId(msg.botId, msg.id), msgid: msg.id, address: msg.conversationId };
    return reply(await openBotStream(ctx.store, ctx.tenant, bot.cfg, msg.responseUrl === undefined ? open : { ...open, responseUrl: msg.responseUrl }, ctx.now()));
  });
}
