/**
 * AI-bot answers (webhook mode): the stream manager that answers WeCom's refresh polls, and the
 * `bot_reply` sender that puts agents' messages into streams or a message's `response_url`.
 *
 * All of it lives in the store's shared state, so whichever process answers a refresh has it and a
 * restart loses nothing. One row per conversation, `botconv:{address}`, holds its recent streams,
 * the agent messages waiting for the user's next message and the response_url call under way;
 * every decision is one read-modify-write of that row ({@link Store.updateState}), so a refresh,
 * a user's message and an agent's message never see half of another. A small row per stream,
 * `botstream:{botId}:{streamId}`, names its conversation (a refresh carries only the stream id).
 *
 * A stream (one per user message, id from `botStreamId`):
 * - answers the placeholder (`wecom.bots[].placeholder`) until the first agent text, then the
 *   agent texts so far joined by a blank line (replace semantics: each answer is the whole content,
 *   never a piece twice, in order), at most 20480 UTF-8 bytes;
 * - finishes on an agent message with `Tag.finish: true`; `streamIdleSec` after the last agent
 *   message; `streamMaxSec` after the user's message in any case; when full; or when the user wrote
 *   again (a newer stream takes the agents' messages). Without any agent text it finishes with
 *   `timeoutText`: a bubble is never left empty. A finished stream answers the same final content to
 *   every later refresh; an unknown stream id is answered finished with `timeoutText` at once;
 * - passes `Tag.template_card` through once (`stream_with_template_card`), one card per stream.
 *
 * An agent message goes into the conversation's most recent stream while it is open. After it
 * finished, what comes goes through that message's `response_url` (one POST of markdown, or of the
 * card when there is no text, within {@link BOT_RESPONSE_URL_WINDOW_MS} of the user's message); the
 * use is recorded after WeCom's ok, so a crash in between sends it again (at least once: WeCom has no
 * idempotency key for it). Anything after that, and text over the 20480 bytes, waits for the user's
 * next message, whose stream it opens, and the 全媒体 is told (`send_waiting`).
 * @module
 */
import { HttpClientError } from "../../clients/http.js";
import { WeComApiError } from "../../clients/wecom.js";
import type { BotConfig } from "../../config.js";
import type { Logger } from "../../log.js";
import type { OutboxEntry, OutboxInsert, StateWrite, Store } from "../../store/types.js";
import { parseConversationAddress } from "../../wecom/address.js";
import { BOT_STREAM_MAX_BYTES, type BotReply } from "../../wecom/bot/encode.js";
import { classifyWeComFailure } from "../../wecom/errcodes.js";
import type { JsonObject } from "../../wecom/fields.js";
import { splitUtf8, utf8Length } from "../../wecom/text-split.js";
import type { WeComMediaType } from "./media.js";
import { type BotJob, failureNotice, messageRef, type OutboundContext, refusalOf, type Sender, type SendResult, tagValue } from "./types.js";

/** How agent texts are joined in one stream or one response_url message: a blank line. */
export const BOT_PART_SEPARATOR = "\n\n";
/**
 * A message's `response_url` is used only this long after the user's message, ms: WeCom takes it
 * for 1 hour; a minute is kept for the clocks and the call itself.
 */
export const BOT_RESPONSE_URL_WINDOW_MS = 59 * 60_000;
/** How long a stream other than the most recent is kept, ms: WeCom polls for 6 minutes. */
const STREAM_KEEP_MS = 7 * 60_000;
/** How long the most recent stream (its response_url) and the stream id rows are kept, ms. */
const LAST_STREAM_KEEP_MS = 65 * 60_000;
/** A conversation's row lives this long after its last change (its waiting messages with it), ms. */
export const BOT_CONVERSATION_TTL_MS = 7 * 24 * 3600_000;
/** Entry ids remembered per conversation, so that a retry of an entry is not placed twice. */
const APPLIED_KEEP = 32;
/** The smallest piece of a text worth putting into what is left of a full stream, bytes. */
const MIN_PIECE_BYTES = 4;
/** The API name of a response_url call (errors, classification). */
const RESPONSE_API = "aibot/response";

/** The settings of one bot that streams use. */
export type BotStreamSettings = Pick<BotConfig, "placeholder" | "timeoutText" | "streamIdleSec" | "streamMaxSec">;

