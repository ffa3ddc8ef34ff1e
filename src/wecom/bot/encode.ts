/**
 * Passive reply encoders of AI bots (seed 003): text, template_card, stream,
 * stream_with_template_card and update_template_card, with the seed's limits enforced:
 * stream content ≤ 20480 UTF-8 bytes, images only when `finish`, at most 10, JPG or PNG of at
 * most 10 MB, `md5` of the raw bytes. Encrypt the result with {@link WeComCrypto.encryptJsonReply}.
 * @module
 */
import { createHash } from "node:crypto";
import { EncodeError } from "../../errors.js";
import type { BotMessage } from "../../model.js";
import { compact, type JsonObject, utf8Length } from "../fields.js";

const F = "bot";

/** Maximum UTF-8 bytes of stream content. */
export const BOT_STREAM_MAX_BYTES = 20480;
/** Maximum images in a stream's msg_item. */
export const BOT_STREAM_MAX_IMAGES = 10;
/** Maximum UTF-8 bytes of a stream's feedback id. */
export const BOT_FEEDBACK_ID_MAX_BYTES = 256;
/** Maximum size of one image, before base64. */
export const BOT_IMAGE_MAX_BYTES = 10 * 1024 * 1024;

/** An image for a finished stream: raw bytes, or base64 with the md5 of the raw bytes. */
export type BotImage = { data: Uint8Array } | { base64: string; md5: string };

/** A stream chunk: the full content so far (each answer replaces the previous one). */
export interface BotStream {
  /** Our stream id; WeCom polls with it. */
  id: string;
  finish: boolean;
  /** Markdown, ≤ 20480 bytes. */
  content?: string;
  /** Only when `finish` is true; at most 10. */
  images?: BotImage[];
  /**
   * Opt in to user feedback (sent as `feedback.id`, ≤ 256 UTF-8 bytes): set it on the first
   * reply of the stream; the same id comes back in a feedback_event.
   */
  feedbackId?: string;
}

/** A passive reply of an AI bot. */
export type BotReply =
  /** Only as the answer to an enter_chat event. */
  | { type: "text"; content: string }
  | { type: "template_card"; templateCard: JsonObject }
  | ({ type: "stream" } & BotStream)
  | { type: "stream_with_template_card"; stream: BotStream; templateCard?: JsonObject }
  /** Only as the answer to a template_card_event; task_id must be the event's. */
  | { type: "update_template_card"; userIds?: string[]; templateCard: JsonObject };

function isPngOrJpeg(b: Uint8Array): boolean {
  const png = b.length > 8 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47;
  const jpg = b.length > 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff;
  return png || jpg;
}

function encodeImage(img: BotImage, i: number): JsonObject {
  let bytes: Buffer;
  let md5: string;
  if ("data" in img) {
    bytes = Buffer.from(img.data.buffer, img.data.byteOffset, img.data.byteLength);
    md5 = createHash("md5").update(bytes).digest("hex");
  } else {
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(img.base64) || img.base64.length % 4 !== 0) {
      throw new EncodeError(F, `image ${i}: base64 is not valid`);
    }
    bytes = Buffer.from(img.base64, "base64");
    md5 = createHash("md5").update(bytes).digest("hex");
    if (md5 !== img.md5.toLowerCase()) throw new EncodeError(F, `image ${i}: md5 does not match the image bytes`);
  }
  if (bytes.length > BOT_IMAGE_MAX_BYTES) throw new EncodeError(F, `image ${i}: ${bytes.length} bytes, the limit is 10 MB`);
  if (!isPngOrJpeg(bytes)) throw new EncodeError(F, `image ${i}: only JPG and PNG are allowed`);
  return { msgtype: "image", image: { base64: bytes.toString("base64"), md5 } };
}

