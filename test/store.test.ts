import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import fc from "fast-check";
import { afterEach, describe, expect, it, vi } from "vitest";
import { decodeAppXml, decodeKfItem } from "../src/index.js";
import { messageItem } from "../src/gateway/pipeline.js";
import { SqliteStore } from "../src/store/sqlite/index.js";
import { MIGRATIONS } from "../src/store/sqlite/migrations.js";
import type { IngestItem, OutboxEntry, OutboxState } from "../src/store/types.js";
import { fixture, jsonFixture } from "./helpers.js";
import { everyChannel, expectMatchesOracle, nothing } from "./store-helpers.js";

const TENANT = "ww1436e0e65a779aee";
const open: SqliteStore[] = [];

async function freshStore(path = join(mkdtempSync(join(tmpdir(), "wb-store-")), "bridge.db")): Promise<SqliteStore> {
  const s = await SqliteStore.open({ path });
  open.push(s);
  return s;
}

afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
});

const appText = () => decodeAppXml(fixture("app", "msg-text.xml"), { corpId: TENANT });
const textItem = (id: string, conversation = "c1"): IngestItem => {
  const m = { ...appText(), id, conversationId: conversation };
  return messageItem(TENANT, m, { kind: "wecom", app: "support" });
};

describe("migrations", () => {
  it("apply once, in order, and survive a reopen", async () => {
    const dir = mkdtempSync(join(tmpdir(), "wb-store-"));
    const a = await freshStore(join(dir, "x.db"));
    expect(a.appliedMigrations()).toEqual(MIGRATIONS.map((m) => m.version));
    await a.close();
    const b = await freshStore(join(dir, "x.db"));
    expect(b.appliedMigrations()).toEqual(MIGRATIONS.map((m) => m.version));
  });

  it("every table carries the tenant in its keys", async () => {
    const s = await freshStore();
    const tables = s.db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name != 'schema_migrations'").all() as { name: string }[];
    expect(tables.length).toBeGreaterThanOrEqual(7);
    for (const { name } of tables) {
      const keyed = s.db.prepare(`SELECT 1 FROM pragma_index_list('${name}') il, pragma_index_info(il.name) ii WHERE ii.name = 'tenant' AND il."unique" = 1`).all();
      expect(keyed.length, `${name} has a unique key with tenant`).toBeGreaterThan(0);
    }
  });

  it("uses WAL", async () => {
    const s = await freshStore();
    expect(s.db.pragma("journal_mode", { simple: true })).toBe("wal");
  });
});

describe("ingest: the idempotency ledger", () => {
  it("stores a new item once with its outbox, and a repeat changes nothing", async () => {
    const s = await freshStore();
    const [first] = await s.ingest([textItem("1")]);
    expect(first).toEqual({ stored: true, seq: expect.any(Number) });
    const [again] = await s.ingest([textItem("1")]);
    expect(again).toEqual({ stored: false, seq: first?.seq });
    expect(await s.listMessages({}, { limit: 10 })).toHaveLength(1);
    expect((await s.outboxCounts()).pending).toBe(1);
  });

  it("never merges distinct items, even with identical content and time", async () => {
    const s = await freshStore();
    const r = await s.ingest([textItem("1"), textItem("2"), textItem("1")]);
    expect(r.map((x) => x.stored)).toEqual([true, true, false]);
    expect(await s.listMessages({}, { limit: 10 })).toHaveLength(2);
  });

  it("keys are per tenant and per channel", async () => {
    const s = await freshStore();
    const a = textItem("1");
    const r = await s.ingest([a, { ...a, tenant: "wwOTHER" }, { ...a, channel: "kf" }]);
    expect(r.map((x) => x.stored)).toEqual([true, true, true]);
  });

  it("records a skipped item (no message) so it is never delivered later", async () => {
    const s = await freshStore();
    const [r] = await s.ingest([{ tenant: TENANT, channel: "kf", key: "old", skipReason: "kf_history" }]);
    expect(r).toEqual({ stored: true });
    const [again] = await s.ingest([messageItem(TENANT, { ...decodeKfItem(jsonFixture("kf", "msg-text.json")), id: "old" }, { kind: "none" })]);
    expect(again?.stored).toBe(false);
    expect(await s.listMessages({}, { limit: 10 })).toHaveLength(0);
    expect((await s.outboxCounts()).pending).toBe(0);
  });

  it("saves a KF cursor in the same transaction as the page", async () => {
    const s = await freshStore();
    await s.touchKfAccount(TENANT, "wk1", 1000);
    await s.ingest([textItem("k1")], { tenant: TENANT, openKfId: "wk1", cursor: "C1" });
    expect(await s.getKfCursor(TENANT, "wk1")).toMatchObject({ cursor: "C1", firstSeenAt: 1000 });
    // a failing transaction keeps neither the messages nor the cursor
    const bad = { ...textItem("k2"), message: { ...textItem("k2").message, conversationId: null } } as unknown as IngestItem;
    await expect(s.ingest([textItem("k3"), bad], { tenant: TENANT, openKfId: "wk1", cursor: "C2" })).rejects.toThrow();
    expect((await s.getKfCursor(TENANT, "wk1"))?.cursor).toBe("C1");
    expect((await s.listMessages({}, { limit: 10 })).map((m) => m.key)).toEqual(["k1"]);
  });

  it("touchKfAccount keeps the first time it saw an account", async () => {
    const s = await freshStore();
    await s.touchKfAccount(TENANT, "wk1", 1000);
    expect((await s.touchKfAccount(TENANT, "wk1", 5000)).firstSeenAt).toBe(1000);
  });
});

