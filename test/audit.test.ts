/**
 * The audit log (appendAudit, listAudit, its retention) and the outbox listing by conversation, on
 * SQLite and (test/pg.ts: always under CI) PostgreSQL; and the rows the maintenance commands
 * (`replay`, `purge`, `erase`) leave in it.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { runCli } from "../src/cli/main.js";
import { configSchema } from "../src/config.js";
import { pruneCutoffs } from "../src/gateway/retention.js";
import Database from "better-sqlite3";
import { parseStoreUrl } from "../src/store/postgres/connection.js";
import { PostgresStore } from "../src/store/postgres/index.js";
import { PG_MIGRATIONS } from "../src/store/postgres/migrations.js";
import { SqliteStore } from "../src/store/sqlite/index.js";
import { MIGRATIONS } from "../src/store/sqlite/migrations.js";
import type { AuditRow, OutboxEntry, OutboxState, Store } from "../src/store/types.js";
import { DAY, T0 } from "./conformance/items.js";
import { ALL_STATES, LEASE } from "./conformance/oracle.js";
import { freshSchema, type PgSchema, pgReachable } from "./pg.js";
import { closeAll, dbPath, imageItem, nothing, openStore, TENANT, textItem } from "./store-helpers.js";

/** An engine under test: a fresh migrated store, and its `store` setting for a config file. */
interface Engine {
  name: "sqlite" | "postgres";
  skip: boolean;
  open(): Promise<{ store: Store; spec: string }>;
  /** A store at the release before the audit log (its migrations up to then), not migrated further; `reopen` migrates it. */
  previous(): Promise<{ store: Store; reopen: () => Promise<Store> }>;
}

const schemas: PgSchema[] = [];
const pgStores: Store[] = [];

const ENGINES: Engine[] = [
  {
    name: "sqlite",
    skip: false,
    async open() {
      const path = dbPath();
      return { store: await openStore(path), spec: `sqlite:${path}` };
    },
    async previous() {
      const path = dbPath();
      const db = new Database(path);
      db.exec("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)");
      for (const m of MIGRATIONS.filter((x) => x.version <= 3)) {
        db.exec(m.sql);
        db.prepare("INSERT INTO schema_migrations VALUES (?, ?, 0)").run(m.version, m.name);
      }
      db.close();
      const store = new SqliteStore({ path });
      return { store, reopen: () => openStore(path) };
    },
  },
  {
    name: "postgres",
    skip: !pgReachable,
    async open() {
      const schema = await freshSchema();
      schemas.push(schema);
      const store = await PostgresStore.open({ url: schema.url });
      pgStores.push(store);
      return { store, spec: schema.url };
    },
    async previous() {
      const schema = await freshSchema();
      schemas.push(schema);
      const store = new PostgresStore(parseStoreUrl(schema.url));
      pgStores.push(store);
      await store.pool.query("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)");
      for (const m of PG_MIGRATIONS.filter((x) => x.version <= 1)) {
        await store.pool.query(m.sql);
        await store.pool.query("INSERT INTO schema_migrations VALUES ($1, $2, 0)", [m.version, m.name]);
      }
      return {
        store,
        reopen: async () => {
          const again = await PostgresStore.open({ url: schema.url });
          pgStores.push(again);
          return again;
        },
      };
    },
  },
];

afterEach(async () => {
  await closeAll();
  for (const s of pgStores.splice(0)) await s.close();
  for (const s of schemas.splice(0)) await s.drop();
});

const row = (time: number, action: string, detail: string, tenant: string | null = null): Omit<AuditRow, "id"> => ({
  time,
  tenant,
  actor: "console",
  from: "10.0.0.7",
  action,
  detail,
});

/** Every page of the audit log, `size` rows a page. */
async function allAudit(s: Store, size: number): Promise<AuditRow[]> {
  const out: AuditRow[] = [];
  let before: number | undefined;
  for (;;) {
    const page = await s.listAudit(before === undefined ? { limit: size } : { limit: size, before });
    out.push(...page);
    if (page.length < size) return out;
    before = page[page.length - 1]?.id;
  }
}

