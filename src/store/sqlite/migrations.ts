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
  {
    version: 2,
    name: "retention, erasure, settings, KF account ids; outbox counts, conversation summaries and listing keys folded in",
    sql: `
      -- KF accounts get a stable integer id (the admin listing pages by it, newest first): the
      -- table is rebuilt, keeping its rows, in the order the accounts were first seen
      CREATE TABLE kf_cursors_v2 (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant        TEXT NOT NULL,
        open_kfid     TEXT NOT NULL,
        cursor        TEXT,
        first_seen_at INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL,
        UNIQUE (tenant, open_kfid)
      );
      INSERT INTO kf_cursors_v2 (tenant, open_kfid, cursor, first_seen_at, updated_at)
        SELECT tenant, open_kfid, cursor, first_seen_at, updated_at FROM kf_cursors ORDER BY first_seen_at, tenant, open_kfid;
      DROP TABLE kf_cursors;
      ALTER TABLE kf_cursors_v2 RENAME TO kf_cursors;

      -- named values kept by the store (the generated media-link secret; the store's own marks,
      -- named store.*); tenant '' is the whole installation
      CREATE TABLE settings (
        tenant     TEXT NOT NULL DEFAULT '',
        name       TEXT NOT NULL,
        value      TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (tenant, name)
      ) WITHOUT ROWID;

      -- The ingest path writes no more index entries than before: each one dirties pages that
      -- every transaction writes to the WAL. The tenant-first keys of migration 1 (no query reads
      -- them) give way to unique keys that carry the tenant and that listings read; what else the
      -- listings and retention need is folded in from new rows by the store (below).
      DROP INDEX messages_tenant_seq;
      -- the channel listing; retention walks a channel oldest first (seq follows received_at: one
      -- writer stamps both)
      CREATE UNIQUE INDEX messages_channel_seq ON messages (channel, seq, tenant);
      DROP INDEX outbox_tenant_id;
      -- listOutbox walks one state at a time by id (outbox_dead was a part of it)
      DROP INDEX outbox_dead;
      CREATE UNIQUE INDEX outbox_state_id ON outbox (state, id, tenant);
      -- ledger keys without a message (skipped items; keys of removed or erased messages), by
      -- time; the keys of stored messages are found through their messages
      CREATE INDEX ledger_unlinked ON ledger (channel, first_seen) WHERE message_seq IS NULL;
      -- a message's outbox entries (ids, a JSON array), written with the message: their ids are
      -- known before they are inserted (one writer)
      ALTER TABLE messages ADD COLUMN entries TEXT NOT NULL DEFAULT '[]';
      UPDATE messages SET entries = e.ids
        FROM (SELECT message_seq, json_group_array(id) AS ids FROM (SELECT message_seq, id FROM outbox WHERE message_seq IS NOT NULL ORDER BY id) GROUP BY message_seq) AS e
        WHERE e.message_seq = messages.seq;
      -- written by deliveries, media fetches, retention and erasure only
      CREATE INDEX outbox_orphan_done ON outbox (updated_at) WHERE state = 'done' AND message_seq IS NULL;
      CREATE INDEX outbox_orphan_conversation ON outbox (conversation_id) WHERE message_seq IS NULL;
      CREATE INDEX media_created ON media (created_at, tenant, id);
      CREATE INDEX media_message_seq ON media (message_seq) WHERE message_seq IS NOT NULL;

      -- Outbox entries by state, for the whole installation (tenant ''). Inserts are counted from
      -- the ids (AUTOINCREMENT, given out one after another): every entry up to
      -- store.foldedOutboxId is in the pending count, those after it are added by the reader, and
      -- the store folds them in now and then; state changes and removals are counted by the
      -- triggers below, whatever process makes them. A /metrics scrape reads four rows.
      CREATE TABLE outbox_counts (
        tenant TEXT NOT NULL,
        state  TEXT NOT NULL,
        n      INTEGER NOT NULL,
        PRIMARY KEY (tenant, state)
      ) WITHOUT ROWID;
      INSERT INTO outbox_counts (tenant, state, n) VALUES ('', 'pending', 0), ('', 'inflight', 0), ('', 'done', 0), ('', 'dead', 0);
      UPDATE outbox_counts SET n = c.n FROM (SELECT state, count(*) AS n FROM outbox GROUP BY state) AS c WHERE outbox_counts.state = c.state;
      INSERT INTO settings (tenant, name, value, created_at)
        SELECT '', 'store.foldedOutboxId', CAST(max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0), coalesce((SELECT max(id) FROM outbox), 0)) AS TEXT),
          CAST(unixepoch('subsec') * 1000 AS INTEGER);
      CREATE TRIGGER outbox_state_count AFTER UPDATE OF state ON outbox WHEN old.state IS NOT new.state BEGIN
        UPDATE outbox_counts SET n = n - 1 WHERE tenant = '' AND state = old.state;
        UPDATE outbox_counts SET n = n + 1 WHERE tenant = '' AND state = new.state;
      END;
      CREATE TRIGGER outbox_delete_count AFTER DELETE ON outbox BEGIN
        UPDATE outbox_counts SET n = n - 1 WHERE tenant = '' AND state = old.state;
      END;
      -- a removed entry (a purged dead letter) leaves its message's list
      CREATE TRIGGER outbox_delete_entry AFTER DELETE ON outbox WHEN old.message_seq IS NOT NULL BEGIN
        UPDATE messages SET entries = (SELECT json_group_array(value) FROM json_each(entries) WHERE value != old.id) WHERE seq = old.message_seq;
      END;

      -- Folded in by the store from the messages past store.foldedSeq, every few hundred ms in
      -- the serving process (grouped by conversation from what it stored) and before any read or
      -- removal that needs them. Removals of folded messages are applied by the trigger below.
      -- One row per conversation (cno: its number), for /admin/conversations; tail: the seqs of
      -- its newest messages (a JSON array, ascending), moved to a chunk when it passes 128.
      CREATE TABLE conversations (
        cno             INTEGER PRIMARY KEY,
        tenant          TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        channel         TEXT NOT NULL,
        messages        INTEGER NOT NULL,
        last_time       INTEGER NOT NULL,
        last_seq        INTEGER NOT NULL,
        tail            TEXT NOT NULL DEFAULT '[]',
        UNIQUE (tenant, conversation_id, channel)
      );
      CREATE INDEX conversations_id ON conversations (conversation_id);
      CREATE INDEX conversations_last_seq ON conversations (last_seq);
      CREATE INDEX conversations_channel_last_seq ON conversations (channel, last_seq);
      -- the seqs of a conversation's older messages, in chunks (JSON arrays, ascending; first_seq
      -- is at most the smallest): a fold appends a conversation's new seqs with the one statement
      -- that updates its summary, instead of writing one key per message
      CREATE TABLE conversation_chunks (
        tenant    TEXT NOT NULL,
        cno       INTEGER NOT NULL,
        first_seq INTEGER NOT NULL,
        seqs      TEXT NOT NULL,
        PRIMARY KEY (tenant, cno, first_seq)
      ) WITHOUT ROWID;
      -- Time windows: messages stored within an hour of their time are found through blocks of
      -- 1,024 seqs (seq / 1024) and the time range of each block's such messages; the others
      -- (history, late records, a skewed clock) through their time.
      CREATE TABLE message_blocks (
        tenant   TEXT NOT NULL,
        block    INTEGER NOT NULL,
        min_time INTEGER NOT NULL,
        max_time INTEGER NOT NULL,
        PRIMARY KEY (tenant, block)
      ) WITHOUT ROWID;
      CREATE TABLE late_messages (
        time    INTEGER NOT NULL,
        seq     INTEGER NOT NULL,
        tenant  TEXT NOT NULL,
        channel TEXT NOT NULL,
        PRIMARY KEY (time, seq, tenant)
      ) WITHOUT ROWID;

      INSERT INTO conversations (tenant, conversation_id, channel, messages, last_time, last_seq)
        SELECT tenant, conversation_id, channel, count(*), max(time), max(seq) FROM messages GROUP BY tenant, conversation_id, channel ORDER BY max(seq);
      INSERT INTO conversation_chunks (tenant, cno, first_seq, seqs)
        SELECT tenant, cno, min(seq), json_group_array(seq ORDER BY seq) FROM (
          SELECT m.tenant, c.cno, m.seq, (row_number() OVER (PARTITION BY c.cno ORDER BY m.seq) - 1) / 128 AS part
          FROM messages m JOIN conversations c ON c.tenant = m.tenant AND c.conversation_id = m.conversation_id AND c.channel = m.channel
        ) GROUP BY tenant, cno, part;
      INSERT INTO message_blocks (tenant, block, min_time, max_time)
        SELECT tenant, seq / 1024, min(time), max(time) FROM messages WHERE abs(time - received_at) <= 3600000 GROUP BY 1, 2;
      INSERT INTO late_messages (time, seq, tenant, channel) SELECT time, seq, tenant, channel FROM messages WHERE abs(time - received_at) > 3600000 ORDER BY 1, 2;
      INSERT INTO settings (tenant, name, value, created_at)
        SELECT '', 'store.foldedSeq', CAST(coalesce(max(seq), 0) AS TEXT), CAST(unixepoch('subsec') * 1000 AS INTEGER) FROM messages;

      -- A removed message that was folded in leaves its conversation: one fewer, its seq out of
      -- the tail or its chunk (an emptied chunk goes); the summary goes with the last message;
      -- when the newest (or the latest in time) goes and others stay, the rest is read. Erasure
      -- removes the summary and chunks first, so this finds nothing to do. Blocks keep their
      -- ranges (a wider range only costs a longer look).
      CREATE TRIGGER messages_delete_folded AFTER DELETE ON messages
        WHEN old.seq <= (SELECT CAST(value AS INTEGER) FROM settings WHERE tenant = '' AND name = 'store.foldedSeq')
      BEGIN
        DELETE FROM late_messages WHERE time = old.time AND seq = old.seq AND tenant = old.tenant;
        UPDATE conversation_chunks SET seqs = (SELECT json_group_array(value) FROM json_each(seqs) WHERE value != old.seq)
          WHERE tenant = old.tenant AND cno = (SELECT cno FROM conversations WHERE tenant = old.tenant AND conversation_id = old.conversation_id AND channel = old.channel)
            AND first_seq = (SELECT max(k.first_seq) FROM conversation_chunks k WHERE k.tenant = old.tenant AND k.cno = conversation_chunks.cno AND k.first_seq <= old.seq);
        DELETE FROM conversation_chunks WHERE tenant = old.tenant AND cno = (SELECT cno FROM conversations WHERE tenant = old.tenant AND conversation_id = old.conversation_id AND channel = old.channel) AND seqs = '[]';
        DELETE FROM conversation_chunks WHERE tenant = old.tenant AND cno = (SELECT cno FROM conversations WHERE tenant = old.tenant AND conversation_id = old.conversation_id AND channel = old.channel AND messages <= 1);
        DELETE FROM conversations WHERE tenant = old.tenant AND conversation_id = old.conversation_id AND channel = old.channel AND messages <= 1;
        UPDATE conversations SET messages = messages - 1, tail = (SELECT json_group_array(value) FROM json_each(tail) WHERE value != old.seq) WHERE tenant = old.tenant AND conversation_id = old.conversation_id AND channel = old.channel;
        UPDATE conversations SET last_seq = coalesce(
            (SELECT max(value) FROM json_each(conversations.tail)),
            (SELECT max(j.value) FROM conversation_chunks k, json_each(k.seqs) j WHERE k.tenant = conversations.tenant AND k.cno = conversations.cno
               AND k.first_seq = (SELECT max(first_seq) FROM conversation_chunks WHERE tenant = conversations.tenant AND cno = conversations.cno)))
          WHERE tenant = old.tenant AND conversation_id = old.conversation_id AND channel = old.channel AND last_seq = old.seq;
        UPDATE conversations SET last_time = (SELECT max(m.time) FROM messages m WHERE m.seq IN (
            SELECT value FROM json_each(conversations.tail)
            UNION ALL SELECT j.value FROM conversation_chunks k, json_each(k.seqs) j WHERE k.tenant = conversations.tenant AND k.cno = conversations.cno))
          WHERE tenant = old.tenant AND conversation_id = old.conversation_id AND channel = old.channel AND (last_time = old.time OR last_seq < old.seq);
      END;
    `,
  },
  {
    version: 3,
    name: "outbound: refused entries, outbound idempotency keys, shared state",
    sql: `
      -- a refused entry ends its life like a delivered one (pruned by time), with WeCom's errcode
      ALTER TABLE outbox ADD COLUMN errcode INTEGER;
      INSERT INTO outbox_counts (tenant, state, n) VALUES ('', 'refused', 0) ON CONFLICT (tenant, state) DO NOTHING;
      DROP INDEX outbox_orphan_done;
      CREATE INDEX outbox_orphan_finished ON outbox (updated_at) WHERE state IN ('done', 'refused') AND message_seq IS NULL;
      -- idempotency keys of the 全媒体's requests (Tag.msgid, content within the window, replays)
      -- (a key kept from a refused request remembers the refusal: its replay is refused again)
      CREATE TABLE outbound_keys (
        tenant          TEXT NOT NULL,
        key             TEXT NOT NULL,
        outbox_id       INTEGER,
        expires_at      INTEGER NOT NULL,
        refused_errcode INTEGER,
        refused_errmsg  TEXT,
        PRIMARY KEY (tenant, key)
      ) WITHOUT ROWID;
      CREATE INDEX outbound_keys_expiry ON outbound_keys (expires_at);
      -- state shared by every process: KF session rules, bot streams, pacing, uploaded media ids
      CREATE TABLE shared_state (
        tenant          TEXT NOT NULL,
        key             TEXT NOT NULL,
        conversation_id TEXT,
        value           TEXT NOT NULL,
        expires_at      INTEGER,
        updated_at      INTEGER NOT NULL,
        PRIMARY KEY (tenant, key)
      ) WITHOUT ROWID;
      CREATE INDEX shared_state_conversation ON shared_state (conversation_id) WHERE conversation_id IS NOT NULL;
      CREATE INDEX shared_state_expiry ON shared_state (expires_at) WHERE expires_at IS NOT NULL;
    `,
  },
  {
    version: 4,
    name: "audit log; outbox entries by conversation",
    sql: `
      -- state-changing actions (replay, purge, erase, console logins): tenant '' when the action
      -- concerned no one corp; origin is where it came from (a client's address, cli@host).
      -- AUTOINCREMENT: ids of pruned rows are never given again (the listing pages by id)
      CREATE TABLE audit_log (
        id     INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant TEXT NOT NULL DEFAULT '',
        time   INTEGER NOT NULL,
        actor  TEXT NOT NULL,
        origin TEXT NOT NULL,
        action TEXT NOT NULL,
        detail TEXT NOT NULL
      );
      -- retention walks it by time (a caller may pass a time out of id order); the key carries the
      -- tenant, as every table's does
      CREATE UNIQUE INDEX audit_log_time ON audit_log (time, id, tenant);

      -- listOutbox by conversation walks that conversation's entries without a message (agents'
      -- answers, notices) newest first; (conversation_id, id) never changes once written, so claims
      -- and finishes do not touch this index, and a customer's message (its delivery entry has a
      -- message) writes nothing to it. It also finds what an erasure removes, in place of
      -- outbox_orphan_conversation (the same rows)
      CREATE INDEX outbox_conversation ON outbox (conversation_id, id) WHERE message_seq IS NULL;
      DROP INDEX outbox_orphan_conversation;
    `,
  },
];
