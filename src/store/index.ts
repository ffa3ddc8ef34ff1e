/**
 * The store: one interface ({@link Store}), one implementation per engine.
 * @module
 */
import { existsSync } from "node:fs";
import { BridgeError } from "../errors.js";
import type { Store } from "./types.js";

export * from "./types.js";

/**
 * Open and migrate the store named by the config `store` string: `sqlite:PATH` (the default,
 * embedded) or `postgres://user@host:5432/db?schema=NAME&pool=N` (replicas, many corps). `owner`:
 * this process is the gateway serving the store (SQLite: it may release entries a dead process
 * left in flight; PostgreSQL: leases expire instead). `mustExist`: refuse to create a database
 * that is not there (the maintenance commands).
 * @throws Error naming the engine when this build does not have it
 */
export async function openStore(spec: string, options: { owner?: boolean; mustExist?: boolean } = {}): Promise<Store> {
  if (spec.startsWith("sqlite:")) {
    const path = spec.slice("sqlite:".length);
    // tools that act on a gateway's data (replay, purge, erase) never create an empty database
    // for a mistyped path: they would report success on nothing
    if (options.mustExist && path !== ":memory:" && !existsSync(path)) throw new BridgeError("store_missing", `no database at ${path}: check the config's store`);
    const { SqliteStore } = await import("./sqlite/index.js");
    return SqliteStore.open({ path, owner: options.owner === true });
  }
  if (/^postgres(ql)?:\/\//.test(spec)) {
    const { PostgresStore } = await import("./postgres/index.js");
    const store = await PostgresStore.open({ url: spec, mustExist: options.mustExist === true });
    return store;
  }
  throw new Error(`store "${spec.split(":")[0]}" is not available in this version (use sqlite:PATH or postgres://…)`);
}
