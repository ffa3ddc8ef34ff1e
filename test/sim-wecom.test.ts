/**
 * The WeCom simulator over real loopback sockets: the APIs with WeCom's rules and errcodes,
 * callbacks checked and decrypted by a tiny node:http receiver with the project's own crypto,
 * retries and timeouts, and injected faults.
 */
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeAppXml, decodeBotCallback, decodeKfSyncMsg, decryptBotMedia } from "../src/index.js";
import { WeComSimulator } from "../src/sim/wecom.js";
import { parseMultipart } from "../src/sim/wecom/multipart.js";
import { appCrypto, BOT, botCrypto, CORP, type Json, KF_APP, OTHER_APP, type Received, receiver, START, text } from "./sim-wecom-helpers.js";

const PNG = Buffer.from(
  "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763f8ffff3f0005fe02fea7d6a4fc0000000049454e44ae426082",
  "hex",
);
let clock = START;
let sim: WeComSimulator;
const logLines: string[] = [];

beforeAll(async () => {
  sim = await WeComSimulator.start({
    corpId: CORP,
    apps: [KF_APP, OTHER_APP],
    bots: [BOT],
    now: () => clock,
    callbackTimeoutMs: 200,
    retryIntervalMs: 30,
    log: (l) => logLines.push(l),
  });
});

afterAll(async () => {
  await sim.close();
});

/** Call an API of the simulator and parse its JSON answer. */
async function call(path: string, body?: unknown): Promise<Json> {
  const res = await fetch(`${sim.url}/cgi-bin/${path}`, body === undefined ? {} : { method: "POST", body: JSON.stringify(body) });
  expect(res.headers.get("content-type")).toMatch(/^application\/json/);
  return (await res.json()) as Json;
}

/** A valid access_token of an app. */
async function token(secret = KF_APP.secret): Promise<string> {
  const r = await call(`gettoken?corpid=${CORP}&corpsecret=${secret}`);
  expect(r.errcode).toBe(0);
  return r.access_token as string;
}

/** POST an API with a fresh token of the KF app. */
async function kfCall(api: string, body: unknown): Promise<Json> {
  return call(`${api}?access_token=${await token()}`, body);
}

let accountCounter = 0;
/** A fresh KF account, so tests do not see each other's messages. */
function newAccount(): string {
  const id = `wkAJ2GCAAASSm4_FhToWMFea0xA${String(++accountCounter).padStart(5, "0")}`;
  sim.addKfAccount(id, `account ${accountCounter}`);
  return id;
}

describe("gettoken and token checks", () => {
  it("issues a token per app, the same one while valid, and refuses a wrong corpid or secret", async () => {
    const a = await call(`gettoken?corpid=${CORP}&corpsecret=${KF_APP.secret}`);
    expect(a).toMatchObject({ errcode: 0, errmsg: "ok", expires_in: 7200 });
    expect(a.access_token).toMatch(/^[A-Za-z0-9_-]{100,}$/);
    expect((await call(`gettoken?corpid=${CORP}&corpsecret=${KF_APP.secret}`)).access_token).toBe(a.access_token);
    expect(await token(OTHER_APP.secret)).not.toBe(a.access_token);
    expect((await call(`gettoken?corpid=wwwrong&corpsecret=${KF_APP.secret}`)).errcode).toBe(40013);
    expect((await call(`gettoken?corpid=${CORP}&corpsecret=nope`)).errcode).toBe(40001);
    expect((await call(`gettoken?corpid=${CORP}`)).errcode).toBe(41004);
  });

  it("answers 41001 without a token, 40014 for an unknown one, 42001 after expireTokens, and never logs it", async () => {
    const acc = newAccount();
    expect((await call("kf/sync_msg", { open_kfid: acc })).errcode).toBe(41001);
    const bad = await call("kf/sync_msg?access_token=bogus", { open_kfid: acc });
    expect(bad.errcode).toBe(40014);
    expect(bad.errmsg).toMatch(/^invalid access_token, hint: \[\d{25}\], from ip: 127\.0\.0\.1, more info at .*\?e=40014$/);
    const t = await token();
    expect((await call(`kf/sync_msg?access_token=${t}`, { open_kfid: acc })).errcode).toBe(0);
    sim.expireTokens();
    expect((await call(`kf/sync_msg?access_token=${t}`, { open_kfid: acc })).errcode).toBe(42001);
    const fresh = await token();
    expect(fresh).not.toBe(t);
    expect((await call(`kf/sync_msg?access_token=${fresh}`, { open_kfid: acc })).errcode).toBe(0);
    expect(logLines.join("\n")).not.toContain(t);
    expect(logLines.join("\n")).not.toContain(KF_APP.secret);
    expect(sim.requests.some((r) => r.path === "/cgi-bin/kf/sync_msg" && r.errcode === 42001)).toBe(true);
  });

  it("expires tokens by the clock, and binds them to their app", async () => {
    const t = await token();
    clock += 7200_000;
    expect((await call(`kf/sync_msg?access_token=${t}`, {})).errcode).toBe(42001);
    expect(await token()).not.toBe(t);
    // KF APIs need the app authorised for KF; message/send needs the token's own agentid
    const other = await token(OTHER_APP.secret);
    expect((await call(`kf/sync_msg?access_token=${other}`, {})).errcode).toBe(48002);
    const send = { touser: "zhangsan", msgtype: "text", agentid: KF_APP.agentId, text: { content: "hi" } };
    expect((await call(`message/send?access_token=${other}`, send)).errcode).toBe(301002);
  });
});

