/**
 * AI bots in long-connection mode (`wecom.bots[].mode: "websocket"`): one connection per bot
 * across the replicas, and what comes over it.
 *
 * WeCom keeps one connection per bot (a new one kicks the old with `disconnected_event`), so only
 * the replica holding the bot's lease (`aibotws:{botId}`, {@link BOT_WS_LEASE_MS}) connects;
 * the others try for the lease every {@link BOT_WS_STANDBY_MS} and take over within 30 s when the
 * holder dies. The holder keeps renewing; when it cannot (the store is gone, another replica took
 * the lease), it closes its connection.
 *
 * `aibot_msg_callback` goes through the same ledger, store and delivery as a webhook callback
 * (same model and addresses; a callback WeCom repeats has the same msgid and is stored once), and
 * opens the message's stream on the callback's req_id, which the pusher (`outbound/bot-ws.ts`)
 * answers at once with the placeholder. `aibot_event_callback` is stored as an event message;
 * `enter_chat` is answered with `wecom.bots[].welcomeText` (`aibot_respond_welcome_msg`, within
 * WeCom's 5 s).
 * @module
 */
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { AibotWsClient, AibotWsNotOpenError, type AibotWsOptions, type AibotInbound, type AibotWsState } from "../clients/aibot-ws.js";
import type { BotConfig } from "../config.js";
import type { Leases } from "../store/leases.js";
import { decodeBotCallback } from "../wecom/bot/decode.js";
import { botStreamId } from "./endpoints/bot.js";
import type { EndpointContext } from "./endpoints/http.js";
import { handoffEntries } from "./handoff.js";
import { markBotWsWork, openBotStream } from "./outbound/bot.js";
import { type BotWsLink, BotWsPusher } from "./outbound/bot-ws.js";
import { prepareAgentMediaWith, type WeComMediaType } from "./outbound/media.js";
import type { OutboundContext } from "./outbound/types.js";
import { mediaRefs } from "./omni-map.js";
import { messageItem } from "./pipeline.js";

/** How long a bot's lease lasts without renewal, ms: another replica connects within this after a holder dies. */
export const BOT_WS_LEASE_MS = 20_000;
/** How often the holder renews its lease, ms. */
const RENEW_MS = 5_000;
/** A renewal that failed keeps the connection until this long before the lease runs out, ms. */
const LEASE_MARGIN_MS = 2_000;
/** A holder whose connection stays not open this long hands the bot over, ms. */
const STUCK_MS = 120_000;
/** How long a callback's storing is retried while the store fails, ms (WeCom does not send it again). */
const INBOUND_RETRY_MS = 5 * 60_000;
/** How long a stop waits for the callbacks being stored, ms. */
const STOP_CALLBACKS_MS = 3_000;
/** Most conversations with callbacks being handled at once. */
const MAX_CHAINS = 10_000;
/** How often a replica without the lease tries to take it, ms. */
export const BOT_WS_STANDBY_MS = 5_000;

/** What a replica reports of one long-connection bot (`/readyz` details, `/metrics`). */
export interface BotWsStatus {
  bot: string;
  /** This replica holds the bot's lease (and so its connection). */
  holder: boolean;
  /** The connection's state here (`standby` without the lease). */
  state: AibotWsState | "standby";
  reconnects: number;
  kicks: number;
}

/** Timers of the long connection, for tests and tuning (defaults: WeCom's and the module's). */
export interface BotWsTiming {
  pingIntervalMs?: number;
  ackTimeoutMs?: number;
  backoffMinMs?: number;
  backoffMaxMs?: number;
  /** The pusher's tick, ms. */
  tickMs?: number;
  /** The lease's length and the standby replicas' tries, ms. */
  leaseMs?: number;
  standbyMs?: number;
}

/** Options of {@link BotWsConnector}. */
export interface BotWsConnectorOptions {
  /** The bot's corp, as its endpoints and senders see it (store, ingestor, log, metrics, clock, config). */
  ctx: EndpointContext & OutboundContext;
  bot: BotConfig;
  leases: Leases;
  /** Build the client (tests: short timers). */
  client?: (o: AibotWsOptions) => AibotWsClient;
  /** Timers (tests). */
  timing?: BotWsTiming;
  /** Count a WeCom answer over the connection. */
  onResult?(api: string, errcode: number): void;
}