/** An agent's message (or what is left of one) on its way to a stream or a response_url. */
export interface BotItem {
  /** The text (markdown); may be empty (a card alone, a finish alone). */
  text: string;
  /** `Tag.template_card`, passed through as it came. */
  card?: JsonObject;
  /** `Tag.finish: true`: the stream it lands in finishes after it. */
  finish?: boolean;
  /** The outbox entry it came from. */
  entryId: number;
  /** The rest of a text whose beginning went elsewhere (a full stream). */
  cont?: boolean;
  /** An agent's file (long-connection mode): sent on its own with `aibot_send_msg`, never in a stream. */
  media?: { type: WeComMediaType; url: string };
  /** The agent's ServiceId and message ref (long-connection mode: a later refusal names them). */
  serviceId?: string;
  ref?: string;
}

/**
 * A stream opened over the long connection (websocket mode): the callback's req_id it answers
 * with, the connection that req_id belongs to, and what the user has been shown.
 */
export interface BotStreamWs {
  /** The req_id of the user's message callback (the newest, when WeCom repeated it). */
  reqId: string;
  /** The connection it came on (`{process}:{generation}`): the req_id dies with it. */
  conn: string;
  /** The last frame WeCom acknowledged. */
  sent?: { content: string; finish: boolean };
  /** Nothing more goes into this stream (finished and shown, or it could not be updated). */
  done?: boolean;
  /** Frames in a row that got no answer (after a few, the stream is given up). */
  timeouts?: number;
}

/** Why a stream finished. */
export type BotFinishReason = "agent" | "idle" | "max" | "full" | "superseded";

/** One stream as stored. */
export interface BotStreamState {
  /** The stream id WeCom polls with. */
  id: string;
  /** The user's message that opened it. */
  msgid: string;
  /** When the gateway got the user's message, ms. */
  startedAt: number;
  /** The message's response_url, exactly as WeCom gave it. */
  responseUrl?: string;
  /** When the response_url was used (or refused), ms: it is not tried again. */
  urlUsedAt?: number;
  /** Agent texts in the stream, in order (emptied when it finishes: `final` has them). */
  parts: string[];
  /** When the last agent message went in, ms. */
  lastAgentAt?: number;
  /** The template card of the stream, and whether an answer carried it. */
  card?: JsonObject;
  cardSent?: boolean;
  /** A newer stream of the conversation exists: this one finishes at its next answer. */
  superseded?: boolean;
  /** Set once finished: the content every later answer repeats. */
  final?: string;
  finishedAt?: number;
  finishReason?: BotFinishReason;
  /** Websocket mode: how the stream is pushed. */
  ws?: BotStreamWs;
  /** Websocket mode: the last agent message poured in (a later refusal of its text names it). */
  origin?: Pick<BotItem, "ref" | "serviceId">;
}

/** A bot conversation's row. */
export interface BotConversationState {
  v: 1;
  /** Recent streams, oldest first; the last is the most recent. */
  streams: BotStreamState[];
  /** Agent messages waiting for the user's next message, in order. */
  waiting: BotItem[];
  /** A response_url call under way: what it carries (put back in front when WeCom refuses it). */
  pendingPost?: { entryId: number; streamId: string; items: BotItem[] };
  /** Recently placed outbox entries (a retry after a crash is not placed again). */
  applied: number[];
  /** Websocket mode: messages handed to `aibot_send_msg` and not yet acknowledged (sent again after a crash). */
  sending?: { id: string; items: BotItem[]; tries?: number };
}

/** A user's message that opens a stream. */
export interface BotStreamOpen {
  botId: string;
  /** `botStreamId(botId, msgid)`. */
  streamId: string;
  msgid: string;
  /** The conversation address (`bot:{botId}:user:{userId}` / `bot:{botId}:group:{chatId}`). */
  address: string;
  /** The message's response_url, when it had one. */
  responseUrl?: string;
  /** Websocket mode: the callback's req_id and connection. */
  ws?: { reqId: string; conn: string };
}

/** The shared-state key of a bot conversation. */
export function botConversationKey(address: string): string {
  return `botconv:${address}`;
}

/** The shared-state key of a stream id (it names the stream's conversation). */
export function botStreamKey(botId: string, streamId: string): string {
  return `botstream:${botId}:${streamId}`;
}

function isJsonObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A stored conversation row, or undefined when it is not one. */
export function asConversation(v: unknown): BotConversationState | undefined {
  if (!isJsonObject(v) || v.v !== 1 || !Array.isArray(v.streams) || !Array.isArray(v.waiting)) return undefined;
  const st = v as unknown as BotConversationState;
  if (!Array.isArray(st.applied)) st.applied = [];
  return st;
}

/** A conversation without streams or waiting messages. */
export function emptyConversation(): BotConversationState {
  return { v: 1, streams: [], waiting: [], applied: [] };
}

/** The write of a conversation row (it lives {@link BOT_CONVERSATION_TTL_MS} after its last change). */
export function written(st: BotConversationState, now: number): StateWrite {
  return { value: st, expiresAt: now + BOT_CONVERSATION_TTL_MS };
}

function joinedBytes(parts: string[]): number {
  if (parts.length === 0) return 0;
  let n = (parts.length - 1) * BOT_PART_SEPARATOR.length;
  for (const p of parts) n += utf8Length(p);
  return n;
}

/** Finish a stream now: its content is frozen (timeoutText when no agent text came). */
export function finishStream(s: BotStreamState, reason: BotFinishReason, now: number, cfg: BotStreamSettings): void {
  if (s.final !== undefined) return;
  s.final = s.parts.length > 0 ? s.parts.join(BOT_PART_SEPARATOR) : cfg.timeoutText;
  s.parts = [];
  s.finishedAt = now;
  s.finishReason = reason;
}

/** Finish a stream whose time is up (newer stream, streamMaxSec, streamIdleSec); true when it is finished. */
export function closeIfDue(s: BotStreamState, now: number, cfg: BotStreamSettings): boolean {
  if (s.final !== undefined) return true;
  let reason: BotFinishReason | undefined;
  if (s.superseded) reason = "superseded";
  else if (now >= s.startedAt + cfg.streamMaxSec * 1000) reason = "max";
  else if (s.lastAgentAt !== undefined && now >= s.lastAgentAt + cfg.streamIdleSec * 1000) reason = "idle";
  if (reason === undefined) return false;
  finishStream(s, reason, now, cfg);
  return true;
}

/** Who an item came from (long-connection mode), carried by its pieces. */
function origin(i: BotItem): Pick<BotItem, "ref" | "serviceId"> {
  return { ...(i.ref !== undefined ? { ref: i.ref } : {}), ...(i.serviceId !== undefined ? { serviceId: i.serviceId } : {}) };
}

/** The first piece of `text` that fits `room` bytes (grapheme boundaries), or "" when too little room. */
function pieceFitting(text: string, room: number): string {
  if (room < MIN_PIECE_BYTES) return "";
  return splitUtf8(text, room)[0] ?? "";
}

/**
 * Pour items into an open stream, in order, until it finishes (Tag.finish, or full); returns what
 * did not go in: items after the finish, the rest of a text that filled it, a second card.
 */
function pour(s: BotStreamState, items: BotItem[], now: number, cfg: BotStreamSettings): BotItem[] {
  const rest: BotItem[] = [];
  for (const item of items) {
    if (s.final !== undefined) {
      rest.push(item);
      continue;
    }
    // a file never goes into a stream (a long connection's stream shows no images): it is sent
    // alone, at once; it counts as the agent's answer (the idle timer, Tag.finish)
    if (item.media !== undefined) {
      s.lastAgentAt = now;
      const { finish: _, ...alone } = item;
      rest.push(alone);
      if (item.finish) finishStream(s, "agent", now, cfg);
      continue;
    }
    s.lastAgentAt = now;
    if (item.card !== undefined) {
      if (s.card === undefined) {
        s.card = item.card;
        s.cardSent = false;
      } else rest.push({ text: "", card: item.card, entryId: item.entryId, ...origin(item) }); // one card per stream: the next stream shows it
    }
    if (item.text !== "") {
      if (item.ref !== undefined || item.serviceId !== undefined) s.origin = origin(item);
      const used = joinedBytes(s.parts);
      const sep = s.parts.length > 0 ? BOT_PART_SEPARATOR.length : 0;
      if (used + sep + utf8Length(item.text) <= BOT_STREAM_MAX_BYTES) s.parts.push(item.text);
      else {
        const piece = pieceFitting(item.text, BOT_STREAM_MAX_BYTES - used - sep);
        if (piece !== "") s.parts.push(piece);
        finishStream(s, "full", now, cfg);
        const left: BotItem = { text: item.text.slice(piece.length), entryId: item.entryId, ...origin(item) };
        if (piece !== "" || item.cont) left.cont = true;
        if (item.finish) left.finish = true;
        rest.push(left);
        continue;
      }
    }
    if (item.finish) finishStream(s, "agent", now, cfg);
  }
  return rest;
}

