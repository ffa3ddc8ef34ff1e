/**
 * The WeCom simulator's AI-bot long connection (智能机器人长连接), over a real WebSocket on
 * loopback: subscribe and its refusals, ping, half-dead and dropped sockets, the kick of an older
 * connection, users' messages and events pushed as callbacks (media encrypted with their own
 * key), and the bot's replies with WeCom's errcodes: streams (replace semantics, 846605, 846608),
 * welcomes (5 s, once), send_msg, the chunked upload, and injected errcodes.
 */
import { createDecipheriv, createHash, randomBytes } from "node:crypto";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { decodeBotCallback } from "../src/index.js";
import { WECOM_RULES, WeComSimulator } from "../src/sim/wecom.js";
import { aesKey, BOT, CORP, type Json, type SimHarness, startSim } from "./sim-wecom-helpers.js";

const SECRET = "botWsSecret-7f3a9c2e1b4d6a8f0c2e4a6b8d0f2a4c";
const WS_BOT = { ...BOT, secret: SECRET };
const OTHER = { botId: "aibOtherBot0000000000000000000000", token: "otherBotToken", encodingAESKey: aesKey(), secret: "other-secret-0123456789abcdef" };
const NO_SECRET = { botId: "aibNoSecret00000000000000000000000", token: "noSecretToken", encodingAESKey: aesKey() };
const RULES = WECOM_RULES.botWs;
const E = RULES.errcodes;
const WAIT_MS = 3000;

/** A long-connection client that keeps every frame it received and waits for the ones a test expects. */
class WsClient {
  readonly frames: Json[] = [];
  pongs = 0;
  readonly closed: Promise<{ code: number; reason: string }>;
  readonly #waiters: { pred: (f: Json) => boolean; from: number; resolve: (f: Json) => void }[] = [];
  #seq = 0;

  private constructor(readonly ws: WebSocket) {
    this.closed = new Promise((resolve) => ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() })));
    ws.on("message", (data) => {
      const f = JSON.parse(String(data)) as Json;
      this.frames.push(f);
      const i = this.frames.length - 1;
      for (const w of [...this.#waiters]) {
        if (i >= w.from && w.pred(f)) {
          this.#waiters.splice(this.#waiters.indexOf(w), 1);
          w.resolve(f);
        }
      }
    });
    ws.on("pong", () => {
      this.pongs++;
    });
    ws.on("error", () => {});
  }

  static open(url: string): Promise<WsClient> {
    const ws = new WebSocket(url);
    const c = new WsClient(ws);
    return new Promise((resolve, reject) => {
      ws.once("open", () => resolve(c));
      ws.once("error", reject);
    });
  }

  /** The first frame from index `from` on that matches; rejects after WAIT_MS (a failure deadline, not a sleep). */
  waitFor(pred: (f: Json) => boolean, what: string, from = 0): Promise<Json> {
    const found = this.frames.slice(from).find(pred);
    if (found !== undefined) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const w = { pred, from, resolve };
      this.#waiters.push(w);
      setTimeout(() => {
        const i = this.#waiters.indexOf(w);
        if (i < 0) return;
        this.#waiters.splice(i, 1);
        reject(new Error(`no ${what} within ${WAIT_MS} ms; got ${JSON.stringify(this.frames).slice(0, 2000)}`));
      }, WAIT_MS);
    });
  }

  /** Send a command frame (no body when `body` is undefined); returns its req_id. */
  send(cmd: string, body?: unknown, reqId = `${cmd}_${Date.now()}_${++this.#seq}`): string {
    this.ws.send(JSON.stringify(body === undefined ? { cmd, headers: { req_id: reqId } } : { cmd, headers: { req_id: reqId }, body }));
    return reqId;
  }

  /** The ack of a req_id (a frame without cmd echoing it). */
  ack(reqId: string, from = 0): Promise<Json> {
    return this.waitFor((f) => f.cmd === undefined && (f.headers as Json | undefined)?.req_id === reqId, `ack of ${reqId}`, from);
  }

  /** Send a command and wait for its ack (replies share their callback's req_id: only acks after this send count). */
  request(cmd: string, body?: unknown, reqId?: string): Promise<Json> {
    const mark = this.frames.length;
    return this.ack(this.send(cmd, body, reqId), mark);
  }

  subscribe(botId = WS_BOT.botId, secret = SECRET): Promise<Json> {
    return this.request("aibot_subscribe", { bot_id: botId, secret });
  }

  /** The callback frame of a req_id the simulator pushed. */
  callback(reqId: string): Promise<Json> {
    return this.waitFor((f) => typeof f.cmd === "string" && (f.headers as Json | undefined)?.req_id === reqId, `callback ${reqId}`);
  }

  async close(): Promise<void> {
    if (this.ws.readyState !== WebSocket.CLOSED) this.ws.terminate();
    await this.closed;
  }
}

