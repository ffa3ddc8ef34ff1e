/**
 * Many corps in one gateway (`wecom.corps`), end to end over loopback: two WeCom simulators (one
 * per corp, behind a small router at `wecom.apiBase` that sends each call to its corp's simulator
 * by `corpid` or `access_token`), two 全媒体 simulators (corp A on the top-level `omni`, corp B on
 * its own), and one gateway. Each corp's callbacks are stored under its tenant and delivered to its
 * 全媒体; archive pushes go to the corp of their secret; a 全媒体 answer is routed only within the
 * corps of the credential that signed it, and sent by its corp's WeCom app; the admin API filters
 * every listing by `?tenant=`.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Config, parseConfig } from "../src/config.js";
import { Gateway, type RunningGateway, runGateway } from "../src/gateway/index.js";
import { silentLogger } from "../src/log.js";
import { omniSignature } from "../src/omni/index.js";
import { OmniSimulator } from "../src/sim/omni.js";
import { WeComSimulator } from "../src/sim/wecom.js";
import { openStore } from "../src/store/index.js";
import { fixture } from "./helpers.js";
import { aesKey } from "./sim-wecom-helpers.js";
import { ADMIN, APP_AES, ARCHIVE_SECRET, BOT_AES, CORP, dropStoreOf, eventually, freePort, KFID, startStack, storeFor } from "./stack.js";
import { closeTestServers } from "./test-server.js";
import { weComRouter } from "./wecom-router.js";

const CORP_A = CORP;
const CORP_B = "wwB0000000000000b2";
/** Both corps have an app with the same agentId: agentIds are per corp. */
const AGENT = 1000002;
const KFID_B = "wkBBBBBBBBBBBBB_BBBBBBBBBBBBBBBBB";
const APP_B_AES = aesKey();
const BOT_B_AES = aesKey();
const ARCHIVE_A = "archive-secret-of-corp-A";
const ARCHIVE_B = "archive-secret-of-corp-B";

const APPS_A = [{ name: "support", agentId: AGENT, secret: "app-secret-a", token: "apptokena", encodingAESKey: APP_AES, kf: true }];
const APPS_B = [{ name: "sales", agentId: AGENT, secret: "app-secret-b", token: "apptokenb", encodingAESKey: APP_B_AES, kf: true }];
const BOTS_A = [{ name: "helper", botId: "aibHELPERA", token: "bottokena", encodingAESKey: BOT_AES }];
const BOTS_B = [{ name: "bhelper", botId: "aibHELPERB", token: "bottokenb", encodingAESKey: BOT_B_AES }];

let simA: WeComSimulator;
let simB: WeComSimulator;
/** The top-level 全媒体 (corp A has none of its own). */
let omniTop: OmniSimulator;
/** Corp B's own 全媒体. */
let omniB: OmniSimulator;
let gw: RunningGateway;
let config: Config;
/** The stream corp B's bot opened for zhaoliu's message. */
let streamB: string;

