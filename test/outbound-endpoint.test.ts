/**
 * The staffService endpoint's edges, end to end over loopback: methods, oversized bodies, the
 * order of 30005 against 30006, free-JSON Tags, replays of retries and refusals, unknown
 * conversations, bot messages that only finish a stream, budget given back for files that could
 * not be sent, a replayed dead letter whose first part WeCom already has.
 */
import { request } from "node:http";
import { afterEach, describe, expect, it } from "vitest";
import { omniSignature } from "../src/omni/index.js";
import { ADMIN, eventually, KFID, type Stack, type StackOptions, startStack } from "./stack.js";

let stack: Stack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

const CUSTOMER = "wmEDGE000001";

async function withCustomer(options: StackOptions = {}): Promise<{ s: Stack; address: string }> {
  const s = await startStack(options);
  stack = s;
  await s.wecom.kfCustomerSends(KFID, CUSTOMER, { msgtype: "text", text: { content: "你好" } });
  const [first] = await s.omni.waitFor(1);
  return { s, address: first?.body.FromUserId as string };
}

const kfTexts = (s: Stack) => s.wecom.sent.filter((x) => x.api === "kf/send_msg").map((x) => (x.body.text as { content: string } | undefined)?.content);
const errcodeOf = (r: { reply: unknown }) => (r.reply as { errcode: number }).errcode;

