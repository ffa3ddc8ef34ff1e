import { createHash } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  BOT_STREAM_MAX_BYTES,
  BOT_STREAM_MAX_IMAGES,
  type BotImage,
  type BotMessage,
  type BotReply,
  BridgeError,
  checkBotReplyAllowed,
  DecodeError,
  decodeBotCallback,
  decryptBotMedia,
  EncodeError,
  encodeBotReply,
  encryptBotMedia,
  WeComCrypto,
  WeComCryptoError,
} from "../src/index.js";
import type { JsonObject } from "../src/wecom/fields.js";
import { fixtureNames, jsonFixture, vectors } from "./helpers.js";

const BOT_ID = "aibK7fQ2xZp9LmN4rT8vW1yB3cD6eG0hJ";
const CHAT_ID = "wrkSFfCgAALFgnrSsWU38puiv4yvExuw";

/** A bot fixture, parsed. */
const bot = (name: string): JsonObject => jsonFixture<JsonObject>("bot", name);
/** Decode one callback fixture. */
const decodeFixture = (name: string): BotMessage => decodeBotCallback(bot(name));

/** A nested value of a parsed fixture. */
function at(value: unknown, ...path: (string | number)[]): unknown {
  let v = value;
  for (const k of path) {
    if (typeof v !== "object" || v === null) throw new Error(`fixture has no ${path.join(".")}`);
    v = (v as Record<string | number, unknown>)[k];
  }
  return v;
}

/** A nested string of a parsed fixture (fails the test when it is not a string). */
function str(value: unknown, ...path: (string | number)[]): string {
  const v = at(value, ...path);
  if (typeof v !== "string") throw new Error(`fixture ${path.join(".")} is not a string`);
  return v;
}

/** Expect fn to throw an EncodeError; returns it. */
function expectEncodeError(fn: () => unknown, messagePart?: string): EncodeError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(EncodeError);
    expect((e as EncodeError).code).toBe("encode_invalid");
    expect((e as EncodeError).format).toBe("bot");
    if (messagePart !== undefined) expect((e as EncodeError).message).toContain(messagePart);
    return e as EncodeError;
  }
  throw new Error("expected an EncodeError, nothing was thrown");
}

/** Expect fn to throw a DecodeError. */
function expectDecodeError(fn: () => unknown): DecodeError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(DecodeError);
    expect((e as DecodeError).code).toBe("decode_malformed");
    return e as DecodeError;
  }
  throw new Error("expected a DecodeError, nothing was thrown");
}

// ---------------------------------------------------------------- table of every callback fixture

type Expected =
  | { type: "text" | "voice" | "mixed" }
  | { type: "image" | "file" | "video"; media: true }
  | { type: "stream_refresh" }
  | { type: "event"; name: "enter_chat" | "template_card_event" | "feedback_event" }
  | { type: "unknown"; msgType: string }
  | { type: "unknown_event"; eventName: string };

/** The expected discriminator, derived from the file name (`msg-<msgtype>[-variant]`, `event-<eventtype>`). */
function expectedFromName(name: string): Expected {
  const stem = name.replace(/\.json$/, "");
  if (stem === "unknown-msgtype") return { type: "unknown", msgType: "emotion" };
  if (stem === "unknown-event") return { type: "unknown_event", eventName: "add_to_chat" };
  if (stem.startsWith("event-")) return { type: "event", name: stem.slice("event-".length) } as Expected;
  const msgtype = stem.slice("msg-".length).replace(/-group$/, "");
  if (msgtype === "stream") return { type: "stream_refresh" };
  if (msgtype === "image" || msgtype === "file" || msgtype === "video") return { type: msgtype, media: true };
  return { type: msgtype } as Expected;
}

/** Every callback fixture this suite knows; a new fixture must be added here. */
const BOT_CALLBACK_FIXTURES: Record<string, Expected> = {
  "event-enter_chat.json": { type: "event", name: "enter_chat" },
  "event-feedback_event.json": { type: "event", name: "feedback_event" },
  "event-template_card_event.json": { type: "event", name: "template_card_event" },
  "msg-file.json": { type: "file", media: true },
  "msg-image.json": { type: "image", media: true },
  "msg-mixed.json": { type: "mixed" },
  "msg-stream.json": { type: "stream_refresh" },
  "msg-text-group.json": { type: "text" },
  "msg-text.json": { type: "text" },
  "msg-video.json": { type: "video", media: true },
  "msg-voice.json": { type: "voice" },
  "unknown-event.json": { type: "unknown_event", eventName: "add_to_chat" },
  "unknown-msgtype.json": { type: "unknown", msgType: "emotion" },
};

