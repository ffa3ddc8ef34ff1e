/**
 * Helpers of the store tests: fresh SQLite files, ingest items, and an oracle that recomputes by
 * full scans what the store keeps incrementally (outbox counts, conversation summaries).
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "vitest";
import { decodeAppXml } from "../src/index.js";
import { messageItem } from "../src/gateway/pipeline.js";
import { CHANNELS, type Channel, type UnifiedMessage } from "../src/model.js";
import { SqliteStore } from "../src/store/sqlite/index.js";
import type { ConversationSummary, IngestItem, OutboxState, PruneCutoffs } from "../src/store/types.js";
import { fixture } from "./helpers.js";

export const TENANT = "ww1436e0e65a779aee";

/** A path for a new database file in a fresh temp folder. */
export function dbPath(): string {
  return join(mkdtempSync(join(tmpdir(), "wb-store-")), "bridge.db");
}

/** Stores opened through {@link openStore}, closed by {@link closeAll}. */
const opened: SqliteStore[] = [];

/** Open a store on `path` (a new file by default). */
export async function openStore(path = dbPath(), owner = false): Promise<SqliteStore> {
  const s = await SqliteStore.open({ path, owner });
  opened.push(s);
  return s;
}

/** Close every store opened by {@link openStore}. */
export async function closeAll(): Promise<void> {
  for (const s of opened.splice(0)) await s.close();
}

const text = (): UnifiedMessage => decodeAppXml(fixture("app", "msg-text.xml"), { corpId: TENANT });
const image = (): UnifiedMessage => decodeAppXml(fixture("app", "msg-image.xml"), { corpId: TENANT });

/** A text message item (one omni entry) of a conversation, with a message time. */
export function textItem(id: string, conversation = "c1", options: { channel?: Channel; time?: number; tenant?: string } = {}): IngestItem {
  const m = { ...text(), id, conversationId: conversation, ...(options.channel ? { channel: options.channel } : {}), ...(options.time !== undefined ? { time: options.time } : {}) };
  if (m.channel === "kf") Object.assign(m, { externalUserId: `wm-${conversation}` });
  return messageItem(options.tenant ?? TENANT, m as UnifiedMessage, { kind: "wecom", app: "support" });
}

/** An image message item: a media entry and an omni entry. */
export function imageItem(id: string, conversation = "c1"): IngestItem {
  return messageItem(TENANT, { ...image(), id, conversationId: conversation }, { kind: "wecom", app: "support" });
}

/** The same time for every channel. */
export function everyChannel(t: number): Record<Channel, number> {
  return Object.fromEntries(CHANNELS.map((c) => [c, t])) as Record<Channel, number>;
}

/** Cutoffs that remove everything older than `t` (every kind). */
export function cutoffsAt(t: number): PruneCutoffs {
  return { messagesBefore: everyChannel(t), ledgerBefore: everyChannel(t), archiveBefore: t, mediaBefore: t, outboxBefore: t, stateBefore: t };
}

/** Cutoffs that remove nothing (everything is newer than the epoch). */
export function nothing(): PruneCutoffs {
  return cutoffsAt(Number.MIN_SAFE_INTEGER);
}

/** What the store keeps incrementally, recomputed from the rows themselves. */
export function oracle(s: SqliteStore): { counts: Record<OutboxState, number>; conversations: ConversationSummary[] } {
  const counts: Record<OutboxState, number> = { pending: 0, inflight: 0, done: 0, dead: 0, refused: 0 };
  for (const r of s.db.prepare("SELECT state, count(*) AS n FROM outbox GROUP BY state").all() as { state: OutboxState; n: number }[]) counts[r.state] = r.n;
  const conversations = s.db
    .prepare(
      `SELECT tenant, conversation_id AS conversationId, channel, count(*) AS messages, max(time) AS lastTime, max(seq) AS lastSeq
       FROM messages GROUP BY tenant, conversation_id, channel ORDER BY lastSeq DESC`,
    )
    .all() as ConversationSummary[];
  return { counts, conversations };
}

/** Check the store's counts and summaries (as `s` reads them) against {@link oracle}. */
export async function expectMatchesOracle(s: SqliteStore): Promise<void> {
  const o = oracle(s);
  expect(await s.outboxCounts(), "outbox counts").toEqual(o.counts);
  expect(await s.listConversations({ limit: 10_000 }), "conversation summaries").toEqual(o.conversations);
}
