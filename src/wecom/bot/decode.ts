/**
 * Decoder of AI-bot (智能机器人) callbacks (seed 003): decrypted JSON into {@link BotMessage}.
 * @module
 */
import { DecodeError } from "../../errors.js";
import type { BotContent, BotEvent, BotMessage, Content, Identity } from "../../model.js";
import { compact, isObject, type JsonObject, optArray, optNumber, optObject, optString, parseJsonObject } from "../fields.js";

const F = "bot";

/** Context the payload does not always carry. */
export interface BotDecodeContext {
  /**
   * When the callback arrived, ms. Bot messages carry no time of their own (only events have
   * `create_time`), so this stamps them. Default: `Date.now()`.
   */
  receivedAt?: number;
}

/**
 * Decode a bot callback (text or parsed object). Media URLs are marked `encrypted`: their bytes
 * are AES-encrypted with the bot's EncodingAESKey and valid 5 minutes.
 * @throws DecodeError when it is not a JSON object or lacks msgtype
 */
export function decodeBotCallback(input: string | JsonObject, context: BotDecodeContext = {}): BotMessage {
  const obj = typeof input === "string" ? parseJsonObject(F, input) : input;
  if (!isObject(obj)) throw new DecodeError(F, "expected a JSON object");
  const msgtype = optString(obj, "msgtype");
  if (msgtype === undefined || msgtype === "") throw new DecodeError(F, 'missing field "msgtype"');
  const content = decodeBotContent(msgtype, obj);
  const fromObj = optObject(obj, "from");
  const userId = fromObj === undefined ? undefined : optString(fromObj, "userid");
  const corpId = fromObj === undefined ? undefined : optString(fromObj, "corpid") || undefined;
  const botId = optString(obj, "aibotid") ?? "";
  const chatType = optString(obj, "chattype") ?? "single";
  const chatId = optString(obj, "chatid") || undefined;
  const msgid = optString(obj, "msgid");
  if (msgid === undefined || msgid === "") throw new DecodeError(F, 'missing field "msgid"');
  const from: Identity | undefined = userId ? { kind: "member", id: userId } : undefined;
  const to: Identity[] = chatId ? [{ kind: "group", id: chatId }] : [{ kind: "bot", id: botId }];
  const createTime = optNumber(obj, "create_time");
  return compact({
    channel: "bot",
    id: msgid,
    corpId,
    conversationId: `bot:${botId}:${chatId ? `group:${chatId}` : `user:${userId ?? ""}`}`,
    from,
    to,
    time: createTime === undefined ? (context.receivedAt ?? Date.now()) : createTime * 1000,
    content,
    raw: obj,
    botId,
    chatType,
    chatId,
    responseUrl: optString(obj, "response_url"),
  });
}

function media(body: JsonObject | undefined) {
  // long-connection callbacks carry each file's own key; webhook ones use the bot's EncodingAESKey
  return compact({ url: body === undefined ? undefined : optString(body, "url"), encrypted: true, aesKey: body === undefined ? undefined : optString(body, "aeskey") });
}

function decodeItem(item: unknown): Content {
  if (!isObject(item)) return { type: "unknown", msgType: "", raw: item };
  const t = optString(item, "msgtype") ?? "";
  const body = optObject(item, t);
  switch (t) {
    case "text":
      return { type: "text", text: (body && optString(body, "content")) ?? "" };
    case "image":
      return { type: "image", media: media(body) };
    default:
      return { type: "unknown", msgType: t, raw: item };
  }
}

function decodeBotContent(msgtype: string, obj: JsonObject): BotContent {
  const body = optObject(obj, msgtype);
  const s = (k: string) => (body === undefined ? undefined : optString(body, k));
  switch (msgtype) {
    case "text":
      return { type: "text", text: s("content") ?? "" };
    case "image":
      return { type: "image", media: media(body) };
    case "voice":
      return { type: "voice", transcript: s("content") ?? "" };
    case "file":
      return { type: "file", media: media(body) };
    case "video":
      return { type: "video", media: media(body) };
    case "mixed":
      return { type: "mixed", items: (body === undefined ? [] : optArray(body, "msg_item")).map(decodeItem) };
    case "stream":
      return { type: "stream_refresh", streamId: s("id") ?? "" };
    case "event":
      return { type: "event", event: decodeBotEvent(body ?? {}, obj) };
    default:
      return { type: "unknown", msgType: msgtype, raw: obj };
  }
}

function decodeBotEvent(ev: JsonObject, raw: JsonObject): BotEvent {
  const eventType = optString(ev, "eventtype") ?? "";
  const body = optObject(ev, eventType) ?? {};
  switch (eventType) {
    case "enter_chat":
      return { name: "enter_chat" };
    case "template_card_event": {
      const selected = optObject(body, "selected_items");
      const items = selected === undefined ? optArray(body, "selected_items") : optArray(selected, "selected_item");
      return {
        name: "template_card_event",
        cardType: optString(body, "card_type") ?? "",
        eventKey: optString(body, "event_key") ?? "",
        taskId: optString(body, "task_id") ?? "",
        selectedItems: items.filter(isObject).map((it) => {
          const ids = optObject(it, "option_ids");
          const list = ids === undefined ? optArray(it, "option_ids") : optArray(ids, "option_id");
          return { questionKey: optString(it, "question_key") ?? "", optionIds: list.filter((x) => typeof x === "string" || typeof x === "number").map(String) };
        }),
      };
    }
    case "feedback_event":
      return compact({
        name: "feedback_event",
        id: optString(body, "id") ?? "",
        feedbackType: optNumber(body, "type") ?? 0,
        content: optString(body, "content") || undefined,
        inaccurateReasons: optArray(body, "inaccurate_reason_list").map((n) => Number(n)).filter((n) => Number.isFinite(n)),
      });
    default:
      return { name: "unknown", eventName: eventType, raw };
  }
}
