/**
 * The gateway end to end, over real loopback sockets: WeCom simulator → gateway (SQLite file) →
 * 全媒体 simulator.
 */
import { afterEach, describe, expect, it } from "vitest";
import { createLogger } from "../src/log.js";
import { WeComCrypto } from "../src/wecom/crypto.js";
import { ADMIN, AGENT, APP_AES, ARCHIVE_SECRET, BOT_AES, CORP, eventually, KFID, type Stack, sleep, startStack } from "./stack.js";
import { fixture } from "./helpers.js";

let stack: Stack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

const appConversation = (user: string) => `app:${CORP}:${AGENT}:${user}`;
const kfConversation = (ext: string) => `kf:${CORP}:${KFID}:${ext}`;

async function admin(s: Stack, path: string): Promise<{ status: number; body: any }> {
  const res = await fetch(`${s.gw.url}${path}`, { headers: { authorization: `Bearer ${ADMIN}` } });
  return { status: res.status, body: await res.json() };
}

describe("app callbacks", () => {
  it("a member's text reaches the 全媒体 once, with a stable address", async () => {
    stack = await startStack();
    const sent = await stack.wecom.appUserSendsText(AGENT, "zhangsan", "你好，我的订单还没到");
    expect(sent).toMatchObject({ status: 200, delivered: true, tries: 1, body: "" });
    const [got] = await stack.omni.waitFor(1);
    expect(got?.body).toMatchObject({ FromUserId: appConversation("zhangsan"), FromUserName: "zhangsan", MsgType: "text", Content: "你好，我的订单还没到" });
    expect(got?.body.Tag).toMatchObject({ channel: "app" });
    const msgs = await admin(stack, "/admin/messages?channel=app");
    expect(msgs.body.items).toHaveLength(1);
    expect(msgs.body.items[0].key).toBe(sent.msgId);
  });

  it("WeCom's retries, with new or the same timestamp and nonce, give one delivery", async () => {
    stack = await startStack();
    const xml = fixture("app", "msg-text.xml");
    for (const sameTimestampOnRetry of [false, true, false]) {
      const r = await stack.wecom.appSends(AGENT, xml, { sameTimestampOnRetry });
      expect(r.status).toBe(200);
    }
    await stack.omni.waitFor(1);
    await sleep(200);
    expect(stack.omni.received).toHaveLength(1);
    const metrics = await (await fetch(`${stack.gw.url}/metrics`)).text();
    expect(metrics).toMatch(/wecom_bridge_dedup_hits_total\{channel="app"\} 2/);
  });

  it("events are delivered as events; distinct events of one second are never merged", async () => {
    stack = await startStack();
    const xml = fixture("app", "event-change_external_contact-add_external_contact.xml");
    await stack.wecom.appSends(AGENT, xml);
    await stack.wecom.appSends(AGENT, xml.replace("woAJ2GCAAAXtWyujaWJHDDGi0mACH71w", "woAJ2GCAAAnother"));
    const got = await stack.omni.waitFor(2);
    expect(got.map((g) => [g.body.MsgType, g.body.Content])).toEqual([
      ["event", "change_external_contact"],
      ["event", "change_external_contact"],
    ]);
  });

  it("an image is fetched with media/get, stored, and served through a signed, expiring link", async () => {
    stack = await startStack();
    const png = Buffer.from("89504e470d0a1a0a0000000d4948445200000001000000010806000000", "hex");
    const mediaId = stack.wecom.putMedia(png, { contentType: "image/png", filename: "shot.png" });
    const xml = `<xml><ToUserName><![CDATA[${CORP}]]></ToUserName><FromUserName><![CDATA[lisi]]></FromUserName><CreateTime>${Math.floor(Date.now() / 1000)}</CreateTime><MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[https://wework.qpic.cn/x]]></PicUrl><MediaId><![CDATA[${mediaId}]]></MediaId><MsgId>7381973325934178399</MsgId><AgentID>${AGENT}</AgentID></xml>`;
    await stack.wecom.appSends(AGENT, xml);
    const [got] = await stack.omni.waitFor(1);
    expect(got?.body.MsgType).toBe("image");
    const link = got?.body.Content as string;
    expect(link.startsWith(`${stack.config.publicUrl}/media/`)).toBe(true);
    const res = await fetch(link);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("image/png");
    expect(Buffer.from(await res.arrayBuffer())).toEqual(png);
    const tampered = link.replace(/s=([0-9a-f])/, (_m, c: string) => `s=${c === "0" ? "1" : "0"}`);
    expect((await fetch(tampered)).status).toBe(403);
    const expired = link.replace(/e=\d+/, "e=1000");
    expect((await fetch(expired)).status).toBe(403);
  });

  it("answers URL verification with the bare echo", async () => {
    stack = await startStack();
    const r = await stack.wecom.verifyUrl("app", "support");
    expect(r.status).toBe(200);
    expect(r.body).toBe(r.expected);
  });
});