let h: SimHarness;
let clients: WsClient[];
let logs: string[];

beforeEach(async () => {
  logs = [];
  clients = [];
  h = await startSim({ bots: [WS_BOT, OTHER, NO_SECRET], log: (l) => logs.push(l) });
});

afterEach(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await h.close();
});

async function connect(): Promise<WsClient> {
  const c = await WsClient.open(h.sim.botWsUrl);
  clients.push(c);
  return c;
}

/** A client subscribed to the bot. */
async function subscribed(botId = WS_BOT.botId, secret = SECRET): Promise<WsClient> {
  const c = await connect();
  expect(await c.subscribe(botId, secret)).toMatchObject({ errcode: 0, errmsg: "ok" });
  return c;
}

const ok = { errcode: 0, errmsg: "ok" };
const stream = (id: string, content: string, finish = false) => ({ msgtype: "stream", stream: { id, finish, content } });

/** AES-256-CBC with IV = the key's first 16 bytes and PKCS#7 to 32-byte blocks, decrypted by hand. */
function decryptWithAesKey(aeskey: string, data: Buffer): Buffer {
  const key = Buffer.from(aeskey, "base64");
  expect(key).toHaveLength(32);
  expect(data.length % 32).toBe(0);
  const decipher = createDecipheriv("aes-256-cbc", key, key.subarray(0, 16)).setAutoPadding(false);
  const plain = Buffer.concat([decipher.update(data), decipher.final()]);
  const pad = plain[plain.length - 1] as number;
  expect(pad).toBeGreaterThanOrEqual(1);
  expect(pad).toBeLessThanOrEqual(32);
  expect([...plain.subarray(plain.length - pad)].every((b) => b === pad)).toBe(true);
  return plain.subarray(0, plain.length - pad);
}

describe("subscribe", () => {
  it("answers ok to the bot's id and secret; the URL and the connection list say so", async () => {
    expect(h.sim.botWsUrl).toBe(`${h.sim.url.replace(/^http/, "ws")}/aibot/ws`);
    const c = await connect();
    const reqId = c.send("aibot_subscribe", { bot_id: WS_BOT.botId, secret: SECRET });
    expect(await c.ack(reqId)).toEqual({ headers: { req_id: reqId }, errcode: 0, errmsg: "ok" });
    expect(h.sim.botWsConnections(WS_BOT.botId)).toEqual([{ id: expect.stringMatching(/^ws\d+$/), botId: WS_BOT.botId, subscribed: true, open: true, silent: false, openedAt: h.clock.now() }]);
    expect(h.sim.botWsConnections("helper")).toHaveLength(1);
    expect(h.sim.requests.at(-1)).toMatchObject({ method: "GET", path: "/aibot/ws", status: 101 });
    // the secret is in no log line, and the frame log elides it
    expect(logs.join("\n")).not.toContain(SECRET);
    expect(JSON.stringify(h.sim.botWsFrames())).not.toContain(SECRET);
    expect(h.sim.botWsFrames()[0]).toMatchObject({ direction: "in", cmd: "aibot_subscribe", frame: { body: { bot_id: WS_BOT.botId, secret: "***" } } });
  });

  it.each([
    ["a wrong secret", WS_BOT.botId, "not-the-secret", E.badSecret, "signature is incorrect, please check if the bot secret is correct"],
    ["a bot without a secret", NO_SECRET.botId, "anything", E.badSecret, "signature is incorrect, please check if the bot secret is correct"],
    ["an unknown bot", "aibUnknown", SECRET, E.invalidBotId, "invalid bot_id"],
  ])("refuses %s and closes the socket", async (_what, botId, secret, errcode, errmsg) => {
    const c = await connect();
    expect(await c.subscribe(botId, secret)).toMatchObject({ errcode, errmsg });
    expect((await c.closed).code).toBe(1000);
    await expect.poll(() => h.sim.botWsConnections()[0]?.open).toBe(false);
    expect(h.sim.botWsConnections()).toEqual([expect.objectContaining({ subscribed: false, endedBy: "auth" })]);
    expect(() => h.sim.botUserSendsWs(WS_BOT.botId, { userid: "zhangsan", msgtype: "text", text: "hi" })).toThrow(/no subscribed long connection/);
    expect(logs.join("\n")).not.toContain(SECRET);
  });

  it("answers 846609 to any frame before a successful subscribe, and malformed frames without headers", async () => {
    const c = await connect();
    expect(await c.request("ping")).toMatchObject({ errcode: E.notSubscribed, errmsg: "aibot websocket not subscribed" });
    expect(await c.request("aibot_send_msg", { chatid: "zhangsan", msgtype: "markdown", markdown: { content: "x" } })).toMatchObject({ errcode: 846609 });
    let mark = c.frames.length;
    c.ws.send("{not json");
    expect(await c.waitFor(() => true, "error frame", mark)).toEqual({ errcode: 40058, errmsg: "invalid json" });
    mark = c.frames.length;
    c.ws.send(JSON.stringify({ cmd: "ping" }));
    expect(await c.waitFor(() => true, "error frame", mark)).toEqual({ errcode: 40058, errmsg: "missing field `headers.req_id`" });
    // still open, and a subscribe now works
    expect(await c.subscribe()).toMatchObject(ok);
    expect(await c.request("no_such_cmd", {})).toMatchObject({ errcode: E.unknownCmd, errmsg: "invalid cmd" });
  });
});

