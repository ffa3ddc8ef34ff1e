/**
 * Frames of the AI bot long connection: builders (ping without body), the tolerant parser (control
 * characters, raw TAB/LF in strings, acks without req_id, invalid frames), the req_id generator
 * and the media upload plan.
 */
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { EncodeError } from "../src/errors.js";
import {
  AIBOT_CMD,
  AIBOT_UPLOAD_CHUNK_BYTES,
  aibotEventType,
  buildAibotFrame,
  buildAibotPing,
  buildAibotSubscribe,
  isAibotDisconnectedEvent,
  newAibotReqId,
  parseAibotFrame,
  planAibotUpload,
  stripAibotControlChars,
} from "../src/wecom/bot/index.js";

describe("building frames", () => {
  it("ping has no body at all; subscribe carries bot_id and secret", () => {
    expect(JSON.parse(buildAibotPing("ping_1_0000000a"))).toEqual({ cmd: "ping", headers: { req_id: "ping_1_0000000a" } });
    expect(buildAibotPing("p")).not.toContain("body");
    expect(JSON.parse(buildAibotSubscribe("s1", "BOT", "SEC"))).toEqual({ cmd: "aibot_subscribe", headers: { req_id: "s1" }, body: { bot_id: "BOT", secret: "SEC" } });
    expect(JSON.parse(buildAibotFrame(AIBOT_CMD.respondMsg, "R", { msgtype: "markdown", markdown: { content: "hi" } }))).toEqual({
      cmd: "aibot_respond_msg",
      headers: { req_id: "R" },
      body: { msgtype: "markdown", markdown: { content: "hi" } },
    });
  });

  it("req_id: cmd, the time in ms and 8 hex chars from the injected random source", () => {
    expect(newAibotReqId("ping", () => 0, 1_700_000_000_123)).toBe("ping_1700000000123_00000000");
    expect(newAibotReqId("aibot_send_msg", () => 0.5, 42)).toBe("aibot_send_msg_42_80000000");
    expect(newAibotReqId("ping", () => 0.999999999999, 1)).toBe("ping_1_ffffffff");
    expect(newAibotReqId("ping", () => 1, 1)).toBe("ping_1_ffffffff"); // clamped
    expect(newAibotReqId("ping", () => 0.5, 1, 3)).toBe("ping_1_80000003"); // offset for a collision
    expect(newAibotReqId("ping", () => 0.999999999999, 1, 1)).toBe("ping_1_00000000"); // wraps
    expect(newAibotReqId("aibot_subscribe", Math.random, Date.now())).toMatch(/^aibot_subscribe_\d{13}_[0-9a-f]{8}$/);
  });
});

