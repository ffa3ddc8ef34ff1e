/**
 * Retention: what the store keeps, and for how long. A timer prunes in small batches (one short
 * transaction each, yielding to the event loop between them), so the database and the media
 * folder stop growing without ever holding a long transaction on the event loop.
 *
 * - messages and their finished outbox entries: `retention.days` (a number, or per channel with a
 *   `default`, e.g. `{"archive": 365, "default": 30}`);
 * - ledger keys: as long as their messages, and never less than 4 days (KF `sync_msg` reads 3 days
 *   back, so WeCom can hand the same item over again that long);
 * - media files and rows: until their links expire (`mediaLinkTtlSec` after delivery);
 * - dead letters: until replayed, or removed with `wecom-bridge purge --dead`;
 * - partial downloads a killed process left in the media folder: an hour;
 * - the audit log: `retention.auditDays`;
 * - pending and in-flight entries, and their messages and media: until delivered.
 *
 * With several replicas, a run holds the `retention` lease (renewed after every batch): one
 * replica prunes at a time, and the others skip their turn.
 * @module
 */
import type { Config } from "../config.js";
import type { Logger } from "../log.js";
import { CHANNELS, type Channel } from "../model.js";
import type { Leases } from "../store/leases.js";
import type { MediaRow, PruneCutoffs, PruneResult, Store } from "../store/types.js";
import type { Metrics } from "./metrics.js";

const DAY_MS = 86_400_000;
/** Partial downloads (`*.tmp`) untouched this long were left by a killed process. */
export const PARTIAL_FILE_MAX_AGE_MS = 3_600_000;
/** Ledger keys are never kept less than this: WeCom's sync_msg can return an item 3 days later. */
export const LEDGER_MIN_DAYS = 4;

/** Days messages of `channel` are kept under a `retention.days` setting. */
export function retentionDays(days: Config["retention"]["days"], channel: Channel): number {
  if (typeof days === "number") return days;
  return (channel in days ? (days as Record<string, number | undefined>)[channel] : undefined) ?? days.default;
}

/**
 * How long an idempotency key of the 全媒体 (`Tag.msgid`) is remembered, ms: as long as the ledger
 * keeps inbound keys under the default retention.
 */
export function outboundKeyKeepMs(config: Pick<Config, "retention">): number {
  const d = typeof config.retention.days === "number" ? config.retention.days : config.retention.days.default;
  return Math.max(d, LEDGER_MIN_DAYS) * DAY_MS;
}

/** The cutoffs of one pruning run at time `now`. */
export function pruneCutoffs(config: Pick<Config, "retention" | "mediaLinkTtlSec">, now: number): PruneCutoffs {
  const messagesBefore = {} as Record<Channel, number>;
  const ledgerBefore = {} as Record<Channel, number>;
  for (const ch of CHANNELS) {
    const d = retentionDays(config.retention.days, ch);
    messagesBefore[ch] = now - d * DAY_MS;
    ledgerBefore[ch] = now - Math.max(d, LEDGER_MIN_DAYS) * DAY_MS;
  }
  const defaultDays = typeof config.retention.days === "number" ? config.retention.days : config.retention.days.default;
  return {
    messagesBefore,
    ledgerBefore,
    archiveBefore: messagesBefore.archive,
    mediaBefore: now - config.mediaLinkTtlSec * 1000,
    outboxBefore: now - defaultDays * DAY_MS,
    stateBefore: now,
    auditBefore: now - config.retention.auditDays * DAY_MS,
  };
}

/** Options of {@link Retention}. */
export interface RetentionOptions {
  config: Pick<Config, "retention" | "mediaLinkTtlSec">;
  store: Store;
  /** Delete the file of a media row the store no longer has. */
  removeFile: (row: MediaRow) => Promise<void>;
  /** Delete partial downloads last written before this time (ms); returns how many. */
  sweepPartial?: (before: number) => Promise<number>;
  log: Logger;
  metrics?: Metrics;
  now?: () => number;
  /** Leases shared with other replicas (one retention run at a time across them). */
  leases?: Leases;
}

/** Tenant and name of the retention lease (the whole installation). */
const RETENTION_LEASE = ["", "retention"] as const;

/** Totals of one pruning run. */
export interface RetentionRun {
  messages: number;
  outbox: number;
  ledger: number;
  archive: number;
  /** Expired shared state rows and outbound idempotency keys. */
  state: number;
  /** Audit log rows. */
  audit: number;
  media: number;
}

