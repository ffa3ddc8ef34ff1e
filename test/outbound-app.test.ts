/**
 * AppSender against the WeCom simulator (message/send with WeCom's rules: 2048-byte truncation,
 * duplicate check, 30/min and 1000/h per member dropped silently, 81013) and a loopback file server
 * for the agent's media: long texts split on grapheme boundaries and delivered whole and in order;
 * media both ways byte for byte; pacing that waits instead of losing; refusals reported to the
 * 全媒体; retries that deliver each part once.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { AgentMediaError } from "../src/clients/agent-media.js";
import { HttpClient } from "../src/clients/http.js";
import { WeComApiError, WeComClient, type WeComCredentials } from "../src/clients/wecom.js";
import { parseConfig } from "../src/config.js";
import { APP_DUPLICATE_CHECK_SEC, APP_PACE_MARGIN_MS, AppSender, nextPaceSlot } from "../src/gateway/outbound/app.js";
import type { AgentMessageJob, OmniNoticeJob, OutboundContext, SendResult } from "../src/gateway/outbound/types.js";
import { silentLogger } from "../src/log.js";
import type { OmniFromBody } from "../src/omni/index.js";
import { SimClock, type WeComSimSent, WeComSimulator } from "../src/sim/wecom.js";
import type { SqliteStore } from "../src/store/sqlite/index.js";
import type { OutboxEntry, Store } from "../src/store/types.js";
import { splitUtf8, utf8Length } from "../src/wecom/text-split.js";
import { failureOf } from "./helpers.js";
import { aesKey, CORP, START } from "./sim-wecom-helpers.js";
import { closeAll, openStore } from "./store-helpers.js";
import { closeTestServers, serve, type TestServer } from "./test-server.js";

const APP = {
  agentId: 1000007,
  secret: "ops-app-secret-0123456789",
  token: "opsToken",
  encodingAESKey: aesKey(),
  members: ["zhangsan", "lisi", "wangwu", "zhaoliu", "sunqi", "zhouba", "wujiu", "zhengshi", "pacer", "hourly", "retry", "halfway", "crash", "same"],
};
const CREDS: WeComCredentials = { corpId: CORP, secret: APP.secret };
const MINUTE = 60_000;
const HOUR = 3600_000;

const address = (user: string) => `app:${CORP}:${APP.agentId}:${user}`;

let clock: SimClock;
let sim: WeComSimulator;
let store: SqliteStore;
let http: HttpClient;
let dir: string;
let agent: TestServer;
let files: Map<string, Buffer>;
let nextId = 1;

beforeAll(async () => {
  clock = new SimClock(START);
  sim = await WeComSimulator.start({ corpId: CORP, apps: [APP], clock, tokenTtlSec: 30 * 24 * 3600 });
  store = await openStore(undefined, true);
  http = new HttpClient({ timeoutMs: 5000 });
  dir = mkdtempSync(join(tmpdir(), "outbound-app-"));
});

afterAll(async () => {
  http.close();
  await sim.close();
  await closeAll();
  rmSync(dir, { recursive: true, force: true });
});

beforeEach(async () => {
  // every test starts with WeCom's windows (duplicates, 30/min, 1000/h) and ours empty
  await sim.advance(2 * HOUR);
  files = new Map();
  agent = await serve((req, res) => {
    const body = files.get(new URL(req.url ?? "/", "http://x").pathname);
    if (body === undefined) res.writeHead(404).end();
    else res.writeHead(200, { "content-type": "application/octet-stream" }).end(body);
  });
});

afterEach(async () => {
  await closeTestServers();
});

/** An outbound context on `apiBase` (the simulator by default) with the real SQLite store, or a wrapped one. */
function context(options: { apiBase?: string; store?: Store } = {}): OutboundContext & { close(): void } {
  const s = options.store ?? store;
  const apiBase = options.apiBase ?? sim.url;
  const config = parseConfig({
    publicUrl: "http://127.0.0.1:1",
    adminToken: "admin-token-0123456789",
    mediaDir: join(dir, "media"),
    wecom: { apiBase, corpId: CORP, apps: [{ name: "ops", agentId: APP.agentId, secret: APP.secret, token: APP.token, encodingAESKey: APP.encodingAESKey }] },
    omni: { baseUrl: "https://qmt.example.com", appId: "1001", secret: "omni-secret", mediaHosts: [`127.0.0.1:${agent.port}`] },
    delivery: { timeoutMs: 2000 },
  });
  const wecom = new WeComClient({ apiBase, store: s, now: clock.now, http });
  return {
    config,
    store: s,
    wecom,
    http,
    log: silentLogger,
    tenant: CORP,
    now: clock.now,
    credentials: (app) => (app === APP.agentId ? CREDS : undefined),
    close: () => wecom.close(),
  };
}

