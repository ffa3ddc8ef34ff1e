/**
 * Versioned migrations of the PostgreSQL store. Each runs once, in order, in one transaction
 * that holds the schema's migration lock (replicas starting together: one migrates, the others
 * wait, then find nothing to do). Never edit a released migration: add one, and keep it
 * compatible with the release before it (replicas of two versions run side by side during a
 * rolling upgrade: add columns with defaults and tables; drop nothing the previous release reads).
 *
 * Every table's primary key and every unique index starts with `tenant` (the corp), so the schema
 * can be distributed by tenant with Citus (see the README's "Beyond one PostgreSQL server");
 * `schema_migrations` and `tenants` are the reference tables (no tenant: one copy on every node).
 * @module
 */

/** One migration. */
export interface PgMigration {
  version: number;
  name: string;
  sql: string;
}

/** Tables without a tenant column: replicated to every node under Citus (reference tables). */
export const REFERENCE_TABLES: readonly string[] = ["schema_migrations", "tenants"];

/** All migrations, in order. */
export const PG_MIGRATIONS: readonly PgMigration[] = [
  {
    version: 1,
    name: "ledger, messages, outbox with lanes and counts, cursors, archive, tokens, media, settings, outbound keys, shared state",
    sql: `
      -- the corps this database serves (claims and retention walk them one at a time)
      CREATE TABLE tenants (
        tenant     TEXT PRIMARY KEY,
        created_at BIGINT NOT NULL
      );

      -- the idempotency ledger: one row per inbound item, under its real id
      CREATE TABLE ledger (
        tenant      TEXT NOT NULL,
        channel     TEXT NOT NULL,
        key         TEXT NOT NULL,
        message_seq BIGINT,
        skip_reason TEXT,
        first_seen  BIGINT NOT NULL,
        PRIMARY KEY (tenant, channel, key)
      );
      CREATE INDEX ledger_age ON ledger (channel, first_seen);

      CREATE SEQUENCE messages_seq;
      CREATE TABLE messages (
        tenant          TEXT NOT NULL,
        seq             BIGINT NOT NULL,
        channel         TEXT NOT NULL,
        key             TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        time            BIGINT NOT NULL,
        received_at     BIGINT NOT NULL,
        content_type    TEXT NOT NULL,
        body            TEXT NOT NULL,
        PRIMARY KEY (tenant, seq)
      );
      CREATE INDEX messages_seq_idx ON messages (seq);
      CREATE INDEX messages_conversation ON messages (conversation_id, seq);
      CREATE INDEX messages_channel_seq ON messages (channel, seq);
      CREATE INDEX messages_received ON messages (channel, received_at);
      CREATE INDEX messages_time ON messages (time);

      -- one row per conversation, kept with its messages, for /admin/conversations
      CREATE TABLE conversations (
        tenant          TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        channel         TEXT NOT NULL,
        messages        BIGINT NOT NULL,
        last_time       BIGINT NOT NULL,
        last_seq        BIGINT NOT NULL,
        PRIMARY KEY (tenant, conversation_id, channel)
      );
      CREATE INDEX conversations_last_seq ON conversations (last_seq);
      CREATE INDEX conversations_channel_last_seq ON conversations (channel, last_seq);

      -- Entries of one (tenant, kind, conversation) form a lane, processed one at a time in
      -- lane_pos order: ready marks the one entry of a lane that may be claimed (or an entry
      -- without a conversation). outbox_lanes counts each lane's live (pending or in flight)
      -- entries; its row is locked by whoever adds to or leaves the lane, so replicas agree on
      -- which entry is the head.
      CREATE SEQUENCE outbox_id_seq;
      CREATE TABLE outbox (
        tenant          TEXT NOT NULL,
        id              BIGINT NOT NULL,
        kind            TEXT NOT NULL,
        conversation_id TEXT,
        message_seq     BIGINT,
        payload         TEXT NOT NULL,
        state           TEXT NOT NULL,
        ready           BOOLEAN NOT NULL DEFAULT false,
        lane_pos        BIGINT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at BIGINT NOT NULL,
        lease_until     BIGINT,
        lease_owner     TEXT,
        last_error      TEXT,
        errcode         INTEGER,
        created_at      BIGINT NOT NULL,
        updated_at      BIGINT NOT NULL,
        PRIMARY KEY (tenant, id)
      );
      CREATE INDEX outbox_id_idx ON outbox (id);
      CREATE INDEX outbox_ready ON outbox (tenant, next_attempt_at, id) WHERE state = 'pending' AND ready;
      CREATE INDEX outbox_leased ON outbox (tenant, lease_until) WHERE state = 'inflight';
      CREATE INDEX outbox_lane ON outbox (tenant, kind, conversation_id, lane_pos) WHERE state = 'pending';
      CREATE INDEX outbox_state_id ON outbox (state, id);
      CREATE INDEX outbox_message ON outbox (tenant, message_seq) WHERE message_seq IS NOT NULL;
      CREATE INDEX outbox_orphan_finished ON outbox (updated_at) WHERE state IN ('done', 'refused') AND message_seq IS NULL;
      CREATE INDEX outbox_orphan_conversation ON outbox (conversation_id) WHERE message_seq IS NULL;
      CREATE TABLE outbox_lanes (
        tenant          TEXT NOT NULL,
        kind            TEXT NOT NULL,
        conversation_id TEXT NOT NULL,
        live            INTEGER NOT NULL,
        PRIMARY KEY (tenant, kind, conversation_id)
      );
      -- outbox entries by state, as sums of slots (each transaction adds its changes to a
      -- random slot, so concurrent writers rarely wait on one row): a /metrics scrape sums a few
      -- hundred rows, never counts the outbox
      CREATE TABLE outbox_counts (
        tenant TEXT NOT NULL,
        state  TEXT NOT NULL,
        slot   INTEGER NOT NULL,
        n      BIGINT NOT NULL,
        PRIMARY KEY (tenant, state, slot)
      );

      CREATE SEQUENCE kf_cursors_id_seq;
      CREATE TABLE kf_cursors (
        tenant        TEXT NOT NULL,
        open_kfid     TEXT NOT NULL,
        id            BIGINT NOT NULL DEFAULT nextval('kf_cursors_id_seq'),
        cursor        TEXT,
        first_seen_at BIGINT NOT NULL,
        updated_at    BIGINT NOT NULL,
        PRIMARY KEY (tenant, open_kfid)
      );
      CREATE INDEX kf_cursors_id ON kf_cursors (id);

      CREATE SEQUENCE archive_pushes_id_seq;
      CREATE TABLE archive_pushes (
        tenant      TEXT NOT NULL,
        id          BIGINT NOT NULL DEFAULT nextval('archive_pushes_id_seq'),
        message_id  TEXT NOT NULL,
        push_type   INTEGER NOT NULL,
        msgid       TEXT,
        seq         BIGINT,
        received_at BIGINT NOT NULL,
        body        TEXT NOT NULL,
        PRIMARY KEY (tenant, id)
      );
      CREATE UNIQUE INDEX archive_pushes_key ON archive_pushes (tenant, message_id);
      CREATE INDEX archive_pushes_id ON archive_pushes (id);
      CREATE INDEX archive_pushes_msgid ON archive_pushes (tenant, msgid) WHERE msgid IS NOT NULL;

      CREATE TABLE tokens (
        tenant     TEXT NOT NULL,
        key        TEXT NOT NULL,
        token      TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (tenant, key)
      );

      CREATE TABLE media (
        tenant       TEXT NOT NULL,
        id           TEXT NOT NULL,
        message_seq  BIGINT,
        content_type TEXT NOT NULL,
        file_name    TEXT NOT NULL,
        size         BIGINT NOT NULL,
        created_at   BIGINT NOT NULL,
        PRIMARY KEY (tenant, id)
      );
      CREATE INDEX media_created ON media (created_at, tenant, id);
      CREATE INDEX media_message_seq ON media (tenant, message_seq) WHERE message_seq IS NOT NULL;

      -- named values (the generated media-link secret); tenant '' is the whole installation
      CREATE TABLE settings (
        tenant     TEXT NOT NULL DEFAULT '',
        name       TEXT NOT NULL,
        value      TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (tenant, name)
      );

      -- idempotency keys of the 全媒体's requests (a refused one remembers its refusal)
      CREATE TABLE outbound_keys (
        tenant          TEXT NOT NULL,
        key             TEXT NOT NULL,
        outbox_id       BIGINT,
        expires_at      BIGINT NOT NULL,
        refused_errcode INTEGER,
        refused_errmsg  TEXT,
        PRIMARY KEY (tenant, key)
      );
      CREATE INDEX outbound_keys_expiry ON outbound_keys (expires_at);

      -- state shared by every replica: KF session rules, bot streams, pacing, uploaded media ids
      CREATE TABLE shared_state (
        tenant          TEXT NOT NULL,
        key             TEXT NOT NULL,
        conversation_id TEXT,
        value           TEXT NOT NULL,
        expires_at      BIGINT,
        updated_at      BIGINT NOT NULL,
        PRIMARY KEY (tenant, key)
      );
      CREATE INDEX shared_state_conversation ON shared_state (conversation_id) WHERE conversation_id IS NOT NULL;
      CREATE INDEX shared_state_expiry ON shared_state (expires_at) WHERE expires_at IS NOT NULL;
    `,
  },
  {
    version: 2,
    name: "audit log; outbox entries by conversation",
    sql: `
      -- state-changing actions (replay, purge, erase, console logins): tenant '' when the action
      -- concerned no one corp (as in settings); origin is where it came from (a client's
      -- address, cli@host). The listing pages by id, retention walks it by time.
      CREATE SEQUENCE audit_log_id_seq;
      CREATE TABLE audit_log (
        tenant TEXT NOT NULL DEFAULT '',
        id     BIGINT NOT NULL DEFAULT nextval('audit_log_id_seq'),
        time   BIGINT NOT NULL,
        actor  TEXT NOT NULL,
        origin TEXT NOT NULL,
        action TEXT NOT NULL,
        detail TEXT NOT NULL,
        PRIMARY KEY (tenant, id)
      );
      CREATE INDEX audit_log_id ON audit_log (id);
      CREATE INDEX audit_log_time ON audit_log (time);

      -- listOutbox by conversation walks that conversation's entries without a message (agents'
      -- answers, notices) newest first; (conversation_id, id) never changes once written, so claims
      -- and finishes do not touch this index, and a customer's message writes nothing to it
      CREATE INDEX outbox_conversation ON outbox (conversation_id, id) WHERE message_seq IS NULL;
    `,
  },
];