/** True when the stream's response_url may still be used. */
function urlUsable(s: BotStreamState, now: number): boolean {
  return s.responseUrl !== undefined && s.urlUsedAt === undefined && now < s.startedAt + BOT_RESPONSE_URL_WINDOW_MS;
}

/** The body of one response_url POST, and the items it carries. */
export type PostPlan = { body: JsonObject; items: BotItem[] };

/**
 * What one response_url POST carries of `items` (in order): their texts joined, up to 20480 bytes,
 * as markdown; or, when there is no text at all, the first card. The rest (text past the limit,
 * cards that came with text) is left over, in order.
 */
export function planPost(items: BotItem[]): { post?: PostPlan; leftovers: BotItem[] } {
  if (!items.some((i) => i.text !== "")) {
    const idx = items.findIndex((i) => i.card !== undefined);
    if (idx < 0) return { leftovers: [] }; // finish marks alone: nothing to say
    const item = items[idx] as BotItem;
    return { post: { body: { msgtype: "template_card", template_card: item.card as JsonObject }, items: [item] }, leftovers: items.filter((_, i) => i !== idx) };
  }
  const taken: BotItem[] = [];
  const leftovers: BotItem[] = [];
  let bytes = 0;
  let full = false;
  for (const item of items) {
    if (full) {
      leftovers.push(item);
      continue;
    }
    if (item.card !== undefined) leftovers.push({ text: "", card: item.card, entryId: item.entryId, ...origin(item) });
    if (item.text === "") continue;
    const sep = taken.length > 0 ? BOT_PART_SEPARATOR.length : 0;
    const n = utf8Length(item.text);
    if (bytes + sep + n <= BOT_STREAM_MAX_BYTES) {
      taken.push(item.cont ? { text: item.text, entryId: item.entryId, cont: true, ...origin(item) } : { text: item.text, entryId: item.entryId, ...origin(item) });
      bytes += sep + n;
      continue;
    }
    const piece = pieceFitting(item.text, BOT_STREAM_MAX_BYTES - bytes - sep);
    if (piece !== "") taken.push(item.cont ? { text: piece, entryId: item.entryId, cont: true, ...origin(item) } : { text: piece, entryId: item.entryId, ...origin(item) });
    const left: BotItem = { text: item.text.slice(piece.length), entryId: item.entryId, ...origin(item) };
    if (piece !== "" || item.cont) left.cont = true;
    if (item.finish) left.finish = true;
    leftovers.push(left);
    full = true;
  }
  return { post: { body: { msgtype: "markdown", markdown: { content: taken.map((t) => t.text).join(BOT_PART_SEPARATOR) } }, items: taken }, leftovers };
}

/** Put items back in front of the waiting list (a refused POST), joining a text to its own continuation. */
function putBack(st: BotConversationState, items: BotItem[]): void {
  const head = st.waiting[0];
  const last = items[items.length - 1];
  if (head !== undefined && last !== undefined && head.cont && head.entryId === last.entryId && head.card === undefined && last.card === undefined && !last.finish) {
    const merged: BotItem = { ...head, text: last.text + head.text };
    if (last.cont) merged.cont = true;
    else delete merged.cont;
    st.waiting = [...items.slice(0, -1), merged, ...st.waiting.slice(1)];
    return;
  }
  st.waiting = [...items, ...st.waiting];
}

/** Drop streams nobody polls any more; the most recent stays while its response_url may be used. */
function prune(st: BotConversationState, now: number): void {
  const last = st.streams.length - 1;
  // a long-connection stream stays until the pusher is done with it (what the user has not seen of it goes as a message)
  st.streams = st.streams.filter((s, i) => (s.ws !== undefined && !s.ws.done) || now < s.startedAt + (i === last ? LAST_STREAM_KEEP_MS : STREAM_KEEP_MS));
}

