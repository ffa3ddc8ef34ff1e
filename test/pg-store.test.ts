/**
 * PostgreSQL-only store behaviour: what only shows with a second connection holding a row lock
 * (a replica in the middle of its transaction).
 */
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { PostgresStore } from "../src/store/postgres/index.js";
import { cutoffsAt, TENANT } from "./conformance/items.js";
import { freshSchema, type PgSchema, pgReachable } from "./pg.js";

let schema: PgSchema | undefined;
const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
  await schema?.drop();
  schema = undefined;
});

/** A store, and a raw connection in its schema (another replica's transaction). */
async function setup(): Promise<{ store: PostgresStore; other: pg.Client }> {
  schema = await freshSchema();
  const store = await PostgresStore.open({ url: schema.url });
  const other = new pg.Client({ connectionString: schema.url.replace(/[?&]schema=\w+/, ""), options: `-c search_path=${schema.name}` });
  await other.connect();
  closers.push(async () => {
    await other.end();
    await store.close();
  });
  return { store, other };
}

describe.skipIf(!pgReachable)("PostgreSQL: retention and purges never remove a row another replica is renewing", () => {
  it("a shared state value renewed while retention ran stays", async () => {
    const { store, other } = await setup();
    const t0 = 1_000_000;
    await store.updateState(TENANT, "lease:job", null, t0, () => ({ value: { holder: "a", until: t0 + 10 }, expiresAt: t0 + 10 }));
    // another replica renews the value (expired by now) in a transaction still open
    await other.query("BEGIN");
    await other.query("UPDATE shared_state SET expires_at = $1 WHERE tenant = $2 AND key = 'lease:job'", [t0 + 1_000_000, TENANT]);
    // retention skips the row being written: it finishes while that transaction is still open
    // (waiting for it, then deleting what it renewed, would hang here)
    const pruned = await store.pruneBatch({ ...cutoffsAt(Number.MIN_SAFE_INTEGER), stateBefore: t0 + 100 }, 100);
    await other.query("COMMIT");
    expect(pruned.state).toBe(0);
    expect(await store.getState(TENANT, "lease:job", t0 + 200)).toEqual({ holder: "a", until: t0 + 10 });
  });

  it("a dead letter replayed while a purge ran is not purged", async () => {
    const { store, other } = await setup();
    await store.ingest([{ tenant: TENANT, channel: "app", key: "k1", outbox: [{ kind: "kf_send", conversationId: "c", payload: {} }] } as never], undefined, 1000);
    const [e] = await store.claimOutbox(["kf_send"], 1000, 10, 30_000);
    await store.finishOutbox(e as never, { state: "dead", error: "x" }, 1001);
    await other.query("BEGIN");
    await other.query("UPDATE outbox SET state = 'pending', ready = true WHERE id = $1", [e?.id]);
    // the purge skips the row being changed (it may take it next time) instead of waiting for it
    const purged = await store.purgeDead();
    await other.query("ROLLBACK");
    expect(purged).toBe(0);
    expect((await store.getOutbox(e?.id as number))?.state).toBe("dead");
  });
});