/** An app_send entry as the outbox hands it over. */
function entry(user: string, body: Partial<OmniFromBody>, id = nextId++): OutboxEntry {
  const job: AgentMessageJob = { op: "message", body: { ToUserId: address(user), MsgType: "text", Content: "", ServiceId: "svc-1", ...body } };
  return { id, tenant: CORP, kind: "app_send", conversationId: job.body.ToUserId, messageSeq: null, payload: job, state: "inflight", attempts: 1, nextAttemptAt: 0, lastError: null, errcode: null, createdAt: clock.now(), updatedAt: clock.now() };
}

/** message/send records of one member, in order. */
const sentTo = (user: string): WeComSimSent[] => sim.sent.filter((s) => s.api === "message/send" && s.body.touser === user);
/** The texts a member received, in order. */
const delivered = (user: string) => sentTo(user).filter((s) => s.delivered);
const textOf = (s: WeComSimSent) => ((s.body.text ?? s.body.markdown) as { content: string }).content;

/** Serve a file from the agent's server. */
function host(path: string, body: Buffer): string {
  files.set(path, body);
  return `${agent.url}${path}`;
}

/** The notice of a refusal. */
function noticeOf(result: SendResult) {
  expect(result.state).toBe("refused");
  const follow = result.state === "refused" ? result.followUps?.[0] : undefined;
  if (follow === undefined) throw new Error("a refusal without a notice");
  expect(follow.kind).toBe("omni");
  const notice = (follow.payload as OmniNoticeJob).notice;
  expect(follow.conversationId).toBe(notice.FromUserId); // in the conversation's lane
  return notice;
}

