/**
 * What the store tests write, for any engine: ingest items built from real fixtures, retention
 * cutoffs, and a reproducible mix of messages over channels, conversations and clock skews.
 */
import fc from "fast-check";
import { decodeAppXml } from "../../src/index.js";
import { messageItem } from "../../src/gateway/pipeline.js";
import { CHANNELS, type Channel, type UnifiedMessage } from "../../src/model.js";
import type { IngestItem, PruneCutoffs, Store } from "../../src/store/types.js";
import { fixture } from "../helpers.js";

/** The tenant (CorpID) of the fixtures. */
export const TENANT = "ww1436e0e65a779aee";
/** An hour and a day, ms. */
export const HOUR = 3_600_000;
export const DAY = 24 * HOUR;
/** The clock of the conformance tests (every `now` is passed explicitly). */
export const T0 = Date.UTC(2026, 0, 10);

const text = (): UnifiedMessage => decodeAppXml(fixture("app", "msg-text.xml"), { corpId: TENANT });
const image = (): UnifiedMessage => decodeAppXml(fixture("app", "msg-image.xml"), { corpId: TENANT });

/** A text message item (one omni entry) of a conversation, with a message time. */
export function textItem(id: string, conversation = "c1", options: { channel?: Channel; time?: number; tenant?: string } = {}): IngestItem {
  const m = { ...text(), id, conversationId: conversation, ...(options.channel ? { channel: options.channel } : {}), ...(options.time !== undefined ? { time: options.time } : {}) };
  if (m.channel === "kf") Object.assign(m, { externalUserId: `wm-${conversation}` });
  return messageItem(options.tenant ?? TENANT, m as UnifiedMessage, { kind: "wecom", app: "support" });
}

/** An image message item: a media entry (no conversation) and an omni entry. */
export function imageItem(id: string, conversation = "c1"): IngestItem {
  return messageItem(TENANT, { ...image(), id, conversationId: conversation }, { kind: "wecom", app: "support" });
}

/** An item recorded without a message (a skipped one). */
export function skipItem(key: string, channel: Channel = "kf", tenant = TENANT): IngestItem {
  return { tenant, channel, key, skipReason: "kf_history" };
}

/** The same time for every channel. */
export function everyChannel(t: number): Record<Channel, number> {
  return Object.fromEntries(CHANNELS.map((c) => [c, t])) as Record<Channel, number>;
}

/** Cutoffs that remove everything older than `t` (every kind). */
export function cutoffsAt(t: number): PruneCutoffs {
  return { messagesBefore: everyChannel(t), ledgerBefore: everyChannel(t), archiveBefore: t, mediaBefore: t, outboxBefore: t, stateBefore: t, auditBefore: t };
}

/** Cutoffs that remove nothing (everything is newer than the epoch). */
export function nothing(): PruneCutoffs {
  return cutoffsAt(Number.MIN_SAFE_INTEGER);
}

/**
 * Ingest `n` messages, one every 6 minutes from {@link T0} (each with the clock at its receipt),
 * stored within seconds of their time except some: hours or days later (history, late records)
 * or earlier (a skewed clock). Four channels, 17 conversations each. `onEach` runs after every
 * ingest (a caller may read in between, as the admin does).
 */
export async function ingestMixed(s: Store, n: number, seed: number, onEach?: (i: number) => Promise<unknown>): Promise<void> {
  const rnd = fc.sample(fc.integer({ min: 0, max: 1_000_000 }), { numRuns: n * 3, seed });
  for (let i = 0; i < n; i++) {
    const [a, b, c] = [rnd[i * 3] as number, rnd[i * 3 + 1] as number, rnd[i * 3 + 2] as number];
    const receivedAt = T0 + i * 6 * 60_000 + (a % 1000);
    const skew = a % 10 === 0 ? ((b % 80) - 20) * HOUR : a % 7 === 0 ? -(a % 500_000) : a % 5000;
    const channel = (["app", "kf", "bot", "archive"] as const)[c % 4];
    const conv = `${channel}-${b % 17}`;
    const m = { ...text(), id: `m${i}`, channel, conversationId: conv, time: receivedAt - skew };
    if (channel === "kf") Object.assign(m, { externalUserId: `wm-${conv}` });
    await s.ingest([messageItem(TENANT, m as UnifiedMessage, { kind: "none" })], undefined, receivedAt);
    await onEach?.(i);
  }
}