const callbackFixtureNames = () => fixtureNames("bot").filter((n) => /^(msg|event|unknown)-/.test(n));

describe("bot fixtures: table", () => {
  it("covers every msg-/event-/unknown- fixture in test/fixtures/bot", () => {
    const names = callbackFixtureNames();
    expect(names.length).toBeGreaterThanOrEqual(13);
    expect(Object.keys(BOT_CALLBACK_FIXTURES).sort()).toEqual(names);
  });

  it.each(Object.keys(BOT_CALLBACK_FIXTURES))("%s: the table agrees with the file name and the fixture's msgtype", (name) => {
    expect(BOT_CALLBACK_FIXTURES[name]).toEqual(expectedFromName(name));
    const obj = bot(name);
    const stem = name.replace(/\.json$/, "");
    if (stem.startsWith("event-")) expect(at(obj, "event", "eventtype")).toBe(stem.slice("event-".length));
    else if (stem.startsWith("msg-")) expect(stem.slice("msg-".length).startsWith(str(obj, "msgtype"))).toBe(true);
  });

  it.each(Object.entries(BOT_CALLBACK_FIXTURES))("%s decodes to the expected discriminator", (name, want) => {
    const obj = bot(name);
    const m = decodeBotCallback(obj);
    expect(m.channel).toBe("bot");
    expect(m.id).toBe(str(obj, "msgid"));
    expect(m.botId).toBe(BOT_ID);
    expect(m.raw).toBe(obj);
    const c = m.content;
    switch (want.type) {
      case "event":
        expect(c.type).toBe("event");
        if (c.type === "event") expect(c.event.name).toBe(want.name);
        break;
      case "unknown_event":
        expect(c).toStrictEqual({ type: "event", event: { name: "unknown", eventName: want.eventName, raw: obj } });
        if (c.type === "event" && c.event.name === "unknown") expect(c.event.raw).toBe(obj);
        break;
      case "unknown":
        expect(c).toStrictEqual({ type: "unknown", msgType: want.msgType, raw: obj });
        if (c.type === "unknown") expect(c.raw).toBe(obj);
        break;
      case "image":
      case "file":
      case "video":
        expect(c).toStrictEqual({ type: want.type, media: { url: str(obj, want.type, "url"), encrypted: true } });
        break;
      default:
        expect(c.type).toBe(want.type);
    }
  });
});

// ---------------------------------------------------------------- field level

describe("bot decode: content", () => {
  it("text", () => {
    expect(decodeFixture("msg-text.json").content).toStrictEqual({ type: "text", text: "帮我查一下广州今天的天气" });
  });

  it("group text (the quote is not part of the content)", () => {
    expect(decodeFixture("msg-text-group.json").content).toStrictEqual({ type: "text", text: "@RobotA 总结一下这份测试报告" });
  });

  it("voice is its transcript only", () => {
    expect(decodeFixture("msg-voice.json").content).toStrictEqual({ type: "voice", transcript: "明天上午十点提醒我开周会" });
  });

  it.each(["image", "file", "video"] as const)("%s: an encrypted URL", (t) => {
    const url = str(bot(`msg-${t}.json`), t, "url");
    expect(url).toMatch(/^https:\/\/ww-aibot-img-/);
    expect(decodeFixture(`msg-${t}.json`).content).toStrictEqual({ type: t, media: { url, encrypted: true } });
  });

  it("mixed: text then image", () => {
    const f = bot("msg-mixed.json");
    expect(decodeFixture("msg-mixed.json").content).toStrictEqual({
      type: "mixed",
      items: [
        { type: "text", text: "@RobotA 这张截图里的报错是什么原因？" },
        { type: "image", media: { url: str(f, "mixed", "msg_item", 1, "image", "url"), encrypted: true } },
      ],
    });
  });

  it("mixed: unknown parts keep their raw value", () => {
    const part = { msgtype: "sticker", sticker: { url: "u" } };
    const m = decodeBotCallback({ ...bot("msg-mixed.json"), mixed: { msg_item: [part, 7] } });
    expect(m.content).toStrictEqual({
      type: "mixed",
      items: [
        { type: "unknown", msgType: "sticker", raw: part },
        { type: "unknown", msgType: "", raw: 7 },
      ],
    });
  });

  it("stream refresh carries the stream id", () => {
    expect(decodeFixture("msg-stream.json").content).toStrictEqual({ type: "stream_refresh", streamId: "wb-stream-20240522-3f9a7c1e" });
  });
});

