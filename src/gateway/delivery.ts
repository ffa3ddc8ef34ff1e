/**
 * The outbox worker: claims due entries, runs them, and records the result. `media` entries fetch
 * a message's media into the media store; `omni` entries deliver a message to the 全媒体, after
 * its media is in (or known to be unavailable). Per conversation, entries run one at a time and in
 * order. Failures retry with exponential backoff and jitter, and become dead letters after
 * `maxAttempts` (visible in the admin API; `wecom-bridge replay` puts them back).
 *
 * Media fetches follow the one classification of WeCom answers (`wecom/errcodes.ts`): a final
 * answer (40007, a file over `limits.mediaBytes`, a file that does not decrypt) marks the media
 * unavailable at once; anything else (60020 before the IP is trusted, network errors, 5xx, -1,
 * 45009, …) is retried with the same backoff for up to `delivery.mediaDeadlineSec` after the entry
 * was created, however many attempts that takes; then the media is marked unavailable (reason
 * `deadline`) and the message goes out without it, saying so.
 *
 * Meanwhile the message's `omni` entry, the head of its conversation's lane, waits, and the
 * conversation's later messages wait behind it (order first). The wait costs nothing: the entry
 * stays claimed, parked in memory without a concurrency slot, and runs again the moment one of its
 * message's media entries settles (stored or given up). A parked entry is handed back to the store
 * before half its lease has passed, so that it is never claimed twice; then it is claimed and
 * parked again.
 * @module
 */
import type { OmniClient } from "../clients/omni.js";
import { type MediaDownload, WeComApiError, type WeComClient, type WeComCredentials } from "../clients/wecom.js";
import { BridgeError, WeComCryptoError } from "../errors.js";
import type { Logger } from "../log.js";
import type { MediaRef } from "../model.js";
import type { OmniToBody } from "../omni/index.js";
import type { OutboxEntry, OutboxKind, Store } from "../store/types.js";
import { CONFIGURATION_HINTS } from "../wecom/errcodes.js";
import { decryptBotMediaStream, MediaGoneError, type MediaStore, type MediaUnavailable, mediaId, unavailableOf } from "./media.js";
import type { Metrics } from "./metrics.js";
import { type MediaResolution, mediaRefs, toOmniBody } from "./omni-map.js";
import { type DispatchDeps, keepLease, outboundFailed, runOutbound } from "./outbound/dispatch.js";
import { isFinalFailure, type OmniNoticeJob, type Sender } from "./outbound/types.js";

/** Where a media entry fetches from. */
export type MediaSource = { kind: "wecom"; app: string } | { kind: "bot"; bot: string } | { kind: "none" };

/** Payload of a `media` outbox entry. */
export interface MediaJob {
  index: number;
  ref: MediaRef;
  source: MediaSource;
}

/** Payload of an `omni` outbox entry. */
export interface OmniJob {
  /** How many media the message has (the omni entry waits for them). */
  mediaCount: number;
  /** The body to send, built when the message was stored, for a message without media (no read at delivery). */
  body?: OmniToBody;
}

/** Backoff and limits. */
export interface DeliveryPolicy {
  /** Attempts of an `omni` entry before it becomes a dead letter (media entries go by the deadline instead). */
  maxAttempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
  concurrency: number;
  /** How long after its entry was created a media fetch failing for a non-final reason is retried, seconds. Default 600. */
  mediaDeadlineSec?: number;
}

/** How long after another replica's notification a worker looks for work, ms. */
export const REMOTE_WAKE_MS = 100;

/** Longest idle wait of a worker whose store notifies it of new work, ms. */
export const IDLE_NOTIFIED_MS = 10_000;

