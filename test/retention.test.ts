/**
 * Retention end to end, with an injected clock: a real gateway stores and delivers messages, then
 * the pruner runs as if days had passed. Old rows and files go; recent rows, dead letters and
 * anything pending or in flight stay; ledger keys outlive their messages by at least 4 days; erase
 * and purge work from the command line while the gateway serves.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { parseIsoDate, runCli } from "../src/cli/main.js";
import { configSchema } from "../src/config.js";
import { removeMediaFile, sweepPartialFiles } from "../src/gateway/media.js";
import { PARTIAL_FILE_MAX_AGE_MS, pruneCutoffs, Retention, retentionDays } from "../src/gateway/retention.js";
import { silentLogger } from "../src/log.js";
import { ADMIN, AGENT, ARCHIVE_SECRET, CORP, eventually, type Stack, startStack } from "./stack.js";
import { fixture } from "./helpers.js";

const DAY = 86_400_000;
let stack: Stack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

async function admin(s: Stack, path: string): Promise<any> {
  return (await fetch(`${s.gw.url}${path}`, { headers: { authorization: `Bearer ${ADMIN}` } })).json();
}

/** A pruner over the stack's store whose clock is `days` ahead. */
function prunerAt(s: Stack, days: number, retention: Record<string, unknown> = {}): Retention {
  return new Retention({
    config: { retention: configSchema.shape.retention.parse(retention), mediaLinkTtlSec: s.config.mediaLinkTtlSec },
    store: s.gw.store,
    removeFile: async (row) => void (await removeMediaFile(s.config.mediaDir, row)),
    log: silentLogger,
    now: () => Date.now() + days * DAY,
  });
}

function imageXml(user: string, mediaId: string, msgId: string): string {
  return `<xml><ToUserName><![CDATA[${CORP}]]></ToUserName><FromUserName><![CDATA[${user}]]></FromUserName><CreateTime>${Math.floor(Date.now() / 1000)}</CreateTime><MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[https://wework.qpic.cn/x]]></PicUrl><MediaId><![CDATA[${mediaId}]]></MediaId><MsgId>${msgId}</MsgId><AgentID>${AGENT}</AgentID></xml>`;
}

const mediaFiles = (s: Stack) => (existsSync(s.config.mediaDir) ? readdirSync(s.config.mediaDir, { recursive: true, withFileTypes: true }).filter((d) => d.isFile()).length : 0);

describe("retention settings", () => {
  it("days per channel, ledger never under 4 days, media until links expire", () => {
    expect(retentionDays(30, "archive")).toBe(30);
    expect(retentionDays({ archive: 365, default: 30 }, "archive")).toBe(365);
    expect(retentionDays({ archive: 365, default: 30 }, "kf")).toBe(30);
    const now = 1_800_000_000_000;
    const c = pruneCutoffs({ retention: { days: { default: 1, archive: 365 }, intervalSec: 60, batchSize: 10, auditDays: 90 }, mediaLinkTtlSec: 3600 }, now);
    expect(c.messagesBefore.app).toBe(now - DAY);
    expect(c.ledgerBefore.app).toBe(now - 4 * DAY);
    expect(c.messagesBefore.archive).toBe(now - 365 * DAY);
    expect(c.ledgerBefore.archive).toBe(now - 365 * DAY);
    expect(c.archiveBefore).toBe(now - 365 * DAY);
    expect(c.mediaBefore).toBe(now - 3600_000);
    expect(c.auditBefore).toBe(now - 90 * DAY);
  });
});

describe("--before dates", () => {
  it("are real ISO dates or date-times with a zone", () => {
    expect(parseIsoDate("2026-11-30")).toBe(Date.UTC(2026, 10, 30));
    expect(parseIsoDate("2026-11-30T08:00:00Z")).toBe(Date.UTC(2026, 10, 30, 8));
    expect(parseIsoDate("2026-11-30T08:00+08:00")).toBe(Date.UTC(2026, 10, 30, 0));
    expect(parseIsoDate("2024-02-29")).toBe(Date.UTC(2024, 1, 29));
    for (const bad of ["2026-02-31", "2025-02-29", "2026-13-01", "2026-11-30T24:00:00Z", "2026-11-30T08:00:00", "30/11/2026", "yesterday", ""]) expect(parseIsoDate(bad), bad).toBeUndefined();
  });
});

