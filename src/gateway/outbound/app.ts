/**
 * The self-built app sender: agents' answers to members through `message/send` (`app_send`
 * entries; `ToUserId` is `app:{corpId}:{agentId}:{userId}`).
 *
 * - **What goes**: text and markdown, split at 2048 bytes on grapheme boundaries into several
 *   messages in order (WeCom silently truncates longer ones); image, voice, video and file through
 *   `media/upload` ({@link prepareAgentMedia}: what WeCom would not take as the agent's type goes as a
 *   file); link as a one-article `news` (`Tag.title`, `Tag.url`, `Tag.description`, `Tag.picUrl`,
 *   `Content` as the url or title when those are missing). Any other MsgType is refused (errcode 0).
 * - **Pacing**: WeCom silently drops more than 30 messages a minute or 1,000 an hour to one member
 *   of an app. Every part is recorded per (agentId, member) in the store's shared state (sliding
 *   windows, reserved before the call and stamped again when the call returns, so that a slow
 *   answer cannot make us undercount; 1 s of margin); when the next part would exceed a window the
 *   entry answers `later` with the time a slot frees, and the outbox keeps its lane's order.
 * - **Progress and retries**: the record says which parts of an entry WeCom confirmed; a retry
 *   continues after them. Every message goes with `enable_duplicate_check: 1` and
 *   `duplicate_check_interval: 1800`, so a part whose answer was lost (a crash between WeCom's
 *   answer and our record, a timeout) is dropped by WeCom when sent again within 30 minutes. A retry
 *   more than 30 minutes later (a replayed dead letter) may deliver that one part twice.
 * - **Identical content**: WeCom's duplicate check drops *any* identical message to the member
 *   within the interval, not only our retries: an agent who writes "好的" twice in ten minutes would
 *   lose the second. The record keeps a hash of each part, and a part identical to another entry's
 *   (or another part's) sent within the last 31 minutes goes with `enable_duplicate_check: 0`: it
 *   arrives, and only that part loses the protection against a crash-time repeat.
 * - **Refusals**: the member in `invaliduser`, 81013, and any other final WeCom answer (see
 *   `wecom/errcodes.ts`) end the entry `refused` with a notice to the 全媒体 ({@link refusalOf});
 *   so does an agent's file WeCom cannot take (too small, too large, a refused URL). Transient,
 *   token and configuration failures are thrown for the worker to retry.
 * @module
 */
import { AgentMediaError } from "../../clients/agent-media.js";
import { WeComApiError, type WeComCredentials } from "../../clients/wecom.js";
import { BridgeError } from "../../errors.js";
import type { OutboxEntry } from "../../store/types.js";
import { type ConversationAddress, parseConversationAddress } from "../../wecom/address.js";
import { splitUtf8 } from "../../wecom/text-split.js";
import { prepareAgentMedia, type WeComMediaType } from "./media.js";
import { type AgentMessageJob, type AppJob, isHttpUrl, keyHash, type OutboundContext, refusalOf, refusalReason, type Sender, type SendResult, tagValue, wecomErrmsg } from "./types.js";

/** message/send text limit, bytes (longer texts are truncated by WeCom). */
export const APP_TEXT_MAX_BYTES = 2048;
/** message/send markdown limit, bytes. */
export const APP_MARKDOWN_MAX_BYTES = 2048;
/** news article title limit, bytes. */
export const APP_NEWS_TITLE_MAX_BYTES = 128;
/** news article description limit, bytes. */
export const APP_NEWS_DESCRIPTION_MAX_BYTES = 512;
/** duplicate_check_interval sent, seconds (WeCom's default). */
export const APP_DUPLICATE_CHECK_SEC = 1800;
/** Messages WeCom delivers to one member of an app per minute… */
export const APP_PER_MEMBER_PER_MINUTE = 30;
/** …and per hour. */
export const APP_PER_MEMBER_PER_HOUR = 1000;
/** Added to both pacing windows, ms (clocks and WeCom's own rounding). */
export const APP_PACE_MARGIN_MS = 1000;

/** MsgTypes an agent may send to a member of a self-built app. */
export const APP_MSG_TYPES: ReadonlySet<string> = new Set(["text", "markdown", "image", "voice", "video", "file", "link"]);