describe("liveness", () => {
  it("acks ping (no body) with errcode 0 and answers WS pings", async () => {
    const c = await subscribed();
    const reqId = c.send("ping");
    expect(await c.ack(reqId)).toEqual({ headers: { req_id: reqId }, errcode: 0, errmsg: "ok" });
    c.ws.ping();
    // the pong goes out before the ack of a ping frame sent after it
    await c.request("ping");
    expect(c.pongs).toBe(1);
  });

  it("a silent connection stays open and answers nothing: no ack, no pong, callbacks lost", async () => {
    const c = await subscribed();
    h.sim.botWsSilence(WS_BOT.botId);
    expect(h.sim.botWsConnections(WS_BOT.botId)[0]).toMatchObject({ subscribed: true, open: true, silent: true });
    c.ws.ping();
    const lost = c.send("ping");
    // wait until the simulator took (and ignored) the frame: the WS ping before it was taken too
    await expect.poll(() => h.sim.botWsFrames().some((f) => f.reqId === lost && f.ignored === true)).toBe(true);
    const pushed = h.sim.botUserSendsWs(WS_BOT.botId, { userid: "zhangsan", msgtype: "text", text: "在吗" });
    expect(pushed.delivered).toBe(false);
    expect(c.ws.readyState).toBe(WebSocket.OPEN);
    // answering again: this ack comes after anything the simulator sent before it (the same TCP stream)
    h.sim.botWsSilence(WS_BOT.botId, false);
    await c.request("ping");
    expect(c.pongs).toBe(0);
    expect(c.frames.filter((f) => (f.headers as Json | undefined)?.req_id === lost || f.cmd === "aibot_msg_callback")).toEqual([]);
  });

  it("a dropped connection ends without a close frame (1006)", async () => {
    const c = await subscribed();
    h.sim.botWsDrop(WS_BOT.botId);
    expect((await c.closed).code).toBe(1006);
    await expect.poll(() => h.sim.botWsConnections(WS_BOT.botId)[0]?.open).toBe(false);
    expect(h.sim.botWsConnections(WS_BOT.botId)[0]).toMatchObject({ subscribed: false, endedBy: "dropped" });
    expect(() => h.sim.botWsDrop(WS_BOT.botId)).toThrow(/no subscribed long connection/);
  });

  it("a newer subscribe kicks the older connection: disconnected_event, then close 1000", async () => {
    const first = await subscribed();
    const second = await subscribed();
    const ev = await first.waitFor((f) => f.cmd === "aibot_event_callback", "disconnected_event");
    expect(ev).toEqual({
      cmd: "aibot_event_callback",
      headers: { req_id: expect.stringMatching(/^[A-Za-z0-9+/]{24}$/) },
      body: { msgid: expect.any(String), create_time: Math.floor(h.clock.now() / 1000), aibotid: WS_BOT.botId, msgtype: "event", event: { eventtype: "disconnected_event" } },
    });
    expect((await first.closed).code).toBe(1000);
    await expect.poll(() => h.sim.botWsConnections(WS_BOT.botId)[0]?.open).toBe(false);
    const [a, b] = h.sim.botWsConnections(WS_BOT.botId);
    expect(a).toMatchObject({ subscribed: false, open: false, endedBy: "kicked" });
    expect(b).toMatchObject({ subscribed: true, open: true });
    // callbacks go to the newer one
    const pushed = h.sim.botUserSendsWs(WS_BOT.botId, { userid: "zhangsan", msgtype: "text", text: "你好" });
    expect(pushed.connectionId).toBe(b?.id);
    await second.callback(pushed.reqId);
    expect(first.frames.filter((f) => f.cmd === "aibot_msg_callback")).toEqual([]);
  });

  it("sim.close() ends every long connection", async () => {
    const sim = await WeComSimulator.start({ corpId: CORP, apps: [], bots: [WS_BOT] });
    const c = await WsClient.open(sim.botWsUrl);
    expect(await c.subscribe()).toMatchObject(ok);
    await sim.close();
    expect((await c.closed).code).toBe(1006);
    expect(sim.botWsConnections()[0]).toMatchObject({ open: false, endedBy: "server" });
  });
});

