/**
 * The WeCom simulator's AI-bot streams and response_url, as WeCom runs them in webhook mode: after
 * a stream answer WeCom polls by itself about once a second (on the simulator's clock) until an
 * answer finishes it or 6 minutes after the user's message, refusing later updates with 846608;
 * every answer is recorded with what the user sees (replace semantics); a response_url takes one
 * POST within an hour.
 */
import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeBotCallback, type WeComCrypto } from "../src/index.js";
import { DEFAULT_KF_ERRCODES, WECOM_RULES, WeComSimulator } from "../src/sim/wecom.js";
import { BOT, botCrypto, CORP, type Json, KF_APP, type Receiver, receiver, type SimHarness, startSim } from "./sim-wecom-helpers.js";

let h: SimHarness;

beforeAll(async () => {
  h = await startSim();
});

afterAll(async () => {
  await h.close();
});

/** What the fake bot answers the n-th refresh poll of a stream (1-based). */
type Script = (poll: number, streamId: string) => Json;

let streams = 0;

/** A bot behind a receiver: a stream (a new id each) with a placeholder for each user message, then `script` for each poll. */
async function fakeBot(script: Script, onPoll?: (poll: number) => void): Promise<Receiver & { polls: Json[] }> {
  const polls: Json[] = [];
  const answer = (crypto: WeComCrypto, reply: Json) => ({ status: 200, body: crypto.encryptJsonReply(JSON.stringify(reply)) });
  const r = await receiver(botCrypto(), (_n, got, crypto) => {
    const msg = JSON.parse(got.plaintext ?? "{}") as Json;
    if (msg.msgtype === "stream") {
      polls.push(msg);
      onPoll?.(polls.length);
      return answer(crypto, script(polls.length, (msg.stream as Json).id as string));
    }
    return answer(crypto, { msgtype: "stream", stream: { id: `st${++streams}`, finish: false, content: "正在思考…" } });
  });
  h.sim.setCallbackUrl("bot", BOT.botId, r.url);
  return Object.assign(r, { polls });
}

const stream = (id: string, content: string, finish = false, extra: Json = {}) => ({ msgtype: "stream", stream: { id, finish, content, ...extra } });

