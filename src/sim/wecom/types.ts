/**
 * The public types of the WeCom simulator: its options, the apps and bots of the simulated corp,
 * and the records tests read (requests served, messages accepted, bot streams polled).
 * @module
 */
import type { CallbackResult } from "./callback-client.js";
import type { KfErrcodes } from "./errors.js";
import type { SimClock, SimTimers } from "./scheduler.js";

/** A self-built app of the simulated corp. */
export interface WeComSimApp {
  /** AgentID. */
  agentId: number;
  /** The app's Secret (for gettoken). */
  secret: string;
  /** The callback Token. */
  token: string;
  /** The callback EncodingAESKey (43 characters). */
  encodingAESKey: string;
  /** Where WeCom POSTs this app's callbacks. */
  callbackUrl?: string;
  /** True for the app authorised for WeChat Customer Service: it receives kf_msg_or_event and may call kf/*. */
  kf?: boolean;
  /** A name to address the app by in `setCallbackUrl` and `verifyUrl` (e.g. the gateway's config name). */
  name?: string;
  /** The app's visible members; when set, message/send lists others in `invaliduser` (81013 when none is valid). */
  members?: string[];
}

/** An AI bot (智能机器人) of the simulated corp. */
export interface WeComSimBot {
  /** The bot id (aibotid). */
  botId: string;
  /** The callback Token. */
  token: string;
  /** The callback EncodingAESKey; also the key of the bot's media files. */
  encodingAESKey: string;
  /** Where WeCom POSTs this bot's callbacks. */
  callbackUrl?: string;
  /** A name to address the bot by (e.g. the gateway's config name). */
  name?: string;
}

/** Options of `WeComSimulator.start`. */
export interface WeComSimOptions {
  /** The simulated corp's CorpID (the receiveId of app callbacks). */
  corpId: string;
  /** Its self-built apps. */
  apps: WeComSimApp[];
  /** Its AI bots. */
  bots?: WeComSimBot[];
  /** Listen address; default 127.0.0.1. */
  host?: string;
  /** Listen port; default 0 (any free port). */
  port?: number;
  /** gettoken expires_in, seconds; default 7200. */
  tokenTtlSec?: number;
  /** How long WeCom waits for a callback's answer, ms; default 5000. */
  callbackTimeoutMs?: number;
  /** Wait between callback tries, ms; default 5000. */
  retryIntervalMs?: number;
  /** Callback tries in all; default 3. */
  maxTries?: number;
  /** The clock, ms since the epoch; default Date.now. Drives every expiry, window and poll. */
  now?: () => number;
  /** A clock tests move with `sim.advance(ms)` (instead of `now`). */
  clock?: SimClock;
  /**
   * How what WeCom does later on its own (bot stream polls, msg_send_fail reports) runs:
   * `manual` (default) when a test calls `runDue()` after moving its clock, `realtime` by a timer.
   */
  timers?: SimTimers;
  /** Interval of the bot stream polls, ms; default WeCom's 1000 (lower it for realtime tests). */
  botPollIntervalMs?: number;
  /** One line per request and per callback try (never secrets, tokens or signatures). */
  log?: (line: string) => void;
  /** Errcodes the sources leave open (see {@link KfErrcodes}); defaults in DEFAULT_KF_ERRCODES. */
  errcodes?: Partial<KfErrcodes>;
  /** Largest request body accepted, bytes; default 32 MiB (larger ones get HTTP 413). */
  maxBodyBytes?: number;
}

/** One request the simulator served. */
export interface WeComSimRequest {
  /** HTTP method. */
  method: string;
  /** Path only: the query (access_token, …) is never recorded. */
  path: string;
  /** When it arrived, per the simulator's clock. */
  at: number;
  /** HTTP status answered. */
  status: number;
  /** The errcode answered, for JSON answers. */
  errcode?: number;
}

/**
 * Why WeCom answered ok but a message reached nobody (or not everyone): a repeat within the
 * duplicate-check interval, a member over 30 a minute or 1000 an hour, the customer's refusal.
 */
export type SimDropReason = "duplicate" | "per_minute" | "per_hour" | "rejected";

/** One member a message/send was addressed to, and what became of it. */
export interface WeComSimRecipient {
  /** The member's userid. */
  userid: string;
  /** True when the member received it. */
  delivered: boolean;
  /** Why not, when not. */
  dropped?: SimDropReason;
}