describe("bot decode: events", () => {
  it("enter_chat", () => {
    expect(decodeFixture("event-enter_chat.json").content).toStrictEqual({ type: "event", event: { name: "enter_chat" } });
  });

  it("template_card_event: card type, key, task id and selections", () => {
    expect(decodeFixture("event-template_card_event.json").content).toStrictEqual({
      type: "event",
      event: {
        name: "template_card_event",
        cardType: "multiple_interaction",
        eventKey: "submit_key",
        taskId: "wb_welcome_20240522_8f3a1c",
        selectedItems: [
          { questionKey: "question_key_one", optionIds: ["id_two"] },
          { questionKey: "question_key_two", optionIds: ["id_three"] },
        ],
      },
    });
  });

  it("template_card_event: plain-array selections and an action_menu click without selections", () => {
    const f = bot("event-template_card_event.json");
    const flat = {
      ...f,
      event: {
        eventtype: "template_card_event",
        template_card_event: {
          card_type: "vote_interaction",
          event_key: "k",
          task_id: "t",
          selected_items: [{ question_key: "q", option_ids: ["a", "b"] }],
        },
      },
    };
    expect(decodeBotCallback(flat).content).toMatchObject({ event: { selectedItems: [{ questionKey: "q", optionIds: ["a", "b"] }] } });
    const menu = {
      ...f,
      event: { eventtype: "template_card_event", template_card_event: { card_type: "text_notice", event_key: "menu_1", task_id: "t" } },
    };
    expect(decodeBotCallback(menu).content).toMatchObject({ event: { cardType: "text_notice", selectedItems: [] } });
  });

  it("feedback_event: id, type, content, reasons", () => {
    expect(decodeFixture("event-feedback_event.json").content).toStrictEqual({
      type: "event",
      event: {
        name: "feedback_event",
        id: "fb-20240522-3f9a7c1e",
        feedbackType: 2,
        content: "能再详细一些么",
        inaccurateReasons: [2, 4],
      },
    });
  });

  it("feedback_event without content or reasons", () => {
    const f = bot("event-feedback_event.json");
    const m = decodeBotCallback({ ...f, event: { eventtype: "feedback_event", feedback_event: { id: "fb1", type: 1 } } });
    expect(m.content).toStrictEqual({ type: "event", event: { name: "feedback_event", id: "fb1", feedbackType: 1, inaccurateReasons: [] } });
  });
});

describe("bot decode: addresses, ids, time", () => {
  it("single chat: conversation bot:{aibotid}:user:{userid}, from the member to the bot", () => {
    const m = decodeFixture("msg-text.json");
    expect(m.id).toBe("CAIQ16HMjQYY/NGagIOAgAMgq4KM0AI=");
    expect(m.chatType).toBe("single");
    expect(m.chatId).toBeUndefined();
    expect(m.conversationId).toBe(`bot:${BOT_ID}:user:zhangsan`);
    expect(m.from).toStrictEqual({ kind: "member", id: "zhangsan" });
    expect(m.to).toStrictEqual([{ kind: "bot", id: BOT_ID }]);
    expect(m.responseUrl).toBe("https://qyapi.weixin.qq.com/cgi-bin/aibot/response?response_code=Rc8Ymq2V5tKx0pLw3nHb7jZf");
  });

  it("group chat: chatId and conversation bot:{aibotid}:group:{chatid}", () => {
    const m = decodeFixture("msg-text-group.json");
    expect(m.id).toBe("CAIQ16HMjQYY/NGagIOAgAMgr5LN1BJ=");
    expect(m.chatType).toBe("group");
    expect(m.chatId).toBe(CHAT_ID);
    expect(m.conversationId).toBe(`bot:${BOT_ID}:group:${CHAT_ID}`);
    expect(m.from).toStrictEqual({ kind: "member", id: "lisi" });
    expect(m.to).toStrictEqual([{ kind: "group", id: CHAT_ID }]);
    expect(m.responseUrl).toBe("https://qyapi.weixin.qq.com/cgi-bin/aibot/response?response_code=Rd9Znr3W6uLy1qMx4oIc8kAg");
  });

  it.each(callbackFixtureNames())("%s: id, conversationId, responseUrl and time follow the fixture", (name) => {
    const obj = bot(name);
    const m = decodeBotCallback(obj, { receivedAt: 1_716_345_000_123 });
    expect(m.id).toBe(str(obj, "msgid"));
    const chatid = obj.chatid as string | undefined;
    expect(m.conversationId).toBe(chatid ? `bot:${BOT_ID}:group:${chatid}` : `bot:${BOT_ID}:user:${str(obj, "from", "userid")}`);
    expect(m.responseUrl).toBe(obj.response_url);
    // messages carry no time of their own: they are stamped with the time of receipt
    expect(m.time).toBe(typeof obj.create_time === "number" ? obj.create_time * 1000 : 1_716_345_000_123);
  });

  it("events carry create_time in ms", () => {
    expect(decodeFixture("event-enter_chat.json").time).toBe(1716345600000);
  });

  it("accepts the callback as text", () => {
    const obj = bot("event-template_card_event.json");
    expect(decodeBotCallback(JSON.stringify(obj), { receivedAt: 1 })).toStrictEqual(decodeBotCallback(obj, { receivedAt: 1 }));
  });

  it.each([
    ["not JSON", "{"],
    ["an array", "[1]"],
    ["no msgtype", '{"msgid":"m","aibotid":"b"}'],
    ["empty msgtype", '{"msgid":"m","msgtype":""}'],
    ["no msgid", '{"aibotid":"b","msgtype":"text","text":{"content":"x"}}'],
  ])("%s throws DecodeError", (_what, text) => {
    expect(expectDecodeError(() => decodeBotCallback(text)).format).toBe("bot");
  });
});