/** What a placement did: the POST to make, if any. */
interface Placement {
  post?: { streamId: string; url: string; body: JsonObject };
}

/**
 * Place items (an agent's message, or a refused POST's items put back) in one decision: into the
 * most recent stream while it is open, the rest through that stream's response_url when usable
 * (with the waiting messages first), else into the waiting list.
 */
function place(st: BotConversationState, items: BotItem[], entryId: number, now: number, cfg: BotStreamSettings, front: boolean): Placement {
  prune(st, now);
  const s = st.streams[st.streams.length - 1];
  let rest = items;
  if (s !== undefined && !closeIfDue(s, now, cfg)) rest = pour(s, items, now, cfg);
  if (rest.length === 0) return {};
  if (s !== undefined && s.final !== undefined && urlUsable(s, now) && st.pendingPost === undefined) {
    const all = front ? [...rest, ...st.waiting] : [...st.waiting, ...rest];
    const { post, leftovers } = planPost(all);
    st.waiting = leftovers;
    if (post === undefined) return {};
    st.pendingPost = { entryId, streamId: s.id, items: post.items };
    return { post: { streamId: s.id, url: s.responseUrl as string, body: post.body } };
  }
  if (front) putBack(st, rest);
  else st.waiting.push(...rest);
  return {};
}

/** The pending POST of this entry, when its stream's response_url may still be used. */
function pendingOf(st: BotConversationState, entryId: number, now: number): Placement["post"] | "expired" | undefined {
  const p = st.pendingPost;
  if (p === undefined || p.entryId !== entryId) return undefined;
  const s = st.streams.find((x) => x.id === p.streamId);
  if (s === undefined || !urlUsable(s, now)) return "expired";
  const { post } = planPost(p.items);
  return post === undefined ? "expired" : { streamId: s.id, url: s.responseUrl as string, body: post.body };
}

/** A refused (or expired) POST: the response_url is spent, its items are placed again, in front. */
function refusePost(st: BotConversationState, entryId: number, now: number, cfg: BotStreamSettings): Placement {
  const p = st.pendingPost;
  if (p === undefined || p.entryId !== entryId) return {};
  delete st.pendingPost;
  const s = st.streams.find((x) => x.id === p.streamId);
  if (s !== undefined) s.urlUsedAt = now;
  return place(st, p.items, entryId, now, cfg, true);
}

/**
 * The answer to a refresh (or to the user's message itself) of stream `s`, finishing it when its
 * time is up and passing its card once; `changed` when `s` must be written back.
 */
export function answer(s: BotStreamState, now: number, cfg: BotStreamSettings): { reply: BotReply; changed: boolean } {
  let changed = false;
  if (s.final === undefined && closeIfDue(s, now, cfg)) changed = true;
  const finish = s.final !== undefined;
  const content = s.final ?? (s.parts.length > 0 ? s.parts.join(BOT_PART_SEPARATOR) : cfg.placeholder);
  const stream = { id: s.id, finish, content };
  if (s.card !== undefined && !s.cardSent) {
    s.cardSent = true;
    return { reply: { type: "stream_with_template_card", stream, templateCard: s.card }, changed: true };
  }
  return { reply: { type: "stream", ...stream }, changed };
}

/** The answer for a stream the gateway does not know: finished at once, so WeCom stops polling. */
function unknownStream(streamId: string, cfg: BotStreamSettings): BotReply {
  return { type: "stream", id: streamId, finish: true, content: cfg.timeoutText };
}

/**
 * Open the stream of a user's message (called when the message is stored, and on WeCom's retries
 * of its callback, which get the same stream id: an existing stream is answered, never reset).
 * A new stream supersedes the conversation's older open ones (they finish at their next answer)
 * and starts with the agent messages that were waiting. Returns the answer to the user's message.
 * @param store the shared state
 * @param tenant the CorpID
 * @param cfg the bot's stream settings
 * @param open the message
 * @param now the gateway's clock, ms
 */
