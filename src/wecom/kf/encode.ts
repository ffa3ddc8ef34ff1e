/**
 * Request encoders of the KF send APIs: `kf/send_msg` and `kf/send_msg_on_event`, with WeCom's
 * limits enforced before anything is sent (text ≤ 2048 bytes, msgid ≤ 32 bytes of
 * `[0-9a-zA-Z_-]`, send_msg_on_event only text or msgmenu).
 * @module
 */
import { EncodeError } from "../../errors.js";
import type { MenuItem } from "../../model.js";
import { compact, type JsonObject, utf8Length } from "../fields.js";

const F = "kf";

/** Maximum UTF-8 bytes of a KF text message. */
export const KF_TEXT_MAX_BYTES = 2048;

const MSGID = /^[0-9a-zA-Z_-]{1,32}$/;

/** Byte limits of KF send fields, from the official send_msg documentation. */
export const KF_LIMITS = {
  linkTitle: 128,
  linkDesc: 512,
  url: 2048,
  menuHead: 1024,
  menuTail: 1024,
  clickId: 64,
  clickContent: 128,
  menuContent: 1024,
  appId: 32,
  pagePath: 1024,
} as const;

/** Refuse a field whose UTF-8 length is outside [min, max]. */
function checkBytes(field: string, value: string | undefined, max: number, min = 0): void {
  if (value === undefined) return;
  const n = utf8Length(value);
  if (n < min || n > max) {
    throw new EncodeError(F, min > 0 ? `${field} must be ${min} to ${max} bytes, got ${n}` : `${field} is ${n} bytes, the limit is ${max}`);
  }
}

/** What an agent can send through KF. */
export type KfSendContent =
  | { type: "text"; text: string }
  | { type: "image" | "voice" | "video" | "file"; mediaId: string }
  | { type: "link"; title: string; url: string; thumbMediaId: string; description?: string }
  | { type: "miniprogram"; appId: string; title?: string; thumbMediaId: string; pagePath: string }
  | { type: "menu"; head?: string; items: Exclude<MenuItem, { type: "unknown" }>[]; tail?: string }
  | { type: "location"; latitude: number; longitude: number; name?: string; address?: string };

/** Arguments of {@link encodeKfSendMsg}. */
export interface KfSendMsgInput {
  /** The customer's external_userid. */
  toUser: string;
  /** The KF account. */
  openKfId: string;
  /** Our idempotency key (≤ 32 bytes of [0-9a-zA-Z_-]), unique per account. */
  msgId?: string;
  content: KfSendContent;
}

function checkMsgId(msgId: string | undefined): void {
  if (msgId !== undefined && !MSGID.test(msgId)) {
    throw new EncodeError(F, "msgid must be 1 to 32 characters of [0-9a-zA-Z_-]");
  }
}

function encodeMenuItem(item: Exclude<MenuItem, { type: "unknown" }>): JsonObject {
  switch (item.type) {
    case "click":
      checkBytes("menu click id", item.id, KF_LIMITS.clickId, 1);
      checkBytes("menu click content", item.content, KF_LIMITS.clickContent, 1);
      return { type: "click", click: { id: item.id, content: item.content } };
    case "view":
      checkBytes("menu view url", item.url, KF_LIMITS.url, 1);
      checkBytes("menu view content", item.content, KF_LIMITS.menuContent, 1);
      return { type: "view", view: { url: item.url, content: item.content } };
    case "miniprogram":
      checkBytes("menu miniprogram appid", item.appId, KF_LIMITS.appId, 1);
      checkBytes("menu miniprogram pagepath", item.pagePath, KF_LIMITS.pagePath, 1);
      checkBytes("menu miniprogram content", item.content, KF_LIMITS.menuContent, 1);
      return { type: "miniprogram", miniprogram: { appid: item.appId, pagepath: item.pagePath, content: item.content } };
    case "text":
      return { type: "text", text: compact({ content: item.content, no_newline: item.noNewline === undefined ? undefined : item.noNewline ? 1 : 0 }) };
  }
}

