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
 * Many corps (`wecom.corps`): the signature is checked against each 全媒体 credential configured
 * for the path (appId and `replySecret`, else `secret`), in the configuration's order; the first
 * that verifies names the corps it may route to, and `ToUserId` must address a conversation of one
 * of them: a conversation of another configured corp answers 30006, as an unknown one does.
 *
 * Idempotency: the signature does not cover the body, so the gateway keeps keys. `Tag.msgid` (a
 * string) is the key when present (remembered as long as the ledger keeps keys); otherwise
 * (ToUserId, ServiceId, MsgType, Content) within `omni.dedupWindowSec`. A byte-identical replay
 * (same timestamp, signature and body) is recognised for as long as its timestamp is accepted.
 * @module
 */
import type { OmniConfig } from "../../config.js";
import { DecodeError } from "../../errors.js";
import { addressMatcher } from "../../http/client-address.js";
import { type OmniFromBody, OmniError, omniReply, parseOmniBody, verifyOmniSignature } from "../../omni/index.js";
import { type ConversationAddress, parseConversationAddress } from "../../wecom/address.js";
import { splitUtf8 } from "../../wecom/text-split.js";
import { BOT_WS_MEDIA_TYPES, botConversationKey } from "../outbound/bot.js";
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

/** What the endpoint needs of a corp beyond the shared endpoint context. */
export interface OmniEndpointContext extends EndpointContext {
  /** New outbound entries were queued (these ids of these entries): wake the outbox worker. */
  notifyOutbound(queued?: { ids: number[]; entries: OutboxInsert[] }): void;
}

/** A 全媒体 credential that may sign requests to one staffService path, and the corps it routes to. */
export interface OmniCredential {
  /** The settings checked before the corp is known: `appId`, `replySecret` (else `secret`), `allowIps`, `timestampWindowSec`. */
  readonly omni: OmniConfig;
  /** CorpIDs of the corps whose 全媒体 this is. */
  readonly corps: ReadonlySet<string>;
}

/** How the requests of one staffService path are checked and routed. */
export interface OmniRouting {
  /** The credentials that may sign them, in the configuration's order. */
  readonly credentials: readonly OmniCredential[];
  /** The configured corp a conversation address belongs to (by its corpId, or a bot's botId), or undefined. */
  corpOf(address: ConversationAddress): OmniEndpointContext | undefined;
}

const answer = (errcode: number, errmsg?: string): GatewayResponse => json(200, omniReply(errcode, errmsg));

/** The allow-list matcher of a configuration, built once per list. */
const matchers = new WeakMap<readonly string[], (a: string | undefined) => boolean>();
function allowed(cfg: OmniConfig, address: string | undefined): boolean {
  if (cfg.allowIps.length === 0) return true;
  let m = matchers.get(cfg.allowIps);
  if (m === undefined) {
    m = addressMatcher(cfg.allowIps, "omni.allowIps");
    matchers.set(cfg.allowIps, m);
  }
  return m(address);
}

/** Where a ToUserId goes: the outbox kind and lane and the corp, or the errcode that refuses it. */
type Route = { kind: "kf_send" | "app_send" | "bot_reply"; address: ConversationAddress; corp: OmniEndpointContext } | { errcode: number; errmsg: string };

const UNKNOWN = { errcode: OmniReplyErrcode.UnknownToUserId, errmsg: "unknown ToUserId: not a conversation address of this gateway" };