export async function openBotStream(store: Store, tenant: string, cfg: BotStreamSettings, open: BotStreamOpen, now: number): Promise<BotReply> {
  // the stream id's row first: a refresh (which carries only the id) finds the conversation by it
  await store.updateState(tenant, botStreamKey(open.botId, open.streamId), open.address, now, (cur) =>
    cur === undefined ? { value: { address: open.address }, expiresAt: now + LAST_STREAM_KEEP_MS } : undefined,
  );
  let reply: BotReply = { type: "stream", id: open.streamId, finish: false, content: cfg.placeholder };
  await store.updateState(tenant, botConversationKey(open.address), open.address, now, (cur) => {
    const st = asConversation(cur) ?? emptyConversation();
    let s = st.streams.find((x) => x.id === open.streamId);
    let changed = false;
    if (s === undefined) {
      prune(st, now);
      for (const old of st.streams) if (old.final === undefined) old.superseded = true;
      s = { id: open.streamId, msgid: open.msgid, startedAt: now, parts: [] };
      if (open.responseUrl !== undefined && open.responseUrl !== "") s.responseUrl = open.responseUrl;
      if (open.ws !== undefined) s.ws = { reqId: open.ws.reqId, conn: open.ws.conn };
      st.streams.push(s);
      st.waiting = pour(s, st.waiting, now, cfg);
      changed = true;
    }
    if (open.ws !== undefined && s.ws !== undefined && !s.ws.done && (s.ws.reqId !== open.ws.reqId || s.ws.conn !== open.ws.conn)) {
      // WeCom repeated the callback (a new req_id, maybe a new connection): the stream answers on it
      s.ws = { reqId: open.ws.reqId, conn: open.ws.conn };
      changed = true;
    }
    const cardSent = s.cardSent;
    const a = answer(s, now, cfg);
    // a long-connection stream's card counts as shown once a frame carrying it was acknowledged
    if (s.ws !== undefined) s.cardSent = cardSent;
    reply = a.reply;
    return changed || a.changed ? written(st, now) : undefined;
  });
  return reply;
}

/** Which stream a refresh polls. */
export interface BotStreamRef {
  botId: string;
  streamId: string;
  /** The conversation the refresh callback names, used when the stream id's row is gone. */
  address?: string;
}

/**
 * Answer WeCom's refresh poll of a stream: the full content so far (replace semantics), finished
 * when its time is up; an unknown stream is answered finished with `timeoutText` at once.
 * @param store the shared state
 * @param tenant the CorpID
 * @param cfg the bot's stream settings
 * @param ref the stream polled
 * @param now the gateway's clock, ms
 */
export async function refreshBotStream(store: Store, tenant: string, cfg: BotStreamSettings, ref: BotStreamRef, now: number): Promise<BotReply> {
  const pointer = await store.getState(tenant, botStreamKey(ref.botId, ref.streamId), now);
  const address = isJsonObject(pointer) && typeof pointer.address === "string" ? pointer.address : ref.address;
  if (address === undefined) return unknownStream(ref.streamId, cfg);
  let reply: BotReply | undefined;
  await store.updateState(tenant, botConversationKey(address), address, now, (cur) => {
    const st = asConversation(cur);
    const s = st?.streams.find((x) => x.id === ref.streamId);
    if (st === undefined || s === undefined) return undefined;
    const a = answer(s, now, cfg);
    reply = a.reply;
    return a.changed ? written(st, now) : undefined;
  });
  return reply ?? unknownStream(ref.streamId, cfg);
}

/** The MsgTypes an AI bot in websocket mode carries besides text and markdown (uploaded over the connection). */
export const BOT_WS_MEDIA_TYPES: ReadonlySet<string> = new Set(["image", "file", "voice", "video"]);

/** The shared-state key of a long-connection bot's conversations that have something to push. */
export function botWsWorkKey(botId: string): string {
  return `botws:${botId}`;
}

/** Most conversations remembered per bot as having something to push (the oldest are dropped). */
export const BOT_WS_WORK_MAX = 10_000;

/**
 * The conversations of a bot's work row, each with its mark: every {@link markBotWsWork} raises
 * it, so that the pusher removes a conversation only when nothing was marked since it looked.
 */
export function botWsWorkOf(v: unknown): { address: string; mark: number }[] {
  if (!isJsonObject(v) || !Array.isArray(v.addresses)) return [];
  const marks = Array.isArray(v.marks) ? v.marks : [];
  return v.addresses.flatMap((a, i) => (typeof a === "string" ? [{ address: a, mark: typeof marks[i] === "number" ? (marks[i] as number) : 0 }] : []));
}