/** One accepted send or upload (WeCom answered errcode 0), as the gateway sent it. */
export interface WeComSimSent {
  /** `kf/send_msg`, `kf/send_msg_on_event`, `message/send`, `media/upload` or `aibot/response`. */
  api: string;
  /** The request body (for uploads: type, media_id, filename, content_type, size). */
  body: Record<string, unknown>;
  /** When, per the simulator's clock. */
  at: number;
  /** The msgid answered, for sends. */
  msgid?: string;
  /** False when WeCom answered ok but the message reached nobody (see `dropped`). */
  delivered: boolean;
  /** Why it reached nobody, when it did not. */
  dropped?: SimDropReason;
  /** message/send: each addressed member, with what became of the message for them. */
  recipients?: WeComSimRecipient[];
  /** message/send: the text or markdown was cut at 2048 bytes, as WeCom does; `shown` is what was kept. */
  truncated?: boolean;
  /** message/send text or markdown: the content as members see it (after any cut). */
  shown?: string;
}

/** A stored temporary media file. */
export interface WeComSimMedia {
  /** The bytes. */
  bytes: Buffer;
  /** Content-Type served by media/get. */
  contentType: string;
  /** File name served in Content-Disposition. */
  filename: string;
  /**
   * How media/get sends the name: `raw` (default) as WeCom does, `filename="…"` with the UTF-8 bytes
   * as they are; `rfc5987` as `filename*=UTF-8''…` after an ASCII `filename` fallback.
   */
  disposition?: "raw" | "rfc5987";
  /** image, voice, video or file. */
  type: string;
  /** When it was stored, ms (media_id is valid 3 days). */
  createdAt: number;
}

/** The result of a callback, with the decrypted passive reply when one came back. */
export type CallbackWithReply<R> = CallbackResult & {
  /** The decrypted reply (XML text for apps, parsed JSON for bots); absent when the answer was empty. */
  reply?: R;
  /** Why an answer that was not empty could not be verified and decrypted. */
  replyError?: string;
};

/** One answer the bot gave for a stream (to the user's message, or to a refresh poll). */
export interface WeComSimStreamFrame {
  /** When the answer came, per the simulator's clock. */
  at: number;
  /** `reply`: the answer to the user's message; `poll`: to WeCom's own refresh; `manual`: to a test's `botPollStream`. */
  source: "reply" | "poll" | "manual";
  /** stream.content ("" when absent): the whole text so far (replace semantics). */
  content: string;
  /** stream.finish. */
  finish: boolean;
  /** stream.msg_item, as sent. */
  msgItem?: unknown[];
  /** The template card of a stream_with_template_card answer. */
  templateCard?: Record<string, unknown>;
  /** False when WeCom would not show it (see `reason`); the user keeps seeing the previous frame. */
  accepted: boolean;
  /** The errcode of a refused frame: 846608 for an update after the 6-minute window. */
  errcode?: number;
  /** Why it was refused. */
  reason?: string;
}

/** A bot's stream as WeCom saw it: every frame received, and what the user sees. */
export interface WeComSimStream {
  /** The bot. */
  botId: string;
  /** stream.id, as the bot chose it. */
  streamId: string;
  /** The msgid of the user's message that opened it. */
  msgid: string;
  /** The user. */
  userId: string;
  /** The group chat, when in a group. */
  chatId?: string;
  /** When the user's message was sent, per the simulator's clock. */
  startedAt: number;
  /** When WeCom stops polling (startedAt + 6 minutes). */
  deadline: number;
  /** `open` while WeCom polls, `finished` after an accepted finish, `expired` after the window. */
  status: "open" | "finished" | "expired";
  /** 846608 once expired: what WeCom answers any later update ("stream message update expired"). */
  errcode?: number;
  /** Every answer received for it, in order. */
  frames: WeComSimStreamFrame[];
  /** How many refresh polls WeCom sent by itself. */
  polls: number;
  /** Polls that got no usable answer (no 200, not decryptable, not this stream). */
  pollErrors: number;
  /** What the user sees: the content of the last accepted frame. */
  shown: string;
  /** The images shown (msg_item of the accepted finishing frame). */
  images: unknown[];
  /** Template cards accepted for the message (at most one). */
  templateCards: Record<string, unknown>[];
}
