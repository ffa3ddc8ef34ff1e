/**
 * AI-bot answers in long-connection mode: the pusher of the replica that holds a bot's connection.
 *
 * The stream state is the webhook mode's (`outbound/bot.ts`: one shared-state row per
 * conversation, agents' texts poured into the most recent stream, replace semantics, the same
 * finish rules); what differs is who moves. In webhook mode WeCom polls; here nobody polls, so the
 * holder of the connection pushes: each stream's content as `aibot_respond_msg` frames on the
 * user's callback req_id whenever it changed (the placeholder at once, then every agent text, then
 * the finish), and every agent message that no stream can take (the stream finished, or WeCom
 * refused to update it: 846608 expired, 846605 req_id no longer valid) with `aibot_send_msg`.
 *
 * Any replica may place an agent message (the outbox's `bot_reply`); it then lists the conversation
 * in the bot's work row (`botws:{botId}`), which the holder reads on a wake and every second (the
 * streams' idle and max timers run there too). A stream whose req_id belongs to an earlier
 * connection (a reconnect, another replica's connection) cannot be updated: what the user has not
 * seen of it goes with `aibot_send_msg`. Messages handed to `aibot_send_msg` are kept in the row
 * (`sending`) until WeCom acknowledges them: a crash in between sends them again (at least once;
 * WeCom has no idempotency key for it). A refusal is told to the 全媒体 (`send_failed`) in the same
 * transaction that drops the message.
 * @module
 */
import { AgentMediaError } from "../../clients/agent-media.js";
import { type AibotAck, AibotWsApiError } from "../../clients/aibot-ws.js";
import type { BotConfig } from "../../config.js";
import type { Logger } from "../../log.js";
import type { IngestItem, Store } from "../../store/types.js";
import { parseConversationAddress } from "../../wecom/address.js";
import { classifyWeComFailure } from "../../wecom/errcodes.js";
import type { JsonObject } from "../../wecom/fields.js";
import {
  answer,
  asConversation,
  BOT_PART_SEPARATOR,
  type BotConversationState,
  type BotItem,
  type BotStreamState,
  botConversationKey,
  botWsWorkKey,
  botWsWorkOf,
  botWsWorkRow,
  closeIfDue,
  emptyConversation,
  finishStream,
  planPost,
  written,
} from "./bot.js";
import { MediaRefusedError, type WeComMediaType } from "./media.js";
import { failureNotice } from "./types.js";

/** What the pusher needs of the connection it pushes through (the one this process holds). */
export interface BotWsLink {
  /** `{process}:{generation}` of the open connection: streams of another cannot be updated. */
  conn: string;
  /** Answer a callback's req_id (frames of one req_id go one at a time). */
  respond(reqId: string, cmd: "aibot_respond_msg", body: Record<string, unknown>): Promise<AibotAck>;
  /** A request of our own (`aibot_send_msg`). */
  send(cmd: string, body: Record<string, unknown>): Promise<AibotAck>;
}

/** Options of {@link BotWsPusher}. */
export interface BotWsPusherOptions {
  store: Store;
  /** The bot's corp. */
  tenant: string;
  bot: BotConfig;
  /** The open connection this process holds, or undefined. */
  link(): BotWsLink | undefined;
  log: Logger;
  now(): number;
  /** How often the work row is read without a wake (the streams' timers), ms (default 1000). */
  tickMs?: number;
  /** Count a WeCom answer (`api`, errcode; -2: none). */
  onResult?(api: string, errcode: number): void;
  /** Download an agent's file and upload it over the connection: the type WeCom took it as and its media_id. */
  media?(type: WeComMediaType, url: string): Promise<{ type: WeComMediaType; mediaId: string }>;
}

/** WeCom errcodes after which a stream cannot be updated any more. */
const STREAM_GONE = new Set([846608, 846605]);
/** A WeCom errcode worth trying again later (`wecom/errcodes.ts` decides). */
const passing = (api: string, errcode: number) => errcode !== 0 && classifyWeComFailure({ api, errcode }) === "transient";
/** Tries of one aibot_send_msg (a file's download and upload included) before it is given up. */
const MAX_SEND_TRIES = 8;
/** Stream frames in a row without an answer before the stream is given up. */
const MAX_FRAME_TIMEOUTS = 3;
/** Conversations pushed at once. */
const PARALLEL = 8;

