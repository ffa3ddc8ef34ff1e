/**
 * The WeCom simulator's KF rules, each with the clock moved: the 48-hour window, 5 messages per
 * customer message, every service_state and every transition of service_state/trans, the codes of
 * send_msg_on_event, servicers' actions reported as session_status_change, 2048-byte texts, msgid
 * format and repeats, and msg_send_fail after a delivery the customer's side refused.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_KF_ERRCODES, WECOM_RULES } from "../src/sim/wecom.js";
import { appCrypto, type Json, type SimHarness, startSim, receiver, text } from "./sim-wecom-helpers.js";

let h: SimHarness;

beforeAll(async () => {
  h = await startSim();
});

afterAll(async () => {
  await h.close();
});

/** kf/send_msg of a text to a customer of an account. */
const send = (acc: string, user: string, extra: Json = {}) => h.kfCall("kf/send_msg", { touser: user, open_kfid: acc, msgtype: "text", text: { content: "您好" }, ...extra });
/** The items of an account's log, read with sync_msg. */
const log = async (acc: string) => (await h.kfCall("kf/sync_msg", { open_kfid: acc })).msg_list as Json[];
const events = async (acc: string, type: string) => (await log(acc)).filter((m) => m.msgtype === "event" && (m.event as Json).event_type === type).map((m) => m.event as Json);

describe("the 48-hour window", () => {
  it("is open up to 48 h after the customer's last message, and closed 1 ms later", async () => {
    const acc = h.newAccount();
    await h.sim.kfCustomerSends(acc, "wmEdge", text("hi"), { callback: false });
    const wrote = h.clock.now();
    expect(h.sim.kfSession(acc, "wmEdge")).toMatchObject({ serviceState: 0, lastCustomerAt: wrote, windowEndsAt: wrote + WECOM_RULES.kf.sendWindowMs });
    await h.sim.advance(WECOM_RULES.kf.sendWindowMs);
    expect((await send(acc, "wmEdge")).errcode).toBe(0);
    await h.sim.advance(1);
    const late = await send(acc, "wmEdge");
    expect(late.errcode).toBe(DEFAULT_KF_ERRCODES.windowClosed);
    expect(late.errmsg).toMatch(/^send msg time limit/);
    // the customer's next message opens it again
    await h.sim.kfCustomerSends(acc, "wmEdge", text("还在吗"), { callback: false });
    expect((await send(acc, "wmEdge")).errcode).toBe(0);
  });

  it("answers the configured errcode when one is given for the window", async () => {
    const other = await startSim({ errcodes: { windowClosed: 95018 } });
    try {
      const acc = other.newAccount();
      await other.sim.kfCustomerSends(acc, "wmCfg", text("hi"), { callback: false });
      await other.sim.advance(WECOM_RULES.kf.sendWindowMs + 1);
      expect((await other.kfCall("kf/send_msg", { touser: "wmCfg", open_kfid: acc, msgtype: "text", text: { content: "x" } })).errcode).toBe(95018);
    } finally {
      await other.close();
    }
  });
});

describe("5 messages per customer message", () => {
  it("takes the 5th and refuses the 6th with 95001, until the customer writes again", async () => {
    const acc = h.newAccount();
    await h.sim.kfCustomerSends(acc, "wmFive", text("hi"), { callback: false });
    const n = WECOM_RULES.kf.messagesPerCustomerMessage;
    for (let i = 1; i <= n; i++) expect((await send(acc, "wmFive", { text: { content: `第${i}条` } })).errcode).toBe(0);
    expect(h.sim.kfSession(acc, "wmFive")?.sentSinceCustomer).toBe(n);
    const sixth = await send(acc, "wmFive", { text: { content: "第6条" } });
    expect(sixth.errcode).toBe(95001);
    expect(h.sim.sent.filter((s) => s.api === "kf/send_msg" && s.body.open_kfid === acc)).toHaveLength(n);
    // the budget does not grow with time, only with the customer's messages
    await h.sim.advance(3600_000);
    expect((await send(acc, "wmFive")).errcode).toBe(95001);
    await h.sim.kfCustomerSends(acc, "wmFive", text("再问一下"), { callback: false });
    expect((await send(acc, "wmFive")).errcode).toBe(0);
    expect(h.sim.kfSession(acc, "wmFive")?.sentSinceCustomer).toBe(1);
  });
});