describe("bad input changes nothing", () => {
  const crypto = new WeComCrypto({ token: "apptoken", encodingAESKey: APP_AES, receiveId: CORP });
  async function post(s: Stack, query: string, body: string) {
    const res = await fetch(`${s.gw.url}/wecom/app/support?${query}`, { method: "POST", body, headers: { "content-type": "text/xml" } });
    return { status: res.status, body: await res.text() };
  }
  function signed(plain: string, ts = String(Math.floor(Date.now() / 1000))) {
    const r = crypto.encryptReply(plain, ts, "nonce1");
    return { query: `msg_signature=${r.msgsignature}&timestamp=${ts}&nonce=nonce1`, body: `<xml><ToUserName><![CDATA[${CORP}]]></ToUserName><Encrypt><![CDATA[${r.encrypt}]]></Encrypt></xml>` };
  }

  it("bad signature 401, stale timestamp 401, malformed 400, oversized 413, unknown app 404", async () => {
    stack = await startStack();
    const ok = signed(fixture("app", "msg-text.xml"));
    const bad = await post(stack, ok.query.replace(/msg_signature=[0-9a-f]/, "msg_signature=z"), ok.body);
    expect(bad.status).toBe(401);
    expect(JSON.parse(bad.body)).toMatchObject({ errcode: -40001 });
    const stale = signed(fixture("app", "msg-text.xml"), String(Math.floor(Date.now() / 1000) - 3600));
    const st = await post(stack, stale.query, stale.body);
    expect(st.status).toBe(401);
    expect(JSON.parse(st.body).errmsg).toContain("window");
    expect((await post(stack, ok.query, "<xml><nothing/></xml>")).status).toBe(400);
    const garbage = signed("this is not xml");
    expect(JSON.parse((await post(stack, garbage.query, garbage.body)).body)).toMatchObject({ errcode: "decode_malformed" });
    const big = await post(stack, ok.query, `<xml>${"x".repeat(300 * 1024)}</xml>`);
    expect(big.status).toBe(413);
    const unknown = await fetch(`${stack.gw.url}/wecom/app/nope?${ok.query}`, { method: "POST", body: ok.body });
    expect(unknown.status).toBe(404);
    const badPath = await fetch(`${stack.gw.url}/wecom/app/%E0%A4%A?${ok.query}`, { method: "POST", body: ok.body });
    expect(badPath.status).toBe(400);
    const msgs = await admin(stack, "/admin/messages");
    expect(msgs.body.items).toEqual([]);
    const outbox = await admin(stack, "/admin/outbox?state=pending,inflight,done,dead");
    expect(outbox.body.items).toEqual([]);
  });
});

