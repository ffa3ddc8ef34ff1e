/**
 * The outbox worker: claims due entries, runs them, and records the result. `media` entries fetch
 * a message's media into the media store; `omni` entries deliver a message to the 全媒体, after
 * its media is in (or known to be unavailable). Per conversation, entries run one at a time and in
 * order. Failures retry with exponential backoff and jitter, and become dead letters after
 * `maxAttempts` (visible in the admin API; `wecom-bridge replay` puts them back).
 * @module
 */
import type { OmniClient } from "../clients/omni.js";
import type { WeComClient, WeComCredentials } from "../clients/wecom.js";
import { BridgeError } from "../errors.js";
import type { Logger } from "../log.js";
import type { MediaRef } from "../model.js";
import type { OutboxEntry, OutboxKind, Store } from "../store/types.js";
import { decryptBotMedia } from "../wecom/crypto.js";
import { type MediaStore, mediaId } from "./media.js";
import type { Metrics } from "./metrics.js";
import { mediaRefs, toOmniBody } from "./omni-map.js";

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
}

/** Backoff and limits. */
export interface DeliveryPolicy {
  maxAttempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
  concurrency: number;
}

/** Options of {@link DeliveryWorker}. */
export interface DeliveryWorkerOptions {
  store: Store;
  omni: OmniClient;
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
  /** Called after each finished attempt (tests, the sandbox's live log). */
  onAttempt?: (entry: OutboxEntry, outcome: "done" | "retry" | "dead" | "wait", error?: string) => void;
}

/** Delay before attempt `attempts + 1`: exponential, capped, with jitter in [50%, 100%]. */
export function backoffDelay(attempts: number, policy: Pick<DeliveryPolicy, "baseDelayMs" | "maxDelayMs">, random = Math.random): number {
  const exp = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, attempts - 1));
  return Math.round(exp * (0.5 + random() * 0.5));
}