describe("callbacks", () => {
  it("pushes a user's text as aibot_msg_callback with the webhook's JSON and a fresh server req_id", async () => {
    const c = await subscribed();
    const pushed = h.sim.botUserSendsWs(WS_BOT.botId, { userid: "zhangsan", msgtype: "text", text: "会议室还有空吗" });
    expect(pushed).toEqual({ msgid: expect.any(String), reqId: expect.stringMatching(/^[A-Za-z0-9+/]{24}$/), connectionId: expect.any(String), delivered: true });
    const f = await c.callback(pushed.reqId);
    expect(f).toEqual({
      cmd: "aibot_msg_callback",
      headers: { req_id: pushed.reqId },
      body: { msgid: pushed.msgid, aibotid: WS_BOT.botId, chattype: "single", from: { userid: "zhangsan" }, create_time: Math.floor(h.clock.now() / 1000), msgtype: "text", text: { content: "会议室还有空吗" } },
    });
    expect(Object.keys(f.body as Json)).toEqual(["msgid", "aibotid", "chattype", "from", "create_time", "msgtype", "text"]);
    const decoded = decodeBotCallback(f.body as Json);
    expect(decoded).toMatchObject({ id: pushed.msgid, botId: WS_BOT.botId, content: { type: "text", text: "会议室还有空吗" }, time: Math.floor(h.clock.now() / 1000) * 1000 });
    // a group message carries chatid; events too
    const g = h.sim.botUserSendsWs(WS_BOT.botId, { userid: "lisi", msgtype: "voice", voice: "语音转文字", chatid: "wrkSFfCgAALFgnrSsWU38puiv4yvExuw" });
    expect((await c.callback(g.reqId)).body).toMatchObject({ chatid: "wrkSFfCgAALFgnrSsWU38puiv4yvExuw", chattype: "group", msgtype: "voice", voice: { content: "语音转文字" } });
    expect(g.reqId).not.toBe(pushed.reqId);
    const e = h.sim.botEventWs(WS_BOT.botId, { userid: "wangwu", eventtype: "template_card_event", template_card_event: { card_type: "button_interaction", event_key: "yes", task_id: "t1" } });
    expect((await c.callback(e.reqId)) as Json).toEqual({
      cmd: "aibot_event_callback",
      headers: { req_id: e.reqId },
      body: { msgid: e.msgid, create_time: Math.floor(h.clock.now() / 1000), aibotid: WS_BOT.botId, from: { userid: "wangwu" }, msgtype: "event", event: { eventtype: "template_card_event", template_card_event: { card_type: "button_interaction", event_key: "yes", task_id: "t1" } } },
    });
  });

  it("serves each media file encrypted with its own aeskey (AES-256-CBC, IV = key[0..16), PKCS#7 to 32)", async () => {
    const c = await subscribed();
    const png = randomBytes(1000);
    const pushed = h.sim.botUserSendsWs(WS_BOT.botId, { userid: "zhangsan", msgtype: "image", image: png });
    const body = (await c.callback(pushed.reqId)).body as Json;
    expect(body).toMatchObject({ msgtype: "image", image: { url: expect.stringMatching(new RegExp(`^${h.sim.url}/`)), aeskey: expect.any(String) } });
    const image = body.image as { url: string; aeskey: string };
    const res = await fetch(image.url);
    expect(res.status).toBe(200);
    const encrypted = Buffer.from(await res.arrayBuffer());
    expect(encrypted.equals(png)).toBe(false);
    expect(decryptWithAesKey(image.aeskey, encrypted).equals(png)).toBe(true);
    expect(decodeBotCallback(body).content).toMatchObject({ type: "image", media: { url: image.url } });
    // mixed: every image its own key; a file with its name
    const pic = randomBytes(64);
    const m = h.sim.botUserSendsWs(WS_BOT.botId, { userid: "zhangsan", msgtype: "mixed", mixed: ["看图", pic, pic], chatid: "wrgroup1" });
    const items = (((await c.callback(m.reqId)).body as Json).mixed as { msg_item: Json[] }).msg_item;
    expect(items.map((i) => i.msgtype)).toEqual(["text", "image", "image"]);
    const [k1, k2] = items.slice(1).map((i) => (i.image as { aeskey: string }).aeskey);
    expect(k1).not.toBe(k2);
    expect(new Set([k1, k2, image.aeskey]).size).toBe(3);
    const second = items[2]?.image as { url: string; aeskey: string };
    expect(decryptWithAesKey(second.aeskey, Buffer.from(await (await fetch(second.url)).arrayBuffer())).equals(pic)).toBe(true);
    const f = h.sim.botUserSendsWs(WS_BOT.botId, { userid: "zhangsan", msgtype: "file", file: { bytes: Buffer.from("报告内容"), filename: "报告.pdf" } });
    const file = ((await c.callback(f.reqId)).body as Json).file as { url: string; aeskey: string };
    const fres = await fetch(file.url);
    expect(fres.headers.get("content-disposition")).toBe(`attachment; filename*=UTF-8''${encodeURIComponent("报告.pdf")}`);
    expect(decryptWithAesKey(file.aeskey, Buffer.from(await fres.arrayBuffer())).toString()).toBe("报告内容");
    // the URLs are valid 5 minutes
    await h.sim.advance(RULES.mediaUrlTtlMs + 1);
    expect((await fetch(image.url)).status).toBe(403);
  });

  it("repeats a callback with the same msgid and a new req_id; both req_ids take replies", async () => {
    const c = await subscribed();
    const first = h.sim.botUserSendsWs(WS_BOT.botId, { userid: "zhangsan", msgtype: "text", text: "重复" });
    const again = h.sim.botWsRepeat(first.reqId);
    expect(again.msgid).toBe(first.msgid);
    expect(again.reqId).not.toBe(first.reqId);
    const [a, b] = [await c.callback(first.reqId), await c.callback(again.reqId)];
    expect(b.body).toEqual(a.body);
    expect(await c.request("aibot_respond_msg", stream("s1", "a"), first.reqId)).toMatchObject(ok);
    expect(await c.request("aibot_respond_msg", stream("s2", "b"), again.reqId)).toMatchObject(ok);
    expect(h.sim.botWsStreams(WS_BOT.botId).map((s) => [s.reqId, s.msgid])).toEqual([
      [first.reqId, first.msgid],
      [again.reqId, first.msgid],
    ]);
    expect(() => h.sim.botWsRepeat("nope")).toThrow(/unknown req_id/);
  });
});