const MINUTE_WINDOW_MS = 60_000 + APP_PACE_MARGIN_MS;
const HOUR_WINDOW_MS = 3600_000 + APP_PACE_MARGIN_MS;
/** Identical content within this long is taken as WeCom would drop it (the interval plus a minute). */
const DUPLICATE_WINDOW_MS = APP_DUPLICATE_CHECK_SEC * 1000 + 60_000;

type AppAddress = Extract<ConversationAddress, { channel: "app" }>;

/** One part recorded for pacing (short keys: up to 1,000 of these per member). */
interface PaceRecord {
  /** When it was sent (reserved, then stamped again when the call returned), ms. */
  t: number;
  /** Outbox entry id. */
  e: number;
  /** Part index. */
  p: number;
  /** Hash of the message (msgtype and content). */
  h: string;
  /** enable_duplicate_check sent (1 or 0). */
  d: 0 | 1;
  /** 1 once WeCom answered ok. */
  ok: 0 | 1;
}

/** The pacing record of one member of one app. */
interface PaceState {
  sends: PaceRecord[];
}

/** The shared state key of a member's pacing record (WeCom compares userids without case). */
export function appPaceKey(agentId: number, userId: string): string {
  return `pace:app:${agentId}:${userId.toLowerCase()}`;
}

function paceState(v: unknown, now: number): PaceState {
  const sends = typeof v === "object" && v !== null && Array.isArray((v as PaceState).sends) ? (v as PaceState).sends : [];
  return { sends: sends.filter((s) => typeof s === "object" && s !== null && typeof s.t === "number" && s.t > now - HOUR_WINDOW_MS) };
}

/** What the record says about a part about to be sent. */
type PaceCheck =
  /** WeCom confirmed it earlier: skip. */
  | { kind: "confirmed" }
  /** Reserved by an earlier attempt whose answer never came: send again, the same way. */
  | { kind: "reserved"; dupCheck: 0 | 1 }
  /** A new part; a slot is free now. */
  | { kind: "free" }
  /** A new part; no slot until `at`. */
  | { kind: "later"; at: number; reason: string };

/**
 * When a member with these sends may get one more message: `now` when both windows have room,
 * else the moment the oldest sends that fill them leave.
 */
export function nextPaceSlot(times: readonly number[], now: number): { at: number; reason?: string } {
  const hour = times.filter((t) => t > now - HOUR_WINDOW_MS).sort((a, b) => a - b);
  const minute = hour.filter((t) => t > now - MINUTE_WINDOW_MS);
  let at = now;
  let reason: string | undefined;
  if (minute.length >= APP_PER_MEMBER_PER_MINUTE) {
    at = Math.max(at, (minute[minute.length - APP_PER_MEMBER_PER_MINUTE] as number) + MINUTE_WINDOW_MS);
    reason = `paced: ${APP_PER_MEMBER_PER_MINUTE}/min`;
  }
  if (hour.length >= APP_PER_MEMBER_PER_HOUR) {
    const hourAt = (hour[hour.length - APP_PER_MEMBER_PER_HOUR] as number) + HOUR_WINDOW_MS;
    if (hourAt >= at) reason = `paced: ${APP_PER_MEMBER_PER_HOUR}/h`;
    at = Math.max(at, hourAt);
  }
  return reason === undefined ? { at } : { at, reason };
}

function checkPart(state: PaceState, now: number, entryId: number, part: number): PaceCheck {
  const mine = state.sends.find((s) => s.e === entryId && s.p === part);
  if (mine !== undefined) return mine.ok === 1 ? { kind: "confirmed" } : { kind: "reserved", dupCheck: mine.d };
  const slot = nextPaceSlot(
    state.sends.map((s) => s.t),
    now,
  );
  return slot.at > now ? { kind: "later", at: slot.at, reason: slot.reason ?? "paced" } : { kind: "free" };
}

/** One message of an agent's message: its msgtype and content, built when it is about to go. */
type PartBody = { msgtype: string } & Record<string, unknown>;

function str(v: unknown): string | undefined {
  return typeof v === "string" && v.trim() !== "" ? v : undefined;
}

/** The first part of a text cut at `max` bytes on a grapheme boundary (WeCom cuts anywhere). */
function cut(text: string, max: number): string {
  return splitUtf8(text, max)[0] ?? "";
}

/** Sends `app_send` entries through `message/send`. */
export class AppSender implements Sender {
  readonly #ctx: OutboundContext;

  /** @param ctx the gateway's outbound context */
  constructor(ctx: OutboundContext) {
    this.#ctx = ctx;
  }

