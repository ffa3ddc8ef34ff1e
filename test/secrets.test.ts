/**
 * No secret ever leaves the gateway: a gateway with known secrets is driven through its success
 * paths and its failure paths (bad signatures, stale timestamps, WeCom errors and token refreshes,
 * the 全媒体 down, wrong archive and admin secrets, malformed and oversized requests, config
 * errors), and every log line, error answer, admin answer and the /metrics text is searched for
 * each secret, key, token and access token.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../src/cli/main.js";
import { MEDIA_SECRET_SETTING } from "../src/gateway/index.js";
import { createLogger } from "../src/log.js";
import { WeComCrypto } from "../src/wecom/crypto.js";
import { ADMIN, AGENT, APP_AES, ARCHIVE_SECRET, BOT_AES, CORP, eventually, KFID, type Stack, startStack, stackConfig } from "./stack.js";
import { fixture } from "./helpers.js";

let stack: Stack;
/** The media-link key the gateway generated and keeps in its store. */
let mediaKey = "";
const logs: string[] = [];
const answers: string[] = [];

/** Every secret the stack knows, and every access token the simulator issued. */
function secrets(): string[] {
  return ["app-secret", "apptoken", "bottoken", APP_AES, BOT_AES, "omni-secret", ARCHIVE_SECRET, ADMIN, mediaKey, ...stack.wecom.issuedTokens];
}

async function call(path: string, init: RequestInit = {}): Promise<number> {
  const res = await fetch(`${stack.gw.url}${path}`, init);
  answers.push(`${res.status} ${JSON.stringify(Object.fromEntries(res.headers))} ${await res.text()}`);
  return res.status;
}

beforeAll(async () => {
  stack = await startStack({ log: createLogger({ level: "debug", write: (l) => logs.push(l) }) });
  mediaKey = await stack.gw.store.getOrCreateSetting(MEDIA_SECRET_SETTING, () => "not generated");
  expect(mediaKey).toMatch(/^[0-9a-f]{64}$/);
});
afterAll(async () => {
  await stack?.stop();
});

