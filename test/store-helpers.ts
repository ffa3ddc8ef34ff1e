/**
 * Helpers of the SQLite store tests: fresh SQLite files, and an oracle that recomputes by full
 * scans of the tables what the store keeps incrementally (outbox counts, conversation
 * summaries). The items and cutoffs they write are the conformance suite's (any engine).
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "vitest";
import { SqliteStore } from "../src/store/sqlite/index.js";
import type { ConversationSummary, OutboxState } from "../src/store/types.js";

export { cutoffsAt, everyChannel, imageItem, nothing, TENANT, textItem } from "./conformance/items.js";

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