describe("stream polling", () => {
  it("polls about once a second by the simulator's clock until an answer has finish: true", async () => {
    const answers = ["您好", "您好，会议室", "您好，会议室A还有空"];
    const bot = await fakeBot((n, id) => stream(id, answers[n - 1] ?? "", n === answers.length));
    try {
      const sent = await h.sim.botUserSendsText(BOT.botId, "zhangsan", "会议室还有空吗");
      const s = sent.stream;
      if (s === undefined) throw new Error("no stream opened");
      expect(s).toMatchObject({ botId: BOT.botId, streamId: expect.stringMatching(/^st\d+$/), msgid: sent.msgid, userId: "zhangsan", status: "open", shown: "正在思考…" });
      expect(s.deadline - s.startedAt).toBe(WECOM_RULES.bot.pollWindowMs);
      expect(h.sim.nextDueAt).toBe(s.startedAt + WECOM_RULES.bot.pollIntervalMs);
      // nothing happens until the clock moves
      expect(await h.sim.runDue()).toBe(0);
      expect(bot.polls).toHaveLength(0);
      expect(await h.sim.advance(999)).toBe(0);
      expect(await h.sim.advance(1)).toBe(1);
      expect(s.shown).toBe("您好");
      await h.sim.advance(10_000);
      expect(bot.polls).toHaveLength(3);
      expect(s.status).toBe("finished");
      expect(s.polls).toBe(3);
      expect(s.shown).toBe("您好，会议室A还有空");
      expect(s.frames.map((f) => [f.source, f.at - s.startedAt, f.content, f.finish, f.accepted])).toEqual([
        ["reply", 0, "正在思考…", false, true],
        ["poll", 1000, "您好", false, true],
        ["poll", 2000, "您好，会议室", false, true],
        ["poll", 3000, "您好，会议室A还有空", true, true],
      ]);
      expect(h.sim.botStream(BOT.botId, s.streamId)).toBe(s);
      expect(h.sim.botStreams({ msgid: sent.msgid })).toEqual([s]);
      // each poll is a stream refresh of that stream, as the core decodes it
      for (const p of bot.polls) {
        expect(p).toMatchObject({ aibotid: BOT.botId, chattype: "single", from: { userid: "zhangsan" }, msgtype: "stream", stream: { id: s.streamId } });
        expect(decodeBotCallback(JSON.stringify(p)).content).toMatchObject({ type: "stream_refresh", streamId: s.streamId });
      }
    } finally {
      await bot.close();
    }
  });

  it("stops 6 minutes after the user's message; later updates are refused with 846608", async () => {
    const bot = await fakeBot((n, id) => stream(id, `第${n}秒`));
    try {
      const sent = await h.sim.botUserSendsText(BOT.botId, "lisi", "一直在想", { chatId: "wrkSFfCgAALFgnrSsWU38puiv4yvExuw" });
      const s = sent.stream as NonNullable<typeof sent.stream>;
      await h.sim.advance(WECOM_RULES.bot.pollWindowMs - 1000);
      expect(s.status).toBe("open");
      expect(s.polls).toBe(359);
      await h.sim.advance(1000);
      // the poll at exactly 6 minutes is the last; its answer still counts
      expect(s.polls).toBe(360);
      expect(s).toMatchObject({ status: "expired", errcode: WECOM_RULES.bot.expiredErrcode, shown: "第360秒" });
      expect(s.frames.at(-1)).toMatchObject({ at: s.deadline, accepted: true });
      await h.sim.advance(60_000);
      expect(bot.polls).toHaveLength(360);
      expect(h.sim.nextDueAt).toBeUndefined();
      expect(bot.polls[0]).toMatchObject({ chatid: "wrkSFfCgAALFgnrSsWU38puiv4yvExuw", chattype: "group" });
      // an update after the window is not shown
      const late = await h.sim.botPollStream(BOT.botId, s.streamId, "lisi");
      expect(late.delivered).toBe(true);
      expect(s.frames.at(-1)).toMatchObject({ source: "manual", accepted: false, errcode: 846608 });
      expect(s.shown).toBe("第360秒");
    } finally {
      await bot.close();
    }
  });

  it("an answer that comes back after the 6 minutes is refused with 846608 even though its poll was in time", async () => {
    let slowAt = 0;
    const bot = await fakeBot(
      (n, id) => stream(id, `v${n}`),
      (n) => {
        // the bot takes 1.5 s (simulated) to answer the poll before the deadline
        if (n === slowAt) h.clock.set(h.clock.now() + 1500);
      },
    );
    try {
      const sent = await h.sim.botUserSendsText(BOT.botId, "wangwu", "慢慢答");
      const s = sent.stream as NonNullable<typeof sent.stream>;
      slowAt = WECOM_RULES.bot.pollWindowMs / 1000 - 1; // the poll 1 s before the deadline
      await h.sim.advance(WECOM_RULES.bot.pollWindowMs + 10_000);
      expect(s.polls).toBe(slowAt);
      expect(s.status).toBe("expired");
      expect(s.frames.at(-1)).toMatchObject({ content: `v${slowAt}`, accepted: false, errcode: 846608 });
      expect(s.shown).toBe(`v${slowAt - 1}`);
    } finally {
      await bot.close();
    }
  });
});

describe("what WeCom does with each answer", () => {
  it("replaces the content shown, refuses content over 20480 bytes and images before finish, and takes one template card", async () => {
    const big = "流".repeat(6827); // 20481 bytes
    const png = Buffer.from("89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763f8ffff3f0005fe02fea7d6a4fc0000000049454e44ae426082", "hex");
    const image = { msgtype: "image", image: { base64: png.toString("base64"), md5: createHash("md5").update(png).digest("hex") } };
    const card = { card_type: "text_notice", main_title: { title: "工单" }, task_id: "task_1" };
    const script: Script = (n, id) =>
      [
        { msgtype: "stream_with_template_card", stream: { id, finish: false, content: "第一段" }, template_card: card },
        stream(id, big),
        stream(id, "第一段\n\n第二段", false, { msg_item: [image] }),
        { msgtype: "stream_with_template_card", stream: { id, finish: false, content: "第一段\n\n第二段" }, template_card: { ...card, task_id: "task_2" } },
        stream(id, "第一段\n\n第二段\n\n完", true, { msg_item: [image] }),
      ][Math.min(n, 5) - 1] as Json;
    const bot = await fakeBot(script);
    try {
      expect(Buffer.byteLength(big)).toBe(WECOM_RULES.bot.streamMaxBytes + 1);
      const sent = await h.sim.botUserSendsText(BOT.botId, "zhaoliu", "帮我开工单");
      const s = sent.stream as NonNullable<typeof sent.stream>;
      await h.sim.advance(10_000);
      expect(s.status).toBe("finished");
      expect(s.frames.slice(1).map((f) => [f.accepted, f.reason ?? ""])).toEqual([
        [true, ""],
        [false, "content is 20481 bytes, over 20480"],
        [false, "msg_item images are allowed only in the finishing answer (finish=true)"],
        [true, "template card ignored: one per message"],
        [true, ""],
      ]);
      expect(s.templateCards).toEqual([card]);
      expect(s.images).toEqual([image]);
      expect(s.shown).toBe("第一段\n\n第二段\n\n完");
      // never a piece twice, always in order: after the placeholder, each accepted content extends the one before
      const shown = s.frames.filter((f) => f.accepted && f.source === "poll").map((f) => f.content);
      for (let i = 1; i < shown.length; i++) expect((shown[i] as string).startsWith(shown[i - 1] as string)).toBe(true);
      // a finished stream takes nothing more
      await h.sim.botPollStream(BOT.botId, s.streamId, "zhaoliu");
      expect(s.frames.at(-1)).toMatchObject({ accepted: false, reason: "the stream already finished" });
    } finally {
      await bot.close();
    }
  });
});