// ---------------------------------------------------------------- encoders

interface StreamFixture {
  id: string;
  finish: boolean;
  content: string;
  feedback?: { id: string };
  msg_item?: { msgtype: string; image: { base64: string; md5: string } }[];
}

const replyFixture = (name: string) => bot(name);
const FINISH = replyFixture("reply-stream-finish.json");
const FINISH_STREAM = FINISH.stream as StreamFixture;
const PNG_B64 = str(FINISH, "stream", "msg_item", 0, "image", "base64");
const PNG_MD5 = str(FINISH, "stream", "msg_item", 0, "image", "md5");
const PNG = Buffer.from(PNG_B64, "base64");

describe("bot encodeBotReply: fixtures", () => {
  it("has an expectation for every reply fixture", () => {
    expect(fixtureNames("bot", "reply-")).toEqual([
      "reply-stream-finish.json",
      "reply-stream.json",
      "reply-stream_with_template_card.json",
      "reply-template_card.json",
      "reply-text.json",
      "reply-update_template_card.json",
    ]);
  });

  it("text", () => {
    const f = replyFixture("reply-text.json");
    expect(encodeBotReply({ type: "text", content: str(f, "text", "content") })).toStrictEqual(f);
  });

  it("template_card", () => {
    const f = replyFixture("reply-template_card.json");
    expect(encodeBotReply({ type: "template_card", templateCard: f.template_card as JsonObject })).toStrictEqual(f);
  });

  it("stream (first answer, with feedback id)", () => {
    const f = replyFixture("reply-stream.json");
    const s = f.stream as StreamFixture;
    expect(encodeBotReply({ type: "stream", id: s.id, finish: s.finish, content: s.content, feedbackId: s.feedback?.id })).toStrictEqual(f);
  });

  it("stream finish with the image as raw bytes", () => {
    expect(PNG.subarray(1, 4).toString("latin1")).toBe("PNG");
    const out = encodeBotReply({ type: "stream", id: FINISH_STREAM.id, finish: true, content: FINISH_STREAM.content, images: [{ data: PNG }] });
    expect(out).toStrictEqual(FINISH);
  });

  it("stream finish with the image as a Uint8Array view into a larger buffer", () => {
    const big = new Uint8Array(PNG.length + 10);
    big.set(PNG, 5);
    const view = big.subarray(5, 5 + PNG.length);
    const out = encodeBotReply({ type: "stream", id: FINISH_STREAM.id, finish: true, content: FINISH_STREAM.content, images: [{ data: view }] });
    expect(out).toStrictEqual(FINISH);
  });

  it("stream finish with the image as base64 + md5 (md5 in upper case accepted)", () => {
    const out = encodeBotReply({
      type: "stream",
      id: FINISH_STREAM.id,
      finish: true,
      content: FINISH_STREAM.content,
      images: [{ base64: PNG_B64, md5: PNG_MD5 }],
    });
    expect(out).toStrictEqual(FINISH);
    const upper = encodeBotReply({
      type: "stream",
      id: FINISH_STREAM.id,
      finish: true,
      content: FINISH_STREAM.content,
      images: [{ base64: PNG_B64, md5: PNG_MD5.toUpperCase() }],
    });
    expect(upper).toStrictEqual(FINISH);
  });

  it("stream_with_template_card", () => {
    const f = replyFixture("reply-stream_with_template_card.json");
    const s = f.stream as StreamFixture;
    const out = encodeBotReply({
      type: "stream_with_template_card",
      stream: { id: s.id, finish: s.finish, content: s.content },
      templateCard: f.template_card as JsonObject,
    });
    expect(out).toStrictEqual(f);
  });

  it("stream_with_template_card without a card", () => {
    expect(encodeBotReply({ type: "stream_with_template_card", stream: { id: "s", finish: false, content: "x" } })).toStrictEqual({
      msgtype: "stream_with_template_card",
      stream: { id: "s", finish: false, content: "x" },
    });
  });

  it("update_template_card", () => {
    const f = replyFixture("reply-update_template_card.json");
    const out = encodeBotReply({ type: "update_template_card", userIds: f.userids as string[], templateCard: f.template_card as JsonObject });
    expect(out).toStrictEqual(f);
    const all = encodeBotReply({ type: "update_template_card", templateCard: f.template_card as JsonObject });
    expect(all).toStrictEqual({ response_type: "update_template_card", template_card: f.template_card });
  });
});