/** The value of a bot's work row. */
export function botWsWorkRow(list: { address: string; mark: number }[], now: number): StateWrite {
  const kept = list.slice(-BOT_WS_WORK_MAX);
  return { value: { addresses: kept.map((x) => x.address), marks: kept.map((x) => x.mark) }, expiresAt: now + BOT_CONVERSATION_TTL_MS };
}

/**
 * Note that a long-connection bot's conversation has something to push (an open stream, messages
 * to send), so that whichever replica holds the bot's connection finds it.
 */
export async function markBotWsWork(store: Store, tenant: string, botId: string, address: string, now: number, log?: Logger): Promise<void> {
  let dropped = 0;
  await store.updateState(tenant, botWsWorkKey(botId), null, now, (cur) => {
    const list = botWsWorkOf(cur);
    const at = list.find((x) => x.address === address);
    if (at !== undefined) at.mark++;
    else list.push({ address, mark: 1 });
    dropped = Math.max(0, list.length - BOT_WS_WORK_MAX);
    return botWsWorkRow(list, now);
  });
  // the oldest conversations' answers now wait for their users' next messages
  if (dropped > 0) log?.warn("bot work row full: the oldest conversations were dropped from it", { botId, dropped, max: BOT_WS_WORK_MAX });
}

/** What a response_url call came to: ok, or WeCom's final refusal. Anything else is thrown. */
type PostResult = { ok: true } | { ok: false; errcode: number; errmsg: string };

/**
 * The `bot_reply` sender: an agent's answer to an AI bot's user, into the conversation's most
 * recent open stream, else through the message's response_url (once), else waiting for the user's
 * next message (the 全媒体 is told: `send_waiting`). See the module comment.
 */
export class BotSender implements Sender {
  readonly #ctx: OutboundContext;

  /** @param ctx the gateway's outbound context (config, store, http client, clock) */
  constructor(ctx: OutboundContext) {
    this.#ctx = ctx;
  }

