/**
 * Stored rows as the store's types, for both engines (the same column names; integers read as
 * numbers).
 * @module
 */
import type { Channel, UnifiedMessage } from "../model.js";
import type { ArchivePushRow, AuditRow, ConversationSummary, KfCursorListItem, MediaRow, OutboxEntry, OutboxKind, OutboxState, StoredMessage } from "./types.js";

/** A row as an engine returns it. */
export type Row = Record<string, unknown>;

/** A messages row as a {@link StoredMessage}. */
export function messageFromRow(r: Row): StoredMessage {
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

/** A kf_cursors row as a {@link KfCursorListItem}. */
export function cursorFromRow(r: Row): KfCursorListItem {
  const c: KfCursorListItem = {
    id: r.id as number,
    tenant: r.tenant as string,
    openKfId: r.open_kfid as string,
    firstSeenAt: r.first_seen_at as number,
    updatedAt: r.updated_at as number,
  };
  if (typeof r.cursor === "string") c.cursor = r.cursor;
  return c;
}

/** A media row as {@link MediaRow}. */
export function mediaFromRow(r: Row): MediaRow {
  return {
    tenant: r.tenant as string,
    id: r.id as string,
    messageSeq: (r.message_seq as number | null) ?? null,
    contentType: r.content_type as string,
    fileName: r.file_name as string,
    size: r.size as number,
    createdAt: r.created_at as number,
  };
}

/** A stored row as an {@link OutboxEntry}. */
export function outboxFromRow(r: Row): OutboxEntry {
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
    errcode: (r.errcode as number | null | undefined) ?? null,
    createdAt: r.created_at as number,
    updatedAt: r.updated_at as number,
  };
}

/** An audit_log row as an {@link AuditRow} (the whole installation's tenant, `''`, is null; `from` is the column `origin`). */
export function auditFromRow(r: Row): AuditRow {
  return {
    id: r.id as number,
    time: r.time as number,
    tenant: r.tenant === "" || r.tenant === null ? null : (r.tenant as string),
    actor: r.actor as string,
    from: r.origin as string,
    action: r.action as string,
    detail: r.detail as string,
  };
}

/** An archive_pushes row as an {@link ArchivePushRow} with its id. */
export function archiveFromRow(r: Row): ArchivePushRow & { id: number } {
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
}

/** A conversations row as a {@link ConversationSummary}. */
export function conversationFromRow(r: Row): ConversationSummary {
  return {
    tenant: r.tenant as string,
    conversationId: r.conversation_id as string,
    channel: r.channel as Channel,
    messages: r.messages as number,
    lastTime: r.last_time as number,
    lastSeq: r.last_seq as number,
  };
}
