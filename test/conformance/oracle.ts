/**
 * Engine-neutral oracles: what a store keeps incrementally (outbox counts, conversation
 * summaries, pages) recomputed from its own full listings, and small drivers of the outbox.
 */
import { expect } from "vitest";
import type { Channel } from "../../src/model.js";
import type { ConversationSummary, IngestItem, MessageFilter, OutboxEntry, OutboxKind, OutboxState, Store, StoredMessage } from "../../src/store/types.js";
import { TENANT, textItem } from "./items.js";

/** Every outbox state. */
export const ALL_STATES: OutboxState[] = ["pending", "inflight", "done", "dead", "refused"];
/** A page size larger than anything a test writes. */
export const ALL = 1_000_000;
/** The lease of claims that should not run out during a test. */
export const LEASE = 60_000;

/** Every outbox entry, newest first. */
export async function allOutbox(s: Store): Promise<OutboxEntry[]> {
  return s.listOutbox(ALL_STATES, { limit: ALL });
}

/** Every message, newest first. */
export async function allMessages(s: Store): Promise<StoredMessage[]> {
  return s.listMessages({}, { limit: ALL });
}

/** The sorted keys of every stored message. */
export async function messageKeys(s: Store): Promise<string[]> {
  return (await allMessages(s)).map((m) => m.key).sort();
}

/** Conversation summaries computed from messages (newest last message first). */
export function summarize(messages: StoredMessage[]): ConversationSummary[] {
  const groups = new Map<string, ConversationSummary>();
  for (const m of messages) {
    const k = `${m.tenant}\u0000${m.conversationId}\u0000${m.channel}`;
    const g = groups.get(k);
    if (g === undefined) groups.set(k, { tenant: m.tenant, conversationId: m.conversationId, channel: m.channel, messages: 1, lastTime: m.time, lastSeq: m.seq });
    else {
      g.messages++;
      g.lastTime = Math.max(g.lastTime, m.time);
      g.lastSeq = Math.max(g.lastSeq, m.seq);
    }
  }
  return [...groups.values()].sort((a, b) => b.lastSeq - a.lastSeq);
}

/** Outbox counts by state, tallied from entries. */
export function tally(entries: OutboxEntry[]): Record<OutboxState, number> {
  const counts: Record<OutboxState, number> = { pending: 0, inflight: 0, done: 0, dead: 0, refused: 0 };
  for (const e of entries) counts[e.state]++;
  return counts;
}

/** Full listings are newest first without repeats; counts and summaries agree with them. */
export async function expectConsistent(s: Store): Promise<void> {
  const entries = await allOutbox(s);
  expect(entries.every((e, i) => i === 0 || (entries[i - 1] as OutboxEntry).id > e.id), "outbox listed by id, newest first, once each").toBe(true);
  expect(await s.outboxCounts(), "outbox counts").toEqual(tally(entries));
  const messages = await allMessages(s);
  expect(messages.every((m, i) => i === 0 || (messages[i - 1] as StoredMessage).seq > m.seq), "messages listed by seq, newest first, once each").toBe(true);
  expect(await s.listConversations({ limit: ALL }), "conversation summaries").toEqual(summarize(messages));
}

/** Read a listing page after page (`key` gives an item's paging key) until a short page. */
export async function pages<T>(read: (before: number | undefined) => Promise<T[]>, size: number, key: (item: T) => number): Promise<T[]> {
  const got: T[] = [];
  let before: number | undefined;
  for (;;) {
    const page = await read(before);
    expect(page.length).toBeLessThanOrEqual(size);
    got.push(...page);
    if (page.length < size) return got;
    before = key(page[size - 1] as T);
  }
}

/** The seqs of `listMessages(filter)` read in pages of `size`. */
export async function pagedSeqs(s: Store, filter: MessageFilter, size: number): Promise<number[]> {
  const got = await pages((before) => s.listMessages(filter, before === undefined ? { limit: size } : { limit: size, before }), size, (m) => m.seq);
  return got.map((m) => m.seq);
}

