/**
 * AI bots in long-connection mode, end to end (issue 9): the gateway holds a real WebSocket to the
 * WeCom simulator on loopback (`wecom.bots[].mode: "websocket"`), messages come in as
 * `aibot_msg_callback` frames and reach the 全媒体 simulator, agents' answers go back as
 * `aibot_respond_msg` stream frames or, after the stream, `aibot_send_msg`; the connection is
 * dropped, silenced and taken over on purpose.
 */
import { createHash, randomBytes } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import WebSocket from "ws";
import type { BotWsTiming } from "../src/gateway/bot-ws.js";
import { runGateway } from "../src/gateway/index.js";
import { createLogger } from "../src/log.js";
import { eventually, LIVE_SECRET, type Stack, startStack } from "./stack.js";

const BOT = "aibLIVE";
const USER = "lisi";
const ADDR = `bot:${BOT}:user:${USER}`;
const PLACEHOLDER = "正在为您转接人工客服…";
const WELCOME = "您好，我是在线客服，请问有什么可以帮您？";
/** Short timers: a dead link is found in a few hundred ms, reconnects take tens of ms. */
const FAST: BotWsTiming = { pingIntervalMs: 150, ackTimeoutMs: 150, backoffMinMs: 20, backoffMaxMs: 200, tickMs: 50 };

let s: Stack | undefined;
afterEach(async () => {
  await s?.stop();
  s = undefined;
});

/** The gateway's log lines of the current test (JSON). */
let logLines: string[] = [];

/** A stack whose gateway has the simulator's bot "live" in websocket mode. */
async function liveStack(bot: Record<string, unknown> = {}, timing: BotWsTiming = FAST, beforeStart?: (st: Stack) => void): Promise<Stack> {
  logLines = [];
  s = await startStack({
    noGateway: true,
    config: (raw) => {
      raw.wecom.bots.push({ name: "live", botId: BOT, mode: "websocket", secret: LIVE_SECRET, wsUrl: "ws://127.0.0.1:1/placeholder", kickedQuietSec: 1, welcomeText: WELCOME, ...bot });
    },
    botWs: timing,
  });
  // the URL is known once the simulator listens: the config takes it before the gateway starts
  const live = s.config.wecom.bots.find((b) => b.name === "live");
  if (live === undefined) throw new Error("no live bot");
  live.wsUrl = s.wecom.botWsUrl;
  beforeStart?.(s);
  const log = createLogger({ level: "debug", write: (l) => (process.env.WB_DEBUG ? process.stdout.write(l) : logLines.push(l)) });
  s.gw = await runGateway(s.config, { log, botWs: timing });
  await eventually(() => s?.wecom.botWsConnections("live").some((c) => c.subscribed), 8000, "the gateway subscribes");
  return s;
}

const subscribed = (st: Stack) => st.wecom.botWsConnections("live").filter((c) => c.subscribed);
const streamOf = (st: Stack, reqId: string) => st.wecom.botWsStreams("live").find((x) => x.reqId === reqId);

