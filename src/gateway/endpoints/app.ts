/**
 * `GET|POST /wecom/app/{name}`: URL verification and the encrypted XML callbacks of a self-built
 * app. A `kf_msg_or_event` only wakes the KF puller; everything else is stored before the answer.
 * @module
 */
import type { AppConfig } from "../../config.js";
import { decodeAppXml } from "../../wecom/app/decode.js";
import type { WeComCrypto } from "../../wecom/crypto.js";
import { handoffEntries } from "../handoff.js";
import { messageItem } from "../pipeline.js";
import { wecomCallback } from "./callback.js";
import { type EndpointContext, error, type GatewayRequest, type GatewayResponse, text } from "./http.js";

/** A configured app with its callback crypto. */
export interface AppEndpoint {
  cfg: AppConfig;
  crypto: WeComCrypto;
}

/** Answer one app callback (`app` undefined: no app of that name). */
export async function appCallback(ctx: EndpointContext, name: string, app: AppEndpoint | undefined, req: GatewayRequest): Promise<GatewayResponse> {
  if (!app) return error(404, "unknown_app", "no app of that name is configured (the path is /wecom/app/{wecom.apps[].name})");
  return wecomCallback(ctx, "app", app.crypto, req, async (plain) => {
    const msg = decodeAppXml(plain, { corpId: ctx.tenant });
    if (msg.content.type === "event" && msg.content.event.name === "kf_msg_or_event") {
      const ev = msg.content.event;
      ctx.metrics.callbacks.inc({ channel: "app", outcome: "kf_wakeup" });
      const puller = ctx.puller;
      if (puller && app.cfg.kf) {
        // answered at once; the pull runs after the answer
        setImmediate(() => void puller.wake(ev.openKfId, ev.token, msg.time).catch(() => undefined));
      } else {
        ctx.log.warn("kf_msg_or_event for an app without kf: true", { app: name });
      }
      return text(200, "");
    }
    const r = await ctx.ingestor.submit(messageItem(ctx.tenant, msg, { kind: "wecom", app: name }, (m) => ({ entries: handoffEntries(ctx.config.handoff, m) })));
    ctx.countStored("app", r.stored);
    return text(200, "");
  });
}