describe("text and markdown", () => {
  it("splits at 2048 bytes on grapheme boundaries (Chinese, emoji, ZWJ sequences) and delivers the parts whole and in order", async () => {
    const family = "👨‍👩‍👧‍👦"; // 25 bytes: 4 emoji joined by 3 ZWJ
    const flag = "🇨🇳";
    // 680 × 3 = 2040 bytes, so the family would straddle byte 2048; then emoji and a flag at the next boundary
    const text = `${"好".repeat(680)}${family}${"😀".repeat(500)}${"中".repeat(10)}${flag}${"文".repeat(700)}${family}`;
    const parts = splitUtf8(text, 2048);
    expect(parts.length).toBeGreaterThanOrEqual(3);
    const result = await new AppSender(context()).send(entry("zhangsan", { MsgType: "text", Content: text }));
    expect(result).toEqual({ state: "done" });
    const got = delivered("zhangsan").slice(-parts.length);
    expect(got.map(textOf)).toEqual(parts);
    expect(got.map((s) => s.shown)).toEqual(parts); // nothing cut by WeCom
    expect(got.every((s) => s.truncated === undefined && utf8Length(textOf(s)) <= 2048)).toBe(true);
    expect(got.map(textOf).join("")).toBe(text);
    expect(textOf(got[0] as WeComSimSent)).toBe("好".repeat(680));
    expect(textOf(got[1] as WeComSimSent).startsWith(family)).toBe(true);
    for (const s of got) {
      expect(s.body).toMatchObject({ agentid: APP.agentId, msgtype: "text", enable_duplicate_check: 1, duplicate_check_interval: APP_DUPLICATE_CHECK_SEC });
      // no part starts or ends inside a grapheme: a lone ZWJ or regional indicator would show
      expect(textOf(s)).not.toMatch(/^\u200d|\u200d$/);
      expect([...textOf(s)].filter((c) => c === "🇨" || c === "🇳").length % 2).toBe(0);
    }
  });

  it("sends markdown as markdown, split the same way", async () => {
    const md = `**通知**\n${"> 第一行内容很长很长\n".repeat(100)}`;
    const parts = splitUtf8(md, 2048);
    expect(parts.length).toBe(2);
    expect(await new AppSender(context()).send(entry("lisi", { MsgType: "markdown", Content: md }))).toEqual({ state: "done" });
    const got = delivered("lisi").slice(-2);
    expect(got.map((s) => s.body.msgtype)).toEqual(["markdown", "markdown"]);
    expect(got.map(textOf)).toEqual(parts);
    expect(parts[0]?.endsWith("\n")).toBe(true); // cut after a line break
  });

  it("sends a link as a news article, with Content as url and title when the Tag has none", async () => {
    const sender = new AppSender(context());
    const tag = { title: "退款进度", url: "https://qmt.example.com/r/1", description: "您的退款已受理", picUrl: "https://qmt.example.com/p.png" };
    expect(await sender.send(entry("wangwu", { MsgType: "link", Content: "", Tag: tag }))).toEqual({ state: "done" });
    expect(delivered("wangwu").at(-1)?.body).toMatchObject({
      msgtype: "news",
      news: { articles: [{ title: "退款进度", url: "https://qmt.example.com/r/1", description: "您的退款已受理", picurl: "https://qmt.example.com/p.png" }] },
    });
    expect(await sender.send(entry("wangwu", { MsgType: "link", Content: "https://qmt.example.com/faq" }))).toEqual({ state: "done" });
    expect(delivered("wangwu").at(-1)?.body).toMatchObject({ news: { articles: [{ title: "https://qmt.example.com/faq", url: "https://qmt.example.com/faq" }] } });
    const bad = await sender.send(entry("wangwu", { MsgType: "link", Content: "not a url" }));
    expect(noticeOf(bad).Tag).toMatchObject({ errcode: 0 });
  });
});

describe("media", () => {
  const png = Buffer.concat([Buffer.from("89504e470d0a1a0a", "hex"), randomBytes(6000)]);
  const gif = Buffer.concat([Buffer.from("GIF89a"), randomBytes(4000)]);
  const mp3 = Buffer.concat([Buffer.from("ID3"), Buffer.from([4, 0, 0]), randomBytes(4000)]);
  const amr = Buffer.concat([Buffer.from("#!AMR\n"), randomBytes(4000)]);
  const mp4 = Buffer.concat([Buffer.from([0, 0, 0, 0x18]), Buffer.from("ftypisom"), randomBytes(8000)]);

  it.each([
    ["a PNG image", "image", "image", png, "/a.png"],
    ["a GIF image", "file", "image", gif, "/a.gif"],
    ["an MP3 voice", "file", "voice", mp3, "/a.mp3"],
    ["an AMR voice", "voice", "voice", amr, "/a.amr"],
    ["an MP4 video", "video", "video", mp4, "/a.mp4"],
    ["a file", "file", "file", mp3, "/song.mp3"],
  ] as const)("%s reaches the member as %s, byte for byte", async (_what, sentAs, msgType, bytes, path) => {
    const result = await new AppSender(context()).send(entry("zhaoliu", { MsgType: msgType, Content: host(path, bytes) }));
    expect(result).toEqual({ state: "done" });
    const last = delivered("zhaoliu").at(-1) as WeComSimSent;
    expect(last.body.msgtype).toBe(sentAs);
    const mediaId = (last.body[sentAs] as { media_id: string }).media_id;
    expect(sim.getMedia(mediaId)?.bytes.equals(bytes)).toBe(true);
  });

  it("refuses a file WeCom cannot take, and a URL the gateway may not fetch, with a notice", async () => {
    const sender = new AppSender(context());
    const tiny = await sender.send(entry("zhaoliu", { MsgType: "file", Content: host("/tiny.txt", Buffer.from("12345")) }));
    expect(noticeOf(tiny).Tag).toMatchObject({ errcode: 0, errmsg: "media_refused", ref: expect.stringMatching(/^file: http/) });
    expect((noticeOf(tiny).Tag as { reason: string }).reason).toMatch(/larger than 5 bytes/);
    const privateUrl = await sender.send(entry("zhaoliu", { MsgType: "image", Content: "http://10.1.2.3/a.png" }));
    expect(noticeOf(privateUrl).Tag).toMatchObject({ errcode: 0, errmsg: "media_url_refused" });
    // a server that is down is retried, not refused
    const url = host("/later.png", Buffer.concat([Buffer.from("89504e470d0a1a0a", "hex"), randomBytes(100)]));
    await closeTestServers();
    const down = await failureOf(sender.send(entry("zhaoliu", { MsgType: "image", Content: url })), AgentMediaError);
    expect(down).toMatchObject({ code: "media_fetch_failed", retryable: true });
  });
});

