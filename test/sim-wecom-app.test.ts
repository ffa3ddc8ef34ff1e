/**
 * The WeCom simulator's message/send rules, with the clock moved: recipients (invaliduser, 81013),
 * text and markdown cut at 2048 bytes, enable_duplicate_check within and after its interval, and
 * the silent drop of more than 30 messages a minute or 1000 an hour to one member.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WECOM_RULES } from "../src/sim/wecom.js";
import { type Json, OTHER_APP, type SimHarness, startSim } from "./sim-wecom-helpers.js";

let h: SimHarness;
let token: string;

beforeAll(async () => {
  h = await startSim({ tokenTtlSec: 7 * 24 * 3600 });
  token = await h.token(OTHER_APP.secret);
});

afterAll(async () => {
  await h.close();
});

/** message/send as the other app (agentid added). */
const send = (body: Json) => h.call(`message/send?access_token=${token}`, { agentid: OTHER_APP.agentId, ...body });
const textTo = (touser: string, content: string, extra: Json = {}) => send({ touser, msgtype: "text", text: { content }, ...extra });
const last = () => h.sim.sent.at(-1);

describe("recipients", () => {
  it("lists members outside the app in invaliduser (lower case), and answers 81013 when nobody valid is left", async () => {
    const ok = await textTo("ZhangSan|Ghost|lisi", "通知");
    expect(ok).toMatchObject({ errcode: 0, errmsg: "ok", invaliduser: "ghost" });
    expect(last()).toMatchObject({
      api: "message/send",
      msgid: ok.msgid,
      delivered: true,
      recipients: [
        { userid: "zhangsan", delivered: true },
        { userid: "lisi", delivered: true },
      ],
    });
    const none = await textTo("ghost|nobody", "x");
    expect(none.errcode).toBe(81013);
    expect(none.errmsg).toMatch(/^user & party & tag all invalid/);
    expect(last()?.msgid).toBe(ok.msgid); // nothing recorded
    // a party still receives it
    expect((await send({ touser: "ghost", toparty: "2", msgtype: "text", text: { content: "x" } })).errcode).toBe(0);
    const all = await textTo("@all", "全员通知");
    expect(all.invaliduser).toBe("");
    expect(last()?.recipients?.map((r) => r.userid)).toEqual(OTHER_APP.members);
  });
});

describe("text and markdown length", () => {
  it("delivers 2048 bytes as they are and cuts 2049 at 2048, never inside a character", async () => {
    const exact = `${"好".repeat(682)}ab`;
    expect(Buffer.byteLength(exact)).toBe(WECOM_RULES.app.textMaxBytes);
    expect((await textTo("lisi", exact)).errcode).toBe(0);
    expect(last()).toMatchObject({ shown: exact, delivered: true });
    expect(last()?.truncated).toBeUndefined();
    expect((await textTo("lisi", `${exact}c`)).errcode).toBe(0);
    expect(last()).toMatchObject({ shown: exact, truncated: true });
    // 683 characters of 3 bytes: the last one does not fit whole
    expect((await textTo("lisi", "好".repeat(683))).errcode).toBe(0);
    expect(last()?.shown).toBe("好".repeat(682));
    const md = await send({ touser: "lisi", msgtype: "markdown", markdown: { content: `**${"长".repeat(700)}**` } });
    expect(md.errcode).toBe(0);
    expect(last()).toMatchObject({ truncated: true, shown: `**${"长".repeat(682)}` });
  });
});

