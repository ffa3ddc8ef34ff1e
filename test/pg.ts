/**
 * PostgreSQL in tests: the server of this machine (127.0.0.1:5432, trust auth, database `test`,
 * or `WB_TEST_PG` as a connection string). Each caller gets a fresh schema, dropped afterwards.
 * When no server answers, {@link pgReachable} is false and the PostgreSQL tests are skipped with a
 * line saying so, except under `CI`: there they must run, so an unreachable server fails them.
 */
import { randomBytes } from "node:crypto";
import pg from "pg";

/** The server tests use (without a schema). */
export const PG_URL = process.env.WB_TEST_PG ?? "postgres://postgres@127.0.0.1:5432/test";

async function probe(): Promise<boolean> {
  const c = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 2000 });
  try {
    await c.connect();
    await c.query("SELECT 1");
    return true;
  } catch {
    return false;
  } finally {
    await c.end().catch(() => undefined);
  }
}

/**
 * True when the server answers. Under `CI` it is always true (the tests then run, and fail if the
 * server is down); elsewhere an unreachable server is reported once on stderr.
 */
export const pgReachable: boolean = process.env.CI ? true : await probe();
if (!pgReachable) process.stderr.write(`PostgreSQL tests skipped: no server at ${PG_URL.replace(/\/\/[^@]*@/, "//")} (set WB_TEST_PG, or run with CI=1 to require it)\n`);

/** A fresh schema on the test server: its store URL, and `drop()` to remove it with everything in it. */
export interface PgSchema {
  name: string;
  /** `postgres://…?schema=NAME`, as the config's `store` takes it. */
  url: string;
  drop(): Promise<void>;
}

/** Make a fresh, empty schema. */
export async function freshSchema(): Promise<PgSchema> {
  const name = `wb_test_${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  try {
    await admin.query(`CREATE SCHEMA ${name}`);
  } finally {
    await admin.end();
  }
  const sep = PG_URL.includes("?") ? "&" : "?";
  return {
    name,
    url: `${PG_URL}${sep}schema=${name}`,
    drop: () => dropSchema(name),
  };
}

/** Drop a schema of the test server with everything in it. */
export async function dropSchema(name: string): Promise<void> {
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  try {
    await c.query(`DROP SCHEMA IF EXISTS ${name} CASCADE`);
  } finally {
    await c.end();
  }
}
