/**
 * What the KF messages the puller stores mean for the outbound half: the conversation's sending
 * rules (a customer's message renews the 48-hour window and the budget; session events change the
 * state), a new session claimed for the API (`kf.claimSessions`: `service_state/trans` to 1), the
 * `kf.welcomeText` on enter_session and the `kf.closingText` when a session ends (their codes are
 * valid 20 s), and WeCom's `msg_send_fail` reports of our own messages, told to the 全媒体.
 *
 * Runs after each stored page, before the next one. Entries it queues carry idempotency keys
 * derived from the item, so that observing an item twice queues nothing twice.
 * @module
 */
import type { KfMessage } from "../../model.js";
import type { OutboxInsert } from "../../store/types.js";
import { outboundKeyKeepMs } from "../retention.js";
import { isNewSession, type KfRulesState, kfRulesExpiry, kfRulesKey, observeKf } from "./kf-rules.js";
import { entryOfMsgId, msgIdSalt } from "./kf.js";
import { type AgentMessageJob, failureNotice, type KfJob, messageRef, type OutboundContext } from "./types.js";

/** What WeCom's msg_send_fail `fail_type` means, for the agent. */
export const KF_FAIL_TYPES: Readonly<Record<number, string>> = {
  0: "WeCom could not deliver it (unknown reason)",
  1: "the KF account was deleted",
  2: "the app was closed",
  4: "the session expired (more than 48 hours after the customer's message)",
  5: "the session was closed",
  6: "more than 5 messages after the customer's message",
  7: "the KF account has no Channels (视频号) account bound",
  8: "the corp is not verified",
  9: "no Channels account bound and the corp not verified",
  10: "the customer refuses messages",
  11: "no member is logged in to receive",
  12: "the message type is banned",
};

/** Observe stored KF items, in order (see the module comment). */
export async function observeKfStored(ctx: OutboundContext, messages: readonly KfMessage[]): Promise<void> {
  const cfg = ctx.config.kf;
  for (const m of messages) {
    if (m.externalUserId === undefined) continue;
    const address = m.conversationId;
    const now = ctx.now();
    let before: KfRulesState | undefined;
    const after = (await ctx.store.updateState(ctx.tenant, kfRulesKey(address), address, now, (cur) => {
      before = cur as KfRulesState | undefined;
      const next = observeKf(before, m);
      return next === undefined ? undefined : { value: next, expiresAt: kfRulesExpiry(next, now) };
    })) as KfRulesState | undefined;
    const queue: { key: string; entry: OutboxInsert }[] = [];
    if (cfg.claimSessions && isNewSession(before, after)) {
      const job: KfJob = { op: "trans", openKfId: m.openKfId, externalUserId: m.externalUserId, serviceState: 1 };
      queue.push({ key: `claim:${m.id}`, entry: { kind: "kf_send", conversationId: address, payload: job } });
    }
    const c = m.content;
    if (c.type === "event") {
      const e = c.event;
      if (e.name === "enter_session" && e.welcomeCode !== undefined && cfg.welcomeText !== undefined) {
        const job: KfJob = { op: "on_event", code: e.welcomeCode, text: cfg.welcomeText, what: "welcome" };
        queue.push({ key: `welcome:${m.id}`, entry: { kind: "kf_send", conversationId: address, payload: job } });
      }
      if (e.name === "session_status_change" && e.changeType === 3 && e.msgCode !== undefined && cfg.closingText !== undefined) {
        const job: KfJob = { op: "on_event", code: e.msgCode, text: cfg.closingText, what: "closing" };
        queue.push({ key: `closing:${m.id}`, entry: { kind: "kf_send", conversationId: address, payload: job } });
      }
      if (e.name === "msg_send_fail") {
        const notice = await failNotice(ctx, address, e.failMsgId, e.failType);
        if (notice !== undefined) queue.push({ key: `fail:${m.id}`, entry: notice });
      }
    }
    for (const q of queue) {
      await ctx.store.acceptOutbound({ tenant: ctx.tenant, keys: [{ key: `kf:${q.key}`, expiresAt: now + outboundKeyKeepMs(ctx.config) }], entries: [q.entry], now });
    }
  }
}

/** The notice of a msg_send_fail for one of our messages (undefined for a message the gateway did not send). */
async function failNotice(ctx: OutboundContext, address: string, failMsgId: string, failType: number): Promise<OutboxInsert | undefined> {
  const id = entryOfMsgId(await msgIdSalt(ctx), failMsgId);
  const entry = id === undefined ? undefined : await ctx.store.getOutbox(id);
  const job = entry?.kind === "kf_send" ? (entry.payload as KfJob) : undefined;
  if (job === undefined || job.op !== "message") {
    ctx.log.info("msg_send_fail for a message the gateway did not send", { conversation: address });
    return undefined;
  }
  const body = (job as AgentMessageJob).body;
  const reason = KF_FAIL_TYPES[failType] ?? `WeCom could not deliver it (fail_type ${failType})`;
  return failureNotice(address, body.ServiceId, "send_failed", { errcode: 0, errmsg: `msg_send_fail fail_type ${failType}`, reason, ref: messageRef(body) });
}
