/**
 * The harness a store engine gives the conformance suite, and what each part of the suite gets.
 */
import { it } from "vitest";
import type { Store } from "../../src/store/types.js";

/** How the suite gets stores of one engine. */
export interface StoreHarness {
  engine: "sqlite" | "postgres";
  /** Fresh empty store (migrated). */
  open(): Promise<StoreHandle>;
}

/** One fresh store of a test, and its database. */
export interface StoreHandle {
  store: Store;
  /** Another Store instance on the same database, as a second gateway replica (postgres) would open it; undefined for SQLite, whose store is served by one process. */
  replica?: () => Promise<Store>;
  /** Close and open again on the same data (a restart). */
  reopen(): Promise<Store>;
  /** Close everything and remove the data (drop the schema / delete the file). */
  dispose(): Promise<void>;
}

/** What each part of the suite registers its tests with. */
export interface SuiteContext {
  engine: StoreHarness["engine"];
  /** A fresh store and its handle, disposed after the test. */
  open(): Promise<StoreHandle>;
  /** A fresh store, disposed after the test. */
  fresh(): Promise<Store>;
}

/**
 * `n` stores on one database writing at the same time: the handle's store and replicas when
 * `across` (the engine must have them), else the one store `n` times (concurrent calls on it).
 */
export async function writers(h: StoreHandle, n: number, across: boolean): Promise<Store[]> {
  if (!across) return Array.from({ length: n }, () => h.store);
  const replica = h.replica;
  if (replica === undefined) throw new Error("this engine has no replicas");
  return [h.store, ...(await Promise.all(Array.from({ length: n - 1 }, () => replica())))];
}

/**
 * A test of concurrent writers, registered twice: `n` concurrent callers of one store, and `n`
 * store instances on one database (see {@link acrossReplicas}).
 */
export function concurrently(ctx: SuiteContext, title: string, n: number, fn: (stores: Store[], h: StoreHandle) => Promise<void>): void {
  it(`${title} (one store)`, async () => {
    const h = await ctx.open();
    await fn(await writers(h, n, false), h);
  });
  acrossReplicas(ctx, title, n, fn);
}

/** A test of `n` store instances on one database: skipped, saying so, for an engine without replicas. */
export function acrossReplicas(ctx: SuiteContext, title: string, n: number, fn: (stores: Store[], h: StoreHandle) => Promise<void>): void {
  it(`${title} (${n} replicas)`, async ({ skip }) => {
    const h = await ctx.open();
    if (h.replica === undefined) return skip(`${ctx.engine} is served by one process: no replicas`);
    await fn(await writers(h, n, true), h);
  });
}
