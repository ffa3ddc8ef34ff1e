/**
 * What the console's Conversations and Outbox pages show, read from the store: conversation
 * lists (with a text search over the newest messages), a conversation's transcript in both
 * directions with its media links, refusals and handoffs, and outbox entries with one line each.
 * @module
 */
import type { Config } from "../../config.js";
import type { Channel } from "../../model.js";
import type { OutboxEntry, OutboxState, Store, StoredMessage } from "../../store/types.js";
import { asksForHuman } from "../handoff.js";
import { mediaId, unavailableOf } from "../media.js";
import { mediaRefs } from "../omni-map.js";
import { channelOfConversation, consoleChannel, summarize, summarizeJob } from "./live.js";
import type { ConsoleConversation, ConsoleOutboxEntry, OutboxPage, Paged, Transcript, TranscriptLine, TranscriptMedia } from "./types.js";

/** Messages a text search reads, newest first (a search is a bounded scan, not an index). */
export const SEARCH_SCAN = 5000;
/** Lines of a transcript in each direction (the newest). */
export const TRANSCRIPT_LINES = 200;

const OUTBOUND_KINDS = new Set(["kf_send", "app_send", "bot_reply"]);
const ALL_STATES: OutboxState[] = ["pending", "inflight", "done", "refused", "dead"];

/** The customer of a conversation: the last part of its id. */
function customerOf(conversationId: string): string {
  return conversationId.slice(conversationId.lastIndexOf(":") + 1);
}

/** What the views need. */
export interface ViewSources {
  store: Store;
  config: Config;
  /** A same-origin link to a stored media file (its signed `/media/…` path). */
  mediaLink(tenant: string, id: string): string;
}

/** Filters of the Conversations page. */
export interface ConversationQuery {
  tenant?: string;
  channel?: Channel;
  /** Text searched (case-insensitive) in the newest {@link SEARCH_SCAN} messages. */
  q?: string;
  limit: number;
  before?: number;
}

/** The Conversations list: the store's summaries, or the conversations whose recent messages match `q`. */
export async function conversations(s: ViewSources, query: ConversationQuery): Promise<Paged<ConsoleConversation>> {
  const filter = { ...(query.tenant !== undefined ? { tenant: query.tenant } : {}), ...(query.channel !== undefined ? { channel: query.channel } : {}) };
  if (query.q === undefined) {
    const page = await s.store.listConversations({ limit: query.limit, ...(query.before !== undefined ? { before: query.before } : {}), ...filter });
    const items = page.map((c) => ({ ...c, channel: consoleChannel(c.channel), customer: customerOf(c.conversationId) }));
    return { items, next: items.length === query.limit ? (items.at(-1)?.lastSeq ?? null) : null };
  }
  const needle = query.q.toLowerCase();
  const found = new Map<string, ConsoleConversation>();
  let before: number | undefined;
  for (let read = 0; read < SEARCH_SCAN && found.size < query.limit; ) {
    const page = await s.store.listMessages(filter, { limit: 500, ...(before !== undefined ? { before } : {}) });
    if (page.length === 0) break;
    read += page.length;
    before = page.at(-1)?.seq;
    for (const m of page) {
      if (!summarize(m.message).toLowerCase().includes(needle)) continue;
      const k = `${m.tenant}\u0000${m.conversationId}`;
      const c = found.get(k);
      if (c !== undefined) c.messages++;
      else found.set(k, { tenant: m.tenant, conversationId: m.conversationId, channel: consoleChannel(m.channel), messages: 1, lastTime: m.time, lastSeq: m.seq, customer: customerOf(m.conversationId) });
    }
  }
  return { items: [...found.values()].slice(0, query.limit), next: null };
}

function mediaKind(type: string): TranscriptMedia["kind"] {
  return type === "image" || type === "voice" || type === "video" || type === "file" ? type : "other";
}

async function inboundLine(s: ViewSources, m: StoredMessage): Promise<TranscriptLine> {
  const content = m.message.content;
  const media: TranscriptMedia[] = [];
  const refs = mediaRefs(content);
  for (let i = 0; i < refs.length; i++) {
    const row = await s.store.getMedia(m.tenant, mediaId(m.seq, i));
    const available = row !== undefined && unavailableOf(row) === undefined;
    media.push({ kind: mediaKind(content.type), url: available ? s.mediaLink(m.tenant, row.id) : null, name: row?.fileName ?? `${content.type} ${i + 1}` });
  }
  const line: TranscriptLine = { key: `in:${m.seq}`, direction: "in", time: m.time, from: m.message.from?.id ?? customerOf(m.conversationId), text: summarize(m.message), media };
  if (content.type === "event") line.event = true;
  if (asksForHuman(s.config.handoff, m.message)) line.handoff = true;
  return line;
}

