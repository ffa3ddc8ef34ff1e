/**
 * The KF puller. A `kf_msg_or_event` callback only wakes it; it then reads `sync_msg` pages for
 * that account, one pull at a time per open_kfid, from the stored cursor, following `has_more`
 * (also when a page is empty). Each page's messages and its next_cursor are stored in one
 * transaction, so a crash never skips or replays a message.
 *
 * Besides callbacks, every known account is pulled once on {@link KfPuller.start} (catch-up: WeCom
 * gives up on a callback after 3 tries within seconds, so messages that arrived while the gateway
 * was down wait in `sync_msg`) and every `pollIntervalSec` (a callback lost in transit). Callbacks,
 * catch-up, polls and retries all go through the same one-pull-at-a-time path.
 *
 * The callback's Token is passed on `sync_msg` while it is fresh (WeCom rate-limits pulls without
 * one much harder); it is only an optimisation, so a stale one (WeCom answers 95007 after its 10
 * minutes) is dropped and the pull goes on at once without it.
 *
 * A failed pull is retried with exponential backoff and jitter (1 s doubling to a 5-minute cap),
 * reset by a success or a new callback (which pulls at once). The class of the failure (see
 * `wecom/errcodes.ts`) decides the rest: configuration errors (an untrusted IP, a wrong secret, …)
 * are counted, logged once per change and retried with the same backoff, so that an operator's fix
 * takes effect without a restart; final answers are retried at the cap (a pull never gives up:
 * messages would be lost). A recovery line is logged when a failing account pulls again.
 *
 * Replicas: with `leases`, a pull holds the account's lease (`kfpull:{open_kfid}`, renewed after
 * every page) and reads the cursor only once it has it, so two replicas never pull one account at
 * once, and one that dies mid-pull loses the lease and another goes on from the stored cursor. A
 * replica woken while another holds the lease looks again a second later (the holder may have
 * read its last page before the new message arrived).
 *
 * History: without a cursor WeCom returns up to 3 days of messages. By default messages sent more
 * than `firstPullGraceSec` before the account was first seen are recorded in the ledger but not
 * delivered (`kf.deliverHistory` delivers them); the message whose callback started the first pull
 * is always newer than that.
 * @module
 */
import { type WeComClient, WeComApiError, type WeComCredentials } from "../clients/wecom.js";
import type { Logger } from "../log.js";
import type { KfMessage, UnifiedMessage } from "../model.js";
import type { Leases } from "../store/leases.js";
import type { IngestItem, Store } from "../store/types.js";
import { CONFIGURATION_HINTS, errcodeLabel, type WeComErrorClass } from "../wecom/errcodes.js";
import { backoffDelay } from "./delivery.js";
import type { Metrics } from "./metrics.js";
import { type ItemExtras, messageItem } from "./pipeline.js";

/** WeCom's answer to a `sync_msg` whose callback Token is no longer valid. */
export const KF_STALE_TOKEN_ERRCODE = 95007;

/** How long a pull's lease lasts without a renewal (a page renews it), ms. */
export const KF_PULL_LEASE_MS = 15_000;
/** How soon a replica that found the account's lease taken looks again, ms. */
export const KF_LEASE_BUSY_RETRY_MS = 1000;

/** Another replica is pulling the account. */
class LeaseBusy extends Error {}

/** Timers of the puller (injectable, so that a test can run the retry schedule without waiting). */
export interface KfPullerTimers {
  /** Call `fn` once after `ms`; returns a handle for {@link KfPullerTimers.clear}. */
  set(fn: () => void, ms: number): unknown;
  /** Cancel a timer that has not fired. */
  clear(handle: unknown): void;
}

