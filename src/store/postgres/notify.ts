/**
 * Work notifications between replicas: LISTEN/NOTIFY on one channel per schema. A process that
 * committed new work says so (at most every {@link NOTIFY_EVERY_MS}, outside its transactions, so
 * that a busy replica does not take PostgreSQL's notify lock on every commit); the others' delivery
 * workers wake instead of polling. The listening connection is its own (not the pool's) and is
 * opened again, with backoff, when it drops; meanwhile workers fall back to their idle timer.
 * @module
 */
import { createHash } from "node:crypto";
import pg from "pg";
import type { PgTarget } from "./connection.js";

/** How often the listening connection is checked, ms. */
export const LISTEN_PING_MS = 30_000;

/** Notifications a process sends are coalesced to one per this many ms. */
export const NOTIFY_EVERY_MS = 20;

/** The channel of a schema. */
export function channelOf(schema: string | undefined): string {
  // an identifier is at most 63 bytes: a long schema name is hashed
  return `wb_work_${createHash("sha1")
    .update(schema ?? "public")
    .digest("hex")
    .slice(0, 16)}`;
}

/** Sends and receives work notifications for one store. */
export class WorkNotifier {
  readonly #pool: pg.Pool;
  readonly #target: PgTarget;
  readonly #self: string;
  readonly #channel: string;
  readonly #listeners = new Set<() => void>();
  #client: pg.Client | undefined;
  #connecting = false;
  #retryMs = 500;
  #timer: NodeJS.Timeout | undefined;
  #pending = false;
  #closed = false;

  /**
   * @param pool where notifications are sent from
   * @param target where the listening connection goes
   * @param self this process's id (its own notifications are ignored)
   */
  constructor(pool: pg.Pool, target: PgTarget, self: string) {
    this.#pool = pool;
    this.#target = target;
    this.#self = self;
    this.#channel = channelOf(target.schema);
  }

  /** New work was committed: tell the other processes soon. */
  signal(): void {
    if (this.#closed || this.#pending) return;
    this.#pending = true;
    const t = setTimeout(() => {
      this.#pending = false;
      this.#pool.query("SELECT pg_notify($1, $2)", [this.#channel, this.#self]).catch(() => undefined);
    }, NOTIFY_EVERY_MS);
    t.unref();
  }

  /** Call `fn` when another process signals; returns the function that stops it. */
  subscribe(fn: () => void): () => void {
    this.#listeners.add(fn);
    if (this.#client === undefined) void this.#listen();
    return () => {
      this.#listeners.delete(fn);
    };
  }

  async #listen(): Promise<void> {
    if (this.#connecting || this.#closed) return;
    this.#connecting = true;
    const client = new pg.Client({ connectionString: this.#target.connectionString, keepAlive: true });
    const retry = () => {
      if (this.#client === client) this.#client = undefined;
      client.end().catch(() => undefined);
      if (this.#closed || this.#timer !== undefined) return;
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        void this.#listen();
      }, this.#retryMs);
      this.#timer.unref();
      this.#retryMs = Math.min(this.#retryMs * 2, 30_000);
    };
    client.on("error", retry);
    client.on("end", retry);
    client.on("notification", (n) => {
      if (n.payload === this.#self) return;
      for (const fn of this.#listeners) fn();
    });
    try {
      await client.connect();
      await client.query(`LISTEN ${this.#channel}`);
      if (this.#closed) {
        await client.end().catch(() => undefined);
        return;
      }
      this.#client = client;
      this.#retryMs = 500;
      // a connection a NAT dropped silently never says so: ask it now and then
      const ping = setInterval(() => {
        if (this.#client !== client) {
          clearInterval(ping);
          return;
        }
        client.query("SELECT 1").catch(() => retry());
      }, LISTEN_PING_MS);
      ping.unref();
      // work may have come while not listening
      for (const fn of this.#listeners) fn();
    } catch {
      retry();
    } finally {
      this.#connecting = false;
    }
  }

  /** Stop listening. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    const c = this.#client;
    this.#client = undefined;
    if (c !== undefined) {
      c.removeAllListeners("end");
      c.removeAllListeners("error");
      c.on("error", () => undefined);
      await c.end().catch(() => undefined);
    }
  }
}
