/**
 * The PostgreSQL outbox: lanes, claims and finishes, shared by every replica.
 *
 * Entries of one (tenant, kind, conversation) form a lane, processed one at a time in `lane_pos`
 * order. `outbox_lanes` holds each lane's number of live (pending or in-flight) entries; adding
 * to a lane or leaving it locks that row, so two replicas never both make an entry the head.
 * Exactly one live entry of a lane is `ready` (or in flight); claims read only ready entries, with
 * `FOR UPDATE SKIP LOCKED`, one tenant at a time (single-shard under Citus).
 * @module
 */
import type { OutboxEntry, OutboxInsert, OutboxKind, OutboxOutcome } from "../types.js";
import { count, countSlot, q, type Tx } from "./connection.js";
import { outboxFromRow } from "../rows.js";

/** An entry to insert, with its tenant and message. */
export interface NewEntry {
  tenant: string;
  messageSeq: number | null;
  entry: OutboxInsert;
}


/** `n` new values of a sequence, in order. */
async function nextIds(tx: Tx, sequence: "outbox_id_seq" | "messages_seq", n: number): Promise<number[]> {
  if (n <= 0) return [];
  const [r] = await q(tx.c, `SELECT array(SELECT nextval('${sequence}') FROM generate_series(1, $1)) AS ids`, [n]);
  return ((r?.ids as (string | number)[]) ?? []).map(Number);
}

const laneKey = (tenant: string, kind: string, conversationId: string) => `${tenant}\u0000${kind}\u0000${conversationId}`;

type LaneAdd = { tenant: string; kind: string; conversationId: string; added: number };

/** Messages added to a conversation summary (sorted by the caller: rows are locked in that order). */
export interface ConversationAdd {
  tenant: string;
  conversationId: string;
  channel: string;
  messages: number;
  lastTime: number;
  lastSeq: number;
}

/**
 * Add `added` live entries to each lane (sorted, so that concurrent writers lock lane rows in one
 * order); returns each lane's live count before.
 */
async function joinLanes(tx: Tx, lanes: Map<string, LaneAdd>): Promise<Map<string, number>> {
  const before = new Map<string, number>();
  if (lanes.size === 0) return before;
  const list = sortedLanes(lanes);
  const rows = await q(
    tx.c,
    `INSERT INTO outbox_lanes (tenant, kind, conversation_id, live)
     SELECT t, k, c, n FROM unnest($1::text[], $2::text[], $3::text[], $4::int[]) WITH ORDINALITY AS u(t, k, c, n, o) ORDER BY o
     ON CONFLICT (tenant, kind, conversation_id) DO UPDATE SET live = outbox_lanes.live + excluded.live
     RETURNING tenant, kind, conversation_id, live`,
    [list.map((l) => l.tenant), list.map((l) => l.kind), list.map((l) => l.conversationId), list.map((l) => l.added)],
  );
  for (const r of rows) {
    const k = laneKey(r.tenant as string, r.kind as string, r.conversation_id as string);
    before.set(k, (r.live as number) - (lanes.get(k)?.added ?? 0));
  }
  return before;
}

function sortedLanes(lanes: Map<string, LaneAdd>): LaneAdd[] {
  return [...lanes.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, l]) => l);
}

/**
 * Insert entries (pending, in their lanes, in the order given) in one statement: each lane's row
 * is joined (locked, its live count raised) and an entry is its lane's head when it is the first
 * of the list in a lane that had none live; the pending counts are raised with them. `ids`: ids
 * allocated beforehand (as many as entries, ascending), else allocated here. Returns the ids.
 */
