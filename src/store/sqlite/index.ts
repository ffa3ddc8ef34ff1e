/**
 * The embedded store: SQLite through better-sqlite3, in WAL mode with synchronous=NORMAL (a
 * committed transaction survives a process kill; a power loss may lose the last ones).
 * @module
 */
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import Database from "better-sqlite3";
import { CHANNELS, type Channel, } from "../../model.js";
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
  OutboxClaim,
  OutboxEntry,
  OutboxInsert,
  OutboxKind,
  OutboxOutcome,
  OutboxState,
  OutboundAccept,
  OutboundAcceptResult,
  Page,
  PruneCutoffs,
  PruneResult,
  Store,
  StateWrite,
  StoredMessage,
  TokenRow,
} from "../types.js";
import { archiveFromRow, auditFromRow, conversationFromRow, cursorFromRow, mediaFromRow, messageFromRow, outboxFromRow, type Row } from "../rows.js";
import { type Checkpointer, startCheckpointer } from "./checkpointer.js";
import { MIGRATIONS } from "./migrations.js";

type Stmt = Database.Statement<unknown[], Row>;




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
  #lanes = new Map<string, Lane>();
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

  /** Replace every lane with those read from the database (changes of a running transaction are dropped). */
  replace(lanes: Map<string, Lane>): void {
    this.#lanes = lanes;
    if (this.#overlay) this.#overlay = new Map();
  }
}


/** A conversation's seqs, newest first (see SqliteStore.#conversationSeqs). */
interface ConversationSeqs {
  peek(): number | undefined;
  take(): void;
}

/** What the serving process remembers of a message it stored, until it is folded in. */
interface FoldRow {
  seq: number;
  tenant: string;
  conversationId: string;
  channel: string;
  time: number;
  receivedAt: number;
}

/** The states an outbox entry can be in (listings take any of them). */
const STATES: ReadonlySet<string> = new Set<OutboxState>(["pending", "inflight", "done", "dead", "refused"]);

/**
 * A settings row the store bumps whenever it removes entries that may sit in a lane (erasure):
 * the serving process reads it at the start of each outbox transaction and rebuilds its lanes
 * when another process changed it.
 */
const LANES_EPOCH = "store.lanesEpoch";
/** States in which an entry is over (its message may be pruned). */
const FINISHED: ReadonlySet<string> = new Set<OutboxState>(["done", "refused"]);

/** Settings row: every message up to this seq is folded in (summaries, seq lists, blocks, late messages). */
const FOLDED_SEQ = "store.foldedSeq";
/** Settings row: every outbox entry up to this id is in the pending count (and moved on by the triggers). */
const FOLDED_OUTBOX = "store.foldedOutboxId";
/** Messages folded in per transaction by the serving process's timer. */
const FOLD_CHUNK = 20_000;
/** How often the serving process folds new rows in, ms. */
const FOLD_INTERVAL_MS = 250;
/** Seqs per time block (message_blocks.block = seq / BLOCK). */
const BLOCK = 1024;
/** A message stored further than this from its time is found by its time, not by its block. */
const LATE_MS = 3_600_000;
/** A conversation's tail of seqs moves to a chunk when it grows past this. */
const TAIL_MAX = 128;
/** Append the JSON array `excluded.tail` to `tail` (both ascending seqs). */
const APPEND_TAIL = "CASE WHEN tail = '[]' THEN excluded.tail ELSE substr(tail, 1, length(tail) - 1) || ',' || substr(excluded.tail, 2) END";

/** The SQL conditions whose value is given (not undefined), and their arguments in order. */
function conditions(pairs: [sql: string, value: unknown][]): { where: string[]; args: unknown[] } {
  const given = pairs.filter(([, v]) => v !== undefined);
  return { where: given.map(([sql]) => sql), args: given.map(([, v]) => v) };
}

