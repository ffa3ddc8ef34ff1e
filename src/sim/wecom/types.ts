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
  /** The long-connection Secret (aibot_subscribe); without one every subscribe is refused with 853000. */
  secret?: string;
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

/** One WebSocket connection to the simulator's AI-bot long-connection endpoint. */
export interface WeComSimWsConnection {
  /** The simulator's id of the connection (`ws1`, `ws2`, …). */
  id: string;
  /** The bot it subscribed, once a subscribe succeeded. */
  botId?: string;
  /** True while it is the bot's subscribed connection (false before subscribe, after a kick or close). */
  subscribed: boolean;
  /** True until the socket closed. */
  open: boolean;
  /** True while it answers nothing (no acks, no pongs, no callbacks): a half-dead link. */
  silent: boolean;
  /** When it opened, per the simulator's clock. */
  openedAt: number;
  /** When it closed, per the simulator's clock. */
  closedAt?: number;
  /** Why it ended: `client` closed it, `kicked` by a newer subscribe, `auth` after a failed subscribe, `dropped` by a test, `server` on close(). */
  endedBy?: "client" | "kicked" | "auth" | "dropped" | "server";
}

/** A media file a user sends in a long-connection message: its bytes, and optionally a name for Content-Disposition. */
export type WeComSimWsMediaInput = Uint8Array | { bytes: Uint8Array; filename?: string };

/** A user's message to a bot over the long connection (`botUserSendsWs`). */
export interface WeComSimWsUserMessage {
  /** The sender's userid. */
  userid: string;
  /** text, image, mixed, voice, file, video (or any other: give its object in `fields`). */
  msgtype: string;
  /** msgtype text: the content. */
  text?: string;
  /** msgtype image: served encrypted at a URL with its own aeskey (or an object passed as is). */
  image?: WeComSimWsMediaInput | Record<string, unknown>;
  /** msgtype mixed: the items in order, text as strings and images as bytes. */
  mixed?: (string | Uint8Array)[];
  /** msgtype voice: the transcript WeCom sends (voice.content). */
  voice?: string;
  /** msgtype file: served encrypted at a URL with its own aeskey (or an object passed as is). */
  file?: WeComSimWsMediaInput | Record<string, unknown>;
  /** msgtype video: served encrypted at a URL with its own aeskey (or an object passed as is). */
  video?: WeComSimWsMediaInput | Record<string, unknown>;
  /** The group chat; with it chattype defaults to group. */
  chatid?: string;
  /** single (default without chatid) or group. */
  chattype?: "single" | "group";
  /** More fields of the body (e.g. `quote`, or the object of another msgtype). */
  fields?: Record<string, unknown>;
}

/** An event to a bot over the long connection (`botEventWs`): the rest of the fields go into `event`. */
export interface WeComSimWsEvent {
  /** The user. */
  userid: string;
  /** enter_chat, template_card_event, feedback_event, or any other. */
  eventtype: string;
  /** The group chat, when in a group. */
  chatid?: string;
  /** single or group (absent unless given or chatid is). */
  chattype?: "single" | "group";
  /** The event's details, e.g. `template_card_event: {…}` (WeCom nests them under the event's name). */
  [detail: string]: unknown;
}

/** A callback frame the simulator pushed on a connection. */
export interface WeComSimWsPushed {
  /** The message's (or event's) msgid. */
  msgid: string;
  /** The frame's req_id (the key of the replies). */
  reqId: string;
  /** The connection it went out on. */
  connectionId: string;
  /** False when the connection was silent (the frame was lost on the half-dead link). */
  delivered: boolean;
}

/** One aibot_respond_msg stream frame and what WeCom answered. */
export interface WeComSimWsStreamFrame {
  /** When it came, per the simulator's clock. */
  at: number;
  /** stream.content ("" when absent): the whole text so far. */
  content: string;
  /** stream.finish. */
  finish: boolean;
  /** stream.msg_item, as sent (taken but not shown in long-connection mode). */
  msgItem?: unknown[];
  /** stream.feedback.id, as sent. */
  feedbackId?: string;
  /** The template card of a stream_with_template_card frame. */
  templateCard?: Record<string, unknown>;
  /** The errcode answered (0: taken). */
  errcode: number;
  /** The errmsg answered. */
  errmsg: string;
}

