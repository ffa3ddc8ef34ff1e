/**
 * WeCom's KF sending rules, tracked per conversation so that a message WeCom would refuse is
 * refused before it is queued (30009) instead of failing blindly later: the session state
 * (`service_state`: only 0 and 1 may be sent to), the 48-hour window after the customer's last
 * message and the 5-message budget per customer message. The state is kept in the store's shared
 * state (key {@link kfRulesKey}) and follows the customer's messages and the session events as
 * they are stored, the gateway's own `service_state/trans`, and WeCom's refusals.
 * Pure: the functions here decide; the callers read and write the store.
 * @module
 */
import type { KfMessage } from "../../model.js";

/** After a customer's message, the company may send for 48 hours… */
export const KF_SEND_WINDOW_MS = 48 * 3600 * 1000;
/** …at most 5 messages. */
export const KF_BUDGET = 5;

/** What the gateway knows of a KF conversation's sending rights. */
export interface KfRulesState {
  /** service_state as last known: 0 unhandled, 1 smart assistant, 2 pool, 3 WeCom servicer, 4 ended; absent when unknown. */
  serviceState?: number;
  /** The WeCom servicer of state 3. */
  servicerUserId?: string;
  /** When the customer last wrote (ms, WeCom's send_time). */
  customerAt?: number;
  /** Messages charged against the budget since then. */
  used: number;
}

/** The shared-state key of a KF conversation's rules. */
export function kfRulesKey(address: string): string {
  return `kfrules:${address}`;
}

/**
 * How long the rules of a conversation are kept: 30 days after the customer's last message (or
 * the last change). A conversation without rules is one the gateway does not know (30006).
 */
export function kfRulesExpiry(state: KfRulesState, now: number): number {
  return Math.max(now, state.customerAt ?? now) + KF_RULES_KEEP_MS;
}

/** See {@link kfRulesExpiry}. */
export const KF_RULES_KEEP_MS = 30 * 24 * 3600 * 1000;

/** A refusal by a rule: WeCom's errcode and a readable reason. */
export interface KfRuleRefusal {
  errcode: number;
  errmsg: string;
  reason: string;
}

/**
 * Whether `parts` messages may be queued now. Refuses when nothing can be sent (state not 0/1, the
 * window closed, the budget used up); otherwise allows as many parts as the budget has left (the
 * rest of a split text is one refusal, reported when it is sent).
 */
export function decideKfSend(current: KfRulesState | undefined, parts: number, now: number): { refuse: KfRuleRefusal } | { allowed: number; next: KfRulesState } {
  const s: KfRulesState = current ?? { used: 0 };
  if (s.serviceState === 3) {
    return { refuse: { errcode: 95018, errmsg: "send msg session status invalid", reason: "the session is with a WeCom servicer (service_state 3): WeCom refuses API messages in that state" } };
  }
  if (s.serviceState === 2) return { refuse: { errcode: 95018, errmsg: "send msg session status invalid", reason: "the session waits in WeCom's pool (service_state 2)" } };
  if (s.customerAt === undefined) {
    return { refuse: { errcode: 95002, errmsg: "send msg time limit", reason: "the customer has not written (WeCom allows sending only within 48 hours after the customer's message)" } };
  }
  if (now - s.customerAt > KF_SEND_WINDOW_MS) {
    return { refuse: { errcode: 95002, errmsg: "send msg time limit", reason: "the 48-hour window after the customer's last message has closed" } };
  }
  if (s.serviceState === 4) return { refuse: { errcode: 95018, errmsg: "send msg session status invalid", reason: "the session has ended (service_state 4)" } };
  const left = KF_BUDGET - s.used;
  if (left <= 0) {
    return { refuse: { errcode: 95001, errmsg: "send msg count limit", reason: "5 messages were sent since the customer's last message: WeCom allows no more until the customer writes" } };
  }
  const allowed = Math.min(parts, left);
  return { allowed, next: { ...s, used: s.used + allowed } };
}

/** What a stored KF item changes in its conversation's rules (undefined: nothing). */
export function observeKf(current: KfRulesState | undefined, m: KfMessage): KfRulesState | undefined {
  const s: KfRulesState = current ?? { used: 0 };
  const c = m.content;
  if (m.origin === "customer" && c.type !== "event") {
    // a customer's message renews the window and the budget; an ended session starts again at 0
    if (s.customerAt !== undefined && m.time < s.customerAt) return undefined; // an older message (send_time has whole seconds)
    const next: KfRulesState = { ...s, customerAt: m.time, used: 0 };
    if (s.serviceState === 4 || s.serviceState === undefined) next.serviceState = 0;
    return next;
  }
  if (c.type !== "event") return undefined;
  const e = c.event;
  if (e.name === "session_status_change") {
    // 1 taken from the pool, 2 transferred, 4 reopened: a WeCom servicer has it; 3 ended
    if (e.changeType === 3) return { ...s, serviceState: 4 };
    if (e.changeType === 1 || e.changeType === 2 || e.changeType === 4) {
      const next: KfRulesState = { ...s, serviceState: 3 };
      if (e.newServicerUserId !== undefined) next.servicerUserId = e.newServicerUserId;
      return next;
    }
  }
  return undefined;
}

/** True when this stored item starts a session the gateway should claim (state 0 after the customer's message). */
export function isNewSession(before: KfRulesState | undefined, after: KfRulesState | undefined): boolean {
  return after?.serviceState === 0 && before?.serviceState !== 0;
}