describe("what the app cannot carry", () => {
  it.each(["location", "miniprogram", "msgmenu", "event", "event.CLICK.RG"])("refuses MsgType %s with errcode 0", async (msgType) => {
    const before = sim.sent.length;
    const result = await new AppSender(context()).send(entry("sunqi", { MsgType: msgType, Content: "x", Tag: { msgid: "agent-42" } }));
    expect(result).toMatchObject({ state: "refused", errcode: 0 });
    const notice = noticeOf(result);
    expect(notice).toMatchObject({ FromUserId: address("sunqi"), MsgType: "event", Content: "send_failed", ServiceId: "svc-1", Tag: { errcode: 0, ref: "agent-42" } });
    expect(sim.sent.length).toBe(before);
  });
});

describe("refusals", () => {
  it("refuses a member WeCom does not know (81013) with a notice naming the message", async () => {
    const result = await new AppSender(context()).send(entry("ghost", { MsgType: "text", Content: "您好，您的工单已处理" }));
    expect(result).toMatchObject({ state: "refused", errcode: 81013 });
    expect(noticeOf(result)).toMatchObject({
      FromUserId: address("ghost"),
      MsgType: "event",
      Content: "send_failed",
      Tag: { errcode: 81013, errmsg: expect.stringMatching(/^user & party & tag all invalid/), reason: expect.stringMatching(/visible range/), ref: "text: 您好，您的工单已处理" },
    });
  });

  it("refuses on invaliduser, refuses other final answers, and throws transient and configuration ones", async () => {
    // a loopback proxy in front of the simulator that answers message/send as told
    let mode: "invaliduser" | "final" | "transient" | "configuration" | "http" = "invaliduser";
    const proxy = await serve((req: IncomingMessage, res: ServerResponse) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", async () => {
        const path = req.url ?? "/";
        const json = (o: unknown) => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(o));
        if (path.startsWith("/cgi-bin/message/send")) {
          const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { touser: string };
          if (mode === "invaliduser") return json({ errcode: 0, errmsg: "ok", invaliduser: body.touser.toLowerCase(), msgid: "m1" });
          if (mode === "final") return json({ errcode: 45002, errmsg: "content size out of limit" });
          if (mode === "transient") return json({ errcode: -1, errmsg: "system busy" });
          if (mode === "configuration") return json({ errcode: 60020, errmsg: "not allow to access from your ip" });
          return res.writeHead(503).end();
        }
        const upstream = await fetch(`${sim.url}${path}`, { method: req.method ?? "GET", ...(chunks.length > 0 ? { body: Buffer.concat(chunks) } : {}) });
        res.writeHead(upstream.status, { "content-type": upstream.headers.get("content-type") ?? "application/json" }).end(Buffer.from(await upstream.arrayBuffer()));
      });
    });
    const ctx = context({ apiBase: proxy.url });
    const sender = new AppSender(ctx);
    const invalid = await sender.send(entry("Zhouba", { MsgType: "text", Content: "通知" }));
    expect(invalid).toMatchObject({ state: "refused", errcode: 81013 });
    expect(noticeOf(invalid).Tag).toMatchObject({ errcode: 81013, errmsg: "invaliduser", reason: expect.any(String), ref: "text: 通知" });
    mode = "final";
    const final = await sender.send(entry("zhouba", { MsgType: "text", Content: "再次通知" }));
    expect(final).toMatchObject({ state: "refused", errcode: 45002 });
    expect(noticeOf(final).Tag).toMatchObject({ errcode: 45002, errmsg: "content size out of limit" });
    for (const [m, kind] of [
      ["transient", "transient"],
      ["configuration", "configuration"],
      ["http", "transient"],
    ] as const) {
      mode = m;
      const e = await failureOf(sender.send(entry("zhouba", { MsgType: "text", Content: `第三次 ${m}` })), WeComApiError);
      expect(e.kind).toBe(kind);
    }
    ctx.close();
  });
});

