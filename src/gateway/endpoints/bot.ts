/**
 * `GET|POST /wecom/bot/{name}`: URL verification and the encrypted JSON callbacks of an AI bot
 * (webhook mode). A message is stored, then answered with an encrypted stream reply; WeCom's
 * stream polls are answered too.
 * @module
 */
import { createHash } from "node:crypto";
import type { BotConfig } from "../../config.js";
import { decodeBotCallback } from "../../wecom/bot/decode.js";
import { encodeBotReply } from "../../wecom/bot/encode.js";
import type { WeComCrypto } from "../../wecom/crypto.js";
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
      return reply({ type: "stream", id: msg.content.streamId, finish: false, content: bot.cfg.placeholder });
    }
    const r = await ctx.ingestor.submit(messageItem(ctx.tenant, msg, { kind: "bot", bot: name }));
    ctx.countStored("bot", r.stored);
    if (msg.content.type === "event") return text(200, "");
    return reply({ type: "stream", id: botStreamId(msg.botId, msg.id), finish: false, content: bot.cfg.placeholder });
  });
}