describe("secrets", () => {
  it("appear in no log line, answer, admin listing or metric, on success and failure paths", async () => {
    // success paths: every channel, media, a token refresh
    await stack.wecom.appUserSendsText(AGENT, "u1", "hello");
    await stack.wecom.kfCustomerSends(KFID, "wmS", { msgtype: "text", text: { content: "kf" } });
    const png = Buffer.from("89504e470d0a1a0a0000000d49484452", "hex");
    const mediaId = stack.wecom.putMedia(png, { contentType: "image/png", filename: "a.png" });
    await stack.wecom.appSends(
      AGENT,
      `<xml><ToUserName><![CDATA[${CORP}]]></ToUserName><FromUserName><![CDATA[u2]]></FromUserName><CreateTime>${Math.floor(Date.now() / 1000)}</CreateTime><MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[https://wework.qpic.cn/x]]></PicUrl><MediaId><![CDATA[${mediaId}]]></MediaId><MsgId>7381973325934170001</MsgId><AgentID>${AGENT}</AgentID></xml>`,
    );
    expect(await call(`/archive/push`, { method: "POST", headers: { "x-archive-secret": ARCHIVE_SECRET }, body: fixture("archive", "record-text.json") })).toBe(200);
    const got = await stack.omni.waitFor(4);
    for (const g of got) if (g.body.MsgType === "image") await call(new URL(g.body.Content as string).pathname + new URL(g.body.Content as string).search);
    stack.wecom.expireTokens();

    // failure paths
    stack.omni.setFailure("errcode", 2);
    stack.wecom.failNext("kf/sync_msg", 60020);
    stack.wecom.failNext("kf/sync_msg", 40014);
    stack.wecom.failNext("gettoken", -1);
    await stack.wecom.kfCustomerSends(KFID, "wmS", { msgtype: "text", text: { content: "kf2" } });
    const crypto = new WeComCrypto({ token: "apptoken", encodingAESKey: APP_AES, receiveId: CORP });
    const sealed = crypto.encryptReply("<xml><MsgType>text</MsgType></xml>", "1", "n");
    await call(`/wecom/app/support?msg_signature=${sealed.msgsignature}&timestamp=1&nonce=n`, { method: "POST", body: `<xml><Encrypt><![CDATA[${sealed.encrypt}]]></Encrypt></xml>` });
    await call("/wecom/app/support?msg_signature=bad&timestamp=1&nonce=1", { method: "POST", body: "<xml><Encrypt>x</Encrypt></xml>" });
    await call("/wecom/app/support?msg_signature=bad&timestamp=1&nonce=1&echostr=abc", {});
    await call("/wecom/bot/helper?msg_signature=bad&timestamp=1&nonce=1", { method: "POST", body: '{"encrypt":"x"}' });
    await call(`/archive/push?secret=${ARCHIVE_SECRET}`, { method: "POST", body: "{not json" });
    await call(`/archive/push?secret=${ARCHIVE_SECRET}x`, { method: "POST", body: "{}" });
    await call("/archive/push", { method: "POST", headers: { "x-archive-secret": `${ARCHIVE_SECRET.slice(0, -1)}` }, body: "{}" });
    await call("/admin/outbox", { headers: { authorization: `Bearer ${ADMIN}x` } });
    await call(`/admin/outbox?limit=${encodeURIComponent(ADMIN)}`, { headers: { authorization: `Bearer ${ADMIN}` } });
    await call(`/wecom/app/${encodeURIComponent(ARCHIVE_SECRET)}`, { method: "POST", body: "x" });
    await call(`/media/${CORP}/m1-0?e=1&s=${mediaKey}`);
    await call("/wecom/app/support", { method: "POST", body: "x".repeat(300_000) });
    // random junk carrying the secrets in every place a request has
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("/wecom/app/support", "/wecom/bot/helper", "/archive/push", "/admin/messages", "/media/x/y", "/nope"),
        fc.constantFrom(...secrets()),
        fc.constantFrom("GET", "POST", "PUT"),
        async (path, secret, method) => {
          const q = `?secret=${encodeURIComponent(secret)}&msg_signature=${encodeURIComponent(secret)}&timestamp=1&nonce=${encodeURIComponent(secret)}`;
          await call(path + q, { method, headers: { authorization: `Bearer ${secret}`, "x-archive-secret": secret }, ...(method === "GET" ? {} : { body: `{"encrypt":"${secret}"}` }) });
        },
      ),
      { numRuns: 60 },
    );
    stack.omni.setFailure(false);
    await eventually(() => stack.omni.received.some((g) => g.body.Content === "kf2"), 10_000, "the 全媒体 back up");

    // what an operator reads
    for (const p of ["/metrics", "/readyz", "/healthz", "/admin/messages?limit=500", "/admin/conversations", "/admin/archive", "/admin/outbox?state=pending,inflight,done,dead&limit=500", "/admin/cursors"]) {
      await call(p, { headers: { authorization: `Bearer ${ADMIN}` } });
    }
    expect(stack.wecom.issuedTokens.length).toBeGreaterThanOrEqual(2);
    expect(logs.length).toBeGreaterThan(5);
    const text = `${logs.join("")}\n${answers.join("\n")}`;
    // the admin token is sent by the tests in requests only, never answered or logged
    for (const secret of secrets()) {
      const at = text.indexOf(secret);
      expect(at, `a secret (${secret.length} chars) leaked: …${text.slice(Math.max(0, at - 120), at).replace(secret, "***")}`).toBe(-1);
    }
  });

  it("config errors and the CLI print none", async () => {
    const dir = mkdtempSync(join(tmpdir(), "wb-secrets-"));
    const raw = stackConfig(dir, 1, "http://127.0.0.1:1", "http://127.0.0.1:2");
    raw.wecom.apps[0].encodingAESKey = `${APP_AES}x`; // wrong length: the value must not be echoed
    raw.wecom.bots[0].token = 12;
    raw.omni.secret = "";
    raw.archive.secret = "short";
    const file = join(dir, "bridge.json");
    writeFileSync(file, JSON.stringify(raw));
    const broken = join(dir, "broken.json");
    writeFileSync(broken, JSON.stringify(stackConfig(dir, 1, "http://x", "http://y"), null, 2).replace(`"secret": "omni-secret"`, `"secret": omni-secret`));
    const out: string[] = [];
    const io = { stdout: (t: string) => void out.push(t), stderr: (t: string) => void out.push(t), readStdin: () => "" };
    expect(await runCli(["serve", "--config", file], io)).toBe(78);
    expect(await runCli(["serve", "--config", broken], io)).toBe(78);
    expect(await runCli(["replay", "--all", "--config", broken], io)).toBe(78);
    const text = out.join("");
    expect(text).toContain("encodingAESKey");
    expect(text).toContain("line ");
    for (const secret of ["app-secret", "apptoken", "bottoken", APP_AES, BOT_AES, "omni-secret", ARCHIVE_SECRET, ADMIN, "short"]) expect(text).not.toContain(secret);
  });
});