describe("pacing: 30 a minute, 1000 an hour per member", () => {
  it("holds the 31st message within a minute until a slot frees, and WeCom drops nothing", async () => {
    const sender = new AppSender(context());
    const t0 = clock.now();
    for (let i = 0; i < 30; i++) {
      expect(await sender.send(entry("pacer", { Content: `第 ${i + 1} 条` }))).toEqual({ state: "done" });
      await sim.advance(1000);
    }
    const held = entry("pacer", { Content: "第 31 条" });
    const waiting = await sender.send(held);
    expect(waiting).toEqual({ state: "later", at: t0 + MINUTE + APP_PACE_MARGIN_MS, reason: "paced: 30/min" });
    // a paced media message is not even downloaded
    const requests = agent.requests();
    expect((await sender.send(entry("pacer", { MsgType: "image", Content: host("/p.png", Buffer.concat([Buffer.from("89504e470d0a1a0a", "hex"), randomBytes(100)])) }))).state).toBe("later");
    expect(agent.requests()).toBe(requests);
    // another member is not held
    expect(await sender.send(entry("wujiu", { Content: "另一位" }))).toEqual({ state: "done" });
    await sim.advance((waiting as { at: number }).at - clock.now() - 1);
    expect((await sender.send(held)).state).toBe("later");
    await sim.advance(1);
    expect(await sender.send(held)).toEqual({ state: "done" });
    const all = sentTo("pacer");
    expect(all).toHaveLength(31);
    expect(all.every((s) => s.delivered)).toBe(true);
    expect(textOf(all.at(-1) as WeComSimSent)).toBe("第 31 条");
  });

  it("holds the 1001st message within an hour, and WeCom drops nothing", async () => {
    const sender = new AppSender(context());
    const reasons = new Set<string>();
    const t0 = clock.now();
    let held: SendResult | undefined;
    for (let i = 0; i < 1001; ) {
      const result = await sender.send(entry("hourly", { Content: `消息 ${i}` }, 1_000_000 + i));
      if (result.state === "later") {
        reasons.add(result.reason);
        if (result.reason === "paced: 1000/h") {
          held = result;
          break;
        }
        await sim.advance(result.at - clock.now());
        continue;
      }
      expect(result.state).toBe("done");
      i++;
    }
    expect(reasons).toEqual(new Set(["paced: 30/min", "paced: 1000/h"]));
    expect(held).toEqual({ state: "later", at: t0 + HOUR + APP_PACE_MARGIN_MS, reason: "paced: 1000/h" });
    const all = sentTo("hourly");
    expect(all).toHaveLength(1000);
    expect(all.filter((s) => !s.delivered)).toEqual([]);
  });

  it("computes the next slot from both windows", () => {
    const now = 10 * HOUR;
    expect(nextPaceSlot([], now)).toEqual({ at: now });
    const thirty = Array.from({ length: 30 }, (_, i) => now - 30_000 + i);
    expect(nextPaceSlot(thirty, now)).toEqual({ at: now - 30_000 + MINUTE + APP_PACE_MARGIN_MS, reason: "paced: 30/min" });
    expect(nextPaceSlot(thirty.slice(1), now)).toEqual({ at: now });
    const hour = Array.from({ length: 1000 }, (_, i) => now - HOUR + 10_000 + i);
    expect(nextPaceSlot(hour, now)).toEqual({ at: now + 10_000 + APP_PACE_MARGIN_MS, reason: "paced: 1000/h" });
  });
});