describe("KF", () => {
  it("a customer's messages are pulled after the callback and delivered in order", async () => {
    stack = await startStack();
    for (const text of ["第一条", "第二条", "第三条"]) {
      await stack.wecom.kfCustomerSends(KFID, "wmCUSTOMER1", { msgtype: "text", text: { content: text } });
    }
    const got = await stack.omni.waitFor(3);
    expect(got.map((g) => g.body.Content)).toEqual(["第一条", "第二条", "第三条"]);
    expect(got.every((g) => g.body.FromUserId === kfConversation("wmCUSTOMER1"))).toBe(true);
    const cursors = await admin(stack, "/admin/cursors");
    expect(cursors.body.items).toMatchObject([{ openKfId: KFID, cursor: expect.any(String) }]);
    // every pull passed the callback's Token (without one WeCom rate-limits sync_msg hard)
    expect(stack.wecom.syncCalls.length).toBeGreaterThan(0);
    expect(stack.wecom.syncCalls.every((c) => c.withToken && c.openKfId === KFID)).toBe(true);
  });

  it("one pull at a time per account, however many callbacks arrive", async () => {
    stack = await startStack();
    stack.wecom.setDelay("kf/sync_msg", 80);
    await Promise.all(["a", "b", "c", "d", "e"].map((t) => stack?.wecom.kfCustomerSends(KFID, "wmCONC", { msgtype: "text", text: { content: t } })));
    const got = await stack.omni.waitFor(5, 10_000);
    expect(new Set(got.map((g) => g.body.Content))).toEqual(new Set(["a", "b", "c", "d", "e"]));
    const calls = stack.wecom.syncCalls.map((c) => c.at);
    for (let i = 1; i < calls.length; i++) expect((calls[i] as number) - (calls[i - 1] as number)).toBeGreaterThanOrEqual(75);
  });

  it("follows has_more across small pages and empty pages", async () => {
    stack = await startStack({ config: (c) => (c.kf = { pageSize: 2 }) });
    for (let i = 0; i < 5; i++) await stack.wecom.kfCustomerSends(KFID, "wmPAGE", { msgtype: "text", text: { content: `m${i}` } }, { callback: false });
    stack.wecom.injectEmptyPages(KFID, 2);
    await stack.wecom.kfCustomerSends(KFID, "wmPAGE", { msgtype: "text", text: { content: "m5" } });
    const got = await stack.omni.waitFor(6);
    expect(got.map((g) => g.body.Content)).toEqual(["m0", "m1", "m2", "m3", "m4", "m5"]);
  });

  it("a first pull does not flood the agents with history, but keeps the message that woke it", async () => {
    stack = await startStack();
    const old = Math.floor(Date.now() / 1000) - 2 * 24 * 3600;
    await stack.wecom.kfCustomerSends(KFID, "wmOLD", { msgtype: "text", text: { content: "两天前" } }, { sendTime: old, callback: false });
    await stack.wecom.kfCustomerSends(KFID, "wmNEW", { msgtype: "text", text: { content: "刚刚" } });
    const [got] = await stack.omni.waitFor(1);
    expect(got?.body.Content).toBe("刚刚");
    await sleep(200);
    expect(stack.omni.received).toHaveLength(1);
  });

  it("delivers history on a first pull when configured to", async () => {
    stack = await startStack({ config: (c) => (c.kf = { deliverHistory: true }) });
    const old = Math.floor(Date.now() / 1000) - 2 * 24 * 3600;
    await stack.wecom.kfCustomerSends(KFID, "wmOLD", { msgtype: "text", text: { content: "两天前" } }, { sendTime: old, callback: false });
    await stack.wecom.kfCustomerSends(KFID, "wmNEW", { msgtype: "text", text: { content: "刚刚" } });
    const got = await stack.omni.waitFor(2);
    expect(got.map((g) => g.body.Content)).toEqual(["两天前", "刚刚"]);
  });

  it("the cursor survives a restart: nothing is replayed, nothing skipped", async () => {
    stack = await startStack();
    await stack.wecom.kfCustomerSends(KFID, "wmR", { msgtype: "text", text: { content: "before" } });
    await stack.omni.waitFor(1);
    await stack.restart();
    await stack.wecom.kfCustomerSends(KFID, "wmR", { msgtype: "text", text: { content: "after" } });
    const got = await stack.omni.waitFor(2);
    expect(got.map((g) => g.body.Content)).toEqual(["before", "after"]);
    await sleep(200);
    expect(stack.omni.received).toHaveLength(2);
  });

  it("refreshes an expired token once and goes on", async () => {
    stack = await startStack();
    await stack.wecom.kfCustomerSends(KFID, "wmT", { msgtype: "text", text: { content: "one" } });
    await stack.omni.waitFor(1);
    // the new session's claim (service_state/trans) goes out after the delivery: let it finish first
    await eventually(() => stack?.wecom.requests.some((r) => r.path.endsWith("/kf/service_state/trans")), 5000, "the session claim");
    stack.wecom.expireTokens();
    await stack.wecom.kfCustomerSends(KFID, "wmT", { msgtype: "text", text: { content: "two" } });
    await stack.omni.waitFor(2);
    const metrics = await (await fetch(`${stack.gw.url}/metrics`)).text();
    expect(metrics).toMatch(/wecom_bridge_wecom_errcodes_total\{api="kf\/sync_msg",errcode="42001"\} 1/);
    expect(stack.wecom.requests.filter((r) => r.path.endsWith("/gettoken"))).toHaveLength(2);
  });

  it("a rate-limited pull is retried", async () => {
    stack = await startStack();
    stack.wecom.failNext("kf/sync_msg", 45009);
    await stack.wecom.kfCustomerSends(KFID, "wmRL", { msgtype: "text", text: { content: "限流后" } });
    const [got] = await stack.omni.waitFor(1, 8000);
    expect(got?.body.Content).toBe("限流后");
  });
});

