/**
 * The KF puller. A `kf_msg_or_event` callback only wakes it; it then reads `sync_msg` pages for
 * that account, one pull at a time per open_kfid, from the stored cursor, following `has_more`
 * (also when a page is empty). Each page's messages and its next_cursor are stored in one
 * transaction, so a crash never skips or replays a message.
 *
 * History: without a cursor WeCom returns up to 3 days of messages. By default messages sent more
 * than `firstPullGraceSec` before the account was first seen are recorded in the ledger but not
 * delivered (`kf.deliverHistory` delivers them); the message whose callback started the first pull
 * is always newer than that.
 * @module
 */
import type { WeComClient, WeComCredentials } from "../clients/wecom.js";
import type { Logger } from "../log.js";
import type { KfMessage } from "../model.js";
import type { IngestItem, Store } from "../store/types.js";
import type { Metrics } from "./metrics.js";
import { messageItem } from "./pipeline.js";

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
  /** Called after a page stored new messages (those to be delivered). */
  onStored?: (messages: KfMessage[]) => void;
  /** Page size, 1..1000. Default 1000. */
  limit?: number;
  /** Wait before pulling again after a failed pull, ms. Default 2000. */
  retryMs?: number;
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
  token: string | undefined;
}

/** Pulls KF messages after callbacks. */
export class KfPuller {
  readonly #o: KfPullerOptions;
  readonly #accounts = new Map<string, AccountState>();
  readonly #now: () => number;
  #stopped = false;
  readonly #timers = new Set<NodeJS.Timeout>();

  /** @param options what to pull with */
  constructor(options: KfPullerOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  /**
   * A `kf_msg_or_event` arrived: remember the account (first seen at `callbackTime`) and pull.
   * Returns the pull it started or joined (callers need not wait for it).
   */
  wake(openKfId: string, token: string | undefined, callbackTime: number): Promise<PullResult> {
    let st = this.#accounts.get(openKfId);
    if (st === undefined) {
      st = { running: undefined, again: false, token: undefined };
      this.#accounts.set(openKfId, st);
    }
    if (token) st.token = token;
    if (st.running) {
      st.again = true; // messages may have arrived after this pull read its last page
      return st.running;
    }
    const state = st;
    const run = (async () => {
      const total: PullResult = { pages: 0, stored: 0, duplicates: 0, skipped: 0 };
      await this.#o.store.touchKfAccount(this.#o.credentials.corpId, openKfId, callbackTime);
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
    run
      .catch((e: unknown) => {
        this.#o.metrics?.kfPages.inc({ outcome: "error" });
        this.#o.log.warn("kf pull failed", { openKfId, error: (e as Error).message });
        if (!this.#stopped) {
          const t = setTimeout(() => {
            this.#timers.delete(t);
            void this.wake(openKfId, undefined, callbackTime).catch(() => undefined);
          }, this.#o.retryMs ?? 2000);
          this.#timers.add(t);
        }
      })
      .finally(() => {
        state.running = undefined;
      });
    return run;
  }

  /** Stop retrying; pulls in flight finish. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    await Promise.allSettled([...this.#accounts.values()].map((s) => s.running));
  }

  async #pull(openKfId: string, state: AccountState): Promise<PullResult> {
    const tenant = this.#o.credentials.corpId;
    const account = await this.#o.store.getKfCursor(tenant, openKfId);
    const historyBefore = (account?.firstSeenAt ?? this.#now()) - this.#o.firstPullGraceSec * 1000;
    let cursor = account?.cursor;
    const result: PullResult = { pages: 0, stored: 0, duplicates: 0, skipped: 0 };
    for (;;) {
      if (this.#stopped) break;
      const page = await this.#o.wecom.syncMsg(this.#o.credentials, { openKfId, cursor, token: state.token, limit: this.#o.limit ?? 1000 });
      result.pages++;
      this.#o.metrics?.kfPages.inc({ outcome: page.messages.length === 0 ? "empty" : "messages" });
      const items: IngestItem[] = page.messages.map((m) => this.#item(tenant, m, historyBefore));
      const next = page.nextCursor ?? cursor;
      const results = await this.#o.store.ingest(items, next !== undefined ? { tenant, openKfId, cursor: next } : undefined);
      const stored: KfMessage[] = [];
      let duplicates = 0;
      results.forEach((r, i) => {
        const m = items[i]?.message;
        if (!r.stored) duplicates++;
        else if (m === undefined) result.skipped++;
        else stored.push(m as KfMessage);
      });
      result.stored += stored.length;
      result.duplicates += duplicates;
      if (duplicates > 0) this.#o.metrics?.dedupHits.inc({ channel: "kf" }, duplicates);
      const newest = page.messages.at(-1);
      if (newest) this.#o.metrics?.kfPullLag.set({ open_kfid: openKfId }, Math.max(0, (this.#now() - newest.time) / 1000));
      if (stored.length > 0) this.#o.onStored?.(stored);
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
    return messageItem(tenant, m, { kind: "wecom", app: this.#o.appName });
  }
}
