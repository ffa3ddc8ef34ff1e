/**
 * `POST /archive/push`: a session-archive push (seed 002), authenticated by the shared secret and
 * the address allow-list. Every push type is kept; records become messages.
 * @module
 */
import type { IngestItem } from "../../store/types.js";
import { decodeArchivePush } from "../../wecom/archive/decode.js";
import { safeEqual } from "../../wecom/crypto.js";
import { messageItem } from "../pipeline.js";
import { type EndpointContext, error, type GatewayRequest, type GatewayResponse, header, json, rejection } from "./http.js";

/** Answer one archive push. */
export async function archivePush(ctx: EndpointContext, req: GatewayRequest): Promise<GatewayResponse> {
  const cfg = ctx.config.archive;
  if (!cfg) return error(404, "archive_disabled", "the session-archive push is not configured");
  if (req.method !== "POST") return error(405, "method_not_allowed", "use POST");
  const given = req.query.get("secret") ?? header(req, "x-archive-secret") ?? "";
  if (!safeEqual(given, cfg.secret)) {
    ctx.metrics.callbacks.inc({ channel: "archive", outcome: "bad_secret" });
    return error(401, "bad_secret", "missing or wrong archive secret");
  }
  const ip = (req.remoteAddress ?? "").replace(/^::ffff:/, "");
  if (cfg.allowIps.length > 0 && !cfg.allowIps.includes(ip)) {
    ctx.metrics.callbacks.inc({ channel: "archive", outcome: "ip_refused" });
    return error(403, "ip_refused", `address ${ip || "(unknown)"} is not allowed to push`);
  }
  let push: ReturnType<typeof decodeArchivePush>;
  try {
    push = decodeArchivePush(req.body);
  } catch (e) {
    const rej = rejection(e);
    if (!rej) throw e;
    ctx.metrics.callbacks.inc({ channel: "archive", outcome: rej.outcome });
    return rej.response;
  }
  const receivedAt = ctx.now();
  let item: IngestItem;
  if (push.kind === "record") {
    const m = push.message;
    const tenant = m.corpId ?? ctx.tenant;
    item = {
      ...messageItem(tenant, m, { kind: "none" }),
      archive: { tenant, messageId: push.messageId, pushType: 101, msgid: m.id, ...(m.seq !== undefined ? { seq: m.seq } : {}), receivedAt, body: push.record },
    };
  } else {
    item = {
      tenant: ctx.tenant,
      channel: "archive",
      key: `push:${push.messageId}`,
      skipReason: `push_type_${push.pushType}`,
      archive: { tenant: ctx.tenant, messageId: push.messageId, pushType: push.pushType, receivedAt, body: push.raw },
    };
  }
  const r = await ctx.ingestor.submit(item);
  ctx.countStored("archive", r.stored);
  return json(200, { errcode: 0, errmsg: "ok" });
}