/** The msgtype and body object of a KF message. */
function encodeBody(content: KfSendContent): [string, JsonObject] {
  switch (content.type) {
    case "text":
      if (content.text.length === 0) throw new EncodeError(F, "text must not be empty");
      if (utf8Length(content.text) > KF_TEXT_MAX_BYTES) {
        throw new EncodeError(F, `text is ${utf8Length(content.text)} bytes, the limit is ${KF_TEXT_MAX_BYTES}`);
      }
      return ["text", { content: content.text }];
    case "image":
    case "voice":
    case "video":
    case "file":
      if (!content.mediaId) throw new EncodeError(F, `${content.type} needs a media_id`);
      return [content.type, { media_id: content.mediaId }];
    case "link":
      checkBytes("link title", content.title, KF_LIMITS.linkTitle, 1);
      checkBytes("link desc", content.description, KF_LIMITS.linkDesc);
      checkBytes("link url", content.url, KF_LIMITS.url, 1);
      if (!content.thumbMediaId) throw new EncodeError(F, "link needs a thumb_media_id");
      return ["link", compact({ title: content.title, desc: content.description, url: content.url, thumb_media_id: content.thumbMediaId })];
    case "miniprogram":
      return ["miniprogram", compact({ appid: content.appId, title: content.title, thumb_media_id: content.thumbMediaId, pagepath: content.pagePath })];
    case "menu":
      checkBytes("menu head_content", content.head, KF_LIMITS.menuHead);
      checkBytes("menu tail_content", content.tail, KF_LIMITS.menuTail);
      if (content.items.length === 0 && !content.head && !content.tail) throw new EncodeError(F, "a menu needs items, a head or a tail");
      return ["msgmenu", compact({ head_content: content.head, list: content.items.map(encodeMenuItem), tail_content: content.tail })];
    case "location":
      if (!(Math.abs(content.latitude) <= 90) || !(Math.abs(content.longitude) <= 180)) {
        throw new EncodeError(F, "location needs latitude in -90..90 and longitude in -180..180");
      }
      return ["location", compact({ name: content.name, address: content.address, latitude: content.latitude, longitude: content.longitude })];
  }
}

/**
 * The JSON body of `POST /cgi-bin/kf/send_msg`.
 * @throws EncodeError when a limit is broken
 * @example encodeKfSendMsg({ toUser: "wm...", openKfId: "wk...", msgId: "out_1", content: { type: "text", text: "hi" } })
 */
export function encodeKfSendMsg(input: KfSendMsgInput): JsonObject {
  if (!input.toUser) throw new EncodeError(F, "touser is required");
  if (!input.openKfId) throw new EncodeError(F, "open_kfid is required");
  checkMsgId(input.msgId);
  const [msgtype, body] = encodeBody(input.content);
  return compact({ touser: input.toUser, open_kfid: input.openKfId, msgid: input.msgId, msgtype, [msgtype]: body });
}

/** Arguments of {@link encodeKfSendMsgOnEvent}. */
export interface KfSendMsgOnEventInput {
  /** welcome_code (valid 20 s) or msg_code of session_status_change; one message per code. */
  code: string;
  msgId?: string;
  /** Only text and menu are allowed on events. */
  content: Extract<KfSendContent, { type: "text" | "menu" }>;
}

/**
 * The JSON body of `POST /cgi-bin/kf/send_msg_on_event`.
 * @throws EncodeError for another msgtype than text/msgmenu, or a broken limit
 */
export function encodeKfSendMsgOnEvent(input: KfSendMsgOnEventInput): JsonObject {
  if (!input.code) throw new EncodeError(F, "code is required");
  checkMsgId(input.msgId);
  const type = (input.content as KfSendContent).type;
  if (type !== "text" && type !== "menu") throw new EncodeError(F, `send_msg_on_event only sends text or msgmenu, not ${type}`);
  const [msgtype, body] = encodeBody(input.content);
  return compact({ code: input.code, msgid: input.msgId, msgtype, [msgtype]: body });
}

/** Arguments of {@link encodeKfSyncMsgRequest}. */
export interface KfSyncMsgRequestInput {
  openKfId: string;
  cursor?: string;
  /** The Token of the kf_msg_or_event callback (valid 10 minutes). */
  token?: string;
  /** 1..1000, default 1000. */
  limit?: number;
  /** 0 amr (default), 1 silk. */
  voiceFormat?: 0 | 1;
}

/** The JSON body of `POST /cgi-bin/kf/sync_msg`. */
export function encodeKfSyncMsgRequest(input: KfSyncMsgRequestInput): JsonObject {
  const limit = input.limit ?? 1000;
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new EncodeError(F, "limit must be 1..1000");
  if (!input.openKfId) throw new EncodeError(F, "open_kfid is required");
  return compact({
    cursor: input.cursor || undefined,
    token: input.token || undefined,
    limit,
    voice_format: input.voiceFormat,
    open_kfid: input.openKfId,
  });
}
