/**
 * Leases: at most one process at a time does a piece of work (pulls a KF account, runs
 * retention, refreshes an access token), whatever the number of replicas. A lease is a shared
 * state value `{holder, until}` under `lease:{name}`, taken and renewed by read-modify-write in
 * the store (a row lock in PostgreSQL, the one writer in SQLite). A holder that dies loses its
 * lease when `until` passes; one that stops releases it at once.
 * @module
 */
import { randomBytes } from "node:crypto";
import type { Store } from "./types.js";

interface LeaseValue {
  holder: string;
  until: number;
}

const isLease = (v: unknown): v is LeaseValue =>
  typeof v === "object" && v !== null && typeof (v as LeaseValue).holder === "string" && typeof (v as LeaseValue).until === "number";

/** The leases of one process (one holder id). */
export class Leases {
  /** This process among the replicas. */
  readonly holder: string;
  readonly #store: Store;
  readonly #now: () => number;
  /** Leases this process holds (tenant\0name), released by {@link Leases.releaseAll}. */
  readonly #held = new Set<string>();

  /**
   * @param store where leases live
   * @param now the clock (leases compare times written by every replica: keep clocks in sync)
   * @param holder this process's id (default: random)
   */
  constructor(store: Store, now: () => number = Date.now, holder: string = randomBytes(8).toString("hex")) {
    this.#store = store;
    this.#now = now;
    this.holder = holder;
  }

  /**
   * Take or renew the lease `name` of `tenant` for `ttlMs`; false when another holder has it and it
   * has not expired.
   */
  async acquire(tenant: string, name: string, ttlMs: number): Promise<boolean> {
    const now = this.#now();
    const until = now + ttlMs;
    const v = await this.#store.updateState(tenant, `lease:${name}`, null, now, (cur) => {
      if (isLease(cur) && cur.holder !== this.holder && cur.until > now) return undefined;
      return { value: { holder: this.holder, until } satisfies LeaseValue, expiresAt: until };
    });
    const mine = isLease(v) && v.holder === this.holder;
    if (mine) this.#held.add(`${tenant}\u0000${name}`);
    else this.#held.delete(`${tenant}\u0000${name}`);
    return mine;
  }

  /** Give the lease up (when this process holds it). */
  async release(tenant: string, name: string): Promise<void> {
    this.#held.delete(`${tenant}\u0000${name}`);
    await this.#store.updateState(tenant, `lease:${name}`, null, this.#now(), (cur) => (isLease(cur) && cur.holder === this.holder ? null : undefined));
  }

  /** Give up every lease this process holds (a clean stop: others take over at once). */
  async releaseAll(): Promise<void> {
    const all = [...this.#held];
    await Promise.allSettled(
      all.map((k) => {
        const [tenant, name] = k.split("\u0000") as [string, string];
        return this.release(tenant, name);
      }),
    );
  }
}
