/**
 * The one store interface of the gateway. The gateway depends on this, never on an engine; SQLite
 * (embedded, the default) implements it today and PostgreSQL will join. Every record carries its
 * tenant (the CorpID, which the seeds call 租户id) in its keys.
 * @module
 */
import type { Channel, UnifiedMessage } from "../model.js";

/** What an outbox entry does. */
export type OutboxKind =
  /** deliver a stored message (or a notice) to the 全媒体 */
  | "omni"
  /** fetch a message's media from WeCom into the media store */
  | "media"
  /** an agent's answer (or a session operation) for a KF customer: kf/send_msg, send_msg_on_event, service_state/trans */
  | "kf_send"
  /** an agent's answer to a member of a self-built app: message/send */
  | "app_send"
  /** an agent's answer to an AI bot's user: into the conversation's stream, or its response_url */
  | "bot_reply";

/**
 * Life of an outbox entry: pending → inflight → done, or back to pending (retry), or dead (an
 * operator's alarm), or refused (WeCom's rule for that customer: final, not an alarm).
 */
export type OutboxState = "pending" | "inflight" | "done" | "dead" | "refused";

/** An outbox entry to create. */
export interface OutboxInsert {
  kind: OutboxKind;
  /** Entries of one kind and conversation are processed one at a time, in order. Null: no order. */
  conversationId: string | null;
  /** What the worker needs (JSON). */
  payload: unknown;
  /** Not before this time, ms. Default: now. */
  notBefore?: number;
}

/** A stored outbox entry. */
export interface OutboxEntry {
  id: number;
  tenant: string;
  kind: OutboxKind;
  conversationId: string | null;
  /** The message this entry belongs to, when any. */
  messageSeq: number | null;
  payload: unknown;
  state: OutboxState;
  attempts: number;
  nextAttemptAt: number;
  lastError: string | null;
  /** WeCom's errcode of a refused entry (0 for a refusal decided without a call). */
  errcode: number | null;
  createdAt: number;
  updatedAt: number;
}

/** A claim of an entry: its id and the `attempts` the claim gave it (the claim's token). */
export type OutboxClaim = Pick<OutboxEntry, "id" | "attempts">;

/** One inbound item for {@link Store.ingest}. */
export interface IngestItem {
  tenant: string;
  /** Namespace of the idempotency key. */
  channel: Channel;
  /** The item's real id (MsgId / event key, KF msgid, bot msgid, archive msgid). */
  key: string;
  /** The decoded message; absent to only record the key (an item deliberately skipped). */
  message?: UnifiedMessage;
  /** Why the item was recorded without a message (e.g. `kf_history`). */
  skipReason?: string;
  /** Outbox entries created with the message (their messageSeq is filled in). */
  outbox?: OutboxInsert[];
  /** A session-archive push to record with the item (every push type is kept). */
  archive?: ArchivePushRow;
  /**
   * A change to a shared state value made with a new item, in the same transaction (KF session
   * rules): `apply` gets the current value and returns the value to write (if any) and outbox
   * entries it decided (added after the item's own). Must be synchronous. Not run for a known key.
   */
  effect?: IngestEffect;
}

/** See {@link IngestItem.effect}. */
export interface IngestEffect {
  key: string;
  conversationId: string;
  apply: (current: unknown) => { state?: StateWrite; entries?: OutboxInsert[] };
}

/** What happened to one ingested item. */
export interface IngestResult {
  /** False when the key was already in the ledger (a retry or a repeated page). */
  stored: boolean;
  /** The message's sequence number (new or the one first stored). */
  seq?: number;
}

/** A KF account's pull state. */
export interface KfCursor {
  tenant: string;
  openKfId: string;
  /** The next_cursor of the last stored page; undefined before the first page. */
  cursor?: string;
  /** When the account was first seen (ms): history before it is not delivered by default. */
  firstSeenAt: number;
  updatedAt: number;
}

/** A stored message row. */
export interface StoredMessage {
  seq: number;
  tenant: string;
  channel: Channel;
  key: string;
  conversationId: string;
  time: number;
  receivedAt: number;
  contentType: string;
  message: UnifiedMessage;
}

/** A conversation summary for the admin API. */
export interface ConversationSummary {
  tenant: string;
  conversationId: string;
  channel: Channel;
  messages: number;
  lastTime: number;
  lastSeq: number;
}