describe("aibot_respond_msg", () => {
  it("streams with replace semantics: the user sees the last taken content; a finished stream takes nothing more", async () => {
    const c = await subscribed();
    const p = h.sim.botUserSendsWs(WS_BOT.botId, { userid: "zhangsan", msgtype: "text", text: "你好" });
    await c.callback(p.reqId);
    const big = "流".repeat(6827); // 20481 bytes
    expect(Buffer.byteLength(big)).toBe(RULES.streamMaxBytes + 1);
    const answers: Json[] = [];
    for (const body of [stream("st1", "<think></think>"), stream("st1", "您好"), stream("st1", big), stream("st1", "您好，会议室A有空", true), stream("st1", "多余")]) {
      answers.push(await c.request("aibot_respond_msg", body, p.reqId));
    }
    expect(answers.map((a) => [(a.headers as Json).req_id, a.errcode])).toEqual([
      [p.reqId, 0],
      [p.reqId, 0],
      [p.reqId, E.contentTooLong],
      [p.reqId, 0],
      [p.reqId, E.streamFinished],
    ]);
    const [s] = h.sim.botWsStreams(WS_BOT.botId);
    expect(s).toMatchObject({ reqId: p.reqId, msgid: p.msgid, streamId: "st1", userId: "zhangsan", status: "finished", shown: "您好，会议室A有空", startedAt: h.clock.now(), deadline: h.clock.now() + RULES.streamWindowMs });
    expect(s?.frames.map((f) => [f.content.length, f.finish, f.errcode])).toEqual([
      [15, false, 0],
      [2, false, 0],
      [6827, false, E.contentTooLong],
      [9, true, 0],
      [2, false, E.streamFinished],
    ]);
    // one-off replies: markdown taken, text refused
    expect(await c.request("aibot_respond_msg", { msgtype: "markdown", markdown: { content: "**补充**" } }, p.reqId)).toMatchObject(ok);
    expect(await c.request("aibot_respond_msg", { msgtype: "text", text: { content: "x" } }, p.reqId)).toMatchObject({ errcode: 40008, errmsg: "invalid message type" });
    expect(h.sim.botWsSends(WS_BOT.botId).map((r) => [r.cmd, r.msgtype, r.chatid, r.msgid, r.errcode])).toEqual([
      ["aibot_respond_msg", "markdown", "zhangsan", p.msgid, 0],
      ["aibot_respond_msg", "text", "zhangsan", p.msgid, 40008],
    ]);
  });

  it("answers 846605 to a req_id that is not a message callback of this connection", async () => {
    const first = await subscribed();
    const old = h.sim.botUserSendsWs(WS_BOT.botId, { userid: "zhangsan", msgtype: "text", text: "一" });
    await first.callback(old.reqId);
    const ev = h.sim.botEventWs(WS_BOT.botId, { userid: "zhangsan", eventtype: "enter_chat" });
    await first.callback(ev.reqId);
    expect(await first.request("aibot_respond_msg", stream("x1", "hi"), "zYiT5A1AQVaghhPBWxgzAwAA")).toMatchObject({ errcode: 846605, errmsg: "invalid req_id" });
    expect(await first.request("aibot_respond_msg", stream("x2", "hi"), ev.reqId)).toMatchObject({ errcode: 846605 });
    expect(await first.request("aibot_respond_msg", { msgtype: "markdown", markdown: { content: "hi" } }, ev.reqId)).toMatchObject({ errcode: 846605 });
    // after a reconnect the old connection's req_id is no longer valid
    const second = await subscribed();
    await first.closed;
    expect(await second.request("aibot_respond_msg", stream("x3", "hi"), old.reqId)).toMatchObject({ errcode: 846605 });
    const fresh = h.sim.botUserSendsWs(WS_BOT.botId, { userid: "zhangsan", msgtype: "text", text: "二" });
    await second.callback(fresh.reqId);
    expect(await second.request("aibot_respond_msg", stream("x4", "ok"), fresh.reqId)).toMatchObject(ok);
    expect(h.sim.botWsStreams().map((s) => s.streamId)).toEqual(["x4"]);
  });

  it("refuses stream frames 6 minutes (by the simulator's clock) or more after the user's message with 846608", async () => {
    const c = await subscribed();
    const p = h.sim.botUserSendsWs(WS_BOT.botId, { userid: "zhangsan", msgtype: "text", text: "慢慢想" });
    await c.callback(p.reqId);
    expect(await c.request("aibot_respond_msg", stream("slow", "想…"), p.reqId)).toMatchObject(ok);
    await h.sim.advance(RULES.streamWindowMs - 1);
    expect(await c.request("aibot_respond_msg", stream("slow", "想好了一半"), p.reqId)).toMatchObject(ok);
    await h.sim.advance(1);
    expect(await c.request("aibot_respond_msg", stream("slow", "想好了", true), p.reqId)).toMatchObject({ errcode: 846608, errmsg: "stream message update expired" });
    // a new stream id on the same req_id is no way around it
    expect(await c.request("aibot_respond_msg", stream("slow2", "另起"), p.reqId)).toMatchObject({ errcode: 846608 });
    const s = h.sim.botWsStreams(WS_BOT.botId).find((x) => x.streamId === "slow");
    expect(s).toMatchObject({ status: "expired", shown: "想好了一半" });
    expect(s?.frames.map((f) => f.errcode)).toEqual([0, 0, 846608]);
  });
});

