/**
 * Shared state in PostgreSQL (KF session rules, bot streams, pacing, uploaded media ids): a JSON
 * value by (tenant, key), read-modify-written under the row's lock, so replicas take turns.
 * @module
 */
import type pg from "pg";
import type { StateWrite } from "../types.js";
import { q, type Tx } from "./connection.js";

/** A value read under its row lock; `placeholder`: the row was made to hold the lock (no value). */
export interface LockedState {
  value: unknown;
  placeholder: boolean;
}

const live = (value: string, expiresAt: number | null, now: number): unknown => (expiresAt !== null && expiresAt < now ? undefined : JSON.parse(value));

/** A value, undefined when missing or expired (no lock). */
export async function readState(c: pg.Pool | pg.ClientBase, tenant: string, key: string, now: number): Promise<unknown> {
  const [r] = await q(c, "SELECT value, expires_at FROM shared_state WHERE tenant = $1 AND key = $2", [tenant, key]);
  return r === undefined ? undefined : live(r.value as string, r.expires_at as number | null, now);
}

/**
 * Lock a value's row for the rest of the transaction and read it. A missing row is made, expired
 * (so every reader still sees it missing), to hold the lock: two replicas creating one value
 * take turns instead of both creating it. The caller writes or removes a placeholder.
 */
export async function lockState(tx: Tx, tenant: string, key: string, now: number): Promise<LockedState> {
  const [r] = await q(
    tx.c,
    `INSERT INTO shared_state (tenant, key, conversation_id, value, expires_at, updated_at) VALUES ($1, $2, NULL, 'null', 0, $3)
     ON CONFLICT (tenant, key) DO UPDATE SET tenant = excluded.tenant
     RETURNING value, expires_at, (xmax = 0) AS inserted`,
    [tenant, key, now],
  );
  if (r === undefined || r.inserted === true) return { value: undefined, placeholder: true };
  return { value: live(r.value as string, r.expires_at as number | null, now), placeholder: false };
}

/** Write a value (its row is locked by {@link lockState} or new). */
export async function writeState(tx: Tx, tenant: string, key: string, conversationId: string | null, w: StateWrite, now: number): Promise<void> {
  await q(
    tx.c,
    `INSERT INTO shared_state (tenant, key, conversation_id, value, expires_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (tenant, key) DO UPDATE SET conversation_id = excluded.conversation_id, value = excluded.value, expires_at = excluded.expires_at, updated_at = excluded.updated_at`,
    [tenant, key, conversationId, JSON.stringify(w.value ?? null), w.expiresAt, now],
  );
}