  /**
   * Run one `bot_reply` entry. A response_url refused by WeCom (a final errcode) leaves the message
   * waiting; a transient failure (HTTP 5xx, the network) is thrown for the worker to retry.
   */
  async send(entry: OutboxEntry): Promise<SendResult> {
    const job = entry.payload as BotJob;
    const body = job?.body;
    if (job?.op !== "message" || typeof body?.ToUserId !== "string" || typeof body.Content !== "string") {
      return { state: "refused", errcode: 0, error: "not an agent message (bot_reply payload)" };
    }
    const refuse = (error: string, reason: string): SendResult => ({ state: "refused", errcode: 0, error, followUps: [refusalOf(job, 0, error, reason)] });
    const address = body.ToUserId;
    const a = parseConversationAddress(address);
    if (a?.channel !== "bot") return refuse("not a bot conversation", "the address is not an AI bot's conversation");
    const bot = this.#ctx.config.wecom.bots.find((b) => b.botId === a.botId);
    if (bot === undefined) return refuse("unknown bot", "no bot with this botId is configured (wecom.bots[].botId)");
    const media = bot.mode === "websocket" && BOT_WS_MEDIA_TYPES.has(body.MsgType) ? { type: body.MsgType as WeComMediaType, url: body.Content } : undefined;
    if (body.MsgType !== "text" && body.MsgType !== "markdown" && media === undefined) {
      return refuse(`MsgType ${body.MsgType} cannot be sent to a bot`, "an AI bot's conversation carries text and markdown (and, in websocket mode, images, files, voice and video)");
    }
    const card = tagValue(body.Tag, "template_card");
    const item: BotItem = media !== undefined ? { text: "", media, entryId: entry.id } : { text: body.Content, entryId: entry.id };
    if (isJsonObject(card)) item.card = card;
    if (tagValue(body.Tag, "finish") === true) item.finish = true;
    if (item.text === "" && item.card === undefined && item.finish !== true && item.media === undefined) return { state: "done" };
    if (bot.mode === "websocket") {
      item.ref = messageRef(body);
      if (body.ServiceId !== undefined) item.serviceId = body.ServiceId;
    }

    const { store, tenant } = this.#ctx;
    const key = botConversationKey(address);
    const update = async (decide: (st: BotConversationState, now: number) => Placement["post"] | "expired" | undefined) => {
      const now = this.#ctx.now();
      let out: Placement["post"] | "expired" | undefined;
      let waits = false;
      await store.updateState(tenant, key, address, now, (cur) => {
        const st = asConversation(cur) ?? emptyConversation();
        out = decide(st, now);
        waits = st.waiting.some((w) => w.entryId === entry.id);
        return written(st, now);
      });
      return { post: out, waits };
    };

    // place it (once per entry: a retry after a crash finds it applied, or its POST under way)
    let step = await update((st, now) => {
      const pending = pendingOf(st, entry.id, now);
      if (pending !== undefined) return pending;
      if (st.applied.includes(entry.id)) return undefined;
      if (st.pendingPost !== undefined) {
        // an earlier entry's POST that never completed (given up): its messages wait again
        putBack(st, st.pendingPost.items);
        delete st.pendingPost;
      }
      st.applied = [...st.applied, entry.id].slice(-APPLIED_KEEP);
      return place(st, [item], entry.id, now, bot, false).post;
    });
    if (bot.mode === "websocket") {
      // the replica holding the bot's connection pushes it: into the stream, or with aibot_send_msg
      await markBotWsWork(store, tenant, bot.botId, address, this.#ctx.now(), this.#ctx.log);
      this.#ctx.onBotWsWork?.(bot.botId);
      return { state: "done" };
    }
    let refusal: { errcode: number; errmsg: string } | undefined;
    for (let round = 0; round < 4 && step.post !== undefined; round++) {
      const post = step.post;
      const r: PostResult = post === "expired" ? { ok: false, errcode: 0, errmsg: "the response_url expired" } : await this.#post(post.url, post.body);
      if (r.ok) {
        step = await update((st, now) => {
          const s = st.streams.find((x) => post !== "expired" && x.id === post.streamId);
          if (s !== undefined) s.urlUsedAt = now;
          if (st.pendingPost?.entryId === entry.id) delete st.pendingPost;
          return undefined;
        });
      } else {
        refusal = { errcode: r.errcode, errmsg: r.errmsg };
        step = await update((st, now) => refusePost(st, entry.id, now, bot).post);
      }
    }
    if (!step.waits) return { state: "done" };
    const errcode = refusal?.errcode ?? 0;
    const errmsg = refusal?.errmsg ?? "waiting for the user's next message";
    const reason =
      refusal !== undefined
        ? `WeCom refused the message's response_url (errcode ${errcode}); it waits for the user's next message`
        : "the user's message was already answered (its stream finished and its response_url is used or expired): it waits for the user's next message";
    const notice: OutboxInsert = failureNotice(address, body.ServiceId, "send_waiting", { errcode, errmsg, reason, ref: messageRef(body) });
    return { state: "done", followUps: [notice] };
  }

  /** POST one message to a response_url (the exact URL WeCom gave; never logged: it is a credential). */
  async #post(url: string, body: JsonObject): Promise<PostResult> {
    let status: number;
    let answer: unknown;
    try {
      const res = await this.#ctx.http.json({ method: "POST", url, json: body, timeoutMs: this.#ctx.config.delivery.timeoutMs });
      status = res.status;
      answer = res.body;
    } catch (e) {
      this.#ctx.onWeComResult?.(RESPONSE_API, -2);
      if (e instanceof HttpClientError) {
        if (e.code === "http_invalid_request") return { ok: false, errcode: 0, errmsg: "the response_url is not an http(s) URL" };
        // the message names the origin and path only, never the response_code
        throw new WeComApiError(RESPONSE_API, 0, e.message, e.network ? undefined : e.httpStatus);
      }
      throw e;
    }
    const errcode = isJsonObject(answer) && typeof answer.errcode === "number" ? answer.errcode : 0;
    const errmsg = isJsonObject(answer) && typeof answer.errmsg === "string" ? answer.errmsg.slice(0, 200) : "";
    this.#ctx.onWeComResult?.(RESPONSE_API, errcode);
    if (errcode === 0) {
      if (status >= 200 && status < 300) return { ok: true };
      throw new WeComApiError(RESPONSE_API, 0, `HTTP ${status}`, status);
    }
    const kind = classifyWeComFailure({ api: RESPONSE_API, errcode, httpStatus: status });
    if (kind === "final") return { ok: false, errcode, errmsg };
    throw new WeComApiError(RESPONSE_API, errcode, errmsg, status, kind);
  }
}
