/**
 * What stored KF items mean for the outbound half.
 *
 * With the item, in its ingest transaction ({@link kfInbound}): the conversation's sending rules
 * (a customer's message renews the 48-hour window and the budget; session events change the
 * state; a handoff to a WeCom servicer marks the session taken at once), a new session claimed for
 * the API (`kf.claimSessions`: `service_state/trans` to 1), the `kf.welcomeText` on enter_session
 * and the `kf.closingText` when a session ends (their codes are valid 20 s). So a 全媒体 answer that
 * comes right after the customer's message already sees the renewed rules.
 *
 * After the page is stored ({@link observeKfStored}): WeCom's `msg_send_fail` reports of our own
 * messages, told to the 全媒体, their entries marked `refused`.
 * @module
 */
import type { Config } from "../../config.js";
import type { KfMessage, UnifiedMessage } from "../../model.js";
import type { IngestEffect, OutboxInsert } from "../../store/types.js";
import { asksForHuman } from "../handoff.js";
import { isNewSession, KF_BUDGET, type KfRulesState, kfRulesExpiry, kfRulesKey, observeKf } from "./kf-rules.js";
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

/** fail_type 6: over the 5-message budget. */
const FAIL_OVER_BUDGET = 6;

/** The outbox entries and the rules change a stored KF item brings (see the module comment). */
export function kfInbound(config: Pick<Config, "kf" | "handoff">, m: UnifiedMessage): { entries: OutboxInsert[]; effect?: IngestEffect } {
  if (m.channel !== "kf" || m.externalUserId === undefined) return { entries: [] };
  const entries: OutboxInsert[] = [];
  const address = m.conversationId;
  const c = m.content;
  if (c.type === "event") {
    const e = c.event;
    if (e.name === "enter_session" && e.welcomeCode !== undefined && config.kf.welcomeText !== undefined) {
      entries.push({ kind: "kf_send", conversationId: address, payload: { op: "on_event", code: e.welcomeCode, text: config.kf.welcomeText, what: "welcome" } satisfies KfJob });
    }
    if (e.name === "session_status_change" && e.changeType === 3 && e.msgCode !== undefined && config.kf.closingText !== undefined) {
      entries.push({ kind: "kf_send", conversationId: address, payload: { op: "on_event", code: e.msgCode, text: config.kf.closingText, what: "closing" } satisfies KfJob });
    }
  }
  const servicer = config.handoff.toWeComServicer;
  const handedOver = servicer !== undefined && asksForHuman(config.handoff, m);
  const overBudget = c.type === "event" && c.event.name === "msg_send_fail" && c.event.failType === FAIL_OVER_BUDGET;
  const externalUserId = m.externalUserId;
  const effect: IngestEffect = {
    key: kfRulesKey(address),
    conversationId: address,
    apply: (current) => {
      const before = current as KfRulesState | undefined;
      let next = observeKf(before, m);
      const out: OutboxInsert[] = [];
      if (config.kf.claimSessions && !handedOver && isNewSession(before, next)) {
        out.push({ kind: "kf_send", conversationId: address, payload: { op: "trans", openKfId: m.openKfId, externalUserId, serviceState: 1 } satisfies KfJob });
      }
      // the handoff's service_state/trans follows in the lane; from now on the 全媒体 is refused
      if (handedOver) next = { ...(next ?? before ?? { used: 0 }), serviceState: 3, servicerUserId: servicer };
      if (overBudget) next = { ...(next ?? before ?? { used: 0 }), used: KF_BUDGET };
      const now = m.time;
      return { entries: out, ...(next !== undefined ? { state: { value: next, expiresAt: kfRulesExpiry(next, now) } } : {}) };
    },
  };
  return { entries, effect };
}

/** Observe stored KF items after their page is stored: `msg_send_fail` of our own messages. */
export async function observeKfStored(ctx: OutboundContext, messages: readonly KfMessage[]): Promise<void> {
  for (const m of messages) {
    const c = m.content;
    if (m.externalUserId === undefined || c.type !== "event" || c.event.name !== "msg_send_fail") continue;
    await reportSendFail(ctx, m.conversationId, c.event.failMsgId, c.event.failType, m.id);
  }
}

/** Tell the 全媒体 that WeCom could not deliver one of our messages, and mark its entry refused. */
async function reportSendFail(ctx: OutboundContext, address: string, failMsgId: string, failType: number, itemId: string): Promise<void> {
  const id = entryOfMsgId(await msgIdSalt(ctx), failMsgId);
  const entry = id === undefined ? undefined : await ctx.store.getOutbox(id);
  const job = entry?.kind === "kf_send" ? (entry.payload as KfJob) : undefined;
  if (entry === undefined || job === undefined || job.op !== "message") {
    ctx.log.info("msg_send_fail for a message the gateway did not send", { conversation: address });
    return;
  }
  const body = (job as AgentMessageJob).body;
  const reason = KF_FAIL_TYPES[failType] ?? `WeCom could not deliver it (fail_type ${failType})`;
  const errmsg = `msg_send_fail fail_type ${failType}`;
  const now = ctx.now();
  await ctx.store.refuseDelivered(entry.id, 0, `${errmsg}: ${reason}`, now);
  const notice = failureNotice(address, body.ServiceId, "send_failed", { errcode: 0, errmsg, reason, ref: messageRef(body) });
  // keyed by the event's item: observing it twice tells the 全媒体 once
  await ctx.store.acceptOutbound({ tenant: ctx.tenant, keys: [{ key: `kf:fail:${itemId}`, expiresAt: now + 7 * 86_400_000 }], entries: [notice], now });
}
