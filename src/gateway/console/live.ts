/**
 * The console's Live feed: messages crossing the bridge in both directions, as this process sees
 * them (a customer's message stored, then delivered to the 全媒体; an agent's answer queued, then
 * sent to WeCom or refused), kept as the last rows in memory and pushed to the Live page's
 * Server-Sent Events. It also counts what it sees, for the Health page's throughput.
 *
 * Everything here is bounded: {@link LIVE_ROWS} rows, {@link LIVE_LISTENERS} listeners; a row's
 * summary is cut to 200 characters. Each replica has its own feed (it shows what this replica did).
 * Rows are kept only while a Live page is open and for {@link LIVE_KEEP_MS} after the last one
 * closed: a gateway nobody watches only counts (rows that live a few hundred messages long are
 * the costliest kind of garbage for the collector: measured, they cost the ingest path a fifth of
 * its peak memory when kept all the time).
 * @module
 */
import type { Channel, UnifiedMessage } from "../../model.js";
import type { OutboxEntry, OutboxInsert } from "../../store/types.js";
import type { ConsoleChannel, LiveEvent } from "./types.js";

/** Rows kept for a Live page that opens (and for the state changes of rows still shown). */
export const LIVE_ROWS = 500;
/** Live pages served at once by one process. */
export const LIVE_LISTENERS = 32;
/** How long rows are still kept after the last Live page closed (a page that reloads finds them), ms. */
export const LIVE_KEEP_MS = 10 * 60_000;
/** Longest summary, characters. */
const SUMMARY_MAX = 200;

/** An attempt's outcome, as the outbox worker reports it. */
export type AttemptOutcome = "done" | "retry" | "dead" | "wait" | "refused" | "later";

/** Counts of what the feed saw since the process started (the Health page's rates). */
export interface LiveCounts {
  stored: number;
  delivered: number;
  sent: number;
}

const OUT_CHANNEL: Record<string, ConsoleChannel> = { kf_send: "kf", app_send: "app", bot_reply: "bot" };

/** The console channel of a stored message's channel (`omni` is none of the Live page's: `archive`). */
export function consoleChannel(channel: Channel): ConsoleChannel {
  return channel === "app" || channel === "kf" || channel === "bot" ? channel : "archive";
}

/** The console channel of a conversation id (`kf:…`, `app:…`, `bot:…`, `archive:…`). */
export function channelOfConversation(conversationId: string): ConsoleChannel {
  const prefix = conversationId.slice(0, conversationId.indexOf(":"));
  return prefix === "kf" || prefix === "app" || prefix === "bot" ? prefix : "archive";
}

const cut = (s: string): string => (s.length > SUMMARY_MAX ? `${s.slice(0, SUMMARY_MAX - 1)}…` : s);

/** One line of a message's content: its text, else its type (`[image]`, `[event enter_session]`). */
export function summarize(message: UnifiedMessage): string {
  const c = message.content;
  if (c.type === "text") return cut(c.text);
  if (c.type === "event") return `[event ${"eventName" in c.event ? c.event.eventName : c.event.name}]`;
  return `[${c.type}]`;
}

/** One line of an agent's answer (an outbound entry's payload). */
export function summarizeJob(payload: unknown): string | undefined {
  if (typeof payload !== "object" || payload === null) return undefined;
  const p = payload as { op?: unknown; body?: { MsgType?: unknown; Content?: unknown }; text?: unknown; what?: unknown };
  if (p.op === "message" && p.body !== undefined) {
    const type = String(p.body.MsgType ?? "");
    return type === "text" || type === "markdown" ? cut(String(p.body.Content ?? "")) : `[${type}]`;
  }
  if (p.op === "on_event") return cut(`[${String(p.what)}] ${String(p.text ?? "")}`);
  return undefined; // session operations (service_state/trans) are not messages
}

/** The feed. */
export class LiveFeed {
  readonly #rows = new Map<string, LiveEvent>();
  readonly #listeners = new Set<(e: LiveEvent) => void>();
  readonly #now: () => number;
  /** Until when rows are kept: +Infinity while a page listens. */
  #watchedUntil = 0;
  /** What was seen, for rates. */
  readonly counts: LiveCounts = { stored: 0, delivered: 0, sent: 0 };

  /** @param now the gateway's clock */
  constructor(now: () => number) {
    this.#now = now;
  }