async function route(routing: OmniRouting, credential: OmniCredential, toUserId: string, msgType: string): Promise<Route> {
  const a = parseConversationAddress(toUserId);
  if (a === undefined) return UNKNOWN;
  const corp = routing.corpOf(a);
  // a conversation of a corp this credential does not serve is unknown to it (nothing is told about other corps)
  if (corp !== undefined && !credential.corps.has(corp.tenant)) return UNKNOWN;
  const known = async (c: OmniEndpointContext, key: string) => (await c.store.getState(c.tenant, key, c.now())) !== undefined;
  switch (a.channel) {
    case "archive":
      return { errcode: OmniReplyErrcode.NotAnswerable, errmsg: "session-archive conversations are a record of staff chats, not a channel: they cannot be answered" };
    case "kf_account":
      return { errcode: OmniReplyErrcode.NotAnswerable, errmsg: "a KF account's own address cannot be answered: use the customer's address kf:{corpId}:{openKfId}:{externalUserId}" };
    case "kf": {
      // a customer the gateway has seen write (its rules are kept 30 days after the last message)
      if (corp === undefined || !(await known(corp, kfRulesKey(toUserId)))) return { ...UNKNOWN, errmsg: "unknown ToUserId: no KF customer with that address has written" };
      if (!KF_MSG_TYPES.has(msgType)) return { errcode: OmniReplyErrcode.MsgTypeNotCarried, errmsg: `a KF customer cannot be sent MsgType ${msgType}` };
      return { kind: "kf_send", address: a, corp };
    }
    case "app": {
      // any member of a configured app may be written to (apps may message members first)
      if (corp === undefined || !corp.config.wecom.apps.some((x) => x.agentId === a.agentId)) return { ...UNKNOWN, errmsg: "unknown ToUserId: no self-built app with that agentId is configured" };
      if (!APP_MSG_TYPES.has(msgType)) return { errcode: OmniReplyErrcode.MsgTypeNotCarried, errmsg: `a self-built app's member cannot be sent MsgType ${msgType}` };
      return { kind: "app_send", address: a, corp };
    }
    case "bot": {
      if (corp === undefined || !corp.config.wecom.bots.some((b) => b.botId === a.botId) || !(await known(corp, botConversationKey(toUserId)))) {
        return { ...UNKNOWN, errmsg: "unknown ToUserId: no user of that bot has written in that chat" };
      }
      const websocket = corp.config.wecom.bots.some((b) => b.botId === a.botId && b.mode === "websocket");
      if (!BOT_MSG_TYPES.has(msgType) && !(websocket && BOT_WS_MEDIA_TYPES.has(msgType))) {
        return { errcode: OmniReplyErrcode.MsgTypeNotCarried, errmsg: `an AI bot carries text and markdown${websocket ? ", image, file, voice and video" : " (and files in websocket mode)"}, not MsgType ${msgType}` };
      }
      return { kind: "bot_reply", address: a, corp };
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

/** What the endpoint needs of the gateway before the corp is known. */
export type OmniSharedContext = Pick<EndpointContext, "config" | "log" | "metrics" | "now">;

/**
 * Answer one staffService request of the 全媒体.
 * @param ctx the gateway (limits, metrics, clock)
 * @param routing the credentials of the request's path and the corps of addresses
 */
export async function omniMessage(ctx: OmniSharedContext, routing: OmniRouting, req: GatewayRequest): Promise<GatewayResponse> {
  const count = (outcome: string) => ctx.metrics.omniRequests.inc({ outcome });
  const timestamp = req.query.get("timestamp");
  const signature = req.query.get("signature");
  if (!timestamp || !signature) {
    count("30001");
    return answer(30001, "signature and timestamp are required");
  }
  const now = ctx.now();
  // each credential the caller may use, in order: the first that verifies is the request's; when
  // none does, the first one's refusal answers
  let credential: OmniCredential | undefined;
  let refusal: OmniError | undefined;
  let mayCall = false;
  for (const c of routing.credentials) {
    if (!allowed(c.omni, req.remoteAddress)) continue;
    mayCall = true;
    try {
      verifyOmniSignature({ appId: c.omni.appId, secret: c.omni.replySecret ?? c.omni.secret, timestamp, signature, now, windowMs: c.omni.timestampWindowSec * 1000 });
      credential = c;
      break;
    } catch (e) {
      if (!(e instanceof OmniError)) throw e;
      refusal ??= e;
    }
  }
  if (!mayCall) {
    count("30003");
    return answer(30003, "this address may not call the staffService API (omni.allowIps)");
  }
  if (credential === undefined) {
    const e = refusal as OmniError;
    count(String(e.errcode));
    return answer(e.errcode, e.message.replace(/^\d+ /, ""));
  }
  const windowMs = credential.omni.timestampWindowSec * 1000;
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
  const r = await route(routing, credential, body.ToUserId, body.MsgType);
  if ("errcode" in r) {
    count(String(r.errcode));
    return answer(r.errcode, r.errmsg);
  }
  const wrong = channelProblem(r, body);
  if (wrong !== undefined) {
    count("30005");
    return answer(30005, wrong);
  }

  // from here on, the corp of the conversation: its store keys, its 全媒体's settings
  const corp = r.corp;
  const msgid = tagMsgId(body.Tag);
  // the replay key outlives a duplicate or a refusal: a byte-identical replay is never acted on
  const keys: OutboundAccept["keys"] = [{ key: `r:${keyHash(timestamp, signature.toLowerCase(), req.body)}`, expiresAt: Number(timestamp) + windowMs + 1000, always: true }];
  if (msgid !== undefined) keys.push({ key: `m:${keyHash(msgid)}`, expiresAt: now + outboundKeyKeepMs(corp.config) });
  else if (corp.config.omni.dedupWindowSec > 0) {
    keys.push({ key: `c:${keyHash(body.ToUserId, body.ServiceId ?? "", body.MsgType, body.Content)}`, expiresAt: now + corp.config.omni.dedupWindowSec * 1000 });
  }
  const job: KfJob | AppJob | BotJob = { op: "message", body };
  const entry: OutboxInsert = { kind: r.kind, conversationId: body.ToUserId, payload: job };
  const input: OutboundAccept = { tenant: corp.tenant, keys, entries: [entry], now };
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
  let result: Awaited<ReturnType<typeof corp.store.acceptOutbound>>;
  try {
    result = await corp.store.acceptOutbound(input);
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
  corp.notifyOutbound({ ids: result.ids, entries: input.entries });
  return answer(0);
}