/** One long-connection bot on this replica: its lease, its connection when held, its pusher. */
export class BotWsConnector {
  readonly #o: BotWsConnectorOptions;
  readonly pusher: BotWsPusher;
  #client: AibotWsClient | undefined;
  #timer: NodeJS.Timeout | undefined;
  #stopped = true;
  #reconnects = 0;
  #kicks = 0;
  #turn: Promise<void> | undefined;
  /** Until when the lease is ours (the last successful renewal plus its length). */
  #heldUntil = 0;
  /** Since when this holder's connection has not been open (not kicked). */
  #notOpenSince: number | undefined;
  /** No try for the lease before this (after handing the bot to another replica). */
  #pausedUntil = 0;
  /** Random per client: connection ids never repeat within a process (generations restart at 1). */
  #clientNonce = "";
  /** Callbacks being handled, one chain per conversation (in order; their store writes retried). */
  readonly #chains = new Map<string, Promise<void>>();
  /** The upload under way (one at a time). */
  #uploads: Promise<void> = Promise.resolve();
  /** Retry waits to end at a stop. */
  readonly #wakeOnStop = new Set<() => void>();

  /** @param o the corp context, the bot, the leases */
  constructor(o: BotWsConnectorOptions) {
    this.#o = o;
    this.pusher = new BotWsPusher({
      store: o.ctx.store,
      tenant: o.ctx.tenant,
      bot: o.bot,
      link: () => this.#link(),
      log: o.ctx.log,
      now: () => o.ctx.now(),
      ...(o.timing?.tickMs !== undefined ? { tickMs: o.timing.tickMs } : {}),
      ...(o.onResult !== undefined ? { onResult: o.onResult } : {}),
      media: (type, url) => this.#media(type, url),
    });
  }

