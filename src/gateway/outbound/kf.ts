/**
 * The KF sender: agents' answers to WeChat customers through `kf/send_msg`, and the gateway's own
 * session operations (`service_state/trans` to claim a session or hand it to a WeCom servicer,
 * `send_msg_on_event` for `kf.welcomeText` / `kf.closingText`).
 *
 * Every message goes with a msgid derived from its outbox entry and part ({@link wecomMsgId}),
 * the same on every retry: WeCom refuses a msgid it has seen, so a retry after a crash between
 * the call and its record sends nothing twice (a repeat's refusal counts as sent). Texts longer
 * than 2048 bytes go as several messages, split on grapheme boundaries; the parts that did not fit
 * the budget when the message was queued are one refusal. Media are downloaded from the agent's
 * URL and uploaded (`media.ts`). WeCom's rule refusals (95001, 95002, 95018, a blocked type, …)
 * end the entry `refused`, with a notice to the 全媒体, and update the conversation's rules.
 * @module
 */
import { randomBytes } from "node:crypto";
import { WeComApiError, type WeComCredentials } from "../../clients/wecom.js";
import type { OutboxEntry } from "../../store/types.js";
import { type ConversationAddress, formatConversationAddress, parseConversationAddress } from "../../wecom/address.js";
import { splitUtf8 } from "../../wecom/text-split.js";
import { KF_BUDGET, type KfRulesState, kfRulesExpiry, kfRulesKey } from "./kf-rules.js";
import { MediaRefusedError, prepareAgentMedia } from "./media.js";
import { type AgentMessageJob, isFinalFailure, type KfJob, type KfOpJob, type OutboundContext, refusalOf, refusalReason, type Sender, type SendResult, tagNumber, tagValue, wecomMsgId } from "./types.js";

/** kf/send_msg text limit, bytes. */
export const KF_TEXT_MAX_BYTES = 2048;

/** MsgTypes an agent may send to a KF customer. */
export const KF_MSG_TYPES: ReadonlySet<string> = new Set(["text", "image", "voice", "video", "file", "link", "location", "miniprogram", "msgmenu"]);

/** How many kf/send_msg messages an agent's message becomes (a long text is several). */
export function kfPartCount(msgType: string, content: string): number {
  return msgType === "text" ? splitUtf8(content, KF_TEXT_MAX_BYTES).length : 1;
}

type KfAddress = Extract<ConversationAddress, { channel: "kf" }>;

/** The conversation address of a KF customer. */
const kfAddress = (corpId: string, openKfId: string, externalUserId: string) => formatConversationAddress({ channel: "kf", corpId, openKfId, externalUserId });

function str(v: unknown): string | undefined {
  return typeof v === "string" && v !== "" ? v : undefined;
}

/** The setting that keeps the store's msgid prefix. */
export const MSGID_SALT_SETTING = "outbound_msgid_salt";

/** The store's msgid prefix: 6 characters of [0-9a-z], made once. */
export async function msgIdSalt(ctx: Pick<OutboundContext, "store">): Promise<string> {
  return ctx.store.getOrCreateSetting(MSGID_SALT_SETTING, () => randomBytes(8).readBigUInt64BE().toString(36).slice(0, 6).padStart(6, "0"));
}

/** The outbox entry id a msgid of ours names (undefined for another's). */
export function entryOfMsgId(salt: string, msgid: string): number | undefined {
  const m = /^([0-9a-z]+)_[0-9a-z]+$/.exec(msgid.startsWith(salt) ? msgid.slice(salt.length) : "");
  if (!m) return undefined;
  const id = Number.parseInt(m[1] as string, 36);
  return Number.isSafeInteger(id) ? id : undefined;
}

/** True for WeCom's refusal of a msgid it has already seen (our own retry of a sent part). */
function isRepeatedMsgId(e: WeComApiError): boolean {
  return e.errcode === 40058 && /msgid/i.test(e.message) && /dup/i.test(e.message);
}

/** Sends `kf_send` entries. */
export class KfSender implements Sender {
  readonly #ctx: OutboundContext;
  #salt = "";

  /** @param ctx the gateway's outbound context */
  constructor(ctx: OutboundContext) {
    this.#ctx = ctx;
  }