function encodeStream(s: BotStream): JsonObject {
  if (typeof s.id !== "string" || s.id.length === 0) throw new EncodeError(F, "stream.id is required");
  if (typeof s.finish !== "boolean") throw new EncodeError(F, "stream.finish must be a boolean");
  const content = s.content ?? "";
  const bytes = utf8Length(content);
  if (bytes > BOT_STREAM_MAX_BYTES) throw new EncodeError(F, `stream content is ${bytes} bytes, the limit is ${BOT_STREAM_MAX_BYTES}`);
  const images = s.images ?? [];
  if (images.length > 0 && !s.finish) throw new EncodeError(F, "stream images are only allowed when finish is true");
  if (images.length > BOT_STREAM_MAX_IMAGES) throw new EncodeError(F, `stream has ${images.length} images, the limit is ${BOT_STREAM_MAX_IMAGES}`);
  if (s.feedbackId !== undefined && (s.feedbackId.length === 0 || utf8Length(s.feedbackId) > BOT_FEEDBACK_ID_MAX_BYTES)) {
    throw new EncodeError(F, `stream.feedback.id must be 1 to ${BOT_FEEDBACK_ID_MAX_BYTES} bytes`);
  }
  return compact({
    id: s.id,
    finish: s.finish,
    content,
    feedback: s.feedbackId === undefined ? undefined : { id: s.feedbackId },
    msg_item: images.length > 0 ? images.map(encodeImage) : undefined,
  });
}

function requireCard(card: unknown, what: string): JsonObject {
  if (typeof card !== "object" || card === null || Array.isArray(card)) throw new EncodeError(F, `${what} needs a template_card object`);
  return card as JsonObject;
}

/**
 * Encode a passive reply as its plaintext JSON object.
 * @throws EncodeError when a limit of the seed is broken
 * @example JSON.stringify(encodeBotReply({ type: "stream", id: "s1", finish: false, content: "正在查询…" }))
 */
export function encodeBotReply(reply: BotReply): JsonObject {
  switch (reply.type) {
    case "text":
      if (typeof reply.content !== "string") throw new EncodeError(F, "text.content is required");
      return { msgtype: "text", text: { content: reply.content } };
    case "template_card":
      return { msgtype: "template_card", template_card: requireCard(reply.templateCard, "template_card") };
    case "stream":
      return { msgtype: "stream", stream: encodeStream(reply) };
    case "stream_with_template_card":
      return compact({
        msgtype: "stream_with_template_card",
        stream: encodeStream(reply.stream),
        template_card: reply.templateCard === undefined ? undefined : requireCard(reply.templateCard, "stream_with_template_card"),
      });
    case "update_template_card":
      return compact({
        response_type: "update_template_card",
        userids: reply.userIds,
        template_card: requireCard(reply.templateCard, "update_template_card"),
      });
    default:
      throw new EncodeError(F, `unknown reply type ${JSON.stringify((reply as { type: unknown }).type)}`);
  }
}

/**
 * Check that a reply kind is one WeCom accepts for this callback: text only for enter_chat;
 * template_card for enter_chat or a message; stream kinds for a message or a stream refresh;
 * update_template_card only for template_card_event, with the event's task_id.
 * @throws EncodeError naming the rule
 */
export function checkBotReplyAllowed(callback: BotMessage, reply: BotReply): void {
  const c = callback.content;
  const isEvent = c.type === "event";
  const eventName = isEvent ? c.event.name : undefined;
  const isMessage = !isEvent && c.type !== "stream_refresh";
  switch (reply.type) {
    case "text":
      if (eventName !== "enter_chat") throw new EncodeError(F, "a text reply is only allowed for enter_chat");
      return;
    case "template_card":
      if (eventName !== "enter_chat" && !isMessage) throw new EncodeError(F, "a template_card reply is only allowed for enter_chat or a message");
      return;
    case "stream":
    case "stream_with_template_card":
      if (!isMessage && c.type !== "stream_refresh" && eventName !== "enter_chat") {
        throw new EncodeError(F, `a ${reply.type} reply is only allowed for a message, a stream refresh or enter_chat`);
      }
      return;
    case "update_template_card":
      if (c.type !== "event" || c.event.name !== "template_card_event") {
        throw new EncodeError(F, "update_template_card is only allowed for template_card_event");
      }
      if (reply.templateCard.task_id !== c.event.taskId) {
        throw new EncodeError(F, "update_template_card task_id must be the event's task_id");
      }
      return;
  }
}
