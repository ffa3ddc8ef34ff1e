/**
 * Human handoff. The human agents live in the 全媒体: a customer message equal (after trimming) to
 * one of `handoff.keywords`, or a KF menu click with id `handoff.menuId`, sends the 全媒体
 * `MsgType: "event.CLICK.RG"` (Content `""`) for that conversation, after the message itself, as
 * the vendor's own web client does. With `handoff.toWeComServicer`, a KF session is handed to that
 * WeCom servicer instead of the 全媒体 (`service_state/trans` to 3, no event); from then on the 全媒体's messages for it
 * are refused (30009), since WeCom refuses API messages in that state.
 * @module
 */
import type { Config } from "../config.js";
import type { UnifiedMessage } from "../model.js";
import type { OutboxInsert } from "../store/types.js";
import type { KfJob, OmniNoticeJob } from "./outbound/types.js";

/** The MsgType that asks the 全媒体 for a human agent. */
export const HANDOFF_MSG_TYPE = "event.CLICK.RG";

/** True when a customer's message asks for a human agent under this configuration. */
export function asksForHuman(handoff: Config["handoff"], m: UnifiedMessage): boolean {
  if (m.channel !== "kf" && m.channel !== "app" && m.channel !== "bot") return false;
  if (m.channel === "kf" && m.origin !== "customer") return false;
  if (m.content.type !== "text") return false;
  if (m.channel === "kf" && handoff.menuId !== undefined && m.content.menuId === handoff.menuId) return true;
  const said = m.content.text.trim();
  return handoff.keywords.some((k) => k.trim() === said);
}

/** The outbox entries a handoff adds to the message's own (in the same transaction, after them). */
export function handoffEntries(handoff: Config["handoff"], m: UnifiedMessage): OutboxInsert[] {
  if (!asksForHuman(handoff, m)) return [];
  if (m.channel === "kf" && handoff.toWeComServicer !== undefined && m.externalUserId !== undefined) {
    const job: KfJob = { op: "trans", openKfId: m.openKfId, externalUserId: m.externalUserId, serviceState: 3, servicerUserId: handoff.toWeComServicer };
    return [{ kind: "kf_send", conversationId: m.conversationId, payload: job }];
  }
  const notice: OmniNoticeJob = { notice: { FromUserId: m.conversationId, MsgType: HANDOFF_MSG_TYPE, Content: "" } };
  return [{ kind: "omni", conversationId: m.conversationId, payload: notice }];
}