/** An entry finished in `state` for each item (claimed and finished at `at`). */
async function finishAll(s: Store, at: number, state: "dead" | "done"): Promise<OutboxEntry[]> {
  const claimed = await s.claimOutbox(["omni", "media", "kf_send"], at, 10_000, LEASE);
  for (const e of claimed) await s.finishOutbox(e, state === "dead" ? { state: "dead", error: "omni: 400" } : { state: "done" }, at);
  return claimed;
}

describe.each(ENGINES)("audit log: $name", (engine) => {
  it.skipIf(engine.skip)("lists newest first, paged by id, with every field as appended", async () => {
    const { store: s } = await engine.open();
    expect(await s.listAudit({ limit: 10 })).toEqual([]);
    await s.appendAudit(row(T0, "login", "session opened"));
    await s.appendAudit(row(T0 + 1, "replay", "3 dead letters replayed (ids 4, 7, 9)", TENANT));
    await s.appendAudit({ ...row(T0 + 2, "purge", "12 dead letters removed (all)"), actor: "cli", from: "cli@ops-1" });
    await s.appendAudit(row(T0 + 3, "erase", "conversation kf:x erased: 4 messages, 2 outbox entries, 1 media", "ww-other"));
    // a time out of order is kept as given: the listing follows the order of appending
    await s.appendAudit(row(T0 - DAY, "logout", "session closed"));

    const all = await s.listAudit({ limit: 100 });
    expect(all.map((r) => r.action)).toEqual(["logout", "erase", "purge", "replay", "login"]);
    const ids = all.map((r) => r.id);
    expect([...ids].sort((a, b) => b - a)).toEqual(ids);
    expect(new Set(ids).size).toBe(5);
    expect(all[2]).toEqual({ id: ids[2], time: T0 + 2, tenant: null, actor: "cli", from: "cli@ops-1", action: "purge", detail: "12 dead letters removed (all)" });
    expect(all.map((r) => r.tenant)).toEqual([null, "ww-other", null, TENANT, null]);
    expect(all[3]).toMatchObject({ actor: "console", from: "10.0.0.7", time: T0 + 1, detail: "3 dead letters replayed (ids 4, 7, 9)" });

    // paging: each page continues below the last id of the previous one, nothing twice or left out
    const first = await s.listAudit({ limit: 2 });
    expect(first).toEqual(all.slice(0, 2));
    expect(await s.listAudit({ limit: 2, before: first[1]?.id as number })).toEqual(all.slice(2, 4));
    expect(await s.listAudit({ limit: 2, before: all[3]?.id as number })).toEqual(all.slice(4));
    expect(await s.listAudit({ limit: 2, before: all[4]?.id as number })).toEqual([]);
    for (const size of [1, 3, 5]) expect(await allAudit(s, size)).toEqual(all);
    expect(await s.listAudit({ limit: 0 })).toEqual([]);
  });

  it.skipIf(engine.skip)("cuts the detail to 1,000 characters (not code units or bytes)", async () => {
    const { store: s } = await engine.open();
    await s.appendAudit(row(T0, "replay", "x".repeat(1500)));
    await s.appendAudit(row(T0, "erase", "审".repeat(1200)));
    await s.appendAudit(row(T0, "purge", "😀".repeat(1001)));
    await s.appendAudit(row(T0, "login", "y".repeat(1000)));
    const [exact, emoji, han, ascii] = await s.listAudit({ limit: 10 });
    expect(ascii?.detail).toBe("x".repeat(1000));
    expect(han?.detail).toBe("审".repeat(1000));
    expect(emoji?.detail).toBe("😀".repeat(1000));
    expect(exact?.detail).toBe("y".repeat(1000));
  });

  it.skipIf(engine.skip)("pruneBatch removes rows older than auditBefore, at most `limit` a call, oldest first", async () => {
    const { store: s } = await engine.open();
    // appended out of time order: retention goes by time, not by id
    for (const d of [3, 0, 4, 1, 2, 5]) await s.appendAudit(row(T0 + d * DAY, "login", `day ${d}`));
    expect((await s.pruneBatch(nothing(), 100)).audit).toBe(0);
    // the other kinds' cutoffs leave the audit log alone
    expect((await s.pruneBatch({ ...nothing(), messagesBefore: pruneCutoffs({ retention: configSchema.shape.retention.parse({}), mediaLinkTtlSec: 60 }, T0 + 100 * DAY).messagesBefore }, 100)).audit).toBe(0);

    const cutoffs = { ...nothing(), auditBefore: T0 + 3 * DAY }; // days 0, 1, 2 go; day 3 (not strictly before) stays
    const first = await s.pruneBatch(cutoffs, 2);
    expect(first).toEqual({ messages: 0, outbox: 0, ledger: 0, archive: 0, state: 0, audit: 2, media: [] });
    expect((await s.listAudit({ limit: 10 })).map((r) => r.detail)).toEqual(["day 5", "day 2", "day 4", "day 3"]);
    expect((await s.pruneBatch(cutoffs, 2)).audit).toBe(1);
    expect((await s.pruneBatch(cutoffs, 2)).audit).toBe(0);
    expect((await s.listAudit({ limit: 10 })).map((r) => r.detail)).toEqual(["day 5", "day 4", "day 3"]);
    // an erasure never touches it
    expect((await s.eraseConversation("c1")).audit).toBe(0);
    expect(await s.listAudit({ limit: 10 })).toHaveLength(3);
    // ids are not given again after a removal
    const newest = (await s.listAudit({ limit: 1 }))[0]?.id as number;
    expect((await s.pruneBatch({ ...nothing(), auditBefore: T0 + 10 * DAY }, 100)).audit).toBe(3);
    await s.appendAudit(row(T0, "login", "after"));
    expect((await s.listAudit({ limit: 1 }))[0]?.id).toBeGreaterThan(newest);
  });

  it.skipIf(engine.skip)("listOutbox by conversation lists that conversation's entries without a message only, by state and tenant, paged", async () => {
    const { store: s } = await engine.open();
    // agents' answers (entries without a message): A 3 then 2 more, B 2, A of another corp 1
    const answer = (conversationId: string, at: number, tenant = TENANT) => s.acceptOutbound({ tenant, keys: [], entries: [{ kind: "kf_send", conversationId, payload: { op: "message" } }], now: at });
    // customers' messages of A and B: their delivery entries belong to a message and are never listed
    await s.ingest([textItem("a1", "A"), textItem("b1", "B")], undefined, T0);
    for (const c of ["A", "B", "A", "B", "A"]) await answer(c, T0);
    // one entry of a lane at a time: finish rounds until every entry is dead
    for (let round = 0; round < 5; round++) await finishAll(s, T0 + 10 + round, "dead");
    await answer("A", T0 + 100);
    await answer("A", T0 + 100);
    await s.ingest([textItem("a2", "A"), imageItem("img", "A")], undefined, T0 + 100);
    await answer("A", T0 + 100, "ww-other");

    const every = await s.listOutbox(ALL_STATES, { limit: 1000 });
    const expected = (states: OutboxState[], conversation: string, tenant?: string) =>
      every.filter((e) => e.conversationId === conversation && e.messageSeq === null && states.includes(e.state) && (tenant === undefined || e.tenant === tenant));
    // the exclusion means something: A has delivery entries of its messages, dead and pending
    expect(every.filter((e) => e.conversationId === "A" && e.messageSeq !== null).map((e) => e.state).sort()).toEqual(["dead", "pending", "pending"]);

    const deadA = await s.listOutbox(["dead"], { limit: 100, conversationId: "A" });
    expect(deadA).toEqual(expected(["dead"], "A"));
    expect(deadA).toHaveLength(3);
    expect(deadA.every((e) => e.conversationId === "A" && e.state === "dead" && e.messageSeq === null)).toBe(true);
    expect(await s.listOutbox(["dead"], { limit: 100, conversationId: "B" })).toEqual(expected(["dead"], "B"));
    expect(await s.listOutbox(["dead"], { limit: 100, conversationId: "B" })).toHaveLength(2);

    const liveA = await s.listOutbox(["pending", "inflight"], { limit: 100, conversationId: "A" });
    expect(liveA).toEqual(expected(["pending", "inflight"], "A"));
    expect(liveA.map((e) => e.tenant).sort()).toEqual([TENANT, TENANT, "ww-other"].sort());
    expect(liveA.some((e) => e.kind === "media" || e.kind === "omni")).toBe(false);
    expect(await s.listOutbox(["pending"], { limit: 100, conversationId: "A", tenant: "ww-other" })).toEqual(expected(["pending"], "A", "ww-other"));
    expect(await s.listOutbox(["pending"], { limit: 100, conversationId: "A", tenant: "ww-other" })).toHaveLength(1);

    // newest first across states, paged by id
    const bothA = expected(["dead", "pending"], "A");
    expect(bothA).toHaveLength(6);
    const paged: OutboxEntry[] = [];
    let before: number | undefined;
    for (;;) {
      const page = await s.listOutbox(["dead", "pending", "dead"], before === undefined ? { limit: 2, conversationId: "A" } : { limit: 2, conversationId: "A", before });
      paged.push(...page);
      if (page.length < 2) break;
      before = page[page.length - 1]?.id;
    }
    expect(paged).toEqual(bothA);
    expect(await s.listOutbox(["done"], { limit: 100, conversationId: "A" })).toEqual([]);
    expect(await s.listOutbox(["dead"], { limit: 100, conversationId: "nobody" })).toEqual([]);
    expect(await s.listOutbox([], { limit: 100, conversationId: "A" })).toEqual([]);
    // without a conversation, the listing is as before
    expect(await s.listOutbox(["dead"], { limit: 100 })).toEqual(every.filter((e) => e.state === "dead"));
  });

  it.skipIf(engine.skip)("a store of the previous release gets the audit log, and its outbox entries are listed by conversation", async () => {
    const { store: old, reopen } = await engine.previous();
    await old.ingest([textItem("a1", "A"), textItem("b1", "B"), textItem("a2", "A")], undefined, T0);
    await old.acceptOutbound({ tenant: TENANT, keys: [], entries: [{ kind: "app_send", conversationId: "A", payload: { text: "answer" } }], now: T0 + 1 });
    await old.close();
    const s = await reopen();
    const a = await s.listOutbox(ALL_STATES, { limit: 100, conversationId: "A" });
    // the agent's answer; the delivery entries of A's two messages are the messages' own
    expect(a.map((e) => e.kind)).toEqual(["app_send"]);
    expect(a).toEqual((await s.listOutbox(ALL_STATES, { limit: 100 })).filter((e) => e.conversationId === "A" && e.messageSeq === null));
    await s.appendAudit(row(T0, "login", "first"));
    expect(await s.listAudit({ limit: 10 })).toMatchObject([{ action: "login", detail: "first", tenant: null }]);
    // an erasure still finds the conversation's entries without a message (the outbound answer)
    expect(await s.eraseConversation("A")).toMatchObject({ messages: 2, outbox: 3 });
    expect(await s.listOutbox(ALL_STATES, { limit: 100, conversationId: "A" })).toEqual([]);
    // B's message (and its delivery entry) is untouched
    expect((await s.listOutbox(ALL_STATES, { limit: 100 })).filter((e) => e.conversationId === "B")).toHaveLength(1);
  });

  it.skipIf(engine.skip)("replay, purge and erase from the command line each leave one row (actor cli)", async () => {
    const { store: s, spec } = await engine.open();
    await s.ingest([1, 2, 3, 4].map((i) => textItem(`d${i}`, `dead-${i}`)), undefined, T0);
    const dead = await finishAll(s, T0, "dead");
    expect(dead).toHaveLength(4);
    await s.ingest([textItem("p1", "pipl"), textItem("p2", "pipl")], undefined, T0);
    // SQLite: the commands open the file themselves (one writer at a time is enough here)
    if (engine.name === "sqlite") await s.close();

    const dir = mkdtempSync(join(tmpdir(), "wb-audit-cli-"));
    const file = join(dir, "config.json");
    writeFileSync(
      file,
      JSON.stringify({
        publicUrl: "http://127.0.0.1:1",
        store: spec,
        mediaDir: join(dir, "media"),
        adminToken: "admin-token-0123456789",
        wecom: { corpId: TENANT },
        omni: { baseUrl: "http://127.0.0.1:1", appId: "1", secret: "s" },
      }),
    );
    const out: string[] = [];
    const io = { stdout: (t: string) => void out.push(t), stderr: (t: string) => void out.push(t), readStdin: () => "" };
    const [e1, e2] = dead.map((e) => e.id).sort((x, y) => x - y) as [number, number];
    const cli = async (args: string[], code = 0) => expect(await runCli([...args, "--config", file], io), out.join("")).toBe(code);
    await cli(["replay", "--id", String(e2), "--id", String(e1)]);
    await cli(["replay", "--id", String(e1)]); // not dead any more
    await cli(["purge", "--dead", "--before", "2026-11-01"]); // the two others died on 2026-01-10
    await cli(["replay", "--all"]);
    await cli(["purge", "--dead"]);
    await cli(["erase", "--conversation", "pipl"]);
    // a mistyped address fails (exit 1); the attempt is recorded as one
    await cli(["erase", "--conversation", "nobody"], 1);
    // a usage error acts on nothing and records nothing
    await cli(["replay"], 2);
    await cli(["purge"], 2);

    const after = engine.name === "sqlite" ? await SqliteStore.open({ path: spec.slice("sqlite:".length) }) : s;
    try {
      const rows = await after.listAudit({ limit: 100 });
      expect(rows.map((r) => r.action)).toEqual(["erase", "erase", "purge", "replay", "purge", "replay", "replay"]);
      for (const r of rows) {
        expect(r).toMatchObject({ actor: "cli", from: `cli@${hostname()}`, tenant: null });
        expect(Math.abs(r.time - Date.now())).toBeLessThan(60_000);
      }
      expect(rows.map((r) => r.detail).reverse()).toEqual([
        `2 dead letters replayed (ids ${e2}, ${e1})`,
        `0 of 1 dead letter replayed (ids ${e1})`,
        "2 dead letters removed (before 2026-11-01T00:00:00Z)",
        "all: 0 replayed",
        "0 dead letters removed (all)",
        "conversation pipl erased: 2 messages, 2 outbox entries, 0 media",
        "conversation nobody erased: 0 messages, 0 outbox entries, 0 media (nothing stored)",
      ]);
    } finally {
      if (after !== s) await after.close();
    }
  });
});

describe("retention.auditDays", () => {
  it("defaults to a year, must be positive, and sets auditBefore", () => {
    const r = configSchema.shape.retention.parse({});
    expect(r.auditDays).toBe(365);
    expect(configSchema.shape.retention.parse({ auditDays: 30 }).auditDays).toBe(30);
    expect(() => configSchema.shape.retention.parse({ auditDays: 0 })).toThrow();
    expect(() => configSchema.shape.retention.parse({ auditDays: -1 })).toThrow();
    const now = 1_800_000_000_000;
    expect(pruneCutoffs({ retention: r, mediaLinkTtlSec: 60 }, now).auditBefore).toBe(now - 365 * DAY);
  });
});
