/**
 * The operator console's server side over real HTTP against the simulators: login, session
 * cookie, CSRF and Origin checks, CSP, the Live stream, the pages' JSON, the admin API's replay
 * write and its audit log. (The pages in a real browser: console-browser.test.ts.)
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LIVE_KEEP_MS, LIVE_ROWS, LiveFeed } from "../src/gateway/console/live.js";
import { LIVE_TIMING } from "../src/gateway/endpoints/console.js";
import { percentileMs } from "../src/gateway/console/history.js";
import type { Accounts, AuditItem, ConsoleConversation, LiveEvent, OutboxPage, Paged, Transcript } from "../src/gateway/console/types.js";
import { ADMIN, AGENT, CORP, eventually, KFID, type Stack, startStack } from "./stack.js";

let stack: Stack;
let base: string;

beforeAll(async () => {
  stack = await startStack({
    config: (raw) => {
      raw.delivery.maxAttempts = 2;
    },
  });
  base = stack.gw.url;
});
afterAll(async () => {
  await stack?.stop();
});

/** A logged-in console session: its cookie and CSRF token. */
async function login(token = ADMIN): Promise<{ cookie: string; csrf: string; res: Response }> {
  const res = await fetch(`${base}/console/api/login`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token }) });
  const setCookie = res.headers.get("set-cookie") ?? "";
  const body = (await res.json()) as { csrf?: string };
  return { cookie: setCookie.split(";")[0] ?? "", csrf: body.csrf ?? "", res };
}

const get = (path: string, cookie: string) => fetch(`${base}${path}`, { headers: { cookie } });
const post = (path: string, s: { cookie: string; csrf?: string }, body: unknown, headers: Record<string, string> = {}) =>
  fetch(`${base}${path}`, { method: "POST", headers: { cookie: s.cookie, "content-type": "application/json", ...(s.csrf ? { "x-csrf-token": s.csrf } : {}), ...headers }, body: JSON.stringify(body) });

/** Read Server-Sent Events until `until` holds for the events seen, or the deadline. */
async function liveEvents(cookie: string, act: () => Promise<unknown>, until: (seen: LiveEvent[]) => boolean, ms = 8000): Promise<LiveEvent[]> {
  const ctl = new AbortController();
  const res = await fetch(`${base}/console/api/live`, { headers: { cookie }, signal: ctl.signal });
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const seen: LiveEvent[] = [];
  const decoder = new TextDecoder();
  let buffer = "";
  const timer = setTimeout(() => ctl.abort(), ms);
  await act();
  try {
    while (!until(seen)) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      for (let i = buffer.indexOf("\n\n"); i >= 0; i = buffer.indexOf("\n\n")) {
        const block = buffer.slice(0, i);
        buffer = buffer.slice(i + 2);
        const data = block.split("\n").find((l) => l.startsWith("data: "));
        if (block.startsWith("event: live") && data) seen.push(JSON.parse(data.slice(6)) as LiveEvent);
      }
    }
  } catch (e) {
    if ((e as Error).name !== "AbortError") throw e;
  } finally {
    clearTimeout(timer);
    ctl.abort();
  }
  return seen;
}