describe("kf/sync_msg", () => {
  it("pages 5 messages by 2 with has_more, in WeCom's item format, decodable by the core", async () => {
    const acc = newAccount();
    const sent: string[] = [];
    for (let i = 0; i < 5; i++) sent.push((await sim.kfCustomerSends(acc, "wmCustomer1", text(`m${i}`))).msgid);
    for (const id of sent) {
      expect(id).toMatch(/^from_msgid_\d{19}$/);
      expect(BigInt(id.slice(11))).toBeGreaterThan(2n ** 53n);
    }
    const pages: Json[] = [];
    let cursor: string | undefined;
    for (let i = 0; i < 3; i++) {
      const p = await kfCall("kf/sync_msg", { cursor, limit: 2, open_kfid: acc });
      expect(Object.keys(p)).toEqual(["errcode", "errmsg", "next_cursor", "has_more", "msg_list"]);
      pages.push(p);
      cursor = p.next_cursor as string;
    }
    expect(pages.map((p) => (p.msg_list as unknown[]).length)).toEqual([2, 2, 1]);
    expect(pages.map((p) => p.has_more)).toEqual([1, 1, 0]);
    const first = (pages[0]?.msg_list as Json[] | undefined)?.[0];
    expect(first).toEqual({
      msgid: sent[0],
      open_kfid: acc,
      external_userid: "wmCustomer1",
      send_time: Math.floor(clock / 1000),
      origin: 3,
      msgtype: "text",
      text: { content: "m0" },
    });
    const decoded = pages.flatMap((p) => decodeKfSyncMsg(p as never, { corpId: CORP }).messages);
    expect(decoded.map((m) => m.id)).toEqual(sent);
    expect(decoded.map((m) => (m.content.type === "text" ? m.content.text : ""))).toEqual(["m0", "m1", "m2", "m3", "m4"]);
    // nothing new: an empty page, has_more 0, and a cursor that still works
    const end = await kfCall("kf/sync_msg", { cursor, limit: 2, open_kfid: acc });
    expect(end).toMatchObject({ errcode: 0, has_more: 0, msg_list: [] });
    await sim.kfCustomerSends(acc, "wmCustomer1", text("m5"), { callback: false });
    const more = await kfCall("kf/sync_msg", { cursor: end.next_cursor, open_kfid: acc });
    expect((more.msg_list as Json[]).map((m) => (m.text as Json).content)).toEqual(["m5"]);
  });

  it("answers injected empty pages with has_more 1, then resumes from their cursor", async () => {
    const acc = newAccount();
    for (let i = 0; i < 3; i++) await sim.kfCustomerSends(acc, "wmC", text(`e${i}`));
    sim.injectEmptyPages(acc, 2);
    const seen: string[] = [];
    let cursor: string | undefined;
    const shapes: [number, number][] = [];
    for (let guard = 0; guard < 10; guard++) {
      const p = await kfCall("kf/sync_msg", { cursor, limit: 2, open_kfid: acc });
      shapes.push([(p.msg_list as unknown[]).length, p.has_more as number]);
      for (const m of p.msg_list as Json[]) seen.push((m.text as Json).content as string);
      expect(p.next_cursor).not.toBe(cursor); // a new string on every answer
      cursor = p.next_cursor as string;
      if (p.has_more === 0) break;
    }
    expect(shapes).toEqual([
      [0, 1],
      [0, 1],
      [2, 1],
      [1, 0],
    ]);
    expect(seen).toEqual(["e0", "e1", "e2"]);
  });

  it("resumes from a stored cursor; refuses cursors of another account or malformed ones", async () => {
    const acc = newAccount();
    const other = newAccount();
    for (let i = 0; i < 3; i++) await sim.kfCustomerSends(acc, "wmR", text(`r${i}`));
    await sim.kfCustomerSends(other, "wmR", text("elsewhere"));
    const p1 = await kfCall("kf/sync_msg", { limit: 1, open_kfid: acc });
    const stored = p1.next_cursor as string;
    expect(stored.length).toBeLessThanOrEqual(64);
    await sim.kfCustomerSends(acc, "wmR", text("r3"));
    const rest = await kfCall("kf/sync_msg", { cursor: stored, open_kfid: acc });
    expect((rest.msg_list as Json[]).map((m) => (m.text as Json).content)).toEqual(["r1", "r2", "r3"]);
    expect((await kfCall("kf/sync_msg", { cursor: stored, open_kfid: other })).errcode).toBe(40058);
    const flip = (c: string) => (c === "A" ? "B" : "A");
    const tampered = `${stored.slice(0, 5)}${flip(stored[5] ?? "")}${stored.slice(6)}`;
    expect((await kfCall("kf/sync_msg", { cursor: tampered, open_kfid: acc })).errcode).toBe(40058);
    // the last of 22 characters carries 2 bits and 4 zero padding bits: set one padding bit
    const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const nonCanonical = `${stored.slice(0, -1)}${B64URL[B64URL.indexOf(stored.at(-1) ?? "") | 1]}`;
    expect(Buffer.from(nonCanonical, "base64url").equals(Buffer.from(stored, "base64url"))).toBe(true);
    expect((await kfCall("kf/sync_msg", { cursor: nonCanonical, open_kfid: acc })).errcode).toBe(40058);
    expect((await kfCall("kf/sync_msg", { cursor: "x".repeat(65), open_kfid: acc })).errcode).toBe(40058);
    // without open_kfid: every account, with its own cursors
    const all = await kfCall("kf/sync_msg", {});
    expect((all.msg_list as Json[]).some((m) => m.open_kfid === other)).toBe(true);
  });

  it("gives consistent pages while messages are appended concurrently: each exactly once, in order", async () => {
    const acc = newAccount();
    const appended: string[] = [];
    const writer = (async () => {
      for (let i = 0; i < 30; i++) {
        appended.push((await sim.kfCustomerSends(acc, "wmBusy", text(`c${i}`), { callback: false })).msgid);
        await new Promise((r) => setImmediate(r));
      }
    })();
    const seen: string[] = [];
    let cursor: string | undefined;
    let writing = true;
    void writer.then(() => {
      writing = false;
    });
    for (let guard = 0; guard < 500; guard++) {
      const p = await kfCall("kf/sync_msg", { cursor, limit: 3, open_kfid: acc });
      seen.push(...(p.msg_list as Json[]).map((m) => m.msgid as string));
      cursor = p.next_cursor as string;
      if (!writing && p.has_more === 0) break;
    }
    await writer;
    expect(seen).toEqual(appended);
  });

  it("names the session's servicer on customer items, and lists accounts", async () => {
    const acc = newAccount();
    sim.setKfServiceState(acc, "wmServed", 3, "zhangsan");
    await sim.kfCustomerSends(acc, "wmServed", text("hi"), { callback: false });
    const p = await kfCall("kf/sync_msg", { open_kfid: acc });
    expect((p.msg_list as Json[])[0]).toMatchObject({ origin: 3, servicer_userid: "zhangsan" });
    const list = await kfCall("kf/account/list", { offset: 0, limit: 100 });
    expect((list.account_list as Json[]).some((a) => a.open_kfid === acc)).toBe(true);
  });

  it("serves only the last 3 days: without a cursor it starts at the oldest readable message", async () => {
    const acc = newAccount();
    const now = Math.floor(clock / 1000);
    await sim.kfCustomerSends(acc, "wmOld", text("4 days ago"), { sendTime: now - 4 * 86400, callback: false });
    await sim.kfCustomerSends(acc, "wmOld", text("2 days ago"), { sendTime: now - 2 * 86400, callback: false });
    await sim.kfCustomerSends(acc, "wmOld", text("now"), { callback: false });
    const p = await kfCall("kf/sync_msg", { open_kfid: acc });
    expect((p.msg_list as Json[]).map((m) => (m.text as Json).content)).toEqual(["2 days ago", "now"]);
    clock += 2 * 86400_000; // the 2-day-old message ages out
    const later = await kfCall("kf/sync_msg", { open_kfid: acc });
    expect((later.msg_list as Json[]).map((m) => (m.text as Json).content)).toEqual(["now"]);
  });

  it("refuses an unknown account (95000), a bad limit (40058) and an invalid Token (95007)", async () => {
    const acc = newAccount();
    const unknown = await kfCall("kf/sync_msg", { open_kfid: "wkNoSuchAccount" });
    expect(unknown.errcode).toBe(95000);
    expect(unknown.errmsg).toMatch(/^invalid open_kfid, hint: /);
    expect((await kfCall("kf/sync_msg", { open_kfid: acc, limit: 1001 })).errcode).toBe(40058);
    expect((await kfCall("kf/sync_msg", { open_kfid: acc, limit: 0 })).errcode).toBe(0); // 0 = default 1000
    expect((await kfCall("kf/sync_msg", { open_kfid: acc, token: "ENCnotIssued" })).errcode).toBe(95007);
  });

  it("answers injected errcodes, HTTP failures and slow responses", async () => {
    const acc = newAccount();
    sim.failNext("kf/sync_msg", 45009, 2);
    expect((await kfCall("kf/sync_msg", { open_kfid: acc })).errcode).toBe(45009);
    expect((await kfCall("kf/sync_msg", { open_kfid: acc })).errcode).toBe(45009);
    expect((await kfCall("kf/sync_msg", { open_kfid: acc })).errcode).toBe(0);
    for (const code of [60020, 95018]) {
      sim.failNext("kf/sync_msg", code);
      expect((await kfCall("kf/sync_msg", { open_kfid: acc })).errcode).toBe(code);
    }
    sim.failNext("gettoken", 60020);
    expect((await call(`gettoken?corpid=${CORP}&corpsecret=${KF_APP.secret}`)).errcode).toBe(60020);
    sim.setHttpFailure("kf/sync_msg", 502);
    const t = await token();
    const r = await fetch(`${sim.url}/cgi-bin/kf/sync_msg?access_token=${t}`, { method: "POST", body: "{}" });
    expect(r.status).toBe(502);
    await r.arrayBuffer();
    sim.setDelay("kf/sync_msg", 150);
    const started = Date.now();
    expect((await call(`kf/sync_msg?access_token=${t}`, { open_kfid: acc })).errcode).toBe(0);
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    sim.setDelay("kf/sync_msg", 0);
  });
});

