/**
 * The outbound half on KF, end to end over loopback: the 全媒体 simulator's agent answers go
 * through `POST /qmtapi/staffService/message` to the WeCom simulator's `kf/send_msg`, with the
 * endpoint's errcodes, retries sent once, texts split, WeCom's rules enforced and refusals told to
 * the 全媒体.
 */
import { afterEach, describe, expect, it } from "vitest";
import { utf8Length } from "../src/wecom/text-split.js";
import { ADMIN, eventually, KFID, type Stack, type StackOptions, startStack } from "./stack.js";

let stack: Stack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

const CUSTOMER = "wmAJ2GCAAAme1XQRC-NI-q0_ZM9ukoAw";

/** Start a stack and let a KF customer write once; returns the conversation address. */
async function withCustomer(options: StackOptions = {}, text = "你好"): Promise<{ s: Stack; address: string }> {
  const s = await startStack(options);
  stack = s;
  await s.wecom.kfCustomerSends(KFID, CUSTOMER, { msgtype: "text", text: { content: text } });
  const [first] = await s.omni.waitFor(1);
  const address = first?.body.FromUserId as string;
  expect(address).toBe(`kf:ww1436e0e65a779aee:${KFID}:${CUSTOMER}`);
  return { s, address };
}

const kfSends = (s: Stack) => s.wecom.sent.filter((x) => x.api === "kf/send_msg");
const texts = (s: Stack) => kfSends(s).map((x) => (x.body.text as { content: string } | undefined)?.content);

