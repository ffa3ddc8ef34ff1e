/**
 * AI-bot answers end to end (issue 7, AI bot): the WeCom simulator on a manual clock polls the
 * gateway's streams by itself, over loopback sockets, with a real SQLite store; agents' answers are
 * queued as `bot_reply` outbox entries and run with a BotSender by the test itself. The gateway and the simulators
 * share one SimClock, so every time rule (streamIdleSec, streamMaxSec, the response_url's hour) is
 * exercised by moving it, never by sleeping.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { HttpClient } from "../src/clients/http.js";
import { WeComApiError } from "../src/clients/wecom.js";
import { type Config, DEFAULT_BOT_TIMEOUT_TEXT, parseConfig } from "../src/config.js";
import { type RunningGateway, runGateway } from "../src/gateway/index.js";
import { BOT_PART_SEPARATOR, BotSender } from "../src/gateway/outbound/bot.js";
import type { BotJob, OmniNoticeJob, SendResult } from "../src/gateway/outbound/types.js";
import { silentLogger } from "../src/log.js";
import { OmniSimulator } from "../src/sim/omni.js";
import { SimClock, type WeComSimStream, WeComSimulator } from "../src/sim/wecom.js";
import type { OutboxEntry, OutboxInsert } from "../src/store/types.js";
import { botStreamId } from "../src/gateway/endpoints/bot.js";
import { utf8Length } from "../src/wecom/text-split.js";
import { AGENT, APP_AES, BOT_AES, CORP, eventually, freePort, stackConfig } from "./stack.js";

const BOT = "aibHELPER";
const USER = "zhangsan";
const ADDR = `bot:${BOT}:user:${USER}`;
/** The placeholder test/stack.ts configures. */
const PLACEHOLDER = "正在为您转接人工…";
const TIMEOUT_TEXT = DEFAULT_BOT_TIMEOUT_TEXT;
const SEP = BOT_PART_SEPARATOR;
const MAX = 20480;
/**
 * The test's bot_reply entries are due this far in the future (and claimed "then"): the gateway's
 * own delivery worker, which may run bot_reply entries too, never sees them due, so each runs
 * exactly once, with this test's BotSender, and its SendResult can be inspected.
 */
const HIDDEN_MS = 10 * 365 * 24 * 3600_000;

interface AgentOptions {
  tag?: Record<string, unknown>;
  msgType?: string;
  address?: string;
}