describe("media", () => {
  it("uploads multipart and serves the bytes back with Content-Type and Content-Disposition", async () => {
    const t = await token(OTHER_APP.secret);
    const form = new FormData();
    form.append("media", new Blob([PNG], { type: "image/png" }), "logo.png");
    const up = (await (await fetch(`${sim.url}/cgi-bin/media/upload?access_token=${t}&type=image`, { method: "POST", body: form })).json()) as Json;
    expect(up).toMatchObject({ errcode: 0, type: "image" });
    expect(up.created_at).toBe(String(Math.floor(clock / 1000)));
    const id = up.media_id as string;
    expect(sim.sent.at(-1)).toMatchObject({ api: "media/upload", body: { media_id: id, filename: "logo.png", size: PNG.length } });
    const got = await fetch(`${sim.url}/cgi-bin/media/get?access_token=${t}&media_id=${id}`);
    expect(got.status).toBe(200);
    expect(got.headers.get("content-type")).toBe("image/png");
    expect(got.headers.get("content-disposition")).toBe('attachment; filename="logo.png"');
    expect(Buffer.from(await got.arrayBuffer()).equals(PNG)).toBe(true);
    const part = await fetch(`${sim.url}/cgi-bin/media/get?access_token=${t}&media_id=${id}`, { headers: { Range: "bytes=0-7" } });
    expect(part.status).toBe(206);
    expect(Buffer.from(await part.arrayBuffer()).equals(PNG.subarray(0, 8))).toBe(true);
  });

  it("serves put media; unknown ids answer 40007 as JSON; refuses bad types and formats", async () => {
    const t = await token();
    const id = sim.putMedia(Buffer.from("hello file"), { contentType: "text/plain", filename: "报告.txt" });
    const got = await fetch(`${sim.url}/cgi-bin/media/get?access_token=${t}&media_id=${id}`);
    const disposition = Buffer.from(got.headers.get("content-disposition") ?? "", "latin1").toString("utf8");
    expect(disposition).toBe('attachment; filename="报告.txt"');
    expect(await got.text()).toBe("hello file");
    const missing = await fetch(`${sim.url}/cgi-bin/media/get?access_token=${t}&media_id=nope`);
    expect(missing.headers.get("content-type")).toMatch(/^application\/json/);
    expect(((await missing.json()) as Json).errcode).toBe(40007);
    const form = () => {
      const f = new FormData();
      f.append("media", new Blob([Buffer.from("not an image at all")]), "x.png");
      return f;
    };
    const up = async (type: string) =>
      ((await (await fetch(`${sim.url}/cgi-bin/media/upload?access_token=${t}&type=${type}`, { method: "POST", body: form() })).json()) as Json).errcode;
    expect(await up("bogus")).toBe(40005);
    expect(await up("image")).toBe(40123);
    expect(await up("file")).toBe(0);
    clock += 3 * 86400_000 + 1000; // temporary media lives 3 days
    const t2 = await token();
    expect(((await (await fetch(`${sim.url}/cgi-bin/media/get?access_token=${t2}&media_id=${id}`)).json()) as Json).errcode).toBe(40007);
  });

  it("parses multipart bodies with quoted and UTF-8 file names", () => {
    const body = Buffer.from('--b\r\nContent-Disposition: form-data; name="media"; filename="a \\"q\\".bin"\r\nContent-Type: x/y\r\n\r\n\r\nxy\r\n--b--\r\n');
    expect(parseMultipart(body, "b")).toEqual([{ name: "media", filename: 'a "q".bin', contentType: "x/y", data: Buffer.from("\r\nxy") }]);
    expect(parseMultipart(Buffer.from("garbage"), "b")).toBeUndefined();
  });
});

