/**
 * The inbound pipeline: a decoded message becomes one ledger entry, one message row and its
 * outbox entries (media fetches and the 全媒体 delivery), written in one transaction before the
 * callback is acknowledged. Concurrent callbacks share transactions (group commit): items
 * submitted during one event-loop turn are written together, and each caller is answered when
 * its transaction has committed.
 * @module
 */
import type { UnifiedMessage } from "../model.js";
import type { IngestEffect, IngestItem, IngestResult, OutboxInsert, Store } from "../store/types.js";
import type { MediaJob, MediaSource, OmniJob } from "./delivery.js";
import { mediaRefs, toOmniBody } from "./omni-map.js";

/**
 * True for an item that concerns a KF account rather than a customer (servicer_status_change):
 * stored under the account's address `kf:{corpId}:{openKfId}` and shown in the admin API, but
 * not delivered, since the 全媒体 could not answer it.
 */
export function isAccountLevel(message: UnifiedMessage): boolean {
  return message.channel === "kf" && !message.externalUserId;
}

/** What the outbound half adds to an inbound item: entries after its own (a handoff), and a shared-state effect (KF rules). */
export interface ItemExtras {
  entries?: OutboxInsert[];
  effect?: IngestEffect;
}

/**
 * Build the ledger item of a message: its media entries and its 全媒体 delivery, then `extra`'s
 * entries and effect, written in the same transaction.
 */
export function messageItem(tenant: string, message: UnifiedMessage, source: MediaSource, extra?: (m: UnifiedMessage) => ItemExtras): IngestItem {
  if (isAccountLevel(message)) return { tenant, channel: message.channel, key: message.id, message };
  const refs = mediaRefs(message.content);
  const outbox: OutboxInsert[] = refs.map((ref, index) => ({ kind: "media", conversationId: null, payload: { index, ref, source } satisfies MediaJob }));
  // a message without media is delivered as it is: its body is built now, not read back later
  const omni: OmniJob = refs.length === 0 ? { mediaCount: 0, body: toOmniBody(message) } : { mediaCount: refs.length };
  outbox.push({ kind: "omni", conversationId: message.conversationId, payload: omni });
  const more = extra?.(message);
  if (more?.entries !== undefined) outbox.push(...more.entries);
  const item: IngestItem = { tenant, channel: message.channel, key: message.id, message, outbox };
  if (more?.effect !== undefined) item.effect = more.effect;
  return item;
}

interface Pending {
  item: IngestItem;
  resolve: (r: IngestResult) => void;
  reject: (e: unknown) => void;
}

/** The conversation of an item (its lane), if it has one. */
function conversationOf(item: IngestItem): string | undefined {
  const c = item.message?.conversationId;
  return c === undefined ? undefined : `${item.tenant}\u0000${c}`;
}

/**
 * Group commit over {@link Store.ingest}: the items submitted during one event-loop turn (and while
 * the previous batches commit) share a transaction. With `maxInFlight` > 1 (for a store far
 * enough away that its round trips, not its work, bound a commit), that many batches commit at
 * once; the gateway uses one (see the README's PostgreSQL benchmark).
 */
export class Ingestor {
  readonly #store: Store;
  readonly #maxBatch: number;
  readonly #maxInFlight: number;
  #queue: Pending[] = [];
  #scheduled = false;
  readonly #inflight = new Set<Promise<void>>();
  /** Conversations with items in a batch still committing. */
  readonly #busy = new Set<string>();
  /** Called after each committed batch with its new (stored) results. */
  onCommit?: (items: IngestItem[], results: IngestResult[]) => void;

  readonly #now: () => number;

  /**
   * @param store where items go
   * @param maxBatch most items in one transaction (default 256)
   * @param now the gateway's clock (stamps rows, makes entries due)
   * @param maxInFlight batches committing at once (default 1)
   */
  constructor(store: Store, maxBatch = 256, now: () => number = Date.now, maxInFlight = 1) {
    this.#store = store;
    this.#maxBatch = maxBatch;
    this.#now = now;
    this.#maxInFlight = Math.max(1, maxInFlight);
  }

  /** Queue an item; resolves once it is committed (or found already stored). */
  submit(item: IngestItem): Promise<IngestResult> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ item, resolve, reject });
      if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => {
          this.#scheduled = false;
          this.#pump();
        });
      }
    });
  }

  /**
   * Start batches while there are items and room. An item whose conversation is in a batch still
   * committing waits for it (batches commit in any order: a conversation's messages keep theirs).
   */
  #pump(): void {
    while (this.#queue.length > 0 && this.#inflight.size < this.#maxInFlight) {
      const batch: Pending[] = [];
      const rest: Pending[] = [];
      const taken = new Set<string>();
      const deferred = new Set<string>();
      for (const p of this.#queue) {
        const conv = conversationOf(p.item);
        // a full batch, a conversation committing, or an earlier item of it held back: wait
        if (batch.length >= this.#maxBatch || (conv !== undefined && (this.#busy.has(conv) || deferred.has(conv)))) {
          rest.push(p);
          if (conv !== undefined) deferred.add(conv);
          continue;
        }
        batch.push(p);
        if (conv !== undefined) taken.add(conv);
      }
      if (batch.length === 0) return;
      this.#queue = rest;
      for (const c of taken) this.#busy.add(c);
      const p = this.#commit(batch).finally(() => {
        for (const c of taken) this.#busy.delete(c);
        this.#inflight.delete(p);
        this.#pump();
      });
      this.#inflight.add(p);
    }
  }

  async #commit(batch: Pending[]): Promise<void> {
    try {
      const results = await this.#store.ingest(
        batch.map((p) => p.item),
        undefined,
        this.#now(),
      );
      for (let i = 0; i < batch.length; i++) batch[i]?.resolve(results[i] as IngestResult);
      this.onCommit?.(
        batch.map((p) => p.item),
        results,
      );
    } catch (e) {
      for (const p of batch) p.reject(e);
    }
  }

  /** Resolves when everything submitted so far is committed. */
  async drain(): Promise<void> {
    while (this.#queue.length > 0 || this.#scheduled || this.#inflight.size > 0) {
      await new Promise((r) => setImmediate(r));
      await Promise.allSettled([...this.#inflight]);
    }
  }
}