describe("a bot in long-connection mode", () => {
  it("subscribes, carries a message to the 全媒体 and streams the agent's answer back (placeholder, answer, finish)", async () => {
    const st = await liveStack();
    expect(subscribed(st)).toHaveLength(1);
    const sent = st.wecom.botUserSendsWs("live", { userid: USER, msgtype: "text", text: "我的订单还没到" });
    const received = await st.omni.waitFor(1);
    expect(received[0]?.body).toMatchObject({ FromUserId: ADDR, MsgType: "text", Content: "我的订单还没到" });
    // the bubble opens at once with the placeholder
    await eventually(() => streamOf(st, sent.reqId)?.frames.some((f) => f.content === PLACEHOLDER && !f.finish && f.errcode === 0), 3000, "the placeholder frame");
    expect((await st.omni.sendAgentReply({ ToUserId: ADDR, MsgType: "text", Content: "已为您查询，明天送达" })).reply).toMatchObject({ errcode: 0 });
    await eventually(() => streamOf(st, sent.reqId)?.shown === "已为您查询，明天送达", 3000, "the answer in the stream");
    expect((await st.omni.sendAgentReply({ ToUserId: ADDR, MsgType: "text", Content: "还有其他问题吗？", Tag: { finish: true } })).reply).toMatchObject({ errcode: 0 });
    const done = await eventually(() => {
      const x = streamOf(st, sent.reqId);
      return x?.status === "finished" ? x : undefined;
    }, 3000, "the finished stream");
    // replace semantics: every frame is the whole text so far, each text once, in order
    expect(done.shown).toBe("已为您查询，明天送达\n\n还有其他问题吗？");
    expect(done.frames.every((f) => f.errcode === 0)).toBe(true);
    expect(done.streamId).toMatch(/^s[0-9a-f]{24}$/);
    expect(st.wecom.botWsSends("live")).toHaveLength(0);
  });

  it("stores a callback WeCom repeats (same msgid, new req_id) once, and answers on the newest req_id", async () => {
    const st = await liveStack();
    const first = st.wecom.botUserSendsWs("live", { userid: USER, msgtype: "text", text: "在吗" });
    await st.omni.waitFor(1);
    const again = st.wecom.botWsRepeat(first.reqId);
    expect(again.msgid).toBe(first.msgid);
    await eventually(() => streamOf(st, again.reqId)?.frames.length, 3000, "a frame on the repeated callback's req_id");
    await st.omni.sendAgentReply({ ToUserId: ADDR, MsgType: "text", Content: "在的", Tag: { finish: true } });
    await eventually(() => streamOf(st, again.reqId)?.status === "finished", 3000, "the answer on the newest req_id");
    expect(st.omni.conversation(ADDR)).toHaveLength(1);
  });

  it("sends an agent's answer that comes after the stream finished with aibot_send_msg (markdown to the user)", async () => {
    const st = await liveStack({ streamIdleSec: 1 });
    const sent = st.wecom.botUserSendsWs("live", { userid: USER, msgtype: "text", text: "请人工回复" });
    await st.omni.waitFor(1);
    await st.omni.sendAgentReply({ ToUserId: ADDR, MsgType: "text", Content: "好的", Tag: { finish: true } });
    await eventually(() => streamOf(st, sent.reqId)?.status === "finished", 3000, "the stream finished");
    await st.omni.sendAgentReply({ ToUserId: ADDR, MsgType: "text", Content: "补充：您的工单号是 42" });
    const out = await eventually(() => st.wecom.botWsSends("live").find((x) => x.cmd === "aibot_send_msg"), 3000, "aibot_send_msg");
    expect(out).toMatchObject({ chatid: USER, msgtype: "markdown", errcode: 0 });
    expect(out.body).toMatchObject({ markdown: { content: "补充：您的工单号是 42" } });
    expect(streamOf(st, sent.reqId)?.shown).toBe("好的");
  });

  it("tells the 全媒体 when WeCom refuses a late answer (send_failed with the errcode)", async () => {
    const st = await liveStack();
    const sent = st.wecom.botUserSendsWs("live", { userid: USER, msgtype: "text", text: "你好" });
    await st.omni.waitFor(1);
    await st.omni.sendAgentReply({ ToUserId: ADDR, MsgType: "text", Content: "您好", Tag: { finish: true } });
    await eventually(() => streamOf(st, sent.reqId)?.status === "finished", 3000, "the stream finished");
    st.wecom.botWsFailNext("live", "aibot_send_msg", 86201);
    await st.omni.sendAgentReply({ ToUserId: ADDR, MsgType: "text", Content: "迟到的回复", Tag: { msgid: "agent-7" } });
    const notices = await eventually(() => {
      const n = st.omni.conversation(ADDR).filter((b) => b.MsgType === "event" && b.Content === "send_failed");
      return n.length > 0 ? n : undefined;
    }, 3000, "the refusal notice");
    expect(notices).toHaveLength(1);
    expect(notices[0]?.Tag).toMatchObject({ errcode: 86201, ref: "agent-7" });
  });

  it.each([
    [846608, "the stream expired"],
    [846605, "the req_id is no longer valid"],
  ])("sends what a stream could not take with aibot_send_msg when WeCom answers %i (%s), once", async (errcode) => {
    const st = await liveStack();
    const sent = st.wecom.botUserSendsWs("live", { userid: USER, msgtype: "text", text: "查一下物流" });
    await st.omni.waitFor(1);
    await eventually(() => streamOf(st, sent.reqId)?.frames.length, 3000, "the placeholder frame");
    st.wecom.botWsFailNext("live", "aibot_respond_msg", errcode);
    await st.omni.sendAgentReply({ ToUserId: ADDR, MsgType: "text", Content: "物流显示已签收" });
    const out = await eventually(() => st.wecom.botWsSends("live").find((x) => x.cmd === "aibot_send_msg" && x.errcode === 0), 3000, "the fallback message");
    expect(out.body).toMatchObject({ markdown: { content: "物流显示已签收" } });
    // the stream is not updated again, and the text is not sent twice
    await st.omni.sendAgentReply({ ToUserId: ADDR, MsgType: "text", Content: "请查收" });
    await eventually(() => st.wecom.botWsSends("live").filter((x) => x.errcode === 0).length === 2, 3000, "the next message");
    expect(st.wecom.botWsSends("live").map((x) => (x.body.markdown as { content: string }).content)).toEqual(["物流显示已签收", "请查收"]);
  });

  it("answers enter_chat with welcomeText within WeCom's 5 s, and stores the event", async () => {
    const st = await liveStack();
    const ev = st.wecom.botEventWs("live", { userid: USER, eventtype: "enter_chat" });
    const w = await eventually(() => st.wecom.botWsWelcomes("live").find((x) => x.reqId === ev.reqId), 3000, "the welcome");
    expect(w).toMatchObject({ errcode: 0 });
    const received = await st.omni.waitFor(1);
    expect(received[0]?.body).toMatchObject({ FromUserId: ADDR, MsgType: "event", Content: "enter_chat" });
  });

  it("reconnects after the socket is killed mid-stream; the answer reaches the user once (aibot_send_msg: the old req_id died)", async () => {
    const st = await liveStack();
    const sent = st.wecom.botUserSendsWs("live", { userid: USER, msgtype: "text", text: "我要退货" });
    await st.omni.waitFor(1);
    await eventually(() => streamOf(st, sent.reqId)?.frames.length, 3000, "the placeholder frame");
    const before = subscribed(st)[0]?.id;
    st.wecom.botWsDrop("live");
    await st.omni.sendAgentReply({ ToUserId: ADDR, MsgType: "text", Content: "退货地址已发送" });
    await eventually(() => subscribed(st).some((c) => c.id !== before), 5000, "a new connection");
    const out = await eventually(() => st.wecom.botWsSends("live").find((x) => x.errcode === 0), 5000, "the answer after the reconnect");
    expect(out.body).toMatchObject({ markdown: { content: "退货地址已发送" } });
    // nothing doubled: one message, and no frame of the old stream carried the text
    await st.omni.sendAgentReply({ ToUserId: ADDR, MsgType: "text", Content: "第二条" });
    await eventually(() => st.wecom.botWsSends("live").filter((x) => x.errcode === 0).length === 2, 3000, "the second message");
    expect(st.wecom.botWsSends("live").filter((x) => JSON.stringify(x.body).includes("退货地址已发送"))).toHaveLength(1);
    expect(streamOf(st, sent.reqId)?.frames.some((f) => f.content.includes("退货地址已发送"))).toBe(false);
  });

  it("replaces a silent socket (pings not acknowledged) with a new connection", async () => {
    const st = await liveStack();
    const before = subscribed(st)[0]?.id;
    st.wecom.botWsSilence("live", true);
    await eventually(() => subscribed(st).some((c) => c.id !== before), 5000, "a new connection after two missed pings");
    // the new connection carries messages
    st.wecom.botUserSendsWs("live", { userid: USER, msgtype: "text", text: "还在吗" });
    await st.omni.waitFor(1);
    const metrics = await (await fetch(`${st.gw.url}/metrics`)).text();
    expect(metrics).toMatch(/wecom_bridge_bot_ws_reconnects\{bot="live"\} [1-9]/);
  });

  it("does not fight a connection that took the bot over: it waits kickedQuietSec, warns, and counts the kick", async () => {
    const st = await liveStack();
    const other = new WebSocket(st.wecom.botWsUrl);
    await new Promise((resolve, reject) => {
      other.once("open", resolve);
      other.once("error", reject);
    });
    const kickedAt = Date.now();
    other.send(JSON.stringify({ cmd: "aibot_subscribe", headers: { req_id: "aibot_subscribe_test" }, body: { bot_id: BOT, secret: LIVE_SECRET } }));
    // the gateway's connection is kicked; it stays away for kickedQuietSec (1 s here), then takes the bot back
    const readyz = await eventually(async () => {
      const r = (await (await fetch(`${st.gw.url}/readyz`)).json()) as { status: string; bots: { bot: string; state: string; kicks: number }[] };
      return r.bots[0]?.state === "kicked" ? r : undefined;
    }, 3000, "the gateway sees the kick");
    expect(readyz.status).toBe("ready");
    expect(readyz.bots[0]).toMatchObject({ bot: "live", holder: true, kicks: 1 });
    const back = await eventually(() => {
      const c = st.wecom.botWsConnections("live").filter((x) => x.subscribed && x.openedAt > kickedAt);
      return c.length > 0 && other.readyState !== WebSocket.OPEN ? Date.now() : undefined;
    }, 5000, "the gateway takes the bot back after its quiet time");
    expect(back - kickedAt).toBeGreaterThanOrEqual(1000);
    const metrics = await (await fetch(`${st.gw.url}/metrics`)).text();
    expect(metrics).toMatch(/wecom_bridge_bot_ws_kicks\{bot="live"\} 1/);
    // a warning that says why: two deployments may share the bot
    const warning = logLines.map((l) => JSON.parse(l) as { level: string; msg: string }).find((l) => l.level === "warn" && /two deployments/.test(l.msg));
    expect(warning).toBeDefined();
    other.terminate();
  });

  it("delivers a user's image: its URL is decrypted with the message's own aeskey, which never reaches the 全媒体", async () => {
    const st = await liveStack();
    const png = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), randomBytes(3000)]);
    st.wecom.botUserSendsWs("live", { userid: USER, msgtype: "image", image: { bytes: png } });
    const received = await st.omni.waitFor(1, 8000);
    const body = received[0]?.body;
    expect(body).toMatchObject({ FromUserId: ADDR, MsgType: "image" });
    expect(JSON.stringify(body)).not.toMatch(/aes_?key/i);
    const res = await fetch(body?.Content as string);
    const got = Buffer.from(await res.arrayBuffer());
    expect(createHash("md5").update(got).digest("hex")).toBe(createHash("md5").update(png).digest("hex"));
  });

  it("uploads an agent's image and file over the connection (init, chunks, finish) and sends them with aibot_send_msg; a webhook bot refuses files (30007)", async () => {
    const st = await liveStack();
    // the agent's files, served on loopback (the 全媒体's host may be private)
    const png = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), randomBytes(700_000)]);
    const gif = Buffer.concat([Buffer.from("GIF89a"), randomBytes(2000)]);
    const files = createServer((req, res) => {
      const body = req.url === "/a.png" ? png : gif;
      res.writeHead(200, { "content-type": "application/octet-stream", "content-disposition": `attachment; filename="${req.url?.slice(1)}"` });
      res.end(body);
    });
    await new Promise<void>((r) => files.listen(0, "127.0.0.1", () => r()));
    const base = `http://127.0.0.1:${(files.address() as AddressInfo).port}`;
    try {
      st.wecom.botUserSendsWs("live", { userid: USER, msgtype: "text", text: "发一下发票" });
      await st.omni.waitFor(1);
      expect((await st.omni.sendAgentReply({ ToUserId: ADDR, MsgType: "image", Content: `${base}/a.png`, Tag: { msgid: "img-1" } })).reply).toMatchObject({ errcode: 0 });
      expect((await st.omni.sendAgentReply({ ToUserId: ADDR, MsgType: "image", Content: `${base}/b.gif`, Tag: { msgid: "img-2" } })).reply).toMatchObject({ errcode: 0 });
      const sends = await eventually(() => {
        const x = st.wecom.botWsSends("live").filter((y) => y.errcode === 0);
        return x.length === 2 ? x : undefined;
      }, 8000, "both files sent");
      // in order: the PNG as an image (two 512 KiB chunks), the GIF as a file (WeCom takes JPG and PNG images only)
      expect(sends.map((x) => x.msgtype)).toEqual(["image", "file"]);
      const mediaIdOf = (i: number, type: string) => ((sends[i]?.body[type] ?? {}) as { media_id?: string }).media_id ?? "";
      expect(st.wecom.botWsMedia(mediaIdOf(0, "image"))?.bytes.equals(png)).toBe(true);
      expect(st.wecom.botWsMedia(mediaIdOf(1, "file"))?.bytes.equals(gif)).toBe(true);
      expect(st.wecom.botWsUploads("live").find((u) => u.type === "image")).toMatchObject({ totalChunks: 2 });
      // the same file again (another message: its own Tag.msgid): its media_id is reused, nothing uploaded twice
      await st.omni.sendAgentReply({ ToUserId: ADDR, MsgType: "image", Content: `${base}/a.png`, Tag: { msgid: "img-3" } });
      await eventually(() => st.wecom.botWsSends("live").filter((y) => y.errcode === 0).length === 3, 5000, "the third send");
      expect(st.wecom.botWsUploads("live").filter((u) => u.type === "image")).toHaveLength(1);
      // a bot in webhook mode has no way to send a file
      await st.wecom.botUserSendsText("aibHELPER", "wangwu", "你好");
      await st.omni.waitFor(2);
      const r = await st.omni.sendAgentReply({ ToUserId: "bot:aibHELPER:user:wangwu", MsgType: "image", Content: `${base}/a.png` });
      expect(r.reply).toMatchObject({ errcode: 30007 });
    } finally {
      files.close();
    }
  });

  it("shows an agent's template card in the stream (stream_with_template_card), once", async () => {
    const st = await liveStack();
    const sent = st.wecom.botUserSendsWs("live", { userid: USER, msgtype: "text", text: "帮我选个时间" });
    await st.omni.waitFor(1);
    const card = { card_type: "text_notice", main_title: { title: "预约成功" }, card_action: { type: 1, url: "https://example.com" } };
    await st.omni.sendAgentReply({ ToUserId: ADDR, MsgType: "text", Content: "请查看卡片", Tag: { template_card: card } });
    const x = await eventually(() => {
      const y = streamOf(st, sent.reqId);
      return y !== undefined && y.templateCards.length > 0 && y.shown === "请查看卡片" ? y : undefined;
    }, 3000, "the card in the stream");
    expect(x.templateCards).toEqual([card]);
    await st.omni.sendAgentReply({ ToUserId: ADDR, MsgType: "text", Content: "还有吗", Tag: { finish: true } });
    await eventually(() => streamOf(st, sent.reqId)?.status === "finished", 3000, "the finish");
    expect(streamOf(st, sent.reqId)?.templateCards).toHaveLength(1);
    expect(streamOf(st, sent.reqId)?.frames.filter((f) => f.templateCard !== undefined)).toHaveLength(1);
  });

  it("keeps the stream when WeCom answers a frame with a passing errcode (6000), and sends the frame again", async () => {
    const st = await liveStack();
    const sent = st.wecom.botUserSendsWs("live", { userid: USER, msgtype: "text", text: "在吗" });
    await st.omni.waitFor(1);
    await eventually(() => streamOf(st, sent.reqId)?.frames.length, 3000, "the placeholder frame");
    st.wecom.botWsFailNext("live", "aibot_respond_msg", 6000);
    await st.omni.sendAgentReply({ ToUserId: ADDR, MsgType: "text", Content: "在的", Tag: { finish: true } });
    const x = await eventually(() => {
      const y = streamOf(st, sent.reqId);
      return y?.status === "finished" ? y : undefined;
    }, 5000, "the stream finished after the retry");
    expect(x.shown).toBe("在的");
    // WeCom did answer 6000 to one of the stream's frames
    expect(st.wecom.botWsFrames("live").some((f) => f.direction === "out" && f.reqId === sent.reqId && f.errcode === 6000)).toBe(true);
    expect(st.wecom.botWsSends("live")).toHaveLength(0);
  });

  it("retries storing a callback while the store fails (WeCom does not send it again), and keeps a conversation's messages in order", async () => {
    const st = await liveStack();
    const store = st.gw.store;
    const real = store.ingest.bind(store);
    let failures = 2;
    store.ingest = async (...args: Parameters<typeof real>) => {
      if (failures > 0) {
        failures--;
        throw new Error("connection terminated unexpectedly");
      }
      return real(...args);
    };
    // the welcome goes at once, once, whatever the store does (WeCom takes it within 5 s only)
    const ev = st.wecom.botEventWs("live", { userid: USER, eventtype: "enter_chat" });
    const first = st.wecom.botUserSendsWs("live", { userid: USER, msgtype: "text", text: "第一条" });
    const second = st.wecom.botUserSendsWs("live", { userid: USER, msgtype: "text", text: "第二条" });
    const received = await st.omni.waitFor(3, 8000);
    expect(received.map((r) => r.body.Content)).toEqual(["enter_chat", "第一条", "第二条"]);
    expect(failures).toBe(0);
    expect(st.wecom.botWsWelcomes("live").filter((w) => w.reqId === ev.reqId)).toEqual([expect.objectContaining({ errcode: 0 })]);
    // the newest message has the conversation's open stream: the agent's answer goes there
    await st.omni.sendAgentReply({ ToUserId: ADDR, MsgType: "text", Content: "都收到了", Tag: { finish: true } });
    await eventually(() => streamOf(st, second.reqId)?.shown === "都收到了", 3000, "the answer in the second stream");
    expect(streamOf(st, first.reqId)?.shown).not.toContain("都收到了");
  });

  it("keeps trying a refused subscribe for ever (more than the SDK's 10 tries), logs each refusal as an error without the secret, and connects once WeCom takes it", async () => {
    const st = await liveStack({}, FAST, (x) => x.wecom.botWsFailNext("live", "aibot_subscribe", 853000, 12));
    const refused = st.wecom.botWsFrames().filter((f) => f.direction === "out" && f.errcode === 853000);
    expect(refused.length).toBe(12);
    const errors = logLines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.level === "error");
    expect(errors.length).toBeGreaterThanOrEqual(12);
    expect(JSON.stringify(errors)).toContain("853000");
    expect(logLines.join("\n")).not.toContain(LIVE_SECRET);
    const ready = (await (await fetch(`${st.gw.url}/readyz`)).json()) as { bots: { state: string }[] };
    expect(ready.bots[0]?.state).toBe("open");
  });

  it("has no callback URL in websocket mode, and reports the connection in /readyz's details", async () => {
    const st = await liveStack();
    const r = await fetch(`${st.gw.url}/wecom/bot/live`, { method: "POST", body: "{}" });
    expect(r.status).toBe(404);
    expect(await r.json()).toMatchObject({ errcode: "websocket_bot" });
    const ready = (await (await fetch(`${st.gw.url}/readyz`)).json()) as Record<string, unknown>;
    expect(ready).toMatchObject({ status: "ready", bots: [{ bot: "live", holder: true, state: "open" }] });
  });
});
