/**
 * The many-corps tests (`multi-corp.test.ts`) again, with the gateway on PostgreSQL (a fresh
 * schema of the test server), so that routing by corp is checked on both engines.
 */
import { describe, it } from "vitest";
import { pgReachable } from "./pg.js";

// read by test/stack.ts's storeFor when the imported file builds its gateways (this worker only)
process.env.WB_TEST_STORE = "postgres";
if (pgReachable) await import("./multi-corp.test.js");
// without a server (never under CI: test/pg.ts) this file says so instead of passing silently
describe.skipIf(pgReachable)("many corps on PostgreSQL", () => it("needs a PostgreSQL server", () => undefined));