describe("aibot_respond_welcome_msg", () => {
  it("takes one welcome within 5 s of enter_chat, by the simulator's clock", async () => {
    const c = await subscribed();
    const ev = h.sim.botEventWs(WS_BOT.botId, { userid: "zhangsan", eventtype: "enter_chat" });
    expect(((await c.callback(ev.reqId)).body as Json).event).toEqual({ eventtype: "enter_chat" });
    const welcome = { msgtype: "text", text: { content: "您好，我是助手" } };
    expect(await c.request("aibot_respond_welcome_msg", { msgtype: "markdown", markdown: { content: "x" } }, ev.reqId)).toMatchObject({ errcode: 40008 });
    await h.sim.advance(RULES.eventReplyWindowMs);
    expect(await c.request("aibot_respond_welcome_msg", welcome, ev.reqId)).toMatchObject(ok);
    expect(await c.request("aibot_respond_welcome_msg", welcome, ev.reqId)).toMatchObject({ errcode: E.eventReplyExpired, errmsg: expect.stringMatching(/already answered/) });
    const late = h.sim.botEventWs(WS_BOT.botId, { userid: "lisi", eventtype: "enter_chat" });
    await c.callback(late.reqId);
    await h.sim.advance(RULES.eventReplyWindowMs + 1);
    expect(await c.request("aibot_respond_welcome_msg", welcome, late.reqId)).toMatchObject({ errcode: E.eventReplyExpired, errmsg: expect.stringMatching(/5 s/) });
    // a message's req_id is not an enter_chat
    const msg = h.sim.botUserSendsWs(WS_BOT.botId, { userid: "lisi", msgtype: "text", text: "hi" });
    await c.callback(msg.reqId);
    expect(await c.request("aibot_respond_welcome_msg", welcome, msg.reqId)).toMatchObject({ errcode: 846605 });
    expect(h.sim.botWsWelcomes(WS_BOT.botId).map((w) => [w.userId, w.eventtype, w.errcode])).toEqual([
      ["zhangsan", "enter_chat", 40008],
      ["zhangsan", "enter_chat", 0],
      ["zhangsan", "enter_chat", E.eventReplyExpired],
      ["lisi", "enter_chat", E.eventReplyExpired],
      [undefined, undefined, 846605],
    ]);
  });
});