/** A session-archive push as stored (every push type, records included). */
export interface ArchivePushRow {
  tenant: string;
  messageId: string;
  pushType: number;
  /** The record's msgid, for type 101. */
  msgid?: string;
  seq?: number;
  receivedAt: number;
  body: unknown;
}

/** A cached access token. */
export interface TokenRow {
  tenant: string;
  /** Hash of (corpId, secret): the secret itself is never stored. */
  key: string;
  token: string;
  expiresAt: number;
}

/** A media file in the media store. */
export interface MediaRow {
  tenant: string;
  /** Our id of the file (also its file name on disk). */
  id: string;
  messageSeq: number | null;
  contentType: string;
  fileName: string;
  size: number;
  createdAt: number;
}

/** Paging of admin lists: newest first, `before` is the last seq/id of the previous page. */
export interface Page {
  limit: number;
  before?: number;
}

/** Filters of {@link Store.listMessages}. */
export interface MessageFilter {
  tenant?: string;
  channel?: Channel;
  conversationId?: string;
  /** ms, inclusive */
  since?: number;
  /** ms, exclusive */
  until?: number;
}

/** How an outbox entry ended an attempt. */
export type OutboxOutcome =
  | { state: "done" }
  | { state: "pending"; nextAttemptAt: number; error: string; countAttempt?: boolean }
  | { state: "dead"; error: string }
  | { state: "refused"; error: string; errcode: number };

/** What {@link Store.pruneBatch} may remove: everything strictly older than these times (ms). */
export interface PruneCutoffs {
  /**
   * Messages received before this, by channel (every channel is given), go, with their outbox
   * entries in state `done`. A message with an entry that is pending, in flight or dead stays.
   */
  messagesBefore: Record<Channel, number>;
  /** Ledger keys first seen before this, by channel, go (the caller keeps them ≥ 4 days). */
  ledgerBefore: Record<Channel, number>;
  /** Session-archive pushes received before this go. */
  archiveBefore: number;
  /**
   * Media rows (and so their files) go when created before this, and their message's `omni`
   * entry finished (`done`) before it too (its links, signed at delivery, have expired): the
   * caller passes now - mediaLinkTtlSec. Media of a message with a live entry stays.
   */
  mediaBefore: number;
  /** Outbox entries without a message (outbound answers, notices) in state `done` or `refused` updated before this go. */
  outboxBefore: number;
  /** Shared state rows and outbound idempotency keys that expire before this go (the caller passes now). */
  stateBefore: number;
  /** Audit log rows whose `time` is before this go. */
  auditBefore: number;
}

/** What one {@link Store.pruneBatch} or {@link Store.eraseConversation} removed. */
export interface PruneResult {
  messages: number;
  outbox: number;
  ledger: number;
  archive: number;
  /** Shared state rows and outbound idempotency keys removed. */
  state: number;
  /** Audit log rows removed (never by an erasure). */
  audit: number;
  /** Media rows removed: the caller deletes their files. */
  media: MediaRow[];
}

/** A state-changing action, as the audit log keeps it. */
export interface AuditRow {
  id: number;
  /** When, ms. */
  time: number;
  /** The corp it concerned, when one (null: all). */
  tenant: string | null;
  /** Who: `console`, `admin-api` or `cli`. */
  actor: string;
  /** From where: the client's address, or `cli@{hostname}`. */
  from: string;
  /** What: `replay`, `purge`, `erase`, `login`, `logout`. */
  action: string;
  /** What it touched, one line (ids, counts); never a secret. */
  detail: string;
}

/** A KF account in the admin listing: its pull state and its paging key. */
export interface KfCursorListItem extends KfCursor {
  /** Stable paging key (newest account first). */
  id: number;
}

/** A shared state value to write: `expiresAt` (ms) lets retention remove it; null keeps it. */
export interface StateWrite {
  value: unknown;
  expiresAt: number | null;
}

/**
 * Input of {@link Store.acceptOutbound}: queue entries unless one of `keys` is known and live (a
 * retry), after a rule check on a shared state value, all in one transaction.
 */