describe("bot encodeBotReply: limits", () => {
  const stream = (over: Partial<Extract<BotReply, { type: "stream" }>> = {}): BotReply => ({ type: "stream", id: "s1", finish: true, content: "x", ...over });

  it("content of exactly 20480 UTF-8 bytes passes, 20481 fails (bytes, not characters)", () => {
    expect(BOT_STREAM_MAX_BYTES).toBe(20480);
    const ok = "你".repeat(6826) + "ab"; // 20478 + 2 bytes
    expect(Buffer.byteLength(ok)).toBe(20480);
    expect(encodeBotReply(stream({ content: ok }))).toStrictEqual({ msgtype: "stream", stream: { id: "s1", finish: true, content: ok } });
    const tooLong = "你".repeat(6827); // 20481 bytes, 6827 characters
    expect(Buffer.byteLength(tooLong)).toBe(20481);
    expectEncodeError(() => encodeBotReply(stream({ content: tooLong })), "20481");
    expectEncodeError(() => encodeBotReply({ type: "stream_with_template_card", stream: { id: "s", finish: false, content: tooLong } }), "20481");
  });

  it("images while finish=false fail", () => {
    expectEncodeError(() => encodeBotReply(stream({ finish: false, images: [{ data: PNG }] })), "finish");
    expectEncodeError(
      () => encodeBotReply({ type: "stream_with_template_card", stream: { id: "s", finish: false, images: [{ data: PNG }] } }),
      "finish",
    );
  });

  it("10 images pass, 11 fail", () => {
    expect(BOT_STREAM_MAX_IMAGES).toBe(10);
    const imgs = (n: number): BotImage[] => Array.from({ length: n }, () => ({ data: PNG }));
    const out = encodeBotReply(stream({ images: imgs(10) }));
    expect((out.stream as StreamFixture).msg_item).toHaveLength(10);
    expectEncodeError(() => encodeBotReply(stream({ images: imgs(11) })), "11");
  });

  it("a wrong md5 fails", () => {
    const wrong = createHash("md5").update("something else").digest("hex");
    expectEncodeError(() => encodeBotReply(stream({ images: [{ base64: PNG_B64, md5: wrong }] })), "md5");
  });

  it("invalid base64 fails", () => {
    expectEncodeError(() => encodeBotReply(stream({ images: [{ base64: `${PNG_B64.slice(0, -4)}!!!!`, md5: PNG_MD5 }] })), "base64");
  });

  it("a GIF (not PNG or JPEG) fails, as bytes and as base64 with its true md5", () => {
    const gif = Buffer.concat([Buffer.from("GIF89a", "latin1"), Buffer.alloc(30, 1)]);
    expectEncodeError(() => encodeBotReply(stream({ images: [{ data: gif }] })), "JPG");
    const md5 = createHash("md5").update(gif).digest("hex");
    expectEncodeError(() => encodeBotReply(stream({ images: [{ base64: gif.toString("base64"), md5 }] })), "JPG");
  });

  it("a JPEG passes", () => {
    const jpeg = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.alloc(20, 7)]);
    const out = encodeBotReply(stream({ images: [{ data: jpeg }] }));
    expect(at(out, "stream", "msg_item", 0, "image")).toStrictEqual({
      base64: jpeg.toString("base64"),
      md5: createHash("md5").update(jpeg).digest("hex"),
    });
  });

  it("a missing stream id fails", () => {
    expectEncodeError(() => encodeBotReply(stream({ id: "" })), "id");
    expectEncodeError(() => encodeBotReply({ type: "stream", finish: false } as unknown as BotReply), "id");
    expectEncodeError(() => encodeBotReply({ type: "stream_with_template_card", stream: { id: "", finish: true } }), "id");
  });

  it("a non-boolean finish fails", () => {
    expectEncodeError(() => encodeBotReply({ type: "stream", id: "s", finish: "yes" } as unknown as BotReply), "finish");
  });

  it("a feedback id over 256 bytes fails", () => {
    expect(at(encodeBotReply(stream({ feedbackId: "f".repeat(256) })), "stream", "feedback")).toStrictEqual({ id: "f".repeat(256) });
    expectEncodeError(() => encodeBotReply(stream({ feedbackId: "你".repeat(86) })), "feedback");
  });

  it("template cards must be objects; an unknown reply type fails", () => {
    expectEncodeError(() => encodeBotReply({ type: "template_card", templateCard: null } as unknown as BotReply), "template_card");
    expectEncodeError(() => encodeBotReply({ type: "update_template_card", templateCard: [] } as unknown as BotReply), "template_card");
    expectEncodeError(() => encodeBotReply({ type: "markdown" } as unknown as BotReply), "markdown");
  });
});

