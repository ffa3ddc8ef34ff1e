/**
 * How a message of any channel is shown to the 全媒体's agents: its MsgType, a readable Content,
 * and the structured data in Tag. The table is in the README ("Mapping to the 全媒体").
 * @module
 */
import type { Content as CoreContent, MediaRef, UnifiedMessage } from "../model.js";
import type { OmniToBody } from "../omni/index.js";

/** Any message content, the bots' stream refresh included. */
type Content = UnifiedMessage["content"] | CoreContent;

/** A stored media file, as the 全媒体 is told about it (`Tag.data.file`). */
export interface MediaFileInfo {
  /** The file name (WeCom's, decoded; else the message's; else our id). */
  name: string;
  /** The type WeCom gave (the link serves anything but images, audio and video as a download). */
  contentType: string;
  /** Bytes. */
  size: number;
}

/** Why a media could not be fetched, as the 全媒体 is told about it (`Tag.data.unavailable`). */
export interface MediaUnavailableInfo {
  /** `refused`: WeCom's final answer, or too large; `deadline`: not fetched within `delivery.mediaDeadlineSec`; `none`: nothing to fetch. */
  reason: "refused" | "deadline" | "none";
  /** WeCom's errcode, when it answered one. */
  errcode?: number;
  /** The last error, one line. */
  error?: string;
}

/** What the gateway knows about one media of a message: its link and file, or why there is none. */
export type MediaResolution = { url: string; file?: MediaFileInfo } | { unavailable: MediaUnavailableInfo };

/**
 * Resolves a message's media (by its index in {@link mediaRefs}): a download URL (or a
 * {@link MediaResolution} with the file's details), or why it is unavailable; undefined when unknown.
 */
export type MediaUrlResolver = (index: number) => string | MediaResolution | undefined;