export async function insertEntries(tx: Tx, list: NewEntry[], now: number, conversations: ConversationAdd[] = []): Promise<number[]> {
  if (list.length === 0 && conversations.length === 0) return [];
  const lanes = new Map<string, LaneAdd>();
  const firstInLane = list.map(({ tenant, entry }) => {
    if (entry.conversationId === null) return true;
    const k = laneKey(tenant, entry.kind, entry.conversationId);
    const l = lanes.get(k);
    if (l !== undefined) {
      l.added++;
      return false;
    }
    lanes.set(k, { tenant, kind: entry.kind, conversationId: entry.conversationId, added: 1 });
    return true;
  });
  const lane = sortedLanes(lanes);
  const pending = new Map<string, number>();
  for (const l of list) pending.set(l.tenant, (pending.get(l.tenant) ?? 0) + 1);
  const tenants = [...pending.keys()].sort();
  // ids are drawn in the list's order (volatile expressions are evaluated after the ORDER BY)
  const rows = await q(
    tx.c,
    `WITH lanes AS (
       INSERT INTO outbox_lanes (tenant, kind, conversation_id, live)
       SELECT t, k, c, n FROM unnest($1::text[], $2::text[], $3::text[], $4::int[]) WITH ORDINALITY AS u(t, k, c, n, o) ORDER BY o
       ON CONFLICT (tenant, kind, conversation_id) DO UPDATE SET live = outbox_lanes.live + excluded.live
       RETURNING tenant, kind, conversation_id, live),
     prev AS (
       SELECT l.tenant, l.kind, l.conversation_id, l.live - u.n AS before
       FROM lanes l JOIN unnest($1::text[], $2::text[], $3::text[], $4::int[]) AS u(t, k, c, n) ON l.tenant = u.t AND l.kind = u.k AND l.conversation_id = u.c),
     entries AS (
       INSERT INTO outbox (tenant, id, kind, conversation_id, message_seq, payload, state, ready, lane_pos, attempts, next_attempt_at, created_at, updated_at)
       SELECT e.t, e.i, e.k, e.c, e.m, e.p, 'pending', coalesce(e.c IS NULL OR (e.f AND p.before = 0), false), e.i, 0, e.n, $13, $13
       FROM (SELECT u.*, nextval('outbox_id_seq') AS i FROM unnest($5::text[], $6::int[], $7::text[], $8::text[], $9::bigint[], $10::text[], $11::bool[], $12::bigint[])
               AS u(t, o, k, c, m, p, f, n) ORDER BY o) AS e
       LEFT JOIN prev p ON p.tenant = e.t AND p.kind = e.k AND p.conversation_id = e.c
       RETURNING id)
     , counted AS (
       INSERT INTO outbox_counts (tenant, state, slot, n)
       SELECT t, 'pending', $16, d FROM unnest($14::text[], $15::bigint[]) AS u(t, d) ORDER BY t
       ON CONFLICT (tenant, state, slot) DO UPDATE SET n = outbox_counts.n + excluded.n)
     , summaries AS (
       INSERT INTO conversations (tenant, conversation_id, channel, messages, last_time, last_seq)
       SELECT t, c, ch, n, tm, s FROM unnest($17::text[], $18::text[], $19::text[], $20::bigint[], $21::bigint[], $22::bigint[]) WITH ORDINALITY AS u(t, c, ch, n, tm, s, o) ORDER BY o
       ON CONFLICT (tenant, conversation_id, channel) DO UPDATE SET messages = conversations.messages + excluded.messages,
         last_time = greatest(conversations.last_time, excluded.last_time), last_seq = greatest(conversations.last_seq, excluded.last_seq))
     SELECT id FROM entries ORDER BY id`,
    [
      lane.map((l) => l.tenant),
      lane.map((l) => l.kind),
      lane.map((l) => l.conversationId),
      lane.map((l) => l.added),
      list.map((l) => l.tenant),
      list.map((_, n) => n),
      list.map((l) => l.entry.kind),
      list.map((l) => l.entry.conversationId),
      list.map((l) => l.messageSeq),
      list.map((l) => JSON.stringify(l.entry.payload ?? null)),
      firstInLane,
      list.map((l) => l.entry.notBefore ?? now),
      now,
      tenants,
      tenants.map((t) => pending.get(t)),
      countSlot(),
      conversations.map((c) => c.tenant),
      conversations.map((c) => c.conversationId),
      conversations.map((c) => c.channel),
      conversations.map((c) => c.messages),
      conversations.map((c) => c.lastTime),
      conversations.map((c) => c.lastSeq),
    ],
  );
  return rows.map((r) => r.id as number);
}

/** Put entries that expired their lease back to pending (still the heads of their lanes). */
export async function releaseExpired(tx: Tx, tenant: string, now: number): Promise<number> {
  const rows = await q(
    tx.c,
    "UPDATE outbox SET state = 'pending', lease_until = NULL, lease_owner = NULL WHERE tenant = $1 AND state = 'inflight' AND lease_until < $2 RETURNING id",
    [tenant, now],
  );
  count(tx, tenant, "inflight", -rows.length);
  count(tx, tenant, "pending", rows.length);
  return rows.length;
}