  /** Run one entry. */
  async send(entry: OutboxEntry): Promise<SendResult> {
    // the store's own msgid prefix: a new or restored database never reuses another's msgids
    if (this.#salt === "") this.#salt = await msgIdSalt(this.#ctx);
    const job = entry.payload as KfJob;
    const creds = this.#ctx.credentials("kf");
    if (job.op !== "message") {
      if (!creds) {
        this.#ctx.log.warn("KF operation dropped: no app with kf: true is configured", { outbox: entry.id, op: job.op });
        return { state: "done" };
      }
      return this.#operation(entry, job, creds);
    }
    const address = parseConversationAddress(job.body.ToUserId);
    if (address?.channel !== "kf") return { state: "refused", errcode: 0, error: "not a KF conversation address", followUps: [refusalOf(job, 0, "not a KF conversation", "ToUserId is not a KF customer's address")] };
    if (!creds) {
      return { state: "refused", errcode: 0, error: "no KF app configured", followUps: [refusalOf(job, 0, "no KF app configured", "the gateway has no app with kf: true, so it cannot call kf/send_msg")] };
    }
    return this.#message(entry, job, address, creds);
  }

  async #message(entry: OutboxEntry, job: AgentMessageJob, to: KfAddress, creds: WeComCredentials): Promise<SendResult> {
    let bodies: Record<string, unknown>[];
    try {
      bodies = await this.#bodies(job, creds);
    } catch (e) {
      // an agent's file that cannot be sent: nothing reached WeCom, the budget is given back
      if (isFinalFailure(e)) await this.#refund(to, job, job.allowedParts ?? 1);
      throw e;
    }
    const allowed = Math.min(job.allowedParts ?? bodies.length, bodies.length);
    for (let i = 0; i < allowed; i++) {
      const msgid = wecomMsgId(this.#salt, entry.id, i);
      try {
        await this.#ctx.wecom.kfSendMsg(creds, { touser: to.externalUserId, open_kfid: to.openKfId, msgid, ...bodies[i] });
      } catch (e) {
        if (e instanceof WeComApiError && isRepeatedMsgId(e)) continue; // ours (the salt), so sent before: a crash, a lost answer, a replayed dead letter
        if (e instanceof WeComApiError && e.kind === "final") {
          await this.#learn(to, e.errcode, creds);
          if (e.errcode !== 95001) await this.#refund(to, job, allowed - i);
          const sent = i > 0 ? ` (parts 1-${i} of ${bodies.length} were sent)` : "";
          return { state: "refused", errcode: e.errcode, error: e.message, followUps: [refusalOf(job, e.errcode, e.message, `${refusalReason(e.errcode)}${sent}`)] };
        }
        throw e;
      }
    }
    if (allowed < bodies.length) {
      const reason = `parts ${allowed + 1}-${bodies.length} of ${bodies.length} did not fit the 5-message budget after the customer's last message`;
      return { state: "refused", errcode: 95001, error: reason, followUps: [refusalOf(job, 95001, "send msg count limit", reason)] };
    }
    return { state: "done" };
  }

  /** The kf/send_msg bodies (without touser, open_kfid and msgid) of an agent's message. */
  async #bodies(job: AgentMessageJob, creds: WeComCredentials): Promise<Record<string, unknown>[]> {
    const { MsgType: type, Content: content, Tag: tag } = job.body;
    switch (type) {
      case "text":
        return splitUtf8(content, KF_TEXT_MAX_BYTES).map((part) => ({ msgtype: "text", text: { content: part } }));
      case "image":
      case "voice":
      case "video":
      case "file": {
        const m = await prepareAgentMedia(this.#ctx, type, content, creds);
        return [{ msgtype: m.type, [m.type]: { media_id: m.mediaId } }];
      }
      case "location": {
        const loc: Record<string, unknown> = { latitude: tagNumber(tagValue(tag, "latitude")), longitude: tagNumber(tagValue(tag, "longitude")) };
        const name = str(tagValue(tag, "name"));
        const address = str(tagValue(tag, "address")) ?? (content !== "" ? content : undefined);
        if (name !== undefined) loc.name = name;
        if (address !== undefined) loc.address = address;
        return [{ msgtype: "location", location: loc }];
      }
      case "link": {
        const url = str(tagValue(tag, "url")) ?? content;
        const thumb = await prepareAgentMedia(this.#ctx, "image", String(tagValue(tag, "picUrl")), creds);
        if (thumb.type !== "image") throw new MediaRefusedError("the link's picture (Tag.picUrl) is not a JPG or PNG image of at most 10 MB");
        const link: Record<string, unknown> = { title: str(tagValue(tag, "title")) ?? url, url, thumb_media_id: thumb.mediaId };
        const desc = str(tagValue(tag, "description"));
        if (desc !== undefined) link.desc = desc;
        return [{ msgtype: "link", link }];
      }
      case "miniprogram":
      case "msgmenu":
        return [{ msgtype: type, [type]: tagValue(tag, type) }];
      default:
        throw new WeComApiError("kf/send_msg", 0, `MsgType ${type} cannot be sent to a KF customer`, undefined, "final");
    }
  }

  /** Session operations: claim, hand over, welcome and closing texts. Their refusals are logged, not reported. */
  async #operation(entry: OutboxEntry, job: KfOpJob, creds: WeComCredentials): Promise<SendResult> {
    try {
      if (job.op === "trans") {
        const input: { openKfId: string; externalUserId: string; serviceState: number; servicerUserId?: string } = {
          openKfId: job.openKfId,
          externalUserId: job.externalUserId,
          serviceState: job.serviceState,
        };
        if (job.servicerUserId !== undefined) input.servicerUserId = job.servicerUserId;
        await this.#ctx.wecom.kfServiceStateTrans(creds, input);
        await this.#setRules(kfAddress(creds.corpId, job.openKfId, job.externalUserId), (s) => {
          // a claim that lands after a handoff was stored does not undo the handoff (its trans follows)
          if (job.serviceState === 1 && s.serviceState === 3) return s;
          const next: KfRulesState = { ...s, serviceState: job.serviceState };
          if (job.servicerUserId !== undefined) next.servicerUserId = job.servicerUserId;
          return next;
        });
        this.#ctx.log.info("KF session state changed", { outbox: entry.id, serviceState: job.serviceState });
      } else {
        await this.#ctx.wecom.kfSendMsgOnEvent(creds, { code: job.code, msgid: wecomMsgId(this.#salt, entry.id, 0), msgtype: "text", text: { content: job.text } });
        this.#ctx.log.info(`KF ${job.what} text sent`, { outbox: entry.id });
      }
      return { state: "done" };
    } catch (e) {
      if (e instanceof WeComApiError && (e.kind === "final" || isRepeatedMsgId(e))) {
        this.#ctx.log.warn(`KF ${job.op === "trans" ? "service_state/trans" : `${job.what} text`} refused`, { outbox: entry.id, errcode: e.errcode, error: e.message });
        if (job.op === "trans") await this.#refreshState(job.openKfId, job.externalUserId, creds);
        return { state: "done" };
      }
      throw e;
    }
  }

  /**
   * Give back budget charged when the message was queued for parts WeCom never counted, as long
   * as the customer has not written since (a new message renewed the budget anyway).
   */
  async #refund(to: KfAddress, job: AgentMessageJob, parts: number): Promise<void> {
    if (parts <= 0 || job.chargedFor === undefined) return;
    await this.#setRules(formatConversationAddress(to), (s) => (s.customerAt === job.chargedFor ? { ...s, used: Math.max(0, s.used - parts) } : s));
  }

  /** What a refusal tells about the conversation: the state (95018, asked again) or the budget (95001). */
  async #learn(to: KfAddress, errcode: number, creds: WeComCredentials): Promise<void> {
    if (errcode === 95001) await this.#setRules(formatConversationAddress(to), (s) => ({ ...s, used: KF_BUDGET }));
    if (errcode === 95018) await this.#refreshState(to.openKfId, to.externalUserId, creds);
  }

  /**
   * Ask WeCom for the session's state (`service_state/get`) and remember it. When WeCom cannot
   * tell, the state becomes unknown (sends are allowed and WeCom's answer decides) rather than
   * stay one the gateway assumed.
   */
  async #refreshState(openKfId: string, externalUserId: string, creds: WeComCredentials): Promise<void> {
    let st: { serviceState: number; servicerUserId?: string } | undefined;
    try {
      st = await this.#ctx.wecom.kfServiceStateGet(creds, openKfId, externalUserId);
    } catch (e) {
      this.#ctx.log.warn("KF service_state/get failed", { error: (e as Error).message });
    }
    await this.#setRules(kfAddress(creds.corpId, openKfId, externalUserId), (s) => {
      const { serviceState: _, servicerUserId: __, ...rest } = s;
      if (st === undefined) return rest;
      const next: KfRulesState = { ...rest, serviceState: st.serviceState };
      if (st.servicerUserId !== undefined) next.servicerUserId = st.servicerUserId;
      return next;
    });
  }

  /**
   * The entry is given up (a dead letter): a handoff whose `service_state/trans` never went
   * through must not leave the session marked as a WeCom servicer's (the 全媒体 would be refused
   * for nothing), so the state is asked again.
   */
  async gaveUp(entry: OutboxEntry): Promise<void> {
    const job = entry.payload as KfJob;
    const creds = this.#ctx.credentials("kf");
    if (job.op === "trans" && creds !== undefined) await this.#refreshState(job.openKfId, job.externalUserId, creds);
  }

  async #setRules(address: string, change: (s: KfRulesState) => KfRulesState): Promise<void> {
    const now = this.#ctx.now();
    await this.#ctx.store.updateState(this.#ctx.tenant, kfRulesKey(address), address, now, (cur) => {
      const next = change((cur as KfRulesState | undefined) ?? { used: 0 });
      return { value: next, expiresAt: kfRulesExpiry(next, now) };
    });
  }
}