function outboundLine(e: OutboxEntry): TranscriptLine | undefined {
  if (!OUTBOUND_KINDS.has(e.kind)) return undefined;
  const text = summarizeJob(e.payload);
  if (text === undefined) return undefined;
  const body = (e.payload as { body?: { MsgType?: string; Content?: string; WorkerName?: string; WorkerNum?: string } }).body;
  const media: TranscriptMedia[] = [];
  const type = body?.MsgType ?? "";
  if (["image", "voice", "video", "file"].includes(type) && typeof body?.Content === "string" && /^https?:\/\//.test(body.Content)) {
    // another site's file: a link (the console's CSP shows only its own images inline)
    media.push({ kind: "other", url: body.Content, name: `${type}: ${body.Content.slice(0, 120)}` });
  }
  const line: TranscriptLine = { key: `out:${e.id}`, direction: "out", time: e.createdAt, from: body?.WorkerName || body?.WorkerNum || "gateway", text, media, state: e.state };
  if (e.state === "refused" || e.state === "dead") line.refusal = { errcode: e.errcode, error: e.lastError ?? e.state };
  return line;
}

/** A conversation's transcript: its newest messages from WeCom and answers to it, oldest first. */
export async function transcript(s: ViewSources, tenant: string, conversationId: string): Promise<Transcript> {
  const [inbound, outbound] = await Promise.all([
    s.store.listMessages({ tenant, conversationId }, { limit: TRANSCRIPT_LINES }),
    s.store.listOutbox(ALL_STATES, { limit: TRANSCRIPT_LINES, tenant, conversationId }),
  ]);
  const lines: TranscriptLine[] = [];
  for (const m of inbound) lines.push(await inboundLine(s, m));
  for (const e of outbound) {
    const l = outboundLine(e);
    if (l !== undefined) lines.push(l);
  }
  lines.sort((a, b) => a.time - b.time || a.key.localeCompare(b.key));
  return { tenant, conversationId, channel: inbound[0] !== undefined ? consoleChannel(inbound[0].channel) : channelOfConversation(conversationId), items: lines };
}

/** One line of an outbox entry's payload. */
function entrySummary(e: OutboxEntry): string {
  const job = summarizeJob(e.payload);
  if (job !== undefined) return job;
  const p = e.payload as { notice?: { MsgType?: string; Content?: string }; op?: string; index?: number; mediaCount?: number; body?: { MsgType?: string; Content?: string } };
  if (p?.notice) return `notice ${p.notice.MsgType ?? ""} ${p.notice.Content ?? ""}`.trim();
  if (p?.op === "trans") return "session state change (service_state/trans)";
  if (e.kind === "media") return `media #${(p?.index ?? 0) + 1} of message ${e.messageSeq ?? "-"}`;
  if (e.kind === "omni") return `message ${e.messageSeq ?? "-"} to the 全媒体${p?.body?.Content ? `: ${String(p.body.Content).slice(0, 120)}` : ""}`;
  return e.kind;
}

/** The Outbox page: entries in `states`, newest first, and the counts of every state. */
export async function outboxPage(s: ViewSources, states: OutboxState[], page: { limit: number; before?: number; tenant?: string }): Promise<OutboxPage> {
  const [entries, counts] = await Promise.all([s.store.listOutbox(states, page), s.store.outboxCounts()]);
  const items: ConsoleOutboxEntry[] = entries.map((e) => ({
    id: e.id,
    tenant: e.tenant,
    kind: e.kind,
    conversationId: e.conversationId,
    state: e.state,
    attempts: e.attempts,
    nextAttemptAt: e.nextAttemptAt,
    lastError: e.lastError,
    errcode: e.errcode,
    createdAt: e.createdAt,
    updatedAt: e.updatedAt,
    summary: entrySummary(e),
  }));
  return { items, next: items.length === page.limit ? (items.at(-1)?.id ?? null) : null, counts: { pending: counts.pending ?? 0, inflight: counts.inflight ?? 0, done: counts.done ?? 0, refused: counts.refused ?? 0, dead: counts.dead ?? 0 } };
}