describe("kf/send_msg and send_msg_on_event", () => {
  it("validates like WeCom: text bytes, msgid format and uniqueness, the 5-message rule, the 48-hour window, the state", async () => {
    const acc = newAccount();
    const user = "wmSender";
    const send = (body: Json) => kfCall("kf/send_msg", { touser: user, open_kfid: acc, ...body });
    expect((await send({ msgtype: "text", text: { content: "hi" } })).errcode).toBe(40096); // never wrote
    await sim.kfCustomerSends(acc, user, text("hello"), { callback: false });
    expect((await send({ msgtype: "text", text: { content: "x".repeat(2049) } })).errcode).toBe(45002);
    expect((await send({ msgtype: "text", text: { content: "" } })).errcode).toBe(44004);
    expect((await send({ msgtype: "image", image: { media_id: "unknown" } })).errcode).toBe(40007);
    expect((await send({ msgtype: "sticker", sticker: {} })).errcode).toBe(40008);
    expect((await send({ msgid: "bad id!", msgtype: "text", text: { content: "a" } })).errcode).toBe(40058);
    const ok = await send({ msgid: "out_1", msgtype: "text", text: { content: "好".repeat(682) + "ab" } }); // 2048 bytes
    expect(ok).toEqual({ errcode: 0, errmsg: "ok", msgid: "out_1" });
    expect((await send({ msgid: "out_1", msgtype: "text", text: { content: "again" } })).errcode).toBe(40058);
    expect(sim.sent.filter((s) => s.api === "kf/send_msg" && (s.body as Json).open_kfid === acc)).toHaveLength(1);
    for (let i = 2; i <= 5; i++) expect((await send({ msgtype: "text", text: { content: `n${i}` } })).errcode).toBe(0);
    const sixth = await send({ msgtype: "text", text: { content: "n6" } });
    expect(sixth.errcode).toBe(95001);
    await sim.kfCustomerSends(acc, user, text("again"), { callback: false });
    const gen = await send({ msgtype: "text", text: { content: "n6" } });
    expect(gen.errcode).toBe(0);
    expect(gen.msgid).toMatch(/^[0-9a-zA-Z]{32}$/);
    sim.setKfServiceState(acc, user, 3, "zhangsan");
    expect((await send({ msgtype: "text", text: { content: "x" } })).errcode).toBe(95018);
    expect(await kfCall("kf/service_state/get", { open_kfid: acc, external_userid: user })).toMatchObject({ service_state: 3, servicer_userid: "zhangsan" });
    sim.setKfServiceState(acc, user, 1);
    clock += 48 * 3600_000 + 1000;
    expect((await send({ msgtype: "text", text: { content: "late" } })).errcode).toBe(95002);
  });

  it("sends one message per event code, text or msgmenu, within the code's life", async () => {
    const acc = newAccount();
    const code = sim.newKfCode();
    await sim.kfEvent(acc, { event_type: "enter_session", external_userid: "wmNew", scene: "s", welcome_code: code });
    const page = await kfCall("kf/sync_msg", { open_kfid: acc });
    const ev = (page.msg_list as Json[])[0] as Json;
    expect(Object.keys(ev)).toEqual(["msgid", "send_time", "origin", "msgtype", "event"]);
    expect(ev.event).toEqual({ event_type: "enter_session", open_kfid: acc, external_userid: "wmNew", scene: "s", welcome_code: code });
    const on = (body: Json) => kfCall("kf/send_msg_on_event", { code, ...body });
    expect((await on({ msgtype: "image", image: { media_id: "x" } })).errcode).toBe(40008);
    expect(await on({ msgid: "welcome_1", msgtype: "text", text: { content: "欢迎" } })).toEqual({ errcode: 0, errmsg: "ok", msgid: "welcome_1" });
    expect((await on({ msgtype: "text", text: { content: "twice" } })).errcode).toBe(42022);
    const late = sim.newKfCode();
    await sim.kfEvent(acc, { event_type: "enter_session", external_userid: "wmNew2", welcome_code: late }, { callback: false });
    clock += 21_000;
    expect((await kfCall("kf/send_msg_on_event", { code: late, msgtype: "text", text: { content: "late" } })).errcode).toBe(41050);
    expect(sim.sent.filter((s) => s.api === "kf/send_msg_on_event").map((s) => s.body.code)).toEqual([code]);
  });

  it("message/send answers invaliduser and a msgid, and checks content", async () => {
    const t = await token(OTHER_APP.secret);
    const send = (body: Json) => call(`message/send?access_token=${t}`, { agentid: OTHER_APP.agentId, ...body });
    const ok = await send({ touser: "zhangsan|ghost", msgtype: "text", text: { content: "通知" } });
    expect(ok).toMatchObject({ errcode: 0, errmsg: "ok", invaliduser: "ghost" });
    expect(typeof ok.msgid).toBe("string");
    expect((await send({ touser: "ghost", msgtype: "text", text: { content: "x" } })).errcode).toBe(81013);
    // longer texts are cut at 2048 bytes, not refused
    expect((await send({ touser: "zhangsan", msgtype: "text", text: { content: "x".repeat(2049) } })).errcode).toBe(0);
    expect(sim.sent.filter((s) => s.api === "message/send").map((s) => s.shown?.length)).toEqual([2, 2048]);
    expect((await send({ touser: "zhangsan", msgtype: "text", text: { content: "" } })).errcode).toBe(44004);
  });
});

