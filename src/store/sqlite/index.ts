/**
 * The embedded store: SQLite through better-sqlite3, in WAL mode with synchronous=NORMAL (a
 * committed transaction survives a process kill; a power loss may lose the last ones).
 * @module
 */
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import type { Channel, UnifiedMessage } from "../../model.js";
import type {
  ArchivePushRow,
  ConversationSummary,
  IngestItem,
  IngestResult,
  KfCursor,
  MediaRow,
  MessageFilter,
  OutboxEntry,
  OutboxInsert,
  OutboxKind,
  OutboxOutcome,
  OutboxState,
  Page,
  Store,
  StoredMessage,
  TokenRow,
} from "../types.js";
import { type Checkpointer, startCheckpointer } from "./checkpointer.js";
import { MIGRATIONS } from "./migrations.js";

type Row = Record<string, unknown>;
type Stmt = Database.Statement<unknown[], Row>;

function outboxFromRow(r: Row): OutboxEntry {
  return {
    id: r.id as number,
    tenant: r.tenant as string,
    kind: r.kind as OutboxKind,
    conversationId: (r.conversation_id as string | null) ?? null,
    messageSeq: (r.message_seq as number | null) ?? null,
    payload: JSON.parse(r.payload as string),
    state: r.state as OutboxState,
    attempts: r.attempts as number,
    nextAttemptAt: r.next_attempt_at as number,
    lastError: (r.last_error as string | null) ?? null,
    createdAt: r.created_at as number,
    updatedAt: r.updated_at as number,
  };
}

function messageFromRow(r: Row): StoredMessage {
  return {
    seq: r.seq as number,
    tenant: r.tenant as string,
    channel: r.channel as Channel,
    key: r.key as string,
    conversationId: r.conversation_id as string,
    time: r.time as number,
    receivedAt: r.received_at as number,
    contentType: r.content_type as string,
    message: JSON.parse(r.body as string) as UnifiedMessage,
  };
}

function cursorFromRow(r: Row): KfCursor {
  const c: KfCursor = {
    tenant: r.tenant as string,
    openKfId: r.open_kfid as string,
    firstSeenAt: r.first_seen_at as number,
    updatedAt: r.updated_at as number,
  };
  if (typeof r.cursor === "string") c.cursor = r.cursor;
  return c;
}

/** A lane's live entries: how many, and the last one (where the next is chained). */
interface Lane {
  live: number;
  tail: number;
}

/**
 * Lanes kept in memory: the store is written by one process. Changes made inside a transaction
 * go to an overlay that is merged on commit and dropped on rollback.
 */
class LaneCache {
  readonly #lanes = new Map<string, Lane>();
  #overlay: Map<string, Lane> | undefined;

  static key(tenant: string, kind: string, conversationId: string): string {
    return `${tenant}\u0000${kind}\u0000${conversationId}`;
  }

  get(key: string): Lane | undefined {
    const o = this.#overlay?.get(key);
    if (o !== undefined) return o.live > 0 ? o : undefined;
    return this.#lanes.get(key);
  }

  set(key: string, lane: Lane): void {
    if (this.#overlay) this.#overlay.set(key, lane);
    else if (lane.live > 0) this.#lanes.set(key, lane);
    else this.#lanes.delete(key);
  }

  /** Run `fn` (a transaction): lane changes land only if it returns. */
  run<T>(fn: () => T): T {
    this.#overlay = new Map();
    try {
      const r = fn();
      const overlay = this.#overlay;
      this.#overlay = undefined;
      for (const [k, v] of overlay) this.set(k, v);
      return r;
    } finally {
      this.#overlay = undefined;
    }
  }

  clear(): void {
    this.#lanes.clear();
  }
}

/** The SQL conditions whose value is given (not undefined), and their arguments in order. */
function conditions(pairs: [sql: string, value: unknown][]): { where: string[]; args: unknown[] } {
  const given = pairs.filter(([, v]) => v !== undefined);
  return { where: given.map(([sql]) => sql), args: given.map(([, v]) => v) };
}

/** Options of {@link SqliteStore}. */
export interface SqliteStoreOptions {
  /** Database file, or ":memory:". */
  path: string;
  /** This process is the gateway serving the file (see {@link SqliteStore.open}). */
  owner?: boolean;
}

/**
 * The SQLite implementation of {@link Store}.
 * @example const store = await SqliteStore.open({ path: "./data/bridge.db" });
 */
export class SqliteStore implements Store {
  readonly engine = "sqlite";
  readonly db: Database.Database;
  readonly #stmts = new Map<string, Stmt>();
  readonly #lanes = new LaneCache();
  #checkpointer: Checkpointer | undefined;
  readonly #ingest: (items: IngestItem[], cursor: { tenant: string; openKfId: string; cursor: string } | undefined) => IngestResult[];

