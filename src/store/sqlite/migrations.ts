/**
 * Versioned migrations of the SQLite store. Each entry runs once, in order, inside a transaction;
 * applied versions are recorded in `schema_migrations`. Never edit a released migration: add one.
 * @module
 */

/** One migration. */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** All migrations, in order. */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "ledger, messages, outbox, cursors, archive, tokens, media",
    sql: `
      -- the idempotency ledger: one row per inbound item, under its real id
      CREATE TABLE ledger (
        tenant      TEXT NOT NULL,
        channel     TEXT NOT NULL,
        key         TEXT NOT NULL,
        message_seq INTEGER,
        skip_reason TEXT,
        first_seen  INTEGER NOT NULL,
        PRIMARY KEY (tenant, channel, key)
      ) WITHOUT ROWID;

      CREATE TABLE messages (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant          TEXT NOT NULL,
        channel         TEXT NOT NULL,
        key             TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        time            INTEGER NOT NULL,
        received_at     INTEGER NOT NULL,
        content_type    TEXT NOT NULL,
        body            TEXT NOT NULL
      );
      -- the tenant-first key (seq alone is unique; PostgreSQL distributes by tenant); append-only
      CREATE UNIQUE INDEX messages_tenant_seq ON messages (tenant, seq);

      -- Entries of one (tenant, kind, conversation) form a lane, chained by next_id in order;
      -- ready = 1 marks a lane's head (or an entry without a conversation). Only ready entries are
      -- claimed, so a claim is an index range scan, and writing an entry touches only recent pages.
      -- The store keeps each lane's length and tail in memory (rebuilt from the chains at open).
      -- requeued = 1: put back by another process (replay), to be chained by the serving one.
      CREATE TABLE outbox (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant          TEXT NOT NULL,
        kind            TEXT NOT NULL,
        conversation_id TEXT,
        message_seq     INTEGER,
        payload         TEXT NOT NULL,
        state           TEXT NOT NULL,
        ready           INTEGER NOT NULL DEFAULT 0,
        next_id         INTEGER,
        requeued        INTEGER NOT NULL DEFAULT 0,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        lease_until     INTEGER,
        last_error      TEXT,
        created_at      INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL
      );
      CREATE UNIQUE INDEX outbox_tenant_id ON outbox (tenant, id);
      CREATE INDEX outbox_ready ON outbox (next_attempt_at, id) WHERE state = 'pending' AND ready = 1;
      CREATE INDEX outbox_leased ON outbox (lease_until) WHERE state = 'inflight';
      CREATE INDEX outbox_dead ON outbox (id) WHERE state = 'dead';
      CREATE INDEX outbox_requeued ON outbox (id) WHERE requeued = 1;

      CREATE TABLE kf_cursors (
        tenant        TEXT NOT NULL,
        open_kfid     TEXT NOT NULL,
        cursor        TEXT,
        first_seen_at INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL,
        PRIMARY KEY (tenant, open_kfid)
      ) WITHOUT ROWID;

      CREATE TABLE archive_pushes (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant      TEXT NOT NULL,
        message_id  TEXT NOT NULL,
        push_type   INTEGER NOT NULL,
        msgid       TEXT,
        seq         INTEGER,
        received_at INTEGER NOT NULL,
        body        TEXT NOT NULL
      );
      CREATE UNIQUE INDEX archive_pushes_key ON archive_pushes (tenant, message_id);

      CREATE TABLE tokens (
        tenant     TEXT NOT NULL,
        key        TEXT NOT NULL,
        token      TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (tenant, key)
      ) WITHOUT ROWID;

      CREATE TABLE media (
        tenant       TEXT NOT NULL,
        id           TEXT NOT NULL,
        message_seq  INTEGER,
        content_type TEXT NOT NULL,
        file_name    TEXT NOT NULL,
        size         INTEGER NOT NULL,
        created_at   INTEGER NOT NULL,
        PRIMARY KEY (tenant, id)
      ) WITHOUT ROWID;
    `,
  },
];
