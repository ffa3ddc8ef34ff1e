/**
 * The PostgreSQL store's connection plumbing: the store URL, the pool, prepared statements,
 * transactions that retry on deadlocks and serialization failures, and the outbox counters each
 * transaction adds to.
 * @module
 */
import { createHash } from "node:crypto";
import pg from "pg";

import type { Row } from "../rows.js";

/** A row as `pg` returns it (int8 parsed to number: ids, seqs and ms times stay below 2^53). */
export type { Row };

/** What {@link parseStoreUrl} reads from a `postgres://` store string. */
export interface PgTarget {
  /** The connection string without our own parameters. */
  connectionString: string;
  /** `?schema=NAME`: the tables live in this schema (created if missing). */
  schema: string | undefined;
  /** `?pool=N`: connections per process (default 10). */
  poolSize: number;
  /** The URL without its password, for logs and errors. */
  display: string;
}

const SCHEMA_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

/**
 * Read a `postgres://user:pass@host:port/db?schema=NAME&pool=N` store string; other parameters go
 * to the driver (e.g. `sslmode`).
 * @throws Error (without the password) when the URL, schema or pool is malformed
 */
export function parseStoreUrl(spec: string): PgTarget {
  let url: URL;
  try {
    url = new URL(spec);
  } catch {
    throw new Error("store: not a valid postgres:// URL");
  }
  if (url.password) url.password = "";
  for (const k of [...url.searchParams.keys()]) if (/pass|key|secret|token/i.test(k)) url.searchParams.set(k, "…");
  const display = url.toString();
  const real = new URL(spec);
  const schema = real.searchParams.get("schema") ?? undefined;
  if (schema !== undefined && !SCHEMA_NAME.test(schema)) throw new Error(`store: schema must be 1-63 characters of [A-Za-z0-9_] (${display})`);
  const pool = Number(real.searchParams.get("pool") ?? 10);
  if (!Number.isInteger(pool) || pool < 2 || pool > 200) throw new Error(`store: pool must be an integer from 2 to 200 (${display})`);
  real.searchParams.delete("schema");
  real.searchParams.delete("pool");
  return { connectionString: real.toString(), schema, poolSize: pool, display };
}

const INT8 = 20;
const types = {
  getTypeParser: ((oid: number, format?: string) => (oid === INT8 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as "text"))) as typeof pg.types.getTypeParser,
};

/** How long the server lets a session sit idle inside a transaction (a frozen replica's), ms. */
export const IDLE_IN_TRANSACTION_MS = 60_000;

/** The session settings of every connection: its schema, and {@link IDLE_IN_TRANSACTION_MS}. */
export function sessionOptions(t: PgTarget): string {
  return `${t.schema === undefined ? "" : `-c search_path=${t.schema} `}-c idle_in_transaction_session_timeout=${IDLE_IN_TRANSACTION_MS}`;
}

/** A pool on the target, every connection in its schema. */
export function makePool(t: PgTarget): pg.Pool {
  const pool = new pg.Pool({
    connectionString: t.connectionString,
    max: t.poolSize,
    types,
    options: sessionOptions(t),
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 30_000,
    // a replica that froze or lost its network must not hold rows locked: the server ends a
    // session idle in a transaction after a minute, and TCP keepalive finds dead peers
    keepAlive: true,
  });
  // an idle connection that the server dropped: the pool replaces it; nothing to do here
  pool.on("error", () => undefined);
  return pool;
}

const names = new Map<string, string>();

/** Run `text` as a named (prepared, once per connection) statement. */
export async function q(c: pg.Pool | pg.ClientBase, text: string, values: unknown[] = []): Promise<Row[]> {
  let name = names.get(text);
  if (name === undefined) {
    name = `wb_${createHash("sha1").update(text).digest("hex").slice(0, 20)}`;
    names.set(text, name);
  }
  return (await (c as pg.ClientBase).query({ name, text, values })).rows as Row[];
}

/** A running transaction: its connection, and the outbox count changes it made. */
export interface Tx {
  c: pg.PoolClient;
  /** `tenant\0state` → change */
  counts: Map<string, number>;
}

/** Add `delta` to the count of `state` entries of `tenant` (written at commit). */
export function count(tx: Tx, tenant: string, state: string, delta: number): void {
  if (delta === 0) return;
  const k = `${tenant}\u0000${state}`;
  tx.counts.set(k, (tx.counts.get(k) ?? 0) + delta);
}

/** Slots per (tenant, state) of outbox_counts. */
const SLOTS = 64;

/** A slot of outbox_counts for a transaction's changes (random: concurrent writers rarely share one). */
export function countSlot(): number {
  return Math.floor(Math.random() * SLOTS);
}

async function flushCounts(tx: Tx): Promise<void> {
  if (tx.counts.size === 0) return;
  const keys = [...tx.counts.keys()].filter((k) => tx.counts.get(k) !== 0).sort();
  if (keys.length === 0) return;
  const split = keys.map((k) => k.split("\u0000") as [string, string]);
  await q(
    tx.c,
    `INSERT INTO outbox_counts (tenant, state, slot, n) SELECT t, s, $3, d FROM unnest($1::text[], $2::text[], $4::bigint[]) AS u(t, s, d)
     ON CONFLICT (tenant, state, slot) DO UPDATE SET n = outbox_counts.n + excluded.n`,
    [split.map((s) => s[0]), split.map((s) => s[1]), countSlot(), keys.map((k) => tx.counts.get(k))],
  );
}

/** SQLSTATEs worth running the transaction again for: deadlock, serialization failure. */
const RETRYABLE = new Set(["40P01", "40001"]);

/**
 * Run `fn` in a transaction (READ COMMITTED; rows are locked explicitly where it matters). A
 * deadlock or serialization failure runs it again (up to 5 times, with a short random backoff),
 * so `fn` must only change the database, or be safe to run twice.
 */
export async function transaction<T>(pool: pg.Pool, fn: (tx: Tx) => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    const c = await pool.connect();
    const tx: Tx = { c, counts: new Map() };
    let broken: Error | undefined;
    try {
      await c.query("BEGIN");
      const r = await fn(tx);
      await flushCounts(tx);
      await c.query("COMMIT");
      return r;
    } catch (e) {
      try {
        await c.query("ROLLBACK");
      } catch (r) {
        broken = r as Error;
      }
      const code = (e as { code?: unknown }).code;
      if (attempt < 5 && typeof code === "string" && RETRYABLE.has(code)) {
        await new Promise((res) => setTimeout(res, 2 + Math.random() * 10 * (attempt + 1)));
        continue;
      }
      throw e;
    } finally {
      c.release(broken);
    }
  }
}

/** True when `e` says the connection or the server failed (not the statement). */
export function isConnectionError(e: unknown): boolean {
  const code = (e as { code?: unknown }).code;
  if (typeof code === "string" && /^(08|57P|53|E[A-Z]+$)/.test(code)) return true;
  return /connection (terminated|ended|timeout)|Client has encountered a connection error|pool.*end/i.test((e as Error)?.message ?? "");
}
