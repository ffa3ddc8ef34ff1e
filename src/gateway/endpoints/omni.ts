/**
 * `POST {omni.pathPrefix}/staffService/message`: an agent's answer from the 全媒体 (seed 004,
 * 全媒体 → APP), routed by `ToUserId` (the conversation address inbound delivery gave as
 * `FromUserId`) to the channel the customer used, and queued in the outbox.
 *
 * Every answer is HTTP 200 with `{"errcode", "errmsg"}`, as the vendor's servers answer; errcode 0
 * only once the message is durably queued (or was queued before: a retry). The checks run in this
 * order, the first failure answering: 30001 signature or timestamp missing; 30003 a caller outside
 * `omni.allowIps`, a bad signature or a stale timestamp; 30005 not a POST, bad JSON, a field
 * missing, or a message incomplete for its MsgType; 30006 an unknown `ToUserId`; 30007 a MsgType
 * its channel cannot carry; 30008 a conversation that cannot be answered (session archive, a KF
 * account itself); 30005 again for what only the channel requires (a KF link's picture); 30009
 * refused by a WeCom rule known before sending (KF: session state, 48 hours, 5 messages); 30004
 * the store failed. Nothing about the body is looked at before the signature is checked.
 *
 * Idempotency: the signature does not cover the body, so the gateway keeps keys. `Tag.msgid` (a
 * string) is the key when present (remembered as long as the ledger keeps keys); otherwise
 * (ToUserId, ServiceId, MsgType, Content) within `omni.dedupWindowSec`. A byte-identical replay
 * (same timestamp, signature and body) is recognised for as long as its timestamp is accepted.
 * @module
 */
import type { Config } from "../../config.js";
import { DecodeError } from "../../errors.js";
import { addressMatcher } from "../../http/client-address.js";
import { type OmniFromBody, OmniError, omniReply, parseOmniBody, verifyOmniSignature } from "../../omni/index.js";
import { type ConversationAddress, parseConversationAddress } from "../../wecom/address.js";
import { splitUtf8 } from "../../wecom/text-split.js";
import { botConversationKey } from "../outbound/bot.js";
import { type AppJob, type BotJob, isHttpUrl, type KfJob, keyHash, tagMsgId, tagNumber, tagValue } from "../outbound/types.js";
import { isObject } from "../../wecom/fields.js";
import { decideKfSend, type KfRulesState, kfRulesExpiry, kfRulesKey } from "../outbound/kf-rules.js";
import { KF_MSG_TYPES, KF_TEXT_MAX_BYTES } from "../outbound/kf.js";
import { outboundKeyKeepMs } from "../retention.js";
import type { OutboundAccept, OutboxInsert } from "../../store/types.js";
import { type EndpointContext, type GatewayRequest, type GatewayResponse, json } from "./http.js";

/** MsgTypes an agent may send to a member of a self-built app. */
export const APP_MSG_TYPES: ReadonlySet<string> = new Set(["text", "markdown", "image", "voice", "video", "file", "link"]);
/** MsgTypes an agent may send to an AI bot's user (into the stream, or its response_url). */
export const BOT_MSG_TYPES: ReadonlySet<string> = new Set(["text", "markdown"]);

/** staffService errcodes of this direction beyond seed 004's (30001–30005). */
export const OmniReplyErrcode = {
  /** The ToUserId is not a conversation of this gateway. */
  UnknownToUserId: 30006,
  /** The MsgType cannot be carried by the conversation's channel. */
  MsgTypeNotCarried: 30007,
  /** The conversation cannot be answered (a session-archive record, a KF account). */
  NotAnswerable: 30008,
  /** A WeCom rule refuses the message before it is sent. */
  RefusedByRule: 30009,
} as const;

/** What the endpoint needs beyond the shared endpoint context. */
export interface OmniEndpointContext extends EndpointContext {
  /** New outbound entries were queued: wake the outbox worker. */
  notifyOutbound(): void;
}

const answer = (errcode: number, errmsg?: string): GatewayResponse => json(200, omniReply(errcode, errmsg));

/** The allow-list matcher of a configuration, built once per list. */
const matchers = new WeakMap<readonly string[], (a: string | undefined) => boolean>();
function allowed(cfg: Config["omni"], address: string | undefined): boolean {
  if (cfg.allowIps.length === 0) return true;
  let m = matchers.get(cfg.allowIps);
  if (m === undefined) {
    m = addressMatcher(cfg.allowIps, "omni.allowIps");
    matchers.set(cfg.allowIps, m);
  }
  return m(address);
}

/** Where a ToUserId goes: the outbox kind and lane, or the errcode that refuses it. */
type Route = { kind: "kf_send" | "app_send" | "bot_reply"; address: ConversationAddress } | { errcode: number; errmsg: string };