describe("aibot_send_msg", () => {
  it("sends markdown to a chatid; refuses text (40008), no chatid (86201), media without a valid media_id", async () => {
    const c = await subscribed();
    expect(await c.request("aibot_send_msg", { chatid: "zhangsan", msgtype: "markdown", markdown: { content: "**通知**" } })).toMatchObject(ok);
    expect(await c.request("aibot_send_msg", { chatid: "zhangsan", msgtype: "text", text: { content: "x" } })).toMatchObject({ errcode: 40008 });
    expect(await c.request("aibot_send_msg", { msgtype: "markdown", markdown: { content: "x" } })).toMatchObject({ errcode: 86201 });
    expect(await c.request("aibot_send_msg", { chatid: "zhangsan", msgtype: "markdown", markdown: { content: "长".repeat(6827) } })).toMatchObject({ errcode: E.contentTooLong });
    expect(await c.request("aibot_send_msg", { chatid: "zhangsan", msgtype: "image", image: { media_id: "3nope" } })).toMatchObject({ errcode: 40007, errmsg: "invalid media_id" });
    // a schema error comes back without headers, as WeCom answers it
    const mark = c.frames.length;
    c.send("aibot_send_msg", { chatid: "zhangsan", msgtype: "image", image: { url: "https://example.com/a.png" } });
    expect(await c.waitFor(() => true, "schema error", mark)).toEqual({ errcode: 40058, errmsg: "missing field `body.image.media_id`" });
    expect(h.sim.botWsSends(WS_BOT.botId).map((s) => [s.cmd, s.chatid, s.msgtype, s.errcode])).toEqual([
      ["aibot_send_msg", "zhangsan", "markdown", 0],
      ["aibot_send_msg", "zhangsan", "text", 40008],
      ["aibot_send_msg", "", "markdown", 86201],
      ["aibot_send_msg", "zhangsan", "markdown", E.contentTooLong],
      ["aibot_send_msg", "zhangsan", "image", 40007],
      ["aibot_send_msg", "zhangsan", "image", 40058],
    ]);
    expect(h.sim.botWsSends(WS_BOT.botId)[0]?.body).toEqual({ chatid: "zhangsan", msgtype: "markdown", markdown: { content: "**通知**" } });
  });
});