/** A raw signed request with any method and body. */
function raw(s: Stack, method: string, body: string, opts: { signature?: string; timestamp?: number } = {}): Promise<{ status: number; body: string }> {
  const ts = String(opts.timestamp ?? Date.now());
  const sig = opts.signature ?? omniSignature("1001", "omni-secret", ts);
  const url = new URL(`${s.gw.url}/qmtapi/staffService/message?timestamp=${ts}&signature=${sig}`);
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) } }, (res) => {
      let text = "";
      res.on("data", (c) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

describe("the staffService endpoint's edges", () => {
  it("acts only on POST: other methods answer 30005 (HTTP 200) and queue nothing", async () => {
    const { s, address } = await withCustomer();
    const body = JSON.stringify({ ToUserId: address, MsgType: "text", Content: "via PUT" });
    for (const method of ["PUT", "PATCH", "DELETE", "GET"]) {
      const r = await raw(s, method, method === "GET" ? "" : body);
      expect(r.status).toBe(200);
      expect(JSON.parse(r.body)).toMatchObject({ errcode: 30005 });
    }
    expect(JSON.parse((await raw(s, "PUT", body, { signature: "0".repeat(40) })).body)).toMatchObject({ errcode: 30003 });
    expect(JSON.parse((await raw(s, "POST", body)).body)).toEqual({ errcode: 0, errmsg: "ok" });
    await eventually(() => kfTexts(s).length === 1);
    expect(kfTexts(s)).toEqual(["via PUT"]);
  });

  it("an oversized body is answered HTTP 200: 30003 before the signature is good, 30005 after", async () => {
    const { s, address } = await withCustomer();
    const big = JSON.stringify({ ToUserId: address, MsgType: "text", Content: "大".repeat(200_000) });
    const bad = await raw(s, "POST", big, { signature: "0".repeat(40) });
    expect(bad.status).toBe(200);
    expect(JSON.parse(bad.body)).toMatchObject({ errcode: 30003 });
    const good = await raw(s, "POST", big);
    expect(good.status).toBe(200);
    expect(JSON.parse(good.body)).toMatchObject({ errcode: 30005 });
    expect(JSON.parse(good.body).errmsg).toContain("limits.bodyBytes");
  });

  it("checks the message itself (30005) before the address (30006)", async () => {
    const { s } = await withCustomer();
    expect(errcodeOf(await s.omni.sendAgentReply({ ToUserId: "nobody", MsgType: "text", Content: " " }))).toBe(30005);
    expect(errcodeOf(await s.omni.sendAgentReply({ ToUserId: "nobody", MsgType: "location", Content: "x" }))).toBe(30005);
    expect(errcodeOf(await s.omni.sendAgentReply({ ToUserId: "nobody", MsgType: "image", Content: "not a url" }))).toBe(30005);
    expect(errcodeOf(await s.omni.sendAgentReply({ ToUserId: "nobody", MsgType: "text", Content: "ok" }))).toBe(30006);
  });

  it("Tag is free JSON: a string or array Tag is taken; a numeric Tag.msgid is a key", async () => {
    const { s, address } = await withCustomer();
    expect(errcodeOf(await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: "一", Tag: "free text" }))).toBe(0);
    expect(errcodeOf(await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: "二", Tag: [1, 2] }))).toBe(0);
    expect(errcodeOf(await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: "三", Tag: { msgid: 12345 } }))).toBe(0);
    expect(errcodeOf(await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: "三（重发）", Tag: { msgid: 12345 } }))).toBe(0);
    await eventually(() => kfTexts(s).length === 3);
    await s.gw.gateway.delivery.stop();
    expect(kfTexts(s)).toEqual(["一", "二", "三"]);
  });

  it("a byte-identical replay of a retry, after the dedup window, is not acted on", async () => {
    let offset = 0;
    const { s, address } = await withCustomer({ now: () => Date.now() + offset });
    const body = { ToUserId: address, MsgType: "text", Content: "只应一次" };
    expect(errcodeOf(await s.omni.sendAgentReply(body, { timestamp: Date.now() }))).toBe(0);
    offset = 30_000;
    const retryTs = Date.now() + offset;
    const rawBody = JSON.stringify(body);
    expect(errcodeOf(await s.omni.sendAgentReply(body, { timestamp: retryTs, rawBody }))).toBe(0); // a re-signed retry: a duplicate
    offset = 100_000; // past omni.dedupWindowSec (60 s), within the 5-minute timestamp window
    expect(errcodeOf(await s.omni.sendAgentReply(body, { timestamp: retryTs, rawBody }))).toBe(0);
    await eventually(() => kfTexts(s).length >= 1);
    await s.gw.gateway.delivery.stop();
    expect(kfTexts(s)).toEqual(["只应一次"]);
  });

  it("a byte-identical replay of a refused request is refused again (30009), even after the rule would allow it", async () => {
    const { s, address } = await withCustomer();
    for (const t of ["1", "2", "3", "4", "5"]) expect(errcodeOf(await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: t }))).toBe(0);
    const ts = Date.now() + 10;
    const rawBody = JSON.stringify({ ToUserId: address, MsgType: "text", Content: "六" });
    expect(errcodeOf(await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: "六" }, { timestamp: ts, rawBody }))).toBe(30009);
    await s.wecom.kfCustomerSends(KFID, CUSTOMER, { msgtype: "text", text: { content: "还在吗" } });
    await eventually(() => s.omni.received.some((r) => r.body.Content === "还在吗"));
    // the 全媒体's HTTP retry of the request whose answer it lost gets the same answer
    expect(errcodeOf(await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: "六" }, { timestamp: ts, rawBody }))).toBe(30009);
    await eventually(() => kfTexts(s).length >= 5);
    await s.gw.gateway.delivery.stop();
    expect(kfTexts(s)).not.toContain("六");
  });

  it("an address inbound delivery never gave is 30006 (a KF customer or a bot user who never wrote)", async () => {
    const { s } = await withCustomer();
    expect(errcodeOf(await s.omni.sendAgentReply({ ToUserId: `kf:ww1436e0e65a779aee:${KFID}:wmNEVERWROTE`, MsgType: "text", Content: "x" }))).toBe(30006);
    expect(errcodeOf(await s.omni.sendAgentReply({ ToUserId: "bot:aibHELPER:user:nobody", MsgType: "text", Content: "x" }))).toBe(30006);
    expect(errcodeOf(await s.omni.sendAgentReply({ ToUserId: "bot:aibUNKNOWN:user:nobody", MsgType: "text", Content: "x" }))).toBe(30006);
  });

  it("a bot message may only finish the stream (Tag.finish, empty Content)", async () => {
    const { s } = await withCustomer();
    const sent = await s.wecom.botUserSendsText("aibHELPER", "zhaoliu", "会议室");
    const address = (await eventually(() => s.omni.received.find((r) => r.body.FromUserId.startsWith("bot:"))))?.body.FromUserId;
    expect(errcodeOf(await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: "有空" }))).toBe(0);
    expect(errcodeOf(await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: "", Tag: { finish: true } }))).toBe(0);
    // KF and app still need a Content
    expect(errcodeOf(await s.omni.sendAgentReply({ ToUserId: `kf:ww1436e0e65a779aee:${KFID}:${CUSTOMER}`, MsgType: "text", Content: "", Tag: { finish: true } }))).toBe(30005);
    await eventually(async () => {
      const r = await s.wecom.botPollStream("aibHELPER", sent.stream?.streamId as string, "zhaoliu");
      const stream = s.wecom.botStream("aibHELPER", sent.stream?.streamId as string);
      return r.status === 200 && stream?.frames.at(-1)?.finish === true && stream.frames.at(-1)?.content === "有空";
    }, 5000, "the stream finished with the agent's text");
  });

  it("a handoff whose service_state/trans dies does not leave the session refusing the 全媒体", async () => {
    const { s, address } = await withCustomer({
      config: (r) => {
        r.handoff = { keywords: ["转人工"], toWeComServicer: "wangwu" };
        r.delivery.maxAttempts = 2;
      },
    });
    await eventually(() => s.wecom.kfSession(KFID, CUSTOMER)?.serviceState === 1, 5000, "claimed");
    s.wecom.failNext("kf/service_state/trans", -1, 2);
    await s.wecom.kfCustomerSends(KFID, CUSTOMER, { msgtype: "text", text: { content: "转人工" } });
    await eventually(() => s.omni.received.some((r) => r.body.Content === "转人工"));
    expect(errcodeOf(await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: "x" }))).toBe(30009);
    await eventually(async () => (await s.gw.gateway.store.outboxCounts()).dead === 1, 8000, "the handoff's trans dead");
    // WeCom still has the session in state 1: the gateway asked, and the 全媒体 may answer again
    expect(s.wecom.kfSession(KFID, CUSTOMER)?.serviceState).toBe(1);
    expect(errcodeOf(await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: "我来帮您" }))).toBe(0);
    await eventually(() => kfTexts(s).includes("我来帮您"));
  });

  it("files that could not be sent give their budget back", async () => {
    const { s, address } = await withCustomer();
    // a loopback URL is refused (not omni.baseUrl's host, not in omni.mediaHosts)
    for (let i = 0; i < 5; i++) expect(errcodeOf(await s.omni.sendAgentReply({ ToUserId: address, MsgType: "image", Content: `http://10.0.0.${i + 1}/a.png` }))).toBe(0);
    await eventually(async () => (await s.gw.gateway.store.outboxCounts()).refused === 5, 8000, "five refusals");
    expect(errcodeOf(await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: "文字可以" }))).toBe(0);
    await eventually(() => kfTexts(s).includes("文字可以"));
  });

  it("a replayed dead letter whose first part WeCom already has sends only the rest", async () => {
    const { s, address } = await withCustomer({ config: (r) => (r.delivery.maxAttempts = 2) });
    // WeCom takes each part but answers too late (timeoutMs 2000): the entry dies
    s.wecom.setDelay("kf/send_msg", 2500, "after");
    const text = `${"甲".repeat(682)}乙乙`;
    expect(errcodeOf(await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: text }))).toBe(0);
    await eventually(async () => (await s.gw.gateway.store.outboxCounts()).dead === 1, 15_000, "a dead letter");
    s.wecom.setDelay("kf/send_msg", 0, "after");
    expect(await s.gw.gateway.store.replayDead("all", Date.now())).toBe(1);
    s.gw.gateway.delivery.wake();
    await eventually(async () => (await s.gw.gateway.store.outboxCounts()).done >= 1 && (await s.gw.gateway.store.listOutbox(["pending", "inflight", "dead", "refused"], { limit: 10 })).every((e) => e.kind !== "kf_send"), 10_000);
    expect((kfTexts(s) as string[]).join("")).toBe(text);
    const res = await fetch(`${s.gw.url}/admin/outbox?state=refused`, { headers: { authorization: `Bearer ${ADMIN}` } });
    expect(((await res.json()) as { items: unknown[] }).items).toEqual([]);
  }, 30_000);
});
