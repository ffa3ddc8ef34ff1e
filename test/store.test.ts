/**
 * What is SQLite's own in the store: its migrations and file, lanes rebuilt from the chains, and
 * the listings' indexes (time blocks, late messages, conversation chunks) at sizes that use them.
 * Every engine-neutral behaviour is in the conformance suite (test/conformance/).
 */
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { MIGRATIONS } from "../src/store/sqlite/migrations.js";
import { ingestMixed } from "./conformance/items.js";
import { expectWindowsMatch, longConversation } from "./conformance/listings.js";
import { deliverInOrder } from "./conformance/oracle.js";
import { closeAll, dbPath, expectMatchesOracle, openStore, TENANT, textItem } from "./store-helpers.js";

afterEach(closeAll);

const appText = () => textItem("x").message as NonNullable<ReturnType<typeof textItem>["message"]>;

describe("migrations", () => {
  it("apply once, in order, and survive a reopen", async () => {
    const path = dbPath();
    const a = await openStore(path);
    expect(a.appliedMigrations()).toEqual(MIGRATIONS.map((m) => m.version));
    await a.close();
    const b = await openStore(path);
    expect(b.appliedMigrations()).toEqual(MIGRATIONS.map((m) => m.version));
  });

  it("every table carries the tenant in its keys", async () => {
    const s = await openStore();
    const tables = s.db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name != 'schema_migrations'").all() as { name: string }[];
    expect(tables.length).toBeGreaterThanOrEqual(7);
    for (const { name } of tables) {
      const keyed = s.db.prepare(`SELECT 1 FROM pragma_index_list('${name}') il, pragma_index_info(il.name) ii WHERE ii.name = 'tenant' AND il."unique" = 1`).all();
      expect(keyed.length, `${name} has a unique key with tenant`).toBeGreaterThan(0);
    }
  });

  it("uses WAL", async () => {
    const s = await openStore();
    expect(s.db.pragma("journal_mode", { simple: true })).toBe("wal");
  });
});

describe("lanes", () => {
  it("are rebuilt from the chains when the store is reopened, a replay from another process included", async () => {
    const path = dbPath();
    const a = await openStore(path);
    await a.ingest([textItem("1", "A"), textItem("2", "A"), textItem("3", "A")]);
    const [first] = await a.claimOutbox(["omni"], Date.now(), 10, 60_000);
    await a.finishOutbox(first?.id as number, { state: "dead", error: "x" }, Date.now());
    await a.close();
    // another process (the replay command) puts the dead letter back
    const tool = await openStore(path);
    expect(await tool.replayDead("all", Date.now())).toBe(1);
    await tool.close();
    const b = await openStore(path);
    await b.ingest([textItem("4", "A")]);
    // the serving process chains a replayed entry at its next claim: after "4"
    expect(await deliverInOrder(b, Date.now() + 1)).toEqual(["2", "3", "4", "1"]);
  });
});