describe("callbacks", () => {
  it("POSTs kf_msg_or_event signed and encrypted; its Token works in sync_msg", async () => {
    const r = await receiver(appCrypto());
    try {
      sim.setCallbackUrl("app", "support", r.url);
      const acc = newAccount();
      const sent = await sim.kfCustomerSends(acc, "wmCb", text("ping"));
      expect(sent.callback).toEqual({ status: 200, body: "", tries: 1, delivered: true });
      const got = r.received[0] as Received;
      expect(got.error).toBeUndefined();
      expect(got.query.get("x")).toBe("1"); // the receiver's own query is kept
      expect(got.body).toMatch(/^<xml><ToUserName><!\[CDATA\[ww1436e0e65a779aee\]\]><\/ToUserName><Encrypt><!\[CDATA\[[A-Za-z0-9+/=]+\]\]><\/Encrypt><AgentID><!\[CDATA\[1000002\]\]><\/AgentID><\/xml>$/);
      const msg = decodeAppXml(got.plaintext ?? "", { corpId: CORP });
      if (msg.content.type !== "event" || msg.content.event.name !== "kf_msg_or_event") throw new Error("not kf_msg_or_event");
      expect(msg.content.event.openKfId).toBe(acc);
      expect(msg.content.event.token).toMatch(/^ENC[0-9A-Za-z]{44}$/);
      const p = await kfCall("kf/sync_msg", { token: msg.content.event.token, open_kfid: acc });
      expect((p.msg_list as Json[]).map((m) => m.msgid)).toEqual([sent.msgid]);
      clock += 10 * 60_000 + 1000;
      expect((await kfCall("kf/sync_msg", { token: msg.content.event.token, open_kfid: acc })).errcode).toBe(95007);
    } finally {
      await r.close();
    }
  });

  it("retries a receiver that answers 500 twice, re-encrypting each try unless asked to keep it", async () => {
    const r = await receiver(appCrypto(), (n) => ({ status: n % 3 === 0 ? 200 : 500 }));
    try {
      sim.setCallbackUrl("app", KF_APP.agentId, r.url);
      const res = await sim.appUserSendsText(KF_APP.agentId, "zhangsan", "A&B <急> ]]> 报价");
      expect(res).toMatchObject({ status: 200, tries: 3, delivered: true });
      expect(BigInt(res.msgId)).toBeGreaterThan(2n ** 53n);
      expect(r.received.every((x) => x.error === undefined)).toBe(true);
      expect(new Set(r.received.map((x) => x.query.get("nonce"))).size).toBe(3);
      const msg = decodeAppXml(r.received[2]?.plaintext ?? "", { corpId: CORP });
      expect(msg.channel === "app" && msg.msgId).toBe(res.msgId);
      expect(msg.content).toMatchObject({ type: "text", text: "A&B <急> ]]> 报价" });
      const same = await sim.appSends(KF_APP.agentId, "<xml><MsgType><![CDATA[event]]></MsgType></xml>", { sameTimestampOnRetry: true });
      expect(same.tries).toBe(3);
      const [a, b, c] = r.received.slice(3);
      expect(a?.body).toBe(b?.body);
      expect(b?.body).toBe(c?.body);
      expect(a?.query.toString()).toBe(c?.query.toString());
    } finally {
      await r.close();
    }
  });

  it("retries a try that hangs past callbackTimeoutMs; gives up after maxTries", async () => {
    const r = await receiver(appCrypto(), (n) => (n === 1 ? "hang" : { status: 200 }));
    try {
      sim.setCallbackUrl("app", KF_APP.agentId, r.url);
      const started = Date.now();
      const res = await sim.appUserSendsText(KF_APP.agentId, "lisi", "slow");
      expect(res).toMatchObject({ status: 200, tries: 2, delivered: true });
      expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    } finally {
      await r.close();
    }
    const down = await sim.appUserSendsText(KF_APP.agentId, "lisi", "nobody home");
    expect(down).toMatchObject({ status: 0, tries: 3, delivered: false, error: "ECONNREFUSED" });
  });

  it("decrypts an app's passive reply", async () => {
    const r = await receiver(appCrypto(), (_n, got, crypto) => ({ status: 200, body: crypto.encryptXmlReply(`<xml><Echo>${got.plaintext?.length}</Echo></xml>`) }));
    try {
      sim.setCallbackUrl("app", KF_APP.agentId, r.url);
      const res = await sim.appSends(KF_APP.agentId, "<xml><A>1</A></xml>");
      expect(res.reply).toBe("<xml><Echo>19</Echo></xml>");
    } finally {
      await r.close();
    }
  });

  it("verifies URLs: the receiver must echo the decrypted echostr", async () => {
    const app = await receiver(appCrypto(), (_n, got) => ({ status: 200, body: got.plaintext ?? "" }));
    const bot = await receiver(botCrypto(), (_n, got) => ({ status: 200, body: got.plaintext ?? "" }));
    try {
      sim.setCallbackUrl("app", KF_APP.agentId, app.url);
      sim.setCallbackUrl("bot", "helper", bot.url);
      const a = await sim.verifyUrl("app", "support");
      expect(a.status).toBe(200);
      expect(a.expected).toMatch(/^\d{19}$/);
      expect(a.body).toBe(a.expected);
      const b = await sim.verifyUrl("bot", BOT.botId);
      expect(b.body).toBe(b.expected);
    } finally {
      await app.close();
      await bot.close();
    }
  });
});