/** The main gateway's folder (and, on PostgreSQL, the key of its schema). */
let mainDir = "";

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), "wb-corps-"));
  mainDir = dir;
  simA = await WeComSimulator.start({ corpId: CORP_A, apps: APPS_A, bots: BOTS_A, callbackTimeoutMs: 1000, retryIntervalMs: 50 });
  simB = await WeComSimulator.start({ corpId: CORP_B, apps: APPS_B, bots: BOTS_B, callbackTimeoutMs: 1000, retryIntervalMs: 50 });
  simA.addKfAccount(KFID, "A 的客服");
  simB.addKfAccount(KFID_B, "B 的客服");
  omniTop = await OmniSimulator.start({ appId: "1001", secret: "omni-secret" });
  omniB = await OmniSimulator.start({ appId: "2002", secret: "omni-secret-b" });
  const apiBase = await weComRouter([simA, simB]);
  const port = await freePort();
  config = parseConfig({
    listen: { host: "127.0.0.1", port },
    publicUrl: `http://127.0.0.1:${port}`,
    store: storeFor(dir),
    adminToken: ADMIN,
    mediaDir: join(dir, "media"),
    wecom: {
      apiBase,
      corps: [
        { corpId: CORP_A, apps: APPS_A, bots: BOTS_A, archive: { secret: ARCHIVE_A, allowIps: ["10.1.1.1"] } },
        { corpId: CORP_B, apps: APPS_B, bots: BOTS_B, archive: { secret: ARCHIVE_B }, omni: { baseUrl: omniB.url, appId: "2002", secret: "omni-secret-b" } },
      ],
    },
    omni: { baseUrl: omniTop.url, version: "v1", appId: "1001", secret: "omni-secret", pathPrefix: "/qmtapi" },
    delivery: { maxAttempts: 6, baseDelayMs: 20, maxDelayMs: 200, concurrency: 4, timeoutMs: 2000 },
  });
  gw = await runGateway(config, { log: silentLogger });
  simA.setCallbackUrl("app", "support", `${gw.url}/wecom/app/support`);
  simA.setCallbackUrl("bot", "helper", `${gw.url}/wecom/bot/helper`);
  simB.setCallbackUrl("app", "sales", `${gw.url}/wecom/app/sales`);
  simB.setCallbackUrl("bot", "bhelper", `${gw.url}/wecom/bot/bhelper`);
  omniTop.setAppUrl(gw.url, "/qmtapi");
  omniB.setAppUrl(gw.url, "/qmtapi");

  // one conversation per channel and corp
  await simA.appUserSendsText(AGENT, "zhangsan", "A 的应用消息");
  await simB.appUserSendsText(AGENT, "lisi", "B 的应用消息");
  await simA.botUserSendsText("aibHELPERA", "wangwu", "A 的机器人消息");
  streamB = (await simB.botUserSendsText("aibHELPERB", "zhaoliu", "B 的机器人消息")).stream?.streamId as string;
  await simA.kfCustomerSends(KFID, "wmCUSTOMERA", { msgtype: "text", text: { content: "A 的客服消息" } });
  await simB.kfCustomerSends(KFID_B, "wmCUSTOMERB", { msgtype: "text", text: { content: "B 的客服消息" } });
  await omniTop.waitFor(3);
  await omniB.waitFor(3);
}, 30_000);

afterAll(async () => {
  await gw?.stop();
  await dropStoreOf(mainDir);
  await simA?.close();
  await simB?.close();
  await omniTop?.close();
  await omniB?.close();
  await closeTestServers();
});

const errcodeOf = (r: { reply: unknown }) => (r.reply as { errcode: number }).errcode;
const fromIds = (sim: OmniSimulator) => sim.received.map((r) => r.body.FromUserId);
const appTexts = (sim: WeComSimulator) => sim.sent.filter((s) => s.api === "message/send").map((s) => `${s.body.touser} ${(s.body.text as { content: string }).content}`);
const kfTexts = (sim: WeComSimulator) => sim.sent.filter((s) => s.api === "kf/send_msg").map((s) => `${s.body.touser} ${(s.body.text as { content: string }).content}`);

async function admin(path: string): Promise<{ status: number; body: any }> {
  const res = await fetch(`${gw.url}${path}`, { headers: { authorization: `Bearer ${ADMIN}` } });
  return { status: res.status, body: await res.json() };
}

/** A push to the archive endpoint from `remoteAddress` (the gateway's own request shape: the allow-list needs an address). */
async function push(secret: string, remoteAddress: string, body = fixture("archive", "record-text.json")) {
  const r = await gw.gateway.handle({ method: "POST", path: "/archive/push", query: new URLSearchParams({ secret }), headers: {}, body, remoteAddress });
  return { status: r.status, body: JSON.parse(String(r.body)) };
}