describe("retries", () => {
  const threeParts = () => `${"一".repeat(682)}${"二".repeat(682)}${"三".repeat(100)}`;

  it("sends nothing again when an entry that was sent runs again", async () => {
    const sender = new AppSender(context());
    const e = entry("retry", { Content: threeParts() });
    expect(await sender.send(e)).toEqual({ state: "done" });
    expect(await sender.send({ ...e, attempts: 2 })).toEqual({ state: "done" });
    expect(sentTo("retry").map(textOf)).toEqual(splitUtf8(threeParts(), 2048));
    expect(delivered("retry")).toHaveLength(3);
  });

  it("continues after the parts WeCom confirmed; a part whose answer was lost (a crash) is dropped by WeCom's duplicate check", async () => {
    // the store fails right after WeCom took part 2 (index 1): as a crash before the record
    let paceWrites = 0;
    const crashing = new Proxy(store, {
      get(target, prop) {
        if (prop === "updateState") {
          return async (...args: Parameters<Store["updateState"]>) => {
            if (args[1].startsWith("pace:") && ++paceWrites === 4) throw new Error("crash");
            return target.updateState(...args);
          };
        }
        const v = Reflect.get(target, prop, target);
        return typeof v === "function" ? v.bind(target) : v;
      },
    }) as Store;
    const e = entry("crash", { Content: threeParts() });
    await expect(new AppSender(context({ store: crashing })).send(e)).rejects.toThrow("crash");
    expect(sentTo("crash")).toHaveLength(2);
    await sim.advance(5000); // the worker's backoff
    expect(await new AppSender(context()).send({ ...e, attempts: 2 })).toEqual({ state: "done" });
    const calls = sentTo("crash");
    expect(calls.map((s) => s.dropped)).toEqual([undefined, undefined, "duplicate", undefined]);
    expect(delivered("crash").map(textOf)).toEqual(splitUtf8(threeParts(), 2048)); // each part once, in order
  });

  it("retries a text that failed half way from the part that failed", async () => {
    let failNext = false;
    const proxy = await serve((req: IncomingMessage, res: ServerResponse) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", async () => {
        if ((req.url ?? "").startsWith("/cgi-bin/message/send") && failNext) return res.writeHead(502).end();
        const upstream = await fetch(`${sim.url}${req.url}`, { method: req.method ?? "GET", ...(chunks.length > 0 ? { body: Buffer.concat(chunks) } : {}) });
        if ((req.url ?? "").startsWith("/cgi-bin/message/send")) failNext = true; // the next one fails
        res.writeHead(upstream.status, { "content-type": "application/json" }).end(Buffer.from(await upstream.arrayBuffer()));
      });
    });
    const ctx = context({ apiBase: proxy.url });
    const e = entry("halfway", { Content: threeParts() });
    expect((await failureOf(new AppSender(ctx).send(e), WeComApiError)).kind).toBe("transient");
    ctx.close();
    expect(await new AppSender(context()).send({ ...e, attempts: 2 })).toEqual({ state: "done" });
    expect(sentTo("halfway").map((s) => s.dropped)).toEqual([undefined, undefined, undefined]);
    expect(delivered("halfway").map(textOf)).toEqual(splitUtf8(threeParts(), 2048));
  });

  it("delivers an agent's identical messages too: the repeat goes without WeCom's duplicate check", async () => {
    const sender = new AppSender(context());
    expect(await sender.send(entry("same", { Content: "好的" }))).toEqual({ state: "done" });
    await sim.advance(10 * MINUTE);
    expect(await sender.send(entry("same", { Content: "好的" }))).toEqual({ state: "done" });
    await sim.advance(40 * MINUTE);
    expect(await sender.send(entry("same", { Content: "好的" }))).toEqual({ state: "done" });
    const calls = sentTo("same");
    expect(calls.map((s) => s.delivered)).toEqual([true, true, true]);
    expect(calls.map((s) => s.body.enable_duplicate_check)).toEqual([1, 0, 1]);
  });
});