/** The chat id `aibot_send_msg` takes for a conversation address (the user, or the group). */
export function botWsChatId(address: string): string | undefined {
  const a = parseConversationAddress(address);
  return a?.channel === "bot" ? a.id : undefined;
}

/** The agents' text of a stream (without the placeholder or the timeout text). */
function agentText(s: BotStreamState, cfg: BotConfig): string {
  if (s.final !== undefined) return s.lastAgentAt === undefined && s.final === cfg.timeoutText ? "" : s.final;
  return s.parts.join(BOT_PART_SEPARATOR);
}

/** What the user has not seen of a stream that cannot be updated any more, as a message to send. */
function unseenOf(s: BotStreamState, cfg: BotConfig): string {
  const text = agentText(s, cfg);
  const seen = s.ws?.sent?.content ?? "";
  if (text === "" || text === seen) return "";
  if (seen !== "" && text.startsWith(seen)) return text.slice(seen.length).replace(/^\n+/, "");
  return text;
}

/** The pusher of one long-connection bot (see the module comment). */
export class BotWsPusher {
  readonly #o: BotWsPusherOptions;
  readonly #running = new Map<string, Promise<void>>();
  #timer: NodeJS.Timeout | undefined;
  #pass: Promise<void> | undefined;
  #again = false;
  #stopped = true;
  /** Conversations whose last `aibot_send_msg` failed for a passing reason: not before this time. */
  readonly #sendBackoff = new Map<string, { until: number; failures: number }>();

  /** @param o the store, the bot, the connection and the clock */
  constructor(o: BotWsPusherOptions) {
    this.#o = o;
  }