/** The simulators and a gateway sharing one manual clock, and a BotSender on the gateway's store. */
interface BotStack {
  clock: SimClock;
  wecom: WeComSimulator;
  omni: OmniSimulator;
  gw: RunningGateway;
  config: Config;
  sender: BotSender;
  /** Move the shared clock; WeCom's polls due on the way run, each at its own time. */
  advance(ms: number): Promise<number>;
  /** The user writes; the stream the gateway's answer opened. */
  user(text: string): Promise<WeComSimStream>;
  /** An agent's answer queued as a `bot_reply` entry and run with the BotSender, as the worker does. */
  agent(content: string, opts?: AgentOptions): Promise<SendResult>;
  /** Claim the next `bot_reply` entry (one the test queued), as the worker would. */
  claim(): Promise<OutboxEntry | undefined>;
  /** Stop the gateway and start a new one on the same SQLite file (and a new BotSender). */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

let stack: BotStack | undefined;

/** Start a stack for this test (stopped after it). */
async function boot(bot: Record<string, unknown> = {}): Promise<BotStack> {
  stack = await startBotStack(bot);
  return stack;
}

afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

async function startBotStack(bot: Record<string, unknown> = {}): Promise<BotStack> {
  // ahead of the wall clock: the store stamps inbound outbox entries with Date.now(), and the
  // gateway's worker (on this clock) must find them due
  const clock = new SimClock(Date.now() + 600_000);
  const dir = mkdtempSync(join(tmpdir(), "wb-bot-"));
  const omni = await OmniSimulator.start({ appId: "1001", secret: "omni-secret", now: clock.now });
  const wecom = await WeComSimulator.start({
    corpId: CORP,
    apps: [{ name: "support", agentId: AGENT, secret: "app-secret", token: "apptoken", encodingAESKey: APP_AES }],
    bots: [{ name: "helper", botId: BOT, token: "bottoken", encodingAESKey: BOT_AES }],
    clock,
    callbackTimeoutMs: 2000,
    retryIntervalMs: 50,
  });
  const port = await freePort();
  const raw = stackConfig(dir, port, wecom.url, omni.url);
  raw.wecom.apps[0].kf = false;
  Object.assign(raw.wecom.bots[0], bot);
  const config = parseConfig(raw);
  wecom.setCallbackUrl("bot", "helper", `http://127.0.0.1:${port}/wecom/bot/helper`);
  omni.setAppUrl(`http://127.0.0.1:${port}`, "/qmtapi");
  const http = new HttpClient({ timeoutMs: 2000 });
  const senderOf = (gw: RunningGateway) =>
    new BotSender({ config, store: gw.store, wecom: gw.gateway.wecom, http, log: silentLogger, tenant: CORP, now: clock.now, credentials: () => undefined, onWeComResult: (api, errcode) => gw.gateway.onWeComResult(api, errcode) });
  const gw = await runGateway(config, { now: clock.now, log: silentLogger });
  const s: BotStack = {
    clock,
    wecom,
    omni,
    gw,
    config,
    sender: senderOf(gw),
    advance: (ms) => wecom.advance(ms),
    async user(text) {
      const r = await wecom.botUserSendsText(BOT, USER, text);
      if (r.stream === undefined) throw new Error(`no stream opened (HTTP ${r.status}, ${r.replyError ?? "no reply error"})`);
      return r.stream;
    },
    async agent(content, opts = {}) {
      const job: BotJob = { op: "message", body: { ToUserId: opts.address ?? ADDR, ServiceId: "svc-1", MsgType: opts.msgType ?? "text", Content: content } };
      if (opts.tag !== undefined) job.body.Tag = opts.tag;
      const store = s.gw.store;
      const now = clock.now();
      const entries: OutboxInsert[] = [{ kind: "bot_reply", conversationId: job.body.ToUserId, payload: job, notBefore: now + HIDDEN_MS }];
      const queued = await store.acceptOutbound({ tenant: CORP, keys: [], entries, now });
      if (queued.outcome !== "queued") throw new Error(`not queued: ${queued.outcome}`);
      // the claim below runs at a far-future time, which would end the leases of the gateway's own
      // deliveries in flight (they would run again): let them finish first
      await eventually(async () => (await store.outboxCounts()).inflight === 0, 5000, "the gateway's deliveries in flight");
      const entry = await s.claim();
      if (entry === undefined || entry.id !== queued.ids[0]) throw new Error("the bot_reply entry was not claimed");
      let r: SendResult;
      try {
        r = await s.sender.send(entry);
      } catch (e) {
        await store.finishOutbox(entry.id, { state: "pending", nextAttemptAt: now + HIDDEN_MS, error: String(e) }, clock.now());
        throw e;
      }
      const followUps = r.state !== "later" && r.followUps !== undefined ? { tenant: CORP, messageSeq: null, entries: r.followUps } : undefined;
      if (r.state === "done") await store.finishOutbox(entry.id, { state: "done" }, clock.now(), followUps);
      else if (r.state === "refused") await store.finishOutbox(entry.id, { state: "refused", error: r.error, errcode: r.errcode }, clock.now(), followUps);
      else await store.finishOutbox(entry.id, { state: "pending", nextAttemptAt: r.at, error: r.reason, countAttempt: false }, clock.now());
      return r;
    },
    async claim() {
      const [entry] = await s.gw.store.claimOutbox(["bot_reply"], clock.now() + HIDDEN_MS, 1, 60_000);
      return entry;
    },
    async restart() {
      await s.gw.stop();
      s.gw = await runGateway(config, { now: clock.now, log: silentLogger });
      s.sender = senderOf(s.gw);
    },
    async stop() {
      await s.gw.stop();
      http.close();
      await wecom.close();
      await omni.close();
    },
  };
  return s;
}

/** The frames' contents with consecutive repeats folded: what the user saw change, in order. */
function shownSequence(s: WeComSimStream): string[] {
  const out: string[] = [];
  for (const f of s.frames) if (f.accepted && out[out.length - 1] !== f.content) out.push(f.content);
  return out;
}

const last = (s: WeComSimStream) => s.frames[s.frames.length - 1];

/** The aibot/response calls WeCom accepted (what reached the user through response_urls). */
const responseUrlPosts = (b: BotStack) => b.wecom.sent.filter((x) => x.api === "aibot/response").map((x) => x.body);

/** The notices among a result's follow-ups. */
function notices(r: SendResult): OmniNoticeJob["notice"][] {
  const ups: OutboxInsert[] = r.state === "later" ? [] : (r.followUps ?? []);
  return ups.map((u) => (u.payload as OmniNoticeJob).notice);
}

describe("bot streams: what WeCom's polls get", () => {
  it("the placeholder until an agent answers, then the agent's text (the placeholder never comes back)", async () => {
    const b = await boot();
    const s = await b.user("我的订单还没到");
    expect(s.frames[0]).toMatchObject({ source: "reply", content: PLACEHOLDER, finish: false, accepted: true });
    await b.advance(3000);
    expect(s.frames.map((f) => [f.source, f.content, f.finish])).toEqual([
      ["reply", PLACEHOLDER, false],
      ["poll", PLACEHOLDER, false],
      ["poll", PLACEHOLDER, false],
      ["poll", PLACEHOLDER, false],
    ]);
    expect(await b.agent("您好，我帮您查一下")).toEqual({ state: "done" });
    await b.advance(3000);
    expect(s.frames.slice(4).map((f) => [f.content, f.finish])).toEqual([
      ["您好，我帮您查一下", false],
      ["您好，我帮您查一下", false],
      ["您好，我帮您查一下", false],
    ]);
    expect(s.status).toBe("open");
    expect(s.shown).toBe("您好，我帮您查一下");
  });

  it("replace semantics: each poll gets the whole content so far, agent messages joined by a blank line, in order, none twice", async () => {
    const b = await boot();
    const s = await b.user("帮我查订单");
    const texts = ["第一条：您好", "第二条：**订单** 12345 已发货", "第三条：预计明天送达 🚚👨‍👩‍👧", "第四条：还有别的问题吗？"];
    await b.agent(texts[0] as string);
    await b.advance(1000);
    expect(last(s)?.content).toBe(texts[0]);
    await b.agent(texts[1] as string);
    await b.advance(2000);
    expect(last(s)?.content).toBe(texts.slice(0, 2).join(SEP));
    // two messages between two polls: both, in order
    await b.agent(texts[2] as string);
    await b.agent(texts[3] as string);
    await b.advance(1000);
    const all = texts.join(SEP);
    expect(last(s)?.content).toBe(all);
    expect(shownSequence(s)).toEqual([PLACEHOLDER, texts[0], texts.slice(0, 2).join(SEP), all]);
    for (const f of s.frames) {
      // never a piece twice: every frame is the agent texts in order, each once
      if (f.content === PLACEHOLDER) continue;
      const pieces = f.content.split(SEP);
      expect(pieces).toEqual(texts.slice(0, pieces.length));
    }
    expect(s.frames.every((f) => f.accepted)).toBe(true);
  });

  it("finishes on an agent message with Tag.finish; WeCom stops polling; a repeated refresh gets the same final content", async () => {
    const b = await boot();
    const s = await b.user("谢谢");
    await b.agent("不客气");
    await b.agent("祝您生活愉快", { tag: { finish: true } });
    await b.advance(1000);
    const final = ["不客气", "祝您生活愉快"].join(SEP);
    expect(last(s)).toMatchObject({ source: "poll", content: final, finish: true, accepted: true });
    expect(s.status).toBe("finished");
    const polls = s.polls;
    await b.advance(10_000);
    expect(s.polls).toBe(polls);
    const again = await b.wecom.botPollStream(BOT, s.streamId, USER);
    expect(again.reply).toEqual({ msgtype: "stream", stream: { id: s.streamId, finish: true, content: final } });
    const third = await b.wecom.botPollStream(BOT, s.streamId, USER);
    expect(third.reply).toEqual(again.reply);
  });

  it("finishes streamIdleSec after the last agent message", async () => {
    const b = await boot();
    const s = await b.user("在吗");
    await b.advance(2000);
    await b.agent("在的");
    const agentAt = b.clock.now();
    await b.advance(14_000);
    expect(last(s)).toMatchObject({ at: agentAt + 14_000, content: "在的", finish: false });
    await b.advance(1000);
    expect(last(s)).toMatchObject({ at: agentAt + 15_000, content: "在的", finish: true });
    expect(s.status).toBe("finished");
  });

  it("a later agent message restarts the idle time", async () => {
    const b = await boot({ streamIdleSec: 5 });
    const s = await b.user("在吗");
    await b.agent("在的");
    await b.advance(4000);
    await b.agent("请讲");
    await b.advance(4000);
    expect(s.status).toBe("open");
    await b.advance(1000);
    expect(last(s)).toMatchObject({ content: ["在的", "请讲"].join(SEP), finish: true });
    expect(last(s)?.at).toBe(s.startedAt + 9000);
  });

  it("with no agent answer, finishes with timeoutText streamMaxSec after the user's message (before WeCom gives up)", async () => {
    const b = await boot();
    const s = await b.user("有人吗");
    await b.advance(329_000);
    expect(s.status).toBe("open");
    expect(new Set(s.frames.map((f) => f.content))).toEqual(new Set([PLACEHOLDER]));
    expect(s.frames.some((f) => f.finish)).toBe(false);
    await b.advance(1000);
    expect(last(s)).toMatchObject({ at: s.startedAt + 330_000, content: TIMEOUT_TEXT, finish: true, accepted: true });
    expect(s.status).toBe("finished");
  });

  it("streamMaxSec ends a stream that keeps getting agent messages, with their content", async () => {
    const b = await boot({ streamMaxSec: 30, streamIdleSec: 10 });
    const s = await b.user("讲个长故事");
    const texts: string[] = [];
    for (let i = 0; i < 5; i++) {
      texts.push(`第${i + 1}段`);
      await b.agent(texts[i] as string);
      await b.advance(6000);
    }
    expect(s.status).toBe("finished");
    const fin = s.frames.find((f) => f.finish);
    expect(fin).toMatchObject({ at: s.startedAt + 30_000, content: texts.join(SEP) });
    // the agent's next message goes through the response_url instead
    expect(await b.agent("第6段")).toEqual({ state: "done" });
    expect(responseUrlPosts(b)).toEqual([expect.objectContaining({ msgid: s.msgid, msgtype: "markdown", markdown: { content: "第6段" } })]);
  });

  it("a refresh of an unknown stream id is answered finished with timeoutText at once", async () => {
    const b = await boot();
    const r = await b.wecom.botPollStream(BOT, "s-not-ours", USER);
    expect(r.reply).toEqual({ msgtype: "stream", stream: { id: "s-not-ours", finish: true, content: TIMEOUT_TEXT } });
  });

  it("WeCom's retry of the user's callback gets the same stream as it is, never a reset one", async () => {
    const b = await boot();
    const message = { msgid: "bot-msg-retry-1", aibotid: BOT, chattype: "single", from: { userid: USER }, msgtype: "text", text: { content: "你好" } };
    const first = await b.wecom.botSends(BOT, message);
    const id = botStreamId(BOT, "bot-msg-retry-1");
    expect(first.reply).toEqual({ msgtype: "stream", stream: { id, finish: false, content: PLACEHOLDER } });
    await b.agent("您好");
    await b.advance(3000);
    const retry = await b.wecom.botSends(BOT, message);
    expect(retry.reply).toEqual({ msgtype: "stream", stream: { id, finish: false, content: "您好" } });
    // the stream keeps its start: it still ends streamIdleSec after the agent's message
    await b.advance(12_000);
    expect(b.wecom.botStream(BOT, id)?.status).toBe("finished");
    // the message was stored once
    const messages = await b.gw.store.listMessages({ conversationId: ADDR }, { limit: 10 });
    expect(messages).toHaveLength(1);
  });

  it("the user's next message supersedes the open stream: it finishes, the agent's answer goes into the new one", async () => {
    const b = await boot();
    const s1 = await b.user("你好");
    await b.advance(1000);
    const s2 = await b.user("我想退货");
    await b.agent("好的，请提供订单号");
    await b.advance(1000);
    expect(s1.status).toBe("finished");
    expect(last(s1)).toMatchObject({ content: TIMEOUT_TEXT, finish: true });
    expect(last(s2)).toMatchObject({ content: "好的，请提供订单号", finish: false });
  });

  it("a group chat's stream is its own conversation: agents answer it by the group's address", async () => {
    const b = await boot();
    const r = await b.wecom.botUserSendsText(BOT, "lisi", "@机器人 群里问一下", { chatId: "wrkGROUP1" });
    const s = r.stream;
    if (s === undefined) throw new Error("no stream opened");
    expect(notices(await b.agent("单聊的答复")).map((n) => n.Content)).toEqual(["send_waiting"]);
    expect(await b.agent("群里的答复", { address: `bot:${BOT}:group:wrkGROUP1` })).toEqual({ state: "done" });
    await b.advance(1000);
    expect(last(s)).toMatchObject({ content: "群里的答复", finish: false });
  });

  it("stream state survives a gateway restart: a refresh after it still gets the full content, and more is appended", async () => {
    const b = await boot();
    const s = await b.user("查快递");
    await b.agent("已为您查询");
    await b.agent("快递在路上");
    await b.advance(1000);
    const before = ["已为您查询", "快递在路上"].join(SEP);
    expect(last(s)?.content).toBe(before);
    await b.restart();
    await b.advance(1000);
    expect(last(s)).toMatchObject({ content: before, finish: false, accepted: true });
    await b.agent("预计明天到", { tag: { finish: true } });
    await b.advance(1000);
    expect(last(s)).toMatchObject({ content: [before, "预计明天到"].join(SEP), finish: true });
    expect(shownSequence(s)).toEqual([PLACEHOLDER, before, [before, "预计明天到"].join(SEP)]);
  });
});

describe("bot answers after the stream: response_url once, then waiting", () => {
  it("a late message goes through the message's response_url once; the next waits (send_waiting) and opens the next stream", async () => {
    const b = await boot();
    const s = await b.user("营业时间？");
    await b.agent("9:00-18:00", { tag: { finish: true } });
    await b.advance(1000);
    expect(s.status).toBe("finished");

    expect(await b.agent("周末休息")).toEqual({ state: "done" });
    expect(responseUrlPosts(b)).toEqual([{ response_code: expect.any(String), bot_id: BOT, msgid: s.msgid, msgtype: "markdown", markdown: { content: "周末休息" } }]);

    const waiting = await b.agent("节假日另行通知", { tag: { msgid: "agent-msg-7" } });
    expect(waiting.state).toBe("done");
    expect(notices(waiting)).toEqual([
      { FromUserId: ADDR, ServiceId: "svc-1", MsgType: "event", Content: "send_waiting", Tag: { errcode: 0, errmsg: expect.any(String), reason: expect.stringContaining("next message"), ref: "agent-msg-7" } },
    ]);
    const third = await b.agent("有问题随时联系");
    expect(notices(third)).toEqual([expect.objectContaining({ Content: "send_waiting", Tag: expect.objectContaining({ ref: "text: 有问题随时联系" }) })]);
    // the response_url was used once, and only once
    expect(responseUrlPosts(b)).toHaveLength(1);
    expect(b.wecom.requests.filter((q) => q.path.endsWith("/aibot/response"))).toHaveLength(1);
    // and counted like every WeCom answer
    const metrics = await (await fetch(`${b.gw.url}/metrics`)).text();
    expect(metrics).toContain('wecom_bridge_wecom_errcodes_total{api="aibot/response",errcode="0"} 1');
    // the stream stays as it finished
    expect(s.frames.filter((f) => f.accepted).map((f) => f.content).pop()).toBe("9:00-18:00");

    // the user writes again: the waiting messages are the new stream's first content, in order
    const next = await b.user("好的");
    const waited = ["节假日另行通知", "有问题随时联系"].join(SEP);
    expect(next.frames[0]).toMatchObject({ source: "reply", content: waited, finish: false });
    await b.agent("还有什么可以帮您？");
    await b.advance(1000);
    expect(last(next)?.content).toBe([waited, "还有什么可以帮您？"].join(SEP));
    // and nothing waits any more: a message after this stream uses its own response_url
    await b.advance(20_000);
    expect(next.status).toBe("finished");
    expect(await b.agent("再见")).toEqual({ state: "done" });
    expect(responseUrlPosts(b).map((p) => p.msgid)).toEqual([s.msgid, next.msgid]);
  });

  it("the send_waiting notice reaches the 全媒体 through the outbox", async () => {
    const b = await boot();
    await b.user("hi");
    await b.omni.waitFor(1);
    await b.agent("答", { tag: { finish: true } });
    await b.advance(1000);
    await b.agent("补充一");
    await b.agent("补充二");
    b.gw.gateway.delivery.notify();
    const got = await b.omni.waitFor(2);
    expect(got[1]?.body).toMatchObject({ FromUserId: ADDR, MsgType: "event", Content: "send_waiting", Tag: { errcode: 0, ref: "text: 补充二" } });
  });

  it("an agent message with no stream yet waits for the user's first message", async () => {
    const b = await boot();
    const r = await b.agent("您好，您的工单已处理");
    expect(notices(r).map((n) => n.Content)).toEqual(["send_waiting"]);
    const s = await b.user("收到");
    expect(s.frames[0]).toMatchObject({ content: "您好，您的工单已处理", finish: false });
  });

  it("a response_url refused by WeCom (final errcode): the message waits, the 全媒体 is told with WeCom's errcode", async () => {
    const b = await boot();
    const s = await b.user("问");
    await b.agent("答", { tag: { finish: true } });
    await b.advance(1000);
    b.wecom.failNext("aibot/response", 40058);
    const r = await b.agent("迟到的补充");
    expect(r.state).toBe("done");
    expect(notices(r)).toEqual([expect.objectContaining({ Content: "send_waiting", Tag: expect.objectContaining({ errcode: 40058, ref: "text: 迟到的补充" }) })]);
    // the response_url is not tried again
    await b.agent("再补充");
    expect(b.wecom.requests.filter((q) => q.path.endsWith("/aibot/response"))).toHaveLength(1);
    // and counted like every WeCom answer
    const metrics = await (await fetch(`${b.gw.url}/metrics`)).text();
    expect(metrics).toContain('wecom_bridge_wecom_errcodes_total{api="aibot/response",errcode="40058"} 1');
    expect(responseUrlPosts(b)).toEqual([]);
    const next = await b.user("嗯");
    expect(next.frames[0]?.content).toBe(["迟到的补充", "再补充"].join(SEP));
    expect(s.status).toBe("finished");
  });

  it("a transient response_url failure (HTTP 502) is thrown for the worker to retry; the retry posts it once", async () => {
    const b = await boot();
    await b.user("问");
    await b.agent("答", { tag: { finish: true } });
    await b.advance(1000);
    b.wecom.setHttpFailure("aibot/response", 502);
    const failure = await b.agent("补充").then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(failure).toBeInstanceOf(WeComApiError);
    expect((failure as WeComApiError).kind).toBe("transient");
    expect(String((failure as Error).message)).not.toContain("response_code");
    expect(responseUrlPosts(b)).toEqual([]);
    // the worker's retry of the same entry
    const entry = await b.claim();
    if (entry === undefined) throw new Error("the entry is not pending");
    expect(await b.sender.send(entry)).toEqual({ state: "done" });
    expect(responseUrlPosts(b)).toEqual([expect.objectContaining({ markdown: { content: "补充" } })]);
    // a crash before the result was recorded: the entry runs again and sends nothing twice
    expect(await b.sender.send(entry)).toEqual({ state: "done" });
    expect(b.wecom.requests.filter((q) => q.path.endsWith("/aibot/response"))).toHaveLength(2);
    expect(responseUrlPosts(b)).toHaveLength(1);
  });

  it("the response_url is not used an hour after the user's message: the message waits", async () => {
    const b = await boot();
    await b.user("问");
    await b.agent("答", { tag: { finish: true } });
    await b.advance(1000);
    await b.advance(3600_000);
    const r = await b.agent("太晚的补充");
    expect(notices(r).map((n) => n.Content)).toEqual(["send_waiting"]);
    expect(b.wecom.requests.filter((q) => q.path.endsWith("/aibot/response"))).toHaveLength(0);
  });
});

describe("bot answers over 20480 bytes", () => {
  /** A text of `n` bytes of 3-byte characters, numbered so that a piece out of place shows. */
  const big = (label: string, chars: number) => `${label}:` + Array.from({ length: chars }, (_, i) => "汉字测试内容"[i % 6]).join("");

  it("fill the stream, finish it, and continue through the response_url", async () => {
    const b = await boot();
    const s = await b.user("发我说明书");
    const a = big("A", 4000); // ~12 KB
    const c = big("B", 4000); // ~12 KB: does not fit after A
    await b.agent(a);
    expect(await b.agent(c)).toEqual({ state: "done" });
    await b.advance(1000);
    const fin = last(s);
    expect(fin?.finish).toBe(true);
    expect(fin?.accepted).toBe(true);
    const shown = fin?.content ?? "";
    expect(utf8Length(shown)).toBeLessThanOrEqual(MAX);
    expect(utf8Length(shown)).toBeGreaterThan(MAX - 8);
    expect(shown.startsWith(a + SEP)).toBe(true);
    const posts = responseUrlPosts(b);
    expect(posts).toHaveLength(1);
    const rest = (posts[0]?.markdown as { content?: string } | undefined)?.content ?? "";
    // the stream's piece of B and the response_url's rest are B, whole, nothing twice
    expect(shown.slice(a.length + SEP.length) + rest).toBe(c);
    expect(s.frames.every((f) => f.accepted)).toBe(true);
  });

  it("with no response_url, the rest waits and opens the next stream", async () => {
    const b = await boot();
    // a message without response_url (an old client's callback)
    const first = await b.wecom.botSends(BOT, { msgid: "no-url-1", aibotid: BOT, chattype: "single", from: { userid: USER }, msgtype: "text", text: { content: "长文" } });
    expect(first.status).toBe(200);
    const id = botStreamId(BOT, "no-url-1");
    const text = big("C", 9000); // ~27 KB
    const r = await b.agent(text);
    expect(notices(r).map((n) => n.Content)).toEqual(["send_waiting"]);
    await b.advance(1000);
    const s = b.wecom.botStream(BOT, id);
    const piece = s?.shown ?? "";
    expect(s?.status).toBe("finished");
    expect(utf8Length(piece)).toBeLessThanOrEqual(MAX);
    const next = await b.user("继续");
    expect(piece + (next.frames[0]?.content ?? "")).toBe(text);
  });
});

describe("bot template cards", () => {
  const card = { card_type: "text_notice", main_title: { title: "订单已发货", desc: "顺丰 SF123" }, task_id: "task-1" };

  it("Tag.template_card is passed through once (stream_with_template_card)", async () => {
    const b = await boot();
    const s = await b.user("订单状态");
    await b.agent("请查看卡片", { tag: { template_card: card } });
    await b.advance(5000);
    const withCard = s.frames.filter((f) => f.templateCard !== undefined);
    expect(withCard).toHaveLength(1);
    expect(withCard[0]).toMatchObject({ content: "请查看卡片", accepted: true, templateCard: card });
    expect(s.templateCards).toEqual([card]);
    expect(s.frames.every((f) => f.reason === undefined)).toBe(true);
  });

  it("a template_card_event from the user reaches the 全媒体 as an event message", async () => {
    const b = await boot();
    const r = await b.wecom.botSends(BOT, {
      msgid: "card-event-1",
      create_time: Math.floor(b.clock.now() / 1000),
      aibotid: BOT,
      from: { userid: USER },
      chattype: "single",
      msgtype: "event",
      event: { eventtype: "template_card_event", template_card_event: { card_type: "button_interaction", event_key: "confirm", task_id: "task-1" } },
    });
    expect(r.status).toBe(200);
    const [got] = await b.omni.waitFor(1);
    expect(got?.body).toMatchObject({ FromUserId: ADDR, MsgType: "event", Content: "template_card_event" });
  });
});

describe("bot_reply refusals", () => {
  it("an unknown bot is refused (errcode 0) with a send_failed notice", async () => {
    const b = await boot();
    const r = await b.agent("你好", { address: "bot:aibNOBODY:user:lisi" });
    expect(r).toMatchObject({ state: "refused", errcode: 0 });
    expect(notices(r)).toEqual([expect.objectContaining({ FromUserId: "bot:aibNOBODY:user:lisi", Content: "send_failed", Tag: expect.objectContaining({ errcode: 0, ref: "text: 你好" }) })]);
  });
});