describe("partial downloads", () => {
  it("those a killed process left are swept after an hour; fresh ones and finished files stay", async () => {
    const dir = mkdtempSync(join(tmpdir(), "wb-partial-"));
    mkdirSync(join(dir, CORP));
    const old = join(dir, CORP, "m1-0.abc123.tmp");
    const fresh = join(dir, CORP, "m2-0.def456.tmp");
    const done = join(dir, CORP, "m3-0");
    for (const f of [old, fresh, done]) writeFileSync(f, "x");
    const hourAgo = (Date.now() - 2 * 3_600_000) / 1000;
    utimesSync(old, hourAgo, hourAgo);
    utimesSync(done, hourAgo, hourAgo);
    writeFileSync(join(dir, "stray-file"), "not a tenant folder");
    expect(await sweepPartialFiles(dir, Date.now() - PARTIAL_FILE_MAX_AGE_MS)).toBe(1);
    expect([existsSync(old), existsSync(fresh), existsSync(done)]).toEqual([false, true, true]);
    expect(await sweepPartialFiles(join(dir, "missing"), Date.now())).toBe(0);
  });

  it("agents' files a killed process left in outbound-tmp are swept too", async () => {
    const dir = mkdtempSync(join(tmpdir(), "wb-partial-"));
    mkdirSync(join(dir, "outbound-tmp"));
    const old = join(dir, "outbound-tmp", "agent-media-0123456789abcdef01234567.part");
    const fresh = join(dir, "outbound-tmp", "agent-media-76543210fedcba9876543210.part");
    for (const f of [old, fresh]) writeFileSync(f, "x");
    const hourAgo = (Date.now() - 2 * 3_600_000) / 1000;
    utimesSync(old, hourAgo, hourAgo);
    expect(await sweepPartialFiles(dir, Date.now() - PARTIAL_FILE_MAX_AGE_MS)).toBe(1);
    expect([existsSync(old), existsSync(fresh)]).toEqual([false, true]);
  });
});