/** A stream a bot answered a long-connection message with, as WeCom saw it. */
export interface WeComSimWsStream {
  /** The bot. */
  botId: string;
  /** The connection the frames came on. */
  connectionId: string;
  /** The callback's req_id the frames carry. */
  reqId: string;
  /** The user message's msgid. */
  msgid: string;
  /** stream.id, as the bot chose it. */
  streamId: string;
  /** The user. */
  userId: string;
  /** The group chat, when in a group. */
  chatId?: string;
  /** When the user's message was sent, per the simulator's clock. */
  startedAt: number;
  /** From then on frames are refused with 846608 (startedAt + 6 minutes). */
  deadline: number;
  /** `open`, `finished` after a taken finish, `expired` once the deadline passed unfinished. */
  status: "open" | "finished" | "expired";
  /** Every frame received, in order, with its errcode. */
  frames: WeComSimWsStreamFrame[];
  /** What the user sees: the content of the last taken frame. */
  shown: string;
  /** stream.feedback.id of the first frame, when given. */
  feedbackId?: string;
  /** Template cards taken for the message (at most one). */
  templateCards: Record<string, unknown>[];
}

/** An aibot_send_msg, or a one-off (not stream) aibot_respond_msg, and what WeCom answered. */
export interface WeComSimWsSend {
  /** The bot. */
  botId: string;
  /** The connection it came on. */
  connectionId: string;
  /** aibot_send_msg or aibot_respond_msg. */
  cmd: "aibot_send_msg" | "aibot_respond_msg";
  /** The frame's req_id. */
  reqId: string;
  /** When, per the simulator's clock. */
  at: number;
  /** Where it went: send_msg's chatid ("" when missing); for a reply the group chatid or the user's userid. */
  chatid: string;
  /** The body's msgtype ("" when missing). */
  msgtype: string;
  /** The frame's body. */
  body: Record<string, unknown>;
  /** For a reply: the user message's msgid. */
  msgid?: string;
  /** The errcode answered (0: sent). */
  errcode: number;
  /** The errmsg answered. */
  errmsg: string;
}

/** An aibot_respond_welcome_msg or aibot_respond_update_msg, and what WeCom answered. */
export interface WeComSimWsEventReply {
  /** The bot. */
  botId: string;
  /** The connection it came on. */
  connectionId: string;
  /** The command. */
  cmd: "aibot_respond_welcome_msg" | "aibot_respond_update_msg";
  /** The frame's req_id (the event's, when valid). */
  reqId: string;
  /** When, per the simulator's clock. */
  at: number;
  /** The event answered, when the req_id named one of this connection. */
  eventtype?: string;
  /** The event's msgid, when known. */
  msgid?: string;
  /** The event's user, when known. */
  userId?: string;
  /** The frame's body. */
  body: Record<string, unknown>;
  /** The errcode answered (0: shown). */
  errcode: number;
  /** The errmsg answered. */
  errmsg: string;
}

/** One chunked media upload over the long connection (init, chunks, finish). */
export interface WeComSimWsUpload {
  /** The bot. */
  botId: string;
  /** The connection it came on. */
  connectionId: string;
  /** The upload_id answered to init. */
  uploadId: string;
  /** image, voice, video or file. */
  type: string;
  /** init's filename. */
  filename: string;
  /** init's total_size. */
  totalSize: number;
  /** init's total_chunks. */
  totalChunks: number;
  /** init's md5, when given. */
  md5?: string;
  /** When init came, per the simulator's clock. */
  startedAt: number;
  /** Distinct chunk indexes received. */
  chunks: number;
  /** `open` until finish; `finished` with a media_id; `failed` when finish was refused. */
  status: "open" | "finished" | "failed";
  /** finish's errcode, once it came. */
  errcode?: number;
  /** finish's errmsg, once it came. */
  errmsg?: string;
  /** The media_id, when finished. */
  mediaId?: string;
  /** finish's created_at (unix seconds), when finished. */
  createdAt?: number;
}

/** A media file uploaded over the long connection. */
export interface WeComSimWsMedia {
  /** The bot that uploaded it (only its connections may send it). */
  botId: string;
  /** image, voice, video or file. */
  type: string;
  /** The upload's filename. */
  filename: string;
  /** The bytes. */
  bytes: Buffer;
  /** When finish came, ms (valid 3 days). */
  createdAt: number;
}

/** One frame on a long connection, either way (upload chunk data and subscribe secrets elided). */
export interface WeComSimWsFrame {
  /** When, per the simulator's clock. */
  at: number;
  /** The connection. */
  connectionId: string;
  /** The bot, once subscribed. */
  botId?: string;
  /** `in` from the client, `out` from the simulator. */
  direction: "in" | "out";
  /** The frame's cmd (absent on acks). */
  cmd?: string;
  /** headers.req_id, when present. */
  reqId?: string;
  /** The errcode of an ack or error frame. */
  errcode?: number;
  /** True for an incoming frame a silent connection ignored. */
  ignored?: boolean;
  /** The frame (parsed JSON, or the text when it was not JSON). */
  frame: unknown;
}