describe("media upload", () => {
  /** Upload bytes in chunks of `size`, skipping the chunk indexes in `skip`; resolves with finish's ack. */
  async function upload(c: WsClient, bytes: Buffer, size: number, opts: { type?: string; skip?: number[]; md5?: string } = {}): Promise<Json> {
    const chunks: Buffer[] = [];
    for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.subarray(i, i + size));
    const init = await c.request("aibot_upload_media_init", { type: opts.type ?? "file", filename: "报告.pdf", total_size: bytes.length, total_chunks: chunks.length, md5: opts.md5 ?? createHash("md5").update(bytes).digest("hex") });
    expect(init).toMatchObject({ errcode: 0, body: { upload_id: expect.any(String) } });
    const uploadId = (init.body as Json).upload_id;
    const acks = await Promise.all(chunks.map((chunk, i) => (opts.skip?.includes(i) ? undefined : c.request("aibot_upload_media_chunk", { upload_id: uploadId, chunk_index: i, base64_data: chunk.toString("base64") }))));
    for (const a of acks) if (a !== undefined) expect(a).toEqual({ headers: a.headers, errcode: 0, errmsg: "ok" });
    return c.request("aibot_upload_media_finish", { upload_id: uploadId });
  }

  it("init, chunks, finish give a media_id that aibot_send_msg and aibot_respond_msg take for 3 days", async () => {
    const c = await subscribed();
    const bytes = randomBytes(RULES.upload.chunkMaxBytes + 1000);
    const done = await upload(c, bytes, RULES.upload.chunkMaxBytes);
    expect(done).toMatchObject({ errcode: 0, errmsg: "ok", body: { type: "file", media_id: expect.any(String), created_at: Math.floor(h.clock.now() / 1000) } });
    const mediaId = (done.body as Json).media_id as string;
    expect(h.sim.botWsMedia(mediaId)?.bytes.equals(bytes)).toBe(true);
    expect(h.sim.botWsUploads(WS_BOT.botId)).toEqual([expect.objectContaining({ type: "file", filename: "报告.pdf", totalSize: bytes.length, totalChunks: 2, chunks: 2, status: "finished", errcode: 0, mediaId })]);
    expect(await c.request("aibot_send_msg", { chatid: "zhangsan", msgtype: "file", file: { media_id: mediaId } })).toMatchObject(ok);
    const p = h.sim.botUserSendsWs(WS_BOT.botId, { userid: "zhangsan", msgtype: "text", text: "发我文件" });
    await c.callback(p.reqId);
    expect(await c.request("aibot_respond_msg", { msgtype: "file", file: { media_id: mediaId } }, p.reqId)).toMatchObject(ok);
    // another bot may not send it
    const other = await subscribed(OTHER.botId, OTHER.secret);
    expect(await other.request("aibot_send_msg", { chatid: "zhangsan", msgtype: "file", file: { media_id: mediaId } })).toMatchObject({ errcode: 40007 });
    await h.sim.advance(RULES.mediaTtlMs);
    expect(await c.request("aibot_send_msg", { chatid: "zhangsan", msgtype: "file", file: { media_id: mediaId } })).toMatchObject({ errcode: 40007 });
  });

  it("refuses a finish with a chunk missing, a wrong md5, or a file of 5 bytes or less; and oversized chunks", async () => {
    const c = await subscribed();
    const bytes = randomBytes(3000);
    expect(await upload(c, bytes, 1000, { skip: [1] })).toMatchObject({ errcode: E.uploadInvalid, errmsg: expect.stringMatching(/missing chunks 1$/) });
    expect(await upload(c, bytes, 1000, { md5: "0".repeat(32) })).toMatchObject({ errcode: E.uploadInvalid, errmsg: expect.stringMatching(/md5/) });
    expect(await upload(c, randomBytes(5), 5)).toMatchObject({ errcode: 40006 });
    expect(h.sim.botWsUploads().map((u) => [u.status, u.errcode])).toEqual([
      ["failed", E.uploadInvalid],
      ["failed", E.uploadInvalid],
      ["failed", 40006],
    ]);
    // a finished or failed upload_id is gone
    const gone = h.sim.botWsUploads()[0]?.uploadId;
    expect(await c.request("aibot_upload_media_finish", { upload_id: gone })).toMatchObject({ errcode: E.uploadInvalid, errmsg: expect.stringMatching(/upload_id/) });
    const init = await c.request("aibot_upload_media_init", { type: "image", filename: "a.png", total_size: 600_000, total_chunks: 1 });
    const big = randomBytes(RULES.upload.chunkMaxBytes + 1).toString("base64");
    expect(await c.request("aibot_upload_media_chunk", { upload_id: (init.body as Json).upload_id, chunk_index: 0, base64_data: big })).toMatchObject({ errcode: E.uploadInvalid });
    expect(await c.request("aibot_upload_media_chunk", { upload_id: (init.body as Json).upload_id, chunk_index: 1, base64_data: "AAAA" })).toMatchObject({ errcode: E.uploadInvalid });
    expect(await c.request("aibot_upload_media_init", { type: "doc", filename: "a", total_size: 10, total_chunks: 1 })).toMatchObject({ errcode: RULES.upload.invalidTypeErrcode });
    expect(await c.request("aibot_upload_media_init", { type: "file", filename: "a", total_size: 10, total_chunks: RULES.upload.maxChunks + 1 })).toMatchObject({ errcode: E.uploadInvalid });
  });
});

describe("injected errcodes", () => {
  it("botWsFailNext answers the next frames of one command with an errcode, then works again", async () => {
    const c = await subscribed();
    h.sim.botWsFailNext(WS_BOT.botId, "aibot_send_msg", 846609, 2);
    const body = { chatid: "zhangsan", msgtype: "markdown", markdown: { content: "重试" } };
    expect(await c.request("ping")).toMatchObject(ok);
    expect(await c.request("aibot_send_msg", body)).toMatchObject({ errcode: 846609, errmsg: "simulated errcode 846609" });
    expect(await c.request("aibot_send_msg", body)).toMatchObject({ errcode: 846609 });
    expect(await c.request("aibot_send_msg", body)).toMatchObject(ok);
    // an injected answer does nothing else: only the last one was sent
    expect(h.sim.botWsSends(WS_BOT.botId).map((s) => s.errcode)).toEqual([0]);
    h.sim.botWsFailNext(WS_BOT.botId, "ping", 6000);
    expect(await c.request("ping")).toMatchObject({ errcode: 6000 });
    expect(await c.request("ping")).toMatchObject(ok);
  });
});
