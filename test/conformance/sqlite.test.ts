/**
 * The store conformance suite on SQLite: a fresh file in a temp folder per store, opened as a
 * tool would (`owner: false`), removed afterwards. SQLite is served by one process: no replicas.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SqliteStore } from "../../src/store/sqlite/index.js";
import { type StoreHandle, storeConformance } from "./store-suite.js";

storeConformance({
  engine: "sqlite",
  async open(): Promise<StoreHandle> {
    const dir = mkdtempSync(join(tmpdir(), "wb-conformance-"));
    const path = join(dir, "bridge.db");
    let current = await SqliteStore.open({ path, owner: false });
    return {
      store: current,
      async reopen() {
        await current.close();
        current = await SqliteStore.open({ path, owner: false });
        return current;
      },
      async dispose() {
        await current.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  },
});
