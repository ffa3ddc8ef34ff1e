/**
 * The PostgreSQL store (`"store": "postgres://user@host:5432/db?schema=NAME&pool=N"`): the same
 * {@link Store} as SQLite, for several gateway replicas and many corps on one database.
 *
 * - Coordination is the database's: the ledger's primary key makes a callback and its retry on
 *   two replicas one row (the second caller waits for the first's commit, then reads it as
 *   known); outbox claims lock rows with `FOR UPDATE SKIP LOCKED` under a lease; shared state and
 *   the 全媒体's idempotency keys are read-modify-written under row locks.
 * - Statements are prepared once per connection (named); finishes, outbound accepts and shared
 *   state updates asked for during one event-loop turn share a transaction (group commit), as
 *   ingest batches do.
 * - Migrations run under an advisory lock: replicas starting together migrate once.
 * @module
 */
import { randomBytes } from "node:crypto";
import type pg from "pg";
import { BridgeError } from "../../errors.js";
import type { Channel, } from "../../model.js";
import type {
  ArchivePushRow,
  AuditRow,
  ConversationSummary,
  IngestItem,
  IngestResult,
  KfCursor,
  KfCursorListItem,
  MediaRow,
  MessageFilter,
  OutboundAccept,
  OutboundAcceptResult,
  OutboxClaim,
  OutboxEntry,
  OutboxInsert,
  OutboxKind,
  OutboxOutcome,
  OutboxState,
  Page,
  PruneCutoffs,
  PruneResult,
  StateWrite,
  Store,
  StoredMessage,
  TokenRow,
} from "../types.js";
import { count, isConnectionError, makePool, type PgTarget, parseStoreUrl, q, type Row, type Tx, transaction } from "./connection.js";
import { ingestTx } from "./ingest.js";
import { PG_MIGRATIONS } from "./migrations.js";
import { channelOf, WorkNotifier } from "./notify.js";
import { claimTenant, finishEntry, insertEntries, releaseExpired, repairLanes, reviveDead } from "./outbox.js";
import { pruneTx } from "./retention.js";
import { archiveFromRow, auditFromRow, conversationFromRow, cursorFromRow, mediaFromRow, messageFromRow, outboxFromRow } from "../rows.js";
import { lockState, readState, writeState } from "./state.js";

export { parseStoreUrl } from "./connection.js";

/** Options of {@link PostgresStore.open}. */
export interface PostgresStoreOptions {
  /** `postgres://…` with optional `?schema=NAME&pool=N`. */
  url: string;
  /** Accepted for symmetry with SQLite; replicas share the database, so nothing is released at open (leases expire instead). */
  owner?: boolean;
  /** Refuse a database without this store's tables instead of creating them (the maintenance commands). */
  mustExist?: boolean;
}

const STATES: readonly OutboxState[] = ["pending", "inflight", "done", "dead", "refused"];
/** Most tenants remembered as registered (tenants come from the config; bounded all the same). */
const TENANTS_MAX = 10_000;




/** A write waiting for the turn's group commit. */
interface PendingWrite {
  run: (tx: Tx) => Promise<unknown>;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

/**
 * The PostgreSQL implementation of {@link Store}.
 * @example const store = await PostgresStore.open({ url: "postgres://app@db:5432/bridge?schema=wb" });
 */
export class PostgresStore implements Store {
  readonly engine = "postgres";
  readonly pool: pg.Pool;
  readonly target: PgTarget;
  /** This process among the replicas (written on the entries it holds in flight). */
  readonly replicaId = randomBytes(6).toString("hex");
  /** Tenants this process has written to the tenants table. */
  readonly #registered = new Set<string>();
  #writes: PendingWrite[] = [];
  /** Ingests and accepts under way (close() waits for them). */
  readonly #ops = new Set<Promise<unknown>>();
  #closing = false;

  /** Run an operation that close() must wait for. */
  #op<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#closing) return Promise.reject(new Error("store closed"));
    const p = fn();
    this.#ops.add(p);
    const done = () => this.#ops.delete(p);
    p.then(done, done);
    return p;
  }
  #writesScheduled = false;
  #inflightWrites = new Set<Promise<void>>();
  #closed = false;

  /** Open a pool on the URL and migrate. */
  static async open(options: PostgresStoreOptions): Promise<PostgresStore> {
    const store = new PostgresStore(parseStoreUrl(options.url));
    try {
      if (options.mustExist === true && !(await store.initialised())) {
        throw new BridgeError("store_missing", `no wecom-bridge tables at ${store.target.display}: check the config's store`);
      }
      await store.migrate();
    } catch (e) {
      await store.pool.end().catch(() => undefined);
      throw e;
    }
    return store;
  }