  /** Start the timer (the holder calls it once connected). */
  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    const tick = () => {
      this.#timer = setTimeout(() => {
        this.wake();
        tick();
      }, this.#o.tickMs ?? 1000);
      this.#timer.unref?.();
    };
    tick();
    this.wake();
  }

  /** Stop the timer; a pass under way finishes. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#pass;
    await Promise.allSettled([...this.#running.values()]);
  }

  /** Push what the work row lists, now (a pass under way runs again after it). */
  wake(): void {
    if (this.#stopped) return;
    if (this.#pass !== undefined) {
      this.#again = true;
      return;
    }
    this.#pass = this.#runPasses().finally(() => {
      this.#pass = undefined;
    });
  }

  /** Resolves when no pass is under way (tests). */
  async idle(): Promise<void> {
    while (this.#pass !== undefined) await this.#pass;
  }

  async #runPasses(): Promise<void> {
    do {
      this.#again = false;
      try {
        await this.#passOnce();
      } catch (e) {
        this.#o.log.warn("bot long-connection push failed", { bot: this.#o.bot.name, error: (e as Error).message });
      }
    } while (this.#again && !this.#stopped);
  }

  async #passOnce(): Promise<void> {
    const { store, tenant, bot } = this.#o;
    if (this.#o.link() === undefined) return;
    const list = botWsWorkOf(await store.getState(tenant, botWsWorkKey(bot.botId), this.#o.now()));
    const finished = new Map<string, number>();
    // at most PARALLEL at once, each taking the next as it ends (a slow one holds up no batch)
    let next = 0;
    const worker = async () => {
      for (let x = list[next++]; x !== undefined; x = list[next++]) {
        if (await this.#conversation(x.address)) finished.set(x.address, x.mark);
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL, list.length) }, worker));
    if (finished.size === 0) return;
    const now = this.#o.now();
    // a conversation marked again while it was pushed stays listed (its new work is not lost)
    await store.updateState(tenant, botWsWorkKey(bot.botId), null, now, (cur) => botWsWorkRow(botWsWorkOf(cur).filter((x) => finished.get(x.address) !== x.mark), now));
    for (const a of finished.keys()) this.#sendBackoff.delete(a);
  }

  /** Push one conversation (one at a time per conversation); true when nothing is left to push. */
  #conversation(address: string): Promise<boolean> {
    const prev = this.#running.get(address);
    if (prev !== undefined) return prev.then(() => false);
    let done = false;
    const run = this.#push(address).then(
      (d) => {
        done = d;
      },
      (e: unknown) => this.#o.log.warn("bot long-connection push failed", { bot: this.#o.bot.name, conversation: address, error: (e as Error).message }),
    );
    this.#running.set(address, run);
    return run.finally(() => this.#running.delete(address)).then(() => done);
  }

  /** Update a conversation row in one decision; returns what `decide` returned. */
  async #update<T>(address: string, decide: (st: BotConversationState, now: number) => T): Promise<T> {
    const now = this.#o.now();
    let out: T | undefined;
    await this.#o.store.updateState(this.#o.tenant, botConversationKey(address), address, now, (cur) => {
      const st = asConversation(cur) ?? emptyConversation();
      const before = cur === undefined ? JSON.stringify(emptyConversation()) : JSON.stringify(st);
      out = decide(st, now);
      // written only when the decision changed it (a tick that finds nothing to do writes nothing)
      return JSON.stringify(st) === before ? undefined : written(st, now);
    });
    return out as T;
  }

  /** Push one conversation now, outside the pass (a new message's placeholder waits for no other). */
  pushNow(address: string): void {
    if (this.#stopped || this.#o.link() === undefined) return;
    void this.#conversation(address);
  }

  async #push(address: string): Promise<boolean> {
    const link = this.#o.link();
    if (link === undefined) return false;
    const bot = this.#o.bot;
    // 1. the streams: close the due ones, give up those of other connections, find frames to send
    const frames = await this.#update(address, (st, now) => {
      const out: { streamId: string; reqId: string; content: string; finish: boolean; card?: JsonObject }[] = [];
      for (const s of st.streams) {
        if (s.ws === undefined || s.ws.done) continue;
        closeIfDue(s, now, bot);
        // its req_id died with its connection (a reconnect, another replica's), or WeCom never answers it
        if (s.ws.conn !== link.conn || (s.ws.timeouts ?? 0) >= MAX_FRAME_TIMEOUTS) {
          this.#giveUp(st, s, now);
          continue;
        }
        const card = s.card !== undefined && s.cardSent !== true ? s.card : undefined;
        const { reply } = answer(s, now, bot);
        // the card counts as shown once WeCom acknowledged the frame that carried it
        if (card !== undefined) s.cardSent = false;
        const content = (reply.type === "stream" ? reply.content : reply.type === "stream_with_template_card" ? reply.stream.content : "") ?? "";
        const finish = s.final !== undefined;
        const sent = s.ws.sent;
        if (card === undefined && sent !== undefined && sent.content === content && sent.finish === finish) {
          if (finish) s.ws.done = true;
          continue;
        }
        out.push({ streamId: s.id, reqId: s.ws.reqId, content, finish, ...(card !== undefined ? { card } : {}) });
      }
      return out;
    });
    for (const f of frames) {
      const stream = { id: f.streamId, finish: f.finish, content: f.content };
      let ack: AibotAck;
      try {
        ack = await link.respond(f.reqId, "aibot_respond_msg", f.card !== undefined ? { msgtype: "stream_with_template_card", stream, template_card: f.card } : { msgtype: "stream", stream });
      } catch (e) {
        // no answer (timeout, closed, a stale connection): the next pass decides again; after a
        // few timeouts in a row the stream is given up (its text goes as a message)
        this.#o.log.info("bot stream frame not acknowledged", { bot: bot.name, conversation: address, error: (e as Error).message });
        await this.#update(address, (st) => {
          const s = st.streams.find((x) => x.id === f.streamId);
          if (s?.ws !== undefined && s.ws.reqId === f.reqId) s.ws.timeouts = (s.ws.timeouts ?? 0) + 1;
        });
        return false;
      }
      this.#o.onResult?.("aibot_respond_msg", ack.errcode);
      if (passing("aibot_respond_msg", ack.errcode)) {
        // busy, or the connection is being replaced: the same frame again on the next pass
        this.#later(address);
        return false;
      }
      await this.#update(address, (st, now) => {
        const s = st.streams.find((x) => x.id === f.streamId);
        if (s?.ws === undefined || s.ws.reqId !== f.reqId) return;
        if (ack.errcode === 0) {
          s.ws.sent = { content: f.content, finish: f.finish };
          s.ws.timeouts = 0;
          if (f.card !== undefined) s.cardSent = true;
          if (f.finish) s.ws.done = true;
          return;
        }
        // expired (846608), req_id gone (846605), or refused for good: the rest goes with aibot_send_msg
        this.#o.log.warn("WeCom refused a stream frame: what the user has not seen goes as a message", {
          bot: bot.name,
          conversation: address,
          errcode: ack.errcode,
          errmsg: ack.errmsg.slice(0, 200),
          expired: STREAM_GONE.has(ack.errcode),
        });
        closeIfDue(s, now, bot);
        this.#giveUp(st, s, now);
      });
    }
    // 2. the messages no stream took: one aibot_send_msg at a time, in order
    for (let round = 0; round < 16; round++) {
      const backoff = this.#sendBackoff.get(address);
      if (backoff !== undefined && this.#o.now() < backoff.until) return false;
      const next = await this.#update(address, (st) => {
        if (st.sending !== undefined) return st.sending;
        const head = st.waiting[0];
        if (head === undefined) return undefined;
        const id = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
        // a file goes alone; texts before the next file go together (up to 20480 bytes), in order
        if (head.media !== undefined) {
          st.waiting = st.waiting.slice(1);
          st.sending = { id, items: [head] };
          return st.sending;
        }
        const cut = st.waiting.findIndex((i) => i.media !== undefined);
        const texts = cut < 0 ? st.waiting : st.waiting.slice(0, cut);
        const { post, leftovers } = planPost(texts);
        st.waiting = [...leftovers, ...(cut < 0 ? [] : st.waiting.slice(cut))];
        if (post === undefined) return undefined;
        st.sending = { id, items: post.items };
        return st.sending;
      });
      if (next === undefined) break;
      const ok = await this.#sendOne(link, address, next);
      if (!ok) return false;
    }
    // 3. anything left? (an open stream, messages)
    const st = asConversation(await this.#o.store.getState(this.#o.tenant, botConversationKey(address), this.#o.now()));
    if (st === undefined) return true;
    return st.waiting.length === 0 && st.sending === undefined && st.streams.every((s) => s.ws === undefined || s.ws.done === true);
  }

  /** A stream that cannot be updated: finished, and what the user has not seen waits to be sent. */
  #giveUp(st: BotConversationState, s: BotStreamState, now: number): void {
    if (s.ws === undefined) return;
    if (s.final === undefined) finishStream(s, "superseded", now, this.#o.bot);
    const rest = unseenOf(s, this.#o.bot);
    s.ws.done = true;
    const unseen: BotItem[] = [];
    if (rest !== "") unseen.push({ text: rest, entryId: 0, cont: true, ...(s.origin ?? {}) });
    // a card no frame showed goes too (as a template_card message)
    if (s.card !== undefined && s.cardSent !== true) {
      unseen.push({ text: "", card: s.card, entryId: 0, ...(s.origin ?? {}) });
      s.cardSent = true;
    }
    st.waiting.unshift(...unseen);
  }

  /** The body of a planned message: a file (uploaded now, or its media_id reused), or the texts. */
  async #bodyOf(sending: { items: BotItem[] }): Promise<JsonObject | undefined> {
    const file = sending.items[0]?.media;
    if (file === undefined) return planPost(sending.items).post?.body;
    if (this.#o.media === undefined) throw new MediaRefusedError("this gateway cannot upload files for the bot");
    const m = await this.#o.media(file.type, file.url);
    return { msgtype: m.type, [m.type]: { media_id: m.mediaId } };
  }

  /** Send one planned message; true when it is done with (sent, or refused and told). */
  async #sendOne(link: BotWsLink, address: string, sending: { id: string; items: BotItem[] }): Promise<boolean> {
    const chatid = botWsChatId(address);
    let body: JsonObject | undefined;
    try {
      body = await this.#bodyOf(sending);
    } catch (e) {
      const final = e instanceof MediaRefusedError || (e instanceof AgentMediaError && !e.retryable) || (e instanceof AibotWsApiError && !passing(e.cmd, e.errcode));
      if (!final) {
        this.#o.log.info("an agent's file could not be uploaded yet; tried again later", { bot: this.#o.bot.name, conversation: address, error: (e as Error).message });
        return this.#failedTry(address, sending, e instanceof AibotWsApiError ? e.errcode : 0, (e as Error).message);
      }
      await this.#refuse(address, sending, e instanceof AibotWsApiError ? e.errcode : 0, (e as Error).message);
      return true;
    }
    if (chatid === undefined || body === undefined) {
      await this.#update(address, (st) => {
        if (st.sending?.id === sending.id) delete st.sending;
      });
      return true;
    }
    let ack: AibotAck;
    try {
      ack = await link.send("aibot_send_msg", { chatid, ...body });
    } catch (e) {
      this.#o.log.info("aibot_send_msg not acknowledged; tried again later", { bot: this.#o.bot.name, conversation: address, error: (e as Error).message });
      return this.#failedTry(address, sending, 0, (e as Error).message);
    }
    this.#o.onResult?.("aibot_send_msg", ack.errcode);
    if (ack.errcode === 0) {
      this.#sendBackoff.delete(address);
      await this.#update(address, (st) => {
        if (st.sending?.id === sending.id) delete st.sending;
      });
      return true;
    }
    if (passing("aibot_send_msg", ack.errcode)) return this.#failedTry(address, sending, ack.errcode, ack.errmsg);
    this.#o.log.warn("WeCom refused an agent message (aibot_send_msg)", { bot: this.#o.bot.name, conversation: address, errcode: ack.errcode, errmsg: ack.errmsg.slice(0, 200) });
    await this.#refuse(address, sending, ack.errcode, ack.errmsg);
    return true;
  }

  /**
   * A try that failed for a passing reason: again later, with backoff; after
   * {@link MAX_SEND_TRIES} tries the message is given up (the agents are told), so that one file
   * or message cannot hold its conversation's later ones back for ever. True when given up.
   */
  async #failedTry(address: string, sending: { id: string; items: BotItem[] }, errcode: number, errmsg: string): Promise<boolean> {
    this.#later(address);
    const tries = await this.#update(address, (st) => {
      if (st.sending?.id !== sending.id) return 0;
      st.sending.tries = (st.sending.tries ?? 0) + 1;
      return st.sending.tries;
    });
    if (tries < MAX_SEND_TRIES) return false;
    // the refusal drops the message only if it is still the one being sent (checked in its transaction)
    this.#o.log.warn("an agent message could not be sent to the bot's user: given up", { bot: this.#o.bot.name, conversation: address, tries, errcode });
    await this.#refuse(address, sending, errcode, `given up after ${tries} tries: ${errmsg}`);
    return true;
  }

  /** A message refused for good: the agents are told, in the transaction that drops it. */
  async #refuse(address: string, sending: { id: string; items: BotItem[] }, errcode: number, errmsg: string): Promise<void> {
    const item: IngestItem = {
      tenant: this.#o.tenant,
      channel: "bot",
      key: `aibot_send_msg:${address}:${sending.id}`,
      skipReason: "bot_send_refused",
      effect: {
        key: botConversationKey(address),
        conversationId: address,
        apply: (cur) => {
          const st = asConversation(cur) ?? emptyConversation();
          if (st.sending?.id !== sending.id) return {};
          delete st.sending;
          const now = this.#o.now();
          const entries = sending.items.map((i) =>
              failureNotice(address, i.serviceId, "send_failed", {
                errcode,
                errmsg: errmsg.slice(0, 200),
                reason: errcode !== 0 ? `WeCom refused the bot's message (errcode ${errcode})` : "the agent's file could not be sent (see errmsg)",
                ref: i.ref ?? `text: ${[...i.text].slice(0, 200).join("")}`,
              }),
            );
          return { state: written(st, now), entries };
        },
      },
    };
    await this.#o.store.ingest([item], undefined, this.#o.now());
  }

  #later(address: string): void {
    const b = this.#sendBackoff.get(address) ?? { until: 0, failures: 0 };
    b.failures++;
    b.until = this.#o.now() + Math.min(60_000, 1000 * 2 ** Math.min(b.failures, 6));
    this.#sendBackoff.set(address, b);
    if (this.#sendBackoff.size > 10_000) this.#sendBackoff.delete(this.#sendBackoff.keys().next().value as string);
  }
}
