/**
 * Running an outbound entry (`kf_send`, `app_send`, `bot_reply`) with its channel's sender, and
 * recording what became of it: done, refused (WeCom's rule: final, the 全媒体 told), later
 * (pacing: not an attempt), or, on a failure, a refusal for a final answer and a dead letter
 * (the 全媒体 told too) after `delivery.maxAttempts`; anything else is the worker's retry.
 * @module
 */
import { WeComApiError } from "../../clients/wecom.js";
import type { Logger } from "../../log.js";
import type { OutboxEntry, Store } from "../../store/types.js";
import type { Metrics } from "../metrics.js";
import { type AgentMessageJob, isFinalFailure, refusalOf, refusalReason, type Sender, type SendResult } from "./types.js";

/** What the dispatch needs of the outbox worker. */
export interface DispatchDeps {
  store: Store;
  log: Logger;
  metrics: Metrics | undefined;
  now: () => number;
  /** Lease of a claimed entry, ms. */
  leaseMs: number;
  /** Attempts before a dead letter. */
  maxAttempts: number;
  /** Wake the worker (a notice was queued). */
  notify: () => void;
  onAttempt: ((entry: OutboxEntry, outcome: "done" | "retry" | "dead" | "wait" | "refused" | "later", error?: string) => void) | undefined;
}

/**
 * Renew a claimed entry's lease every third of it while its attempt runs (any kind: an agent's
 * 20 MB file, a slow media download), so that no other worker or replica claims it meanwhile;
 * returns the function that stops renewing.
 */
export function keepLease(d: Pick<DispatchDeps, "store" | "now" | "leaseMs" | "log">, entry: OutboxEntry): () => void {
  const renew = setInterval(() => {
    const now = d.now();
    d.store.renewLease(entry, now + d.leaseMs, now).catch((e: unknown) => d.log.warn("lease not renewed", { outbox: entry.id, error: (e as Error).message }));
  }, Math.max(1000, Math.floor(d.leaseMs / 3)));
  renew.unref();
  return () => clearInterval(renew);
}

/**
 * Run an outbound entry with its sender and record what it made of it. A long attempt (an
 * agent's 20 MB file, a slow upload) renews its lease every third of it, so that the entry is
 * never claimed again while it runs. A thrown failure is the caller's (see {@link outboundFailed}).
 */
export async function runOutbound(d: DispatchDeps, entry: OutboxEntry, sender: Sender): Promise<void> {
  const stop = keepLease(d, entry);
  let r: SendResult;
  try {
    r = await sender.send(entry);
  } finally {
    stop();
  }
  const now = d.now();
  const followUps = r.state !== "later" && r.followUps !== undefined && r.followUps.length > 0 ? { tenant: entry.tenant, messageSeq: null, entries: r.followUps } : undefined;
  if (r.state === "done") {
    await d.store.finishOutbox(entry, { state: "done" }, now, followUps);
    d.metrics?.deliveryAttempts.inc({ kind: entry.kind, outcome: "done" });
    d.onAttempt?.(entry, "done");
  } else if (r.state === "refused") {
    await d.store.finishOutbox(entry, { state: "refused", error: r.error, errcode: r.errcode }, now, followUps);
    d.metrics?.deliveryAttempts.inc({ kind: entry.kind, outcome: "refused" });
    d.log.info("outbound refused", { outbox: entry.id, kind: entry.kind, errcode: r.errcode, error: r.error });
    d.onAttempt?.(entry, "refused", r.error);
  } else {
    await d.store.finishOutbox(entry, { state: "pending", nextAttemptAt: r.at, error: r.reason, countAttempt: false }, now);
    d.metrics?.deliveryAttempts.inc({ kind: entry.kind, outcome: "paced" });
    d.onAttempt?.(entry, "later", r.reason);
  }
  if (followUps !== undefined) d.notify();
}

/**
 * An outbound attempt failed: a final answer (WeCom's, or an agent's file that cannot be sent) is
 * a refusal; the last attempt makes a dead letter; both tell the 全媒体. Returns false when the
 * worker should retry with its backoff.
 */
export async function outboundFailed(d: DispatchDeps, entry: OutboxEntry, e: unknown, error: string, sender?: Sender): Promise<boolean> {
  const job = entry.payload as AgentMessageJob;
  const isMessage = job?.op === "message";
  const errcode = e instanceof WeComApiError ? e.errcode : 0;
  if (isFinalFailure(e)) {
    const notice = isMessage ? [refusalOf(job, errcode, error, errcode !== 0 ? refusalReason(errcode) : error)] : [];
    await d.store.finishOutbox(entry, { state: "refused", error, errcode }, d.now(), notice.length > 0 ? { tenant: entry.tenant, messageSeq: null, entries: notice } : undefined);
    d.metrics?.deliveryAttempts.inc({ kind: entry.kind, outcome: "refused" });
    d.log.info("outbound refused", { outbox: entry.id, kind: entry.kind, errcode, error });
    d.onAttempt?.(entry, "refused", error);
    if (notice.length > 0) d.notify();
    return true;
  }
  if (entry.attempts >= d.maxAttempts && sender?.gaveUp !== undefined) {
    await sender.gaveUp(entry).catch((err: unknown) => d.log.warn("giving up an entry failed", { outbox: entry.id, error: (err as Error).message }));
  }
  if (entry.attempts >= d.maxAttempts && isMessage) {
    const notice = refusalOf(job, errcode, error, `the gateway gave up after ${entry.attempts} attempts; an operator can replay it (wecom-bridge replay)`);
    await d.store.finishOutbox(entry, { state: "dead", error }, d.now(), { tenant: entry.tenant, messageSeq: null, entries: [notice] });
    d.metrics?.deliveryAttempts.inc({ kind: entry.kind, outcome: "dead" });
    d.log.warn("delivery dead", { outbox: entry.id, kind: entry.kind, attempts: entry.attempts, error });
    d.onAttempt?.(entry, "dead", error);
    d.notify();
    return true;
  }
  return false;
}