  /** Run one entry: send its parts not yet confirmed, or wait for a pacing slot, or refuse. */
  async send(entry: OutboxEntry): Promise<SendResult> {
    const job = entry.payload as AppJob;
    const refuse = (errcode: number, errmsg: string, reason: string): SendResult => ({ state: "refused", errcode, error: reason, followUps: [refusalOf(job, errcode, errmsg, reason)] });
    const address = parseConversationAddress(job.body.ToUserId);
    if (address?.channel !== "app") return refuse(0, "not an app conversation", "ToUserId is not the address of a self-built app's member");
    const creds = this.#ctx.credentials(address.agentId);
    if (creds === undefined || creds.corpId !== address.corpId) {
      return refuse(0, "no such app", `the gateway has no self-built app ${address.agentId} of corp ${address.corpId} configured`);
    }
    const type = job.body.MsgType;
    if (!APP_MSG_TYPES.has(type)) return refuse(0, "unsupported MsgType", `MsgType ${type} cannot be sent to a member of a self-built app`);

    let parts: (() => Promise<PartBody>)[];
    switch (type) {
      case "text":
      case "markdown": {
        const texts = splitUtf8(job.body.Content, type === "text" ? APP_TEXT_MAX_BYTES : APP_MARKDOWN_MAX_BYTES);
        if (texts.length === 0) return refuse(0, "empty content", "Content is empty");
        parts = texts.map((content) => async () => ({ msgtype: type, [type]: { content } }));
        break;
      }
      case "link": {
        const news = this.#news(job);
        if (typeof news === "string") return refuse(0, "invalid link", news);
        parts = [async () => news];
        break;
      }
      default: {
        const url = job.body.Content;
        parts = [
          async () => {
            const m = await prepareAgentMedia(this.#ctx, type as WeComMediaType, url, creds);
            return { msgtype: m.type, [m.type]: { media_id: m.mediaId } };
          },
        ];
      }
    }
    return this.#sendParts(entry, job, address, creds, parts, refuse);
  }

  /** A link as a one-article news body, or why it cannot be one. */
  #news(job: AgentMessageJob): PartBody | string {
    const { Content: content, Tag: tag } = job.body;
    const url = str(tagValue(tag, "url")) ?? str(content);
    if (!isHttpUrl(url)) return "a link needs Tag.url (or Content) as an http(s) URL";
    const title = str(tagValue(tag, "title")) ?? (str(content) !== undefined && content !== url ? content : url);
    const article: Record<string, unknown> = { title: cut(title, APP_NEWS_TITLE_MAX_BYTES), url };
    const description = str(tagValue(tag, "description"));
    if (description !== undefined) article.description = cut(description, APP_NEWS_DESCRIPTION_MAX_BYTES);
    const picUrl = str(tagValue(tag, "picUrl"));
    if (isHttpUrl(picUrl)) article.picurl = picUrl;
    return { msgtype: "news", news: { articles: [article] } };
  }