/** Removes what is past its retention, on a timer. */
export class Retention {
  readonly #o: RetentionOptions;
  readonly #now: () => number;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<RetentionRun> | undefined;
  #stopped = false;

  /** @param options what to prune, and how to delete files */
  constructor(options: RetentionOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  /** Prune now, then every `retention.intervalSec`. */
  start(): void {
    this.#stopped = false;
    const tick = () => {
      this.#timer = undefined;
      if (this.#stopped) return;
      void this.run()
        .catch((e: unknown) => this.#o.log.error("retention run failed", { error: (e as Error).message }))
        .finally(() => {
          if (!this.#stopped) {
            this.#timer = setTimeout(tick, this.#o.config.retention.intervalSec * 1000);
            this.#timer.unref();
          }
        });
    };
    this.#timer = setTimeout(tick, 0);
    this.#timer.unref();
  }

  /** Stop the timer; a run in progress ends after its current batch. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#running?.catch(() => undefined);
  }

  /** One run: batches until nothing is past its cutoff (a run already going is joined). */
  run(): Promise<RetentionRun> {
    if (this.#running) return this.#running;
    const p = this.#run().finally(() => {
      this.#running = undefined;
    });
    this.#running = p;
    return p;
  }

  async #run(): Promise<RetentionRun> {
    const leases = this.#o.leases;
    if (leases === undefined) return this.#prune(async () => true);
    const ttlMs = Math.max(60_000, 2 * this.#o.config.retention.intervalSec * 1000);
    const renew = () => leases.acquire(...RETENTION_LEASE, ttlMs);
    // another replica is pruning: this one skips its turn
    if (!(await renew())) return { messages: 0, outbox: 0, ledger: 0, archive: 0, state: 0, audit: 0, media: 0 };
    try {
      return await this.#prune(renew);
    } finally {
      await leases.release(...RETENTION_LEASE).catch(() => undefined);
    }
  }

  /** Batches until nothing is past its cutoff, or the lease is lost (`renew` after each batch). */
  async #prune(renew: () => Promise<boolean>): Promise<RetentionRun> {
    const total: RetentionRun = { messages: 0, outbox: 0, ledger: 0, archive: 0, state: 0, audit: 0, media: 0 };
    const now = this.#now();
    const cutoffs = pruneCutoffs(this.#o.config, now);
    // a download writes its partial file at least every delivery timeout: an hour-old one is dead
    const partial = (await this.#o.sweepPartial?.(now - PARTIAL_FILE_MAX_AGE_MS)) ?? 0;
    if (partial > 0) {
      this.#o.log.info("partial media downloads removed", { files: partial });
      this.#o.metrics?.retentionDeleted.inc({ what: "partial_files" }, partial);
    }
    const batch = this.#o.config.retention.batchSize;
    for (;;) {
      const r = await this.#o.store.pruneBatch(cutoffs, batch);
      await this.#account(r, total);
      const removed = r.messages + r.outbox + r.ledger + r.archive + r.state + r.audit + r.media.length;
      if (removed === 0 || this.#stopped || !(await renew())) break;
      // let requests through between batches
      await new Promise((resolve) => setImmediate(resolve));
    }
    if (total.messages + total.outbox + total.ledger + total.archive + total.state + total.audit + total.media > 0) this.#o.log.info("retention pruned", { ...total });
    return total;
  }

  async #account(r: PruneResult, total: RetentionRun): Promise<void> {
    for (const row of r.media) {
      await this.#o.removeFile(row).catch((e: unknown) => this.#o.log.warn("media file not removed", { media: row.id, error: (e as NodeJS.ErrnoException).code ?? "error" }));
    }
    total.messages += r.messages;
    total.outbox += r.outbox;
    total.ledger += r.ledger;
    total.archive += r.archive;
    total.state += r.state;
    total.audit += r.audit;
    total.media += r.media.length;
    const m = this.#o.metrics?.retentionDeleted;
    if (m) {
      if (r.messages) m.inc({ what: "messages" }, r.messages);
      if (r.outbox) m.inc({ what: "outbox" }, r.outbox);
      if (r.ledger) m.inc({ what: "ledger" }, r.ledger);
      if (r.archive) m.inc({ what: "archive" }, r.archive);
      if (r.state) m.inc({ what: "state" }, r.state);
      if (r.audit) m.inc({ what: "audit" }, r.audit);
      if (r.media.length) m.inc({ what: "media" }, r.media.length);
    }
  }
}
