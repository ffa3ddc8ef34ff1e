/**
 * Decoder of the session-archive push (seed 002, 企微管家 type=101): the envelope
 * `{message_id, type, content, gmt_create}`, the archive record inside `content` (a JSON string
 * whose numbers and booleans are strings), and every msgtype of protocol.md §5. Other push types
 * are kept raw, never dropped.
 * @module
 */
import { DecodeError } from "../../errors.js";
import type { ArchiveContent, ArchiveMessage, Content, Identity, MediaRef, StructuredKind } from "../../model.js";
import { compact, isObject, type JsonObject, optArray, optNumber, optObject, optString, parseJsonObject } from "../fields.js";

const F = "archive";

/** The push type that carries a session-archive record. */
export const ARCHIVE_RECORD_PUSH_TYPE = 101;

/** A decoded push: a session-archive record, or another push type kept raw. */
export type ArchivePush =
  | {
      kind: "record";
      /** The envelope's message_id (exact decimal string). */
      messageId: string;
      pushType: 101;
      /** gmt_create, ms. */
      gmtCreate?: number;
      /** The record with numbers and booleans restored and null keys dropped. */
      record: JsonObject;
      message: ArchiveMessage;
    }
  | {
      kind: "unknown";
      messageId: string;
      pushType: number;
      gmtCreate?: number;
      /** `content` parsed when it is JSON text, else as sent. */
      content: unknown;
      /** The whole envelope. */
      raw: JsonObject;
    };

/** Keys whose string values are numbers in the push. */
const NUMERIC_KEYS = new Set([
  "seq",
  "msgtime",
  "time",
  "filesize",
  "voice_size",
  "play_length",
  "agree_time",
  "longitude",
  "latitude",
  "zoom",
  "width",
  "height",
  "imagesize",
  "votetype",
  "totalcnt",
  "totalamount",
  "starttime",
  "endtime",
  "meetingtype",
  "meetingid",
  "status",
  "callduration",
  "invitetype",
  "feedType",
  "type",
  "id",
]);

/** Keys whose "true"/"false" values are booleans. */
const BOOLEAN_KEYS = new Set(["is_grp", "is_rb", "is_ext", "is_from_ext", "from_chatroom"]);

const NUMBER_TEXT = /^-?\d+(\.\d+)?$/;

/**
 * Restore real numbers and booleans in an archive record (recursively) and drop null values.
 * Integers beyond 2^53 stay strings so they are never rounded.
 */
export function normalizeArchiveRecord(value: unknown, key = ""): unknown {
  if (Array.isArray(value)) return value.map((v) => normalizeArchiveRecord(v, key));
  if (isObject(value)) {
    const out: JsonObject = {};
    for (const [k, v] of Object.entries(value)) {
      if (v === null || v === undefined) continue;
      Object.defineProperty(out, k, { value: normalizeArchiveRecord(v, k), enumerable: true, writable: true, configurable: true });
    }
    return out;
  }
  if (typeof value === "string") {
    if (BOOLEAN_KEYS.has(key) && (value === "true" || value === "false")) return value === "true";
    if (NUMERIC_KEYS.has(key) && NUMBER_TEXT.test(value)) {
      const n = Number(value);
      return Number.isSafeInteger(n) || !Number.isInteger(n) ? n : value;
    }
  }
  return value;
}

/**
 * Keep a bare-number `message_id` exact: JSON.parse would round 19-digit ids, so read its digits
 * from the text first.
 */
function exactMessageId(text: string): string | undefined {
  const m = /^\s*\{[\s\S]*?"message_id"\s*:\s*(-?\d+)\s*[,}]/.exec(text);
  return m?.[1];
}

/**
 * Decode a push envelope (text or parsed object).
 * @throws DecodeError when it is not JSON, lacks `type`, or a type-101 `content` is not a record
 */
export function decodeArchivePush(input: string | JsonObject): ArchivePush {
  const env = typeof input === "string" ? parseJsonObject(F, input) : input;
  const pushType = optNumber(env, "type");
  if (pushType === undefined) throw new DecodeError(F, 'missing or non-numeric field "type"');
  const exact = typeof input === "string" && typeof env.message_id === "number" ? exactMessageId(input) : undefined;
  // the digits found must be the top-level id (a nested message_id would round differently)
  const messageId = (exact !== undefined && Number(exact) === env.message_id ? exact : undefined) ?? optString(env, "message_id") ?? "";
  const gmt = optNumber(env, "gmt_create");
  const gmtCreate = gmt === undefined ? undefined : gmt * 1000;
  const rawContent = env.content;
  if (pushType !== ARCHIVE_RECORD_PUSH_TYPE) {
    let content: unknown = rawContent;
    if (typeof rawContent === "string") {
      try {
        content = JSON.parse(rawContent);
      } catch {
        content = rawContent;
      }
    }
    return compact({ kind: "unknown", messageId, pushType, gmtCreate, content, raw: env });
  }
  const record = typeof rawContent === "string" ? parseJsonObject(F, rawContent) : isObject(rawContent) ? rawContent : undefined;
  if (record === undefined) throw new DecodeError(F, "type 101 content must be a record (JSON object or JSON string)");
  const normalized = normalizeArchiveRecord(record) as JsonObject;
  return compact({ kind: "record", messageId, pushType: 101, gmtCreate, record: normalized, message: decodeArchiveRecord(normalized, record, messageId) });
}