describe("console: pages and login", () => {
  it("serves the built page with a strict CSP and no inline script", async () => {
    const res = await fetch(`${base}/console`);
    expect(res.status).toBe(200);
    const csp = res.headers.get("content-security-policy") ?? "";
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("default-src 'none'");
    expect(csp).not.toContain("unsafe-inline");
    expect(res.headers.get("x-frame-options")).toBe("DENY");
    const html = await res.text();
    expect(html).toMatch(/<script[^>]+src="\/console\/assets\/[^"]+\.js"/);
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(html).not.toMatch(/<style|style="/);
    const js = /src="(\/console\/assets\/[^"]+\.js)"/.exec(html)?.[1] as string;
    const asset = await fetch(`${base}${js}`);
    expect(asset.status).toBe(200);
    expect(asset.headers.get("cache-control")).toContain("immutable");
    expect((await fetch(`${base}/console/assets/nothing.js`)).status).toBe(404);
  });

  it("refuses the API without a session and a wrong token; a right one sets an HttpOnly SameSite=Strict cookie", async () => {
    expect((await fetch(`${base}/console/api/session`)).status).toBe(401);
    const wrong = await login("not-the-token");
    expect(wrong.res.status).toBe(401);
    expect(wrong.res.headers.get("set-cookie")).toBeNull();
    const ok = await login();
    expect(ok.res.status).toBe(200);
    const setCookie = ok.res.headers.get("set-cookie") ?? "";
    expect(setCookie).toMatch(/^wb_console=v1\./);
    expect(setCookie).toContain("HttpOnly");
    expect(setCookie).toContain("SameSite=Strict");
    expect(setCookie).toContain("Path=/");
    expect(setCookie).not.toContain(ADMIN);
    const session = await get("/console/api/session", ok.cookie);
    expect(session.status).toBe(200);
    expect(((await session.json()) as { csrf: string }).csrf).toBe(ok.csrf);
    // a forged cookie is refused
    expect((await get("/console/api/session", `${ok.cookie.slice(0, -2)}xx`)).status).toBe(401);
  });

  it("needs the CSRF token, a JSON body and this site's Origin on every POST", async () => {
    const s = await login();
    expect((await post("/console/api/doctor", { cookie: s.cookie }, {})).status).toBe(403);
    expect((await post("/console/api/doctor", { cookie: s.cookie, csrf: "nope" }, {})).status).toBe(403);
    const plain = await fetch(`${base}/console/api/logout`, { method: "POST", headers: { cookie: s.cookie, "x-csrf-token": s.csrf, "content-type": "text/plain" }, body: "{}" });
    expect(plain.status).toBe(415);
    const cross = await post("/console/api/logout", s, {}, { origin: "https://evil.example" });
    expect(cross.status).toBe(403);
    expect(((await cross.json()) as { errcode: string }).errcode).toBe("cross_origin");
    // the session still works: nothing above logged it out
    expect((await get("/console/api/session", s.cookie)).status).toBe(200);
  });

  it("logs out on every request after (the cookie no longer works)", async () => {
    const s = await login();
    const out = await post("/console/api/logout", s, {}, { origin: base });
    expect(out.status).toBe(200);
    expect(out.headers.get("set-cookie")).toContain("Max-Age=0");
    expect((await get("/console/api/session", s.cookie)).status).toBe(401);
  });

  it("limits wrong tokens per address: the sixth in a minute is a 429, even with the right token", async () => {
    // the limit is per address: this test's requests come from 127.0.0.1, so it runs last in its file's logins
    const states: number[] = [];
    for (let i = 0; i < 5; i++) states.push((await login(`wrong-${i}`)).res.status);
    expect(states).toEqual([401, 401, 401, 401, 401]);
    const blocked = await login();
    expect(blocked.res.status).toBe(429);
    // forget the failures for the other tests (a restart of the gateway would too)
    stack.gw.gateway.sessions.succeeded("127.0.0.1");
  });
});