export interface OutboundAccept {
  tenant: string;
  /**
   * Idempotency keys of the request; each is remembered until its `expiresAt` (ms). A key marked
   * `always` is remembered even when the request is a duplicate or refused (a byte-identical
   * replay of a retry or of a refusal is then recognised too).
   */
  keys: { key: string; expiresAt: number; always?: boolean }[];
  /** Entries to queue (each in its lane). */
  entries: OutboxInsert[];
  now: number;
  /**
   * A rule checked against a shared state value (see {@link Store.updateState}) in the same
   * transaction: it refuses (nothing is written, keys included), or returns the value to write,
   * or undefined to leave it. Must be synchronous. It runs before the entries are written, so it
   * may complete their payloads (e.g. how many parts of a text fit a budget).
   */
  rule?: {
    key: string;
    conversationId: string;
    decide: (current: unknown) => { refuse: { errcode: number; errmsg: string } } | StateWrite | undefined;
  };
}

/** What {@link Store.acceptOutbound} did. */
export type OutboundAcceptResult =
  | { outcome: "queued"; ids: number[] }
  | { outcome: "duplicate" }
  | { outcome: "refused"; errcode: number; errmsg: string };

/** The store. Methods are async so that a networked engine can implement them. */
export interface Store {
  /** Engine name, for logs and /readyz. */
  readonly engine: string;
  /** Apply pending migrations. */
  migrate(): Promise<void>;
  /** True when the store answers. */
  ping(): Promise<boolean>;
  close(): Promise<void>;

  /**
   * Record items in one transaction: each key goes into the idempotency ledger once; a new key's
   * message and outbox entries are written with it; a known key changes nothing. When `cursor` is
   * given it is saved in the same transaction (KF pages). `now` (ms, default the wall clock)
   * stamps the rows and makes the new outbox entries due.
   */
  ingest(items: IngestItem[], cursor?: { tenant: string; openKfId: string; cursor: string }, now?: number): Promise<IngestResult[]>;

  /** The pull state of a KF account. */
  getKfCursor(tenant: string, openKfId: string): Promise<KfCursor | undefined>;
  /** Remember when a KF account was first seen (no-op when already known); returns the state. */
  touchKfAccount(tenant: string, openKfId: string, firstSeenAt: number): Promise<KfCursor>;
  /** KF accounts, newest first, paged by `id` like the other listings; `tenant`: only that corp's. */
  listKfCursors(page: Page & { tenant?: string }): Promise<KfCursorListItem[]>;
  /** Every known KF account of a tenant (catch-up and periodic pulls). */
  listKfAccounts(tenant: string): Promise<string[]>;

  /**
   * Claim due entries of these kinds: at most one per (kind, conversation), the oldest, and only
   * when no older entry of that conversation is pending or in flight. Claimed entries are in flight
   * until `leaseMs` passes (then another worker may claim them again).
   */
  claimOutbox(kinds: OutboxKind[], now: number, limit: number, leaseMs: number): Promise<OutboxEntry[]>;
  /**
   * Record the result of an attempt; `followUps` are inserted in the same transaction. Only an
   * entry still in flight changes; given the claimed entry (not just its id), only while it is
   * still that claim (its `attempts`): a worker that stalled past its lease, while another claim
   * took the entry, changes nothing.
   */
  finishOutbox(
    entry: number | OutboxClaim,
    outcome: OutboxOutcome,
    now: number,
    followUps?: { tenant: string; messageSeq: number | null; entries: OutboxInsert[] },
  ): Promise<void>;
  /** Put dead entries back to pending (all, or those ids); returns how many. */
  replayDead(ids: number[] | "all", now: number): Promise<number>;
  /** One outbox entry by id. */
  getOutbox(id: number): Promise<OutboxEntry | undefined>;
  /** Extend the lease of an entry still in flight (a long attempt; the claim, as for {@link finishOutbox}); false when it is not in flight. */
  renewLease(entry: number | OutboxClaim, until: number, now: number): Promise<boolean>;
  /**
   * Mark a delivered (`done`) entry `refused` after the fact (WeCom reported that it could not
   * deliver it, e.g. KF `msg_send_fail`); false when the entry is not `done`.
   */
  refuseDelivered(id: number, errcode: number, error: string, now: number): Promise<boolean>;
  /** Counts of outbox entries by state. */
  outboxCounts(): Promise<Record<OutboxState, number>>;
  /**
   * Entries in any of `states`, newest first, paged by `id`; `tenant`: only that corp's;
   * `conversationId`: only that conversation's entries that belong to no stored message (agents'
   * answers, notices to the 全媒体, session operations: what a transcript adds to the messages;
   * a message's own delivery and media entries are not listed then).
   */
  listOutbox(states: OutboxState[], page: Page & { tenant?: string; conversationId?: string }): Promise<OutboxEntry[]>;
  /**
   * The earliest time claimable work appears, ms: the next attempt among pending entries that
   * could be claimed (head of their conversation), or (a store shared by replicas) the end of a
   * lease on an entry in flight.
   */
  nextOutboxDue(kinds: OutboxKind[]): Promise<number | undefined>;
  /**
   * Be told when another process added work (a store shared by replicas: PostgreSQL's
   * LISTEN/NOTIFY); returns the function that stops it. Absent: nothing tells, the caller looks.
   */
  subscribe?(onWork: () => void): () => void;