const UNKNOWN = { errcode: OmniReplyErrcode.UnknownToUserId, errmsg: "unknown ToUserId: not a conversation address of this gateway" };

async function route(ctx: EndpointContext, toUserId: string, msgType: string): Promise<Route> {
  const a = parseConversationAddress(toUserId);
  if (a === undefined) return UNKNOWN;
  const cfg = ctx.config;
  const known = async (key: string) => (await ctx.store.getState(ctx.tenant, key, ctx.now())) !== undefined;
  switch (a.channel) {
    case "archive":
      return { errcode: OmniReplyErrcode.NotAnswerable, errmsg: "session-archive conversations are a record of staff chats, not a channel: they cannot be answered" };
    case "kf_account":
      return { errcode: OmniReplyErrcode.NotAnswerable, errmsg: "a KF account's own address cannot be answered: use the customer's address kf:{corpId}:{openKfId}:{externalUserId}" };
    case "kf": {
      // a customer the gateway has seen write (its rules are kept 30 days after the last message)
      if (a.corpId !== ctx.tenant || !(await known(kfRulesKey(toUserId)))) return { ...UNKNOWN, errmsg: "unknown ToUserId: no KF customer with that address has written" };
      if (!KF_MSG_TYPES.has(msgType)) return { errcode: OmniReplyErrcode.MsgTypeNotCarried, errmsg: `a KF customer cannot be sent MsgType ${msgType}` };
      return { kind: "kf_send", address: a };
    }
    case "app": {
      // any member of a configured app may be written to (apps may message members first)
      if (a.corpId !== ctx.tenant || !cfg.wecom.apps.some((x) => x.agentId === a.agentId)) return { ...UNKNOWN, errmsg: "unknown ToUserId: no self-built app with that agentId is configured" };
      if (!APP_MSG_TYPES.has(msgType)) return { errcode: OmniReplyErrcode.MsgTypeNotCarried, errmsg: `a self-built app's member cannot be sent MsgType ${msgType}` };
      return { kind: "app_send", address: a };
    }
    case "bot": {
      if (!cfg.wecom.bots.some((b) => b.botId === a.botId) || !(await known(botConversationKey(toUserId)))) {
        return { ...UNKNOWN, errmsg: "unknown ToUserId: no user of that bot has written in that chat" };
      }
      if (!BOT_MSG_TYPES.has(msgType)) return { errcode: OmniReplyErrcode.MsgTypeNotCarried, errmsg: `an AI bot's stream carries text and markdown, not MsgType ${msgType}` };
      return { kind: "bot_reply", address: a };
    }
  }
}

/**
 * What is wrong with a message whatever its channel (30005, checked before the route), in one
 * line; undefined when nothing. Tag is free JSON: only the keys a MsgType needs are read.
 */
function bodyProblem(body: OmniFromBody): string | undefined {
  const { MsgType: type, Content: content, Tag: tag } = body;
  switch (type) {
    case "text":
    case "markdown":
      // a bot message may carry only Tag.finish or a template card
      if (content.trim() === "" && tagValue(tag, "finish") !== true && !isObject(tagValue(tag, "template_card"))) return "Content is empty";
      return undefined;
    case "image":
    case "voice":
    case "video":
    case "file":
      return isHttpUrl(content) ? undefined : "Content must be the file's http(s) URL";
    case "location":
      return tagNumber(tagValue(tag, "latitude")) === undefined || tagNumber(tagValue(tag, "longitude")) === undefined ? "location needs Tag.latitude and Tag.longitude" : undefined;
    case "link":
      return isHttpUrl(tagValue(tag, "url") ?? content) ? undefined : "link needs Tag.url (or Content) as an http(s) URL";
    case "miniprogram":
    case "msgmenu":
      return isObject(tagValue(tag, type)) ? undefined : `${type} needs Tag.${type} in kf/send_msg's shape`;
    default:
      return undefined; // the route answers 30007
  }
}

/** What is wrong with a message for its channel (30005, after the route); undefined when nothing. */
function channelProblem(kind: Route & { kind: string }, body: OmniFromBody): string | undefined {
  if (kind.kind === "bot_reply") return undefined;
  if ((body.MsgType === "text" || body.MsgType === "markdown") && body.Content.trim() === "") return "Content is empty";
  if (kind.kind === "kf_send" && body.MsgType === "link" && !isHttpUrl(tagValue(body.Tag, "picUrl"))) return "a KF link needs Tag.picUrl (WeCom shows it with a thumbnail)";
  return undefined;
}

