/**
 * The store: one interface ({@link Store}), one implementation per engine.
 * @module
 */
import type { Store } from "./types.js";

export * from "./types.js";

/**
 * Open and migrate the store named by the config `store` string: `sqlite:PATH` (the default,
 * embedded). PostgreSQL (`postgres://…`) joins in a later release. `owner`: this process is the
 * gateway serving the store (it may release entries a dead process left in flight).
 * @throws Error naming the engine when this build does not have it
 */
export async function openStore(spec: string, options: { owner?: boolean } = {}): Promise<Store> {
  if (spec.startsWith("sqlite:")) {
    const { SqliteStore } = await import("./sqlite/index.js");
    return SqliteStore.open({ path: spec.slice("sqlite:".length), owner: options.owner === true });
  }
  throw new Error(`store "${spec.split(":")[0]}" is not available in this version (use sqlite:PATH)`);
}