/** Options of {@link DeliveryWorker}. */
export interface DeliveryWorkerOptions {
  store: Store;
  /** The 全媒体 client, or the client of each tenant's 全媒体 (many corps). */
  omni: OmniClient | ((tenant: string) => OmniClient);
  wecom: WeComClient;
  media: MediaStore;
  policy: DeliveryPolicy;
  /** Credentials of a configured app, by name. */
  appCredentials: (app: string) => WeComCredentials | undefined;
  /** EncodingAESKey of a configured bot, by name. */
  botKey: (bot: string) => string | undefined;
  log: Logger;
  metrics?: Metrics;
  now?: () => number;
  /** Coalescing delay of {@link DeliveryWorker.notify}, ms. Default 10. */
  wakeDelayMs?: number;
  /** Lease of a claimed entry, ms. Default 60 s. */
  leaseMs?: number;
  /** Largest media file downloaded, bytes (`limits.mediaBytes`). Default 20 MiB. */
  mediaMaxBytes?: number;
  /** Senders of the outbound kinds (`kf_send`, `app_send`, `bot_reply`); their entries are claimed only when given. */
  senders?: Partial<Record<OutboxKind, Sender>>;
  /** Called after each finished attempt (tests, the sandbox's live log). */
  onAttempt?: (entry: OutboxEntry, outcome: "done" | "retry" | "dead" | "wait" | "refused" | "later", error?: string) => void;
}

/** Delay before attempt `attempts + 1`: exponential, capped, with jitter in [50%, 100%]. */
export function backoffDelay(attempts: number, policy: Pick<DeliveryPolicy, "baseDelayMs" | "maxDelayMs">, random = Math.random): number {
  const exp = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, attempts - 1));
  return Math.round(exp * (0.5 + random() * 0.5));
}

const INBOUND_KINDS: OutboxKind[] = ["media", "omni"];

/** True when trying again cannot help: WeCom's final answers, an oversized file, a file that does not decrypt. */
function isFinal(e: unknown): boolean {
  return e instanceof WeComCryptoError || isFinalFailure(e);
}

/** An omni entry waiting in memory for its message's media. */
interface Parked {
  entry: OutboxEntry;
  timer: NodeJS.Timeout;
}

/** The outbox worker. */
export class DeliveryWorker {
  readonly #o: DeliveryWorkerOptions;
  readonly #now: () => number;
  #running = false;
  #timer: NodeJS.Timeout | undefined;
  #wakeup: (() => void) | undefined;
  #loop: Promise<void> | undefined;
  #active = 0;
  #notifyTimer: NodeJS.Timeout | undefined;
  /** Omni entries waiting for media, by message seq. */
  readonly #parked = new Map<number, Parked[]>();
  /** Parked entries whose media settled: run them again (they are still claimed). */
  #resume: OutboxEntry[] = [];
  /** Counts media entries that settled, so a park can tell whether one settled while it looked. */
  #settledCount = 0;
  /** The last configuration problem logged as a warning (logged once per change). */
  #configProblem: string | undefined;
  /** Hand-backs under way (stop waits for them before the store closes). */
  readonly #releasing = new Set<Promise<void>>();

  /** The kinds this worker claims: inbound delivery, and the outbound kinds it has senders for. */
  readonly #kinds: OutboxKind[];
  /** What the outbound dispatch records results with. */
  readonly #dispatch: DispatchDeps;

