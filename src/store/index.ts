/**
 * The store: one interface ({@link Store}), one implementation per engine.
 * @module
 */
import type { Store } from "./types.js";

export * from "./types.js";

/**
 * Open and migrate the store named by the config `store` string: `sqlite:PATH` (the default,
 * embedded). PostgreSQL (`postgres://…`) joins in a later release.
 * @throws Error naming the engine when this build does not have it
 */
export async function openStore(spec: string): Promise<Store> {
  if (spec.startsWith("sqlite:")) {
    const { SqliteStore } = await import("./sqlite/index.js");
    return SqliteStore.open({ path: spec.slice("sqlite:".length) });
  }
  throw new Error(`store "${spec.split(":")[0]}" is not available in this version (use sqlite:PATH)`);
}