describe("AI bot", () => {
  it("POSTs {encrypt} with receiveId \"\", and verifies and decrypts the bot's JSON reply", async () => {
    const r = await receiver(botCrypto(), (_n, got, crypto) => {
      const msg = decodeBotCallback(got.plaintext ?? "");
      const reply = msg.content.type === "stream_refresh" ? { msgtype: "stream", stream: { id: msg.content.streamId, finish: true, content: "done" } } : { msgtype: "stream", stream: { id: "s1", finish: false, content: "…" } };
      return { status: 200, body: crypto.encryptJsonReply(JSON.stringify(reply)) };
    });
    try {
      sim.setCallbackUrl("bot", BOT.botId, r.url);
      const res = await sim.botUserSendsText(BOT.botId, "zhangsan", "天气", { chatId: "wrkSFfCgAALFgnrSsWU38puiv4yvExuw" });
      expect(res).toMatchObject({ delivered: true, tries: 1, reply: { msgtype: "stream", stream: { id: "s1", finish: false } } });
      expect(res.msgid).toMatch(/^CAIQ[A-Za-z0-9+/]{27}=$/);
      const got = r.received[0] as Received;
      expect(Object.keys(JSON.parse(got.body))).toEqual(["encrypt"]);
      const inner = JSON.parse(got.plaintext ?? "") as Json;
      expect(Object.keys(inner)).toEqual(["msgid", "aibotid", "chatid", "chattype", "from", "response_url", "msgtype", "text"]);
      expect(inner).toMatchObject({ aibotid: BOT.botId, chattype: "group", from: { userid: "zhangsan" }, text: { content: "天气" } });
      // the response_url is served by the simulator, once
      const once = { msgtype: "markdown", markdown: { content: "**ok**" } };
      const post = async () => ((await (await fetch(inner.response_url as string, { method: "POST", body: JSON.stringify(once) })).json()) as Json).errcode;
      expect(await post()).toBe(0);
      expect(await post()).toBe(40058);
      const poll = await sim.botPollStream(BOT.botId, "s1", "zhangsan");
      expect(poll.reply).toEqual({ msgtype: "stream", stream: { id: "s1", finish: true, content: "done" } });
    } finally {
      await r.close();
    }
    const forged = await receiver(botCrypto(), () => ({ status: 200, body: JSON.stringify({ encrypt: "AAAA", msgsignature: "0".repeat(40), timestamp: "1", nonce: "2" }) }));
    try {
      sim.setCallbackUrl("bot", BOT.botId, forged.url);
      const res = await sim.botSends(BOT.botId, { msgid: "m", aibotid: BOT.botId, msgtype: "text", text: { content: "x" } });
      expect(res.reply).toBeUndefined();
      expect(res.replyError).toMatch(/signature/);
    } finally {
      await forged.close();
    }
  });

  it("serves bot media encrypted with the bot's key, for 5 minutes", async () => {
    const original = randomBytes(1000);
    const url = sim.putBotMedia(BOT.botId, original);
    expect(url.startsWith(sim.url)).toBe(true);
    const res = await fetch(url);
    expect(res.status).toBe(200);
    const enc = Buffer.from(await res.arrayBuffer());
    expect(enc.equals(original)).toBe(false);
    expect(decryptBotMedia(BOT.encodingAESKey, enc).equals(original)).toBe(true);
    clock += 5 * 60_000 + 1000;
    const expired = await fetch(url);
    expect(expired.status).toBe(403);
    await expired.arrayBuffer();
  });
});