  /** Use {@link PostgresStore.open}. */
  constructor(target: PgTarget) {
    this.target = target;
    this.pool = makePool(target);
    this.#notifier = new WorkNotifier(this.pool, target, this.replicaId);
  }

  readonly #notifier: WorkNotifier;

  /** See {@link Store.subscribe}: other replicas' new work, by LISTEN/NOTIFY. */
  subscribe(onWork: () => void): () => void {
    return this.#notifier.subscribe(onWork);
  }

  #tx<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    return transaction(this.pool, fn);
  }

  /** Apply the migrations not yet applied, under the schema's migration lock. */
  async migrate(): Promise<void> {
    const c = await this.pool.connect();
    try {
      await c.query("BEGIN");
      // one migrator per schema at a time; the others wait here, then find nothing to do
      await c.query("SELECT pg_advisory_xact_lock(8031, hashtext($1))", [this.target.schema ?? "public"]);
      // CREATE SCHEMA needs CREATE on the database even when the schema exists: only when missing
      if (this.target.schema !== undefined && (await c.query("SELECT 1 FROM pg_namespace WHERE nspname = $1", [this.target.schema])).rowCount === 0) {
        await c.query(`CREATE SCHEMA ${this.target.schema}`);
      }
      await c.query("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)");
      const applied = new Set((await c.query("SELECT version FROM schema_migrations")).rows.map((r: Row) => r.version as number));
      for (const m of PG_MIGRATIONS) {
        if (applied.has(m.version)) continue;
        await c.query(m.sql);
        await c.query("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)", [m.version, m.name, Date.now()]);
      }
      await c.query("COMMIT");
    } catch (e) {
      await c.query("ROLLBACK").catch(() => undefined);
      throw e;
    } finally {
      c.release();
    }
  }

  /** The versions applied, in order. */
  async appliedMigrations(): Promise<number[]> {
    return (await q(this.pool, "SELECT version FROM schema_migrations ORDER BY version")).map((r) => r.version as number);
  }

  /** True when the database has this store's tables (the maintenance commands refuse an empty one). */
  async initialised(): Promise<boolean> {
    const r = await this.pool.query("SELECT to_regclass('schema_migrations') IS NOT NULL AS ok");
    return r.rows[0]?.ok === true;
  }

  async ping(): Promise<boolean> {
    try {
      return (await this.pool.query("SELECT 1 AS ok")).rows[0]?.ok === 1;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    // what was asked for before close() finishes first (ingests and accepts wait for their tenant's
    // registration before they queue their transaction)
    this.#closing = true;
    await Promise.allSettled([...this.#ops]);
    if (this.#writes.length > 0) this.#flushWrites();
    await Promise.allSettled([...this.#inflightWrites]);
    // entries this process still holds (an attempt abandoned at shutdown) go back at once, so
    // that another replica takes them now rather than when their lease runs out
    await this.releaseHeld().catch(() => undefined);
    this.#closed = true;
    await this.#notifier.close();
    await this.pool.end();
  }

  /** Put the entries this process holds in flight back to pending (its attempts counted); returns how many. */
  async releaseHeld(): Promise<number> {
    return this.#tx(async (tx) => {
      const rows = await q(
        tx.c,
        "UPDATE outbox SET state = 'pending', lease_until = NULL, lease_owner = NULL WHERE lease_owner = $1 AND state = 'inflight' RETURNING tenant",
        [this.replicaId],
      );
      for (const r of rows) countMove(tx, r.tenant as string, "inflight", "pending");
      // the other replicas take them now (sent at commit)
      if (rows.length > 0) await q(tx.c, "SELECT pg_notify($1, $2)", [channelOf(this.target.schema), this.replicaId]);
      return rows.length;
    });
  }

  /** Record tenants in the tenants table once per process (claims walk them). */
  async #register(tenants: Iterable<string>): Promise<void> {
    const fresh = [...new Set(tenants)].filter((t) => !this.#registered.has(t)).sort();
    if (fresh.length === 0) return;
    await this.pool.query("INSERT INTO tenants (tenant, created_at) SELECT unnest($1::text[]), $2 ON CONFLICT DO NOTHING", [fresh, Date.now()]);
    if (this.#registered.size + fresh.length > TENANTS_MAX) this.#registered.clear();
    for (const t of fresh) this.#registered.add(t);
  }

  // --- ingest ------------------------------------------------------------------------------------

  async ingest(items: IngestItem[], cursor?: { tenant: string; openKfId: string; cursor: string }, now: number = Date.now()): Promise<IngestResult[]> {
    if (items.length === 0 && cursor === undefined) return [];
    return this.#op(async () => {
      await this.#register([...items.map((i) => i.tenant), ...(cursor ? [cursor.tenant] : [])]);
      const results = await this.#tx((tx) => ingestTx(tx, items, cursor, now));
      if (results.some((r) => r.stored)) this.#notifier.signal();
      return results;
    });
  }

  // --- KF cursors --------------------------------------------------------------------------------

  async getKfCursor(tenant: string, openKfId: string): Promise<KfCursor | undefined> {
    const [r] = await q(this.pool, "SELECT tenant, open_kfid, id, cursor, first_seen_at, updated_at FROM kf_cursors WHERE tenant = $1 AND open_kfid = $2", [tenant, openKfId]);
    if (r === undefined) return undefined;
    const { id: _id, ...c } = cursorFromRow(r);
    return c;
  }

  async touchKfAccount(tenant: string, openKfId: string, firstSeenAt: number): Promise<KfCursor> {
    await this.#register([tenant]);
    await q(
      this.pool,
      "INSERT INTO kf_cursors (tenant, open_kfid, cursor, first_seen_at, updated_at) VALUES ($1, $2, NULL, $3, $4) ON CONFLICT DO NOTHING",
      [tenant, openKfId, firstSeenAt, Date.now()],
    );
    return (await this.getKfCursor(tenant, openKfId)) as KfCursor;
  }

  async listKfCursors(page: Page & { tenant?: string }): Promise<KfCursorListItem[]> {
    const rows = await q(
      this.pool,
      "SELECT tenant, open_kfid, id, cursor, first_seen_at, updated_at FROM kf_cursors WHERE id < $1 AND ($3::text IS NULL OR tenant = $3) ORDER BY id DESC LIMIT $2",
      [page.before ?? Number.MAX_SAFE_INTEGER, page.limit, page.tenant ?? null],
    );
    return rows.map(cursorFromRow);
  }

  async listKfAccounts(tenant: string): Promise<string[]> {
    return (await q(this.pool, "SELECT open_kfid FROM kf_cursors WHERE tenant = $1 ORDER BY id", [tenant])).map((r) => r.open_kfid as string);
  }

  // --- outbox ------------------------------------------------------------------------------------

  async claimOutbox(kinds: OutboxKind[], now: number, limit: number, leaseMs: number): Promise<OutboxEntry[]> {
    if (kinds.length === 0 || limit <= 0) return [];
    // one read says which tenants have work (most calls find none, and write nothing)
    const work = await q(
      this.pool,
      `SELECT t.tenant,
         EXISTS (SELECT 1 FROM outbox o WHERE o.tenant = t.tenant AND o.state = 'pending' AND o.ready AND o.next_attempt_at <= $1) AS due,
         EXISTS (SELECT 1 FROM outbox o WHERE o.tenant = t.tenant AND o.state = 'inflight' AND o.lease_until < $1) AS expired
       FROM tenants t`,
      [now],
    );
    const busy = work.filter((w) => w.due === true || w.expired === true);
    if (busy.length === 0) return [];
    // a different tenant first on each call, so that one busy corp does not starve another
    const start = Math.floor(Math.random() * busy.length);
    const out: OutboxEntry[] = [];
    for (let n = 0; n < busy.length && out.length < limit; n++) {
      const w = busy[(start + n) % busy.length] as Row;
      const got = await this.#tx(async (tx) => {
        if (w.expired === true) await releaseExpired(tx, w.tenant as string, now);
        return claimTenant(tx, w.tenant as string, kinds, now, limit - out.length, now + leaseMs, this.replicaId);
      });
      out.push(...got);
    }
    return out;
  }

  async finishOutbox(entry: number | OutboxClaim, outcome: OutboxOutcome, now: number, followUps?: { tenant: string; messageSeq: number | null; entries: OutboxInsert[] }): Promise<void> {
    const id = typeof entry === "number" ? entry : entry.id;
    const attempts = typeof entry === "number" ? undefined : entry.attempts;
    await this.#write(async (tx) => {
      const tenant = await finishEntry(tx, id, outcome, now, attempts);
      if (tenant === undefined || followUps === undefined || followUps.entries.length === 0) return;
      // follow-ups of a message erased meanwhile have nothing left to work on
      const seq = followUps.messageSeq;
      if (seq !== null && (await q(tx.c, "SELECT 1 AS x FROM messages WHERE tenant = $1 AND seq = $2", [followUps.tenant, seq])).length === 0) return;
      await insertEntries(
        tx,
        followUps.entries.map((entry) => ({ tenant: followUps.tenant, messageSeq: seq, entry })),
        now,
      );
    });
  }

  async replayDead(ids: number[] | "all", now: number): Promise<number> {
    let total = 0;
    if (ids !== "all") total = ids.length === 0 ? 0 : await this.#tx((tx) => reviveDead(tx, ids, now, ids.length));
    else {
      for (;;) {
        const n = await this.#tx((tx) => reviveDead(tx, "all", now, 1000));
        total += n;
        if (n < 1000) break;
      }
    }
    if (total > 0) this.#notifier.signal();
    return total;
  }

  async getOutbox(id: number): Promise<OutboxEntry | undefined> {
    const [r] = await q(this.pool, "SELECT tenant, id, kind, conversation_id, message_seq, payload, state, attempts, next_attempt_at, last_error, errcode, created_at, updated_at FROM outbox WHERE id = $1", [id]);
    return r === undefined ? undefined : outboxFromRow(r);
  }

  async renewLease(entry: number | OutboxClaim, until: number, now: number): Promise<boolean> {
    const id = typeof entry === "number" ? entry : entry.id;
    const attempts = typeof entry === "number" ? null : entry.attempts;
    const rows = await q(
      this.pool,
      "UPDATE outbox SET lease_until = $2, updated_at = $3 WHERE id = $1 AND state = 'inflight' AND ($4::int IS NULL OR attempts = $4) RETURNING id",
      [id, until, now, attempts],
    );
    return rows.length === 1;
  }

  async refuseDelivered(id: number, errcode: number, error: string, now: number): Promise<boolean> {
    return this.#tx(async (tx) => {
      const rows = await q(tx.c, "UPDATE outbox SET state = 'refused', errcode = $2, last_error = $3, updated_at = $4 WHERE id = $1 AND state = 'done' RETURNING tenant", [
        id,
        errcode,
        error,
        now,
      ]);
      const tenant = rows[0]?.tenant as string | undefined;
      if (tenant === undefined) return false;
      countMove(tx, tenant, "done", "refused");
      return true;
    });
  }

  async outboxCounts(): Promise<Record<OutboxState, number>> {
    const counts: Record<OutboxState, number> = { pending: 0, inflight: 0, done: 0, dead: 0, refused: 0 };
    const rows = await q(this.pool, "SELECT state, sum(n)::bigint AS n FROM outbox_counts GROUP BY state");
    for (const r of rows) if ((STATES as readonly string[]).includes(r.state as string)) counts[r.state as OutboxState] = r.n as number;
    return counts;
  }

  /**
   * Entries in any of `states`, newest first: each state is read on (state, id) and the pages
   * merged; a conversation's entries are read on (conversation_id, id), newest first, in one
   * statement (a statement of its own: a generic plan keeps the index).
   */
  async listOutbox(states: OutboxState[], page: Page & { tenant?: string; conversationId?: string }): Promise<OutboxEntry[]> {
    const wanted = [...new Set(states)].filter((s) => (STATES as readonly string[]).includes(s));
    if (wanted.length === 0 || page.limit <= 0) return [];
    if (page.conversationId !== undefined) {
      const found = await q(
        this.pool,
        `SELECT tenant, id, kind, conversation_id, message_seq, payload, state, attempts, next_attempt_at, last_error, errcode, created_at, updated_at FROM outbox
         WHERE conversation_id = $1 AND message_seq IS NULL AND id < $2 AND state = ANY($3::text[]) AND ($5::text IS NULL OR tenant = $5) ORDER BY id DESC LIMIT $4`,
        [page.conversationId, page.before ?? Number.MAX_SAFE_INTEGER, wanted, page.limit, page.tenant ?? null],
      );
      return found.map(outboxFromRow);
    }
    const rows: Row[] = [];
    for (const state of wanted) {
      rows.push(
        ...(await q(
          this.pool,
          "SELECT tenant, id, kind, conversation_id, message_seq, payload, state, attempts, next_attempt_at, last_error, errcode, created_at, updated_at FROM outbox WHERE state = $1 AND id < $2 AND ($4::text IS NULL OR tenant = $4) ORDER BY id DESC LIMIT $3",
          [state, page.before ?? Number.MAX_SAFE_INTEGER, page.limit, page.tenant ?? null],
        )),
      );
    }
    rows.sort((a, b) => (b.id as number) - (a.id as number));
    return rows.slice(0, page.limit).map(outboxFromRow);
  }

  async nextOutboxDue(kinds: OutboxKind[]): Promise<number | undefined> {
    if (kinds.length === 0) return undefined;
    const [r] = await q(
      this.pool,
      `SELECT least(min(d.t), min(l.t)) AS t FROM tenants
       LEFT JOIN LATERAL (
         SELECT next_attempt_at AS t FROM outbox o WHERE o.tenant = tenants.tenant AND o.state = 'pending' AND o.ready AND o.kind = ANY($1::text[])
         ORDER BY next_attempt_at LIMIT 1) AS d ON true
       LEFT JOIN LATERAL (
         SELECT lease_until AS t FROM outbox o WHERE o.tenant = tenants.tenant AND o.state = 'inflight' AND o.kind = ANY($1::text[])
         ORDER BY lease_until LIMIT 1) AS l ON true`,
      [kinds],
    );
    return typeof r?.t === "number" ? r.t : undefined;
  }

  // --- messages and listings ---------------------------------------------------------------------

  async getMessage(seq: number): Promise<StoredMessage | undefined> {
    const [r] = await q(this.pool, "SELECT tenant, seq, channel, key, conversation_id, time, received_at, content_type, body FROM messages WHERE seq = $1", [seq]);
    return r === undefined ? undefined : messageFromRow(r);
  }

  async listMessages(filter: MessageFilter, page: Page): Promise<StoredMessage[]> {
    if (page.limit <= 0) return [];
    const given: [string, unknown][] = (
      [
        ["tenant = $", filter.tenant],
        ["channel = $", filter.channel],
        ["conversation_id = $", filter.conversationId],
        ["time >= $", filter.since],
        ["time < $", filter.until],
      ] as [string, unknown][]
    ).filter(([, v]) => v !== undefined);
    const where = given.map(([sql], i) => ` AND ${sql}${i + 3}`).join("");
    const rows = await q(this.pool, `SELECT tenant, seq, channel, key, conversation_id, time, received_at, content_type, body FROM messages WHERE seq < $1${where} ORDER BY seq DESC LIMIT $2`, [
      page.before ?? Number.MAX_SAFE_INTEGER,
      page.limit,
      ...given.map(([, v]) => v),
    ]);
    return rows.map(messageFromRow);
  }

  async listConversations(page: Page & { tenant?: string; channel?: Channel }): Promise<ConversationSummary[]> {
    const rows = await q(
      this.pool,
      `SELECT tenant, conversation_id, channel, messages, last_time, last_seq FROM conversations WHERE last_seq < $1 AND ($3::text IS NULL OR channel = $3) AND ($4::text IS NULL OR tenant = $4) ORDER BY last_seq DESC LIMIT $2`,
      [page.before ?? Number.MAX_SAFE_INTEGER, page.limit, page.channel ?? null, page.tenant ?? null],
    );
    return rows.map(conversationFromRow);
  }

  async listArchive(page: Page & { tenant?: string }): Promise<(ArchivePushRow & { id: number })[]> {
    const rows = await q(
      this.pool,
      "SELECT tenant, id, message_id, push_type, msgid, seq, received_at, body FROM archive_pushes WHERE id < $1 AND ($3::text IS NULL OR tenant = $3) ORDER BY id DESC LIMIT $2",
      [page.before ?? Number.MAX_SAFE_INTEGER, page.limit, page.tenant ?? null],
    );
    return rows.map(archiveFromRow);
  }

  // --- tokens, media, settings -------------------------------------------------------------------

  async getToken(tenant: string, key: string): Promise<TokenRow | undefined> {
    const [r] = await q(this.pool, "SELECT token, expires_at FROM tokens WHERE tenant = $1 AND key = $2", [tenant, key]);
    return r === undefined ? undefined : { tenant, key, token: r.token as string, expiresAt: r.expires_at as number };
  }

  async putToken(row: TokenRow): Promise<void> {
    await q(
      this.pool,
      "INSERT INTO tokens (tenant, key, token, expires_at) VALUES ($1, $2, $3, $4) ON CONFLICT (tenant, key) DO UPDATE SET token = excluded.token, expires_at = excluded.expires_at",
      [row.tenant, row.key, row.token, row.expiresAt],
    );
  }

  async deleteToken(tenant: string, key: string): Promise<void> {
    await q(this.pool, "DELETE FROM tokens WHERE tenant = $1 AND key = $2", [tenant, key]);
  }

  async putMedia(row: MediaRow): Promise<void> {
    await q(
      this.pool,
      "INSERT INTO media (tenant, id, message_seq, content_type, file_name, size, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
      [row.tenant, row.id, row.messageSeq, row.contentType, row.fileName, row.size, row.createdAt],
    );
  }

  async getMedia(tenant: string, id: string): Promise<MediaRow | undefined> {
    const [r] = await q(this.pool, "SELECT tenant, id, message_seq, content_type, file_name, size, created_at FROM media WHERE tenant = $1 AND id = $2", [tenant, id]);
    return r === undefined ? undefined : mediaFromRow(r);
  }

  /** See {@link Store.getOrCreateSetting}. */
  async getOrCreateSetting(name: string, create: () => string): Promise<string> {
    if (name.startsWith("store.")) throw new Error(`setting names starting with "store." are the store's own (${name})`);
    const get = async () => (await q(this.pool, "SELECT value FROM settings WHERE tenant = '' AND name = $1", [name]))[0]?.value as string | undefined;
    const found = await get();
    if (found !== undefined) return found;
    await q(this.pool, "INSERT INTO settings (tenant, name, value, created_at) VALUES ('', $1, $2, $3) ON CONFLICT (tenant, name) DO NOTHING", [
      name,
      create(),
      Date.now(),
    ]);
    return (await get()) as string;
  }

  // --- retention and erasure ---------------------------------------------------------------------

  async pruneBatch(cutoffs: PruneCutoffs, limit: number): Promise<PruneResult> {
    return this.#tx((tx) => pruneTx(tx, cutoffs, Math.max(1, Math.floor(limit))));
  }

  async eraseConversation(conversationId: string, tenant?: string): Promise<PruneResult> {
    return this.#tx(async (tx) => {
      const r: PruneResult = { messages: 0, outbox: 0, ledger: 0, archive: 0, state: 0, audit: 0, media: [] };
      const t = tenant ?? null;
      const messages = await q(tx.c, "DELETE FROM messages WHERE conversation_id = $1 AND ($2::text IS NULL OR tenant = $2) RETURNING tenant, seq, channel, key", [conversationId, t]);
      r.messages = messages.length;
      const seqs = messages.map((m) => m.seq as number);
      if (seqs.length > 0) {
        for (const row of await q(tx.c, "DELETE FROM media md USING unnest($1::text[], $2::bigint[]) AS u(t, s) WHERE md.tenant = u.t AND md.message_seq = u.s RETURNING md.tenant, md.id, md.message_seq, md.content_type, md.file_name, md.size, md.created_at", [
          messages.map((m) => m.tenant),
          seqs,
        ])) {
          r.media.push(mediaFromRow(row));
        }
        await q(
          tx.c,
          `UPDATE ledger l SET message_seq = NULL FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS u(t, ch, k, s)
           WHERE l.tenant = u.t AND l.channel = u.ch AND l.key = u.k AND l.message_seq = u.s`,
          [messages.map((m) => m.tenant), messages.map((m) => m.channel), messages.map((m) => m.key), seqs],
        );
        const archived = messages.filter((m) => m.channel === "archive");
        if (archived.length > 0) {
          const rows = await q(
            tx.c,
            "DELETE FROM archive_pushes a USING unnest($1::text[], $2::text[]) AS u(t, k) WHERE a.tenant = u.t AND a.msgid = u.k RETURNING a.id",
            [archived.map((m) => m.tenant), archived.map((m) => m.key)],
          );
          r.archive = rows.length;
        }
      }
      const entries = [
        ...(seqs.length === 0
          ? []
          : await q(
              tx.c,
              "DELETE FROM outbox o USING unnest($1::text[], $2::bigint[]) AS u(t, s) WHERE o.tenant = u.t AND o.message_seq = u.s RETURNING o.tenant, o.kind, o.conversation_id, o.state",
              [messages.map((m) => m.tenant), seqs],
            )),
        ...(await q(
          tx.c,
          "DELETE FROM outbox WHERE conversation_id = $1 AND message_seq IS NULL AND ($2::text IS NULL OR tenant = $2) RETURNING tenant, kind, conversation_id, state",
          [conversationId, t],
        )),
      ];
      r.outbox = entries.length;
      for (const e of entries) countMove(tx, e.tenant as string, e.state as string, undefined);
      await repairLanes(
        tx,
        entries.filter((e) => e.conversation_id !== null && (e.state === "pending" || e.state === "inflight")).map((e) => ({ tenant: e.tenant as string, kind: e.kind as string, conversationId: e.conversation_id as string })),
      );
      r.state = (await q(tx.c, "DELETE FROM shared_state WHERE conversation_id = $1 AND ($2::text IS NULL OR tenant = $2) RETURNING key", [conversationId, t])).length;
      await q(tx.c, "DELETE FROM conversations WHERE conversation_id = $1 AND ($2::text IS NULL OR tenant = $2)", [conversationId, t]);
      return r;
    });
  }

  async purgeDead(before?: number): Promise<number> {
    let total = 0;
    for (;;) {
      const n = await this.#tx(async (tx) => {
        const rows = await q(
          tx.c,
          // the condition again outside: a row that changed while this waited for its lock stays
          `DELETE FROM outbox WHERE (tenant, id) IN (
             SELECT tenant, id FROM outbox WHERE state = 'dead' AND ($1::bigint IS NULL OR updated_at < $1) ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED)
           AND state = 'dead' RETURNING tenant`,
          [before ?? null],
        );
        for (const row of rows) countMove(tx, row.tenant as string, "dead", undefined);
        return rows.length;
      });
      total += n;
      if (n < 1000) return total;
    }
  }

  // --- audit log ---------------------------------------------------------------------------------

  /** Append to the audit log (tenant null is stored as '', the whole installation's, as in settings). */
  async appendAudit(row: Omit<AuditRow, "id">): Promise<void> {
    await q(this.pool, "INSERT INTO audit_log (tenant, time, actor, origin, action, detail) VALUES ($1, $2, $3, $4, $5, left($6::text, 1000))", [
      row.tenant ?? "",
      row.time,
      row.actor,
      row.from,
      row.action,
      row.detail,
    ]);
  }

  async listAudit(page: Page): Promise<AuditRow[]> {
    if (page.limit <= 0) return [];
    const rows = await q(this.pool, "SELECT tenant, id, time, actor, origin, action, detail FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2", [
      page.before ?? Number.MAX_SAFE_INTEGER,
      page.limit,
    ]);
    return rows.map(auditFromRow);
  }

  // --- outbound accepts and shared state ---------------------------------------------------------

  async acceptOutbound(input: OutboundAccept): Promise<OutboundAcceptResult> {
    return this.#op(async () => {
      await this.#register([input.tenant]);
      const r = await this.#write((tx) => this.#acceptTx(tx, input));
      if (r.outcome === "queued") this.#notifier.signal();
      return r;
    });
  }

  async #acceptTx(tx: Tx, input: OutboundAccept): Promise<OutboundAcceptResult> {
    const { tenant, now } = input;
    // each key's row is locked (made as an expired placeholder when missing), in one order, so a
    // retry on another replica waits for this one's commit and then finds the key
    const keys = [...input.keys].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    const placeholders: string[] = [];
    let live: Row | undefined;
    for (const k of keys) {
      const [r] = await q(
        tx.c,
        `INSERT INTO outbound_keys (tenant, key, outbox_id, expires_at) VALUES ($1, $2, NULL, -1)
         ON CONFLICT (tenant, key) DO UPDATE SET tenant = excluded.tenant
         RETURNING expires_at, refused_errcode, refused_errmsg, (xmax = 0) AS inserted`,
        [tenant, k.key],
      );
      if (r?.inserted === true) placeholders.push(k.key);
      else if (live === undefined && r !== undefined && (r.expires_at as number) >= now) live = r;
    }
    const settle = async (refusal?: { errcode: number; errmsg: string }) => {
      // keys marked `always` outlive a duplicate or a refusal; the others leave no trace
      for (const k of input.keys) {
        if (k.always === true) {
          await q(
            tx.c,
            `UPDATE outbound_keys SET expires_at = greatest(expires_at, $3), refused_errcode = coalesce($4::int, refused_errcode), refused_errmsg = coalesce($5::text, refused_errmsg)
             WHERE tenant = $1 AND key = $2`,
            [tenant, k.key, k.expiresAt, refusal?.errcode ?? null, refusal?.errmsg ?? null],
          );
        } else if (placeholders.includes(k.key)) {
          await q(tx.c, "DELETE FROM outbound_keys WHERE tenant = $1 AND key = $2", [tenant, k.key]);
        }
      }
    };
    if (live !== undefined) {
      if (typeof live.refused_errcode === "number") {
        await settle();
        return { outcome: "refused", errcode: live.refused_errcode, errmsg: (live.refused_errmsg as string | null) ?? "" };
      }
      await settle();
      return { outcome: "duplicate" };
    }
    let write: StateWrite | undefined;
    let placeholderState = false;
    if (input.rule !== undefined) {
      const current = await lockState(tx, tenant, input.rule.key, now);
      placeholderState = current.placeholder;
      const decided = input.rule.decide(current.value);
      if (decided !== undefined && "refuse" in decided) {
        await settle(decided.refuse);
        if (placeholderState) await q(tx.c, "DELETE FROM shared_state WHERE tenant = $1 AND key = $2", [tenant, input.rule.key]);
        return { outcome: "refused", errcode: decided.refuse.errcode, errmsg: decided.refuse.errmsg };
      }
      write = decided;
    }
    const ids = await insertEntries(
      tx,
      input.entries.map((entry) => ({ tenant, messageSeq: null, entry })),
      now,
    );
    await q(
      tx.c,
      `UPDATE outbound_keys o SET outbox_id = $2, expires_at = u.e, refused_errcode = NULL, refused_errmsg = NULL
       FROM unnest($3::text[], $4::bigint[]) AS u(k, e) WHERE o.tenant = $1 AND o.key = u.k`,
      [tenant, ids[0] ?? null, input.keys.map((k) => k.key), input.keys.map((k) => k.expiresAt)],
    );
    if (input.rule !== undefined) {
      if (write !== undefined) await writeState(tx, tenant, input.rule.key, input.rule.conversationId, write, now);
      else if (placeholderState) await q(tx.c, "DELETE FROM shared_state WHERE tenant = $1 AND key = $2", [tenant, input.rule.key]);
    }
    return { outcome: "queued", ids };
  }

  async getState(tenant: string, key: string, now: number): Promise<unknown> {
    return readState(this.pool, tenant, key, now);
  }

  async updateState(tenant: string, key: string, conversationId: string | null, now: number, update: (current: unknown) => StateWrite | null | undefined): Promise<unknown> {
    return this.#write(async (tx) => {
      const current = await lockState(tx, tenant, key, now);
      const next = update(current.value);
      if (next === null || (next === undefined && current.placeholder)) {
        await q(tx.c, "DELETE FROM shared_state WHERE tenant = $1 AND key = $2", [tenant, key]);
        return next === null ? undefined : current.value;
      }
      if (next === undefined) return current.value;
      await writeState(tx, tenant, key, conversationId, next, now);
      return next.value;
    });
  }

  // --- group commit ------------------------------------------------------------------------------

  /**
   * Group commit of finishes, outbound accepts and shared-state updates: the writes asked for
   * during one event-loop turn share one transaction, each caller answered once it committed.
   * When the shared transaction fails, each write runs again in its own, so one bad write fails
   * only its caller; when the database itself is unavailable, all fail at once.
   */
  #write<T>(run: (tx: Tx) => Promise<T>): Promise<T> {
    if (this.#closed) return Promise.reject(new Error("store closed"));
    // a write asked for while close() waits is flushed by it
    return new Promise<T>((resolve, reject) => {
      this.#writes.push({ run, resolve: resolve as (v: unknown) => void, reject });
      if (this.#writesScheduled) return;
      this.#writesScheduled = true;
      setImmediate(() => this.#flushWrites());
    });
  }

  #flushWrites(): void {
    this.#writesScheduled = false;
    const batch = this.#writes;
    this.#writes = [];
    if (batch.length === 0) return;
    const p = this.#commit(batch).finally(() => this.#inflightWrites.delete(p));
    this.#inflightWrites.add(p);
  }

  async #commit(batch: PendingWrite[]): Promise<void> {
    if (batch.length > 1) {
      try {
        const results = await this.#tx(async (tx) => {
          const out: unknown[] = [];
          for (const w of batch) out.push(await w.run(tx));
          return out;
        });
        batch.forEach((w, i) => {
          w.resolve(results[i]);
        });
        return;
      } catch (e) {
        if (isConnectionError(e)) {
          for (const w of batch) w.reject(e);
          return;
        }
        // one of them failed: each alone below
      }
    }
    await Promise.all(
      batch.map(async (w) => {
        try {
          w.resolve(await this.#tx(w.run));
        } catch (e) {
          w.reject(e);
        }
      }),
    );
  }
}


/** Count an entry leaving `from` (removed when `to` is undefined) and entering `to`. */
function countMove(tx: Tx, tenant: string, from: string, to: string | undefined): void {
  count(tx, tenant, from, -1);
  if (to !== undefined) count(tx, tenant, to, 1);
}
