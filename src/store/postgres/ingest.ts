/**
 * Ingest in PostgreSQL: a batch of inbound items in one transaction, in few round trips. The
 * ledger's primary key decides which items are new (a key another replica is inserting makes this
 * one wait for its commit, then read it as known); the new items' entries join their lanes, and
 * their messages and conversation summaries are written with multi-row statements. Rows are
 * locked in one order (sorted keys), so two batches never wait on each other in a cycle.
 * @module
 */
import type { UnifiedMessage } from "../../model.js";
import type { IngestItem, IngestResult } from "../types.js";
import { q, type Tx } from "./connection.js";
import { type ConversationAdd, insertEntries, type NewEntry } from "./outbox.js";
import { lockState, writeState } from "./state.js";

/** Record items (see {@link Store.ingest}) inside a transaction. */
export async function ingestTx(tx: Tx, items: IngestItem[], cursor: { tenant: string; openKfId: string; cursor: string } | undefined, now: number): Promise<IngestResult[]> {
  const keyOf = (i: IngestItem) => `${i.tenant}\u0000${i.channel}\u0000${i.key}`;
  // a key twice in one batch: the first is the item, the others are its repeats
  const first = new Map<string, number>();
  const unique: number[] = [];
  items.forEach((item, i) => {
    if (first.has(keyOf(item))) return;
    first.set(keyOf(item), i);
    unique.push(i);
  });
  // the keys are written in one order whatever the batch (two batches never wait on each other in
  // a cycle); the new messages' seqs are drawn in the batch's order (a KF page keeps its order)
  const order = [...unique].sort((a, b) => {
    const ka = keyOf(items[a] as IngestItem);
    const kb = keyOf(items[b] as IngestItem);
    return ka < kb ? -1 : ka > kb ? 1 : 0;
  });
  const col = <T>(f: (item: IngestItem) => T) => unique.map((i) => f(items[i] as IngestItem));
  const rank = new Map(order.map((i, n) => [i, n]));
  const inserted = await q(
    tx.c,
    `WITH s AS MATERIALIZED (
       SELECT t, ch, k, r, w, CASE WHEN m THEN nextval('messages_seq') END AS seq
       FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::text[], $6::int[]) WITH ORDINALITY AS u(t, ch, k, m, r, w, o) ORDER BY o)
     INSERT INTO ledger (tenant, channel, key, message_seq, skip_reason, first_seen)
     SELECT t, ch, k, seq, r, $7 FROM s ORDER BY w
     ON CONFLICT DO NOTHING RETURNING tenant, channel, key, message_seq`,
    [
      col((it) => it.tenant),
      col((it) => it.channel),
      col((it) => it.key),
      col((it) => it.message !== undefined),
      col((it) => it.skipReason ?? null),
      unique.map((i) => rank.get(i)),
      now,
    ],
  );
  const seqByKey = new Map(inserted.map((r) => [`${r.tenant}\u0000${r.channel}\u0000${r.key}`, (r.message_seq as number | null) ?? undefined]));
  const seqOf = new Map<number, number>();
  for (const i of unique) {
    const seq = seqByKey.get(keyOf(items[i] as IngestItem));
    if (seq !== undefined) seqOf.set(i, seq);
  }
  const withMessage = unique.filter((i) => seqOf.has(i));
  const isNew = new Set(inserted.map((r) => `${r.tenant}\u0000${r.channel}\u0000${r.key}`));
  const known = unique.filter((i) => !isNew.has(keyOf(items[i] as IngestItem)));
  const knownSeq = new Map<string, number | null>();
  if (known.length > 0) {
    const rows = await q(
      tx.c,
      `SELECT l.tenant, l.channel, l.key, l.message_seq FROM ledger l JOIN unnest($1::text[], $2::text[], $3::text[]) AS u(t, ch, k)
       ON l.tenant = u.t AND l.channel = u.ch AND l.key = u.k`,
      [known.map((i) => items[i]?.tenant), known.map((i) => items[i]?.channel), known.map((i) => items[i]?.key)],
    );
    for (const r of rows) knownSeq.set(`${r.tenant}\u0000${r.channel}\u0000${r.key}`, (r.message_seq as number | null) ?? null);
  }
  // the new items' entries (their own, then those their effects decide), in batch order
  const entries: NewEntry[] = [];
  for (const i of unique) {
    const item = items[i] as IngestItem;
    if (!isNew.has(keyOf(item))) continue;
    const seq = seqOf.get(i) ?? null;
    for (const e of item.outbox ?? []) {
      entries.push({ tenant: item.tenant, messageSeq: seq, entry: e });
    }
    if (item.effect !== undefined) {
      const fx = item.effect;
      const current = await lockState(tx, item.tenant, fx.key, now);
      const done = fx.apply(current.value);
      if (done.state !== undefined) await writeState(tx, item.tenant, fx.key, fx.conversationId, done.state, now);
      else if (current.placeholder) await q(tx.c, "DELETE FROM shared_state WHERE tenant = $1 AND key = $2", [item.tenant, fx.key]);
      for (const e of done.entries ?? []) {
        entries.push({ tenant: item.tenant, messageSeq: null, entry: e });
      }
    }
  }
  const newMessages = withMessage;
  let summaries: ConversationAdd[] = [];
  if (newMessages.length > 0) {
    const ms = newMessages.map((i) => ({ item: items[i] as IngestItem, m: items[i]?.message as UnifiedMessage, seq: seqOf.get(i) as number }));
    await q(
      tx.c,
      `INSERT INTO messages (tenant, seq, channel, key, conversation_id, time, received_at, content_type, body)
       SELECT t, s, ch, k, c, tm, $8, ct, b FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], $9::text[]) AS u(t, s, ch, k, c, tm, ct, b)`,
      [
        ms.map((x) => x.item.tenant),
        ms.map((x) => x.seq),
        ms.map((x) => x.item.channel),
        ms.map((x) => x.item.key),
        ms.map((x) => x.m.conversationId),
        ms.map((x) => x.m.time),
        ms.map((x) => x.m.content.type),
        now,
        ms.map((x) => JSON.stringify(x.m)),
      ],
    );
    // conversation summaries: one row per conversation, in one order
    const conv = new Map<string, { tenant: string; id: string; channel: string; n: number; time: number; seq: number }>();
    for (const x of ms) {
      const k = `${x.item.tenant}\u0000${x.m.conversationId}\u0000${x.item.channel}`;
      const c = conv.get(k);
      if (c === undefined) conv.set(k, { tenant: x.item.tenant, id: x.m.conversationId, channel: x.item.channel, n: 1, time: x.m.time, seq: x.seq });
      else {
        c.n++;
        c.time = Math.max(c.time, x.m.time);
        c.seq = Math.max(c.seq, x.seq);
      }
    }
    summaries = [...conv.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([, c]) => ({ tenant: c.tenant, conversationId: c.id, channel: c.channel, messages: c.n, lastTime: c.time, lastSeq: c.seq }));
  }
  // last, in one statement: the entries join their lanes and the summaries take the messages (the
  // rows every batch of a conversation locks, held only to the commit)
  await insertEntries(tx, entries, now, summaries);
  for (const i of unique) {
    const a = items[i]?.archive;
    if (a === undefined || !isNew.has(keyOf(items[i] as IngestItem))) continue;
    await q(
      tx.c,
      "INSERT INTO archive_pushes (tenant, message_id, push_type, msgid, seq, received_at, body) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
      [a.tenant, a.messageId, a.pushType, a.msgid ?? null, a.seq ?? null, a.receivedAt, JSON.stringify(a.body)],
    );
  }
  if (cursor !== undefined) {
    await q(
      tx.c,
      `INSERT INTO kf_cursors (tenant, open_kfid, cursor, first_seen_at, updated_at) VALUES ($1, $2, $3, $4, $4)
       ON CONFLICT (tenant, open_kfid) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at`,
      [cursor.tenant, cursor.openKfId, cursor.cursor, now],
    );
  }
  return items.map((item, i) => {
    const k = keyOf(item);
    const f = first.get(k) as number;
    if (f === i && isNew.has(k)) {
      const r: IngestResult = { stored: true };
      const seq = seqOf.get(i);
      if (seq !== undefined) r.seq = seq;
      return r;
    }
    const r: IngestResult = { stored: false };
    const seq = isNew.has(k) ? seqOf.get(f) : knownSeq.get(k);
    if (typeof seq === "number") r.seq = seq;
    return r;
  });
}