describe("KF round trip", () => {
  it("an agent's answer reaches the customer through kf/send_msg with a stable msgid", async () => {
    const { s, address } = await withCustomer();
    const r = await s.omni.sendAgentReply({ ToUserId: address, WorkerNum: "8001", MsgType: "text", Content: "您好，请问有什么可以帮您？" });
    expect(r).toEqual({ status: 200, reply: { errcode: 0, errmsg: "ok" } });
    await eventually(() => kfSends(s).length === 1, 5000, "kf/send_msg");
    const sent = kfSends(s)[0];
    expect(sent?.body).toMatchObject({ touser: CUSTOMER, open_kfid: KFID, msgtype: "text", text: { content: "您好，请问有什么可以帮您？" } });
    expect(String(sent?.body.msgid)).toMatch(/^[0-9a-zA-Z_-]{1,32}$/);
    expect(sent?.delivered).toBe(true);
  });

  it("a 全媒体 retry (re-signed, byte-identical, or the same Tag.msgid) is sent once; two messages in one millisecond are both sent", async () => {
    const { s, address } = await withCustomer();
    const body = { ToUserId: address, MsgType: "text", Content: "第一条" };
    expect((await s.omni.sendAgentReply(body)).reply).toMatchObject({ errcode: 0 });
    expect((await s.omni.sendAgentReply(body)).reply).toMatchObject({ errcode: 0 }); // re-signed, new timestamp
    const ts = Date.now();
    const raw = JSON.stringify({ ToUserId: address, MsgType: "text", Content: "第二条" });
    const replay = { ...body, Content: "第二条" };
    expect((await s.omni.sendAgentReply(replay, { timestamp: ts, rawBody: raw })).reply).toMatchObject({ errcode: 0 });
    expect((await s.omni.sendAgentReply(replay, { timestamp: ts, rawBody: raw })).reply).toMatchObject({ errcode: 0 }); // byte-identical
    const tagged = { ToUserId: address, MsgType: "text", Content: "第三条", Tag: { msgid: "qmt-42" } };
    expect((await s.omni.sendAgentReply(tagged)).reply).toMatchObject({ errcode: 0 });
    expect((await s.omni.sendAgentReply({ ...tagged, Content: "第三条（改）" })).reply).toMatchObject({ errcode: 0 });
    // two different messages signed in the same millisecond
    const same = Date.now() + 5;
    expect((await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: "甲" }, { timestamp: same })).reply).toMatchObject({ errcode: 0 });
    expect((await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: "乙" }, { timestamp: same })).reply).toMatchObject({ errcode: 0 });
    await eventually(() => kfSends(s).length >= 5, 5000, "five sends");
    await s.gw.gateway.delivery.stop(); // nothing else is in flight
    expect(texts(s)).toEqual(["第一条", "第二条", "第三条", "甲", "乙"]);
  });

  it("answers the endpoint's errcodes in order, HTTP 200 every time", async () => {
    const { s, address } = await withCustomer({ config: (raw) => (raw.omni.allowIps = ["127.0.0.0/8"]) });
    const ok = { ToUserId: address, MsgType: "text", Content: "x" };
    const code = async (...args: Parameters<typeof s.omni.sendAgentReply>) => {
      const r = await s.omni.sendAgentReply(...args);
      expect(r.status).toBe(200);
      return (r.reply as { errcode: number }).errcode;
    };
    expect(await code(ok, { unsigned: true })).toBe(30001);
    expect(await code(ok, { signature: "0".repeat(40) })).toBe(30003);
    expect(await code(ok, { timestamp: Date.now() - 10 * 60_000 })).toBe(30003);
    // the signature comes before the body: a bad body with a bad signature is 30003
    expect(await code(ok, { signature: "0".repeat(40), rawBody: "{not json" })).toBe(30003);
    expect(await code(ok, { rawBody: "{not json" })).toBe(30005);
    expect(await code(ok, { rawBody: JSON.stringify({ ToUserId: address, MsgType: "text" }) })).toBe(30005);
    expect(await code({ ...ok, ToUserId: "nobody" })).toBe(30006);
    expect(await code({ ...ok, ToUserId: `kf:ww1436e0e65a779aee:wkUNKNOWN:${CUSTOMER}` })).toBe(30006);
    expect(await code({ ...ok, MsgType: "markdown" })).toBe(30007);
    expect(await code({ ...ok, ToUserId: "archive:ww1436e0e65a779aee:room:wrRoom1" })).toBe(30008);
    expect(await code({ ...ok, ToUserId: `kf:ww1436e0e65a779aee:${KFID}` })).toBe(30008);
    expect(await code({ ...ok, Content: "valid" })).toBe(0);
    await eventually(() => kfSends(s).length === 1, 5000, "the one valid send");
    const metrics = await (await fetch(`${s.gw.url}/metrics`)).text();
    expect(metrics).toMatch(/wecom_bridge_omni_requests_total\{outcome="30005"\} 2/);
  });

  it("a caller outside omni.allowIps is refused with 30003", async () => {
    const { s, address } = await withCustomer({ config: (raw) => (raw.omni.allowIps = ["10.0.0.0/8"]) });
    expect((await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: "x" })).reply).toMatchObject({ errcode: 30003 });
  });

  it("splits a long text on grapheme boundaries into several messages, in order", async () => {
    const { s, address } = await withCustomer();
    // 2046 bytes of Chinese + a family emoji (ZWJ sequence, 25 bytes) across the 2048-byte boundary
    const family = "👨‍👩‍👧‍👦";
    const text = `${"汉".repeat(682)}${family}${"尾".repeat(600)}`;
    expect((await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: text })).reply).toMatchObject({ errcode: 0 });
    await eventually(() => kfSends(s).length === 2, 5000, "two parts");
    const parts = texts(s) as string[];
    expect(parts.join("")).toBe(text);
    for (const p of parts) expect(utf8Length(p)).toBeLessThanOrEqual(2048);
    expect(parts[1]?.startsWith(family)).toBe(true);
  });
});