describe("delivery", () => {
  it("the 全媒体 down then up: everything arrives once, in order", async () => {
    stack = await startStack();
    stack.omni.setFailure("http500");
    for (const t of ["一", "二", "三"]) await stack.wecom.appUserSendsText(AGENT, "wangwu", t);
    await eventually(() => stack?.omni.failed.length !== undefined && (stack?.omni.failed.length ?? 0) >= 3, 5000, "failed attempts");
    stack.omni.setFailure(false);
    const got = await stack.omni.waitFor(3, 8000);
    expect(got.map((g) => g.body.Content)).toEqual(["一", "二", "三"]);
    await sleep(300);
    expect(stack.omni.received).toHaveLength(3);
  });

  it("an attempt longer than the lease keeps its entry (the lease is renewed): the 全媒体 gets it once", async () => {
    stack = await startStack({
      config: (raw) => {
        raw.delivery.leaseSec = 5;
        raw.delivery.timeoutMs = 20_000;
      },
    });
    stack.omni.setDelay(7000); // the 全媒体 answers after the 5 s lease would have run out
    await stack.wecom.appUserSendsText(AGENT, "slow", "慢慢来");
    await eventually(async () => (await stack?.gw.store.outboxCounts())?.done === 1, 15_000, "the delivery");
    expect(stack.omni.received).toHaveLength(1);
    expect(stack.omni.rejected).toHaveLength(0);
  }, 20_000);

  it("gives up after maxAttempts into a dead letter visible in the admin API", async () => {
    stack = await startStack({ config: (c) => (c.delivery = { maxAttempts: 2, baseDelayMs: 10, maxDelayMs: 20, concurrency: 2, timeoutMs: 1000 }) });
    stack.omni.setFailure("errcode");
    await stack.wecom.appUserSendsText(AGENT, "zhaoliu", "会失败");
    const dead = await eventually(async () => {
      const r = await admin(stack as Stack, "/admin/outbox?state=dead");
      return r.body.items.length > 0 ? r.body.items : undefined;
    });
    expect(dead[0]).toMatchObject({ kind: "omni", state: "dead", attempts: 2, lastError: expect.stringContaining("30004") });
  });
});

describe("AI bot", () => {
  it("answers a message at once with an encrypted stream reply, and delivers the message", async () => {
    stack = await startStack();
    const r = await stack.wecom.botUserSendsText("aibHELPER", "zhangsan", "帮我查一下");
    expect(r.status).toBe(200);
    expect(r.replyError).toBeUndefined();
    expect(r.reply).toMatchObject({ msgtype: "stream", stream: { finish: false, content: "正在为您转接人工…", id: expect.stringMatching(/^s[0-9a-f]{24}$/) } });
    const [got] = await stack.omni.waitFor(1);
    expect(got?.body).toMatchObject({ FromUserId: "bot:aibHELPER:user:zhangsan", MsgType: "text", Content: "帮我查一下" });
    const id = (r.reply as { stream: { id: string } }).stream.id;
    const poll = await stack.wecom.botPollStream("aibHELPER", id, "zhangsan");
    expect(poll.reply).toMatchObject({ msgtype: "stream", stream: { id } });
  });
});

describe("AI bot media", () => {
  it("an image's encrypted URL is downloaded, decrypted with the bot's key and served by a signed link", async () => {
    stack = await startStack();
    const png = Buffer.from("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489", "hex");
    const url = stack.wecom.putBotMedia("aibHELPER", png);
    const r = await stack.wecom.botSends("aibHELPER", {
      msgid: "bot-img-1",
      aibotid: "aibHELPER",
      chattype: "single",
      from: { userid: "lisi" },
      msgtype: "image",
      image: { url },
    });
    expect(r.status).toBe(200);
    const [got] = await stack.omni.waitFor(1);
    expect(got?.body.MsgType).toBe("image");
    const res = await fetch(got?.body.Content as string);
    expect(Buffer.from(await res.arrayBuffer())).toEqual(png);
    expect(res.headers.get("content-type")).toBe("image/png");
  });
});