describe("console: what crosses the bridge", () => {
  let s: { cookie: string; csrf: string };
  beforeAll(async () => {
    s = await login();
  });

  it("streams a customer's message stored then delivered, and the agent's answer queued then sent", async () => {
    const seen = await liveEvents(
      s.cookie,
      () => stack.wecom.appUserSendsText(AGENT, "console-user", "控制台你好"),
      (e) => e.some((x) => x.direction === "in" && x.summary === "控制台你好" && x.state === "delivered"),
    );
    const mine = seen.filter((x) => x.summary === "控制台你好");
    expect(mine.map((x) => x.state)).toContain("stored");
    const delivered = mine.find((x) => x.state === "delivered") as LiveEvent;
    expect(delivered).toMatchObject({ channel: "app", direction: "in", tenant: CORP });
    expect(delivered.latencyMs).toBeGreaterThanOrEqual(0);
    const address = delivered.conversationId;
    const out = await liveEvents(
      s.cookie,
      () => stack.omni.sendAgentReply({ ToUserId: address, WorkerNum: "8001", WorkerName: "小王", MsgType: "text", Content: "收到，马上处理" }),
      (e) => e.some((x) => x.direction === "out" && x.summary === "收到，马上处理" && x.state === "sent"),
    );
    expect(out.filter((x) => x.summary === "收到，马上处理").map((x) => x.state)).toEqual(expect.arrayContaining(["sent"]));
    expect(out.find((x) => x.state === "sent" && x.summary === "收到，马上处理")).toMatchObject({ channel: "app", direction: "out", conversationId: address });

    // the conversation is listed, found by its text, and its transcript has both directions
    const list = (await (await get("/console/api/conversations?channel=app", s.cookie)).json()) as Paged<ConsoleConversation>;
    expect(list.items.some((c) => c.conversationId === address && c.customer === "console-user")).toBe(true);
    const found = (await (await get(`/console/api/conversations?q=${encodeURIComponent("控制台")}`, s.cookie)).json()) as Paged<ConsoleConversation>;
    expect(found.items.map((c) => c.conversationId)).toEqual([address]);
    const none = (await (await get(`/console/api/conversations?q=nothing-like-this`, s.cookie)).json()) as Paged<ConsoleConversation>;
    expect(none.items).toEqual([]);
    const t = (await (await get(`/console/api/transcript?conversation=${encodeURIComponent(address)}&tenant=${CORP}`, s.cookie)).json()) as Transcript;
    expect(t.items.map((l) => [l.direction, l.text])).toEqual([
      ["in", "控制台你好"],
      ["out", "收到，马上处理"],
    ]);
    expect(t.items[1]).toMatchObject({ from: "小王", state: "done" });
  });

  it("ends a Live stream when its session logs out, and cuts off a client that does not read", async () => {
    const feed = stack.gw.gateway.live;
    const before = feed.listeners;
    LIVE_TIMING.heartbeatMs = 100;
    try {
      const other = await login();
      const res = await fetch(`${base}/console/api/live`, { headers: { cookie: other.cookie } });
      await eventually(() => feed.listeners === before + 1, 3000, "the stream listening");
      expect((await post("/console/api/logout", other, {})).status).toBe(200);
      // the stream ends (the body reads to its end) and stops listening
      const text = await res.text();
      expect(text).toContain("retry: 2000");
      expect(feed.listeners).toBe(before);
    } finally {
      LIVE_TIMING.heartbeatMs = 15_000;
    }
    // a client that never reads: once 1 MiB waits for it, its connection is closed
    const slow = await fetch(`${base}/console/api/live`, { headers: { cookie: s.cookie } });
    await eventually(() => feed.listeners === before + 1, 3000, "the slow stream listening");
    const big = "长".repeat(190);
    for (let i = 0; i < 40_000 && feed.listeners > before; i++) {
      feed.stored(CORP, { channel: "app", conversationId: `app:${CORP}:1:slow`, content: { type: "text", text: `${i}${big}` } } as never, 1_000_000 + i);
      if (i % 500 === 0) await new Promise((r) => setImmediate(r));
    }
    await eventually(() => feed.listeners === before, 5000, "the slow client cut off");
    await expect(slow.text()).rejects.toThrow();
  });

  it("answers bad parameters with a 400 naming them", async () => {
    const r = await get("/console/api/conversations?channel=fax", s.cookie);
    expect(r.status).toBe(400);
    expect(((await r.json()) as { errmsg: string }).errmsg).toMatch(/^channel/);
    expect((await get("/console/api/transcript", s.cookie)).status).toBe(400);
    expect((await get("/console/api/outbox?state=lost", s.cookie)).status).toBe(400);
    expect((await get("/console/api/nothing", s.cookie)).status).toBe(404);
  });

  it("replays a dead letter through POST /admin/outbox/replay (bearer or session + CSRF) and audits it", async () => {
    stack.omni.setFailure("http500");
    await stack.wecom.appUserSendsText(AGENT, "dead-user", "这条会失败");
    const dead = await eventually(async () => {
      const page = (await (await get("/console/api/outbox?state=dead", s.cookie)).json()) as OutboxPage;
      return page.items.find((e) => e.kind === "omni" && e.state === "dead");
    }, 10_000, "a dead letter");
    expect(dead.lastError).toBeTruthy();
    stack.omni.setFailure(false);

    // refused without credentials, with a session but no CSRF token, with a bad body, and for GET
    const url = `${base}/admin/outbox/replay`;
    expect((await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ids: [dead.id] }) })).status).toBe(401);
    expect((await post("/admin/outbox/replay", { cookie: s.cookie }, { ids: [dead.id] })).status).toBe(403);
    const bearer = { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" };
    for (const bad of ["{", "[]", '{"ids": []}', '{"ids": [0]}', '{"ids": ["1"]}', '{"all": false}', '{"all": true, "ids": [1]}']) {
      const r = await fetch(url, { method: "POST", headers: bearer, body: bad });
      expect(r.status, bad).toBe(400);
    }
    expect((await fetch(url, { headers: { authorization: `Bearer ${ADMIN}` } })).status).toBe(405);
    expect((await (await get("/console/api/outbox?state=dead", s.cookie)).json() as OutboxPage).items.some((e) => e.id === dead.id)).toBe(true);

    // the console's way: session + CSRF
    const r = await post("/admin/outbox/replay", s, { ids: [dead.id] });
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ replayed: 1 });
    await eventually(() => stack.omni.received.some((x) => x.body.Content === "这条会失败"), 8000, "the replayed message delivered");
    // the bearer token's way, on nothing left to replay
    const again = await fetch(url, { method: "POST", headers: bearer, body: JSON.stringify({ all: true }) });
    expect(await again.json()).toEqual({ replayed: 0 });

    const audit = (await (await get("/console/api/audit", s.cookie)).json()) as Paged<AuditItem>;
    const replays = audit.items.filter((a) => a.action === "replay");
    expect(replays[0]).toMatchObject({ actor: "admin-api", from: "127.0.0.1" });
    expect(replays[1]).toMatchObject({ actor: "console", from: "127.0.0.1" });
    expect(replays[1]?.detail).toContain(String(dead.id));
    expect(audit.items.some((a) => a.action === "login" && a.actor === "console")).toBe(true);
  });

  it("lists the accounts: the app's token, the bot, the KF account and the 全媒体's last delivery", async () => {
    await stack.wecom.kfCustomerSends(KFID, "wmCONSOLE01", { msgtype: "text", text: { content: "KF 你好" } });
    await eventually(() => stack.omni.received.some((x) => x.body.Content === "KF 你好"), 8000, "the KF message");
    const a = (await (await get("/console/api/accounts", s.cookie)).json()) as Accounts;
    expect(a.apps).toEqual([expect.objectContaining({ name: "support", agentId: AGENT, kf: true, token: "cached" })]);
    expect(a.bots).toEqual([expect.objectContaining({ name: "helper", mode: "webhook", state: "callback" })]);
    expect(a.kf).toEqual([expect.objectContaining({ tenant: CORP, lagSec: 0, lastError: null })]);
    expect(a.kf[0]?.cursor).toBeTruthy();
    expect(a.omni).toEqual([expect.objectContaining({ name: "omni", last: expect.objectContaining({ ok: true }) })]);
    expect(JSON.stringify(a)).not.toContain("app-secret");
  });

  it("keeps the health figures: one point per sample, with the interval's rates", async () => {
    const health = stack.gw.gateway.health;
    await health.sample();
    await stack.wecom.appUserSendsText(AGENT, "health-user", "健康检查");
    await eventually(() => stack.omni.received.some((x) => x.body.Content === "健康检查"), 8000, "the message");
    await health.sample();
    const h = (await (await get("/console/api/health", s.cookie)).json()) as { points: { inPerSec: number; deliveredPerSec: number; outboxDepth: number; dead: number }[] };
    const last = h.points.at(-1);
    expect(last?.inPerSec).toBeGreaterThan(0);
    expect(last?.deliveredPerSec).toBeGreaterThan(0);
    expect(last?.dead).toBe(0);
  });

  it("runs the doctor's checks on the gateway's own configuration", async () => {
    const r = await post("/console/api/doctor", s, {});
    expect(r.status).toBe(200);
    const { rows } = (await r.json()) as { rows: { check: string; status: string; errcode: number | null; fix: string | null }[] };
    const byId = new Map(rows.map((x) => [x.check, x]));
    expect(byId.get("config")?.status).toBe("ok");
    expect(byId.get("app.support.gettoken")?.status).toBe("ok");
    expect(byId.get("omni.credentials")?.status).toBe("ok");
    expect(byId.get("store.writable")?.status).toBe("ok");
    expect(rows.every((x) => "errcode" in x && "fix" in x)).toBe(true);
    expect(JSON.stringify(rows)).not.toContain("omni-secret");
  });

  it("says the Playground is sandbox-only outside the sandbox", async () => {
    expect(await (await get("/console/api/playground", s.cookie)).json()).toEqual({ enabled: false, channels: [] });
    expect((await post("/console/api/playground/customer", s, { channel: "kf", text: "hi" })).status).toBe(404);
  });
});

