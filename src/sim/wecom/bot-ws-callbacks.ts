/**
 * The callbacks WeCom pushes over an AI bot's long connection, in the WeCom simulator: server
 * req_ids, the bodies of users' messages (`aibot_msg_callback`, the webhook's JSON) and events
 * (`aibot_event_callback`), and the media in them, served at URLs valid 5 minutes and encrypted
 * like the webhook's bot media but with a key of their own per file (`aeskey`). The connections
 * that carry them are in bot-ws.ts.
 * @module
 */
import { randomBytes } from "node:crypto";
import { encryptBotMedia } from "../../wecom/crypto.js";
import { type IssuedCallback, setCapped } from "./bot-ws-replies.js";
import type { Answer, SimContext } from "./context.js";
import { WECOM_RULES } from "./rules.js";
import type { WeComSimWsEvent, WeComSimWsUserMessage } from "./types.js";

type Json = Record<string, unknown>;

/** The prefix of the media URLs of long-connection callbacks. */
export const WS_MEDIA_PREFIX = "/aibot-ws-media/";
/** How many media URLs are served at once (beyond, the oldest answer 404). */
const MEDIA_URLS_MAX = 500;

/** What a callback is for, before it gets a req_id on a connection. */
export type CallbackInfo = Omit<IssuedCallback, "answered" | "cards">;

/** A callback's body and what it is for. */
export interface CallbackBody {
  /** The frame's body. */
  body: Json;
  /** What replies to it may do. */
  info: CallbackInfo;
}

/** A server req_id as WeCom writes them: 24 characters of base64 (e.g. `zYiT5A1AQVaghhPBWxgzAwAA`). */
export function serverReqId(): string {
  return Buffer.concat([randomBytes(16), Buffer.alloc(2)]).toString("base64");
}

/** True for media given as bytes (not an object passed as is). */
function isMediaBytes(v: unknown): v is Uint8Array | { bytes: Uint8Array; filename?: string } {
  return v instanceof Uint8Array || (typeof v === "object" && v !== null && (v as Json).bytes instanceof Uint8Array);
}

/** The media URLs of long-connection callbacks: each file encrypted with its own key, valid 5 minutes. */
export class WsMediaUrls {
  readonly #ctx: SimContext;
  readonly #urls = new Map<string, { bytes: Buffer; expiresAt: number; filename?: string }>();

  /** @param ctx the shared simulator context */
  constructor(ctx: SimContext) {
    this.#ctx = ctx;
  }

  /** The object of a media message: bytes become `{url, aeskey}`; anything else is passed as is. */
  put(input: unknown): unknown {
    if (!isMediaBytes(input)) return input;
    const bytes = input instanceof Uint8Array ? input : input.bytes;
    const filename = input instanceof Uint8Array ? undefined : input.filename;
    const aeskey = randomBytes(32).toString("base64");
    const now = this.#ctx.now();
    for (const [k, m] of this.#urls) if (now > m.expiresAt) this.#urls.delete(k);
    const key = randomBytes(18).toString("base64url");
    // the webhook's AES-256-CBC (IV = the key's first 16 bytes, PKCS#7 to 32 bytes) with this file's key
    // (the 43-character form of a 32-byte key is what encryptBotMedia takes)
    const entry: { bytes: Buffer; expiresAt: number; filename?: string } = { bytes: encryptBotMedia(aeskey.slice(0, 43), bytes), expiresAt: now + WECOM_RULES.botWs.mediaUrlTtlMs };
    if (filename !== undefined) entry.filename = filename;
    setCapped(this.#urls, key, entry, MEDIA_URLS_MAX);
    return { url: `${this.#ctx.baseUrl()}${WS_MEDIA_PREFIX}${key}?sign=q-sign-algorithm%3Dsha1%26q-sign-time%3D${Math.floor(now / 1000)}`, aeskey };
  }

  /** The answer to `GET /aibot-ws-media/{key}`: the encrypted bytes, 404 unknown, 403 expired. */
  serve(key: string): Answer {
    const m = this.#urls.get(key);
    if (m === undefined) {
      return { status: 404, headers: { "Content-Type": "application/xml" }, body: Buffer.from('<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>') };
    }
    if (this.#ctx.now() > m.expiresAt) {
      return { status: 403, headers: { "Content-Type": "application/xml" }, body: Buffer.from('<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>') };
    }
    const headers: Record<string, string> = { "Content-Type": "application/octet-stream" };
    if (m.filename !== undefined) headers["Content-Disposition"] = `attachment; filename*=UTF-8''${encodeURIComponent(m.filename)}`;
    return { status: 200, headers, body: m.bytes };
  }
}

/**
 * The body of a user's message (the webhook's JSON: `msgid, aibotid, chatid (group), chattype,
 * from, create_time, msgtype, <msgtype>`), its media put at `media` URLs.
 * @throws Error when the message lacks its msgtype's field, or a group message lacks chatid
 */
export function userMessageBody(ctx: SimContext, botId: string, msg: WeComSimWsUserMessage, media: WsMediaUrls): CallbackBody {
  const chattype = msg.chattype ?? (msg.chatid !== undefined ? "group" : "single");
  if (chattype === "group" && msg.chatid === undefined) throw new Error("a group message needs chatid");
  const msgid = ctx.ids.botMsgId();
  const now = ctx.now();
  const body: Json = { msgid, aibotid: botId };
  if (chattype === "group") body.chatid = msg.chatid;
  body.chattype = chattype;
  body.from = { userid: msg.userid };
  body.create_time = Math.floor(now / 1000);
  body.msgtype = msg.msgtype;
  const need = <T>(v: T | undefined): T => {
    if (v === undefined) throw new Error(`a ${msg.msgtype} message needs its ${msg.msgtype} field`);
    return v;
  };
  if (msg.msgtype === "text") body.text = { content: need(msg.text) };
  else if (msg.msgtype === "voice") body.voice = { content: need(msg.voice) };
  else if (msg.msgtype === "image" || msg.msgtype === "file" || msg.msgtype === "video") body[msg.msgtype] = media.put(need(msg[msg.msgtype]));
  else if (msg.msgtype === "mixed") {
    body.mixed = { msg_item: need(msg.mixed).map((item) => (typeof item === "string" ? { msgtype: "text", text: { content: item } } : { msgtype: "image", image: media.put(item) })) };
  }
  Object.assign(body, msg.fields);
  const info: CallbackInfo = { kind: "msg", msgid, at: now, userId: msg.userid };
  if (chattype === "group" && msg.chatid !== undefined) info.chatId = msg.chatid;
  return { body, info };
}

/** The body of an event: `msgid, create_time, aibotid, chatid?, chattype?, from, msgtype: "event", event: {eventtype, …details}`. */
export function eventBody(ctx: SimContext, botId: string, ev: WeComSimWsEvent): CallbackBody {
  const { userid, eventtype, chatid, chattype, ...details } = ev;
  const now = ctx.now();
  const msgid = ctx.ids.botMsgId();
  const body: Json = { msgid, create_time: Math.floor(now / 1000), aibotid: botId };
  if (chatid !== undefined) body.chatid = chatid;
  const type = chattype ?? (chatid !== undefined ? "group" : undefined);
  if (type !== undefined) body.chattype = type;
  body.from = { userid };
  body.msgtype = "event";
  body.event = { eventtype, ...details };
  const info: CallbackInfo = { kind: "event", msgid, at: now, userId: userid, eventtype };
  if (chatid !== undefined) info.chatId = chatid;
  return { body, info };
}