/** Claim due ready entries of one tenant, oldest due first, skipping rows another replica is claiming. */
export async function claimTenant(tx: Tx, tenant: string, kinds: OutboxKind[], now: number, limit: number, leaseUntil: number, owner: string): Promise<OutboxEntry[]> {
  const rows = await q(
    tx.c,
    `WITH c AS (
       SELECT tenant, id FROM outbox WHERE tenant = $1 AND state = 'pending' AND ready AND next_attempt_at <= $2 AND kind = ANY($3::text[])
       ORDER BY next_attempt_at, id LIMIT $4 FOR UPDATE SKIP LOCKED)
     UPDATE outbox o SET state = 'inflight', lease_until = $5, lease_owner = $6, attempts = o.attempts + 1, updated_at = $2
     FROM c WHERE o.tenant = c.tenant AND o.id = c.id
     RETURNING o.tenant, o.id, o.kind, o.conversation_id, o.message_seq, o.payload, o.state, o.attempts, o.next_attempt_at, o.last_error, o.errcode, o.created_at, o.updated_at`,
    [tenant, now, kinds, limit, leaseUntil, owner],
  );
  count(tx, tenant, "pending", -rows.length);
  count(tx, tenant, "inflight", rows.length);
  return rows.map(outboxFromRow).sort((a, b) => a.nextAttemptAt - b.nextAttemptAt || a.id - b.id);
}

/**
 * Record an attempt's result on an entry still in flight (and, when `attempts` is given, still
 * the claim that made that attempt: a finish after the lease ran out and another claim took the
 * entry changes nothing). An entry that leaves its lane makes the next one the head. Returns the
 * entry's tenant when it changed, undefined otherwise.
 */
export async function finishEntry(tx: Tx, id: number, outcome: OutboxOutcome, now: number, attempts: number | undefined): Promise<string | undefined> {
  if (outcome.state === "pending") {
    const rows = await q(
      tx.c,
      `UPDATE outbox SET state = 'pending', lease_until = NULL, lease_owner = NULL, next_attempt_at = $2, last_error = $3, updated_at = $4,
         attempts = attempts - $5 WHERE id = $1 AND state = 'inflight' AND ($6::int IS NULL OR attempts = $6) RETURNING tenant`,
      [id, outcome.nextAttemptAt, outcome.error, now, outcome.countAttempt === false ? 1 : 0, attempts ?? null],
    );
    const tenant = rows[0]?.tenant as string | undefined;
    if (tenant !== undefined) {
      count(tx, tenant, "inflight", -1);
      count(tx, tenant, "pending", 1);
    }
    return tenant;
  }
  const error = outcome.state === "done" ? null : outcome.error;
  const errcode = outcome.state === "refused" ? outcome.errcode : null;
  // leaving the lane locks its row (waiting for anyone adding to it); the next head is then
  // found by a statement of its own, whose snapshot sees every entry added before the lock
  const rows = await q(
    tx.c,
    `WITH f AS (
       UPDATE outbox SET state = $2, ready = false, lease_until = NULL, lease_owner = NULL, last_error = $3::text, errcode = coalesce($4::int, errcode), updated_at = $5
       WHERE id = $1 AND state = 'inflight' AND ($6::int IS NULL OR attempts = $6)
       RETURNING tenant, kind, conversation_id),
     l AS (
       UPDATE outbox_lanes ol SET live = ol.live - 1 FROM f
       WHERE ol.tenant = f.tenant AND ol.kind = f.kind AND ol.conversation_id = f.conversation_id
       RETURNING ol.live)
     SELECT f.tenant, f.kind, f.conversation_id, (SELECT live FROM l) AS live FROM f`,
    [id, outcome.state, error, errcode, now, attempts ?? null],
  );
  const left = rows[0];
  if (left !== undefined && typeof left.live === "number" && left.live > 0) {
    await q(
      tx.c,
      `UPDATE outbox SET ready = true WHERE (tenant, id) = (
         SELECT tenant, id FROM outbox WHERE tenant = $1 AND kind = $2 AND conversation_id = $3 AND state = 'pending' ORDER BY lane_pos LIMIT 1)`,
      [left.tenant, left.kind, left.conversation_id],
    );
  }
  const tenant = rows[0]?.tenant as string | undefined;
  if (tenant !== undefined) {
    count(tx, tenant, "inflight", -1);
    count(tx, tenant, outcome.state, 1);
  }
  return tenant;
}

/**
 * Put dead entries back to pending, each at the end of its lane (they were out of order already
 * when they died); returns how many.
 */
