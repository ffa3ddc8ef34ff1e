/**
 * Retention in PostgreSQL: one short transaction removes at most about `limit` rows of each kind
 * past its cutoff, oldest first (see {@link Store.pruneBatch}).
 * @module
 */
import { CHANNELS } from "../../model.js";
import type { PruneCutoffs, PruneResult } from "../types.js";
import { count, q, type Tx } from "./connection.js";
import { mediaFromRow } from "../rows.js";

/** One retention batch, inside a transaction. */
export async function pruneTx(tx: Tx, c: PruneCutoffs, limit: number): Promise<PruneResult> {
  const out: PruneResult = { messages: 0, outbox: 0, ledger: 0, archive: 0, state: 0, audit: 0, media: [] };

  for (const channel of CHANNELS) {
    // messages received before the cutoff whose entries are all over (delivered or refused)
    const gone = await q(
      tx.c,
      `DELETE FROM messages WHERE (tenant, seq) IN (
         SELECT m.tenant, m.seq FROM messages m WHERE m.channel = $1 AND m.received_at < $2
           AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.tenant = m.tenant AND o.message_seq = m.seq AND o.state NOT IN ('done', 'refused'))
         ORDER BY m.received_at LIMIT $3)
       RETURNING tenant, seq, key, conversation_id`,
      [channel, c.messagesBefore[channel], limit],
    );
    if (gone.length === 0) continue;
    out.messages += gone.length;
    const seqs = gone.map((m) => m.seq as number);
    for (const e of await q(
      tx.c,
      "DELETE FROM outbox o USING unnest($1::text[], $2::bigint[]) AS u(t, s) WHERE o.tenant = u.t AND o.message_seq = u.s RETURNING o.tenant, o.state",
      [gone.map((m) => m.tenant), seqs],
    )) {
      count(tx, e.tenant as string, e.state as string, -1);
      out.outbox++;
    }
    // their keys stay (unlinked) until the ledger's own cutoff
    await q(
      tx.c,
      `UPDATE ledger l SET message_seq = NULL FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(t, k, s)
       WHERE l.tenant = u.t AND l.channel = $4 AND l.key = u.k AND l.message_seq = u.s`,
      [gone.map((m) => m.tenant), gone.map((m) => m.key), seqs, channel],
    );
    await recountConversations(tx, gone.map((m) => ({ tenant: m.tenant as string, conversationId: m.conversation_id as string, channel })));
  }

  for (const channel of CHANNELS) {
    if (out.ledger >= limit) break;
    const rows = await q(
      tx.c,
      `DELETE FROM ledger WHERE (tenant, channel, key) IN (
         SELECT tenant, channel, key FROM ledger WHERE channel = $1 AND first_seen < $2 ORDER BY first_seen LIMIT $3)
       RETURNING key`,
      [channel, c.ledgerBefore[channel], limit - out.ledger],
    );
    out.ledger += rows.length;
  }

  // finished entries without a message (outbound answers, notices)
  for (const e of await q(
    tx.c,
    `DELETE FROM outbox WHERE (tenant, id) IN (
       SELECT tenant, id FROM outbox WHERE state IN ('done', 'refused') AND message_seq IS NULL AND updated_at < $1 ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED)
       AND state IN ('done', 'refused')
     RETURNING tenant, state`,
    [c.outboxBefore, limit],
  )) {
    count(tx, e.tenant as string, e.state as string, -1);
    out.outbox++;
  }

  // expired shared state and outbound idempotency keys; lanes left empty
  out.state += (
    await q(
      tx.c,
      // the condition again outside (and rows being written skipped): a value renewed while this
      // waited for its lock stays
      `DELETE FROM shared_state WHERE (tenant, key) IN (
         SELECT tenant, key FROM shared_state WHERE expires_at IS NOT NULL AND expires_at < $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)
       AND expires_at < $1 RETURNING key`,
      [c.stateBefore, limit],
    )
  ).length;
  out.state += (
    await q(
      tx.c,
      "DELETE FROM outbound_keys WHERE (tenant, key) IN (SELECT tenant, key FROM outbound_keys WHERE expires_at < $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED) AND expires_at < $1 RETURNING key",
      [c.stateBefore, limit],
    )
  ).length;
  await q(tx.c, "DELETE FROM outbox_lanes WHERE (tenant, kind, conversation_id) IN (SELECT tenant, kind, conversation_id FROM outbox_lanes WHERE live <= 0 LIMIT $1 FOR UPDATE SKIP LOCKED) AND live <= 0", [
    limit,
  ]);

  // audit log rows, oldest first
  out.audit += (
    await q(
      tx.c,
      "DELETE FROM audit_log WHERE (tenant, id) IN (SELECT tenant, id FROM audit_log WHERE time < $1 ORDER BY time LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id",
      [c.auditBefore, limit],
    )
  ).length;

  // session-archive pushes, oldest first, up to the first one received after the cutoff
  const pushes = await q(tx.c, "SELECT tenant, id, received_at FROM archive_pushes ORDER BY id LIMIT $1", [limit]);
  const old = [];
  for (const p of pushes) {
    if ((p.received_at as number) >= c.archiveBefore) break;
    old.push(p);
  }
  if (old.length > 0) {
    out.archive += (
      await q(tx.c, "DELETE FROM archive_pushes a USING unnest($1::text[], $2::bigint[]) AS u(t, i) WHERE a.tenant = u.t AND a.id = u.i RETURNING a.id", [
        old.map((p) => p.tenant),
        old.map((p) => p.id),
      ])
    ).length;
  }

  // media whose links have expired: created before the cutoff, and no entry of their message
  // still live, or delivered (links signed) after it
  for (const r of await q(
    tx.c,
    `DELETE FROM media WHERE (tenant, id) IN (
       SELECT md.tenant, md.id FROM media md WHERE md.created_at < $1
         AND (md.message_seq IS NULL OR NOT EXISTS (
           SELECT 1 FROM outbox o WHERE o.tenant = md.tenant AND o.message_seq = md.message_seq AND (o.state <> 'done' OR (o.kind = 'omni' AND o.updated_at >= $1))))
       ORDER BY md.created_at, md.tenant, md.id LIMIT $2)
     RETURNING tenant, id, message_seq, content_type, file_name, size, created_at`,
    [c.mediaBefore, limit],
  )) {
    out.media.push(mediaFromRow(r));
  }
  return out;
}

