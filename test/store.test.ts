import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { decodeAppXml, decodeKfItem } from "../src/index.js";
import { messageItem } from "../src/gateway/pipeline.js";
import { SqliteStore } from "../src/store/sqlite/index.js";
import { MIGRATIONS } from "../src/store/sqlite/migrations.js";
import type { IngestItem, OutboxEntry } from "../src/store/types.js";
import { fixture, jsonFixture } from "./helpers.js";

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