  async #sendParts(
    entry: OutboxEntry,
    job: AgentMessageJob,
    to: AppAddress,
    creds: WeComCredentials,
    parts: (() => Promise<PartBody>)[],
    refuse: (errcode: number, errmsg: string, reason: string) => SendResult,
  ): Promise<SendResult> {
    const ctx = this.#ctx;
    const key = appPaceKey(to.agentId, to.userId);
    const n = parts.length;
    const sentBefore = (i: number) => (i > 0 ? ` (parts 1-${i} of ${n} were sent)` : "");

    // a look before anything costly (a download): done already, or no slot for the next part
    const peek = paceState(await ctx.store.getState(ctx.tenant, key, ctx.now()), ctx.now());
    let first = 0;
    while (first < n && checkPart(peek, ctx.now(), entry.id, first).kind === "confirmed") first++;
    if (first === n) return { state: "done" };
    const look = checkPart(peek, ctx.now(), entry.id, first);
    if (look.kind === "later") return { state: "later", at: look.at, reason: look.reason };

    for (let i = first; i < n; i++) {
      let body: PartBody;
      try {
        body = await (parts[i] as () => Promise<PartBody>)();
      } catch (e) {
        const final = this.#finalMediaProblem(e);
        if (final === undefined) throw e;
        ctx.log.info("app message refused: the agent's file cannot be sent", { outbox: entry.id, errcode: final.errcode, code: final.errmsg });
        return refuse(final.errcode, final.errmsg, `${final.reason}${sentBefore(i)}`);
      }
      const hash = keyHash(JSON.stringify(body)).slice(0, 16);

      // reserve the slot (or find the reservation of an earlier attempt), atomically
      let check: PaceCheck = { kind: "free" };
      let dupCheck: 0 | 1 = 1;
      await ctx.store.updateState(ctx.tenant, key, job.body.ToUserId, ctx.now(), (current) => {
        const now = ctx.now();
        const state = paceState(current, now);
        check = checkPart(state, now, entry.id, i);
        if (check.kind === "confirmed" || check.kind === "later") return undefined;
        if (check.kind === "reserved") {
          dupCheck = check.dupCheck;
          const mine = state.sends.find((s) => s.e === entry.id && s.p === i) as PaceRecord;
          mine.t = Math.max(mine.t, now);
        } else {
          const repeat = state.sends.some((s) => s.h === hash && s.t > now - DUPLICATE_WINDOW_MS);
          dupCheck = repeat ? 0 : 1;
          state.sends.push({ t: now, e: entry.id, p: i, h: hash, d: dupCheck, ok: 0 });
        }
        return { value: state, expiresAt: Math.max(...state.sends.map((s) => s.t)) + HOUR_WINDOW_MS };
      });
      const decided = check as PaceCheck;
      if (decided.kind === "confirmed") continue;
      if (decided.kind === "later") {
        ctx.log.debug("app message paced", { outbox: entry.id, part: i, at: decided.at });
        return { state: "later", at: decided.at, reason: decided.reason };
      }

      const request: Record<string, unknown> = { touser: to.userId, agentid: to.agentId, ...body, enable_duplicate_check: dupCheck };
      if (dupCheck === 1) request.duplicate_check_interval = APP_DUPLICATE_CHECK_SEC;
      let ok = false;
      let invalid = false;
      try {
        const answer = await ctx.wecom.appSendMessage(creds, request);
        invalid = answer.invalidUser.some((u) => u.toLowerCase() === to.userId.toLowerCase());
        ok = !invalid;
      } catch (e) {
        if (!(e instanceof WeComApiError) || e.kind !== "final") throw e;
        ctx.log.info("app message refused by WeCom", { outbox: entry.id, part: i, errcode: e.errcode });
        return refuse(e.errcode, wecomErrmsg(e.message), `${refusalReason(e.errcode)}${sentBefore(i)}`);
      } finally {
        await this.#settle(key, job.body.ToUserId, entry.id, i, ok);
      }
      if (invalid) {
        ctx.log.info("app message refused by WeCom: invaliduser", { outbox: entry.id, part: i });
        return refuse(81013, "invaliduser", `${refusalReason(81013)}${sentBefore(i)}`);
      }
    }
    return { state: "done" };
  }

  /** Stamp a part's record with the time its call returned, and mark it confirmed when WeCom took it. */
  async #settle(key: string, conversationId: string, entryId: number, part: number, ok: boolean): Promise<void> {
    const ctx = this.#ctx;
    await ctx.store.updateState(ctx.tenant, key, conversationId, ctx.now(), (current) => {
      const now = ctx.now();
      const state = paceState(current, now);
      const mine = state.sends.find((s) => s.e === entryId && s.p === part);
      if (mine === undefined) return undefined;
      mine.t = Math.max(mine.t, now);
      if (ok) mine.ok = 1;
      return { value: state, expiresAt: Math.max(...state.sends.map((s) => s.t)) + HOUR_WINDOW_MS };
    });
  }

  /** A media failure that will not go away (the file, the URL, WeCom's final answer to the upload), as a refusal; undefined for others. */
  #finalMediaProblem(e: unknown): { errcode: number; errmsg: string; reason: string } | undefined {
    if (e instanceof WeComApiError) return e.kind === "final" ? { errcode: e.errcode, errmsg: wecomErrmsg(e.message), reason: refusalReason(e.errcode) } : undefined;
    if (e instanceof AgentMediaError) return e.retryable ? undefined : { errcode: 0, errmsg: e.code, reason: `the agent's file cannot be fetched: ${e.message}` };
    if (e instanceof BridgeError && (e as { retryable?: unknown }).retryable === false) return { errcode: 0, errmsg: e.code, reason: `the agent's file cannot be sent: ${e.message}` };
    return undefined;
  }
}