export async function reviveDead(tx: Tx, ids: number[] | "all", now: number, limit: number): Promise<number> {
  const rows =
    ids === "all"
      ? await q(
          tx.c,
          `UPDATE outbox SET state = 'pending', ready = false, attempts = 0, next_attempt_at = $1, updated_at = $1, lease_until = NULL, lease_owner = NULL
           WHERE (tenant, id) IN (SELECT tenant, id FROM outbox WHERE state = 'dead' ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) AND state = 'dead'
           RETURNING tenant, id, kind, conversation_id`,
          [now, limit],
        )
      : await q(
          tx.c,
          `UPDATE outbox SET state = 'pending', ready = false, attempts = 0, next_attempt_at = $1, updated_at = $1, lease_until = NULL, lease_owner = NULL
           WHERE id = ANY($2::bigint[]) AND state = 'dead' RETURNING tenant, id, kind, conversation_id`,
          [now, ids],
        );
  if (rows.length === 0) return 0;
  rows.sort((a, b) => (a.id as number) - (b.id as number));
  const lanes = new Map<string, LaneAdd>();
  for (const r of rows) {
    count(tx, r.tenant as string, "dead", -1);
    count(tx, r.tenant as string, "pending", 1);
    if (r.conversation_id === null) continue;
    const k = laneKey(r.tenant as string, r.kind as string, r.conversation_id as string);
    const l = lanes.get(k);
    if (l === undefined) lanes.set(k, { tenant: r.tenant as string, kind: r.kind as string, conversationId: r.conversation_id as string, added: 1 });
    else l.added++;
  }
  const before = await joinLanes(tx, lanes);
  const positions = await nextIds(tx, "outbox_id_seq", rows.length);
  const seen = new Set<string>();
  const ready = rows.map((r) => {
    if (r.conversation_id === null) return true;
    const k = laneKey(r.tenant as string, r.kind as string, r.conversation_id as string);
    if (seen.has(k)) return false;
    seen.add(k);
    return before.get(k) === 0;
  });
  await q(
    tx.c,
    "UPDATE outbox o SET lane_pos = u.p, ready = u.r FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bool[]) AS u(t, i, p, r) WHERE o.tenant = u.t AND o.id = u.i",
    [rows.map((r) => r.tenant), rows.map((r) => r.id), positions, ready],
  );
  return rows.length;
}

/**
 * Recount lanes after entries were removed from them (erasure), and make the first pending entry
 * the head of a lane that lost its head.
 */
export async function repairLanes(tx: Tx, lanes: { tenant: string; kind: string; conversationId: string }[]): Promise<void> {
  if (lanes.length === 0) return;
  const uniq = [...new Map(lanes.map((l) => [laneKey(l.tenant, l.kind, l.conversationId), l])).entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([, l]) => l);
  const args = [uniq.map((l) => l.tenant), uniq.map((l) => l.kind), uniq.map((l) => l.conversationId)];
  // lock the lanes first: the recount below then sees every entry added before the lock
  await q(
    tx.c,
    `SELECT 1 FROM outbox_lanes ol JOIN unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS u(t, k, c, o)
     ON ol.tenant = u.t AND ol.kind = u.k AND ol.conversation_id = u.c ORDER BY u.o FOR UPDATE OF ol`,
    args,
  );
  await q(
    tx.c,
    `UPDATE outbox_lanes ol SET live = (SELECT count(*) FROM outbox o WHERE o.tenant = ol.tenant AND o.kind = ol.kind AND o.conversation_id = ol.conversation_id AND o.state IN ('pending', 'inflight'))
     FROM unnest($1::text[], $2::text[], $3::text[]) AS u(t, k, c) WHERE ol.tenant = u.t AND ol.kind = u.k AND ol.conversation_id = u.c`,
    args,
  );
  await q(
    tx.c,
    `UPDATE outbox o SET ready = true FROM (
       SELECT (SELECT p.id FROM outbox p WHERE p.tenant = u.t AND p.kind = u.k AND p.conversation_id = u.c AND p.state = 'pending' ORDER BY p.lane_pos LIMIT 1) AS id, u.t
       FROM unnest($1::text[], $2::text[], $3::text[]) AS u(t, k, c)
       WHERE NOT EXISTS (SELECT 1 FROM outbox h WHERE h.tenant = u.t AND h.kind = u.k AND h.conversation_id = u.c AND (h.state = 'inflight' OR (h.state = 'pending' AND h.ready)))
     ) AS head WHERE o.tenant = head.t AND o.id = head.id`,
    args,
  );
}