describe("retention", () => {
  it("old rows and files go; recent rows, dead letters and pending entries stay", async () => {
    stack = await startStack();
    const s = stack;
    const png = Buffer.from("89504e470d0a1a0a0000000d49484452", "hex");
    await s.wecom.appUserSendsText(AGENT, "old", "an old message");
    await s.wecom.appSends(AGENT, imageXml("old", s.wecom.putMedia(png, { contentType: "image/png", filename: "a.png" }), "7381973325934170101"));
    await s.wecom.kfCustomerSends("wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q", "wmOLD", { msgtype: "text", text: { content: "kf" } });
    expect((await fetch(`${s.gw.url}/archive/push?secret=${ARCHIVE_SECRET}`, { method: "POST", body: fixture("archive", "record-text.json") })).status).toBe(200);
    const delivered = await s.omni.waitFor(4);
    const link = delivered.find((g) => g.body.MsgType === "image")?.body.Content as string;
    expect((await fetch(link)).status).toBe(200);
    expect(mediaFiles(s)).toBe(1);
    await eventually(async () => (await admin(s, "/admin/outbox?state=pending,inflight")).items.length === 0, 5000, "everything delivered");

    // a dead letter and a pending entry: the 全媒体 refuses, then is down
    s.omni.setFailure("errcode");
    await s.wecom.appUserSendsText(AGENT, "dead", "refused for good");
    await eventually(async () => (await admin(s, "/admin/outbox?state=dead")).items.length === 1, 10_000, "a dead letter");
    await s.wecom.appUserSendsText(AGENT, "waiting", "still pending");
    await eventually(async () => (await admin(s, "/admin/messages?channel=app")).items.length === 4);

    // nothing is old yet: a run now removes nothing
    expect(await prunerAt(s, 0).run()).toEqual({ messages: 0, outbox: 0, ledger: 0, archive: 0, state: 0, audit: 0, media: 0 });

    // 31 days on, with a year for the archive
    const r = await prunerAt(s, 31, { days: { archive: 365, default: 30 } }).run();
    expect(r.messages).toBe(3); // app text, app image, KF text
    expect(r.media).toBe(1);
    expect(mediaFiles(s)).toBe(0);
    expect((await fetch(link)).status).toBe(404);
    const left = (await admin(s, "/admin/messages?limit=500")).items;
    const conversationsLeft = left.map((m: { conversationId: string }) => m.conversationId);
    expect(conversationsLeft).toHaveLength(3);
    expect(conversationsLeft).toEqual(expect.arrayContaining([`app:${CORP}:${AGENT}:dead`, `app:${CORP}:${AGENT}:waiting`, expect.stringMatching(/^archive:/)]));
    expect((await admin(s, "/admin/outbox?state=dead")).items).toHaveLength(1);
    expect((await admin(s, "/admin/outbox?state=pending,inflight")).items.length).toBeGreaterThanOrEqual(1);
    expect((await admin(s, "/admin/archive")).items).toHaveLength(1);
    const conversations = (await admin(s, "/admin/conversations")).items.map((c: { conversationId: string }) => c.conversationId);
    expect(conversations).not.toContain(`app:${CORP}:${AGENT}:old`);
  });

  it("ledger keys outlive their messages by at least 4 days, so a late retry is still recognised", async () => {
    stack = await startStack();
    const s = stack;
    const xml = fixture("app", "msg-text.xml");
    await s.wecom.appSends(AGENT, xml);
    await s.omni.waitFor(1);
    await eventually(async () => (await admin(s, "/admin/outbox?state=pending,inflight")).items.length === 0);
    const r2 = await prunerAt(s, 2, { days: 1 }).run();
    expect(r2).toMatchObject({ messages: 1, ledger: 0 });
    await s.wecom.appSends(AGENT, xml); // WeCom hands the same item over again
    const metrics = await (await fetch(`${s.gw.url}/metrics`)).text();
    expect(metrics).toMatch(/wecom_bridge_dedup_hits_total\{channel="app"\} 1/);
    expect((await admin(s, "/admin/messages")).items).toHaveLength(0);
    const r5 = await prunerAt(s, 5, { days: 1 }).run();
    expect(r5.ledger).toBeGreaterThanOrEqual(1);
  });

  it("erase and purge run from the command line while the gateway serves", async () => {
    stack = await startStack({ config: (c) => (c.delivery.maxAttempts = 1) });
    const s = stack;
    const file = join(s.dir, "bridge.json");
    writeFileSync(file, JSON.stringify({ ...s.config, store: s.config.store, retention: undefined }));
    const out: string[] = [];
    const io = { stdout: (t: string) => void out.push(t), stderr: (t: string) => void out.push(t), readStdin: () => "" };

    await s.wecom.appUserSendsText(AGENT, "pipl", "erase me");
    await s.wecom.appUserSendsText(AGENT, "keep", "keep me");
    await s.omni.waitFor(2);
    const address = `app:${CORP}:${AGENT}:pipl`;
    expect(await runCli(["erase", "--conversation", address, "--config", file], io)).toBe(0);
    expect(out.join("")).toMatch(/erased .*: 1 messages/);
    const msgs = (await admin(s, "/admin/messages")).items;
    expect(msgs.map((m: { conversationId: string }) => m.conversationId)).toEqual([`app:${CORP}:${AGENT}:keep`]);
    // the serving gateway goes on: a new message of the erased conversation is stored and delivered
    await s.wecom.appUserSendsText(AGENT, "pipl", "after erasure");
    await eventually(() => s.omni.received.some((g) => g.body.Content === "after erasure"));

    s.omni.setFailure("errcode");
    await s.wecom.appUserSendsText(AGENT, "dead", "dies");
    await eventually(async () => (await admin(s, "/admin/outbox?state=dead")).items.length === 1, 10_000, "a dead letter");
    expect(await runCli(["purge", "--dead", "--before", "2020-01-01", "--config", file], io)).toBe(0);
    expect((await admin(s, "/admin/outbox?state=dead")).items).toHaveLength(1);
    expect(await runCli(["purge", "--dead", "--config", file], io)).toBe(0);
    expect(out.join("")).toContain("1 dead letter removed");
    expect((await admin(s, "/admin/outbox?state=dead")).items).toHaveLength(0);
    const metrics = await (await fetch(`${s.gw.url}/metrics`)).text();
    expect(metrics).toMatch(/wecom_bridge_outbox_depth\{state="dead"\} 0/);
    expect(await runCli(["purge", "--config", file], io)).toBe(2);
    expect(await runCli(["purge", "--dead", "--before", "yesterday", "--config", file], io)).toBe(2);
    expect(await runCli(["purge", "--dead", "--before", "2026-02-31", "--config", file], io)).toBe(2);
    expect(await runCli(["purge", "--dead", "--before", "2026-11-30T25:00:00Z", "--config", file], io)).toBe(2);
    expect(await runCli(["erase", "--config", file], io)).toBe(2);
    // a mistyped address, or a mistyped store, is never a quiet success
    out.length = 0;
    expect(await runCli(["erase", "--conversation", `app:${CORP}:${AGENT}:nobody`, "--config", file], io)).toBe(1);
    expect(out.join("")).toContain("nothing was erased");
    const wrongStore = join(s.dir, "wrong.json");
    writeFileSync(wrongStore, JSON.stringify({ ...s.config, store: `sqlite:${join(s.dir, "typo.db")}` }));
    for (const args of [["erase", "--conversation", address], ["purge", "--dead"], ["replay", "--all"]]) {
      expect(await runCli([...args, "--config", wrongStore], io)).toBe(1);
    }
    expect(existsSync(join(s.dir, "typo.db"))).toBe(false);
  });

  it("a message whose media WeCom refused is delivered, finished (no dead letter) and pruned like any other", async () => {
    stack = await startStack();
    const s = stack;
    s.wecom.failNext("media/get", 40007);
    await s.wecom.appSends(AGENT, imageXml("gone", "MEDIA_ID_EXPIRED", "7381973325934170301"));
    const [got] = await s.omni.waitFor(1);
    expect(got?.body.Content).toBe("[图片: not available]");
    await eventually(async () => (await admin(s, "/admin/outbox?state=pending,inflight")).items.length === 0, 5000, "everything finished");
    expect((await admin(s, "/admin/outbox?state=dead")).items).toEqual([]);
    expect(await (await fetch(`${s.gw.url}/metrics`)).text()).toMatch(/wecom_bridge_outbox_depth\{state="dead"\} 0/);
    const r = await prunerAt(s, 31).run();
    expect(r.messages).toBe(1);
    expect((await admin(s, "/admin/messages")).items).toEqual([]);
  });

  it("an entry in flight, and its message, stay whatever their age", async () => {
    stack = await startStack();
    const s = stack;
    s.omni.setFailure("timeout"); // the 全媒体 holds the request: the entry stays in flight
    await s.wecom.appUserSendsText(AGENT, "inflight", "held by the 全媒体");
    await eventually(async () => (await admin(s, "/admin/outbox?state=inflight")).items.length === 1, 5000, "an entry in flight");
    const r = await prunerAt(s, 400).run();
    expect(r.messages).toBe(0);
    expect((await admin(s, "/admin/messages")).items).toHaveLength(1);
    s.omni.setFailure(false);
  });

  it("erasing a conversation while its media is being fetched keeps nothing of that media", async () => {
    stack = await startStack();
    const s = stack;
    const file = join(s.dir, "bridge.json");
    writeFileSync(file, JSON.stringify(s.config));
    s.wecom.setDelay("media/get", 700);
    await s.wecom.appSends(AGENT, imageXml("pipl2", s.wecom.putMedia(Buffer.from("89504e470d0a1a0a0000000d49484452", "hex"), { contentType: "image/png", filename: "id-card.png" }), "7381973325934170401"));
    const [msg] = (await admin(s, "/admin/messages")).items;
    const mediaKey = `m${msg.seq}-0`;
    // the download is under way (WeCom answers after 700 ms)
    await eventually(async () => (await admin(s, "/admin/outbox?state=inflight")).items.some((o: { kind: string }) => o.kind === "media"), 5000, "the media fetch in flight");
    const io = { stdout: () => undefined, stderr: () => undefined, readStdin: () => "" };
    expect(await runCli(["erase", "--conversation", `app:${CORP}:${AGENT}:pipl2`, "--config", file], io)).toBe(0);
    // the download finishes after the erasure: its file and row must not stay
    await eventually(() => s.wecom.requests.some((r) => r.path.endsWith("/media/get")), 5000, "media/get answered");
    await eventually(async () => mediaFiles(s) === 0 && (await s.gw.store.getMedia(CORP, mediaKey)) === undefined && !existsSync(join(s.config.mediaDir, CORP, mediaKey)), 5000, "nothing kept");
    // and stays so once the worker is done with it
    await s.gw.gateway.delivery.stop();
    expect(await s.gw.store.getMedia(CORP, mediaKey)).toBeUndefined();
    expect(mediaFiles(s)).toBe(0);
  });
});