describe("bot checkBotReplyAllowed", () => {
  const text: BotReply = { type: "text", content: "hi" };
  const card: BotReply = { type: "template_card", templateCard: { card_type: "text_notice" } };
  const streamReply: BotReply = { type: "stream", id: "s", finish: false, content: "…" };
  const update = (): BotReply => {
    const f = replyFixture("reply-update_template_card.json");
    return { type: "update_template_card", userIds: ["zhangsan"], templateCard: f.template_card as JsonObject };
  };
  const allowed = (name: string, reply: BotReply) => () => checkBotReplyAllowed(decodeFixture(name), reply);

  it("text only for enter_chat", () => {
    expect(allowed("event-enter_chat.json", text)).not.toThrow();
    expectEncodeError(allowed("msg-text.json", text), "enter_chat");
    expectEncodeError(allowed("msg-stream.json", text), "enter_chat");
    expectEncodeError(allowed("event-template_card_event.json", text), "enter_chat");
  });

  it("template_card for enter_chat or a message, not for a stream refresh or feedback", () => {
    expect(allowed("event-enter_chat.json", card)).not.toThrow();
    expect(allowed("msg-text.json", card)).not.toThrow();
    expectEncodeError(allowed("msg-stream.json", card));
    expectEncodeError(allowed("event-feedback_event.json", card));
  });

  it("stream for a message and a stream refresh, not for feedback or a card event", () => {
    expect(allowed("msg-text.json", streamReply)).not.toThrow();
    expect(allowed("msg-mixed.json", streamReply)).not.toThrow();
    expect(allowed("msg-stream.json", streamReply)).not.toThrow();
    expect(allowed("msg-stream.json", { type: "stream_with_template_card", stream: { id: "s", finish: true } })).not.toThrow();
    expectEncodeError(allowed("event-feedback_event.json", streamReply));
    expectEncodeError(allowed("event-template_card_event.json", streamReply));
  });

  it("update_template_card only for template_card_event, with its task_id", () => {
    expect(allowed("event-template_card_event.json", update())).not.toThrow();
    expectEncodeError(allowed("msg-text.json", update()), "template_card_event");
    expectEncodeError(allowed("event-enter_chat.json", update()), "template_card_event");
    const other = update();
    if (other.type !== "update_template_card") throw new Error("unreachable");
    other.templateCard = { ...other.templateCard, task_id: "another_task" };
    expectEncodeError(allowed("event-template_card_event.json", other), "task_id");
    const missing = update();
    if (missing.type !== "update_template_card") throw new Error("unreachable");
    const { task_id: _dropped, ...noTask } = missing.templateCard;
    missing.templateCard = noTask;
    expectEncodeError(allowed("event-template_card_event.json", missing), "task_id");
  });

  it("reads the sender's corpid, drops non-numeric feedback reasons and non-scalar option ids", () => {
    const m = decodeBotCallback({ msgid: "m1", aibotid: "b", chattype: "single", from: { userid: "u", corpid: "wwCORP" }, msgtype: "text", text: { content: "x" } });
    expect(m.corpId).toBe("wwCORP");
    const fb = decodeBotCallback({
      msgid: "m2",
      aibotid: "b",
      msgtype: "event",
      event: { eventtype: "feedback_event", feedback_event: { id: "s", type: 2, inaccurate_reason_list: [1, "x", 3] } },
    });
    expect(fb.content).toMatchObject({ type: "event", event: { name: "feedback_event", inaccurateReasons: [1, 3] } });
    const card = decodeBotCallback({
      msgid: "m3",
      aibotid: "b",
      msgtype: "event",
      event: {
        eventtype: "template_card_event",
        template_card_event: { card_type: "vote_interaction", event_key: "k", task_id: "t", selected_items: { selected_item: [{ question_key: "q", option_ids: { option_id: ["a", { x: 1 }, 2] } }] } },
      },
    });
    expect(card.content).toMatchObject({ type: "event", event: { selectedItems: [{ questionKey: "q", optionIds: ["a", "2"] }] } });
  });
});