/** Real timers, unref'd: a pending retry or poll never keeps the process alive. */
const realTimers: KfPullerTimers = {
  set(fn, ms) {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clear(handle) {
    clearTimeout(handle as NodeJS.Timeout);
  },
};

/** Backoff of failed pulls. */
export interface KfBackoff {
  /** First wait after a failed pull, ms. Default 1000. */
  baseMs?: number;
  /** Longest wait, ms (also the wait after a final answer). Default 300000 (5 minutes). */
  capMs?: number;
  /** Source of jitter in [0, 1): the wait is `d/2 + random()·d/2` for the un-jittered `d`. Default Math.random. */
  random?: () => number;
}

/** Options of {@link KfPuller}. */
export interface KfPullerOptions {
  store: Store;
  wecom: WeComClient;
  /** The tenant (CorpID) and the secret of the app authorised for KF. */
  credentials: WeComCredentials;
  /** Name of that app (media of KF messages is fetched with it). */
  appName: string;
  deliverHistory: boolean;
  firstPullGraceSec: number;
  log: Logger;
  metrics?: Metrics;
  now?: () => number;
  /** Called after a page stored new messages (those to be delivered); the next page waits for it. */
  onStored?: (messages: KfMessage[], seqs: (number | undefined)[]) => void | Promise<void>;
  /** What the outbound half adds to a stored message, in the same transaction (a handoff, KF rules). */
  extra?: (m: UnifiedMessage) => ItemExtras;
  /** Page size, 1..1000. Default 1000. */
  limit?: number;
  /** Pull every known account this often, seconds, after {@link KfPuller.start}; 0 or absent: never. */
  pollIntervalSec?: number;
  /** Backoff after failed pulls. */
  backoff?: KfBackoff;
  /** Timers for retries and polls. Default: unref'd `setTimeout`. */
  timers?: KfPullerTimers;
  /** Leases shared with other replicas (one pull of an account at a time across them). */
  leases?: Leases;
}

/** Result of one pull. */
export interface PullResult {
  pages: number;
  stored: number;
  duplicates: number;
  skipped: number;
}

interface AccountState {
  running: Promise<PullResult> | undefined;
  again: boolean;
  /** The latest callback Token, until WeCom calls it stale. */
  token: string | undefined;
  /** Failed pulls since the last success or callback: the backoff's exponent. */
  failures: number;
  /** Failed pulls since the last success (for the recovery line). */
  failedPulls: number;
  /** When the current run of failures began. */
  failingSince: number;
  /** The pending retry, if any. */
  retry: unknown;
  /** Class and errcode of the last failure that was logged (`configuration:60020`); undefined when healthy. */
  problem: string | undefined;
}

/** Pulls KF messages after callbacks, on start, periodically, and again after failures. */
export class KfPuller {
  readonly #o: KfPullerOptions;
  readonly #accounts = new Map<string, AccountState>();
  readonly #now: () => number;
  readonly #timers: KfPullerTimers;
  readonly #baseMs: number;
  readonly #capMs: number;
  readonly #random: () => number;
  #stopped = false;
  #poll: unknown;
  #sweep: Promise<void> | undefined;

  /** @param options what to pull with */
  constructor(options: KfPullerOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
    this.#timers = options.timers ?? realTimers;
    this.#baseMs = options.backoff?.baseMs ?? 1000;
    this.#capMs = options.backoff?.capMs ?? 300_000;
    this.#random = options.backoff?.random ?? Math.random;
  }

  /**
   * Catch up (pull every known account once) and, when `pollIntervalSec` is set, pull every known
   * account that often. Returns the catch-up sweep (callers need not wait for it).
   */
  start(): Promise<void> {
    const sweep = this.#pullKnown("catch-up");
    this.#armPoll();
    return sweep;
  }

  /**
   * A `kf_msg_or_event` arrived: remember the account (first seen at `callbackTime`) and pull at
   * once, resetting the account's backoff. Returns the pull it started or joined (callers need not
   * wait for it).
   */
  wake(openKfId: string, token: string | undefined, callbackTime: number): Promise<PullResult> {
    const st = this.#state(openKfId);
    if (token) st.token = token;
    st.failures = 0; // a new callback resets the backoff
    return this.#begin(openKfId, st, callbackTime);
  }

  /**
   * How an account's pulls go on this replica (the console's Accounts page): the class and errcode
   * of the failure under way (`configuration:60020`) and since when, or undefined when healthy.
   */
  problem(openKfId: string): { problem: string; since: number; failedPulls: number } | undefined {
    const st = this.#accounts.get(openKfId);
    return st?.problem === undefined ? undefined : { problem: st.problem, since: st.failingSince, failedPulls: st.failedPulls };
  }

  /** Stop polling and retrying; pulls in flight finish (between pages). */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#poll !== undefined) this.#timers.clear(this.#poll);
    this.#poll = undefined;
    for (const st of this.#accounts.values()) {
      if (st.retry !== undefined) this.#timers.clear(st.retry);
      st.retry = undefined;
    }
    await this.#sweep;
    await Promise.allSettled([...this.#accounts.values()].map((s) => s.running));
  }

  #state(openKfId: string): AccountState {
    let st = this.#accounts.get(openKfId);
    if (st === undefined) {
      st = { running: undefined, again: false, token: undefined, failures: 0, failedPulls: 0, failingSince: 0, retry: undefined, problem: undefined };
      this.#accounts.set(openKfId, st);
    }
    return st;
  }

  /** Start a pull of the account, or ask the running one to read again. */
  #begin(openKfId: string, state: AccountState, firstSeenAt?: number): Promise<PullResult> {
    if (state.running) {
      state.again = true; // messages may have arrived after this pull read its last page
      return state.running;
    }
    if (state.retry !== undefined) {
      this.#timers.clear(state.retry);
      state.retry = undefined;
    }
    const run = (async () => {
      const total: PullResult = { pages: 0, stored: 0, duplicates: 0, skipped: 0 };
      if (firstSeenAt !== undefined) await this.#o.store.touchKfAccount(this.#o.credentials.corpId, openKfId, firstSeenAt);
      do {
        state.again = false;
        const r = await this.#pull(openKfId, state);
        total.pages += r.pages;
        total.stored += r.stored;
        total.duplicates += r.duplicates;
        total.skipped += r.skipped;
      } while (state.again && !this.#stopped);
      return total;
    })();
    state.running = run;
    run.then(
      () => {
        state.running = undefined;
        this.#succeeded(openKfId, state);
      },
      (e: unknown) => {
        state.running = undefined;
        this.#failed(openKfId, state, e);
      },
    );
    return run;
  }

  #succeeded(openKfId: string, state: AccountState): void {
    if (state.failedPulls > 0) {
      this.#o.log.info("kf pull recovered", { openKfId, failedPulls: state.failedPulls, failingForSec: Math.round((this.#now() - state.failingSince) / 1000), previous: state.problem });
    }
    state.failures = 0;
    state.failedPulls = 0;
    state.problem = undefined;
  }

  #failed(openKfId: string, state: AccountState, e: unknown): void {
    if (e instanceof LeaseBusy) {
      // not a failure: another replica is pulling; look again soon (no backoff, no alarm)
      this.#retryIn(openKfId, state, KF_LEASE_BUSY_RETRY_MS);
      return;
    }
    const api = e instanceof WeComApiError ? e.api : "store";
    const errcode = e instanceof WeComApiError ? e.errcode : 0;
    // a failure that is not WeCom's (the store, a bug) is retried like a transient one
    const kind: WeComErrorClass = e instanceof WeComApiError ? e.kind : "transient";
    this.#o.metrics?.kfPages.inc({ outcome: "error" });
    this.#o.metrics?.kfPullErrors.inc({ class: kind });
    if (kind === "configuration") this.#o.metrics?.wecomConfigErrors.inc({ api, errcode: errcodeLabel(errcode) });
    if (state.failedPulls === 0) state.failingSince = this.#now();
    state.failures++;
    state.failedPulls++;
    const delayMs = kind === "final" ? this.#capMs : backoffDelay(state.failures, { baseDelayMs: this.#baseMs, maxDelayMs: this.#capMs }, this.#random);
    const problem = `${kind}:${errcode}`;
    const fields = { openKfId, class: kind, api, errcode, error: (e as Error)?.message, failedPulls: state.failedPulls, retryInMs: delayMs };
    if (problem !== state.problem) {
      // once per change, not on every retry
      if (kind === "configuration") this.#o.log.error("kf pull refused: configuration", { ...fields, hint: CONFIGURATION_HINTS[errcode] });
      else if (kind === "final") this.#o.log.error("kf pull refused", fields);
      else this.#o.log.warn("kf pull failed", fields);
      state.problem = problem;
    } else {
      this.#o.log.debug("kf pull failed again", fields);
    }
    this.#retryIn(openKfId, state, delayMs);
  }

  /** Pull the account again after `ms` (unless stopped, or a callback pulls it first). */
  #retryIn(openKfId: string, state: AccountState, ms: number): void {
    if (this.#stopped) return;
    const t = this.#timers.set(() => {
      if (state.retry !== t) return;
      state.retry = undefined;
      if (!this.#stopped) void this.#begin(openKfId, state).catch(() => undefined);
    }, ms);
    state.retry = t;
  }

  /** Pull every known account (catch-up and polls); accounts waiting for a retry keep their backoff. */
  #pullKnown(reason: "catch-up" | "poll"): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    const sweep = (async () => {
      let ids: string[];
      try {
        ids = await this.#o.store.listKfAccounts(this.#o.credentials.corpId);
      } catch (e) {
        this.#o.log.warn(`kf ${reason}: cannot list accounts`, { error: (e as Error).message });
        return;
      }
      if (ids.length > 0) this.#o.log.debug(`kf ${reason}`, { accounts: ids.length });
      for (const id of ids) {
        if (this.#stopped) return;
        const st = this.#state(id);
        if (st.retry !== undefined) continue;
        void this.#begin(id, st).catch(() => undefined);
      }
    })();
    this.#sweep = sweep;
    return sweep;
  }

  #armPoll(): void {
    const sec = this.#o.pollIntervalSec ?? 0;
    if (sec <= 0 || this.#stopped) return;
    this.#poll = this.#timers.set(() => {
      this.#poll = undefined;
      if (this.#stopped) return;
      void this.#pullKnown("poll").finally(() => this.#armPoll());
    }, sec * 1000);
  }

  async #pull(openKfId: string, state: AccountState): Promise<PullResult> {
    const leases = this.#o.leases;
    if (leases === undefined) return this.#pullPages(openKfId, state);
    const tenant = this.#o.credentials.corpId;
    const name = `kfpull:${openKfId}`;
    if (!(await leases.acquire(tenant, name, KF_PULL_LEASE_MS))) throw new LeaseBusy(openKfId);
    try {
      return await this.#pullPages(openKfId, state, () => leases.acquire(tenant, name, KF_PULL_LEASE_MS));
    } finally {
      await leases.release(tenant, name).catch(() => undefined);
    }
  }

  /** Read pages from the stored cursor; `renew` (after each page) says whether the lease is still held. */
  async #pullPages(openKfId: string, state: AccountState, renew?: () => Promise<boolean>): Promise<PullResult> {
    const tenant = this.#o.credentials.corpId;
    const account = await this.#o.store.getKfCursor(tenant, openKfId);
    const historyBefore = (account?.firstSeenAt ?? this.#now()) - this.#o.firstPullGraceSec * 1000;
    let cursor = account?.cursor;
    const result: PullResult = { pages: 0, stored: 0, duplicates: 0, skipped: 0 };
    for (;;) {
      if (this.#stopped) break;
      const token = state.token;
      let page: Awaited<ReturnType<WeComClient["syncMsg"]>>;
      try {
        page = await this.#o.wecom.syncMsg(this.#o.credentials, { openKfId, cursor, token, limit: this.#o.limit ?? 1000 });
      } catch (e) {
        if (token !== undefined && e instanceof WeComApiError && e.errcode === KF_STALE_TOKEN_ERRCODE) {
          // the Token only buys speed and quota: go on without it, at once
          if (state.token === token) state.token = undefined;
          this.#o.log.info("kf callback token stale: pulling without it", { openKfId });
          continue;
        }
        throw e;
      }
      result.pages++;
      this.#o.metrics?.kfPages.inc({ outcome: page.messages.length === 0 ? "empty" : "messages" });
      const items: IngestItem[] = page.messages.map((m) => this.#item(tenant, m, historyBefore));
      const next = page.nextCursor ?? cursor;
      // lost the lease (this process stalled past it): the new holder goes on from the stored
      // cursor, and this page is not written (its cursor would take the holder's back)
      if (renew !== undefined && !(await renew())) throw new LeaseBusy(openKfId);
      const results = await this.#o.store.ingest(items, next !== undefined ? { tenant, openKfId, cursor: next } : undefined, this.#now());
      const stored: KfMessage[] = [];
      const seqs: (number | undefined)[] = [];
      let duplicates = 0;
      results.forEach((r, i) => {
        const m = items[i]?.message;
        if (!r.stored) duplicates++;
        else if (m === undefined) result.skipped++;
        else {
          stored.push(m as KfMessage);
          seqs.push(r.seq);
        }
      });
      result.stored += stored.length;
      result.duplicates += duplicates;
      if (duplicates > 0) this.#o.metrics?.dedupHits.inc({ channel: "kf" }, duplicates);
      const newest = page.messages.at(-1);
      if (newest) this.#o.metrics?.kfPullLag.set(Math.max(0, (this.#now() - newest.time) / 1000));
      if (stored.length > 0) await this.#o.onStored?.(stored, seqs);
      cursor = next;
      if (!page.hasMore) break;
    }
    if (result.stored + result.skipped + result.duplicates > 0) {
      this.#o.log.info("kf pulled", { openKfId, ...result });
    }
    return result;
  }

  #item(tenant: string, m: KfMessage, historyBefore: number): IngestItem {
    if (!this.#o.deliverHistory && m.time < historyBefore) {
      return { tenant, channel: "kf", key: m.id, skipReason: "kf_history" };
    }
    if (m.origin === "servicer") {
      // sent by a servicer in the WeCom client: kept, not echoed to the 全媒体
      return { tenant, channel: "kf", key: m.id, message: m };
    }
    return messageItem(tenant, m, { kind: "wecom", app: this.#o.appName }, this.#o.extra);
  }
}