describe("access tokens", () => {
  it("concurrent callers share one gettoken, and the token is cached in the store", async () => {
    stack = await startStack();
    const creds = { corpId: CORP, secret: "app-secret" };
    const tokens = await Promise.all(Array.from({ length: 5 }, () => stack?.gw.gateway.wecom.token(creds)));
    expect(new Set(tokens).size).toBe(1);
    expect(stack.wecom.requests.filter((q) => q.path.endsWith("/gettoken"))).toHaveLength(1);
    await stack.restart();
    // a new process reads the cached token from the store instead of asking again
    await stack.gw.gateway.wecom.token(creds);
    expect(stack.wecom.requests.filter((q) => q.path.endsWith("/gettoken"))).toHaveLength(1);
  });

  it("a token close to expiry is refreshed early", async () => {
    let now = Date.now();
    stack = await startStack();
    const { WeComClient } = await import("../src/clients/wecom.js");
    const client = new WeComClient({ apiBase: stack.wecom.url, store: stack.gw.store, now: () => now, refreshEarlyMs: 60_000 });
    const creds = { corpId: CORP, secret: "app-secret" };
    const first = await client.token(creds);
    now += 7200_000 - 30_000; // 30 s before expiry: inside the early-refresh margin
    await client.token(creds);
    expect(stack.wecom.requests.filter((q) => q.path.endsWith("/gettoken"))).toHaveLength(2);
    expect(first).toBeTruthy();
  });
});

describe("session archive push", () => {
  async function push(s: Stack, body: string, secret = ARCHIVE_SECRET) {
    const res = await fetch(`${s.gw.url}/archive/push`, { method: "POST", body, headers: { "x-archive-secret": secret, "content-type": "application/json" } });
    return { status: res.status, body: await res.json() };
  }

  it("stores a record once and delivers it; other push types are kept, not delivered", async () => {
    stack = await startStack();
    const rec = fixture("archive", "record-text.json");
    expect(await push(stack, rec)).toEqual({ status: 200, body: { errcode: 0, errmsg: "ok" } });
    expect((await push(stack, rec)).status).toBe(200);
    expect((await push(stack, fixture("archive", "push-type-38.json"))).status).toBe(200);
    const [got] = await stack.omni.waitFor(1);
    expect(got?.body.MsgType).toBe("text");
    await sleep(200);
    expect(stack.omni.received).toHaveLength(1);
    const archive = await admin(stack, "/admin/archive");
    expect(archive.body.items.map((a: { pushType: number }) => a.pushType).sort()).toEqual([101, 38]);
  });

  it("refuses a wrong secret and malformed bodies", async () => {
    stack = await startStack();
    expect((await push(stack, fixture("archive", "record-text.json"), "wrong-secret-000000")).status).toBe(401);
    expect((await push(stack, "{not json")).status).toBe(400);
    expect((await admin(stack, "/admin/archive")).body.items).toEqual([]);
  });
});

describe("operations", () => {
  it("health, readiness and metrics", async () => {
    stack = await startStack();
    expect((await fetch(`${stack.gw.url}/healthz`)).status).toBe(200);
    expect(await (await fetch(`${stack.gw.url}/readyz`)).json()).toEqual({ status: "ready", store: process.env.WB_TEST_STORE === "postgres" ? "postgres" : "sqlite" });
    await stack.wecom.appUserSendsText(AGENT, "m1", "x");
    await stack.omni.waitFor(1);
    const text = await (await fetch(`${stack.gw.url}/metrics`)).text();
    for (const name of [
      "wecom_bridge_callbacks_total",
      "wecom_bridge_dedup_hits_total",
      "wecom_bridge_kf_pull_lag_seconds",
      "wecom_bridge_outbox_depth",
      "wecom_bridge_delivery_attempts_total",
      "wecom_bridge_delivery_failures_total",
      "wecom_bridge_wecom_errcodes_total",
      "wecom_bridge_callback_duration_seconds",
    ]) {
      expect(text).toContain(name);
    }
    expect(text).toMatch(/wecom_bridge_callbacks_total\{channel="app",outcome="stored"\} 1/);
  });

  it("the admin API needs the bearer token, answers paged items, and never shows a secret", async () => {
    stack = await startStack();
    expect((await fetch(`${stack.gw.url}/admin/messages`)).status).toBe(401);
    expect((await fetch(`${stack.gw.url}/admin/messages`, { headers: { authorization: "Bearer wrong" } })).status).toBe(401);
    for (let i = 0; i < 3; i++) await stack.wecom.appUserSendsText(AGENT, `u${i}`, `t${i}`);
    await stack.omni.waitFor(3);
    const page1 = await admin(stack, "/admin/messages?limit=2");
    expect(page1.body.items).toHaveLength(2);
    const page2 = await admin(stack, `/admin/messages?limit=2&before=${page1.body.next}`);
    expect(page2.body.items).toHaveLength(1);
    const convs = await admin(stack, "/admin/conversations");
    expect(convs.body.items).toHaveLength(3);
    for (const path of ["/admin/messages", "/admin/conversations", "/admin/outbox?state=done", "/admin/cursors", "/admin/archive"]) {
      const text = JSON.stringify((await admin(stack, path)).body);
      for (const secret of ["app-secret", "apptoken", APP_AES, "omni-secret", ARCHIVE_SECRET, ADMIN]) expect(text).not.toContain(secret);
    }
  });
});

