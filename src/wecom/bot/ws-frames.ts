/**
 * Frames of the AI bot long connection (智能机器人长连接, a WebSocket carrying one JSON object per
 * text message): command names, frame builders, a tolerant parser of incoming frames and the
 * client's `req_id` generator. Pure: no I/O, no clock and no randomness of its own (both are passed
 * in), so that the I/O client (`clients/aibot-ws.ts`) and the simulator can share it.
 *
 * Envelope: a request or a callback is `{cmd, headers: {req_id}, body}` (`ping` has no `body`); an
 * answer ("ack") has no `cmd` and carries `headers.req_id` (the request's, echoed), `errcode`,
 * `errmsg` and, for commands that return data, `body`. WeCom answers some malformed requests with
 * an error frame that has no `headers` at all.
 * @module
 */
import { createHash } from "node:crypto";
import { EncodeError } from "../../errors.js";
import { isObject, type JsonObject } from "../fields.js";

const F = "aibot_ws";

/** Command names of the long connection. */
export const AIBOT_CMD = {
  /** Client → server, the first frame: `{bot_id, secret}`. */
  subscribe: "aibot_subscribe",
  /** Client → server heartbeat, without a body. */
  ping: "ping",
  /** Server → client: a user's message. */
  msgCallback: "aibot_msg_callback",
  /** Server → client: an event (enter_chat, template_card_event, feedback_event, disconnected_event, …). */
  eventCallback: "aibot_event_callback",
  /** Client → server: the answer to a message callback, on the callback's req_id. */
  respondMsg: "aibot_respond_msg",
  /** Client → server: the welcome answer to an enter_chat event, on the event's req_id. */
  respondWelcomeMsg: "aibot_respond_welcome_msg",
  /** Client → server: a card update answering a template_card_event, on the event's req_id. */
  respondUpdateMsg: "aibot_respond_update_msg",
  /** Client → server: a message of the bot's own (to a chatid), on a fresh req_id. */
  sendMsg: "aibot_send_msg",
  /** Client → server: start a media upload; the ack's body has `upload_id`. */
  uploadMediaInit: "aibot_upload_media_init",
  /** Client → server: one chunk of a media upload. */
  uploadMediaChunk: "aibot_upload_media_chunk",
  /** Client → server: end a media upload; the ack's body has `type`, `media_id`, `created_at`. */
  uploadMediaFinish: "aibot_upload_media_finish",
} as const;

/** The eventtype of the event telling that another connection took the bot over. */
export const AIBOT_DISCONNECTED_EVENT = "disconnected_event";

/** Largest media chunk, bytes before base64 (512 KiB). */
export const AIBOT_UPLOAD_CHUNK_BYTES = 512 * 1024;
/** Most chunks of one media upload. */
export const AIBOT_UPLOAD_MAX_CHUNKS = 100;

/** A frame as sent by the client or as a callback from the server. */
export interface AibotFrame {
  /** The command. */
  cmd: string;
  /** Headers: the request id. */
  headers: { req_id: string };
  /** The body; absent on `ping`. */
  body?: JsonObject;
}

/** An incoming frame, classified by {@link parseAibotFrame}. */
export type AibotParsedFrame =
  /** An answer to a request. `reqId` is absent on the error frames WeCom sends for malformed requests. */
  | { kind: "ack"; reqId?: string; errcode: number; errmsg: string; body?: JsonObject }
  /** A server-initiated frame (`aibot_msg_callback`, `aibot_event_callback`, or a command we do not know). */
  | { kind: "callback"; cmd: string; reqId: string; body: JsonObject }
  /** Not a frame of this protocol. `reason` names what is wrong and never repeats the frame's content. */
  | { kind: "invalid"; reason: string };

/**
 * The text of a frame. `body` is left out when undefined (as `ping` requires: a `ping` with an empty
 * body is reported to get the socket dropped).
 */
export function buildAibotFrame(cmd: string, reqId: string, body?: JsonObject): string {
  const frame: AibotFrame = body === undefined ? { cmd, headers: { req_id: reqId } } : { cmd, headers: { req_id: reqId }, body };
  return JSON.stringify(frame);
}

/** The `aibot_subscribe` frame. It carries the secret: never log it. */
export function buildAibotSubscribe(reqId: string, botId: string, secret: string): string {
  return buildAibotFrame(AIBOT_CMD.subscribe, reqId, { bot_id: botId, secret });
}

/** The `ping` frame (no body). */
export function buildAibotPing(reqId: string): string {
  return buildAibotFrame(AIBOT_CMD.ping, reqId);
}

/**
 * A client req_id: `${cmd}_${now}_${8 hex}`, the hex from `random` (a source of numbers in [0, 1),
 * like `Math.random`). `n` offsets the random part, for a caller that needs another id for the
 * same draw (a collision with an id still in flight).
 */
export function newAibotReqId(cmd: string, random: () => number, now: number, n = 0): string {
  const r = Math.floor(Math.min(Math.max(random(), 0), 1 - 2 ** -32) * 2 ** 32);
  const hex = ((r + n) >>> 0).toString(16).padStart(8, "0");
  return `${cmd}_${Math.floor(now)}_${hex}`;
}

/** ASCII control characters that are removed before parsing: all of C0 but TAB and LF. */
const STRIPPED_CONTROLS = /[\u0000-\u0008\u000b-\u001f]/g;

/**
 * Remove ASCII control characters (0x00–0x1F) except TAB and LF. WeCom has been seen sending raw
 * control characters inside JSON strings, which `JSON.parse` refuses.
 */
export function stripAibotControlChars(text: string): string {
  return text.replace(STRIPPED_CONTROLS, "");
}