  getMessage(seq: number): Promise<StoredMessage | undefined>;
  listMessages(filter: MessageFilter, page: Page): Promise<StoredMessage[]>;
  listConversations(page: Page & { tenant?: string; channel?: Channel }): Promise<ConversationSummary[]>;

  /** Session-archive pushes, newest first, paged by `id`; `tenant`: only that corp's. */
  listArchive(page: Page & { tenant?: string }): Promise<(ArchivePushRow & { id: number })[]>;

  getToken(tenant: string, key: string): Promise<TokenRow | undefined>;
  putToken(row: TokenRow): Promise<void>;
  deleteToken(tenant: string, key: string): Promise<void>;

  putMedia(row: MediaRow): Promise<void>;
  getMedia(tenant: string, id: string): Promise<MediaRow | undefined>;

  /**
   * Remove at most about `limit` rows of each kind that are past their cutoff, in one short
   * transaction. Pending, in-flight and dead outbox entries (and their messages and media) stay.
   * Call again while it removes anything. A call bounds its walk past rows that stay, so one that
   * removed nothing may still leave older rows for the next run, which resumes where it stopped.
   */
  pruneBatch(cutoffs: PruneCutoffs, limit: number): Promise<PruneResult>;
  /**
   * Erase a conversation (a data subject's request): its messages, outbox entries (whatever
   * their state) and media rows go; the ledger keys stay (they hold no content), so a retry of
   * one of its items is still recognised and not stored again.
   */
  eraseConversation(conversationId: string, tenant?: string): Promise<PruneResult>;
  /** Remove dead letters (all, or those last updated before `before` ms); returns how many. */
  purgeDead(before?: number): Promise<number>;

  /** Append to the audit log (the detail is cut to 1,000 characters). */
  appendAudit(row: Omit<AuditRow, "id">): Promise<void>;
  /** The audit log, newest first, paged by `id` like the other listings. */
  listAudit(page: Page): Promise<AuditRow[]>;

  /**
   * Queue outbound entries once per idempotency key, after a rule check (see
   * {@link OutboundAccept}). A key that is known and not expired answers `duplicate` and writes
   * nothing; an expired one is taken over.
   */
  acceptOutbound(input: OutboundAccept): Promise<OutboundAcceptResult>;

  /**
   * Shared state (KF session rules, bot streams, pacing, uploaded media ids): a JSON value by
   * (tenant, key), visible to every process. Undefined when missing or expired.
   */
  getState(tenant: string, key: string, now: number): Promise<unknown>;
  /**
   * Read-modify-write of a shared state value in one transaction: `update` gets the current value
   * (undefined when missing or expired) and returns the value to write, `null` to delete it, or
   * undefined to leave it. Must be synchronous, and may run twice (a shared transaction that
   * failed is retried alone). Returns the value now stored. `conversationId` ties the row to a
   * conversation (erased with it).
   */
  updateState(tenant: string, key: string, conversationId: string | null, now: number, update: (current: unknown) => StateWrite | null | undefined): Promise<unknown>;

  /**
   * A named value kept in the store (e.g. the generated media-link secret): the stored one, or
   * `create()` stored atomically when there is none (concurrent callers get the same value).
   */
  getOrCreateSetting(name: string, create: () => string): Promise<string>;
}