describe("secrets", () => {
  it("never reach the logs, whatever happens", async () => {
    const lines: string[] = [];
    stack = await startStack({ log: createLogger({ level: "debug", write: (l) => lines.push(l) }) });
    const token = ((await (await fetch(`${stack.wecom.url}/cgi-bin/gettoken?corpid=${CORP}&corpsecret=app-secret`)).json()) as { access_token: string }).access_token;
    await stack.wecom.appUserSendsText(AGENT, "u1", "hello");
    await stack.wecom.kfCustomerSends(KFID, "wmS", { msgtype: "text", text: { content: "kf" } });
    await stack.omni.waitFor(2);
    stack.wecom.expireTokens();
    stack.omni.setFailure("errcode", 2);
    stack.wecom.failNext("kf/sync_msg", 60020);
    await stack.wecom.kfCustomerSends(KFID, "wmS", { msgtype: "text", text: { content: "kf2" } });
    await fetch(`${stack.gw.url}/wecom/app/support?msg_signature=bad&timestamp=1&nonce=1`, { method: "POST", body: "<xml><Encrypt>x</Encrypt></xml>" });
    await fetch(`${stack.gw.url}/archive/push?secret=wrong`, { method: "POST", body: "{}" });
    await stack.omni.waitFor(3, 10_000);
    const text = lines.join("");
    expect(lines.length).toBeGreaterThan(3);
    for (const secret of ["app-secret", "apptoken", APP_AES, BOT_AES, "omni-secret", ARCHIVE_SECRET, ADMIN, token]) expect(text).not.toContain(secret);
  });
});

describe("more endpoints", () => {
  it("bot URL verification, archive secret in the query, an IP allow-list, admin time filters", async () => {
    stack = await startStack({ config: (c) => (c.archive.allowIps = ["10.9.9.9"]) });
    const v = await stack.wecom.verifyUrl("bot", "helper");
    expect(v.status).toBe(200);
    expect(v.body).toBe(v.expected);
    const refused = await fetch(`${stack.gw.url}/archive/push?secret=${ARCHIVE_SECRET}`, { method: "POST", body: fixture("archive", "record-text.json") });
    expect(refused.status).toBe(403);
    await stack.stop();
    stack = await startStack();
    const ok = await fetch(`${stack.gw.url}/archive/push?secret=${ARCHIVE_SECRET}`, { method: "POST", body: fixture("archive", "record-text.json") });
    expect(ok.status).toBe(200);
    const t0 = Date.now();
    await stack.wecom.appUserSendsText(AGENT, "late", "after t0");
    await stack.omni.waitFor(2);
    const since = await admin(stack, `/admin/messages?since=${t0 - 1000}`);
    expect(since.body.items.map((m: { conversationId: string }) => m.conversationId)).toEqual([`app:${CORP}:${AGENT}:late`]);
    const until = await admin(stack, `/admin/messages?until=${t0 - 1000}`);
    expect(until.body.items).toHaveLength(1);
    expect(until.body.items[0].channel).toBe("archive");
  });
});

describe("the gateway's clock", () => {
  it("stamps stored items with its own clock: a gateway whose clock is behind the wall still delivers at once", async () => {
    stack = await startStack({ now: () => Date.now() - 120_000 });
    await stack.wecom.appUserSendsText(AGENT, "zhangsan", "时钟");
    const [got] = await stack.omni.waitFor(1, 3000);
    expect(got?.body.Content).toBe("时钟");
    const listing = (await (await fetch(`${stack.gw.url}/admin/messages?limit=1`, { headers: { authorization: `Bearer ${ADMIN}` } })).json()) as { items: { receivedAt: number }[] };
    const [row] = listing.items;
    expect(Date.now() - (row?.receivedAt ?? 0)).toBeGreaterThan(100_000);
  });
});