describe("outbox", () => {
  it("claims one entry per conversation, in order, and the next only after the first is done", async () => {
    const s = await freshStore();
    await s.ingest([textItem("1", "A"), textItem("2", "A"), textItem("3", "B")]);
    const now = Date.now();
    const first = await s.claimOutbox(["omni"], now, 10, 60_000);
    expect(first.map((e) => [e.conversationId, e.attempts])).toEqual([
      ["A", 1],
      ["B", 1],
    ]);
    expect(await s.claimOutbox(["omni"], now, 10, 60_000)).toEqual([]);
    await s.finishOutbox(first[0]?.id as number, { state: "done" }, now);
    const next = await s.claimOutbox(["omni"], now, 10, 60_000);
    expect(next).toHaveLength(1);
    expect((await s.getMessage(next[0]?.messageSeq as number))?.key).toBe("2");
  });

  it("a retry waits for its time and keeps blocking later entries of its conversation", async () => {
    const s = await freshStore();
    await s.ingest([textItem("1", "A"), textItem("2", "A")]);
    const now = Date.now();
    const [e] = await s.claimOutbox(["omni"], now, 10, 60_000);
    await s.finishOutbox(e?.id as number, { state: "pending", nextAttemptAt: now + 5000, error: "down" }, now);
    expect(await s.claimOutbox(["omni"], now + 1000, 10, 60_000)).toEqual([]);
    expect(await s.nextOutboxDue(["omni"])).toBe(now + 5000);
    const [again] = await s.claimOutbox(["omni"], now + 5000, 10, 60_000);
    expect(again).toMatchObject({ id: e?.id, attempts: 2, lastError: "down" });
  });

  it("an expired lease makes an entry claimable again (a worker died)", async () => {
    const s = await freshStore();
    await s.ingest([textItem("1")]);
    const now = Date.now();
    const [e] = await s.claimOutbox(["omni"], now, 10, 1000);
    expect(await s.claimOutbox(["omni"], now + 500, 10, 1000)).toEqual([]);
    const [re] = await s.claimOutbox(["omni"], now + 1001, 10, 1000);
    expect(re?.id).toBe(e?.id);
  });

  it("dead entries do not block their conversation and can be replayed", async () => {
    const s = await freshStore();
    await s.ingest([textItem("1", "A"), textItem("2", "A")]);
    const now = Date.now();
    const [e] = await s.claimOutbox(["omni"], now, 10, 60_000);
    await s.finishOutbox(e?.id as number, { state: "dead", error: "gave up" }, now);
    expect((await s.outboxCounts()).dead).toBe(1);
    const [next] = await s.claimOutbox(["omni"], now, 10, 60_000);
    expect(next?.id).not.toBe(e?.id);
    expect(await s.listOutbox(["dead"], { limit: 10 })).toMatchObject([{ id: e?.id, lastError: "gave up" }]);
    expect(await s.replayDead("all", now)).toBe(1);
    expect((await s.outboxCounts()).dead).toBe(0);
  });

  it("a replayed dead letter joins the end of its lane: never two in flight for one conversation", async () => {
    const s = await freshStore();
    await s.ingest([textItem("1", "A"), textItem("2", "A")]);
    const now = Date.now();
    const [first] = await s.claimOutbox(["omni"], now, 10, 60_000);
    await s.finishOutbox(first?.id as number, { state: "dead", error: "x" }, now);
    const [second] = await s.claimOutbox(["omni"], now, 10, 60_000);
    expect(second?.id).not.toBe(first?.id);
    expect(await s.replayDead([first?.id as number], now)).toBe(1);
    expect(await s.claimOutbox(["omni"], now, 10, 60_000)).toEqual([]); // "2" is still in flight
    await s.finishOutbox(second?.id as number, { state: "done" }, now);
    const [again] = await s.claimOutbox(["omni"], now, 10, 60_000);
    expect(again?.id).toBe(first?.id);
    await s.finishOutbox(again?.id as number, { state: "done" }, now);
    // the lane is empty: a new entry is its head at once
    await s.ingest([textItem("3", "A")]);
    expect(await s.claimOutbox(["omni"], Date.now() + 1, 10, 60_000)).toHaveLength(1);
  });

  it("lanes are rebuilt from the chains when the store is reopened, a replay from another process included", async () => {
    const path = join(mkdtempSync(join(tmpdir(), "wb-store-")), "bridge.db");
    const a = await freshStore(path);
    await a.ingest([textItem("1", "A"), textItem("2", "A"), textItem("3", "A")]);
    const [first] = await a.claimOutbox(["omni"], Date.now(), 10, 60_000);
    await a.finishOutbox(first?.id as number, { state: "dead", error: "x" }, Date.now());
    await a.close();
    // another process (the replay command) puts the dead letter back
    const tool = await freshStore(path);
    expect(await tool.replayDead("all", Date.now())).toBe(1);
    await tool.close();
    const b = await freshStore(path);
    await b.ingest([textItem("4", "A")]);
    const order: string[] = [];
    for (;;) {
      const claimed = await b.claimOutbox(["omni"], Date.now() + 1, 10, 60_000);
      if (claimed.length === 0) break;
      expect(claimed).toHaveLength(1); // never two at once in one conversation
      const e = claimed[0] as OutboxEntry;
      order.push((await b.getMessage(e.messageSeq as number))?.key as string);
      await b.finishOutbox(e.id, { state: "done" }, Date.now());
    }
    expect(order).toEqual(["2", "3", "4", "1"]);
  });

  it("follow-up entries are written with the result", async () => {
    const s = await freshStore();
    await s.ingest([textItem("1")]);
    const [e] = await s.claimOutbox(["omni"], Date.now(), 10, 60_000);
    await s.finishOutbox(e?.id as number, { state: "done" }, Date.now(), { tenant: TENANT, messageSeq: e?.messageSeq ?? null, entries: [{ kind: "media", conversationId: null, payload: { x: 1 } }] });
    const [m] = await s.claimOutbox(["media"], Date.now(), 10, 60_000);
    expect(m).toMatchObject({ kind: "media", payload: { x: 1 }, messageSeq: e?.messageSeq });
  });
});