describe("console: a Live page opened after the fact", () => {
  let own: Stack;
  afterAll(async () => {
    await own?.stop();
  });

  it("shows the messages stored while nobody watched, read back from the store, delivered or not", async () => {
    own = await startStack({
      config: (raw) => {
        raw.delivery.maxAttempts = 1;
      },
    });
    const at = own.gw.url;
    await own.wecom.appUserSendsText(AGENT, "early-user", "没人看的时候发的");
    await eventually(() => own.omni.received.some((r) => r.body.Content === "没人看的时候发的"), 8000, "the delivery");
    own.omni.setFailure("http500");
    await own.wecom.appUserSendsText(AGENT, "early-user", "这条失败了");
    await eventually(async () => (await own.gw.store.listOutbox(["dead"], { limit: 5 })).length > 0, 8000, "a dead letter");
    expect(own.gw.gateway.live.recent()).toEqual([]); // nobody watched: nothing kept
    const res = await fetch(`${at}/console/api/login`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token: ADMIN }) });
    const cookie = (res.headers.get("set-cookie") ?? "").split(";")[0] as string;
    const ctl = new AbortController();
    const stream = await fetch(`${at}/console/api/live`, { headers: { cookie }, signal: ctl.signal });
    const reader = (stream.body as ReadableStream<Uint8Array>).getReader();
    let text = "";
    while (!text.includes("这条失败了")) text += new TextDecoder().decode((await reader.read()).value);
    ctl.abort();
    const rows = text.split("\n").filter((l) => l.startsWith("data: ")).map((l) => JSON.parse(l.slice(6)) as LiveEvent);
    expect(rows.find((r) => r.summary === "没人看的时候发的")).toMatchObject({ direction: "in", channel: "app", state: "delivered" });
    expect(rows.find((r) => r.summary === "这条失败了")).toMatchObject({ direction: "in", channel: "app", state: "dead" });
  });
});