  /**
   * Open (creating the folder and file if needed) and migrate. With `owner`, this process is the
   * one gateway serving the file: entries left in flight by a process that died are released at
   * once instead of after their lease (tools such as `replay` open without it).
   */
  static async open(options: SqliteStoreOptions): Promise<SqliteStore> {
    const store = new SqliteStore(options);
    await store.migrate();
    store.#loadLanes();
    if (options.owner) {
      store.db.prepare("UPDATE outbox SET state = 'pending', lease_until = NULL WHERE state = 'inflight'").run();
      if (options.path !== ":memory:") {
        // checkpoints move to a worker thread, so they never stall a request
        store.db.pragma("wal_autocheckpoint = 0");
        store.#checkpointer = startCheckpointer({
          path: options.path,
          pageSize: store.db.pragma("page_size", { simple: true }) as number,
          onError: () => {
            // fall back to checkpoints on this connection rather than let the WAL grow
            if (store.db.open) store.db.pragma("wal_autocheckpoint = 1000");
          },
        });
      }
    }
    return store;
  }

  /** Open without migrating; prefer {@link SqliteStore.open}. */
  constructor(options: SqliteStoreOptions) {
    if (options.path !== ":memory:") mkdirSync(dirname(options.path), { recursive: true });
    this.db = new Database(options.path);
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("synchronous = NORMAL");
    this.db.pragma("busy_timeout = 5000");
    this.db.pragma("foreign_keys = ON");
    this.db.pragma("temp_store = MEMORY");
    this.db.pragma("cache_size = -65536"); // 64 MiB
    this.db.pragma("wal_autocheckpoint = 1000");
    this.#ingest = this.db.transaction(this.#ingestTx);
  }

  #stmt(sql: string): Stmt {
    let s = this.#stmts.get(sql);
    if (s === undefined) {
      s = this.db.prepare(sql) as Stmt;
      this.#stmts.set(sql, s);
    }
    return s;
  }

  /** Apply the migrations not yet applied, each in its own transaction. */
  async migrate(): Promise<void> {
    this.db.exec("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)");
    const applied = new Set((this.db.prepare("SELECT version FROM schema_migrations").all() as Row[]).map((r) => r.version as number));
    for (const m of MIGRATIONS) {
      if (applied.has(m.version)) continue;
      this.db.transaction(() => {
        this.db.exec(m.sql);
        this.db.prepare("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)").run(m.version, m.name, Date.now());
      })();
    }
  }

  /** The versions applied, in order. */
  appliedMigrations(): number[] {
    return (this.db.prepare("SELECT version FROM schema_migrations ORDER BY version").all() as Row[]).map((r) => r.version as number);
  }

  async ping(): Promise<boolean> {
    try {
      return (this.#stmt("SELECT 1 AS ok").get() as Row | undefined)?.ok === 1;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    await this.#checkpointer?.stop();
    this.#checkpointer = undefined;
    if (this.db.open) this.db.close();
  }

  #insertOutbox(tenant: string, messageSeq: number | null, e: OutboxInsert, now: number): void {
    const conv = e.conversationId;
    const key = conv === null ? "" : LaneCache.key(tenant, e.kind, conv);
    const lane = conv === null ? undefined : this.#lanes.get(key);
    const id = Number(
      this.#stmt(
        "INSERT INTO outbox (tenant, kind, conversation_id, message_seq, payload, state, ready, attempts, next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, 0, ?, ?, ?)",
      ).run(tenant, e.kind, conv, messageSeq, JSON.stringify(e.payload ?? null), lane === undefined ? 1 : 0, e.notBefore ?? now, now, now).lastInsertRowid,
    );
    if (conv !== null) this.#chain(key, id, lane);
  }

  /** Make entry `id` the tail of its lane: the head of a new lane, or chained after the tail. */
  #chain(key: string, id: number, lane: Lane | undefined): void {
    if (lane === undefined) {
      this.#lanes.set(key, { live: 1, tail: id });
    } else {
      this.#stmt("UPDATE outbox SET next_id = ? WHERE id = ?").run(id, lane.tail);
      this.#lanes.set(key, { live: lane.live + 1, tail: id });
    }
  }

  /** Entry `id` left its lane (done or dead): the next entry of the lane becomes the head. */
  #dequeue(id: number): void {
    const r = this.#stmt("SELECT tenant, kind, conversation_id, next_id FROM outbox WHERE id = ?").get(id) as Row | undefined;
    if (r === undefined || r.conversation_id === null) return;
    const key = LaneCache.key(r.tenant as string, r.kind as string, r.conversation_id as string);
    const lane = this.#lanes.get(key);
    const live = (lane?.live ?? 1) - 1;
    this.#lanes.set(key, { live, tail: lane?.tail ?? id });
    if (live > 0 && r.next_id !== null) this.#stmt("UPDATE outbox SET ready = 1 WHERE id = ?").run(r.next_id);
  }

  /** Rebuild the lanes from the chains: each head (ready or in flight), walked to its tail. */
  #loadLanes(): void {
    this.#lanes.clear();
    const heads = this.db
      .prepare(
        `SELECT id, tenant, kind, conversation_id, next_id FROM outbox WHERE state = 'pending' AND ready = 1 AND conversation_id IS NOT NULL
         UNION ALL SELECT id, tenant, kind, conversation_id, next_id FROM outbox WHERE state = 'inflight' AND conversation_id IS NOT NULL`,
      )
      .all() as Row[];
    const step = this.db.prepare("SELECT id, next_id FROM outbox WHERE id = ? AND state IN ('pending', 'inflight')");
    for (const h of heads) {
      let live = 1;
      let tail = h.id as number;
      let next = h.next_id as number | null;
      while (next !== null) {
        const r = step.get(next) as Row | undefined;
        if (r === undefined) break;
        live++;
        tail = r.id as number;
        next = r.next_id as number | null;
      }
      this.#lanes.set(LaneCache.key(h.tenant as string, h.kind as string, h.conversation_id as string), { live, tail });
    }
  }

  /** Chain the entries another process put back (replay) into their lanes. */
  #adoptRequeued(): void {
    const rows = this.#stmt("SELECT id, tenant, kind, conversation_id FROM outbox WHERE requeued = 1 ORDER BY id").all() as Row[];
    for (const r of rows) {
      const id = r.id as number;
      if (r.conversation_id === null) {
        this.#stmt("UPDATE outbox SET requeued = 0, ready = 1 WHERE id = ?").run(id);
        continue;
      }
      const key = LaneCache.key(r.tenant as string, r.kind as string, r.conversation_id as string);
      const lane = this.#lanes.get(key);
      this.#stmt("UPDATE outbox SET requeued = 0, ready = ? WHERE id = ?").run(lane === undefined ? 1 : 0, id);
      this.#chain(key, id, lane);
    }
  }

  #ingestTx = (items: IngestItem[], cursor: { tenant: string; openKfId: string; cursor: string } | undefined): IngestResult[] => {
    const now = Date.now();
    const results: IngestResult[] = [];
    const insertLedger = this.#stmt("INSERT INTO ledger (tenant, channel, key, message_seq, skip_reason, first_seen) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING");
    for (const item of items) {
      let seq: number | undefined;
      if (item.message !== undefined) {
        const m = item.message;
        const info = this.#stmt(
          "INSERT INTO messages (tenant, channel, key, conversation_id, time, received_at, content_type, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ).run(item.tenant, item.channel, item.key, m.conversationId, m.time, now, m.content.type, JSON.stringify(m));
        seq = Number(info.lastInsertRowid);
      }
      const ins = insertLedger.run(item.tenant, item.channel, item.key, seq ?? null, item.skipReason ?? null, now);
      if (ins.changes === 0) {
        // a known key: undo the message row and report the first one
        if (seq !== undefined) this.#stmt("DELETE FROM messages WHERE seq = ?").run(seq);
        const prev = this.#stmt("SELECT message_seq FROM ledger WHERE tenant = ? AND channel = ? AND key = ?").get(item.tenant, item.channel, item.key) as Row | undefined;
        const r: IngestResult = { stored: false };
        if (typeof prev?.message_seq === "number") r.seq = prev.message_seq;
        results.push(r);
        continue;
      }
      for (const e of item.outbox ?? []) this.#insertOutbox(item.tenant, seq ?? null, e, now);
      if (item.archive !== undefined) {
        const a = item.archive;
        this.#stmt(
          "INSERT INTO archive_pushes (tenant, message_id, push_type, msgid, seq, received_at, body) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        ).run(a.tenant, a.messageId, a.pushType, a.msgid ?? null, a.seq ?? null, a.receivedAt, JSON.stringify(a.body));
      }
      const r: IngestResult = { stored: true };
      if (seq !== undefined) r.seq = seq;
      results.push(r);
    }
    if (cursor !== undefined) {
      this.#stmt(
        "INSERT INTO kf_cursors (tenant, open_kfid, cursor, first_seen_at, updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant, open_kfid) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
      ).run(cursor.tenant, cursor.openKfId, cursor.cursor, now, now);
    }
    return results;
  };

  async ingest(items: IngestItem[], cursor?: { tenant: string; openKfId: string; cursor: string }): Promise<IngestResult[]> {
    return this.ingestSync(items, cursor);
  }

  /** The synchronous form of {@link ingest}, for callers that batch themselves. */
  ingestSync(items: IngestItem[], cursor?: { tenant: string; openKfId: string; cursor: string }): IngestResult[] {
    return this.#lanes.run(() => this.#ingest(items, cursor));
  }

  async getKfCursor(tenant: string, openKfId: string): Promise<KfCursor | undefined> {
    const r = this.#stmt("SELECT * FROM kf_cursors WHERE tenant = ? AND open_kfid = ?").get(tenant, openKfId) as Row | undefined;
    return r === undefined ? undefined : cursorFromRow(r);
  }

  async touchKfAccount(tenant: string, openKfId: string, firstSeenAt: number): Promise<KfCursor> {
    this.#stmt("INSERT INTO kf_cursors (tenant, open_kfid, cursor, first_seen_at, updated_at) VALUES (?, ?, NULL, ?, ?) ON CONFLICT DO NOTHING").run(
      tenant,
      openKfId,
      firstSeenAt,
      Date.now(),
    );
    return (await this.getKfCursor(tenant, openKfId)) as KfCursor;
  }

  async listKfCursors(page: Page): Promise<KfCursor[]> {
    return (this.#stmt("SELECT * FROM kf_cursors ORDER BY tenant, open_kfid LIMIT ? OFFSET ?").all(page.limit, page.before ?? 0) as Row[]).map(cursorFromRow);
  }

  async claimOutbox(kinds: OutboxKind[], now: number, limit: number, leaseMs: number): Promise<OutboxEntry[]> {
    if (kinds.length === 0 || limit <= 0) return [];
    const kindList = kinds.map(() => "?").join(", ");
    return this.#lanes.run(() => this.db.transaction(() => {
      this.#adoptRequeued();
      // leases that ran out: the worker holding them died
      this.#stmt("UPDATE outbox SET state = 'pending', lease_until = NULL WHERE state = 'inflight' AND lease_until < ?").run(now);
      const rows = this.#stmt(
        `SELECT * FROM outbox WHERE state = 'pending' AND ready = 1 AND next_attempt_at <= ? AND kind IN (${kindList}) ORDER BY next_attempt_at, id LIMIT ?`,
      ).all(now, ...kinds, limit) as Row[];
      const claim = this.#stmt("UPDATE outbox SET state = 'inflight', lease_until = ?, attempts = attempts + 1, updated_at = ? WHERE id = ? AND state = 'pending'");
      const out: OutboxEntry[] = [];
      for (const r of rows) {
        if (claim.run(now + leaseMs, now, r.id).changes === 1) {
          out.push(outboxFromRow({ ...r, state: "inflight", attempts: (r.attempts as number) + 1, updated_at: now }));
        }
      }
      return out;
    })());
  }

  async finishOutbox(id: number, outcome: OutboxOutcome, now: number, followUps?: { tenant: string; messageSeq: number | null; entries: OutboxInsert[] }): Promise<void> {
    this.#lanes.run(() => this.db.transaction(() => {
      switch (outcome.state) {
        case "done":
          this.#stmt("UPDATE outbox SET state = 'done', ready = 0, lease_until = NULL, last_error = NULL, updated_at = ? WHERE id = ?").run(now, id);
          this.#dequeue(id);
          break;
        case "pending":
          this.#stmt(
            `UPDATE outbox SET state = 'pending', lease_until = NULL, next_attempt_at = ?, last_error = ?, updated_at = ?${outcome.countAttempt === false ? ", attempts = attempts - 1" : ""} WHERE id = ?`,
          ).run(outcome.nextAttemptAt, outcome.error, now, id);
          break;
        case "dead":
          this.#stmt("UPDATE outbox SET state = 'dead', ready = 0, lease_until = NULL, last_error = ?, updated_at = ? WHERE id = ?").run(outcome.error, now, id);
          this.#dequeue(id);
          break;
      }
      for (const e of followUps?.entries ?? []) this.#insertOutbox(followUps?.tenant as string, followUps?.messageSeq ?? null, e, now);
    })());
  }

  async replayDead(ids: number[] | "all", now: number): Promise<number> {
    // the entries are marked; the serving process chains them into their lanes (at the end: they
    // were already out of order when they died) on its next claim
    const revive = this.#stmt("UPDATE outbox SET state = 'pending', ready = 0, next_id = NULL, requeued = 1, attempts = 0, next_attempt_at = ?, updated_at = ? WHERE state = 'dead' AND id = ?");
    return this.db.transaction(() => {
      const list = ids === "all" ? (this.#stmt("SELECT id FROM outbox WHERE state = 'dead' ORDER BY id").all() as Row[]).map((r) => r.id as number) : ids;
      let n = 0;
      for (const id of list) n += revive.run(now, now, id).changes;
      return n;
    })();
  }

  async outboxCounts(): Promise<Record<OutboxState, number>> {
    const counts: Record<OutboxState, number> = { pending: 0, inflight: 0, done: 0, dead: 0 };
    for (const r of this.#stmt("SELECT state, count(*) AS n FROM outbox GROUP BY state").all() as Row[]) counts[r.state as OutboxState] = r.n as number;
    return counts;
  }

  async listOutbox(states: OutboxState[], page: Page): Promise<OutboxEntry[]> {
    if (states.length === 0) return [];
    const list = states.map(() => "?").join(", ");
    const rows = this.#stmt(`SELECT * FROM outbox WHERE state IN (${list}) AND id < ? ORDER BY id DESC LIMIT ?`).all(
      ...states,
      page.before ?? Number.MAX_SAFE_INTEGER,
      page.limit,
    ) as Row[];
    return rows.map(outboxFromRow);
  }

  async nextOutboxDue(kinds: OutboxKind[]): Promise<number | undefined> {
    if (kinds.length === 0) return undefined;
    // entries put back by another process are due at once: the next claim chains them
    if (this.#stmt("SELECT 1 AS x FROM outbox WHERE requeued = 1 LIMIT 1").get() !== undefined) return 0;
    const r = this.#stmt(`SELECT min(next_attempt_at) AS t FROM outbox WHERE state = 'pending' AND ready = 1 AND kind IN (${kinds.map(() => "?").join(", ")})`).get(
      ...kinds,
    ) as Row | undefined;
    return typeof r?.t === "number" ? r.t : undefined;
  }

  async getMessage(seq: number): Promise<StoredMessage | undefined> {
    const r = this.#stmt("SELECT * FROM messages WHERE seq = ?").get(seq) as Row | undefined;
    return r === undefined ? undefined : messageFromRow(r);
  }

  async listMessages(filter: MessageFilter, page: Page): Promise<StoredMessage[]> {
    const { where, args } = conditions([
      ["seq < ?", page.before ?? Number.MAX_SAFE_INTEGER],
      ["tenant = ?", filter.tenant],
      ["channel = ?", filter.channel],
      ["conversation_id = ?", filter.conversationId],
      ["time >= ?", filter.since],
      ["time < ?", filter.until],
    ]);
    const rows = this.db.prepare(`SELECT * FROM messages WHERE ${where.join(" AND ")} ORDER BY seq DESC LIMIT ?`).all(...args, page.limit) as Row[];
    return rows.map(messageFromRow);
  }

  async listConversations(page: Page & { tenant?: string; channel?: Channel }): Promise<ConversationSummary[]> {
    const { where, args } = conditions([
      ["tenant = ?", page.tenant],
      ["channel = ?", page.channel],
    ]);
    const having = page.before === undefined ? "" : "HAVING max(seq) < ?";
    if (page.before !== undefined) args.push(page.before);
    const rows = this.db
      .prepare(
        `SELECT tenant, conversation_id, channel, count(*) AS n, max(time) AS last_time, max(seq) AS last_seq FROM messages
         ${where.length > 0 ? `WHERE ${where.join(" AND ")}` : ""} GROUP BY tenant, conversation_id, channel ${having} ORDER BY last_seq DESC LIMIT ?`,
      )
      .all(...args, page.limit) as Row[];
    return rows.map((r) => ({
      tenant: r.tenant as string,
      conversationId: r.conversation_id as string,
      channel: r.channel as Channel,
      messages: r.n as number,
      lastTime: r.last_time as number,
      lastSeq: r.last_seq as number,
    }));
  }

  async listArchive(page: Page): Promise<(ArchivePushRow & { id: number })[]> {
    const rows = this.#stmt("SELECT * FROM archive_pushes WHERE id < ? ORDER BY id DESC LIMIT ?").all(page.before ?? Number.MAX_SAFE_INTEGER, page.limit) as Row[];
    return rows.map((r) => {
      const row: ArchivePushRow & { id: number } = {
        id: r.id as number,
        tenant: r.tenant as string,
        messageId: r.message_id as string,
        pushType: r.push_type as number,
        receivedAt: r.received_at as number,
        body: JSON.parse(r.body as string),
      };
      if (typeof r.msgid === "string") row.msgid = r.msgid;
      if (typeof r.seq === "number") row.seq = r.seq;
      return row;
    });
  }

  async getToken(tenant: string, key: string): Promise<TokenRow | undefined> {
    const r = this.#stmt("SELECT * FROM tokens WHERE tenant = ? AND key = ?").get(tenant, key) as Row | undefined;
    return r === undefined ? undefined : { tenant, key, token: r.token as string, expiresAt: r.expires_at as number };
  }

  async putToken(row: TokenRow): Promise<void> {
    this.#stmt("INSERT INTO tokens (tenant, key, token, expires_at) VALUES (?, ?, ?, ?) ON CONFLICT (tenant, key) DO UPDATE SET token = excluded.token, expires_at = excluded.expires_at").run(
      row.tenant,
      row.key,
      row.token,
      row.expiresAt,
    );
  }

  async deleteToken(tenant: string, key: string): Promise<void> {
    this.#stmt("DELETE FROM tokens WHERE tenant = ? AND key = ?").run(tenant, key);
  }

  async putMedia(row: MediaRow): Promise<void> {
    this.#stmt(
      "INSERT INTO media (tenant, id, message_seq, content_type, file_name, size, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
    ).run(row.tenant, row.id, row.messageSeq, row.contentType, row.fileName, row.size, row.createdAt);
  }

  async getMedia(tenant: string, id: string): Promise<MediaRow | undefined> {
    const r = this.#stmt("SELECT * FROM media WHERE tenant = ? AND id = ?").get(tenant, id) as Row | undefined;
    if (r === undefined) return undefined;
    return {
      tenant,
      id,
      messageSeq: (r.message_seq as number | null) ?? null,
      contentType: r.content_type as string,
      fileName: r.file_name as string,
      size: r.size as number,
      createdAt: r.created_at as number,
    };
  }
}