  /** A customer's message was stored (sequence number `seq`). */
  stored(tenant: string, message: UnifiedMessage, seq: number | undefined): void {
    this.counts.stored++;
    if (seq === undefined || !this.#watched()) return;
    this.#put({
      key: `in:${tenant}:${seq}`,
      time: this.#now(),
      channel: consoleChannel(message.channel),
      direction: "in",
      tenant,
      conversationId: message.conversationId,
      state: "stored",
      latencyMs: null,
      summary: summarize(message),
      error: undefined,
    });
  }

  /** An agent's answer was accepted from the 全媒体 and queued (its outbox ids). */
  queued(tenant: string, ids: number[], entries: OutboxInsert[]): void {
    if (!this.#watched()) return;
    entries.forEach((entry, i) => {
      const id = ids[i];
      const channel = OUT_CHANNEL[entry.kind];
      const summary = summarizeJob(entry.payload);
      if (id === undefined || channel === undefined || summary === undefined) return;
      this.#put({ key: `out:${id}`, time: this.#now(), channel, direction: "out", tenant, conversationId: entry.conversationId ?? "", state: "queued", latencyMs: null, summary, error: undefined });
    });
  }

  /** The outbox worker finished an attempt. */
  attempt(entry: OutboxEntry, outcome: AttemptOutcome, error?: string): void {
    if (outcome === "wait" || outcome === "later") return;
    if (entry.kind === "omni") {
      if (entry.messageSeq === null) return; // a notice to the 全媒体, not a customer's message
      if (outcome === "done") this.counts.delivered++;
      // only a row this feed shows changes (the hot path: no allocation for anything else)
      const row = this.#rows.get(`in:${entry.tenant}:${entry.messageSeq}`);
      if (row !== undefined) this.#update(row, outcome === "done" ? "delivered" : outcome === "retry" ? "retrying" : "dead", row.time, error);
      return;
    }
    const channel = OUT_CHANNEL[entry.kind];
    if (channel === undefined) return;
    if (outcome === "done") this.counts.sent++;
    const state = outcome === "done" ? "sent" : outcome === "retry" ? "retrying" : outcome === "refused" ? "refused" : "dead";
    const row = this.#rows.get(`out:${entry.id}`);
    if (row !== undefined) {
      this.#update(row, state, entry.createdAt, error);
      return;
    }
    // queued on another replica (or before a restart): shown from here on
    if (!this.#watched()) return;
    const summary = summarizeJob(entry.payload);
    if (summary === undefined) return;
    const now = this.#now();
    this.#put({ key: `out:${entry.id}`, time: now, channel, direction: "out", tenant: entry.tenant, conversationId: entry.conversationId ?? "", state, latencyMs: null, summary, error: undefined });
    this.#update(this.#rows.get(`out:${entry.id}`) as LiveEvent, state, entry.createdAt, error);
  }

  /** A row reaches a new state (changed in place: rows are serialized as they are sent). */
  #update(row: LiveEvent, state: LiveEvent["state"], since: number, error: string | undefined): void {
    const now = this.#now();
    if (state === "delivered" || state === "sent") row.latencyMs = Math.max(0, now - since);
    row.state = state;
    row.time = now;
    row.error = error === undefined ? undefined : cut(error);
    for (const l of this.#listeners) l(row);
  }

  /** True while rows are kept (a page listens, or closed less than {@link LIVE_KEEP_MS} ago); forgets them after. */
  #watched(): boolean {
    if (this.#listeners.size > 0 || this.#now() < this.#watchedUntil) return true;
    if (this.#rows.size > 0) this.#rows.clear();
    return false;
  }

  #put(row: LiveEvent): void {
    this.#rows.set(row.key, row);
    if (this.#rows.size > LIVE_ROWS) this.#rows.delete(this.#rows.keys().next().value as string);
    for (const l of this.#listeners) l(row);
  }

  /**
   * Rows of messages stored while nobody watched (read back from the store when a Live page
   * opens), oldest first: kept like the others, without telling anyone, and only when the feed
   * has none (rows it saw itself are better).
   */
  seed(rows: LiveEvent[]): void {
    if (this.#rows.size > 0) return;
    for (const row of rows.slice(-LIVE_ROWS)) this.#rows.set(row.key, row);
  }

  /** The rows kept, oldest first by when they appeared (a Live page that opens shows them). */
  recent(): LiveEvent[] {
    return [...this.#rows.values()];
  }

  /** How many are listening. */
  get listeners(): number {
    return this.#listeners.size;
  }

  /** Be told of each row as it changes; returns the function that stops it, or undefined when {@link LIVE_LISTENERS} are listening already. */
  subscribe(listener: (e: LiveEvent) => void): (() => void) | undefined {
    if (this.#listeners.size >= LIVE_LISTENERS) return undefined;
    this.#listeners.add(listener);
    this.#watchedUntil = Number.POSITIVE_INFINITY;
    return () => {
      this.#listeners.delete(listener);
      if (this.#listeners.size === 0) this.#watchedUntil = this.#now() + LIVE_KEEP_MS;
    };
  }
}