/** The conversation ids of `listConversations` read in pages of `size`. */
export async function pagedConversations(s: Store, size: number, filter: { tenant?: string; channel?: Channel } = {}): Promise<string[]> {
  const got = await pages((before) => s.listConversations({ limit: size, ...filter, ...(before === undefined ? {} : { before }) }), size, (c) => c.lastSeq);
  return got.map((c) => c.conversationId);
}

/** The lane of an entry (null: it has none). */
export function lane(e: OutboxEntry): string | null {
  return e.conversationId === null ? null : `${e.tenant}/${e.kind}/${e.conversationId}`;
}

/**
 * Claim and finish (done, at `now`) everything claimable of these kinds until nothing is left,
 * checking that a claim never holds two entries of one lane; returns the entries in claim order.
 */
export async function deliverAll(s: Store, now: number, kinds: OutboxKind[] = ["omni", "media"]): Promise<OutboxEntry[]> {
  const order: OutboxEntry[] = [];
  for (;;) {
    const claimed = await s.claimOutbox(kinds, now, 1000, LEASE);
    if (claimed.length === 0) return order;
    const lanes = claimed.map(lane).filter((l) => l !== null);
    expect(new Set(lanes).size, "never two entries of one lane in flight").toBe(lanes.length);
    for (const e of claimed) await s.finishOutbox(e.id, { state: "done" }, now);
    order.push(...claimed);
  }
}

/** The message key of an entry. */
export async function keyOf(s: Store, e: OutboxEntry): Promise<string> {
  return (await s.getMessage(e.messageSeq as number))?.key as string;
}

/**
 * Deliver (claim, finish done at `now`) the omni entries of one conversation until none is left,
 * checking that each claim holds one entry; returns their message keys in delivery order.
 */
export async function deliverInOrder(s: Store, now: number): Promise<string[]> {
  const order: string[] = [];
  for (;;) {
    const claimed = await s.claimOutbox(["omni"], now, 10, LEASE);
    if (claimed.length === 0) return order;
    expect(claimed, "never two at once in one conversation").toHaveLength(1);
    const e = claimed[0] as OutboxEntry;
    order.push(await keyOf(s, e));
    await s.finishOutbox(e.id, { state: "done" }, now);
  }
}

/** Claim every claimable omni entry; returns them by message seq. */
export async function claimOmni(s: Store, now: number): Promise<Map<number, OutboxEntry>> {
  return new Map((await s.claimOutbox(["omni"], now, 1000, LEASE)).map((e) => [e.messageSeq as number, e]));
}

/** Ingest one item that must be new; returns its seq. */
export async function seqOf(s: Store, item: IngestItem, now: number): Promise<number> {
  const [r] = await s.ingest([item], undefined, now);
  expect(r?.stored).toBe(true);
  return r?.seq as number;
}

/** The entries of a message (by seq), oldest first, from a full listing. */
export async function entriesOf(s: Store, seq: number): Promise<OutboxEntry[]> {
  return (await allOutbox(s)).filter((e) => e.messageSeq === seq).sort((a, b) => a.id - b.id);
}

/**
 * Which ledger keys the store knows, seen the only way the interface shows them: an item with a
 * known key is not stored again. The probe records the unknown ones (as skipped items), so it
 * comes last in a test.
 */
export async function knownKeys(s: Store, keys: { key: string; channel: Channel; tenant?: string }[], now: number): Promise<string[]> {
  const r = await s.ingest(
    keys.map((k) => ({ tenant: k.tenant ?? TENANT, channel: k.channel, key: k.key, skipReason: "probe" })),
    undefined,
    now,
  );
  return keys.filter((_, i) => r[i]?.stored === false).map((k) => k.key);
}

/** Ingest `n` messages (one conversation each) at `at`, and make their entries dead. */
export async function withDead(s: Store, n: number, at: number, prefix: string): Promise<void> {
  await s.ingest(
    Array.from({ length: n }, (_, i) => textItem(`${prefix}${i}`, `${prefix}-conv-${i}`)),
    undefined,
    at,
  );
  for (const e of await s.claimOutbox(["omni"], at, 10_000, LEASE)) await s.finishOutbox(e.id, { state: "dead", error: "x" }, at);
}
