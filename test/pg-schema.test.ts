/**
 * The PostgreSQL schema can be distributed by tenant (Citus is not installable here: this is the
 * check). Every table but the reference tables has the tenant first in its primary key and in every
 * unique index, and no statement the store runs joins two tenant-keyed tables without equating
 * each one's tenant to another relation's tenant column (read from the store's sources). Migrations run once when several replicas start together.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { PostgresStore } from "../src/store/postgres/index.js";
import { PG_MIGRATIONS, REFERENCE_TABLES } from "../src/store/postgres/migrations.js";
import { freshSchema, type PgSchema, pgReachable } from "./pg.js";

const SRC = join(import.meta.dirname, "../src/store/postgres");

/** The tables migration 1 creates (from its SQL). */
function tablesOfMigrations(): string[] {
  const names = new Set<string>();
  for (const m of PG_MIGRATIONS) for (const x of m.sql.matchAll(/CREATE TABLE (\w+)/g)) names.add(x[1] as string);
  return [...names];
}

/** SQL statements in the store's sources: every template or string literal that reads like one. */
function storeStatements(): { file: string; sql: string }[] {
  const out: { file: string; sql: string }[] = [];
  for (const f of readdirSync(SRC).filter((n) => n.endsWith(".ts") && n !== "migrations.ts")) {
    const text = readFileSync(join(SRC, f), "utf8");
    for (const m of text.matchAll(/`([^`]*)`|"((?:[^"\\]|\\.)*)"/g)) {
      const sql = (m[1] ?? m[2] ?? "").replace(/\s+/g, " ");
      if (/\b(SELECT|UPDATE|DELETE|INSERT)\b/.test(sql) && /\b(FROM|INTO|UPDATE)\b/.test(sql)) out.push({ file: f, sql });
    }
  }
  return out;
}

/**
 * Aliases of the tenant-keyed tables a statement reads or updates (`outbox o`, `outbox AS o`, or
 * the bare name). An INSERT's target is not a join: rows written from parameter arrays each carry
 * their own tenant.
 */
function distributedRefs(sql: string, distributed: Set<string>): string[] {
  const refs: string[] = [];
  for (const m of sql.matchAll(/\b(FROM|JOIN|USING|UPDATE)\s+(\w+)(?:\s+(?:AS\s+)?(\w+))?/gi)) {
    const table = m[2] as string;
    if (!distributed.has(table)) continue;
    const alias = m[3];
    refs.push(alias && !/^(WHERE|SET|ON|USING|JOIN|LEFT|ORDER|GROUP|LIMIT|FOR|RETURNING|SELECT|VALUES|AS)$/i.test(alias) ? alias : table);
  }
  return refs;
}

/** The references after the first that are not tied to another relation's tenant. */
function untied(sql: string, refs: string[]): string[] {
  return refs.slice(1).filter(
    (alias) =>
      // its tenant equated to another relation's tenant column (a table, a CTE, an unnest of keys)
      !new RegExp(`\\b${alias}\\.tenant\\s*=\\s*\\w+\\.\\w+\\b|\\b\\w+\\.\\w+\\s*=\\s*${alias}\\.tenant\\b`).test(sql) &&
      // a semi-join on the whole key: (tenant, id) IN (SELECT tenant, id FROM …), or = (SELECT …)
      !/\(\s*tenant\s*,[^)]*\)\s*(?:IN|=)\s*\(\s*SELECT\s+(?:\w+\.)?tenant\s*,/.test(sql),
  );
}

describe("the schema can be distributed by tenant", () => {
  it("every tenant-keyed table has the tenant first in its primary key and every unique index", { skip: !pgReachable }, async () => {
    const schema = await freshSchema();
    try {
      const store = await PostgresStore.open({ url: schema.url });
      await store.close();
      const c = new pg.Client({ connectionString: schema.url.replace(/[?&]schema=\w+/, "") });
      await c.connect();
      try {
        const tables = (await c.query("SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1", [schema.name])).rows.map((r) => r.table_name as string);
        expect(tables.sort()).toEqual(tablesOfMigrations().concat("schema_migrations").sort());
        const indexes = (
          await c.query(
            `SELECT t.relname AS table, i.relname AS index, ix.indisprimary AS primary, ix.indisunique AS unique,
               (SELECT a.attname FROM pg_attribute a WHERE a.attrelid = t.oid AND a.attnum = ix.indkey[0]) AS first
             FROM pg_index ix JOIN pg_class t ON t.oid = ix.indrelid JOIN pg_class i ON i.oid = ix.indexrelid JOIN pg_namespace n ON n.oid = t.relnamespace
             WHERE n.nspname = $1`,
            [schema.name],
          )
        ).rows as { table: string; index: string; primary: boolean; unique: boolean; first: string }[];
        for (const t of tables) {
          if (REFERENCE_TABLES.includes(t)) continue;
          const own = indexes.filter((i) => i.table === t);
          expect(
            own.some((i) => i.primary),
            `${t} has a primary key`,
          ).toBe(true);
          for (const i of own.filter((x) => x.primary || x.unique)) expect(i.first, `${t}.${i.index} starts with tenant`).toBe("tenant");
          const cols = (await c.query("SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2", [schema.name, t])).rows.map((r) => r.column_name);
          expect(cols, `${t} has a tenant column`).toContain("tenant");
        }
      } finally {
        await c.end();
      }
    } finally {
      await schema.drop();
    }
  });

  it("no statement joins two tenant-keyed tables without equating their tenants", () => {
    const distributed = new Set(tablesOfMigrations().filter((t) => !REFERENCE_TABLES.includes(t)));
    const statements = storeStatements();
    expect(statements.length).toBeGreaterThan(40);
    let joins = 0;
    for (const { file, sql } of statements) {
      const refs = distributedRefs(sql, distributed);
      if (refs.length < 2) continue;
      joins++;
      for (const alias of untied(sql, refs)) expect.fail(`${file}: ${alias} joined without its tenant in: ${sql.slice(0, 300)}`);
    }
    // the check has joins to check
    expect(joins).toBeGreaterThan(3);
  });

  it("statements name their columns (a replica of the previous release keeps working after a migration adds one)", () => {
    // a prepared `SELECT *` fails with "cached plan must not change result type" once a column is added
    for (const { file, sql } of storeStatements()) {
      expect(/SELECT\s+\*|RETURNING\s+\*|\b(?!u\b)\w+\.\*/.test(sql), `${file}: ${sql.slice(0, 200)}`).toBe(false);
    }
  });

  it("the check catches a join without the tenant", () => {
    const distributed = new Set(["outbox", "messages"]);
    const sql = "SELECT 1 FROM messages m WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.message_seq = m.seq)";
    const refs = distributedRefs(sql, distributed);
    expect(refs).toEqual(["m", "o"]);
    expect(untied(sql, refs)).toEqual(["o"]);
    expect(untied(sql.replace("o.message_seq", "o.tenant = m.tenant AND o.message_seq"), refs)).toEqual([]);
  });
});

describe("migrations", () => {
  let schema: PgSchema | undefined;
  afterEach(async () => {
    await schema?.drop();
    schema = undefined;
  });

  it("replicas starting together migrate once; a reopen applies nothing", { skip: !pgReachable }, async () => {
    schema = await freshSchema();
    const url = schema.url;
    const stores = await Promise.all([1, 2, 3].map(() => PostgresStore.open({ url })));
    try {
      for (const s of stores) expect(await s.appliedMigrations()).toEqual(PG_MIGRATIONS.map((m) => m.version));
      const again = await PostgresStore.open({ url });
      expect(await again.appliedMigrations()).toEqual(PG_MIGRATIONS.map((m) => m.version));
      await again.close();
    } finally {
      for (const s of stores) await s.close();
    }
  });

  it("a maintenance command refuses a database without the store's tables", { skip: !pgReachable }, async () => {
    schema = await freshSchema();
    await expect(PostgresStore.open({ url: schema.url, mustExist: true })).rejects.toThrow(/no wecom-bridge tables/);
  });

  it("the store URL's password never shows in its display form or errors", async () => {
    const { parseStoreUrl } = await import("../src/store/postgres/connection.js");
    const t = parseStoreUrl("postgres://app:s3cr3t-pw@db.example:5432/bridge?schema=wb&pool=4&sslmode=require");
    expect(t.display).not.toContain("s3cr3t-pw");
    expect(t.schema).toBe("wb");
    expect(t.poolSize).toBe(4);
    expect(t.connectionString).toContain("sslmode=require");
    expect(t.connectionString).not.toContain("schema=");
    expect(() => parseStoreUrl("postgres://app:s3cr3t-pw@db/x?schema=bad-name")).toThrow(/schema/);
    expect(() => parseStoreUrl("postgres://app:s3cr3t-pw@db/x?schema=bad-name")).not.toThrow(/s3cr3t/);
    expect(() => parseStoreUrl("postgres://app:s3cr3t-pw@db/x?pool=1")).toThrow(/pool/);
  });
});