  /** @param options what to deliver with */
  constructor(options: DeliveryWorkerOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
    this.#kinds = [...INBOUND_KINDS, ...(Object.keys(options.senders ?? {}) as OutboxKind[])];
    this.#dispatch = {
      store: options.store,
      log: options.log,
      metrics: options.metrics,
      now: this.#now,
      leaseMs: options.leaseMs ?? 60_000,
      maxAttempts: options.policy.maxAttempts,
      notify: () => this.notify(),
      onAttempt: options.onAttempt,
    };
  }

  /** Stops the store's work notifications (see {@link Store.subscribe}); set while running. */
  #unsubscribe: (() => void) | undefined;

  /** Start the loop. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    // other replicas' new work wakes this one (PostgreSQL's LISTEN/NOTIFY)
    // (a little later than for its own work: the replica that queued it usually claims it first,
    // and two replicas racing for every entry would only cost claims)
    this.#unsubscribe = this.#o.store.subscribe?.(() => this.notify(REMOTE_WAKE_MS));
    this.#loop = this.#run();
  }

  /**
   * Stop claiming; waits for attempts in flight (at most `graceMs`: an attempt still running then
   * is left to finish on its own, its entry held until its lease runs out or the store releases
   * it), then hands waiting entries back to the store.
   */
  async stop(graceMs = Number.POSITIVE_INFINITY): Promise<void> {
    this.#running = false;
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
    if (this.#notifyTimer) clearTimeout(this.#notifyTimer);
    this.#notifyTimer = undefined;
    this.wake();
    let timer: NodeJS.Timeout | undefined;
    const grace = Number.isFinite(graceMs) ? new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs))) : new Promise<void>(() => undefined);
    await Promise.race([this.#loop, grace]);
    clearTimeout(timer);
    const waiting = [...this.#resume];
    this.#resume = [];
    for (const list of this.#parked.values()) {
      for (const p of list) {
        clearTimeout(p.timer);
        waiting.push(p.entry);
      }
    }
    this.#parked.clear();
    for (const entry of waiting) this.#handBack(entry);
    await Promise.allSettled([...this.#releasing]);
  }

  /** How many omni entries wait in memory for their media (tests, the admin view). */
  get waitingForMedia(): number {
    let n = this.#resume.length;
    for (const list of this.#parked.values()) n += list.length;
    return n;
  }

  /**
   * Look for work soon: new entries were stored. Under load, commits come thousands of times a
   * second; claims are coalesced to one per `wakeDelayMs`.
   */
  notify(delayMs: number = this.#o.wakeDelayMs ?? 10): void {
    if (this.#notifyTimer !== undefined) return;
    this.#notifyTimer = setTimeout(() => {
      this.#notifyTimer = undefined;
      this.wake();
    }, delayMs);
  }

  /** Look for work now. */
  wake(): void {
    const w = this.#wakeup;
    this.#wakeup = undefined;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    w?.();
  }

  #wakeScheduled = false;
  /**
   * Look for work at the end of this event-loop turn: the attempts that finish in one turn free
   * their slots together, and one claim fills them all (a claim per finished attempt costs a
   * write transaction each).
   */
  #wakeSoon(): void {
    if (this.#wakeScheduled) return;
    this.#wakeScheduled = true;
    setImmediate(() => {
      this.#wakeScheduled = false;
      this.wake();
    });
  }

  async #sleep(ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      this.#wakeup = resolve;
      // without notifications the store is looked at every second; with them, when work is due
      // (a retry's time, a lease running out) or at the latest every IDLE_NOTIFIED_MS
      this.#timer = setTimeout(() => this.wake(), Math.max(0, Math.min(ms, this.#unsubscribe === undefined ? 1000 : IDLE_NOTIFIED_MS)));
    });
  }

  async #run(): Promise<void> {
    const inflight = new Set<Promise<void>>();
    while (this.#running) {
      let free = this.#o.policy.concurrency - this.#active;
      // parked entries whose media settled go first: they are claimed already, and head their lane
      const resumed = free > 0 ? this.#resume.splice(0, free) : [];
      free -= resumed.length;
      let claimed: OutboxEntry[] = [];
      if (free > 0) {
        try {
          claimed = await this.#o.store.claimOutbox(this.#kinds, this.#now(), free, this.#leaseMs);
        } catch (e) {
          this.#o.log.error("outbox claim failed", { error: (e as Error).message });
        }
      }
      claimed = resumed.concat(claimed);
      for (const entry of claimed) {
        this.#active++;
        const p = this.#attempt(entry).finally(() => {
          this.#active--;
          inflight.delete(p);
          this.#wakeSoon();
        });
        inflight.add(p);
      }
      if ((claimed.length === 0 && this.#resume.length === 0) || this.#active >= this.#o.policy.concurrency) {
        const due = await this.#o.store.nextOutboxDue(this.#kinds).catch(() => undefined);
        if (this.#resume.length === 0 || this.#active >= this.#o.policy.concurrency) await this.#sleep(due === undefined ? 1000 : due - this.#now());
      }
    }
    await Promise.allSettled(inflight);
  }

  get #leaseMs(): number {
    return this.#o.leaseMs ?? 60_000;
  }

  /** Keep a claimed omni entry in memory until one of its message's media settles. */
  #park(entry: OutboxEntry, settledBefore: number): void {
    const seq = entry.messageSeq ?? 0;
    if (this.#settledCount !== settledBefore || !this.#running) {
      // a media settled while this entry looked (or the worker is stopping): look again at once
      this.#resume.push(entry);
      this.wake();
      return;
    }
    // hand it back to the store well before its lease runs out (a claim sets updatedAt to its time)
    const handBack = Math.max(0, entry.updatedAt + this.#leaseMs / 2 - this.#now());
    const timer = setTimeout(() => {
      if (this.#unpark(seq, entry)) this.#handBack(entry);
    }, handBack);
    const list = this.#parked.get(seq) ?? [];
    list.push({ entry, timer });
    this.#parked.set(seq, list);
  }

  /** Take a parked entry out of memory; false when it was not parked (any more). */
  #unpark(seq: number, entry: OutboxEntry): boolean {
    const list = this.#parked.get(seq);
    const i = list?.findIndex((p) => p.entry === entry) ?? -1;
    if (list === undefined || i < 0) return false;
    clearTimeout(list[i]?.timer);
    list.splice(i, 1);
    if (list.length === 0) this.#parked.delete(seq);
    return true;
  }

  /**
   * Give a waiting entry back to the store, due at once and without counting an attempt. When the
   * store fails, the entry stays in flight until its lease runs out, then is claimed again.
   */
  #handBack(entry: OutboxEntry): void {
    const p = this.#o.store
      .finishOutbox(entry, { state: "pending", nextAttemptAt: this.#now(), error: "waiting for media", countAttempt: false }, this.#now())
      .then(
        () => this.wake(),
        (e) => this.#o.log.error("outbox hand-back failed", { outbox: entry.id, error: (e as Error).message }),
      )
      .finally(() => this.#releasing.delete(p));
    this.#releasing.add(p);
  }

  /** A media entry of message `seq` settled (stored or given up): its parked omni entry runs again. */
  #mediaSettled(seq: number | null): void {
    this.#settledCount++;
    const list = seq === null ? undefined : this.#parked.get(seq);
    if (list === undefined || seq === null) return;
    this.#parked.delete(seq);
    for (const p of list) {
      clearTimeout(p.timer);
      this.#resume.push(p.entry);
    }
    this.wake();
  }

  async #attempt(entry: OutboxEntry): Promise<void> {
    const started = performance.now();
    try {
      const sender = this.#o.senders?.[entry.kind];
      if (sender !== undefined) {
        await runOutbound(this.#dispatch, entry, sender);
        return;
      }
      const settledBefore = this.#settledCount;
      const stop = keepLease(this.#dispatch, entry);
      let waited: boolean;
      try {
        waited = entry.kind === "media" ? await this.#fetchMedia(entry) : await this.#deliverOmni(entry);
      } finally {
        stop();
      }
      if (waited) {
        this.#park(entry, settledBefore);
        this.#o.onAttempt?.(entry, "wait");
        return;
      }
      await this.#o.store.finishOutbox(entry, { state: "done" }, this.#now());
      this.#o.metrics?.deliveryAttempts.inc({ kind: entry.kind, outcome: "done" });
      this.#o.onAttempt?.(entry, "done");
      if (entry.kind === "media") this.#mediaSettled(entry.messageSeq);
    } catch (e) {
      // when even recording the failure fails (the store), the lease brings the entry back later
      await this.#failed(entry, e).catch((err) => this.#o.log.error("outbox result not recorded", { outbox: entry.id, error: (err as Error).message }));
    } finally {
      this.#o.metrics?.deliverySeconds.observe({ kind: entry.kind }, (performance.now() - started) / 1000);
    }
  }

  async #failed(entry: OutboxEntry, e: unknown): Promise<void> {
    const error = e instanceof BridgeError ? e.message : `internal: ${(e as Error)?.message ?? String(e)}`;
    this.#o.metrics?.deliveryFailures.inc({ kind: entry.kind });
    if (entry.kind === "media") return this.#mediaFailed(entry, e, error);
    const sender = this.#o.senders?.[entry.kind];
    if (sender !== undefined && (await outboundFailed(this.#dispatch, entry, e, error, sender))) return;
    if (entry.attempts >= this.#o.policy.maxAttempts) {
      await this.#o.store.finishOutbox(entry, { state: "dead", error }, this.#now());
      this.#o.metrics?.deliveryAttempts.inc({ kind: entry.kind, outcome: "dead" });
      this.#o.log.warn("delivery dead", { outbox: entry.id, kind: entry.kind, attempts: entry.attempts, error });
      this.#o.onAttempt?.(entry, "dead", error);
      return;
    }
    const delay = backoffDelay(entry.attempts, this.#o.policy);
    await this.#o.store.finishOutbox(entry, { state: "pending", nextAttemptAt: this.#now() + delay, error }, this.#now());
    this.#o.metrics?.deliveryAttempts.inc({ kind: entry.kind, outcome: "retry" });
    this.#o.log.info("delivery retry", { outbox: entry.id, kind: entry.kind, attempts: entry.attempts, delayMs: delay, error });
    this.#o.onAttempt?.(entry, "retry", error);
  }

  /**
   * A media fetch failed: final answers and the deadline mark the media unavailable (with the
   * reason and errcode, for the 全媒体's Tag) and end the entry; anything else is retried with the
   * backoff, the last try at the deadline.
   */
  async #mediaFailed(entry: OutboxEntry, e: unknown, error: string): Promise<void> {
    if (e instanceof MediaGoneError) {
      // the conversation was erased meanwhile (its entries with it): nothing to record
      this.#o.log.info("media dropped: its message was erased", { outbox: entry.id, message: entry.messageSeq });
      this.#mediaSettled(entry.messageSeq);
      return;
    }
    const job = entry.payload as MediaJob;
    const id = mediaId(entry.messageSeq ?? 0, job.index);
    const now = this.#now();
    const deadline = entry.createdAt + (this.#o.policy.mediaDeadlineSec ?? 600) * 1000;
    const final = isFinal(e);
    const errcode = e instanceof WeComApiError && e.errcode !== 0 ? e.errcode : undefined;
    if (e instanceof WeComApiError && e.kind === "configuration") {
      this.#o.metrics?.wecomConfigErrors.inc({ api: e.api, errcode: e.errcode });
      const problem = `${e.api} ${e.errcode}`;
      if (problem !== this.#configProblem) {
        this.#configProblem = problem;
        this.#o.log.warn("media fetch refused: configuration", { api: e.api, errcode: e.errcode, hint: CONFIGURATION_HINTS[e.errcode], error });
      }
    }
    if (final || now >= deadline) {
      // the agents see WeCom's answer; our own failures (a full disk, …) stay in the log
      const why: MediaUnavailable = { reason: final ? "refused" : "deadline", error: e instanceof BridgeError ? error : "internal error (see the gateway's log)" };
      if (errcode !== undefined) why.errcode = errcode;
      await this.#o.media.markUnavailable(entry.tenant, id, entry.messageSeq, why);
      // the entry is finished, not dead: the media row keeps the reason, the 全媒体 is told, and
      // nothing an operator could replay would change WeCom's answer (no alarm, no retention hold)
      await this.#o.store.finishOutbox(entry, { state: "done" }, now);
      this.#o.metrics?.deliveryAttempts.inc({ kind: "media", outcome: "unavailable" });
      this.#o.log.warn("media unavailable", { outbox: entry.id, message: entry.messageSeq, media: id, reason: why.reason, attempts: entry.attempts, error });
      this.#o.onAttempt?.(entry, "done", error);
      this.#mediaSettled(entry.messageSeq);
      return;
    }
    const delay = backoffDelay(entry.attempts, this.#o.policy);
    const next = Math.min(now + delay, deadline);
    await this.#o.store.finishOutbox(entry, { state: "pending", nextAttemptAt: next, error }, now);
    this.#o.metrics?.deliveryAttempts.inc({ kind: "media", outcome: "retry" });
    this.#o.log.info("media retry", { outbox: entry.id, message: entry.messageSeq, media: id, attempts: entry.attempts, delayMs: next - now, error });
    this.#o.onAttempt?.(entry, "retry", error);
  }

  /** Fetch one media into the store, streamed to disk. Returns false (never waits). */
  async #fetchMedia(entry: OutboxEntry): Promise<boolean> {
    const job = entry.payload as MediaJob;
    const seq = entry.messageSeq ?? 0;
    const id = mediaId(seq, job.index);
    const src = job.source;
    const limits = { maxBytes: this.#o.mediaMaxBytes ?? 20 * 1024 * 1024 };
    const save = (d: MediaDownload, body: AsyncIterable<Uint8Array>) =>
      this.#o.media.saveStream(entry.tenant, id, seq, body, { contentType: d.contentType, fileName: d.fileName ?? job.ref.fileName ?? id });
    if (src.kind === "wecom" && job.ref.mediaId) {
      const creds = this.#o.appCredentials(src.app);
      if (!creds) throw new BridgeError("config_missing", `app ${src.app} is no longer configured`);
      await this.#o.wecom.getMedia(creds, job.ref.mediaId, limits, (d) => save(d, d.body));
    } else if (src.kind === "bot" && job.ref.url) {
      // a long-connection file has its own key; a webhook bot's files use its EncodingAESKey
      const key = job.ref.aesKey !== undefined ? job.ref.aesKey.replace(/=+$/, "") : this.#o.botKey(src.bot);
      if (!key) throw new BridgeError("config_missing", `bot ${src.bot} is no longer configured (or has no encodingAESKey)`);
      const url = job.ref.url;
      await this.#o.wecom.download(url, limits, (d) => save(d, job.ref.encrypted ? decryptBotMediaStream(key, d.body) : d.body));
    } else {
      await this.#o.media.markUnavailable(entry.tenant, id, seq, { reason: "none" });
      return false;
    }
    this.#configProblem = undefined;
    this.#o.log.info("media stored", { message: seq, media: id });
    return false;
  }

  /** Deliver a message (or a notice) to the 全媒体; returns true when it must wait for its media. */
  async #deliverOmni(entry: OutboxEntry): Promise<boolean> {
    const omni = typeof this.#o.omni === "function" ? this.#o.omni(entry.tenant) : this.#o.omni;
    const notice = (entry.payload as OmniNoticeJob | null)?.notice;
    if (notice !== undefined) {
      await omni.send(notice);
      this.#o.log.info("notice delivered to 全媒体", { outbox: entry.id, conversation: entry.conversationId, content: notice.Content });
      return false;
    }
    const prebuilt = (entry.payload as OmniJob | null)?.body;
    if (prebuilt !== undefined) {
      await omni.send(prebuilt);
      this.#o.log.info("delivered to 全媒体", { message: entry.messageSeq, conversation: entry.conversationId, msgType: prebuilt.MsgType });
      return false;
    }
    const seq = entry.messageSeq;
    if (seq === null) throw new BridgeError("outbox_invalid", "omni entry without a message");
    const stored = await this.#o.store.getMessage(seq);
    if (!stored) throw new BridgeError("outbox_invalid", `message ${seq} not found`);
    const count = mediaRefs(stored.message.content).length;
    const media: MediaResolution[] = [];
    for (let i = 0; i < count; i++) {
      const row = await this.#o.store.getMedia(entry.tenant, mediaId(seq, i));
      if (row === undefined) return true; // its media entry has not finished yet
      const why = unavailableOf(row);
      media.push(why ? { unavailable: why } : { url: this.#o.media.link(entry.tenant, row.id), file: { name: row.fileName, contentType: row.contentType, size: row.size } });
    }
    const body = toOmniBody(stored.message, (i) => media[i]);
    await omni.send(body);
    this.#o.log.info("delivered to 全媒体", { message: seq, conversation: stored.conversationId, msgType: body.MsgType });
    return false;
  }
}
