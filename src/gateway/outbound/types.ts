/**
 * What the outbound half shares: the payloads of its outbox entries (`kf_send`, `app_send`,
 * `bot_reply`), what a sender answers, the notices that tell the 全媒体 a message could not be
 * sent, and the context senders work in.
 * @module
 */
import { createHash } from "node:crypto";
import type { HttpClient } from "../../clients/http.js";
import { WeComApiError, type WeComClient, type WeComCredentials } from "../../clients/wecom.js";
import { BridgeError } from "../../errors.js";
import type { Config } from "../../config.js";
import type { Logger } from "../../log.js";
import type { OmniFromBody, OmniToBody } from "../../omni/index.js";
import type { OutboxEntry, OutboxInsert, Store } from "../../store/types.js";

/** An agent's message as queued: the 全媒体's request body, checked. */
export interface AgentMessageJob {
  op: "message";
  /** The request as the 全媒体 sent it (ToUserId, MsgType, Content, Tag, ServiceId, WorkerNum, WorkerName). */
  body: OmniFromBody;
  /** KF: how many of the text's parts fit the 5-message budget when it was queued (the rest is one refusal). */
  allowedParts?: number;
  /** KF: the customer message (its time, ms) whose budget was charged when it was queued. */
  chargedFor?: number;
}

/** A KF session operation queued by the gateway itself. */
export type KfOpJob =
  /** `kf/service_state/trans` (claiming a new session, or handing it to a WeCom servicer). */
  | { op: "trans"; openKfId: string; externalUserId: string; serviceState: number; servicerUserId?: string }
  /** `kf/send_msg_on_event` with a welcome_code or msg_code (`kf.welcomeText`, `kf.closingText`). */
  | { op: "on_event"; code: string; text: string; what: "welcome" | "closing" };

/** Payload of a `kf_send` entry. */
export type KfJob = AgentMessageJob | KfOpJob;
/** Payload of an `app_send` entry. */
export type AppJob = AgentMessageJob;
/** Payload of a `bot_reply` entry. */
export type BotJob = AgentMessageJob;

/** Payload of an `omni` entry that carries a notice (no stored message behind it). */
export interface OmniNoticeJob {
  notice: OmniToBody;
}

/** What a sender made of one attempt (a thrown error is a failure the worker classifies). */
export type SendResult =
  /** Sent (or nothing to send); `followUps` are queued with the result. */
  | { state: "done"; followUps?: OutboxInsert[] }
  /** WeCom's rule refused it: final, reported to the 全媒体 (the sender adds the notice to followUps). */
  | { state: "refused"; errcode: number; error: string; followUps?: OutboxInsert[] }
  /** Not yet (pacing): try again at `at`, without counting an attempt. */
  | { state: "later"; at: number; reason: string };

/** One channel's sender: runs the entries of its kind. */
export interface Sender {
  send(entry: OutboxEntry): Promise<SendResult>;
  /** Called before an entry becomes a dead letter, to undo what the gateway assumed of it. */
  gaveUp?(entry: OutboxEntry): Promise<void>;
}

/** What senders need of the gateway. */
export interface OutboundContext {
  readonly config: Config;
  readonly store: Store;
  readonly wecom: WeComClient;
  /** The keep-alive client for everything that is not WeCom's API (response_url, agents' media). */
  readonly http: HttpClient;
  readonly log: Logger;
  /** The CorpID of the corp this context serves: the tenant of its records. */
  readonly tenant: string;
  now(): number;
  /** Credentials of the app with this agentId, or of the KF app (`"kf"`). */
  credentials(app: number | "kf"): WeComCredentials | undefined;
  /** Count a WeCom answer of a call made outside the WeCom client (a bot's response_url); -2: no answer. */
  onWeComResult?(api: string, errcode: number): void;
  /** A long-connection bot has something to push (wakes this process's pusher when it holds the bot). */
  onBotWsWork?(botId: string): void;
}

/** Why a message could not be sent, as the 全媒体 is told (`Tag` of a notice). */
export interface FailureTag {
  /** WeCom's errcode (0 when the gateway decided without a call). */
  errcode: number;
  /** WeCom's errmsg, or the gateway's one line. */
  errmsg: string;
  /** A readable reason, for the agent. */
  reason: string;
  /** Which message: its Tag.msgid, else its MsgType and the first 200 characters of its Content. */
  ref: string;
}

/** The `ref` of an agent's message: `Tag.msgid` when it had one, else `MsgType: Content[0..200]`. */
export function messageRef(body: Pick<OmniFromBody, "MsgType" | "Content" | "Tag">): string {
  const msgid = tagMsgId(body.Tag);
  if (msgid !== undefined) return msgid;
  return `${body.MsgType}: ${[...body.Content].slice(0, 200).join("")}`;
}