  /** An agent's file, downloaded and uploaded over the connection (its media_id kept 3 days per bot). */
  async #media(type: WeComMediaType, url: string): Promise<{ type: WeComMediaType; mediaId: string }> {
    const { ctx, bot } = this.#o;
    const m = await prepareAgentMediaWith(ctx, type, url, {
      tenant: ctx.tenant,
      cachePrefix: `aibot:${bot.botId}:`,
      // one upload at a time per bot: chunks of several would crowd pings and stream frames out
      upload: (file) => {
        const run = this.#uploads.then(async () => {
          const c = this.#client;
          if (c === undefined) throw new AibotWsNotOpenError("aibot_upload_media_init", "stopped");
          const r = await c.uploadMedia(file.type, file.fileName, await readFile(file.path));
          return { mediaId: r.mediaId, createdAt: r.createdAt };
        });
        this.#uploads = run.then(
          () => undefined,
          () => undefined,
        );
        return run;
      },
    });
    return { type: m.type, mediaId: m.mediaId };
  }

  get #leaseMs(): number {
    return this.#o.timing?.leaseMs ?? BOT_WS_LEASE_MS;
  }

  /** The lease's name. */
  get #lease(): string {
    return `aibotws:${this.#o.bot.botId}`;
  }

  /** Start: take the lease when free and connect; keep trying while another replica holds it. */
  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#schedule(0);
  }

  /** Stop: close the connection, release the lease (another replica connects at its next try). */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#turn;
    for (const wake of [...this.#wakeOnStop]) wake();
    // callbacks already queued get their last try, within a few seconds (the SIGTERM grace is 10 s)
    await Promise.race([Promise.allSettled([...this.#chains.values()]), new Promise((r) => setTimeout(r, STOP_CALLBACKS_MS).unref?.())]);
    await this.#disconnect();
    await this.#o.leases.release(this.#o.ctx.tenant, this.#lease).catch(() => undefined);
  }

  /** What this replica knows of the bot. */
  status(): BotWsStatus {
    const c = this.#client;
    return {
      bot: this.#o.bot.name,
      holder: c !== undefined,
      state: c?.state ?? "standby",
      reconnects: this.#reconnects + (c?.counters.reconnects ?? 0),
      kicks: this.#kicks + (c?.counters.kicks ?? 0),
    };
  }

  /** Something to push for this bot: push now when this replica holds it. */
  wake(): void {
    if (this.#client !== undefined) this.pusher.wake();
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.#turn = this.#leaseTurn().finally(() => {
        this.#turn = undefined;
        this.#schedule(this.#client !== undefined ? Math.min(RENEW_MS, this.#leaseMs / 4) : (this.#o.timing?.standbyMs ?? BOT_WS_STANDBY_MS));
      });
    }, ms);
    this.#timer.unref?.();
  }

  /** Take or renew the lease; connect when it became ours, disconnect when it is lost. */
  async #leaseTurn(): Promise<void> {
    const now = this.#o.ctx.now();
    if (now < this.#pausedUntil) return;
    let mine: boolean | undefined;
    try {
      mine = await this.#o.leases.acquire(this.#o.ctx.tenant, this.#lease, this.#leaseMs);
      if (mine) this.#heldUntil = now + this.#leaseMs;
    } catch (e) {
      // the store did not answer: the lease is still ours until it runs out (then another may take it)
      this.#o.ctx.log.warn("bot lease could not be renewed", { bot: this.#o.bot.name, error: (e as Error).message, heldForMs: Math.max(0, this.#heldUntil - now) });
      mine = this.#client !== undefined && now < this.#heldUntil - LEASE_MARGIN_MS;
    }
    if (this.#stopped) return;
    if (mine && this.#client === undefined) this.#connect();
    else if (!mine && this.#client !== undefined) {
      this.#o.ctx.log.warn("bot lease lost: closing its connection (another replica may hold it)", { bot: this.#o.bot.name });
      await this.#disconnect();
    } else if (mine && this.#client !== undefined) await this.#handBackIfStuck(now);
  }

  /**
   * A holder that cannot open its connection for {@link STUCK_MS} (WeCom unreachable from here, a
   * refused secret) hands the bot to another replica for one lease period, unless it was kicked
   * (then it waits on purpose).
   */
  async #handBackIfStuck(now: number): Promise<void> {
    const state = this.#client?.state;
    if (state === "open" || state === "kicked") {
      this.#notOpenSince = undefined;
      return;
    }
    this.#notOpenSince ??= now;
    if (now - this.#notOpenSince < STUCK_MS) return;
    this.#o.ctx.log.warn("bot connection not open for minutes: handing the bot to another replica", { bot: this.#o.bot.name, state });
    this.#notOpenSince = undefined;
    await this.#disconnect();
    await this.#o.leases.release(this.#o.ctx.tenant, this.#lease).catch(() => undefined);
    this.#pausedUntil = now + this.#leaseMs + (this.#o.timing?.standbyMs ?? BOT_WS_STANDBY_MS);
  }

  #connect(): void {
    const bot = this.#o.bot;
    const opts: AibotWsOptions = {
      url: bot.wsUrl,
      botId: bot.botId,
      secret: bot.secret ?? "",
      kickedQuietMs: bot.kickedQuietSec * 1000,
      log: this.#o.ctx.log,
      onInbound: (f) => this.#inbound(f),
      onState: (state, detail) => {
        if (state === "open") this.pusher.wake();
        if (state === "kicked") {
          this.#o.ctx.log.warn("bot taken over by another connection: two deployments may share this bot", { bot: bot.name, quietSec: bot.kickedQuietSec, reason: detail.reason });
        }
      },
    };
    const t = this.#o.timing ?? {};
    for (const k of ["pingIntervalMs", "ackTimeoutMs", "backoffMinMs", "backoffMaxMs"] as const) if (t[k] !== undefined) opts[k] = t[k];
    this.#clientNonce = randomBytes(4).toString("hex");
    this.#notOpenSince = undefined;
    this.#client = this.#o.client !== undefined ? this.#o.client(opts) : new AibotWsClient(opts);
    this.#client.start();
    this.pusher.start();
    this.#o.ctx.log.info("bot long connection: this replica holds the bot", { bot: bot.name });
  }

  async #disconnect(): Promise<void> {
    const c = this.#client;
    if (c === undefined) return;
    this.#client = undefined;
    this.#notOpenSince = undefined;
    this.#reconnects += c.counters.reconnects;
    this.#kicks += c.counters.kicks;
    // the socket first: what the pusher waits for (acks, an upload) then ends at once
    await c.stop();
    await this.pusher.stop();
  }

  /** The connection, when open: what the pusher sends through. */
  #link(): BotWsLink | undefined {
    const c = this.#client;
    if (c === undefined || c.state !== "open") return undefined;
    const generation = c.generation;
    return {
      conn: this.#connId(generation),
      respond: (reqId, cmd, body) => c.respond(reqId, cmd, body, generation),
      send: (cmd, body) => c.send(cmd, body),
    };
  }

  /** The id of a connection of this process: its req_ids are valid on it only. */
  #connId(generation: number): string {
    return `${this.#o.leases.holder}:${this.#clientNonce}:${generation}`;
  }

  /**
   * A callback frame (never blocks the reader: the work runs on its own). It is decoded at once (a
   * malformed one is logged and dropped: trying again cannot help), `enter_chat` is welcomed at
   * once (WeCom's 5 s), then the store work runs: a conversation's callbacks in order, each retried
   * while the store fails (WeCom does not send a long-connection callback again), up to
   * {@link INBOUND_RETRY_MS}.
   */
  #inbound(f: AibotInbound): void {
    const { ctx, bot } = this.#o;
    if (f.cmd !== "aibot_event_callback" && f.cmd !== "aibot_msg_callback") {
      ctx.log.info("bot long connection: frame ignored", { bot: bot.name, cmd: f.cmd.slice(0, 64) });
      return;
    }
    let msg: ReturnType<typeof decodeBotCallback>;
    try {
      msg = decodeBotCallback(f.body, { receivedAt: ctx.now() });
    } catch (e) {
      ctx.metrics.callbacks.inc({ channel: "bot", outcome: "malformed" });
      ctx.log.warn("bot callback over the long connection could not be decoded: dropped", { bot: bot.name, cmd: f.cmd, error: (e as Error).message });
      return;
    }
    if (msg.content.type === "event" && msg.content.event.name === "enter_chat") this.#welcome(f);
    const key = msg.conversationId;
    if (!this.#chains.has(key) && this.#chains.size >= MAX_CHAINS) {
      ctx.log.error("bot callback dropped: too many conversations waiting for the store", { bot: bot.name, msgid: msg.id.slice(0, 64) });
      return;
    }
    const run = (this.#chains.get(key) ?? Promise.resolve()).then(() => this.#withRetry(f, msg.id, () => this.#store(f, msg)));
    this.#chains.set(key, run);
    void run.finally(() => {
      if (this.#chains.get(key) === run) this.#chains.delete(key);
    });
  }

  async #withRetry(f: AibotInbound, msgid: string, handle: () => Promise<void>): Promise<void> {
    const deadline = this.#o.ctx.now() + INBOUND_RETRY_MS;
    for (let attempt = 0; ; attempt++) {
      try {
        await handle();
        return;
      } catch (e) {
        if (this.#stopped || this.#o.ctx.now() >= deadline) {
          this.#o.ctx.log.error("bot callback over the long connection could not be stored: it is lost", { bot: this.#o.bot.name, cmd: f.cmd, msgid: msgid.slice(0, 64), error: (e as Error).message });
          return;
        }
        this.#o.ctx.log.warn("bot callback could not be stored yet; trying again", { bot: this.#o.bot.name, cmd: f.cmd, msgid: msgid.slice(0, 64), attempt, error: (e as Error).message });
        // a stop ends the wait at once (the next failure then gives up)
        await new Promise<void>((r) => {
          const wake = () => {
            clearTimeout(t);
            this.#wakeOnStop.delete(wake);
            r();
          };
          const t = setTimeout(wake, Math.min(30_000, 250 * 2 ** Math.min(attempt, 7)));
          this.#wakeOnStop.add(wake);
        });
      }
    }
  }

  /** Store a callback (a message also opens its stream and gets its placeholder). */
  async #store(f: AibotInbound, msg: ReturnType<typeof decodeBotCallback>): Promise<void> {
    const { ctx, bot } = this.#o;
    // a long-connection file is encrypted with its own key; one without a key is plain
    for (const ref of mediaRefs(msg.content)) if (ref.aesKey === undefined) ref.encrypted = false;
    const r = await ctx.ingestor.submit(messageItem(ctx.tenant, msg, { kind: "bot", bot: bot.name }, (m) => ({ entries: handoffEntries(ctx.config.handoff, m) })));
    ctx.countStored("bot", r.stored);
    if (msg.content.type === "event") return;
    const conn = this.#connId(f.generation);
    await openBotStream(ctx.store, ctx.tenant, bot, { botId: msg.botId, streamId: botStreamId(msg.botId, msg.id), msgid: msg.id, address: msg.conversationId, ws: { reqId: f.reqId, conn } }, ctx.now());
    await markBotWsWork(ctx.store, ctx.tenant, bot.botId, msg.conversationId, ctx.now(), ctx.log);
    this.pusher.pushNow(msg.conversationId);
  }

  /** Answer `enter_chat` with `welcomeText` (WeCom takes it only within 5 s of the event). */
  #welcome(f: AibotInbound): void {
    const { bot } = this.#o;
    const c = this.#client;
    if (bot.welcomeText === undefined || c === undefined) return;
    c.respond(f.reqId, "aibot_respond_welcome_msg", { msgtype: "text", text: { content: bot.welcomeText } }, f.generation).then(
      (ack) => {
        this.#o.onResult?.("aibot_respond_welcome_msg", ack.errcode);
        if (ack.errcode !== 0) this.#o.ctx.log.warn("WeCom refused the welcome message", { bot: bot.name, errcode: ack.errcode, errmsg: ack.errmsg.slice(0, 200) });
      },
      (e: unknown) => this.#o.ctx.log.warn("welcome message not acknowledged", { bot: bot.name, error: (e as Error).message }),
    );
  }
}