describe("response_url", () => {
  /** A user message's response_url, read from the callback the bot received. */
  async function responseUrl(bot: Receiver, user: string): Promise<{ url: string; msgid: string }> {
    const sent = await h.sim.botUserSendsText(BOT.botId, user, "稍后回复我");
    const got = bot.received.map((r) => JSON.parse(r.plaintext ?? "{}") as Json).find((m) => m.msgid === sent.msgid);
    return { url: got?.response_url as string, msgid: sent.msgid };
  }
  const post = async (url: string, body: unknown) => (await (await fetch(url, { method: "POST", body: JSON.stringify(body) })).json()) as Json;
  const md = (content: string) => ({ msgtype: "markdown", markdown: { content } });

  it("takes one POST of markdown or a template card within an hour, and refuses a second or a late one", async () => {
    const bot = await fakeBot((_n, id) => stream(id, "", true));
    try {
      const a = await responseUrl(bot, "zhangsan");
      expect(a.url).toMatch(new RegExp(`^${h.sim.url}/cgi-bin/aibot/response\\?response_code=[0-9A-Za-z]+$`));
      expect((await post(a.url, { msgtype: "text", text: { content: "x" } })).errcode).toBe(40008);
      const tooLong = await post(a.url, md("长".repeat(6827)));
      expect(tooLong.errcode).toBe(DEFAULT_KF_ERRCODES.textTooLong);
      // refused attempts do not use it up
      expect(await post(a.url, md("长".repeat(6826) + "ab"))).toEqual({ errcode: 0, errmsg: "ok" });
      const second = await post(a.url, md("again"));
      expect(second.errcode).toBe(DEFAULT_KF_ERRCODES.responseUrlUsed);
      expect(second.errmsg).toMatch(/already used/);
      expect(h.sim.sent.filter((s) => s.api === "aibot/response" && s.body.msgid === a.msgid)).toHaveLength(1);
      // within the hour, to the millisecond
      const b = await responseUrl(bot, "lisi");
      const c = await responseUrl(bot, "wangwu");
      await h.sim.advance(WECOM_RULES.bot.responseUrl.ttlMs);
      expect((await post(b.url, { msgtype: "template_card", template_card: { card_type: "text_notice", main_title: { title: "已处理" } } })).errcode).toBe(0);
      await h.sim.advance(1);
      const late = await post(c.url, md("late"));
      expect(late.errcode).toBe(DEFAULT_KF_ERRCODES.responseUrlUsed);
      expect(late.errmsg).toMatch(/invalid or expired/);
      expect(h.sim.sent.filter((s) => s.api === "aibot/response").map((s) => s.body.msgid)).toEqual([a.msgid, b.msgid]);
    } finally {
      await bot.close();
    }
  });
});

describe("realtime mode", () => {
  it("polls by itself on the real clock (for the sandbox)", async () => {
    const sim = await WeComSimulator.start({ corpId: CORP, apps: [KF_APP], bots: [BOT], timers: "realtime", botPollIntervalMs: 20 });
    const r = await receiver(botCrypto(), (_n, got, crypto) => {
      const msg = JSON.parse(got.plaintext ?? "{}") as Json;
      const polls = r.received.filter((x) => (JSON.parse(x.plaintext ?? "{}") as Json).msgtype === "stream").length;
      const reply = msg.msgtype === "stream" ? stream("rt1", `poll ${polls}`, polls === 3) : stream("rt1", "…");
      return { status: 200, body: crypto.encryptJsonReply(JSON.stringify(reply)) };
    });
    try {
      sim.setCallbackUrl("bot", BOT.botId, r.url);
      const sent = await sim.botUserSendsText(BOT.botId, "zhangsan", "实时");
      await expect.poll(() => sent.stream?.status, { timeout: 5000 }).toBe("finished");
      expect(sent.stream?.polls).toBe(3);
      expect(sent.stream?.shown).toBe("poll 3");
    } finally {
      await sim.close();
      await r.close();
    }
  });
});