/** The argument of a listing's optional `AND tenant = ?`: none without a tenant. */
function tenantArg(filter: { tenant?: string }): string[] {
  return filter.tenant === undefined ? [] : [filter.tenant];
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
  readonly #ingest: (items: IngestItem[], cursor: { tenant: string; openKfId: string; cursor: string } | undefined, now: number) => IngestResult[];
  /** The lanes epoch the lanes in memory were built at (see {@link LANES_EPOCH}). */
  #lanesEpoch: unknown;
  /** Retention passes in progress: the last message seq looked at, by channel. */
  readonly #pruneFrom = new Map<Channel, number>();
  /** Retention pass in progress over media: the last row looked at (created_at, tenant, id). */
  #mediaFrom: [number, string, string] | undefined;
  #foldTimer: NodeJS.Timeout | undefined;
  /**
   * Messages this process stored and has not folded in yet, in seq order (the serving process
   * stores them all, so they usually cover what a fold takes; when they do not, the fold reads
   * the rows instead).
   */
  #unfolded: FoldRow[] = [];
  /** The same, of the running ingest transaction (kept once it commits). */
  #txRows: FoldRow[] = [];
  /** Outbox writes waiting for the next group commit (see #write). */
  #writes: { run: () => unknown; resolve: (v: unknown) => void; reject: (e: unknown) => void }[] = [];
  #writesScheduled = false;
  /** One write transaction running `fn` (made once: better-sqlite3 wraps a function per call otherwise). */
  readonly #writeTx: (fn: () => unknown) => unknown;
  /** The claim transaction (made once). */
  readonly #claimTx: (kinds: OutboxKind[], now: number, limit: number, leaseMs: number) => OutboxEntry[];

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
      store.#foldTimer = setInterval(() => {
        try {
          store.#fold(FOLD_CHUNK);
        } catch {
          // busy (another process writing) or closing: the next tick, or the next read, folds
        }
      }, FOLD_INTERVAL_MS);
      store.#foldTimer.unref();
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
    this.#ingest = this.db.transaction(this.#ingestTx).immediate;
    this.#claimTx = this.db.transaction((kinds: OutboxKind[], now: number, limit: number, leaseMs: number) => this.#claim(kinds, now, limit, leaseMs)).immediate;
    this.#writeTx = this.db.transaction((fn: () => unknown) => {
      this.#syncLanes();
      return fn();
    }).immediate;
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
    // writes asked for in this turn are committed first
    if (this.#writes.length > 0 && this.db.open) this.#flushWrites();
    clearInterval(this.#foldTimer);
    await this.#checkpointer?.stop();
    this.#checkpointer = undefined;
    if (this.db.open) this.db.close();
  }

  /** Insert an entry, with the given id (ingest knows the next ids) or the next one; returns its id. */
  #insertOutbox(tenant: string, messageSeq: number | null, e: OutboxInsert, now: number, id: number | null = null): number {
    const conv = e.conversationId;
    const key = conv === null ? "" : LaneCache.key(tenant, e.kind, conv);
    const lane = conv === null ? undefined : this.#lanes.get(key);
    const rowid = Number(
      this.#stmt(
        "INSERT INTO outbox (id, tenant, kind, conversation_id, message_seq, payload, state, ready, attempts, next_attempt_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, 0, ?, ?, ?)",
      ).run(id, tenant, e.kind, conv, messageSeq, JSON.stringify(e.payload ?? null), lane === undefined ? 1 : 0, e.notBefore ?? now, now, now).lastInsertRowid,
    );
    if (conv !== null) this.#chain(key, rowid, lane);
    return rowid;
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

  /**
   * Rebuild the lanes from the chains: each head (ready or in flight), walked to its tail. Inside a
   * transaction, call it before any change (it reads what is committed).
   */
  #loadLanes(): void {
    this.#lanesEpoch = this.#epoch();
    const lanes = new Map<string, Lane>();
    const heads = this.db
      .prepare(
        `SELECT id, tenant, kind, conversation_id, next_id FROM outbox INDEXED BY outbox_ready WHERE state = 'pending' AND ready = 1 AND conversation_id IS NOT NULL
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
      lanes.set(LaneCache.key(h.tenant as string, h.kind as string, h.conversation_id as string), { live, tail });
    }
    this.#lanes.replace(lanes);
  }

  #epoch(): unknown {
    return (this.#stmt("SELECT value FROM settings WHERE tenant = '' AND name = ?").get(LANES_EPOCH) as Row | undefined)?.value;
  }

  /** Another process removed entries that may sit in lanes (see {@link LANES_EPOCH}): rebuild them. Call first in a transaction. */
  #syncLanes(): void {
    if (this.#epoch() !== this.#lanesEpoch) this.#loadLanes();
  }

  /**
   * Start of an ingest transaction, in one statement: the lanes epoch (lanes are rebuilt when
   * another process changed it), and the seq and outbox id the next rows get. Both tables are
   * AUTOINCREMENT, so these were never used before; with one writer they are exact.
   */
  #ingestStart(): { seq: number; id: number } {
    const r = this.#stmt(
      `SELECT (SELECT value FROM settings WHERE tenant = '' AND name = ?) AS epoch,
         max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0), coalesce((SELECT max(seq) FROM messages), 0)) + 1 AS seq,
         max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0), coalesce((SELECT max(id) FROM outbox), 0)) + 1 AS id`,
    ).get(LANES_EPOCH) as Row;
    if ((r.epoch ?? undefined) !== this.#lanesEpoch) this.#loadLanes();
    return { seq: r.seq as number, id: r.id as number };
  }

  /** Entries that may sit in lanes were removed: tell the serving process (in the same transaction). */
  #bumpEpoch(): void {
    this.#stmt(
      "INSERT INTO settings (tenant, name, value, created_at) VALUES ('', ?, '1', ?) ON CONFLICT (tenant, name) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
    ).run(LANES_EPOCH, Date.now());
  }

  #mark(name: string): number {
    return Number((this.#stmt("SELECT value FROM settings WHERE tenant = '' AND name = ?").get(name) as Row | undefined)?.value ?? 0);
  }

  #setMark(name: string, value: number): void {
    this.#stmt("INSERT INTO settings (tenant, name, value, created_at) VALUES ('', ?, ?, ?) ON CONFLICT (tenant, name) DO UPDATE SET value = excluded.value").run(
      name,
      String(value),
      Date.now(),
    );
  }

  /** The id the last outbox entry got (AUTOINCREMENT: entries removed since included). */
  #lastOutboxId(): number {
    return (
      this.#stmt("SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0), coalesce((SELECT max(id) FROM outbox), 0)) AS i").get() as Row
    ).i as number;
  }

  /**
   * Fold in, in the running transaction, the messages past the mark (at most `max` of them, all
   * when omitted: conversation summaries and keys, time blocks, late messages) and the outbox
   * entries inserted since the last fold (into the pending count). Grouped this way, a fold
   * writes each page it touches once, where the same work on the ingest path would write it
   * once per transaction.
   */
  #foldTx(max = Number.POSITIVE_INFINITY): void {
    const seq = this.#mark(FOLDED_SEQ);
    const lastSeq = ((this.#stmt("SELECT max(seq) AS s FROM messages").get() as Row).s as number | null) ?? 0;
    if (lastSeq > seq) {
      const to = Math.min(lastSeq, seq + max);
      if (!this.#foldRemembered(seq, to)) {
        for (let from = seq; from < to; from = Math.min(to, from + FOLD_CHUNK)) this.#foldRows(from, Math.min(to, from + FOLD_CHUNK));
      }
      this.#setMark(FOLDED_SEQ, to);
    }
    const id = this.#mark(FOLDED_OUTBOX);
    const lastId = this.#lastOutboxId();
    if (lastId > id) {
      this.#stmt("UPDATE outbox_counts SET n = n + ? WHERE tenant = '' AND state = 'pending'").run(lastId - id);
      this.#setMark(FOLDED_OUTBOX, lastId);
    }
  }

  /** Fold in messages (from, to] by reading them. */
  #foldRows(from: number, to: number): void {
    this.#stmt(
      `INSERT INTO conversations (tenant, conversation_id, channel, messages, last_time, last_seq, tail)
       SELECT tenant, conversation_id, channel, count(*), max(time), max(seq), json_group_array(seq ORDER BY seq) FROM messages WHERE seq > ? AND seq <= ?
       GROUP BY tenant, conversation_id, channel
       ON CONFLICT (tenant, conversation_id, channel) DO UPDATE
         SET messages = messages + excluded.messages, last_time = max(last_time, excluded.last_time), last_seq = max(last_seq, excluded.last_seq), tail = ${APPEND_TAIL}`,
    ).run(from, to);
    this.#stmt(
      `INSERT INTO conversation_chunks (tenant, cno, first_seq, seqs)
       SELECT tenant, cno, tail ->> 0, tail FROM conversations INDEXED BY conversations_last_seq WHERE last_seq > ? AND json_array_length(tail) > ${TAIL_MAX}`,
    ).run(from);
    this.#stmt(`UPDATE conversations INDEXED BY conversations_last_seq SET tail = '[]' WHERE last_seq > ? AND json_array_length(tail) > ${TAIL_MAX}`).run(from);
    this.#stmt(
      `INSERT INTO message_blocks (tenant, block, min_time, max_time)
       SELECT tenant, seq / ${BLOCK}, min(time), max(time) FROM messages WHERE seq > ? AND seq <= ? AND abs(time - received_at) <= ${LATE_MS} GROUP BY 1, 2
       ON CONFLICT (tenant, block) DO UPDATE SET min_time = min(min_time, excluded.min_time), max_time = max(max_time, excluded.max_time)`,
    ).run(from, to);
    this.#stmt(
      `INSERT INTO late_messages (time, seq, tenant, channel) SELECT time, seq, tenant, channel FROM messages WHERE seq > ? AND seq <= ? AND abs(time - received_at) > ${LATE_MS}`,
    ).run(from, to);
  }

  /** Move a conversation's tail (grown past {@link TAIL_MAX} seqs) to a chunk. */
  #flushTail(cno: number): void {
    this.#stmt("INSERT INTO conversation_chunks (tenant, cno, first_seq, seqs) SELECT tenant, cno, tail ->> 0, tail FROM conversations WHERE cno = ?").run(cno);
    this.#stmt("UPDATE conversations SET tail = '[]' WHERE cno = ?").run(cno);
  }

  /**
   * Fold in messages (from, to] from what this process remembers of the messages it stored, when
   * that is exactly those messages (the serving process stores them all): grouped by
   * conversation and block, without reading them again. Returns false when it is not.
   */
  #foldRemembered(from: number, to: number): boolean {
    let i = 0;
    while (i < this.#unfolded.length && (this.#unfolded[i] as FoldRow).seq <= from) i++;
    if (i > 0) this.#unfolded = this.#unfolded.slice(i); // folded meanwhile (perhaps by another process)
    const rows = this.#unfolded;
    let n = 0;
    while (n < rows.length && (rows[n] as FoldRow).seq <= to) n++;
    if (!(n === to - from && n > 0 && (rows[0] as FoldRow).seq === from + 1 && (rows[n - 1] as FoldRow).seq === to)) {
      this.#unfolded = [];
      return false;
    }
    // grouped by conversation id (a conversation id met under another tenant or channel, which
    // does not happen with the ids the decoders make, gets a group of its own), and by block
    type Group = { r: FoldRow; n: number; time: number; seqs: number[] };
    const conversations = new Map<string, Group>();
    const others: Group[] = [];
    const blocks: { tenant: string; block: number; min: number; max: number }[] = [];
    const openBlock = new Map<string, { tenant: string; block: number; min: number; max: number }>();
    const late: FoldRow[] = [];
    for (let k = 0; k < n; k++) {
      const r = rows[k] as FoldRow;
      let g = conversations.get(r.conversationId);
      if (g !== undefined && (g.r.tenant !== r.tenant || g.r.channel !== r.channel)) {
        g = others.find((o) => o.r.conversationId === r.conversationId && o.r.tenant === r.tenant && o.r.channel === r.channel);
        if (g === undefined) {
          g = { r, n: 0, time: r.time, seqs: [] };
          others.push(g);
        }
      } else if (g === undefined) {
        g = { r, n: 0, time: r.time, seqs: [] };
        conversations.set(r.conversationId, g);
      }
      g.n++;
      if (r.time > g.time) g.time = r.time;
      g.seqs.push(r.seq);
      if (Math.abs(r.time - r.receivedAt) > LATE_MS) {
        late.push(r);
        continue;
      }
      const block = Math.floor(r.seq / BLOCK);
      let b = openBlock.get(r.tenant);
      if (b === undefined || b.block !== block) {
        b = { tenant: r.tenant, block, min: r.time, max: r.time };
        blocks.push(b);
        openBlock.set(r.tenant, b);
      } else {
        if (r.time < b.min) b.min = r.time;
        if (r.time > b.max) b.max = r.time;
      }
    }
    // one statement per conversation: its summary, and its new seqs appended to its tail
    const upsert = this.#stmt(
      `INSERT INTO conversations (tenant, conversation_id, channel, messages, last_time, last_seq, tail) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (tenant, conversation_id, channel) DO UPDATE
         SET messages = messages + excluded.messages, last_time = max(last_time, excluded.last_time), last_seq = max(last_seq, excluded.last_seq), tail = ${APPEND_TAIL}
       RETURNING cno, json_array_length(tail) AS n`,
    );
    for (const c of [...conversations.values(), ...others]) {
      const r = upsert.get(c.r.tenant, c.r.conversationId, c.r.channel, c.n, c.time, c.seqs[c.seqs.length - 1], JSON.stringify(c.seqs)) as Row;
      if ((r.n as number) > TAIL_MAX) this.#flushTail(r.cno as number);
    }
    const block = this.#stmt(
      `INSERT INTO message_blocks (tenant, block, min_time, max_time) VALUES (?, ?, ?, ?)
       ON CONFLICT (tenant, block) DO UPDATE SET min_time = min(min_time, excluded.min_time), max_time = max(max_time, excluded.max_time)`,
    );
    for (const b of blocks) block.run(b.tenant, b.block, b.min, b.max);
    const lateRow = this.#stmt("INSERT INTO late_messages (time, seq, tenant, channel) VALUES (?, ?, ?, ?)");
    for (const r of late) lateRow.run(r.time, r.seq, r.tenant, r.channel);
    return true;
  }

  /** Fold new rows in (see {@link SqliteStore.#foldTx}), in a transaction of its own. */
  #fold(max?: number): void {
    this.db.transaction(() => this.#foldTx(max)).immediate();
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

  #ingestTx = (items: IngestItem[], cursor: { tenant: string; openKfId: string; cursor: string } | undefined, now: number): IngestResult[] => {
    const start = this.#ingestStart();
    const results: IngestResult[] = [];
    const insertLedger = this.#stmt("INSERT INTO ledger (tenant, channel, key, message_seq, skip_reason, first_seen) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING");
    const insertMessage = this.#stmt(
      "INSERT INTO messages (seq, tenant, channel, key, conversation_id, time, received_at, content_type, body, entries) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    );
    // the key goes in first, with the seq its message will get (a known key then costs no
    // message row written and removed), then the entries, then the message with their ids
    let next = start.seq;
    let nextId = start.id;
    for (const item of items) {
      const m = item.message;
      const seq = m === undefined ? undefined : next;
      const ins = insertLedger.run(item.tenant, item.channel, item.key, seq ?? null, item.skipReason ?? null, now);
      if (ins.changes === 0) {
        // a known key: report the first one
        const prev = this.#stmt("SELECT message_seq FROM ledger WHERE tenant = ? AND channel = ? AND key = ?").get(item.tenant, item.channel, item.key) as Row | undefined;
        const r: IngestResult = { stored: false };
        if (typeof prev?.message_seq === "number") r.seq = prev.message_seq;
        results.push(r);
        continue;
      }
      const ids: number[] = [];
      for (const e of item.outbox ?? []) ids.push(this.#insertOutbox(item.tenant, seq ?? null, e, now, nextId++));
      if (item.effect !== undefined) {
        const fx = item.effect;
        const done = fx.apply(this.#readState(item.tenant, fx.key, now));
        if (done.state !== undefined) this.#writeState(item.tenant, fx.key, fx.conversationId, done.state, now);
        // session operations need nothing of the message: not linked, they never hold it past
        // its retention (erasure finds them by conversation)
        for (const e of done.entries ?? []) this.#insertOutbox(item.tenant, null, e, now, nextId++);
      }
      if (m !== undefined) {
        insertMessage.run(next, item.tenant, item.channel, item.key, m.conversationId, m.time, now, m.content.type, JSON.stringify(m), ids.length === 1 ? `[${ids[0]}]` : JSON.stringify(ids));
        this.#txRows.push({ seq: next, tenant: item.tenant, conversationId: m.conversationId, channel: item.channel, time: m.time, receivedAt: now });
        next++;
      }
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

  async ingest(items: IngestItem[], cursor?: { tenant: string; openKfId: string; cursor: string }, now?: number): Promise<IngestResult[]> {
    return this.ingestSync(items, cursor, now);
  }

  /** The synchronous form of {@link ingest}, for callers that batch themselves. */
  ingestSync(items: IngestItem[], cursor?: { tenant: string; openKfId: string; cursor: string }, now: number = Date.now()): IngestResult[] {
    this.#txRows = [];
    const results = this.#lanes.run(() => this.#ingest(items, cursor, now));
    if (this.#unfolded.length + this.#txRows.length > 4 * FOLD_CHUNK) this.#unfolded = []; // folds are failing: they will read the rows
    else for (const r of this.#txRows) this.#unfolded.push(r);
    this.#txRows = [];
    return results;
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

  async listKfCursors(page: Page & { tenant?: string }): Promise<KfCursorListItem[]> {
    const tenant = page.tenant === undefined ? "" : " AND tenant = ?";
    const rows = this.#stmt(`SELECT * FROM kf_cursors WHERE id < ?${tenant} ORDER BY id DESC LIMIT ?`).all(page.before ?? Number.MAX_SAFE_INTEGER, ...tenantArg(page), page.limit) as Row[];
    return rows.map(cursorFromRow);
  }

  async listKfAccounts(tenant: string): Promise<string[]> {
    return (this.#stmt("SELECT open_kfid FROM kf_cursors WHERE tenant = ? ORDER BY id").all(tenant) as Row[]).map((r) => r.open_kfid as string);
  }

  async claimOutbox(kinds: OutboxKind[], now: number, limit: number, leaseMs: number): Promise<OutboxEntry[]> {
    if (kinds.length === 0 || limit <= 0) return [];
    // the worker asks after every commit: most of the time nothing is due, and one read says so
    // without a write transaction (anything put back or expiring meanwhile is seen next time)
    const work = this.#stmt(
      `SELECT EXISTS (SELECT 1 FROM outbox INDEXED BY outbox_ready WHERE state = 'pending' AND ready = 1 AND next_attempt_at <= ?)
         OR EXISTS (SELECT 1 FROM outbox INDEXED BY outbox_requeued WHERE requeued = 1)
         OR EXISTS (SELECT 1 FROM outbox INDEXED BY outbox_leased WHERE state = 'inflight' AND lease_until < ?) AS w`,
    ).get(now, now) as Row;
    if (work.w !== 1) return [];
    return this.#lanes.run(() => this.#claimTx(kinds, now, limit, leaseMs));
  }

  /** The body of {@link claimOutbox}, inside a write transaction. */
  #claim(kinds: OutboxKind[], now: number, limit: number, leaseMs: number): OutboxEntry[] {
    this.#syncLanes();
    this.#adoptRequeued();
    // leases that ran out: the worker holding them died
    this.#stmt("UPDATE outbox INDEXED BY outbox_leased SET state = 'pending', lease_until = NULL WHERE state = 'inflight' AND lease_until < ?").run(now);
    const kindList = kinds.map(() => "?").join(", ");
    const rows = this.#stmt(
      `SELECT * FROM outbox INDEXED BY outbox_ready WHERE state = 'pending' AND ready = 1 AND next_attempt_at <= ? AND kind IN (${kindList}) ORDER BY next_attempt_at, id LIMIT ?`,
    ).all(now, ...kinds, limit) as Row[];
    const claim = this.#stmt("UPDATE outbox SET state = 'inflight', lease_until = ?, attempts = attempts + 1, updated_at = ? WHERE id = ? AND state = 'pending'");
    const out: OutboxEntry[] = [];
    for (const r of rows) {
      if (claim.run(now + leaseMs, now, r.id).changes === 1) {
        out.push(outboxFromRow({ ...r, state: "inflight", attempts: (r.attempts as number) + 1, updated_at: now }));
      }
    }
    return out;
  }

  async finishOutbox(entry: number | OutboxClaim, outcome: OutboxOutcome, now: number, followUps?: { tenant: string; messageSeq: number | null; entries: OutboxInsert[] }): Promise<void> {
    return this.#write(() => this.#finishTx(entry, outcome, now, followUps));
  }

  /** The body of {@link finishOutbox}, inside a write transaction. */
  #finishTx(entry: number | OutboxClaim, outcome: OutboxOutcome, now: number, followUps?: { tenant: string; messageSeq: number | null; entries: OutboxInsert[] }): void {
    // only an entry still in flight, and still in the claim that made the attempt, is finished: a
    // finish that comes after its lease ran out (the entry went back to pending, or another claim
    // took it) changes nothing (its lane is never advanced twice)
    const id = typeof entry === "number" ? entry : entry.id;
    const claim = typeof entry === "number" ? null : entry.attempts;
    const mine = "state = 'inflight' AND (? IS NULL OR attempts = ?)";
    let changed = 0;
    switch (outcome.state) {
      case "done":
        changed = this.#stmt(`UPDATE outbox SET state = 'done', ready = 0, lease_until = NULL, last_error = NULL, updated_at = ? WHERE id = ? AND ${mine}`).run(now, id, claim, claim).changes;
        if (changed === 1) this.#dequeue(id);
        break;
      case "pending":
        changed = this.#stmt(
          `UPDATE outbox SET state = 'pending', lease_until = NULL, next_attempt_at = ?, last_error = ?, updated_at = ?${outcome.countAttempt === false ? ", attempts = attempts - 1" : ""} WHERE id = ? AND ${mine}`,
        ).run(outcome.nextAttemptAt, outcome.error, now, id, claim, claim).changes;
        break;
      case "dead":
        changed = this.#stmt(`UPDATE outbox SET state = 'dead', ready = 0, lease_until = NULL, last_error = ?, updated_at = ? WHERE id = ? AND ${mine}`).run(outcome.error, now, id, claim, claim).changes;
        if (changed === 1) this.#dequeue(id);
        break;
      case "refused":
        changed = this.#stmt(`UPDATE outbox SET state = 'refused', ready = 0, lease_until = NULL, last_error = ?, errcode = ?, updated_at = ? WHERE id = ? AND ${mine}`).run(
          outcome.error,
          outcome.errcode,
          now,
          id,
          claim,
          claim,
        ).changes;
        if (changed === 1) this.#dequeue(id);
        break;
    }
    if (changed === 0) return;
    // follow-ups of a message erased meanwhile have nothing left to work on
    const seq = followUps?.messageSeq ?? null;
    if (followUps !== undefined && followUps.entries.length > 0 && (seq === null || this.#stmt("SELECT 1 AS x FROM messages WHERE seq = ?").get(seq) !== undefined)) {
      const ids = followUps.entries.map((e) => this.#insertOutbox(followUps.tenant, seq, e, now));
      if (seq !== null) {
        this.#stmt("UPDATE messages SET entries = (SELECT json_group_array(value) FROM (SELECT value FROM json_each(entries) UNION ALL SELECT value FROM json_each(?))) WHERE seq = ?").run(
          JSON.stringify(ids),
          seq,
        );
      }
    }
  }

  /**
   * Group commit of outbox and shared-state writes (finishes, outbound accepts, state updates): the writes asked for during one
   * event-loop turn share one transaction, each caller answered once it committed. When the shared
   * transaction fails, each write runs again in its own, so one bad write fails only its caller.
   */
  #write<T>(thunk: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#writes.push({ run: thunk, resolve: resolve as (v: unknown) => void, reject });
      if (this.#writesScheduled) return;
      this.#writesScheduled = true;
      setImmediate(() => this.#flushWrites());
    });
  }

  #flushWrites(): void {
    this.#writesScheduled = false;
    const batch = this.#writes;
    this.#writes = [];
    const tx = <T>(fn: () => T): T => this.#lanes.run(() => this.#writeTx(fn) as T);
    if (batch.length > 1) {
      let results: unknown[] | undefined;
      try {
        results = tx(() => batch.map((w) => w.run()));
      } catch (e) {
        // the database itself is unavailable (locked by another process, closed): all fail at once
        const code = (e as { code?: unknown }).code;
        if (!this.db.open || (typeof code === "string" && /^SQLITE_(BUSY|LOCKED)/.test(code))) {
          for (const w of batch) w.reject(e);
          return;
        }
        results = undefined; // one of them failed: each alone below
      }
      if (results !== undefined) {
        for (let i = 0; i < batch.length; i++) batch[i]?.resolve(results[i]);
        return;
      }
    }
    for (const w of batch) {
      try {
        w.resolve(tx(w.run));
      } catch (e) {
        w.reject(e);
      }
    }
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
    }).immediate();
  }

  /**
   * Counts of outbox entries by state: four rows kept by triggers, plus the entries inserted since
   * the last fold (all counted pending: their state changes are already in the rows). Never a
   * count over the outbox, and no write.
   */
  async outboxCounts(): Promise<Record<OutboxState, number>> {
    const counts: Record<OutboxState, number> = { pending: 0, inflight: 0, done: 0, dead: 0, refused: 0 };
    this.db.transaction(() => {
      for (const r of this.#stmt("SELECT state, n FROM outbox_counts WHERE tenant = ''").all() as Row[]) {
        if (STATES.has(r.state as string)) counts[r.state as OutboxState] = r.n as number;
      }
      counts.pending += this.#lastOutboxId() - this.#mark(FOLDED_OUTBOX);
    })();
    return counts;
  }

  /**
   * Entries in any of `states`, newest first: each state is walked on its own index and the pages
   * merged (a tenant filters the walk); a conversation's entries are walked on theirs, newest
   * first, its states and tenant filtering the walk.
   */
  async listOutbox(states: OutboxState[], page: Page & { tenant?: string; conversationId?: string }): Promise<OutboxEntry[]> {
    const before = page.before ?? Number.MAX_SAFE_INTEGER;
    const tenant = page.tenant === undefined ? "" : " AND tenant = ?";
    if (page.conversationId !== undefined) {
      const wanted = [...new Set(states)].filter((st) => STATES.has(st));
      if (wanted.length === 0 || page.limit <= 0) return [];
      const rows = this.#stmt(
        `SELECT * FROM outbox INDEXED BY outbox_conversation WHERE conversation_id = ? AND message_seq IS NULL AND id < ? AND state IN (SELECT value FROM json_each(?))${tenant} ORDER BY id DESC LIMIT ?`,
      ).all(page.conversationId, before, JSON.stringify(wanted), ...tenantArg(page), page.limit) as Row[];
      return rows.map(outboxFromRow);
    }
    const byState = this.#stmt(`SELECT * FROM outbox INDEXED BY outbox_state_id WHERE state = ? AND id < ?${tenant} ORDER BY id DESC LIMIT ?`);
    const rows: Row[] = [];
    for (const state of new Set(states)) {
      if (STATES.has(state)) rows.push(...(byState.all(state, before, ...tenantArg(page), page.limit) as Row[]));
    }
    rows.sort((a, b) => (b.id as number) - (a.id as number));
    return rows.slice(0, page.limit).map(outboxFromRow);
  }

  async nextOutboxDue(kinds: OutboxKind[]): Promise<number | undefined> {
    if (kinds.length === 0) return undefined;
    // entries put back by another process are due at once: the next claim chains them
    if (this.#stmt("SELECT 1 AS x FROM outbox WHERE requeued = 1 LIMIT 1").get() !== undefined) return 0;
    const r = this.#stmt(`SELECT min(next_attempt_at) AS t FROM outbox INDEXED BY outbox_ready WHERE state = 'pending' AND ready = 1 AND kind IN (${kinds.map(() => "?").join(", ")})`).get(
      ...kinds,
    ) as Row | undefined;
    return typeof r?.t === "number" ? r.t : undefined;
  }

  async getMessage(seq: number): Promise<StoredMessage | undefined> {
    const r = this.#stmt("SELECT * FROM messages WHERE seq = ?").get(seq) as Row | undefined;
    return r === undefined ? undefined : messageFromRow(r);
  }

  /**
   * Messages newest first. A conversation is read on its keys (its number, then seq), a channel
   * on (channel, seq). A time window is read block by block (1,024 seqs), newest first, among the
   * blocks whose time range meets the window, until no block left can hold a newer message than
   * the page has; messages stored far from their time are found by their time. Messages arrive
   * roughly in time order, so this reads one or two blocks whatever the window and the size of
   * the store. New messages are folded in first.
   */
  async listMessages(filter: MessageFilter, page: Page): Promise<StoredMessage[]> {
    const before = page.before ?? Number.MAX_SAFE_INTEGER;
    if (page.limit <= 0) return [];
    const rowFilter = conditions([
      ["m.tenant = ?", filter.tenant],
      ["m.channel = ?", filter.channel],
      ["m.time >= ?", filter.since],
      ["m.time < ?", filter.until],
    ]);
    const and = rowFilter.where.map((w) => ` AND ${w}`).join("");
    if (filter.conversationId !== undefined) {
      this.#fold();
      const groups = this.#stmt(
        `SELECT tenant, cno, tail FROM conversations WHERE conversation_id = ?${filter.tenant === undefined ? "" : " AND tenant = ?"}${filter.channel === undefined ? "" : " AND channel = ?"}`,
      ).all(filter.conversationId, ...[filter.tenant, filter.channel].filter((v) => v !== undefined)) as Row[];
      const time = conditions([
        ["time >= ?", filter.since],
        ["time < ?", filter.until],
      ]);
      const read = this.#stmt(`SELECT * FROM messages WHERE seq = ?${time.where.map((w) => ` AND ${w}`).join("")}`);
      // newest first across the conversation's (tenant, channel) groups: usually one
      const lists = groups.map((g) => this.#conversationSeqs(g, before));
      const out: Row[] = [];
      while (out.length < page.limit) {
        let best: { seq: number; list: ConversationSeqs } | undefined;
        for (const list of lists) {
          const seq = list.peek();
          if (seq !== undefined && (best === undefined || seq > best.seq)) best = { seq, list };
        }
        if (best === undefined) break;
        best.list.take();
        const row = read.get(best.seq, ...time.args) as Row | undefined;
        if (row !== undefined) out.push(row);
      }
      return out.map(messageFromRow);
    }
    if (filter.since === undefined && filter.until === undefined) {
      const index = filter.channel !== undefined ? "INDEXED BY messages_channel_seq" : "";
      const rows = this.#stmt(`SELECT * FROM messages AS m ${index} WHERE m.seq < ?${and} ORDER BY m.seq DESC LIMIT ?`).all(before, ...rowFilter.args, page.limit) as Row[];
      return rows.map(messageFromRow);
    }
    const since = filter.since ?? Number.MIN_SAFE_INTEGER;
    const until = filter.until ?? Number.MAX_SAFE_INTEGER;
    if (since >= until) return [];
    this.#fold();
    // messages stored far from their time, by time (the page is cut before the rows are read)
    const lateFilter = conditions([
      ["tenant = ?", filter.tenant],
      ["channel = ?", filter.channel],
    ]);
    let out = this.#stmt(
      `SELECT m.* FROM (SELECT seq FROM late_messages WHERE time >= ? AND time < ? AND seq < ?${lateFilter.where.map((w) => ` AND ${w}`).join("")} ORDER BY seq DESC LIMIT ?) AS l
       CROSS JOIN messages m ON m.seq = l.seq ORDER BY l.seq DESC`,
    ).all(since, until, before, ...lateFilter.args, page.limit) as Row[];
    // the others, block by block, newest first
    const blocks = (
      this.#stmt(
        `SELECT DISTINCT block FROM message_blocks WHERE max_time >= ? AND min_time < ? AND block <= ?${filter.tenant === undefined ? "" : " AND tenant = ?"} ORDER BY block DESC`,
      ).all(since, until, Math.floor((before - 1) / BLOCK), ...(filter.tenant === undefined ? [] : [filter.tenant])) as Row[]
    ).map((r) => r.block as number);
    const read = this.#stmt(`SELECT * FROM messages AS m WHERE m.seq >= ? AND m.seq < ?${and} ORDER BY m.seq DESC LIMIT ?`);
    const seen = new Set(out.map((r) => r.seq as number));
    for (const block of blocks) {
      const last = (block + 1) * BLOCK - 1;
      if (out.length >= page.limit && last < (out[page.limit - 1]?.seq as number)) break;
      const rows = (read.all(block * BLOCK, Math.min(last + 1, before), ...rowFilter.args, page.limit) as Row[]).filter((r) => !seen.has(r.seq as number));
      if (rows.length === 0) continue;
      for (const r of rows) seen.add(r.seq as number);
      out = out.concat(rows).sort((a, b) => (b.seq as number) - (a.seq as number));
      if (out.length > page.limit) out.length = page.limit;
    }
    return out.slice(0, page.limit).map(messageFromRow);
  }

  /** A conversation group's seqs below `before`, newest first: its tail, then its chunks, read as needed. */
  #conversationSeqs(group: Row, before: number): ConversationSeqs {
    const chunks = this.#stmt("SELECT first_seq, seqs FROM conversation_chunks WHERE tenant = ? AND cno = ? AND first_seq < ? ORDER BY first_seq DESC LIMIT 4");
    let buf = (JSON.parse(group.tail as string) as number[]).filter((x) => x < before);
    let chunkBefore = before;
    let done = false;
    const fill = () => {
      while (buf.length === 0 && !done) {
        const rows = chunks.all(group.tenant, group.cno, chunkBefore) as Row[];
        if (rows.length === 0) done = true;
        for (const r of rows) {
          buf = buf.concat((JSON.parse(r.seqs as string) as number[]).filter((x) => x < before).reverse());
          chunkBefore = r.first_seq as number;
        }
        buf.reverse();
      }
    };
    buf.sort((a, b) => a - b);
    return {
      peek: () => {
        fill();
        return buf[buf.length - 1];
      },
      take: () => {
        buf.pop();
      },
    };
  }

  /** Conversations by their latest message, newest first, from the summaries (new messages folded in first). */
  async listConversations(page: Page & { tenant?: string; channel?: Channel }): Promise<ConversationSummary[]> {
    this.#fold();
    const { where, args } = conditions([
      ["last_seq < ?", page.before ?? Number.MAX_SAFE_INTEGER],
      ["channel = ?", page.channel],
      ["tenant = ?", page.tenant],
    ]);
    const index = page.channel !== undefined ? "conversations_channel_last_seq" : "conversations_last_seq";
    const rows = this.#stmt(`SELECT * FROM conversations INDEXED BY ${index} WHERE ${where.join(" AND ")} ORDER BY last_seq DESC LIMIT ?`).all(
      ...args,
      page.limit,
    ) as Row[];
    return rows.map(conversationFromRow);
  }

  async listArchive(page: Page & { tenant?: string }): Promise<(ArchivePushRow & { id: number })[]> {
    const tenant = page.tenant === undefined ? "" : " AND tenant = ?";
    const rows = this.#stmt(`SELECT * FROM archive_pushes WHERE id < ?${tenant} ORDER BY id DESC LIMIT ?`).all(page.before ?? Number.MAX_SAFE_INTEGER, ...tenantArg(page), page.limit) as Row[];
    return rows.map(archiveFromRow);
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
    return r === undefined ? undefined : mediaFromRow(r);
  }

  /**
   * One short transaction of retention, oldest rows first, at most `limit` rows of each kind.
   * Messages are walked per channel on (channel, seq): seq follows received_at, so a channel's
   * walk stops at its first message received after the cutoff. The walk also removes the ledger
   * keys of the messages it passes that are past the ledger cutoff; a removed message's key that
   * must stay longer is unlinked from it (then found by time among the keys without a message).
   * A walk that meets many kept rows (messages of dead letters) stops after `20 × limit` of them
   * and resumes there on the next call, so one call may remove nothing while the next tick
   * still finds work. Session-archive pushes are walked by id (receivedAt follows it).
   */
  async pruneBatch(cutoffs: PruneCutoffs, limit: number): Promise<PruneResult> {
    const n = Math.max(1, Math.floor(limit));
    return this.db.transaction(() => this.#pruneTx(cutoffs, n)).immediate();
  }

  #pruneTx(c: PruneCutoffs, limit: number): PruneResult {
    const out: PruneResult = { messages: 0, outbox: 0, ledger: 0, archive: 0, state: 0, audit: 0, media: [] };
    this.#foldTx();
    const scanMax = Math.max(1000, limit * 20);
    const chunk = Math.min(scanMax, Math.max(100, limit * 2));

    // messages (with their done entries) and their ledger keys, per channel, oldest first
    const walk = this.#stmt(
      "SELECT seq, tenant, key, received_at, entries FROM messages INDEXED BY messages_channel_seq WHERE channel = ? AND seq > ? ORDER BY seq LIMIT ?",
    );
    const entryState = this.#stmt("SELECT state FROM outbox WHERE id = ?");
    const dropEntry = this.#stmt("DELETE FROM outbox WHERE id = ?");
    const dropMessage = this.#stmt("DELETE FROM messages WHERE seq = ?");
    // (the key is this message's: a key pruned earlier may have come again with a new message)
    const dropKey = this.#stmt("DELETE FROM ledger WHERE tenant = ? AND channel = ? AND key = ? AND message_seq = ?");
    const unlinkKey = this.#stmt("UPDATE ledger SET message_seq = NULL WHERE tenant = ? AND channel = ? AND key = ? AND message_seq = ?");
    let scanned = 0;
    for (const channel of CHANNELS) {
      const messagesBefore = c.messagesBefore[channel] ?? Number.MIN_SAFE_INTEGER;
      const ledgerBefore = c.ledgerBefore[channel] ?? Number.MIN_SAFE_INTEGER;
      const stop = Math.max(messagesBefore, ledgerBefore);
      let from = this.#pruneFrom.get(channel) ?? 0;
      let finished = false;
      while (!finished && out.messages < limit && out.ledger < limit && scanned < scanMax) {
        const rows = walk.all(channel, from, chunk) as Row[];
        if (rows.length < chunk) finished = true;
        for (const r of rows) {
          const receivedAt = r.received_at as number;
          if (receivedAt >= stop) {
            finished = true;
            break;
          }
          if (out.messages >= limit || out.ledger >= limit || scanned >= scanMax) {
            finished = false;
            break;
          }
          const seq = r.seq as number;
          from = seq;
          scanned++;
          let keyGone = false;
          if (receivedAt < ledgerBefore) {
            out.ledger += dropKey.run(r.tenant, channel, r.key, seq).changes;
            keyGone = true;
          }
          if (receivedAt >= messagesBefore) continue;
          const own = JSON.parse(r.entries as string) as number[];
          if (own.some((id) => !FINISHED.has(((entryState.get(id) as Row | undefined)?.state as string) ?? "done"))) continue;
          out.messages += dropMessage.run(seq).changes;
          for (const id of own) out.outbox += dropEntry.run(id).changes;
          if (!keyGone) unlinkKey.run(r.tenant, channel, r.key, seq);
        }
      }
      if (finished) this.#pruneFrom.delete(channel);
      else this.#pruneFrom.set(channel, from);
    }

    // ledger keys without a message, per channel
    const unlinked = this.#stmt(
      `DELETE FROM ledger WHERE (tenant, channel, key) IN
         (SELECT tenant, channel, key FROM ledger INDEXED BY ledger_unlinked WHERE channel = ? AND message_seq IS NULL AND first_seen < ? ORDER BY first_seen LIMIT ?)`,
    );
    for (const channel of CHANNELS) {
      const cutoff = c.ledgerBefore[channel];
      if (cutoff === undefined || out.ledger >= limit) continue;
      out.ledger += unlinked.run(channel, cutoff, limit - out.ledger).changes;
    }

    // finished entries without a message (outbound answers, notices)
    out.outbox += this.#stmt(
      "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox INDEXED BY outbox_orphan_finished WHERE state IN ('done', 'refused') AND message_seq IS NULL AND updated_at < ? ORDER BY updated_at LIMIT ?)",
    ).run(c.outboxBefore, limit).changes;

    // expired shared state and outbound idempotency keys
    out.state += this.#stmt(
      "DELETE FROM shared_state WHERE (tenant, key) IN (SELECT tenant, key FROM shared_state INDEXED BY shared_state_expiry WHERE expires_at IS NOT NULL AND expires_at < ? ORDER BY expires_at LIMIT ?)",
    ).run(c.stateBefore, limit).changes;
    out.state += this.#stmt(
      "DELETE FROM outbound_keys WHERE (tenant, key) IN (SELECT tenant, key FROM outbound_keys INDEXED BY outbound_keys_expiry WHERE expires_at < ? ORDER BY expires_at LIMIT ?)",
    ).run(c.stateBefore, limit).changes;

    // audit log rows, oldest first
    out.audit += this.#stmt(
      "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log INDEXED BY audit_log_time WHERE time < ? ORDER BY time LIMIT ?)",
    ).run(c.auditBefore, limit).changes;

    // session-archive pushes, oldest first, up to the first one received after the cutoff
    const pushes = this.#stmt("SELECT id, received_at FROM archive_pushes ORDER BY id LIMIT ?").all(limit) as Row[];
    const dropPush = this.#stmt("DELETE FROM archive_pushes WHERE id = ?");
    for (const p of pushes) {
      if ((p.received_at as number) >= c.archiveBefore) break;
      out.archive += dropPush.run(p.id).changes;
    }

    // media whose links have expired: created before the cutoff, and no entry of their message
    // still live or delivered (links signed) after it
    const mediaWalk = this.#stmt(
      "SELECT * FROM media INDEXED BY media_created WHERE created_at < ? AND (created_at, tenant, id) > (?, ?, ?) ORDER BY created_at, tenant, id LIMIT ?",
    );
    const mediaHeld = this.#stmt(
      `SELECT 1 AS x FROM messages m, json_each(m.entries) e JOIN outbox o ON o.id = e.value
       WHERE m.seq = ? AND (o.state != 'done' OR (o.kind = 'omni' AND o.updated_at >= ?)) LIMIT 1`,
    );
    const dropMedia = this.#stmt("DELETE FROM media WHERE tenant = ? AND id = ?");
    let mediaScanned = 0;
    let mediaFinished = false;
    let at = this.#mediaFrom ?? [Number.MIN_SAFE_INTEGER, "", ""];
    while (!mediaFinished && out.media.length < limit && mediaScanned < scanMax) {
      const rows = mediaWalk.all(c.mediaBefore, ...at, chunk) as Row[];
      if (rows.length < chunk) mediaFinished = true;
      for (const r of rows) {
        if (out.media.length >= limit || mediaScanned >= scanMax) {
          mediaFinished = false;
          break;
        }
        at = [r.created_at as number, r.tenant as string, r.id as string];
        mediaScanned++;
        if (r.message_seq !== null && mediaHeld.get(r.message_seq, c.mediaBefore) !== undefined) continue;
        if (dropMedia.run(r.tenant, r.id).changes === 1) out.media.push(mediaFromRow(r));
      }
    }
    this.#mediaFrom = mediaFinished ? undefined : at;
    return out;
  }

  /**
   * Erase a conversation in one transaction: its messages, their outbox entries and media rows,
   * the session-archive records of its archive messages (they hold the same content), and
   * entries of the conversation without a message. Ledger keys stay (unlinked from their
   * messages, they go by time like the keys of skipped items). The serving process rebuilds its
   * lanes on its next outbox transaction. Archive records are found by one pass over the
   * session-archive pushes, only when the conversation has archive messages.
   */
  async eraseConversation(conversationId: string, tenant?: string): Promise<PruneResult> {
    const out = this.db.transaction((): PruneResult => {
      const r: PruneResult = { messages: 0, outbox: 0, ledger: 0, archive: 0, state: 0, audit: 0, media: [] };
      this.#foldTx();
      const args = tenant === undefined ? [] : [tenant];
      // its summaries and seq lists go first (the message trigger then finds nothing to update)
      const groups = this.#stmt(`SELECT cno, tenant, tail FROM conversations WHERE conversation_id = ?${tenant === undefined ? "" : " AND tenant = ?"}`).all(
        conversationId,
        ...args,
      ) as Row[];
      const seqs: number[] = [];
      for (const g of groups) {
        seqs.push(...(JSON.parse(g.tail as string) as number[]));
        for (const c of this.#stmt("SELECT seqs FROM conversation_chunks WHERE tenant = ? AND cno = ?").all(g.tenant, g.cno) as Row[]) {
          seqs.push(...(JSON.parse(c.seqs as string) as number[]));
        }
        this.#stmt("DELETE FROM conversation_chunks WHERE tenant = ? AND cno = ?").run(g.tenant, g.cno);
        this.#stmt("DELETE FROM conversations WHERE cno = ?").run(g.cno);
      }
      const row = this.#stmt("SELECT seq, tenant, channel, key, entries FROM messages WHERE seq = ?");
      const messages = seqs
        .sort((a, b) => a - b)
        .map((seq) => row.get(seq) as Row | undefined)
        .filter((m): m is Row => m !== undefined);
      const media = this.#stmt("DELETE FROM media WHERE message_seq = ? RETURNING *");
      const dropEntry = this.#stmt("DELETE FROM outbox WHERE id = ?");
      const unlinkKey = this.#stmt("UPDATE ledger SET message_seq = NULL WHERE tenant = ? AND channel = ? AND key = ? AND message_seq = ?");
      const message = this.#stmt("DELETE FROM messages WHERE seq = ?");
      const archived = new Map<string, string[]>();
      for (const m of messages) {
        for (const row of media.all(m.seq) as Row[]) r.media.push(mediaFromRow(row));
        r.messages += message.run(m.seq).changes;
        for (const id of JSON.parse(m.entries as string) as number[]) r.outbox += dropEntry.run(id).changes;
        unlinkKey.run(m.tenant, m.channel, m.key, m.seq);
        if (m.channel === "archive") archived.set(m.tenant as string, [...(archived.get(m.tenant as string) ?? []), m.key as string]);
      }
      // one pass over the pushes per tenant (archive records are not keyed by msgid)
      for (const [tn, keys] of archived) {
        r.archive += this.#stmt("DELETE FROM archive_pushes WHERE tenant = ? AND msgid IN (SELECT value FROM json_each(?))").run(tn, JSON.stringify(keys)).changes;
      }
      const orphans = tenant === undefined ? "" : " AND tenant = ?";
      r.outbox += this.#stmt(`DELETE FROM outbox INDEXED BY outbox_conversation WHERE conversation_id = ? AND message_seq IS NULL${orphans}`).run(
        conversationId,
        ...args,
      ).changes;
      r.state += this.#stmt(`DELETE FROM shared_state INDEXED BY shared_state_conversation WHERE conversation_id = ?${orphans}`).run(conversationId, ...args).changes;
      if (r.outbox > 0) this.#bumpEpoch();
      return r;
    }).immediate();
    // this process's own lanes (another process's are rebuilt through the epoch)
    if (out.outbox > 0) this.#loadLanes();
    return out;
  }

  /** Remove dead letters in transactions of 1,000, yielding between them. */
  async purgeDead(before?: number): Promise<number> {
    const sql =
      before === undefined
        ? "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox INDEXED BY outbox_state_id WHERE state = 'dead' ORDER BY id LIMIT 1000)"
        : "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox INDEXED BY outbox_state_id WHERE state = 'dead' AND updated_at < ? ORDER BY id LIMIT 1000)";
    const purge = this.#stmt(sql);
    let total = 0;
    for (;;) {
      const n = this.db.transaction(() => (before === undefined ? purge.run() : purge.run(before)).changes).immediate();
      total += n;
      if (n < 1000) return total;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /** Append to the audit log (one autocommitted row: another process may be serving the file). Tenant null is stored as ''. */
  async appendAudit(row: Omit<AuditRow, "id">): Promise<void> {
    this.#stmt("INSERT INTO audit_log (tenant, time, actor, origin, action, detail) VALUES (?, ?, ?, ?, ?, substr(?, 1, 1000))").run(
      row.tenant ?? "",
      row.time,
      row.actor,
      row.from,
      row.action,
      row.detail,
    );
  }

  async listAudit(page: Page): Promise<AuditRow[]> {
    if (page.limit <= 0) return [];
    const rows = this.#stmt("SELECT * FROM audit_log WHERE id < ? ORDER BY id DESC LIMIT ?").all(page.before ?? Number.MAX_SAFE_INTEGER, page.limit) as Row[];
    return rows.map(auditFromRow);
  }

  async getOutbox(id: number): Promise<OutboxEntry | undefined> {
    const r = this.#stmt("SELECT * FROM outbox WHERE id = ?").get(id) as Row | undefined;
    return r === undefined ? undefined : outboxFromRow(r);
  }

  async renewLease(entry: number | OutboxClaim, until: number, now: number): Promise<boolean> {
    const id = typeof entry === "number" ? entry : entry.id;
    const claim = typeof entry === "number" ? null : entry.attempts;
    return this.#stmt("UPDATE outbox SET lease_until = ?, updated_at = ? WHERE id = ? AND state = 'inflight' AND (? IS NULL OR attempts = ?)").run(until, now, id, claim, claim).changes === 1;
  }

  async refuseDelivered(id: number, errcode: number, error: string, now: number): Promise<boolean> {
    // a done entry has left its lane already: only its state (and the counts, by trigger) change
    return this.#stmt("UPDATE outbox SET state = 'refused', errcode = ?, last_error = ?, updated_at = ? WHERE id = ? AND state = 'done'").run(errcode, error, now, id).changes === 1;
  }

  async acceptOutbound(input: OutboundAccept): Promise<OutboundAcceptResult> {
    return this.#write(() => this.#acceptTx(input));
  }

  /** The body of {@link acceptOutbound}, inside a write transaction. */
  #acceptTx(input: OutboundAccept): OutboundAcceptResult {
    const { tenant, now } = input;
    const known = this.#stmt("SELECT expires_at, refused_errcode, refused_errmsg FROM outbound_keys WHERE tenant = ? AND key = ?");
    // keys that outlive a duplicate or a refusal: their own replays are recognised too (a replay
    // of a refusal is refused again, with the same answer)
    const keepAlways = (refusal?: { errcode: number; errmsg: string }) => {
      const keep = this.#stmt(
        `INSERT INTO outbound_keys (tenant, key, outbox_id, expires_at, refused_errcode, refused_errmsg) VALUES (?, ?, NULL, ?, ?, ?)
         ON CONFLICT (tenant, key) DO UPDATE SET expires_at = max(expires_at, excluded.expires_at),
           refused_errcode = coalesce(excluded.refused_errcode, refused_errcode), refused_errmsg = coalesce(excluded.refused_errmsg, refused_errmsg)`,
      );
      for (const k of input.keys) if (k.always === true) keep.run(tenant, k.key, k.expiresAt, refusal?.errcode ?? null, refusal?.errmsg ?? null);
    };
    for (const k of input.keys) {
      const r = known.get(tenant, k.key) as Row | undefined;
      if (r !== undefined && (r.expires_at as number) >= now) {
        if (typeof r.refused_errcode === "number") return { outcome: "refused", errcode: r.refused_errcode, errmsg: (r.refused_errmsg as string | null) ?? "" };
        keepAlways();
        return { outcome: "duplicate" };
      }
    }
    let write: StateWrite | undefined;
    if (input.rule !== undefined) {
      const decided = input.rule.decide(this.#readState(tenant, input.rule.key, now));
      if (decided !== undefined && "refuse" in decided) {
        keepAlways(decided.refuse);
        return { outcome: "refused", errcode: decided.refuse.errcode, errmsg: decided.refuse.errmsg };
      }
      write = decided;
    }
    const ids = input.entries.map((e) => this.#insertOutbox(tenant, null, e, now));
    const remember = this.#stmt(
      "INSERT INTO outbound_keys (tenant, key, outbox_id, expires_at) VALUES (?, ?, ?, ?) ON CONFLICT (tenant, key) DO UPDATE SET outbox_id = excluded.outbox_id, expires_at = excluded.expires_at",
    );
    for (const k of input.keys) remember.run(tenant, k.key, ids[0] ?? null, k.expiresAt);
    if (write !== undefined && input.rule !== undefined) this.#writeState(tenant, input.rule.key, input.rule.conversationId, write, now);
    return { outcome: "queued", ids };
  }

  /** A shared state value, undefined when missing or expired. */
  #readState(tenant: string, key: string, now: number): unknown {
    const r = this.#stmt("SELECT value, expires_at FROM shared_state WHERE tenant = ? AND key = ?").get(tenant, key) as Row | undefined;
    if (r === undefined || (r.expires_at !== null && (r.expires_at as number) < now)) return undefined;
    return JSON.parse(r.value as string);
  }

  #writeState(tenant: string, key: string, conversationId: string | null, w: StateWrite, now: number): void {
    this.#stmt(
      `INSERT INTO shared_state (tenant, key, conversation_id, value, expires_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (tenant, key) DO UPDATE SET conversation_id = excluded.conversation_id, value = excluded.value, expires_at = excluded.expires_at, updated_at = excluded.updated_at`,
    ).run(tenant, key, conversationId, JSON.stringify(w.value ?? null), w.expiresAt, now);
  }

  async getState(tenant: string, key: string, now: number): Promise<unknown> {
    return this.#readState(tenant, key, now);
  }

  async updateState(tenant: string, key: string, conversationId: string | null, now: number, update: (current: unknown) => StateWrite | null | undefined): Promise<unknown> {
    // in the turn's group commit, like finishes and accepts
    return this.#write(() => {
      const current = this.#readState(tenant, key, now);
      const next = update(current);
      if (next === undefined) return current;
      if (next === null) {
        this.#stmt("DELETE FROM shared_state WHERE tenant = ? AND key = ?").run(tenant, key);
        return undefined;
      }
      this.#writeState(tenant, key, conversationId, next, now);
      return next.value;
    });
  }

  /** See {@link Store.getOrCreateSetting}. Names starting with `store.` are the store's own marks. */
  async getOrCreateSetting(name: string, create: () => string): Promise<string> {
    if (name.startsWith("store.")) throw new Error(`setting names starting with "store." are the store's own (${name})`);
    const get = this.#stmt("SELECT value FROM settings WHERE tenant = '' AND name = ?");
    const found = get.get(name) as Row | undefined;
    if (found !== undefined) return found.value as string;
    const value = create();
    return this.db.transaction(() => {
      this.#stmt("INSERT INTO settings (tenant, name, value, created_at) VALUES ('', ?, ?, ?) ON CONFLICT (tenant, name) DO NOTHING").run(name, value, Date.now());
      return (get.get(name) as Row).value as string;
    }).immediate();
  }
}