describe("session states", () => {
  it("a customer who entered but has not written is in state 4; the first message makes it 0", async () => {
    const acc = h.newAccount();
    await h.sim.kfEvent(acc, { event_type: "enter_session", external_userid: "wmNew", scene: "web" }, { callback: false });
    expect(await h.kfCall("kf/service_state/get", { open_kfid: acc, external_userid: "wmNew" })).toMatchObject({ errcode: 0, service_state: 4 });
    expect((await send(acc, "wmNew")).errcode).toBe(95018);
    await h.sim.kfCustomerSends(acc, "wmNew", text("在吗"), { callback: false });
    expect(await h.kfCall("kf/service_state/get", { open_kfid: acc, external_userid: "wmNew" })).toMatchObject({ errcode: 0, service_state: 0 });
    expect((await send(acc, "wmNew")).errcode).toBe(0);
  });

  it("kf/send_msg works in states 0 and 1 only (95018 in 2, 3 and 4), whatever the window", async () => {
    const acc = h.newAccount();
    await h.sim.kfCustomerSends(acc, "wmStates", text("hi"), { callback: false });
    const got: Record<number, number> = {};
    for (const state of WECOM_RULES.kf.serviceStates) {
      h.sim.setKfServiceState(acc, "wmStates", state, state === 3 ? "zhangsan" : undefined);
      got[state] = (await send(acc, "wmStates", { text: { content: `state ${state}` } })).errcode as number;
    }
    expect(got).toEqual({ 0: 0, 1: 0, 2: 95018, 3: 95018, 4: 95018 });
    const refused = await (async () => {
      h.sim.setKfServiceState(acc, "wmStates", 3, "zhangsan");
      return send(acc, "wmStates");
    })();
    expect(refused.errmsg).toMatch(/^send msg session status invalid/);
    expect(await h.kfCall("kf/service_state/get", { open_kfid: acc, external_userid: "wmStates" })).toMatchObject({ service_state: 3, servicer_userid: "zhangsan" });
    // a customer message in state 3 leaves the session with the servicer
    await h.sim.kfCustomerSends(acc, "wmStates", text("人呢"), { callback: false });
    expect(h.sim.kfSession(acc, "wmStates")).toMatchObject({ serviceState: 3, servicerUserId: "zhangsan" });
  });
});