describe("console: bounded pieces", () => {
  it("keeps rows only while watched (and LIVE_KEEP_MS after), at most LIVE_ROWS of them, and 32 listeners", () => {
    let now = 0;
    const feed = new LiveFeed(() => now);
    const text = (i: number) => ({ channel: "app", conversationId: "app:t:1:u", content: { type: "text", text: `m${i}` } }) as never;
    // nobody watches: counted, not kept
    feed.stored("t", text(-1), 0);
    expect(feed.recent()).toEqual([]);
    expect(feed.counts.stored).toBe(1);
    const stop = feed.subscribe(() => undefined) as () => void;
    stop();
    now = LIVE_KEEP_MS - 1;
    feed.stored("t", text(-2), 1);
    expect(feed.recent().map((r) => r.summary)).toEqual(["m-2"]);
    now = LIVE_KEEP_MS;
    feed.stored("t", text(-3), 2);
    expect(feed.recent()).toEqual([]);
    const watching = feed.subscribe(() => undefined);
    for (let i = 0; i < LIVE_ROWS + 50; i++) feed.stored("t", text(i), 10 + i);
    expect(feed.recent()).toHaveLength(LIVE_ROWS);
    expect(feed.recent()[0]?.summary).toBe("m50");
    expect(watching).toBeDefined();
    const stops = Array.from({ length: 40 }, () => feed.subscribe(() => undefined));
    expect(stops.filter((x) => x !== undefined)).toHaveLength(31);
  });

  it("reads percentiles off histogram buckets", () => {
    expect(percentileMs([], 0.5)).toBeNull();
    expect(
      percentileMs(
        [
          [0.01, 5],
          [0.05, 9],
          [Number.POSITIVE_INFINITY, 10],
        ],
        0.5,
      ),
    ).toBe(10);
    expect(
      percentileMs(
        [
          [0.01, 5],
          [0.05, 9],
          [Number.POSITIVE_INFINITY, 10],
        ],
        0.9,
      ),
    ).toBe(50);
  });
});