/**
 * `Tag.msgid` when it is a non-empty string (a number is taken as its decimal string); anything
 * else is no key (the content key is used instead).
 */
export function tagMsgId(tag: unknown): string | undefined {
  const v = typeof tag === "object" && tag !== null && !Array.isArray(tag) ? (tag as Record<string, unknown>).msgid : undefined;
  if (typeof v === "number" && Number.isFinite(v)) return String(v);
  return typeof v === "string" && v !== "" && v.length <= 256 ? v : undefined;
}

/** A value of the Tag object, when the Tag is one. */
export function tagValue(tag: unknown, key: string): unknown {
  return typeof tag === "object" && tag !== null && !Array.isArray(tag) ? (tag as Record<string, unknown>)[key] : undefined;
}

/**
 * The notice that tells the 全媒体 about a message to `address`: `MsgType: "event"`, `Content`
 * `send_failed` (or `send_waiting` for one held until the user's next message), and the reason in
 * `Tag`. It is an `omni` entry in the conversation's lane, after the customer's messages.
 */
export function failureNotice(address: string, serviceId: string | undefined, content: "send_failed" | "send_waiting", tag: FailureTag): OutboxInsert {
  const notice: OmniToBody = { FromUserId: address, MsgType: "event", Content: content, Tag: { ...tag } };
  if (serviceId !== undefined) notice.ServiceId = serviceId;
  return { kind: "omni", conversationId: address, payload: { notice } satisfies OmniNoticeJob };
}

/** WeCom's own errmsg in one of our error lines (`api: errcode N errmsg`); other text as it is. */
export function wecomErrmsg(text: string): string {
  return text.replace(/^[a-z_/]+: (errcode -?\d+ )?/, "");
}

/**
 * The notice for an agent's message that was refused or given up. `errmsg` is cut to WeCom's own
 * words when it is one of our error lines.
 */
export function refusalOf(job: AgentMessageJob, errcode: number, errmsg: string, reason: string): OutboxInsert {
  return failureNotice(job.body.ToUserId, job.body.ServiceId, "send_failed", { errcode, errmsg: wecomErrmsg(errmsg), reason, ref: messageRef(job.body) });
}

/** A readable reason for a WeCom refusal of an agent's message, for the agent (any channel). */
export function refusalReason(errcode: number): string {
  switch (errcode) {
    case 95001:
      return "WeCom allows 5 messages per customer message: the budget is used up until the customer writes";
    case 95002:
    case 95031:
      return "the 48-hour window after the customer's last message has closed";
    case 95013:
      return "the session has ended";
    case 95018:
      return "the session's state does not allow API messages (a WeCom servicer has it, or it ended)";
    case 95030:
      return "WeCom blocks this message type for the account";
    case 81013:
      return "the member cannot receive the app's messages (not in the app's visible range, or no longer in the company)";
    case 40007:
      return "WeCom no longer has the uploaded file (invalid media_id)";
    case 45002:
    case 44004:
      return "WeCom refused the content (empty, or too long)";
    case 40123:
    case 301017:
    case 40004:
      return "WeCom refused the file's format";
    case 40006:
    case 40009:
    case 40011:
      return "WeCom refused the file's size";
    default:
      return `WeCom refused the message (errcode ${errcode})`;
  }
}

/** A number, or a string holding one (the 全媒体's Tag values come either way); undefined otherwise. */
export function tagNumber(v: unknown): number | undefined {
  const n = typeof v === "string" && v.trim() !== "" ? Number(v) : v;
  return typeof n === "number" && Number.isFinite(n) ? n : undefined;
}

/** True for an http(s) URL without white space. */
export function isHttpUrl(v: unknown): v is string {
  return typeof v === "string" && /^https?:\/\/\S+$/i.test(v);
}

/**
 * The msgid of part `part` of outbox entry `id` at WeCom (≤ 32 bytes of `[0-9a-zA-Z_-]`): the same
 * on every retry, so that WeCom drops a repeat. `salt` is the store's own (a restored or new
 * database must not reuse the msgids of another).
 */
export function wecomMsgId(salt: string, id: number, part: number): string {
  return `${salt}${id.toString(36)}_${part.toString(36)}`;
}

/** True for a failure trying again cannot help (WeCom's final answers, an agent's file that cannot be sent). */
export function isFinalFailure(e: unknown): boolean {
  if (e instanceof WeComApiError) return e.kind === "final";
  return e instanceof BridgeError && (e as { retryable?: unknown }).retryable === false;
}

/** A short stable hash (hex) of some strings, for keys. */
export function keyHash(...parts: string[]): string {
  const h = createHash("sha256");
  for (const p of parts) h.update(p).update("\u0000");
  return h.digest("hex").slice(0, 40);
}