describe("kf/service_state/trans", () => {
  it("allows exactly the transitions of the rule book, answering 95016 for the others", async () => {
    const acc = h.newAccount();
    h.sim.addKfServicer(acc, "zhangsan");
    const states = WECOM_RULES.kf.serviceStates;
    const table: string[] = [];
    for (const from of states) {
      for (const to of states) {
        const user = `wmT${from}${to}`;
        await h.sim.kfCustomerSends(acc, user, text("hi"), { callback: false });
        h.sim.setKfServiceState(acc, user, from, from === 3 ? "lisi" : undefined);
        const body: Json = { open_kfid: acc, external_userid: user, service_state: to };
        if (to === 3) body.servicer_userid = "zhangsan";
        const r = await h.kfCall("kf/service_state/trans", body);
        const allowed = (WECOM_RULES.kf.transitions[from] as readonly number[]).includes(to);
        expect(r.errcode, `${from} -> ${to}`).toBe(allowed ? 0 : DEFAULT_KF_ERRCODES.invalidTransition);
        expect(h.sim.kfSession(acc, user)?.serviceState, `${from} -> ${to}`).toBe(allowed ? to : from);
        // a code comes with the states that have a send_msg_on_event scene: pool, servicer, end
        expect("msg_code" in r, `${from} -> ${to}`).toBe(allowed && to >= 2);
        if (allowed) table.push(`${from}->${to}`);
      }
    }
    expect(table).toEqual(["0->1", "0->2", "0->3", "0->4", "1->2", "1->3", "1->4", "2->3", "2->4", "3->3", "3->4"]);
  });

  it("needs an on-duty servicer for state 3 (40058 without one, 95014 for someone else)", async () => {
    const acc = h.newAccount();
    h.sim.addKfServicer(acc, "zhangsan");
    h.sim.addKfServicer(acc, "offduty", false);
    await h.sim.kfCustomerSends(acc, "wmS", text("hi"), { callback: false });
    const trans = (extra: Json) => h.kfCall("kf/service_state/trans", { open_kfid: acc, external_userid: "wmS", service_state: 3, ...extra });
    expect((await trans({})).errcode).toBe(40058);
    expect((await trans({ servicer_userid: "stranger" })).errcode).toBe(DEFAULT_KF_ERRCODES.notServicer);
    expect((await trans({ servicer_userid: "offduty" })).errcode).toBe(DEFAULT_KF_ERRCODES.notServicer);
    // a servicer_status_change event puts a servicer on duty
    await h.sim.kfEvent(acc, { event_type: "servicer_status_change", servicer_userid: "offduty", status: 1 }, { callback: false });
    expect((await trans({ servicer_userid: "offduty" })).errcode).toBe(0);
    expect(await h.kfCall("kf/service_state/get", { open_kfid: acc, external_userid: "wmS" })).toMatchObject({ service_state: 3, servicer_userid: "offduty" });
    expect((await h.kfCall("kf/service_state/trans", { open_kfid: acc, external_userid: "wmS", service_state: 7 })).errcode).toBe(40058);
    expect((await h.kfCall("kf/service_state/trans", { open_kfid: acc, external_userid: "wmNobody", service_state: 1 })).errcode).toBe(40096);
  });

  it("its codes send one message while the session stays in their state, within their life", async () => {
    const acc = h.newAccount();
    h.sim.addKfServicer(acc, "zhangsan");
    const on = (code: unknown, body: Json) => h.kfCall("kf/send_msg_on_event", { code, ...body });
    // into the pool: one text within 48 h, only while the session waits there
    await h.sim.kfCustomerSends(acc, "wmPool", text("hi"), { callback: false });
    const pool = await h.kfCall("kf/service_state/trans", { open_kfid: acc, external_userid: "wmPool", service_state: 2 });
    expect((await on(pool.msg_code, { msgtype: "msgmenu", msgmenu: { list: [] } })).errcode).toBe(40008);
    expect((await on(pool.msg_code, { msgtype: "text", text: { content: "正在排队" } })).errcode).toBe(0);
    expect((await on(pool.msg_code, { msgtype: "text", text: { content: "again" } })).errcode).toBe(DEFAULT_KF_ERRCODES.codeUsed);
    const pool2 = await (async () => {
      await h.sim.kfCustomerSends(acc, "wmPool2", text("hi"), { callback: false });
      return h.kfCall("kf/service_state/trans", { open_kfid: acc, external_userid: "wmPool2", service_state: 2 });
    })();
    await h.kfCall("kf/service_state/trans", { open_kfid: acc, external_userid: "wmPool2", service_state: 3, servicer_userid: "zhangsan" });
    expect((await on(pool2.msg_code, { msgtype: "text", text: { content: "排队中" } })).errcode).toBe(DEFAULT_KF_ERRCODES.codeStateMismatch);
    // the end code: text or menu within 20 s
    await h.sim.kfCustomerSends(acc, "wmEnd", text("hi"), { callback: false });
    const end = await h.kfCall("kf/service_state/trans", { open_kfid: acc, external_userid: "wmEnd", service_state: 4 });
    await h.sim.advance(WECOM_RULES.kf.codes.end.ttlMs + 1);
    expect((await on(end.msg_code, { msgtype: "text", text: { content: "再见" } })).errcode).toBe(DEFAULT_KF_ERRCODES.codeInvalid);
    await h.sim.kfCustomerSends(acc, "wmEnd2", text("hi"), { callback: false });
    const end2 = await h.kfCall("kf/service_state/trans", { open_kfid: acc, external_userid: "wmEnd2", service_state: 4 });
    await h.sim.advance(WECOM_RULES.kf.codes.end.ttlMs);
    expect((await on(end2.msg_code, { msgtype: "msgmenu", msgmenu: { head_content: "满意吗", list: [{ type: "click", click: { id: "1", content: "满意" } }] } })).errcode).toBe(0);
    expect(h.sim.sent.filter((s) => s.api === "kf/send_msg_on_event" && [pool.msg_code, end2.msg_code].includes(s.body.code))).toHaveLength(2);
  });
});

