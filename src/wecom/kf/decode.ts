/**
 * Decoder of WeChat Customer Service (微信客服, KF) `sync_msg` responses (seed 000) into
 * {@link KfMessage}. Every msgtype of protocol.md §3 and the seven events are modelled; others
 * decode to `unknown` variants that keep the raw item.
 * @module
 */
import { DecodeError } from "../../errors.js";
import type { Identity, KfContent, KfMessage, KfOrigin, MenuItem, MessageContent, StructuredKind } from "../../model.js";
import {
  compact,
  isObject,
  type JsonObject,
  optArray,
  optNumber,
  optObject,
  optString,
  parseJsonObject,
  reqString,
} from "../fields.js";
import { decodeKfEventFields } from "./events.js";

const F = "kf";

/** Context the payload does not carry. */
export interface KfDecodeContext {
  /** The CorpID owning the KF account (part of the conversation address). */
  corpId?: string;
}

/** A decoded `sync_msg` response. */
export interface KfSyncMsgResponse {
  /** 0 on success. */
  errcode: number;
  errmsg: string;
  /** Pass as `cursor` on the next call. */
  nextCursor?: string;
  /** True when more messages wait (also possible with an empty list). */
  hasMore: boolean;
  messages: KfMessage[];
}

const ORIGINS: Record<number, KfOrigin> = { 3: "customer", 4: "system", 5: "servicer" };

/**
 * Decode a whole `sync_msg` response (text or parsed object).
 * @throws DecodeError when it is not a JSON object or an item lacks msgid/msgtype
 */
export function decodeKfSyncMsg(input: string | JsonObject, context: KfDecodeContext = {}): KfSyncMsgResponse {
  const obj = typeof input === "string" ? parseJsonObject(F, input) : input;
  if (!isObject(obj)) throw new DecodeError(F, "expected a JSON object");
  const list = obj.msg_list;
  if (list !== undefined && list !== null && !Array.isArray(list)) throw new DecodeError(F, "msg_list must be an array");
  return compact({
    errcode: optNumber(obj, "errcode") ?? 0,
    errmsg: optString(obj, "errmsg") ?? "",
    nextCursor: optString(obj, "next_cursor") || undefined,
    hasMore: optNumber(obj, "has_more") === 1 || obj.has_more === true,
    messages: (list ?? []).map((item, i) => {
      if (!isObject(item)) throw new DecodeError(F, `msg_list[${i}] is not an object`);
      return decodeKfItem(item, context);
    }),
  });
}

/** True when the object looks like a whole sync_msg response rather than one item. */
export function isKfSyncMsgResponse(obj: JsonObject): boolean {
  return "msg_list" in obj || ("errcode" in obj && !("msgid" in obj));
}

/**
 * Decode one `msg_list` item.
 * @throws DecodeError when the item is not an object or msgid or msgtype is missing
 */
export function decodeKfItem(item: JsonObject, context: KfDecodeContext = {}): KfMessage {
  if (!isObject(item)) throw new DecodeError(F, "a msg_list item must be a JSON object");
  const msgid = reqString(F, item, "msgid");
  const msgtype = reqString(F, item, "msgtype");
  const originCode = optNumber(item, "origin") ?? 0;
  const content = decodeKfContent(msgtype, item);
  const ev = content.type === "event" ? optObject(item, "event") : undefined;
  const openKfId = optString(item, "open_kfid") || (ev && optString(ev, "open_kfid")) || "";
  const externalUserId = optString(item, "external_userid") || (ev && optString(ev, "external_userid")) || undefined;
  const servicerUserId = optString(item, "servicer_userid") || (ev && optString(ev, "servicer_userid")) || undefined;
  const origin = ORIGINS[originCode] ?? "unknown";
  const customer: Identity | undefined = externalUserId ? { kind: "external", id: externalUserId } : undefined;
  const account: Identity = { kind: "kf_account", id: openKfId };
  let from: Identity | undefined;
  let to: Identity[];
  if (origin === "customer") {
    from = customer;
    to = [account];
  } else if (origin === "servicer") {
    from = servicerUserId ? { kind: "servicer", id: servicerUserId } : account;
    to = customer ? [customer] : [];
  } else {
    from = { kind: "system", id: "sys" };
    to = [account];
  }
  const corpId = context.corpId;
  const sendTime = optNumber(item, "send_time") ?? 0;
  return compact({
    channel: "kf",
    id: msgid,
    corpId,
    // an item without a customer (servicer_status_change) belongs to the account itself
    conversationId: externalUserId ? `kf:${corpId ?? ""}:${openKfId}:${externalUserId}` : `kf:${corpId ?? ""}:${openKfId}`,
    from,
    to,
    time: sendTime * 1000,
    content,
    raw: item,
    openKfId,
    externalUserId,
    servicerUserId,
    origin,
    originCode,
  });
}