describe("WeCom's rules", () => {
  it("the 5-message budget: parts that do not fit are one refusal; then 30009 until the customer writes", async () => {
    const { s, address } = await withCustomer();
    for (const t of ["一", "二", "三"]) expect((await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: t })).reply).toMatchObject({ errcode: 0 });
    // a 3-part text: 2 fit
    const long = "长".repeat(682 * 3);
    expect((await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: long, Tag: { msgid: "long-1" } })).reply).toMatchObject({ errcode: 0 });
    const refusal = (await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: "六" })).reply as { errcode: number; errmsg: string };
    expect(refusal.errcode).toBe(30009);
    expect(refusal.errmsg).toContain("95001");
    const [notice] = await eventually(() => {
      const n = s.omni.conversation(address).filter((b) => b.MsgType === "event" && b.Content === "send_failed");
      return n.length > 0 ? n : undefined;
    });
    expect(notice?.Tag).toMatchObject({ errcode: 95001, ref: "long-1" });
    expect(kfSends(s)).toHaveLength(5);
    expect(s.wecom.kfSession(KFID, CUSTOMER)?.sentSinceCustomer).toBe(5);
    // the refused entry is listed
    const res = await fetch(`${s.gw.url}/admin/outbox?state=refused`, { headers: { authorization: `Bearer ${ADMIN}` } });
    const list = (await res.json()) as { items: { state: string; errcode: number }[] };
    expect(list.items.map((i) => [i.state, i.errcode])).toEqual([["refused", 95001]]);
    // the customer writes again: the budget is renewed
    await s.wecom.kfCustomerSends(KFID, CUSTOMER, { msgtype: "text", text: { content: "还在吗" } });
    await eventually(() => s.omni.conversation(address).some((b) => b.Content === "还在吗"));
    expect((await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: "在的" })).reply).toMatchObject({ errcode: 0 });
    await eventually(() => texts(s).includes("在的"));
  });

  it("the 48-hour window closed since the customer's last message: 30009 at once", async () => {
    let offset = 0;
    const { s, address } = await withCustomer({ now: () => Date.now() + offset });
    offset = 49 * 3600_000;
    const r = (await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: "迟到的回复" }, { timestamp: Date.now() + offset })).reply as { errcode: number; errmsg: string };
    expect(r.errcode).toBe(30009);
    expect(r.errmsg).toContain("95002");
    expect(kfSends(s)).toHaveLength(0);
  });

  it("a session a WeCom servicer took (session_status_change) is refused with 30009", async () => {
    const { s, address } = await withCustomer();
    await s.wecom.kfEvent(KFID, { event_type: "session_status_change", external_userid: CUSTOMER, change_type: 1, new_servicer_userid: "zhangsan" });
    await eventually(() => s.gw.gateway.store.getState(s.config.wecom.corpId, `kfrules:${address}`, Date.now()).then((v) => (v as { serviceState?: number })?.serviceState === 3));
    const r = (await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: "x" })).reply as { errcode: number; errmsg: string };
    expect(r.errcode).toBe(30009);
    expect(r.errmsg).toContain("95018");
  });

  it("a refusal WeCom answers at send time (state changed meanwhile) ends refused and is told to the 全媒体", async () => {
    const { s, address } = await withCustomer();
    s.wecom.setKfServiceState(KFID, CUSTOMER, 3, "lisi");
    expect((await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: "被拒" })).reply).toMatchObject({ errcode: 0 });
    const notice = await eventually(() => s.omni.conversation(address).find((b) => b.Content === "send_failed"));
    expect(notice.MsgType).toBe("event");
    expect(notice.Tag).toMatchObject({ errcode: 95018, ref: "text: 被拒" });
    expect(typeof (notice.Tag as { reason: string }).reason).toBe("string");
    // the gateway asked WeCom for the state and now refuses at once
    await eventually(async () => ((await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: "再试" })).reply as { errcode: number }).errcode === 30009);
  });

  it("a customer who rejects messages: WeCom's msg_send_fail is told to the 全媒体 with the message's ref", async () => {
    const { s, address } = await withCustomer();
    s.wecom.kfRejectCustomer(KFID, CUSTOMER, { failType: 10 });
    expect((await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: "促销", Tag: { msgid: "promo-7" } })).reply).toMatchObject({ errcode: 0 });
    const notice = await eventually(() => s.omni.conversation(address).find((b) => b.Content === "send_failed"), 8000);
    expect(notice.Tag).toMatchObject({ ref: "promo-7" });
    expect((notice.Tag as { reason: string }).reason).toContain("refuses");
    // the entry WeCom could not deliver is refused, not done
    const res = await fetch(`${s.gw.url}/admin/outbox?state=refused`, { headers: { authorization: `Bearer ${ADMIN}` } });
    const items = ((await res.json()) as { items: { kind: string; lastError: string }[] }).items;
    expect(items.map((i) => i.kind)).toEqual(["kf_send"]);
    expect(items[0]?.lastError).toContain("fail_type 10");
  });
});

describe("failures", () => {
  it("a configuration error is retried up to the cap, then a dead letter the agent is told about; replay sends it", async () => {
    const { s, address } = await withCustomer({ config: (raw) => (raw.delivery.maxAttempts = 3) });
    s.wecom.failNext("kf/send_msg", 60020, 3);
    expect((await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: "IP 未加白名单时的回复" })).reply).toMatchObject({ errcode: 0 });
    const notice = await eventually(() => s.omni.conversation(address).find((b) => b.Content === "send_failed"), 8000);
    expect(notice.Tag).toMatchObject({ errcode: 60020, ref: "text: IP 未加白名单时的回复" });
    expect((notice.Tag as { reason: string }).reason).toContain("replay");
    const dead = (await (await fetch(`${s.gw.url}/admin/outbox?state=dead`, { headers: { authorization: `Bearer ${ADMIN}` } })).json()) as { items: { id: number; kind: string }[] };
    expect(dead.items.map((i) => i.kind)).toEqual(["kf_send"]);
    expect(kfSends(s)).toHaveLength(0);
    expect(await s.gw.gateway.store.replayDead("all", Date.now())).toBe(1);
    s.gw.gateway.delivery.wake();
    await eventually(() => texts(s).includes("IP 未加白名单时的回复"), 8000, "the replayed send");
  });
});