/** A copy of a raw payload without any `aeskey` (a long-connection bot's file keys, however deep). */
export function withoutAesKeys(value: unknown, depth = 0): unknown {
  if (depth > 32 || typeof value !== "object" || value === null) return value;
  if (Array.isArray(value)) return value.map((v) => withoutAesKeys(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) if (k.toLowerCase() !== "aeskey") out[k] = withoutAesKeys(v, depth + 1);
  return out;
}

/** A media reference without a long-connection bot's file key. */
function withoutKey(ref: MediaRef): MediaRef {
  const { aesKey: _, ...rest } = ref;
  return rest;
}

/** Every media reference of a content, in a stable order (mixed items included). */
export function mediaRefs(content: Content): MediaRef[] {
  switch (content.type) {
    case "image":
    case "video":
    case "file":
    case "emotion":
      return [content.media];
    case "voice":
      return content.media ? [content.media] : [];
    case "mixed":
      return content.items.flatMap(mediaRefs);
    default:
      return [];
  }
}

const MEDIA_LABEL: Record<string, string> = { image: "图片", voice: "语音", video: "视频", file: "文件", emotion: "表情" };

/** What Content says of a media that is not there: WeCom refused it, or it could not be fetched before the deadline. */
function unavailableText(label: string | undefined, why: MediaUnavailableInfo | undefined): string {
  return `[${label}: ${why?.reason === "deadline" ? "could not be fetched in time" : "not available"}]`;
}

function menuText(c: Extract<Content, { type: "menu" }>): string {
  const lines: string[] = [];
  if (c.head) lines.push(c.head);
  for (const it of c.items) if ("content" in it) lines.push(`- ${it.content}`);
  if (c.tail) lines.push(c.tail);
  return lines.join("\n");
}

interface Mapped {
  MsgType: string;
  Content: string;
  data?: unknown;
}

function mapContent(content: Content, url: MediaUrlResolver, base: number): Mapped {
  switch (content.type) {
    case "text":
      return { MsgType: "text", Content: content.text, data: content.menuId ? { menuId: content.menuId } : undefined };
    case "image":
    case "video":
    case "file":
    case "emotion":
    case "voice": {
      const given = mediaRefs(content).length > 0 ? url(base) : undefined;
      const r: MediaResolution | undefined = typeof given === "string" ? { url: given } : given;
      // a long-connection bot's file key is the gateway's to use, not the 全媒体's
      const shown = content.media?.aesKey === undefined ? content : { ...content, media: withoutKey(content.media) };
      if (r === undefined || "unavailable" in r) {
        if (content.type === "voice" && content.transcript !== undefined) return { MsgType: "text", Content: content.transcript, data: { voice: true } };
        const why = r?.unavailable;
        return { MsgType: "text", Content: unavailableText(MEDIA_LABEL[content.type], why), data: why ? { ...shown, unavailable: why } : shown };
      }
      return { MsgType: content.type === "emotion" ? "image" : content.type, Content: r.url, data: r.file ? { ...shown, file: r.file } : shown };
    }
    case "location":
      return {
        MsgType: "location",
        Content: [content.name, content.address].filter(Boolean).join(" ") || `${content.latitude},${content.longitude}`,
        data: { latitude: content.latitude, longitude: content.longitude, name: content.name, address: content.address },
      };
    case "link":
      return { MsgType: "link", Content: `${content.title}\n${content.url}`, data: { title: content.title, description: content.description, url: content.url, picUrl: content.picUrl } };
    case "business_card":
      return { MsgType: "text", Content: `[名片] ${content.userId}${content.corpName ? ` (${content.corpName})` : ""}`, data: content };
    case "miniprogram":
      return { MsgType: "text", Content: `[小程序] ${content.title ?? content.displayName ?? content.appId ?? ""}`.trim(), data: content };
    case "menu":
      return { MsgType: "text", Content: menuText(content), data: content };
    case "news":
      return { MsgType: "text", Content: content.articles.map((a) => `${a.title}${a.url ? `\n${a.url}` : ""}`).join("\n"), data: content };
    case "chat_record":
      return { MsgType: "text", Content: `[聊天记录] ${content.title ?? ""}`.trim(), data: content };
    case "structured":
      return { MsgType: "text", Content: `[${content.kind}] ${content.title}`.trim(), data: content };
    case "mixed": {
      let index = base;
      const parts = content.items.map((item) => {
        const m = mapContent(item, url, index);
        index += mediaRefs(item).length;
        return m;
      });
      return { MsgType: "text", Content: parts.map((p) => p.Content).join("\n"), data: { items: parts } };
    }
    case "recall":
      return { MsgType: "event", Content: "recall", data: content };
    case "consent":
      return { MsgType: "event", Content: content.agreed ? "consent.agree" : "consent.disagree", data: content };
    case "event": {
      const ev = content.event;
      const name = ev.name === "unknown" ? ev.eventName : ev.name === "omni_event" ? ev.key : ev.name;
      return { MsgType: "event", Content: name, data: ev.name === "unknown" ? { name: ev.eventName } : ev };
    }
    case "stream_refresh":
      return { MsgType: "event", Content: "stream_refresh", data: content };
    case "unknown":
      return { MsgType: "text", Content: `[unsupported message type: ${content.msgType}]`, data: { msgType: content.msgType, raw: withoutAesKeys(content.raw) } };
  }
}

/**
 * Map a message to the body of `POST /api/{version}/{appid}/staffService/message`.
 * FromUserId is the message's conversation address, which the 全媒体 sends back as ToUserId to
 * reach the same customer through the same channel.
 */
export function toOmniBody(message: UnifiedMessage, mediaUrl: MediaUrlResolver = () => undefined): OmniToBody {
  const mapped = mapContent(message.content, mediaUrl, 0);
  const body: OmniToBody = {
    FromUserId: message.conversationId,
    MsgType: mapped.MsgType,
    Content: mapped.Content,
    Tag: {
      channel: message.channel,
      id: message.id,
      time: message.time,
      contentType: message.content.type,
      ...(message.from !== undefined ? { from: message.from } : {}),
      ...(mapped.data !== undefined ? { data: mapped.data } : {}),
    },
  };
  const name = message.from?.name ?? message.from?.id;
  if (name !== undefined) body.FromUserName = name;
  return body;
}