describe("servicers' actions", () => {
  it("are reported as session_status_change events with WeCom's fields and codes, and move the state", async () => {
    const acc = h.newAccount();
    await h.sim.kfCustomerSends(acc, "wmH", text("转人工"), { callback: false });
    h.sim.setKfServiceState(acc, "wmH", 2);
    await expect(h.sim.kfServicerActs(acc, "wmH", "end", "zhangsan", { callback: false })).rejects.toThrow(/service_state 2/);
    const accepted = await h.sim.kfServicerActs(acc, "wmH", "accept", "zhangsan", { callback: false });
    expect(accepted.msgCode).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(h.sim.kfSession(acc, "wmH")).toMatchObject({ serviceState: 3, servicerUserId: "zhangsan" });
    await h.sim.kfServicerActs(acc, "wmH", "transfer", "lisi", { callback: false });
    expect(h.sim.kfSession(acc, "wmH")).toMatchObject({ serviceState: 3, servicerUserId: "lisi" });
    const ended = await h.sim.kfServicerActs(acc, "wmH", "end", "lisi", { callback: false });
    expect(h.sim.kfSession(acc, "wmH")?.serviceState).toBe(4);
    await h.sim.kfServicerActs(acc, "wmH", "reopen", "lisi", { callback: false });
    expect(h.sim.kfSession(acc, "wmH")?.serviceState).toBe(3);
    const changes = await events(acc, "session_status_change");
    expect(changes).toEqual([
      { event_type: "session_status_change", open_kfid: acc, external_userid: "wmH", change_type: 1, new_servicer_userid: "zhangsan", msg_code: accepted.msgCode },
      { event_type: "session_status_change", open_kfid: acc, external_userid: "wmH", change_type: 2, old_servicer_userid: "zhangsan", new_servicer_userid: "lisi" },
      { event_type: "session_status_change", open_kfid: acc, external_userid: "wmH", change_type: 3, old_servicer_userid: "lisi", msg_code: ended.msgCode },
      { event_type: "session_status_change", open_kfid: acc, external_userid: "wmH", change_type: 4, new_servicer_userid: "lisi" },
    ]);
    // the end code was for the ended session: the session is with a servicer again
    expect((await h.kfCall("kf/send_msg_on_event", { code: ended.msgCode, msgtype: "text", text: { content: "再见" } })).errcode).toBe(DEFAULT_KF_ERRCODES.codeStateMismatch);
    expect((await send(acc, "wmH")).errcode).toBe(95018);
  });

  it("each event is followed by a kf_msg_or_event callback", async () => {
    const r = await receiver(appCrypto());
    try {
      h.sim.setCallbackUrl("app", "support", r.url);
      const acc = h.newAccount();
      await h.sim.kfCustomerSends(acc, "wmCb", text("hi"), { callback: false });
      h.sim.setKfServiceState(acc, "wmCb", 2);
      const res = await h.sim.kfServicerActs(acc, "wmCb", "accept", "zhangsan");
      expect(res.callback).toMatchObject({ delivered: true, tries: 1 });
      expect(r.received).toHaveLength(1);
      expect(r.received[0]?.plaintext).toContain("<Event><![CDATA[kf_msg_or_event]]></Event>");
      expect(r.received[0]?.plaintext).toContain(acc);
    } finally {
      await r.close();
    }
  });
});