function identity(id: string, external: boolean | undefined): Identity {
  const ext = external ?? (id.startsWith("wm") || id.startsWith("wo"));
  return { kind: ext ? "external" : "member", id };
}

/**
 * Decode a normalized archive record (see {@link normalizeArchiveRecord}) into the model.
 * @param raw the record as sent (kept as the message's raw payload)
 */
export function decodeArchiveRecord(rec: JsonObject, raw: unknown = rec, pushMessageId?: string): ArchiveMessage {
  const msgid = optString(rec, "msgid");
  if (msgid === undefined || msgid === "") throw new DecodeError(F, 'record is missing "msgid"');
  const action = optString(rec, "action") ?? "send";
  const corpId = optString(rec, "corpid");
  const fromId = optString(rec, "from") ?? optString(rec, "user");
  const roomId = optString(rec, "roomid") || undefined;
  const tolistRaw = rec.tolist;
  const tolist = Array.isArray(tolistRaw)
    ? tolistRaw.map(String)
    : typeof tolistRaw === "string" && tolistRaw !== ""
      ? tolistRaw.split(",").map((s) => s.trim())
      : [];
  const isGroup = typeof rec.is_grp === "boolean" ? rec.is_grp : roomId !== undefined;
  const isFromExternal = typeof rec.is_from_ext === "boolean" ? rec.is_from_ext : undefined;
  const to: Identity[] = roomId ? [{ kind: "group", id: roomId }] : tolist.map((id) => identity(id, undefined));
  const peers = [fromId ?? "", tolist[0] ?? ""].filter((p) => p !== "").sort();
  const msgtype = optString(rec, "msgtype") ?? (action === "switch" ? "switch" : "");
  return compact({
    channel: "archive",
    id: msgid,
    corpId,
    conversationId: roomId ? `archive:${corpId ?? ""}:room:${roomId}` : `archive:${corpId ?? ""}:${peers.join("|")}`,
    from: fromId ? identity(fromId, isFromExternal) : undefined,
    to,
    time: optNumber(rec, "msgtime") ?? optNumber(rec, "time") ?? 0,
    content: decodeArchiveContent(msgtype, rec, raw),
    raw,
    seq: optNumber(rec, "seq"),
    action,
    roomId,
    isGroup,
    isFromExternal,
    pushMessageId,
  });
}

/** Where each msgtype keeps its data when the key differs from the msgtype. */
const BODY_KEYS: Record<string, string[]> = {
  docmsg: ["doc", "docmsg"],
  markdown: ["info", "markdown"],
  news: ["news", "info"],
  external_redpacket: ["redpacket", "external_redpacket"],
  disagree: ["agree", "disagree"],
};

/** `table[key]` for own keys only: a msgtype such as `constructor` or `__proto__` must not reach Object.prototype. */
function ownEntry<T>(table: Record<string, T>, key: string): T | undefined {
  return Object.hasOwn(table, key) ? table[key] : undefined;
}

function bodyOf(msgtype: string, rec: JsonObject): JsonObject {
  for (const key of ownEntry(BODY_KEYS, msgtype) ?? [msgtype]) {
    const b = optObject(rec, key);
    if (b !== undefined) return b;
  }
  return {};
}

function archiveMedia(b: JsonObject): MediaRef {
  return compact({
    sdkFileId: optString(b, "sdkfileid"),
    md5: optString(b, "md5sum"),
    size: optNumber(b, "filesize") ?? optNumber(b, "imagesize") ?? optNumber(b, "voice_size"),
    fileName: optString(b, "filename"),
    fileExt: optString(b, "fileext"),
  });
}

const STRUCTURED: Record<string, { kind: StructuredKind; title: string[] }> = {
  todo: { kind: "todo", title: ["title", "content"] },
  vote: { kind: "vote", title: ["votetitle"] },
  collect: { kind: "collect", title: ["title", "room_name"] },
  redpacket: { kind: "redpacket", title: ["wish"] },
  external_redpacket: { kind: "external_redpacket", title: ["wish"] },
  meeting: { kind: "meeting", title: ["topic"] },
  docmsg: { kind: "docmsg", title: ["title"] },
  calendar: { kind: "calendar", title: ["title"] },
  meeting_voice_call: { kind: "meeting_voice_call", title: ["title"] },
  voip_doc_share: { kind: "voip_doc_share", title: ["filename"] },
  sphfeed: { kind: "sphfeed", title: ["feedDesc", "sphName"] },
};