// a Map, not an object literal: msgtypes such as "toString" or "constructor" must not hit Object.prototype
const STRUCTURED = new Map<string, { kind: StructuredKind; title: (o: JsonObject) => string }>(Object.entries({
  channels_shop_product: { kind: "channels_shop_product", title: (o) => optString(o, "title") ?? "" },
  channels_shop_order: { kind: "channels_shop_order", title: (o) => optString(o, "product_titles") ?? optString(o, "order_id") ?? "" },
  channels: { kind: "channels", title: (o) => optString(o, "title") ?? optString(o, "nickname") ?? "" },
  meeting: { kind: "meeting", title: (o) => optString(o, "meetingid") ?? "" },
  schedule: { kind: "schedule", title: (o) => optString(o, "schedule_id") ?? optString(o, "scheduleid") ?? "" },
  note: { kind: "note", title: () => "" },
} satisfies Record<string, { kind: StructuredKind; title: (o: JsonObject) => string }>));

function decodeMenuItem(raw: unknown): MenuItem {
  if (!isObject(raw)) return { type: "unknown", raw };
  const type = optString(raw, "type");
  const body = type === undefined ? undefined : optObject(raw, type);
  if (body === undefined) return { type: "unknown", raw };
  const content = optString(body, "content") ?? "";
  switch (type) {
    case "click":
      return { type: "click", id: optString(body, "id") ?? "", content };
    case "view":
      return { type: "view", url: optString(body, "url") ?? "", content };
    case "miniprogram":
      return { type: "miniprogram", appId: optString(body, "appid") ?? "", pagePath: optString(body, "pagepath") ?? "", content };
    case "text":
      return compact({ type: "text", content, noNewline: body.no_newline === undefined ? undefined : optNumber(body, "no_newline") === 1 });
    default:
      return { type: "unknown", raw };
  }
}

function decodeKfContent(msgtype: string, item: JsonObject): KfContent {
  const body = optObject(item, msgtype) ?? {};
  const s = (k: string) => optString(body, k);
  switch (msgtype) {
    case "text":
      return compact({ type: "text", text: s("content") ?? "", menuId: s("menu_id") || undefined });
    case "image":
    case "file":
      return { type: msgtype, media: compact({ mediaId: s("media_id") }) };
    case "voice":
      return { type: "voice", media: compact({ mediaId: s("media_id") }) };
    case "video":
      return { type: "video", media: compact({ mediaId: s("media_id") }) };
    case "location":
      return compact({
        type: "location",
        latitude: optNumber(body, "latitude") ?? 0,
        longitude: optNumber(body, "longitude") ?? 0,
        name: s("name"),
        address: s("address"),
      });
    case "link":
      return compact({ type: "link", title: s("title") ?? "", description: s("desc"), url: s("url") ?? "", picUrl: s("pic_url") });
    case "business_card":
      return { type: "business_card", userId: s("userid") ?? "" };
    case "miniprogram":
      return compact({ type: "miniprogram", appId: s("appid"), title: s("title"), thumbMediaId: s("thumb_media_id"), pagePath: s("pagepath") });
    case "msgmenu":
      return compact({ type: "menu", head: s("head_content"), items: optArray(body, "list").map(decodeMenuItem), tail: s("tail_content") });
    case "merged_msg":
      return compact({
        type: "chat_record",
        title: s("title"),
        items: optArray(body, "item").map((it) => {
          const o = isObject(it) ? it : {};
          const text = optString(o, "msg_content");
          let parsed: unknown = text;
          if (text !== undefined) {
            try {
              parsed = JSON.parse(text);
            } catch {
              parsed = text;
            }
          }
          return compact({ type: optString(o, "msgtype") ?? "", time: (optNumber(o, "send_time") ?? 0) * 1000, sender: optString(o, "sender_name"), content: parsed });
        }),
      });
    case "event": {
      const eventType = optString(body, "event_type") ?? "";
      return { type: "event", event: decodeKfEventFields(eventType, body, item) };
    }
    default: {
      const structured = STRUCTURED.get(msgtype);
      if (structured !== undefined) return { type: "structured", kind: structured.kind, title: structured.title(body), fields: body };
      return { type: "unknown", msgType: msgtype, raw: item } satisfies MessageContent;
    }
  }
}