describe("many corps: inbound", () => {
  it("each corp's app, bot and KF messages are stored under its tenant and go to its corp's 全媒体 (A's to the top-level one)", async () => {
    expect(gw.store.engine).toBe(process.env.WB_TEST_STORE === "postgres" ? "postgres" : "sqlite");
    const a = await gw.store.listMessages({ tenant: CORP_A }, { limit: 50 });
    const b = await gw.store.listMessages({ tenant: CORP_B }, { limit: 50 });
    expect(a.map((m) => m.conversationId).sort()).toEqual([`app:${CORP_A}:${AGENT}:zhangsan`, "bot:aibHELPERA:user:wangwu", `kf:${CORP_A}:${KFID}:wmCUSTOMERA`]);
    expect(b.map((m) => m.conversationId).sort()).toEqual([`app:${CORP_B}:${AGENT}:lisi`, "bot:aibHELPERB:user:zhaoliu", `kf:${CORP_B}:${KFID_B}:wmCUSTOMERB`]);
    // corp A has no omni of its own: the top-level one; corp B's own gets only B's
    expect(fromIds(omniTop).sort()).toEqual(a.map((m) => m.conversationId).sort());
    expect(fromIds(omniB).sort()).toEqual(b.map((m) => m.conversationId).sort());
    // each corp's KF app pulled its own corp's sync_msg
    expect(simA.syncCalls.map((c) => c.openKfId)).toContain(KFID);
    expect(simB.syncCalls.map((c) => c.openKfId)).toContain(KFID_B);
    expect(simA.syncCalls.map((c) => c.openKfId)).not.toContain(KFID_B);
  });

  it("archive pushes go to the corp of their secret, with that corp's allowIps; an unknown secret is refused as a wrong one", async () => {
    // the record names a third corp in its corpid: the secret decides the tenant
    expect(await push(ARCHIVE_B, "10.2.2.2")).toEqual({ status: 200, body: { errcode: 0, errmsg: "ok" } });
    // A's pushes come only from A's allowIps; B's secret is not limited by them
    expect(await push(ARCHIVE_A, "10.2.2.2")).toMatchObject({ status: 403, body: { errcode: "ip_refused" } });
    expect(await push(ARCHIVE_A, "10.1.1.1", fixture("archive", "push-type-38.json"))).toEqual({ status: 200, body: { errcode: 0, errmsg: "ok" } });
    expect(await push("archive-secret-of-nobody", "10.1.1.1")).toEqual({ status: 401, body: { errcode: "bad_secret", errmsg: "missing or wrong archive secret" } });
    const b = await gw.store.listArchive({ limit: 10, tenant: CORP_B });
    expect(b.map((r) => r.pushType)).toEqual([101]);
    expect((await gw.store.listArchive({ limit: 10, tenant: CORP_A })).map((r) => r.pushType)).toEqual([38]);
    // the record is a message of corp B, delivered to B's 全媒体
    const [record] = await gw.store.listMessages({ tenant: CORP_B, channel: "archive" }, { limit: 10 });
    expect(record?.tenant).toBe(CORP_B);
    await eventually(() => omniB.received.some((r) => r.body.FromUserId === record?.conversationId));
    expect(fromIds(omniTop)).not.toContain(record?.conversationId);
  });
});

