/**
 * `POST /archive/push`: a session-archive push (seed 002), authenticated by the shared secret and
 * the address allow-list. Every push type is kept; records become messages.
 *
 * Many corps (`wecom.corps`): each corp has its own `archive.secret`, and a push goes to the corp
 * whose secret it carries (an unknown secret is refused like a wrong one); that corp's `allowIps`
 * apply, and its CorpID is the tenant of what is stored.
 * @module
 */
import type { ArchiveConfig } from "../../config.js";
import type { IngestItem } from "../../store/types.js";
import { decodeArchivePush } from "../../wecom/archive/decode.js";
import { safeEqual } from "../../wecom/crypto.js";
import { messageItem } from "../pipeline.js";
import { type EndpointContext, error, type GatewayRequest, type GatewayResponse, header, json, rejection } from "./http.js";

/** A corp that takes archive pushes: its context and its `archive` settings. */
export interface ArchiveTarget {
  ctx: EndpointContext;
  archive: ArchiveConfig;
}

/** Options of {@link archivePush}. */
export interface ArchivePushOptions {
  /**
   * The tenant of a record: `"record"` its own `corpid` when it has one, else the corp's (a
   * single-corp deployment, as always); `"corp"` always the corp whose secret the push carries (many
   * corps: a push never writes into another corp's records).
   */
  recordTenant: "record" | "corp";
}

/**
 * Answer one archive push.
 * @param ctx the gateway (metrics, clock) for what comes before the corp is known
 * @param targets the corps that take pushes, in the configuration's order
 */
export async function archivePush(ctx: Pick<EndpointContext, "metrics">, targets: readonly ArchiveTarget[], req: GatewayRequest, options: ArchivePushOptions): Promise<GatewayResponse> {
  if (targets.length === 0) return error(404, "archive_disabled", "the session-archive push is not configured");
  if (req.method !== "POST") return error(405, "method_not_allowed", "use POST");
  const given = req.query.get("secret") ?? header(req, "x-archive-secret") ?? "";
  // every secret is compared (in constant time each), whichever matches
  let target: ArchiveTarget | undefined;
  for (const t of targets) if (safeEqual(given, t.archive.secret) && target === undefined) target = t;
  if (target === undefined) {
    ctx.metrics.callbacks.inc({ channel: "archive", outcome: "bad_secret" });
    return error(401, "bad_secret", "missing or wrong archive secret");
  }
  const cfg = target.archive;
  const corp = target.ctx;
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
  const receivedAt = corp.now();
  let item: IngestItem;
  if (push.kind === "record") {
    const m = push.message;
    const tenant = options.recordTenant === "record" ? (m.corpId ?? corp.tenant) : corp.tenant;
    item = {
      ...messageItem(tenant, m, { kind: "none" }),
      archive: { tenant, messageId: push.messageId, pushType: 101, msgid: m.id, ...(m.seq !== undefined ? { seq: m.seq } : {}), receivedAt, body: push.record },
    };
  } else {
    item = {
      tenant: corp.tenant,
      channel: "archive",
      key: `push:${push.messageId}`,
      skipReason: `push_type_${push.pushType}`,
      archive: { tenant: corp.tenant, messageId: push.messageId, pushType: push.pushType, receivedAt, body: push.raw },
    };
  }
  const r = await corp.ingestor.submit(item);
  corp.countStored("archive", r.stored);
  return json(200, { errcode: 0, errmsg: "ok" });
}