/** Recount the summaries of conversations that lost messages (a summary without messages goes). */
export async function recountConversations(tx: Tx, list: { tenant: string; conversationId: string; channel: string }[]): Promise<void> {
  const uniq = [...new Map(list.map((l) => [`${l.tenant}\u0000${l.conversationId}\u0000${l.channel}`, l])).entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([, l]) => l);
  if (uniq.length === 0) return;
  const args = [uniq.map((l) => l.tenant), uniq.map((l) => l.conversationId), uniq.map((l) => l.channel)];
  await q(
    tx.c,
    `UPDATE conversations cv SET messages = s.n, last_time = s.t, last_seq = s.s FROM (
       SELECT u.t AS tenant, u.c AS conversation_id, u.ch AS channel, count(m.seq) AS n, max(m.time) AS t, max(m.seq) AS s
       FROM unnest($1::text[], $2::text[], $3::text[]) AS u(t, c, ch)
       LEFT JOIN messages m ON m.tenant = u.t AND m.conversation_id = u.c AND m.channel = u.ch
       GROUP BY u.t, u.c, u.ch) AS s
     WHERE cv.tenant = s.tenant AND cv.conversation_id = s.conversation_id AND cv.channel = s.channel AND s.n > 0`,
    args,
  );
  await q(
    tx.c,
    `DELETE FROM conversations cv USING unnest($1::text[], $2::text[], $3::text[]) AS u(t, c, ch)
     WHERE cv.tenant = u.t AND cv.conversation_id = u.c AND cv.channel = u.ch
       AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.tenant = u.t AND m.conversation_id = u.c AND m.channel = u.ch)`,
    args,
  );
}