describe("parsing frames", () => {
  it("an ack: no cmd; req_id, errcode, errmsg and an optional body", () => {
    expect(parseAibotFrame('{"headers":{"req_id":"ping_1_00"},"errcode":0,"errmsg":"ok"}')).toEqual({ kind: "ack", reqId: "ping_1_00", errcode: 0, errmsg: "ok" });
    expect(parseAibotFrame('{"headers":{"req_id":"x"},"errcode":0,"errmsg":"ok","body":{"upload_id":"U"}}')).toEqual({
      kind: "ack",
      reqId: "x",
      errcode: 0,
      errmsg: "ok",
      body: { upload_id: "U" },
    });
    expect(parseAibotFrame('{"headers":{"req_id":"x"},"errcode":"846605","errmsg":"invalid req_id"}')).toMatchObject({ kind: "ack", errcode: 846605 });
  });

  it("an error frame without headers is an ack without reqId", () => {
    const f = parseAibotFrame('{"errcode":40058,"errmsg":"missing field `body.image.media_id`"}');
    expect(f).toEqual({ kind: "ack", errcode: 40058, errmsg: "missing field `body.image.media_id`" });
    expect("reqId" in f).toBe(false);
  });

  it("a callback: cmd, req_id and body (a missing body reads as {})", () => {
    const text = JSON.stringify({ cmd: "aibot_msg_callback", headers: { req_id: "zYiT5A1AQVaghhPBWxgzAwAA" }, body: { msgid: "m1", msgtype: "text", text: { content: "hi" } } });
    expect(parseAibotFrame(text)).toEqual({ kind: "callback", cmd: "aibot_msg_callback", reqId: "zYiT5A1AQVaghhPBWxgzAwAA", body: { msgid: "m1", msgtype: "text", text: { content: "hi" } } });
    expect(parseAibotFrame('{"cmd":"aibot_new_thing","headers":{"req_id":"r"}}')).toEqual({ kind: "callback", cmd: "aibot_new_thing", reqId: "r", body: {} });
  });

  it("strips ASCII control characters but TAB and LF before parsing", () => {
    expect(stripAibotControlChars("a\u0000b\u0001\u0008c\td\ne\u000bf\u000cg\rh\u001fi")).toBe("ab" + "c\td\nefghi");
    const text = '{"cmd":"aibot_msg_callback","headers":{"req_id":"r1"},"body":{"text":{"content":"he\u0000l\u0007lo\u001b wor\rld"}}}';
    expect(() => JSON.parse(text)).toThrow();
    expect(parseAibotFrame(text)).toEqual({ kind: "callback", cmd: "aibot_msg_callback", reqId: "r1", body: { text: { content: "hello world" } } });
  });

  it("keeps raw TAB and LF inside strings (as \\t and \\n), and as whitespace outside them", () => {
    const text = '{\n\t"cmd": "aibot_msg_callback",\n\t"headers": {"req_id": "r2"},\n\t"body": {"text": {"content": "line1\nline2\tcol \\"q\\" \\\\"}}\n}';
    expect(() => JSON.parse(text)).toThrow();
    expect(parseAibotFrame(text)).toEqual({ kind: "callback", cmd: "aibot_msg_callback", reqId: "r2", body: { text: { content: 'line1\nline2\tcol "q" \\' } } });
  });

  it("anything else is invalid, with a reason that does not repeat the frame", () => {
    expect(parseAibotFrame("not json secret-ish")).toEqual({ kind: "invalid", reason: "not JSON" });
    expect(parseAibotFrame("[1,2]")).toEqual({ kind: "invalid", reason: "not a JSON object" });
    expect(parseAibotFrame('{"headers":{"req_id":"x"}}')).toEqual({ kind: "invalid", reason: "neither cmd nor errcode" });
    expect(parseAibotFrame('{"cmd":"aibot_msg_callback","body":{}}')).toMatchObject({ kind: "invalid" });
    expect(parseAibotFrame('{"cmd":7,"errcode":0}')).toMatchObject({ kind: "invalid" });
    expect(parseAibotFrame('{"errcode":"abc"}')).toMatchObject({ kind: "invalid" });
  });

  it("recognises disconnected_event (and only on aibot_event_callback)", () => {
    const body = { msgtype: "event", event: { eventtype: "disconnected_event" } };
    expect(aibotEventType(body)).toBe("disconnected_event");
    expect(isAibotDisconnectedEvent("aibot_event_callback", body)).toBe(true);
    expect(isAibotDisconnectedEvent("aibot_msg_callback", body)).toBe(false);
    expect(isAibotDisconnectedEvent("aibot_event_callback", { event: { eventtype: "enter_chat" } })).toBe(false);
    expect(aibotEventType({ event: "x" })).toBeUndefined();
  });
});

describe("planning an upload", () => {
  it("cuts 1.2 MB into three 0-based chunks of at most 512 KiB, md5 of the whole file", () => {
    const bytes = Buffer.alloc(1_200_000);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31 + 7) & 0xff;
    const plan = planAibotUpload("file", "a.bin", bytes);
    expect(plan.totalChunks).toBe(3);
    expect(plan.init).toEqual({ type: "file", filename: "a.bin", total_size: 1_200_000, total_chunks: 3, md5: createHash("md5").update(bytes).digest("hex") });
    const chunks = [0, 1, 2].map((i) => plan.chunk("U1", i));
    expect(chunks.map((c) => c.chunk_index)).toEqual([0, 1, 2]);
    expect(chunks.every((c) => c.upload_id === "U1")).toBe(true);
    const decoded = chunks.map((c) => Buffer.from(c.base64_data as string, "base64"));
    expect(decoded.map((d) => d.length)).toEqual([AIBOT_UPLOAD_CHUNK_BYTES, AIBOT_UPLOAD_CHUNK_BYTES, 1_200_000 - 2 * AIBOT_UPLOAD_CHUNK_BYTES]);
    expect(Buffer.concat(decoded).equals(bytes)).toBe(true);
    expect(() => plan.chunk("U1", 3)).toThrow(EncodeError);
  });

  it("refuses an empty file and one of more than 100 chunks", () => {
    expect(() => planAibotUpload("image", "a.png", Buffer.alloc(0))).toThrow(EncodeError);
    expect(planAibotUpload("file", "b", Buffer.alloc(100 * AIBOT_UPLOAD_CHUNK_BYTES)).totalChunks).toBe(100);
    expect(() => planAibotUpload("file", "b", Buffer.alloc(100 * AIBOT_UPLOAD_CHUNK_BYTES + 1))).toThrow(/101 chunks/);
  });
});