describe("migration 2 on a store written by migration 1", () => {
  it("keeps every row, numbers KF accounts in the order they were seen, and starts counts and summaries from the data", async () => {
    const path = dbPath();
    const v1 = new Database(path);
    v1.exec("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)");
    v1.exec(MIGRATIONS[0]?.sql as string);
    v1.prepare("INSERT INTO schema_migrations VALUES (1, 'v1', 0)").run();
    const msg = v1.prepare("INSERT INTO messages (tenant, channel, key, conversation_id, time, received_at, content_type, body) VALUES (?, 'app', ?, ?, ?, 0, 'text', ?)");
    const m = (key: string, conv: string, time: number) => Number(msg.run(TENANT, key, conv, time, JSON.stringify({ ...appText(), id: key, conversationId: conv, time })).lastInsertRowid);
    const [s1, s2, s3] = [m("1", "A", 3000), m("2", "A", 1000), m("3", "B", 2000)];
    const entry = v1.prepare(
      "INSERT INTO outbox (tenant, kind, conversation_id, message_seq, payload, state, ready, next_attempt_at, created_at, updated_at) VALUES (?, 'omni', ?, ?, '{}', ?, ?, 0, 0, 0)",
    );
    entry.run(TENANT, "A", s1, "done", 0);
    entry.run(TENANT, "A", s2, "dead", 0);
    entry.run(TENANT, "B", s3, "pending", 1);
    const kf = v1.prepare("INSERT INTO kf_cursors (tenant, open_kfid, cursor, first_seen_at, updated_at) VALUES (?, ?, ?, ?, 0)");
    kf.run(TENANT, "wk-b", "CB", 200);
    kf.run(TENANT, "wk-a", null, 300);
    kf.run(TENANT, "wk-c", "CC", 100);
    v1.close();

    const s = await openStore(path);
    expect(s.appliedMigrations()).toEqual([1, 2, 3, 4]);
    expect((await s.listKfCursors({ limit: 10 })).map((c) => [c.id, c.openKfId, c.cursor])).toEqual([
      [3, "wk-a", undefined],
      [2, "wk-b", "CB"],
      [1, "wk-c", "CC"],
    ]);
    expect(await s.outboxCounts()).toEqual({ pending: 1, inflight: 0, done: 1, dead: 1, refused: 0 });
    expect(await s.listConversations({ limit: 10 })).toEqual([
      { tenant: TENANT, conversationId: "B", channel: "app", messages: 1, lastTime: 2000, lastSeq: s3 },
      { tenant: TENANT, conversationId: "A", channel: "app", messages: 2, lastTime: 3000, lastSeq: s2 },
    ]);
    expect((await s.listMessages({ conversationId: "A" }, { limit: 10 })).map((x) => x.key)).toEqual(["2", "1"]);
    expect((await s.listMessages({ since: 1500, until: 3000 }, { limit: 10 })).map((x) => x.key)).toEqual(["3"]);
    // the old lane goes on, and new messages get new seqs
    const [r] = await s.ingest([textItem("4", "B")]);
    expect(r?.seq).toBe(s3 + 1);
    const claimed = await s.claimOutbox(["omni"], Date.now() + 1, 10, 60_000);
    expect(claimed.map((e) => e.messageSeq)).toEqual([s3]);
  });
});

describe("listings on their indexes, at sizes that use them", () => {
  it("a time window is read by blocks and late messages, and agrees with filtering every row", async () => {
    const s = await openStore();
    // a fold now and then, as the serving process does
    await ingestMixed(s, 4500, 7, async (i) => (i % 97 === 0 ? s.listConversations({ limit: 1 }) : undefined));
    // both ways in: most messages by their block, the late ones by their time
    const late = (s.db.prepare("SELECT count(*) AS n FROM late_messages").get() as { n: number }).n;
    expect(late).toBeGreaterThan(300);
    expect(late).toBeLessThan(1500);
    expect((s.db.prepare("SELECT count(*) AS n FROM message_blocks").get() as { n: number }).n).toBeGreaterThan(3);
    expect((s.db.prepare("SELECT count(*) AS n FROM messages").get() as { n: number }).n).toBe(4500);
    await expectWindowsMatch(s, 300);
  });

  it("a long conversation moves its seqs to chunks, which go with it", async () => {
    const s = await openStore();
    const chunks = (where = "") => (s.db.prepare(`SELECT count(*) AS n FROM conversation_chunks ${where}`).get() as { n: number }).n;
    await longConversation(s, 700, {
      stored: () => expect(chunks()).toBeGreaterThan(3),
      erased: async () => {
        await expectMatchesOracle(s);
        const cnos = (s.db.prepare("SELECT cno FROM conversations").all() as { cno: number }[]).map((c) => c.cno);
        expect(chunks(`WHERE cno NOT IN (${cnos.join(",")})`)).toBe(0);
      },
    });
  });
});
