/**
 * The store conformance suite on PostgreSQL (test/pg.ts): a fresh schema per store, dropped
 * afterwards; replicas are more PostgresStore instances on the same schema. Skipped, saying so,
 * when no server answers, except under `CI`.
 *
 * Creating and migrating a schema and dropping it cost more than most tests: a few migrated
 * schemas are made ahead while tests run, and used ones are dropped in the background (all of
 * them before the file ends).
 */
import { afterAll, describe } from "vitest";
import type { Store } from "../../src/store/types.js";
import { freshSchema, type PgSchema, pgReachable } from "../pg.js";
import { type StoreHandle, storeConformance } from "./store-suite.js";

/** Migrated schemas kept ready. */
const AHEAD = 3;

/** A store opened on a schema of its own. */
async function connect(schema: PgSchema): Promise<Store> {
  const { PostgresStore } = await import("../../src/store/postgres/index.js");
  return PostgresStore.open({ url: schema.url, owner: false });
}

/** A fresh schema and a store that migrated it. */
async function prepare(): Promise<{ schema: PgSchema; store: Store }> {
  const schema = await freshSchema();
  try {
    return { schema, store: await connect(schema) };
  } catch (e) {
    await schema.drop();
    throw e;
  }
}

const ready: Promise<{ schema: PgSchema; store: Store }>[] = [];
/** Schemas being dropped, and what went wrong doing it. */
const dropping = new Set<Promise<void>>();
const dropErrors: unknown[] = [];

function dropLater(schema: PgSchema): void {
  const p = schema
    .drop()
    .catch((e: unknown) => void dropErrors.push(e))
    .finally(() => dropping.delete(p));
  dropping.add(p);
}

/** The next prepared schema, preparing more behind it. */
function take(): Promise<{ schema: PgSchema; store: Store }> {
  while (ready.length <= AHEAD) {
    const p = prepare();
    p.catch(() => undefined); // awaited by its taker
    ready.push(p);
  }
  return ready.shift() as Promise<{ schema: PgSchema; store: Store }>;
}

describe.skipIf(!pgReachable)("PostgreSQL", () => {
  afterAll(async () => {
    for (const p of ready.splice(0)) {
      const prepared = await p.catch(() => undefined);
      if (prepared === undefined) continue;
      await prepared.store.close();
      dropLater(prepared.schema);
    }
    while (dropping.size > 0) await Promise.all(dropping);
    if (dropErrors.length > 0) throw dropErrors[0];
  });

  storeConformance({
    engine: "postgres",
    async open(): Promise<StoreHandle> {
      const { schema, store } = await take();
      const open = new Set<Store>([store]);
      const another = async (): Promise<Store> => {
        const s = await connect(schema);
        open.add(s);
        return s;
      };
      const closeOne = async (s: Store) => {
        if (open.delete(s)) await s.close();
      };
      let current = store;
      return {
        store,
        replica: another,
        async reopen() {
          await closeOne(current);
          current = await another();
          return current;
        },
        async dispose() {
          try {
            for (const s of [...open]) await closeOne(s);
          } finally {
            dropLater(schema);
          }
        },
      };
    },
  });
});