describe("tokens and media", () => {
  it("round-trip and replace", async () => {
    const s = await freshStore();
    await s.putToken({ tenant: TENANT, key: "k", token: "t1", expiresAt: 10 });
    await s.putToken({ tenant: TENANT, key: "k", token: "t2", expiresAt: 20 });
    expect(await s.getToken(TENANT, "k")).toEqual({ tenant: TENANT, key: "k", token: "t2", expiresAt: 20 });
    await s.deleteToken(TENANT, "k");
    expect(await s.getToken(TENANT, "k")).toBeUndefined();
    await s.putMedia({ tenant: TENANT, id: "m1-0", messageSeq: 1, contentType: "image/png", fileName: "a.png", size: 3, createdAt: 1 });
    expect(await s.getMedia(TENANT, "m1-0")).toMatchObject({ size: 3, fileName: "a.png" });
  });
});

describe("migration 2 on a store written by migration 1", () => {
  it("keeps every row, numbers KF accounts in the order they were seen, and starts counts and summaries from the data", async () => {
    const path = join(mkdtempSync(join(tmpdir(), "wb-store-")), "bridge.db");
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

    const s = await freshStore(path);
    expect(s.appliedMigrations()).toEqual([1, 2, 3]);
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

describe("admin listings read by key, and agree with a full scan", () => {
  const HOUR = 3_600_000;
  const T = Date.UTC(2026, 0, 10);

  /**
   * One message every 6 minutes, stored within seconds of its time, except some: stored hours
   * or days later (history, late records) or earlier (a skewed clock). Several channels and
   * conversations. Ingested with the clock at their receipt time.
   */
  async function mixedStore(n: number, seed: number): Promise<SqliteStore> {
    const s = await freshStore();
    const rnd = fc.sample(fc.integer({ min: 0, max: 1_000_000 }), { numRuns: n * 3, seed });
    vi.useFakeTimers({ toFake: ["Date"] });
    try {
      for (let i = 0; i < n; i++) {
        const [a, b, c] = [rnd[i * 3] as number, rnd[i * 3 + 1] as number, rnd[i * 3 + 2] as number];
        const receivedAt = T + i * 6 * 60_000 + (a % 1000);
        const skew = a % 10 === 0 ? ((b % 80) - 20) * HOUR : a % 7 === 0 ? -(a % 500_000) : (a % 5000);
        const channel = (["app", "kf", "bot", "archive"] as const)[c % 4];
        const conv = `${channel}-${b % 17}`;
        const m = { ...appText(), id: `m${i}`, channel, conversationId: conv, time: receivedAt - skew };
        if (channel === "kf") Object.assign(m, { externalUserId: `wm-${conv}` });
        vi.setSystemTime(receivedAt);
        await s.ingest([messageItem(TENANT, m as never, { kind: "none" })]);
        if (i % 97 === 0) await s.listConversations({ limit: 1 }); // a fold now and then, as the serving process does
      }
    } finally {
      vi.useRealTimers();
    }
    return s;
  }

  it("messages with a time window, a channel and paging: the same as filtering every row", async () => {
    const s = await mixedStore(4500, 7);
    // both ways in: most messages by their block, the late ones by their time
    const late = (s.db.prepare("SELECT count(*) AS n FROM late_messages").get() as { n: number }).n;
    expect(late).toBeGreaterThan(300);
    expect(late).toBeLessThan(1500);
    expect((s.db.prepare("SELECT count(*) AS n FROM message_blocks").get() as { n: number }).n).toBeGreaterThan(3);
    const all = (s.db.prepare("SELECT seq, channel, time FROM messages ORDER BY seq DESC").all() as { seq: number; channel: string; time: number }[]);
    const maxSeq = all[0]?.seq as number;
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          since: fc.option(fc.integer({ min: T - 70 * HOUR, max: T + 460 * HOUR }), { nil: undefined }),
          span: fc.option(fc.integer({ min: 1, max: 200 * HOUR }), { nil: undefined }),
          channel: fc.option(fc.constantFrom("app" as const, "kf" as const, "bot" as const, "archive" as const, "omni" as const), { nil: undefined }),
          before: fc.option(fc.integer({ min: 1, max: maxSeq + 5 }), { nil: undefined }),
          limit: fc.integer({ min: 1, max: 40 }),
        }),
        async (q) => {
          const until = q.span === undefined ? undefined : (q.since ?? T) + q.span;
          const filter = { ...(q.since !== undefined ? { since: q.since } : {}), ...(until !== undefined ? { until } : {}), ...(q.channel ? { channel: q.channel } : {}) };
          const page = q.before === undefined ? { limit: q.limit } : { limit: q.limit, before: q.before };
          const expected = all
            .filter((r) => (q.since === undefined || r.time >= q.since) && (until === undefined || r.time < until) && (!q.channel || r.channel === q.channel) && (q.before === undefined || r.seq < q.before))
            .slice(0, q.limit)
            .map((r) => r.seq);
          expect((await s.listMessages(filter, page)).map((m) => m.seq)).toEqual(expected);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("messages of a conversation, and conversations paged by their last seq", async () => {
    const s = await mixedStore(300, 11);
    const conversations = (s.db.prepare("SELECT conversation_id AS c, channel, max(seq) AS last FROM messages GROUP BY conversation_id ORDER BY last DESC").all() as { c: string; channel: string; last: number }[]);
    for (const { c } of conversations) {
      const expected = (s.db.prepare("SELECT seq FROM messages WHERE conversation_id = ? ORDER BY seq DESC").all(c) as { seq: number }[]).map((r) => r.seq);
      const got: number[] = [];
      let before: number | undefined;
      for (;;) {
        const page = await s.listMessages({ conversationId: c }, before === undefined ? { limit: 7 } : { limit: 7, before });
        got.push(...page.map((m) => m.seq));
        if (page.length < 7) break;
        before = page[6]?.seq;
      }
      expect(got, c).toEqual(expected);
    }
    for (const channel of [undefined, "kf", "bot"] as const) {
      const expected = conversations.filter((c) => !channel || c.channel === channel).map((c) => c.c);
      const got: string[] = [];
      let before: number | undefined;
      for (;;) {
        const page = await s.listConversations({ limit: 5, ...(channel ? { channel } : {}), ...(before !== undefined ? { before } : {}) });
        got.push(...page.map((p) => p.conversationId));
        if (page.length < 5) break;
        before = page[4]?.lastSeq;
      }
      expect(got, channel).toEqual(expected);
    }
  });

  it("a long conversation: its pages, through retention around kept messages and through erasure", async () => {
    const s = await freshStore();
    const truth = (conv: string) => (s.db.prepare("SELECT seq FROM messages WHERE conversation_id = ? ORDER BY seq DESC").all(conv) as { seq: number }[]).map((r) => r.seq);
    const pages = async (conv: string, size: number) => {
      const got: number[] = [];
      let before: number | undefined;
      for (;;) {
        const page = await s.listMessages({ conversationId: conv }, before === undefined ? { limit: size } : { limit: size, before });
        got.push(...page.map((m) => m.seq));
        if (page.length < size) return got;
        before = page[size - 1]?.seq;
      }
    };
    for (let i = 0; i < 700; i++) {
      await s.ingest([textItem(`L${i}`, "long"), ...(i % 10 === 0 ? [textItem(`S${i}`, `short-${i % 3}`)] : [])]);
      if (i % 45 === 0) await s.listConversations({ limit: 1 }); // folds: the tail moves to chunks as it grows
    }
    expect((s.db.prepare("SELECT count(*) AS n FROM conversation_chunks").get() as { n: number }).n).toBeGreaterThan(3);
    expect(await pages("long", 37)).toEqual(truth("long"));
    // delivered in order: 100 done, 5 dead, 195 done; the rest pending
    const now = Date.now() + 1000;
    for (let i = 0; i < 300; i++) {
      const claimed = (await s.claimOutbox(["omni"], now, 100, 60_000)).filter((e) => e.conversationId === "long");
      expect(claimed).toHaveLength(1);
      await s.finishOutbox(claimed[0]?.id as number, i >= 100 && i < 105 ? { state: "dead", error: "x" } : { state: "done" }, now);
    }
    const r = await s.pruneBatch({ ...nothing(), messagesBefore: everyChannel(now) }, 1000);
    expect(r.messages).toBeGreaterThanOrEqual(295);
    expect(truth("long")).toHaveLength(405);
    expect(await pages("long", 37)).toEqual(truth("long"));
    expect(await pages("long", 500)).toEqual(truth("long"));
    await expectMatchesOracle(s);
    await s.eraseConversation("long");
    expect(await pages("long", 37)).toEqual([]);
    expect((await s.listConversations({ limit: 10 })).map((c) => c.conversationId).sort()).toEqual(["short-0", "short-1", "short-2"]);
    await expectMatchesOracle(s);
    const cnos = (s.db.prepare("SELECT cno FROM conversations").all() as { cno: number }[]).map((c) => c.cno);
    expect((s.db.prepare(`SELECT count(*) AS n FROM conversation_chunks WHERE cno NOT IN (${cnos.join(",")})`).get() as { n: number }).n).toBe(0);
  });

  it("outbox entries in any set of states, newest first, paged by id", async () => {
    const s = await mixedStore(120, 3);
    const now = Date.now() + 1000;
    const claimed = await s.claimOutbox(["omni"], now, 1000, 60_000);
    for (const [i, e] of claimed.entries()) {
      await s.finishOutbox(e.id, i % 3 === 0 ? { state: "done" } : i % 3 === 1 ? { state: "dead", error: "x" } : { state: "pending", nextAttemptAt: now, error: "x" }, now);
    }
    await s.claimOutbox(["omni"], now, 3, 60_000);
    const rows = s.db.prepare("SELECT id, state FROM outbox ORDER BY id DESC").all() as { id: number; state: OutboxState }[];
    const sets: OutboxState[][] = [["pending"], ["inflight"], ["done"], ["dead"], ["pending", "inflight", "dead"], ["done", "dead"], ["pending", "inflight", "done", "dead"]];
    for (const states of sets) {
      for (const before of [undefined, rows[10]?.id, rows[60]?.id]) {
        const expected = rows.filter((r) => states.includes(r.state) && (before === undefined || r.id < before)).slice(0, 9).map((r) => r.id);
        const got = await s.listOutbox(states, before === undefined ? { limit: 9 } : { limit: 9, before });
        expect(got.map((e) => e.id), `${states} before ${before}`).toEqual(expected);
      }
    }
  });
});