/** Answer one staffService request of the 全媒体. */
export async function omniMessage(ctx: OmniEndpointContext, req: GatewayRequest): Promise<GatewayResponse> {
  const cfg = ctx.config.omni;
  const count = (outcome: string) => ctx.metrics.omniRequests.inc({ outcome });
  const timestamp = req.query.get("timestamp");
  const signature = req.query.get("signature");
  if (!timestamp || !signature) {
    count("30001");
    return answer(30001, "signature and timestamp are required");
  }
  if (!allowed(cfg, req.remoteAddress)) {
    count("30003");
    return answer(30003, "this address may not call the staffService API (omni.allowIps)");
  }
  const now = ctx.now();
  const windowMs = cfg.timestampWindowSec * 1000;
  try {
    verifyOmniSignature({ appId: cfg.appId, secret: cfg.replySecret ?? cfg.secret, timestamp, signature, now, windowMs });
  } catch (e) {
    if (!(e instanceof OmniError)) throw e;
    count(String(e.errcode));
    return answer(e.errcode, e.message.replace(/^\d+ /, ""));
  }
  if (req.method !== "POST") {
    count("30005");
    return answer(30005, "use POST with a JSON body");
  }
  if (req.bodyTooLarge === true) {
    count("30005");
    return answer(30005, `the body is larger than limits.bodyBytes (${ctx.config.limits.bodyBytes} bytes)`);
  }
  let body: OmniFromBody;
  try {
    const parsed = parseOmniBody(req.body);
    if (!("ToUserId" in parsed)) throw new DecodeError("omni", "ToUserId is required");
    body = parsed;
  } catch (e) {
    if (!(e instanceof DecodeError)) throw e;
    count("30005");
    return answer(30005, e.message.replace(/^omni: /, ""));
  }
  const problem = bodyProblem(body);
  if (problem !== undefined) {
    count("30005");
    return answer(30005, problem);
  }
  const r = await route(ctx, body.ToUserId, body.MsgType);
  if ("errcode" in r) {
    count(String(r.errcode));
    return answer(r.errcode, r.errmsg);
  }
  const wrong = channelProblem(r, body);
  if (wrong !== undefined) {
    count("30005");
    return answer(30005, wrong);
  }

  const msgid = tagMsgId(body.Tag);
  // the replay key outlives a duplicate or a refusal: a byte-identical replay is never acted on
  const keys: OutboundAccept["keys"] = [{ key: `r:${keyHash(timestamp, signature.toLowerCase(), req.body)}`, expiresAt: Number(timestamp) + windowMs + 1000, always: true }];
  if (msgid !== undefined) keys.push({ key: `m:${keyHash(msgid)}`, expiresAt: now + outboundKeyKeepMs(ctx.config) });
  else if (ctx.config.omni.dedupWindowSec > 0) {
    keys.push({ key: `c:${keyHash(body.ToUserId, body.ServiceId ?? "", body.MsgType, body.Content)}`, expiresAt: now + ctx.config.omni.dedupWindowSec * 1000 });
  }
  const job: KfJob | AppJob | BotJob = { op: "message", body };
  const entry: OutboxInsert = { kind: r.kind, conversationId: body.ToUserId, payload: job };
  const input: OutboundAccept = { tenant: ctx.tenant, keys, entries: [entry], now };
  if (r.kind === "kf_send") {
    const parts = body.MsgType === "text" ? splitUtf8(body.Content, KF_TEXT_MAX_BYTES).length : 1;
    input.rule = {
      key: kfRulesKey(body.ToUserId),
      conversationId: body.ToUserId,
      decide: (current) => {
        // it may run twice (a group commit that failed runs each write alone): start clean
        delete job.allowedParts;
        delete job.chargedFor;
        const d = decideKfSend(current as KfRulesState | undefined, parts, now);
        if ("refuse" in d) return { refuse: { errcode: d.refuse.errcode, errmsg: `${d.refuse.errcode} ${d.refuse.reason}` } };
        if (d.allowed < parts) job.allowedParts = d.allowed;
        if (d.next.customerAt !== undefined) job.chargedFor = d.next.customerAt;
        return { value: d.next, expiresAt: kfRulesExpiry(d.next, now) };
      },
    };
  }
  let result: Awaited<ReturnType<typeof ctx.store.acceptOutbound>>;
  try {
    result = await ctx.store.acceptOutbound(input);
  } catch (e) {
    ctx.log.error("staffService message not queued", { error: (e as Error).message });
    count("30004");
    return answer(30004, "internal queue error: the message was not queued, send it again");
  }
  if (result.outcome === "refused") {
    count("30009");
    return answer(OmniReplyErrcode.RefusedByRule, `refused by WeCom's rules: ${result.errmsg}`);
  }
  if (result.outcome === "duplicate") {
    count("duplicate");
    return answer(0);
  }
  count("queued");
  ctx.notifyOutbound();
  return answer(0);
}