const KINDS: OutboxKind[] = ["media", "omni"];

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

  /** @param options what to deliver with */
  constructor(options: DeliveryWorkerOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  /** Start the loop. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    this.#loop = this.#run();
  }

  /** Stop claiming; waits for attempts in flight. */
  async stop(): Promise<void> {
    this.#running = false;
    if (this.#notifyTimer) clearTimeout(this.#notifyTimer);
    this.#notifyTimer = undefined;
    this.wake();
    await this.#loop;
  }

  /**
   * Look for work soon: new entries were stored. Under load, commits come thousands of times a
   * second; claims are coalesced to one per `wakeDelayMs`.
   */
  notify(): void {
    if (this.#notifyTimer !== undefined) return;
    this.#notifyTimer = setTimeout(() => {
      this.#notifyTimer = undefined;
      this.wake();
    }, this.#o.wakeDelayMs ?? 10);
  }

  /** Look for work now. */
  wake(): void {
    const w = this.#wakeup;
    this.#wakeup = undefined;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    w?.();
  }

  async #sleep(ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      this.#wakeup = resolve;
      this.#timer = setTimeout(() => this.wake(), Math.max(0, Math.min(ms, 1000)));
    });
  }

  async #run(): Promise<void> {
    const inflight = new Set<Promise<void>>();
    while (this.#running) {
      const free = this.#o.policy.concurrency - this.#active;
      let claimed: OutboxEntry[] = [];
      if (free > 0) {
        try {
          claimed = await this.#o.store.claimOutbox(KINDS, this.#now(), free, this.#o.leaseMs ?? 60_000);
        } catch (e) {
          this.#o.log.error("outbox claim failed", { error: (e as Error).message });
        }
      }
      for (const entry of claimed) {
        this.#active++;
        const p = this.#attempt(entry).finally(() => {
          this.#active--;
          inflight.delete(p);
          this.wake();
        });
        inflight.add(p);
      }
      if (claimed.length === 0 || this.#active >= this.#o.policy.concurrency) {
        const due = await this.#o.store.nextOutboxDue(KINDS).catch(() => undefined);
        await this.#sleep(due === undefined ? 1000 : due - this.#now());
      }
    }
    await Promise.allSettled(inflight);
  }

  async #attempt(entry: OutboxEntry): Promise<void> {
    const started = performance.now();
    try {
      const waited = entry.kind === "media" ? await this.#fetchMedia(entry) : await this.#deliverOmni(entry);
      if (waited) {
        await this.#o.store.finishOutbox(entry.id, { state: "pending", nextAttemptAt: this.#now() + 200, error: "waiting for media", countAttempt: false }, this.#now());
        this.#o.onAttempt?.(entry, "wait");
        return;
      }
      await this.#o.store.finishOutbox(entry.id, { state: "done" }, this.#now());
      this.#o.metrics?.deliveryAttempts.inc({ kind: entry.kind, outcome: "done" });
      this.#o.onAttempt?.(entry, "done");
    } catch (e) {
      await this.#failed(entry, e);
    } finally {
      this.#o.metrics?.deliverySeconds.observe({ kind: entry.kind }, (performance.now() - started) / 1000);
    }
  }

  async #failed(entry: OutboxEntry, e: unknown): Promise<void> {
    const error = e instanceof BridgeError ? e.message : `internal: ${(e as Error)?.message ?? String(e)}`;
    const permanent = e instanceof BridgeError && "retryable" in e && (e as { retryable: boolean }).retryable === false && entry.kind === "media";
    this.#o.metrics?.deliveryFailures.inc({ kind: entry.kind });
    const dead = permanent || entry.attempts >= this.#o.policy.maxAttempts;
    if (dead) {
      if (entry.kind === "media") {
        const job = entry.payload as MediaJob;
        await this.#o.media.markUnavailable(entry.tenant, mediaId(entry.messageSeq ?? 0, job.index), entry.messageSeq);
      }
      await this.#o.store.finishOutbox(entry.id, { state: "dead", error }, this.#now());
      this.#o.metrics?.deliveryAttempts.inc({ kind: entry.kind, outcome: "dead" });
      this.#o.log.warn("delivery dead", { outbox: entry.id, kind: entry.kind, attempts: entry.attempts, error });
      this.#o.onAttempt?.(entry, "dead", error);
      return;
    }
    const delay = backoffDelay(entry.attempts, this.#o.policy);
    await this.#o.store.finishOutbox(entry.id, { state: "pending", nextAttemptAt: this.#now() + delay, error }, this.#now());
    this.#o.metrics?.deliveryAttempts.inc({ kind: entry.kind, outcome: "retry" });
    this.#o.log.info("delivery retry", { outbox: entry.id, kind: entry.kind, attempts: entry.attempts, delayMs: delay, error });
    this.#o.onAttempt?.(entry, "retry", error);
  }

  /** Fetch one media into the store. Returns false (never waits). */
  async #fetchMedia(entry: OutboxEntry): Promise<boolean> {
    const job = entry.payload as MediaJob;
    const seq = entry.messageSeq ?? 0;
    const id = mediaId(seq, job.index);
    const src = job.source;
    if (src.kind === "wecom" && job.ref.mediaId) {
      const creds = this.#o.appCredentials(src.app);
      if (!creds) throw new BridgeError("config_missing", `app ${src.app} is no longer configured`);
      const file = await this.#o.wecom.getMedia(creds, job.ref.mediaId);
      await this.#o.media.save(entry.tenant, id, seq, file.bytes, file.contentType, file.fileName ?? job.ref.fileName ?? id);
    } else if (src.kind === "bot" && job.ref.url) {
      const key = this.#o.botKey(src.bot);
      if (!key) throw new BridgeError("config_missing", `bot ${src.bot} is no longer configured`);
      const file = await this.#o.wecom.download(job.ref.url);
      const bytes = job.ref.encrypted ? decryptBotMedia(key, file.bytes) : file.bytes;
      await this.#o.media.save(entry.tenant, id, seq, bytes, file.contentType === "application/octet-stream" ? sniff(bytes) : file.contentType, file.fileName ?? id);
    } else {
      await this.#o.media.markUnavailable(entry.tenant, id, seq);
    }
    this.#o.log.info("media stored", { message: seq, media: id });
    return false;
  }

  /** Deliver a message to the 全媒体; returns true when it must wait for its media. */
  async #deliverOmni(entry: OutboxEntry): Promise<boolean> {
    const seq = entry.messageSeq;
    if (seq === null) throw new BridgeError("outbox_invalid", "omni entry without a message");
    const stored = await this.#o.store.getMessage(seq);
    if (!stored) throw new BridgeError("outbox_invalid", `message ${seq} not found`);
    const count = mediaRefs(stored.message.content).length;
    const urls: (string | undefined)[] = [];
    for (let i = 0; i < count; i++) {
      const row = await this.#o.store.getMedia(entry.tenant, mediaId(seq, i));
      if (row === undefined) return true; // its media entry has not finished yet
      urls.push(row.size >= 0 ? this.#o.media.link(entry.tenant, row.id) : undefined);
    }
    const body = toOmniBody(stored.message, (i) => urls[i]);
    await this.#o.omni.send(body);
    this.#o.log.info("delivered to 全媒体", { message: seq, conversation: stored.conversationId, msgType: body.MsgType });
    return false;
  }
}

function sniff(b: Uint8Array): string {
  if (b[0] === 0x89 && b[1] === 0x50) return "image/png";
  if (b[0] === 0xff && b[1] === 0xd8) return "image/jpeg";
  if (b[0] === 0x47 && b[1] === 0x49) return "image/gif";
  return "application/octet-stream";
}