function parseMaybeJson(v: unknown): unknown {
  if (typeof v !== "string") return v;
  try {
    return normalizeArchiveRecord(JSON.parse(v));
  } catch {
    return v;
  }
}

/**
 * A chatrecord item's msgtime is in SECONDS (unlike the record's ms msgtime): turn it into ms.
 * Values below 1e11 (year 5138 in seconds, 1973 in ms) are taken as seconds.
 */
function itemTimeMs(t: number | undefined): number | undefined {
  return t !== undefined && Math.abs(t) < 1e11 ? t * 1000 : t;
}

/** Item types of chatrecord / mixed are spelled `ChatRecordText`, `text`, ...: map them to msgtypes. */
function itemMsgType(type: string): string {
  const t = type.startsWith("ChatRecord") ? type.slice("ChatRecord".length) : type;
  return t.toLowerCase();
}

function decodeArchiveContent(msgtype: string, rec: JsonObject, raw: unknown): ArchiveContent {
  const b = bodyOf(msgtype, rec);
  const s = (k: string) => optString(b, k);
  switch (msgtype) {
    case "text":
      return { type: "text", text: s("content") ?? optString(rec, "content") ?? "" };
    case "markdown":
      return { type: "text", text: s("content") ?? "", format: "markdown" };
    case "image":
      return { type: "image", media: archiveMedia(b) };
    case "voice":
      return compact({ type: "voice", media: archiveMedia(b), durationSec: optNumber(b, "play_length") });
    case "video":
      return compact({ type: "video", media: archiveMedia(b), durationSec: optNumber(b, "play_length") });
    case "file":
      return { type: "file", media: archiveMedia(b) };
    case "emotion":
      return compact({ type: "emotion", media: archiveMedia(b), emotionType: optNumber(b, "type"), width: optNumber(b, "width"), height: optNumber(b, "height") });
    case "revoke":
      return { type: "recall", recalledId: s("pre_msgid") ?? "" };
    case "agree":
    case "disagree":
      return compact({ type: "consent", agreed: msgtype === "agree", userId: s("userid") ?? "", time: optNumber(b, "agree_time") ?? optNumber(b, "disagree_time") });
    case "card":
      return compact({ type: "business_card", userId: s("userid") ?? "", corpName: s("corpname") });
    case "location":
      return compact({
        type: "location",
        latitude: optNumber(b, "latitude") ?? 0,
        longitude: optNumber(b, "longitude") ?? 0,
        name: s("title"),
        address: s("address"),
        scale: optNumber(b, "zoom"),
      });
    case "link":
      return compact({ type: "link", title: s("title") ?? "", description: s("description"), url: s("link_url") ?? "", picUrl: s("image_url") });
    case "weapp":
      return compact({ type: "miniprogram", title: s("title"), description: s("description"), userName: s("username"), displayName: s("displayname") });
    case "news": {
      const info = optObject(b, "info") ?? b;
      return {
        type: "news",
        articles: optArray(info, "item")
          .filter(isObject)
          .map((a) => compact({ title: optString(a, "title") ?? "", description: optString(a, "description"), url: optString(a, "url"), picUrl: optString(a, "picurl") })),
      };
    }
    case "chatrecord":
      return compact({
        type: "chat_record",
        title: s("title"),
        items: optArray(b, "item")
          .filter(isObject)
          .map((it) => compact({ type: itemMsgType(optString(it, "type") ?? ""), time: itemTimeMs(optNumber(it, "msgtime")), content: parseMaybeJson(it.content) })),
      });
    case "mixed":
      return {
        type: "mixed",
        items: optArray(b, "item")
          .filter(isObject)
          .map((it): Content => {
            const t = itemMsgType(optString(it, "type") ?? "");
            const parsed = parseMaybeJson(it.content);
            const body = isObject(parsed) ? parsed : { content: parsed };
            return decodeArchiveContent(t, { msgtype: t, [t]: body }, it);
          }),
      };
    case "switch":
      return { type: "structured", kind: "switch", title: optString(rec, "user") ?? "", fields: compact({ user: optString(rec, "user"), time: optNumber(rec, "time") }) };
    default: {
      const st = ownEntry(STRUCTURED, msgtype);
      if (st !== undefined) {
        const title = st.title.map((k) => s(k)).find((v) => v !== undefined && v !== "") ?? "";
        return { type: "structured", kind: st.kind, title, fields: b };
      }
      return { type: "unknown", msgType: msgtype, raw };
    }
  }
}