describe("sessions and handoff", () => {
  it("claims a new session (service_state 1) and sends kf.welcomeText with the welcome_code", async () => {
    const s = await startStack({ config: (raw) => (raw.kf = { welcomeText: "欢迎咨询" }) });
    stack = s;
    await s.wecom.kfEvent(KFID, { event_type: "enter_session", external_userid: CUSTOMER, welcome_code: "WELCOME1" });
    await eventually(() => s.wecom.sent.find((x) => x.api === "kf/send_msg_on_event"), 5000, "welcome");
    expect(s.wecom.sent.find((x) => x.api === "kf/send_msg_on_event")?.body).toMatchObject({ code: "WELCOME1", msgtype: "text", text: { content: "欢迎咨询" } });
    await s.wecom.kfCustomerSends(KFID, CUSTOMER, { msgtype: "text", text: { content: "在吗" } });
    await eventually(() => s.wecom.kfSession(KFID, CUSTOMER)?.serviceState === 1, 5000, "state 1");
  });

  it("sends kf.closingText with the msg_code of a session that ended", async () => {
    const { s } = await withCustomer({ config: (raw) => (raw.kf = { closingText: "感谢您的咨询，再见" }) });
    await s.wecom.kfEvent(KFID, { event_type: "session_status_change", external_userid: CUSTOMER, change_type: 3, msg_code: s.wecom.newKfCode() });
    const sent = await eventually(() => s.wecom.sent.find((x) => x.api === "kf/send_msg_on_event"), 5000, "closing text");
    expect(sent.body).toMatchObject({ msgtype: "text", text: { content: "感谢您的咨询，再见" } });
    expect(sent.delivered).toBe(true);
  });

  it("a handoff keyword sends event.CLICK.RG after the customer's message", async () => {
    const { s, address } = await withCustomer({ config: (raw) => (raw.handoff = { keywords: ["人工", "转人工"] }) }, "你好");
    await s.wecom.kfCustomerSends(KFID, CUSTOMER, { msgtype: "text", text: { content: " 转人工 " } });
    const conv = await eventually(() => {
      const c = s.omni.conversation(address);
      return c.length >= 3 ? c : undefined;
    });
    expect(conv.map((b) => [b.MsgType, b.Content])).toEqual([
      ["text", "你好"],
      ["text", " 转人工 "],
      ["event.CLICK.RG", ""],
    ]);
  });

  it("a KF menu click with handoff.menuId hands the session to a WeCom servicer; then the 全媒体 is refused with 30009", async () => {
    const { s, address } = await withCustomer({ config: (raw) => (raw.handoff = { menuId: "rg", toWeComServicer: "wangwu" }) });
    s.wecom.addKfServicer(KFID, "wangwu");
    await eventually(() => s.wecom.kfSession(KFID, CUSTOMER)?.serviceState === 1, 5000, "claimed");
    await s.wecom.kfCustomerSends(KFID, CUSTOMER, { msgtype: "text", text: { content: "人工服务", menu_id: "rg" } });
    // the handoff is known with the message itself: an agent who answers it at once is refused
    await eventually(() => s.omni.conversation(address).some((b) => b.Content === "人工服务"));
    expect(((await s.omni.sendAgentReply({ ToUserId: address, MsgType: "text", Content: "x" })).reply as { errcode: number }).errcode).toBe(30009);
    await eventually(() => s.wecom.kfSession(KFID, CUSTOMER)?.serviceState === 3, 5000, "state 3");
    expect(s.wecom.kfSession(KFID, CUSTOMER)?.servicerUserId).toBe("wangwu");
    expect(kfSends(s)).toHaveLength(0);
    expect(s.omni.conversation(address).some((b) => b.MsgType === "event.CLICK.RG")).toBe(false);
  });
});