describe("kf/send_msg content and msgid", () => {
  it("takes 2048 bytes of text and refuses 2049 (Chinese: 3 bytes a character)", async () => {
    const acc = h.newAccount();
    await h.sim.kfCustomerSends(acc, "wmLen", text("hi"), { callback: false });
    const exact = `${"好".repeat(682)}ab`;
    expect(Buffer.byteLength(exact)).toBe(WECOM_RULES.kf.textMaxBytes);
    expect((await send(acc, "wmLen", { text: { content: exact } })).errcode).toBe(0);
    const over = await send(acc, "wmLen", { text: { content: `${exact}c` } });
    expect(over.errcode).toBe(DEFAULT_KF_ERRCODES.textTooLong);
    expect(over.errmsg).toMatch(/^content size out of limit, 2049 bytes > 2048/);
    expect((await send(acc, "wmLen", { text: { content: "" } })).errcode).toBe(44004);
  });

  it("takes a msgid of 32 bytes of [0-9a-zA-Z_-], refuses 33 bytes, other characters and a repeat on the same account", async () => {
    const acc = h.newAccount();
    const other = h.newAccount();
    for (const a of [acc, other]) await h.sim.kfCustomerSends(a, "wmId", text("hi"), { callback: false });
    const id32 = "a_-Z9".repeat(6) + "xy";
    expect(id32).toHaveLength(WECOM_RULES.kf.msgidMaxBytes);
    expect(await send(acc, "wmId", { msgid: id32 })).toEqual({ errcode: 0, errmsg: "ok", msgid: id32 });
    expect((await send(acc, "wmId", { msgid: `${id32}z` })).errcode).toBe(40058);
    expect((await send(acc, "wmId", { msgid: "订单1" })).errcode).toBe(40058);
    expect((await send(acc, "wmId", { msgid: "a b" })).errcode).toBe(40058);
    const again = await send(acc, "wmId", { msgid: id32 });
    expect(again.errcode).toBe(DEFAULT_KF_ERRCODES.duplicateMsgId);
    expect(again.errmsg).toMatch(/^msgid duplicated/);
    // unique per account: the same msgid on another account is another message
    expect((await send(other, "wmId", { msgid: id32 })).errcode).toBe(0);
    // a refused send does not use up the customer's budget
    expect(h.sim.kfSession(acc, "wmId")?.sentSinceCustomer).toBe(1);
  });
});

describe("msg_send_fail", () => {
  it("follows an accepted send the customer's side refused: in sync_msg with fail_msgid and fail_type, and a callback", async () => {
    const r = await receiver(appCrypto());
    try {
      h.sim.setCallbackUrl("app", "support", r.url);
      const acc = h.newAccount();
      await h.sim.kfCustomerSends(acc, "wmRej", text("hi"), { callback: false });
      h.sim.kfRejectCustomer(acc, "wmRej");
      const ok = await send(acc, "wmRej", { msgid: "refused_1" });
      expect(ok).toEqual({ errcode: 0, errmsg: "ok", msgid: "refused_1" });
      expect(h.sim.sent.at(-1)).toMatchObject({ api: "kf/send_msg", msgid: "refused_1", delivered: false, dropped: "rejected" });
      expect(await events(acc, "msg_send_fail")).toEqual([
        { event_type: "msg_send_fail", open_kfid: acc, external_userid: "wmRej", fail_msgid: "refused_1", fail_type: WECOM_RULES.kf.failTypes.customerRejected },
      ]);
      // the callback follows on its own: wait for it, not for a fixed time
      await expect.poll(() => r.received.length).toBe(1);
      expect(r.received[0]?.plaintext).toContain(acc);
      h.sim.kfAcceptCustomer(acc, "wmRej");
      expect((await send(acc, "wmRej", { msgid: "delivered_2" })).errcode).toBe(0);
      expect(h.sim.sent.at(-1)).toMatchObject({ msgid: "delivered_2", delivered: true });
      expect(await events(acc, "msg_send_fail")).toHaveLength(1);
    } finally {
      await r.close();
    }
  });

  it("can come later, by the simulator's clock, with another fail_type", async () => {
    const acc = h.newAccount();
    h.sim.setCallbackUrl("app", "support", "http://127.0.0.1:9/nobody");
    await h.sim.kfCustomerSends(acc, "wmLate", text("hi"), { callback: false });
    h.sim.kfRejectCustomer(acc, "wmLate", { failType: WECOM_RULES.kf.failTypes.sessionExpired, delayMs: 5000 });
    expect((await send(acc, "wmLate", { msgid: "late_1" })).errcode).toBe(0);
    expect(await events(acc, "msg_send_fail")).toEqual([]);
    expect(h.sim.nextDueAt).toBe(h.clock.now() + 5000);
    expect(await h.sim.advance(4999)).toBe(0);
    expect(await events(acc, "msg_send_fail")).toEqual([]);
    expect(await h.sim.advance(1)).toBe(1);
    expect(await events(acc, "msg_send_fail")).toEqual([{ event_type: "msg_send_fail", open_kfid: acc, external_userid: "wmLate", fail_msgid: "late_1", fail_type: 4 }]);
  });
});