// ---------------------------------------------------------------- crypto integration

describe("bot crypto integration", () => {
  const v = vectors.aibot_stream_reply;
  const crypto = () => new WeComCrypto({ token: v.token, encodingAESKey: v.encodingAESKey, receiveId: v.receiveId });

  it("the vector uses an empty receiveId", () => {
    expect(v.receiveId).toBe("");
  });

  it("encrypting our stream reply gives the vector's encrypt and msgsignature (same JSON key order)", () => {
    const plain = JSON.stringify(encodeBotReply({ type: "stream", id: "STREAMID", finish: false, content: "hello" }));
    expect(plain).toBe(v.plaintext);
    const r = crypto().encryptReply(plain, v.timestamp, v.nonce, v.random);
    expect(r.encrypt).toBe(v.encrypt);
    expect(r.msgsignature).toBe(v.msgsignature);
    expect(r.timestamp).toBe(v.timestamp);
    expect(r.nonce).toBe(v.nonce);
  });

  it.each(callbackFixtureNames())("%s: encryptJsonReply → decryptCallback → decodeBotCallback round-trips", (name) => {
    const c = crypto();
    const obj = bot(name);
    const body = JSON.parse(c.encryptJsonReply(JSON.stringify(obj), "1716345600", "nonce123")) as Record<string, string>;
    expect(Object.keys(body)).toEqual(["encrypt", "msgsignature", "timestamp", "nonce"]);
    const plain = c.decryptCallback(
      { msg_signature: body.msgsignature as string, timestamp: body.timestamp as string, nonce: body.nonce as string },
      body.encrypt as string,
    );
    expect(decodeBotCallback(plain, { receivedAt: 1 })).toStrictEqual(decodeBotCallback(obj, { receivedAt: 1 }));
  });

  it("a tampered callback fails the signature check", () => {
    const c = crypto();
    const body = JSON.parse(c.encryptJsonReply(JSON.stringify(bot("msg-text.json")), "1716345600", "n")) as Record<string, string>;
    try {
      c.decryptCallback({ msg_signature: "0".repeat(40), timestamp: "1716345600", nonce: "n" }, body.encrypt as string);
      throw new Error("no error");
    } catch (e) {
      expect(e).toBeInstanceOf(WeComCryptoError);
      expect((e as WeComCryptoError).errcode).toBe(-40001);
    }
  });

  it("media: decryptBotMedia(encryptBotMedia(x)) === x", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (x) => {
        const enc = encryptBotMedia(v.encodingAESKey, x);
        expect(enc.length % 32).toBe(0);
        expect(enc.length).toBeGreaterThan(x.length);
        expect(decryptBotMedia(v.encodingAESKey, enc).equals(Buffer.from(x))).toBe(true);
      }),
    );
    expect(decryptBotMedia(v.encodingAESKey, encryptBotMedia(v.encodingAESKey, PNG)).equals(PNG)).toBe(true);
  });

  it.each([0, 15, 17, 33])("media of %i bytes throws -40007", (n) => {
    try {
      decryptBotMedia(v.encodingAESKey, new Uint8Array(n));
      throw new Error("no error");
    } catch (e) {
      expect(e).toBeInstanceOf(WeComCryptoError);
      expect((e as WeComCryptoError).errcode).toBe(-40007);
    }
  });
});

// ---------------------------------------------------------------- robustness

/** Run fn: returning is fine, a BridgeError is fine, anything else fails the property. */
function onlyBridgeErrors(fn: () => unknown): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof BridgeError)) throw e;
  }
}

const BOT_MSGTYPES = ["text", "image", "voice", "file", "video", "mixed", "stream", "event", "emotion", "toString", "__proto__"];
const BOT_EVENT_TYPES = ["enter_chat", "template_card_event", "feedback_event", "add_to_chat", "toString", ""];