describe("enable_duplicate_check", () => {
  it("drops the same request within 1800 s by default (answered ok, same msgid), and delivers it again after", async () => {
    const body = { touser: "wangwu", msgtype: "text", text: { content: "审批已通过" }, enable_duplicate_check: 1 };
    const first = await send(body);
    expect(last()).toMatchObject({ delivered: true, msgid: first.msgid });
    // the same content with its keys in another order is the same request
    await h.sim.advance(WECOM_RULES.app.duplicateCheck.defaultIntervalMs - 1);
    const repeat = await send({ enable_duplicate_check: 1, text: { content: "审批已通过" }, msgtype: "text", touser: "wangwu" });
    expect(repeat).toEqual({ errcode: 0, errmsg: "ok", invaliduser: "", msgid: first.msgid });
    expect(last()).toMatchObject({ delivered: false, dropped: "duplicate", recipients: [{ userid: "wangwu", delivered: false, dropped: "duplicate" }] });
    // other content is another message
    await send({ ...body, text: { content: "审批已驳回" } });
    expect(last()?.delivered).toBe(true);
    await h.sim.advance(1);
    const after = await send(body);
    expect(after.msgid).not.toBe(first.msgid);
    expect(last()?.delivered).toBe(true);
  });

  it("uses duplicate_check_interval; without enable_duplicate_check nothing is dropped", async () => {
    const body = { touser: "wangwu", msgtype: "text", text: { content: "会议改到三点" }, enable_duplicate_check: 1, duplicate_check_interval: 60 };
    await send(body);
    await h.sim.advance(59_999);
    await send(body);
    expect(last()?.dropped).toBe("duplicate");
    await h.sim.advance(1);
    await send(body);
    expect(last()?.delivered).toBe(true);
    const plain = { touser: "wangwu", msgtype: "text", text: { content: "无重复检查" } };
    await send(plain);
    await send(plain);
    expect(h.sim.sent.slice(-2).map((s) => s.delivered)).toEqual([true, true]);
    expect((await send({ ...body, duplicate_check_interval: 4 * 3600 + 1 })).errcode).toBe(40058);
    expect((await send({ ...body, enable_duplicate_check: 2 })).errcode).toBe(40058);
  });
});

describe("pacing", () => {
  it("drops the 31st message within a minute to one member, silently; the next minute it is delivered", async () => {
    await h.sim.advance(3600_000); // a fresh hour for the members used here
    const n = WECOM_RULES.app.perMemberPerMinute;
    for (let i = 1; i <= n; i++) {
      expect((await textTo("zhangsan", `第${i}条`)).errcode).toBe(0);
      expect(last()?.delivered).toBe(true);
    }
    const over = await textTo("zhangsan", "第31条");
    expect(over).toMatchObject({ errcode: 0, errmsg: "ok" });
    expect(last()).toMatchObject({ delivered: false, dropped: "per_minute", recipients: [{ userid: "zhangsan", delivered: false, dropped: "per_minute" }] });
    // one member over the limit does not hold back another
    await textTo("zhangsan|lisi", "两人");
    expect(last()).toMatchObject({
      delivered: true,
      recipients: [
        { userid: "zhangsan", delivered: false, dropped: "per_minute" },
        { userid: "lisi", delivered: true },
      ],
    });
    await h.sim.advance(59_999);
    await textTo("zhangsan", "还是这一分钟");
    expect(last()?.dropped).toBe("per_minute");
    await h.sim.advance(1);
    await textTo("zhangsan", "下一分钟");
    expect(last()?.delivered).toBe(true);
  });

  it("drops the 1001st message within an hour to one member, even at 30 a minute", async () => {
    await h.sim.advance(3600_000);
    const perMinute = WECOM_RULES.app.perMemberPerMinute;
    const perHour = WECOM_RULES.app.perMemberPerHour;
    let delivered = 0;
    while (delivered < perHour) {
      for (let i = 0; i < perMinute && delivered < perHour; i++) {
        await textTo("wangwu", `m${delivered}`);
        expect(last()?.delivered).toBe(true);
        delivered++;
      }
      await h.sim.advance(60_000);
    }
    const firstAt = h.sim.sent.filter((s) => s.api === "message/send").at(-perHour)?.at as number;
    expect(h.clock.now() - firstAt).toBeLessThan(3600_000);
    await textTo("wangwu", "one too many");
    expect(last()).toMatchObject({ delivered: false, dropped: "per_hour" });
  });
});