describe("many corps: 全媒体 answers", () => {
  it("an answer signed with corp B's credential to a corp-A conversation is 30006 and sends nothing; signed with A's, corp A's app sends it", async () => {
    const to = `app:${CORP_A}:${AGENT}:zhangsan`;
    const refused = await omniB.sendAgentReply({ ToUserId: to, MsgType: "text", Content: "B 不能答 A" });
    expect(refused.reply).toEqual({ errcode: 30006, errmsg: "unknown ToUserId: not a conversation address of this gateway" });
    // KF and bot conversations of A too (a bot's corp is its botId's)
    expect(errcodeOf(await omniB.sendAgentReply({ ToUserId: `kf:${CORP_A}:${KFID}:wmCUSTOMERA`, MsgType: "text", Content: "B 不能答 A" }))).toBe(30006);
    expect(errcodeOf(await omniB.sendAgentReply({ ToUserId: "bot:aibHELPERA:user:wangwu", MsgType: "text", Content: "B 不能答 A" }))).toBe(30006);
    // and the other way round
    expect(errcodeOf(await omniTop.sendAgentReply({ ToUserId: `app:${CORP_B}:${AGENT}:lisi`, MsgType: "text", Content: "A 不能答 B" }))).toBe(30006);

    expect(errcodeOf(await omniTop.sendAgentReply({ ToUserId: to, MsgType: "text", Content: "A 的回答" }))).toBe(0);
    expect(errcodeOf(await omniB.sendAgentReply({ ToUserId: `app:${CORP_B}:${AGENT}:lisi`, MsgType: "text", Content: "B 的回答" }))).toBe(0);
    expect(errcodeOf(await omniB.sendAgentReply({ ToUserId: `kf:${CORP_B}:${KFID_B}:wmCUSTOMERB`, MsgType: "text", Content: "B 的客服回答" }))).toBe(0);
    await eventually(() => appTexts(simA).length === 1 && appTexts(simB).length === 1 && kfTexts(simB).length === 1, 5000, "the three answers sent");
    // the same agentId in both corps: each answer went through its own corp's app (token of its corpid)
    expect(appTexts(simA)).toEqual(["zhangsan A 的回答"]);
    expect(appTexts(simB)).toEqual(["lisi B 的回答"]);
    expect(kfTexts(simB)).toEqual(["wmCUSTOMERB B 的客服回答"]);
    expect(kfTexts(simA)).toEqual([]);
    // a bot conversation belongs to the corp of its botId: B's answer goes into B's bot's stream
    expect(errcodeOf(await omniB.sendAgentReply({ ToUserId: "bot:aibHELPERB:user:zhaoliu", MsgType: "text", Content: "B 的机器人回答" }))).toBe(0);
    await eventually(async () => {
      await simB.botPollStream("aibHELPERB", streamB, "zhaoliu");
      return simB.botStream("aibHELPERB", streamB)?.frames.at(-1)?.content === "B 的机器人回答";
    }, 5000, "B's answer in B's stream");
    // nothing of the refused ones was queued; the others under their conversation's corp
    const queued = await gw.store.listOutbox(["pending", "inflight", "done", "dead", "refused"], { limit: 100 });
    const answers = queued.filter((e) => e.kind !== "omni" && (e.payload as { op?: string }).op === "message");
    expect(answers.map((e) => [e.tenant, e.conversationId]).sort()).toEqual(
      [
        [CORP_A, to],
        [CORP_B, "bot:aibHELPERB:user:zhaoliu"],
        [CORP_B, `app:${CORP_B}:${AGENT}:lisi`],
        [CORP_B, `kf:${CORP_B}:${KFID_B}:wmCUSTOMERB`],
      ].sort(),
    );
  });

  it("an entry whose corp is no longer configured is refused, the 全媒体 told, and nothing sent with another corp's app", async () => {
    // the addresses of corp A's customers, under a corp that is gone: only the corp tells them apart
    const goneKf = `kf:wwGONE:${KFID}:wmCUSTOMERA`;
    const goneApp = `app:wwGONE:${AGENT}:zhangsan`;
    const entry = (kind: "kf_send" | "app_send", to: string) => ({ kind, conversationId: to, payload: { op: "message", body: { ToUserId: to, MsgType: "text", Content: "旧企业的回答" } } });
    await gw.store.acceptOutbound({ tenant: "wwGONE", keys: [], entries: [entry("kf_send", goneKf), entry("app_send", goneApp)], now: Date.now() });
    gw.gateway.notifyOutbound();
    // the notices go to the top-level 全媒体 (a corp without its own)
    for (const gone of [goneKf, goneApp]) {
      const notice = await eventually(() => omniTop.received.find((r) => r.body.FromUserId === gone), 5000, `the notice for ${gone}`);
      expect(notice.body).toMatchObject({ MsgType: "event", Content: "send_failed" });
    }
    const refused = (await gw.store.listOutbox(["refused"], { limit: 10, tenant: "wwGONE" })).map((e) => e.conversationId);
    expect(refused.sort()).toEqual([goneApp, goneKf].sort());
    expect([...appTexts(simA), ...kfTexts(simA), ...appTexts(simB), ...kfTexts(simB)].join("\n")).not.toContain("旧企业的回答");
  });

  it("a request no configured credential signed is refused as before (30003)", async () => {
    const ts = String(Date.now());
    const res = await fetch(`${gw.url}/qmtapi/staffService/message?timestamp=${ts}&signature=${omniSignature("2002", "omni-secret", ts)}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ ToUserId: `app:${CORP_B}:${AGENT}:lisi`, MsgType: "text", Content: "x" }),
    });
    expect(await res.json()).toEqual({ errcode: 30003, errmsg: "signature mismatch" });
  });
});

describe("many corps: the admin API's ?tenant=", () => {
  it("filters every listing to one corp", async () => {
    // an archive push of each corp (a repeat of the earlier ones changes nothing)
    await push(ARCHIVE_B, "10.2.2.2");
    await push(ARCHIVE_A, "10.1.1.1", fixture("archive", "push-type-38.json"));
    const listings: [string, (item: any) => string][] = [
      ["/admin/conversations", (c) => c.tenant],
      ["/admin/messages", (m) => m.tenant],
      ["/admin/archive", (a) => a.tenant],
      ["/admin/outbox?state=pending,inflight,done,dead,refused", (o) => o.tenant],
      ["/admin/cursors", (c) => c.tenant],
    ];
    for (const [path, tenantOf] of listings) {
      const all = await admin(path);
      expect(all.status, path).toBe(200);
      // both corps have rows in every listing
      expect([...new Set(all.body.items.map(tenantOf))], path).toEqual(expect.arrayContaining([CORP_A, CORP_B]));
      for (const corp of [CORP_A, CORP_B]) {
        const one = await admin(`${path}${path.includes("?") ? "&" : "?"}tenant=${corp}`);
        expect(one.status, path).toBe(200);
        expect(one.body.items.length, `${path} ${corp}`).toBeGreaterThan(0);
        expect(one.body.items, `${path} ${corp}`).toEqual(all.body.items.filter((i: any) => tenantOf(i) === corp));
      }
      const unknown = await admin(`${path}${path.includes("?") ? "&" : "?"}tenant=wwNOSUCHCORP`);
      expect(unknown, path).toEqual({ status: 200, body: { items: [], next: null } });
    }
  });

  it("pages within the tenant", async () => {
    const first = await admin(`/admin/messages?tenant=${CORP_B}&limit=1`);
    expect(first.body.items).toHaveLength(1);
    const second = await admin(`/admin/messages?tenant=${CORP_B}&limit=1&before=${first.body.next}`);
    expect(second.body.items[0].tenant).toBe(CORP_B);
    expect(second.body.items[0].seq).toBeLessThan(first.body.items[0].seq);
  });

  it.each([
    ["longer than 64 characters", "w".repeat(65)],
    ["a control character", "ww%00A"],
    ["a line break", "ww%0AA"],
    ["empty", ""],
  ])("a malformed tenant (%s) is a 400 naming it", async (_what, value) => {
    for (const listing of ["conversations", "messages", "archive", "outbox", "cursors"]) {
      const r = await admin(`/admin/${listing}?tenant=${value}`);
      expect(r.status, listing).toBe(400);
      expect(r.body.errcode).toBe("bad_param");
      expect(r.body.errmsg).toMatch(/^tenant: /);
    }
    // 64 characters is a tenant (of no corp here)
    expect(await admin(`/admin/messages?tenant=${"w".repeat(64)}`)).toEqual({ status: 200, body: { items: [], next: null } });
  });
});

describe("many corps: each 全媒体's pathPrefix", () => {
  it("serves every pathPrefix in use, each with the credentials configured for it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "wb-corps-paths-"));
    const store = await openStore(storeFor(dir));
    const cfg = parseConfig({
      publicUrl: "http://127.0.0.1:1",
      adminToken: ADMIN,
      mediaDir: join(dir, "media"),
      wecom: {
        corps: [
          { corpId: CORP_A, apps: APPS_A },
          { corpId: CORP_B, apps: APPS_B, omni: { baseUrl: "http://127.0.0.1:2", appId: "2002", secret: "omni-secret-b", pathPrefix: "/qmtapi-b" } },
        ],
      },
      omni: { baseUrl: "http://127.0.0.1:3", appId: "1001", secret: "omni-secret" },
    });
    const gateway = new Gateway({ config: cfg, store, log: silentLogger });
    try {
      const send = async (path: string, appId: string, secret: string, toUserId: string) => {
        const timestamp = String(Date.now());
        const query = new URLSearchParams({ timestamp, signature: omniSignature(appId, secret, timestamp) });
        const r = await gateway.handle({ method: "POST", path, query, headers: {}, body: JSON.stringify({ ToUserId: toUserId, MsgType: "text", Content: "你好" }) });
        return JSON.parse(String(r.body)) as { errcode: number; errmsg: string };
      };
      expect(gateway.omniPaths.sort()).toEqual(["/qmtapi-b/staffService/message", "/qmtapi/staffService/message"]);
      expect(gateway.answersOversize("/qmtapi-b/staffService/message")).toBe(true);
      expect(await send("/qmtapi-b/staffService/message", "2002", "omni-secret-b", `app:${CORP_B}:${AGENT}:lisi`)).toEqual({ errcode: 0, errmsg: "ok" });
      expect(await send("/qmtapi/staffService/message", "1001", "omni-secret", `app:${CORP_A}:${AGENT}:zhangsan`)).toEqual({ errcode: 0, errmsg: "ok" });
      // a credential is taken only on its own path
      expect((await send("/qmtapi/staffService/message", "2002", "omni-secret-b", `app:${CORP_B}:${AGENT}:lisi`)).errcode).toBe(30003);
      expect((await send("/qmtapi-b/staffService/message", "1001", "omni-secret", `app:${CORP_A}:${AGENT}:zhangsan`)).errcode).toBe(30003);
      const queued = await store.listOutbox(["pending"], { limit: 10 });
      expect(queued.map((e) => [e.tenant, e.conversationId]).sort()).toEqual([
        [CORP_A, `app:${CORP_A}:${AGENT}:zhangsan`],
        [CORP_B, `app:${CORP_B}:${AGENT}:lisi`],
      ]);
    } finally {
      await gateway.stop();
      await store.close();
      await dropStoreOf(dir);
    }
  });
});

describe("the single-corp form, unchanged", () => {
  it("an archive record keeps its own corpid as tenant, and goes to the one 全媒体", async () => {
    const stack = await startStack();
    try {
      const res = await fetch(`${stack.gw.url}/archive/push`, { method: "POST", body: fixture("archive", "record-text.json"), headers: { "x-archive-secret": ARCHIVE_SECRET } });
      expect(res.status).toBe(200);
      // the fixture's record names ww1037de59e176cef9, not the configured corp
      expect((await stack.gw.store.listArchive({ limit: 10 })).map((a) => a.tenant)).toEqual(["ww1037de59e176cef9"]);
      const [delivered] = await stack.omni.waitFor(1);
      expect(delivered?.body.FromUserId).toMatch(/^archive:ww1037de59e176cef9:/);
      expect(stack.gw.gateway.corps.map((c) => c.tenant)).toEqual([CORP]);
    } finally {
      await stack.stop();
    }
  });
});