/** Callbacks shaped like bot callbacks, with arbitrary values where the decoder reads fields. */
const fuzzCallback = fc
  .record(
    {
      msgid: fc.oneof(fc.string(), fc.jsonValue()),
      aibotid: fc.jsonValue(),
      chatid: fc.jsonValue(),
      chattype: fc.jsonValue(),
      from: fc.oneof(fc.record({ userid: fc.jsonValue() }), fc.jsonValue()),
      create_time: fc.jsonValue(),
      response_url: fc.jsonValue(),
      msgtype: fc.constantFrom(...BOT_MSGTYPES),
      body: fc.oneof(
        fc.jsonValue(),
        fc.record(
          {
            content: fc.jsonValue(),
            url: fc.jsonValue(),
            id: fc.jsonValue(),
            msg_item: fc.oneof(fc.jsonValue(), fc.array(fc.record({ msgtype: fc.constantFrom("text", "image", "x"), text: fc.jsonValue(), image: fc.jsonValue() }))),
          },
          { requiredKeys: [] },
        ),
      ),
      event: fc.oneof(
        fc.jsonValue(),
        fc.record({
          eventtype: fc.constantFrom(...BOT_EVENT_TYPES),
          template_card_event: fc.oneof(
            fc.jsonValue(),
            fc.record({
              card_type: fc.jsonValue(),
              task_id: fc.jsonValue(),
              selected_items: fc.oneof(
                fc.jsonValue(),
                fc.array(fc.record({ question_key: fc.jsonValue(), option_ids: fc.oneof(fc.jsonValue(), fc.array(fc.jsonValue())) })),
                fc.record({
                  selected_item: fc.array(
                    fc.record({ question_key: fc.jsonValue(), option_ids: fc.oneof(fc.jsonValue(), fc.record({ option_id: fc.array(fc.jsonValue()) })) }),
                  ),
                }),
              ),
            }),
          ),
          feedback_event: fc.oneof(
            fc.jsonValue(),
            fc.record({ id: fc.jsonValue(), type: fc.jsonValue(), content: fc.jsonValue(), inaccurate_reason_list: fc.oneof(fc.jsonValue(), fc.array(fc.jsonValue())) }),
          ),
        }),
      ),
    },
    { requiredKeys: ["msgid", "msgtype"] },
  )
  .map(({ body, event, ...rest }): JsonObject => (rest.msgtype === "event" ? { ...rest, event } : { ...rest, [rest.msgtype]: body }));

describe("bot robustness (fast-check)", () => {
  it("decodeBotCallback on any JSON value returns or throws a BridgeError", () => {
    fc.assert(fc.property(fc.jsonValue(), (v) => onlyBridgeErrors(() => decodeBotCallback(v as JsonObject))));
  });

  it("decodeBotCallback on any object returns or throws a BridgeError", () => {
    fc.assert(fc.property(fc.object(), (v) => onlyBridgeErrors(() => decodeBotCallback(v as JsonObject))));
  });

  it("decodeBotCallback on any string or JSON text returns or throws a BridgeError", () => {
    fc.assert(fc.property(fc.string(), (s) => onlyBridgeErrors(() => decodeBotCallback(s))));
    fc.assert(fc.property(fc.json(), (s) => onlyBridgeErrors(() => decodeBotCallback(s))));
  });

  it("decodeBotCallback on callback-shaped objects and their JSON text returns or throws a BridgeError", () => {
    fc.assert(
      fc.property(fuzzCallback, (v) => {
        onlyBridgeErrors(() => decodeBotCallback(v));
        onlyBridgeErrors(() => decodeBotCallback(JSON.stringify(v)));
      }),
      { numRuns: 500 },
    );
  });

  it("a non-object callback is a DecodeError, not a TypeError", () => {
    for (const v of [null, 42, "x", [], true]) expectDecodeError(() => decodeBotCallback(v as unknown as JsonObject));
  });

  it("any stream content within the limit encodes and survives the JSON + crypto round trip", () => {
    const v = vectors.aibot_stream_reply;
    const c = new WeComCrypto({ token: v.token, encodingAESKey: v.encodingAESKey });
    fc.assert(
      fc.property(fc.string({ unit: "grapheme", maxLength: 100 }), fc.boolean(), (content, finish) => {
        const reply = encodeBotReply({ type: "stream", id: "s1", finish, content });
        const plain = c.decrypt(c.encrypt(JSON.stringify(reply))).message;
        expect(JSON.parse(plain)).toStrictEqual({ msgtype: "stream", stream: { id: "s1", finish, content } });
      }),
      { numRuns: 50 },
    );
  });
});