/** Raw TAB and LF inside JSON string literals, written as `\t` and `\n` (outside strings they are whitespace). */
function escapeTabLfInStrings(text: string): string {
  let out = "";
  let inString = false;
  let escaped = false;
  let from = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (escaped) escaped = false;
      else if (c === 0x5c) escaped = true;
      else if (c === 0x22) inString = false;
      else if (c === 0x09 || c === 0x0a) {
        out += text.slice(from, i) + (c === 0x09 ? "\\t" : "\\n");
        from = i + 1;
      }
    } else if (c === 0x22) inString = true;
  }
  return out + text.slice(from);
}

/** An errcode from a number or a numeric string; undefined otherwise. */
function errcodeOf(v: unknown): number | undefined {
  if (typeof v === "number" && Number.isInteger(v)) return v;
  if (typeof v === "string" && /^-?\d+$/.test(v.trim())) return Number(v.trim());
  return undefined;
}

/**
 * Parse an incoming text frame, tolerantly: control characters other than TAB and LF are removed,
 * and raw TAB/LF left inside strings are escaped, before `JSON.parse`. A frame with a `cmd` is a
 * callback (it must carry `headers.req_id`; a missing or non-object `body` reads as `{}`); a frame
 * without `cmd` is an ack when it has an `errcode` (a number or a numeric string). Never throws.
 */
export function parseAibotFrame(text: string): AibotParsedFrame {
  const cleaned = stripAibotControlChars(text);
  let value: unknown;
  try {
    value = JSON.parse(cleaned);
  } catch {
    try {
      value = JSON.parse(escapeTabLfInStrings(cleaned));
    } catch {
      return { kind: "invalid", reason: "not JSON" };
    }
  }
  if (!isObject(value)) return { kind: "invalid", reason: "not a JSON object" };
  const headers = isObject(value.headers) ? value.headers : undefined;
  const rawReqId = headers?.req_id;
  const reqId = typeof rawReqId === "string" && rawReqId !== "" ? rawReqId : typeof rawReqId === "number" ? String(rawReqId) : undefined;
  const body = isObject(value.body) ? value.body : undefined;
  const cmd = value.cmd;
  if (typeof cmd === "string" && cmd !== "") {
    if (reqId === undefined) return { kind: "invalid", reason: "a command frame without headers.req_id" };
    return { kind: "callback", cmd, reqId, body: body ?? {} };
  }
  if (cmd !== undefined && cmd !== null && cmd !== "") return { kind: "invalid", reason: "cmd is not a string" };
  const errcode = errcodeOf(value.errcode);
  if (errcode === undefined) return { kind: "invalid", reason: "neither cmd nor errcode" };
  const errmsg = typeof value.errmsg === "string" ? value.errmsg : "";
  const ack: AibotParsedFrame = { kind: "ack", errcode, errmsg };
  if (reqId !== undefined) ack.reqId = reqId;
  if (body !== undefined) ack.body = body;
  return ack;
}

/** The eventtype of an `aibot_event_callback` body (`body.event.eventtype`); undefined when absent. */
export function aibotEventType(body: JsonObject): string | undefined {
  const event = body.event;
  if (!isObject(event)) return undefined;
  return typeof event.eventtype === "string" ? event.eventtype : undefined;
}

/** True when a callback is the `disconnected_event`: another connection subscribed the same bot. */
export function isAibotDisconnectedEvent(cmd: string, body: JsonObject): boolean {
  return cmd === AIBOT_CMD.eventCallback && aibotEventType(body) === AIBOT_DISCONNECTED_EVENT;
}

/** Media types of an upload. */
export type AibotMediaType = "image" | "file" | "voice" | "video";

/** The three steps of a media upload, as request bodies. */
export interface AibotUploadPlan {
  /** The `aibot_upload_media_init` body, without `upload_id` (the server makes it). */
  init: JsonObject;
  /** The body of chunk `index` (0-based) for an `upload_id`; built on demand, so that one file is not held twice in base64. */
  chunk(uploadId: string, index: number): JsonObject;
  /** The number of chunks. */
  totalChunks: number;
}

/**
 * Plan a media upload: chunks of at most {@link AIBOT_UPLOAD_CHUNK_BYTES} (0-based `chunk_index`,
 * standard base64), the md5 (hex) of the whole file in the init body.
 * @throws EncodeError when the file is empty or needs more than {@link AIBOT_UPLOAD_MAX_CHUNKS} chunks
 */
export function planAibotUpload(type: AibotMediaType, filename: string, bytes: Uint8Array): AibotUploadPlan {
  if (bytes.length === 0) throw new EncodeError(F, "upload: the file is empty");
  const totalChunks = Math.ceil(bytes.length / AIBOT_UPLOAD_CHUNK_BYTES);
  if (totalChunks > AIBOT_UPLOAD_MAX_CHUNKS) {
    throw new EncodeError(F, `upload: ${bytes.length} bytes need ${totalChunks} chunks, more than ${AIBOT_UPLOAD_MAX_CHUNKS}`);
  }
  const md5 = createHash("md5").update(bytes).digest("hex");
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  return {
    init: { type, filename, total_size: bytes.length, total_chunks: totalChunks, md5 },
    totalChunks,
    chunk: (uploadId, index) => {
      if (!Number.isInteger(index) || index < 0 || index >= totalChunks) throw new EncodeError(F, `chunk index ${index} out of 0..${totalChunks - 1}`);
      const part = buf.subarray(index * AIBOT_UPLOAD_CHUNK_BYTES, (index + 1) * AIBOT_UPLOAD_CHUNK_BYTES);
      return { upload_id: uploadId, chunk_index: index, base64_data: part.toString("base64") };
    },
  };
}
