/**
 * The WeCom and 全媒体 clients over the keep-alive HTTP client: the outbound WeCom APIs
 * (kf/send_msg, send_msg_on_event, service_state get/trans, message/send, media/upload) against
 * the real WeCom simulator on loopback with a real SQLite store, tokens refreshed once, errors as
 * WeComApiError of their class, and sockets reused (counted by a TCP proxy in front of the
 * simulators).
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import type { IncomingMessage } from "node:http";
import { connect, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { HttpClient } from "../src/clients/http.js";
import { OmniClient, OmniDeliveryError } from "../src/clients/omni.js";
import { type MediaDownload, WeComApiError, WeComClient } from "../src/clients/wecom.js";
import { OmniSimulator } from "../src/sim/omni.js";
import { DEFAULT_KF_ERRCODES } from "../src/sim/wecom/errors.js";
import { openStore } from "../src/store/index.js";
import type { Store } from "../src/store/types.js";
import { CORP, KF_APP, OTHER_APP, type SimHarness, START, startSim } from "./sim-wecom-helpers.js";
import { closeTestServers, serve } from "./test-server.js";

const PNG = Buffer.from("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489", "hex");
const KF = { corpId: CORP, secret: KF_APP.secret };
const APP = { corpId: CORP, secret: OTHER_APP.secret };
const CUSTOMER = "wmAJ2GCAAAme1XQRC-NI-q0_ZM9ukoAw";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
  await closeTestServers();
});

/** A TCP proxy in front of `target` that counts the connections clients open through it. */
async function countingProxy(target: string): Promise<{ url: string; connections: () => number; closed: () => number }> {
  const t = new URL(target);
  let connections = 0;
  let closed = 0;
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    connections++;
    const upstream = connect(Number(t.port), t.hostname);
    sockets.add(client).add(upstream);
    client.on("close", () => closed++);
    const drop = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  );
  const port = (server.address() as { port: number }).port;
  return { url: `http://127.0.0.1:${port}${t.pathname.replace(/\/$/, "")}`, connections: () => connections, closed: () => closed };
}

/** Wait until `cond` holds (2 s at most). */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (const t0 = Date.now(); !cond(); ) {
    if (Date.now() - t0 > 2000) throw new Error(`${what}: not within 2 s`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** What a call threw (fails when it resolved). */
async function failure(p: Promise<unknown>): Promise<WeComApiError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e, "the call should have failed").toBeInstanceOf(WeComApiError);
  return e as WeComApiError;
}

interface Harness {
  h: SimHarness;
  store: Store;
  client: WeComClient;
  /** Every onResult report, as `api errcode`. */
  results: string[];
  /** A fresh KF account in which CUSTOMER has written (so kf/send_msg may answer). */
  account(): Promise<string>;
  /** Paths (without /cgi-bin/) of the simulator's requests so far, with their errcode. */
  calls(): string[];
}

async function harness(opts: { apiBase?: (simUrl: string) => Promise<string>; timeoutMs?: number; http?: HttpClient } = {}): Promise<Harness> {
  const h = await startSim();
  cleanups.push(() => h.close());
  const store = await openStore(`sqlite:${join(mkdtempSync(join(tmpdir(), "wb-wecom-client-")), "bridge.db")}`, { owner: true });
  cleanups.push(() => store.close());
  const apiBase = opts.apiBase ? await opts.apiBase(h.sim.url) : h.sim.url;
  const client = new WeComClient({ apiBase, store, now: h.clock.now, ...(opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}), ...(opts.http ? { http: opts.http } : {}) });
  cleanups.push(() => client.close());
  const results: string[] = [];
  client.onResult = (api, errcode) => results.push(`${api} ${errcode}`);
  return {
    h,
    store,
    client,
    results,
    async account() {
      const id = h.newAccount();
      await h.sim.kfCustomerSends(id, CUSTOMER, { msgtype: "text", text: { content: "在吗" } }, { callback: false });
      return id;
    },
    calls: () => h.sim.requests.map((r) => `${r.path.replace("/cgi-bin/", "")} ${r.errcode ?? r.status}`),
  };
}

const text = (content: string) => ({ msgtype: "text", text: { content } });

describe("kf/send_msg", () => {
  it("round trip: the simulator records the message under the msgid sent; a repeated msgid is the simulator's duplicate errcode, final", async () => {
    const { h, client, results, account } = await harness();
    const kfid = await account();
    const body = { touser: CUSTOMER, open_kfid: kfid, msgid: "outbox_1_0", ...text("您好，请问有什么可以帮您？") };
    expect(await client.kfSendMsg(KF, body)).toEqual({ msgid: "outbox_1_0" });
    const sent = h.sim.sent.filter((s) => s.api === "kf/send_msg");
    expect(sent).toHaveLength(1);
    expect(sent[0]).toMatchObject({ msgid: "outbox_1_0", delivered: true, body: { touser: CUSTOMER, open_kfid: kfid, msgtype: "text", text: { content: "您好，请问有什么可以帮您？" } } });

    const dup = await failure(client.kfSendMsg(KF, { ...body, text: { content: "again" } }));
    expect(dup.errcode).toBe(DEFAULT_KF_ERRCODES.duplicateMsgId);
    expect(dup.api).toBe("kf/send_msg");
    expect(dup.httpStatus).toBe(200);
    expect(dup.kind).toBe("final");
    expect(dup.retryable).toBe(false);
    // errmsg's head only: no hint, caller ip or link
    expect(dup.message).toBe(`kf/send_msg: errcode ${DEFAULT_KF_ERRCODES.duplicateMsgId} msgid duplicated`);
    expect(h.sim.sent.filter((s) => s.api === "kf/send_msg")).toHaveLength(1);
    expect(results).toEqual(["gettoken 0", "kf/send_msg 0", `kf/send_msg ${DEFAULT_KF_ERRCODES.duplicateMsgId}`]);
  });

  it("without a msgid, the one WeCom assigns comes back", async () => {
    const { h, client, account } = await harness();
    const kfid = await account();
    const { msgid } = await client.kfSendMsg(KF, { touser: CUSTOMER, open_kfid: kfid, ...text("hi") });
    expect(msgid).not.toBe("");
    expect(h.sim.sent.at(-1)?.msgid).toBe(msgid);
  });

  it("WeCom's refusals keep their class: 95018 (session with a servicer) is final, HTTP 502 transient and not retried", async () => {
    const { h, client, account } = await harness();
    const kfid = await account();
    h.sim.setKfServiceState(kfid, CUSTOMER, 3, "zhangsan");
    const state = await failure(client.kfSendMsg(KF, { touser: CUSTOMER, open_kfid: kfid, ...text("hi") }));
    expect([state.errcode, state.kind]).toEqual([95018, "final"]);
    h.sim.setKfServiceState(kfid, CUSTOMER, 0);
    h.sim.setHttpFailure("kf/send_msg", 502);
    const http = await failure(client.kfSendMsg(KF, { touser: CUSTOMER, open_kfid: kfid, ...text("hi") }));
    expect([http.errcode, http.httpStatus, http.kind, http.code]).toEqual([0, 502, "transient", "wecom_http"]);
    expect(h.sim.requests.filter((r) => r.path === "/cgi-bin/kf/send_msg")).toHaveLength(2);
  });
});

describe("kf/send_msg_on_event", () => {
  it("sends the one message an enter_session welcome_code allows; a second use is the simulator's code-used errcode", async () => {
    const { h, client } = await harness();
    const kfid = h.newAccount();
    const code = h.sim.newKfCode();
    await h.sim.kfEvent(kfid, { event_type: "enter_session", external_userid: CUSTOMER, scene: "123", welcome_code: code }, { callback: false });
    const menu = { msgtype: "msgmenu", msgmenu: { head_content: "您好", list: [{ type: "click", click: { id: "101", content: "查询订单" } }], tail_content: "" } };
    const { msgid } = await client.kfSendMsgOnEvent(KF, { code, msgid: "welcome_1", ...menu });
    expect(msgid).toBe("welcome_1");
    expect(h.sim.sent.filter((s) => s.api === "kf/send_msg_on_event")).toEqual([expect.objectContaining({ msgid: "welcome_1", body: expect.objectContaining({ code, msgtype: "msgmenu" }) })]);
    const again = await failure(client.kfSendMsgOnEvent(KF, { code, ...text("欢迎") }));
    expect([again.api, again.errcode, again.kind]).toEqual(["kf/send_msg_on_event", DEFAULT_KF_ERRCODES.codeUsed, "final"]);
  });
});

describe("kf/service_state", () => {
  it("get and trans: states and servicer as the simulator keeps them, msg_code when WeCom gives one, 95016 for a transition not allowed", async () => {
    const { h, client, account } = await harness();
    const kfid = await account();
    expect(await client.kfServiceStateGet(KF, kfid, CUSTOMER)).toEqual({ serviceState: 0 });
    expect(await client.kfServiceStateTrans(KF, { openKfId: kfid, externalUserId: CUSTOMER, serviceState: 1 })).toEqual({});
    expect(h.sim.kfSession(kfid, CUSTOMER)?.serviceState).toBe(1);

    h.sim.addKfServicer(kfid, "zhangsan");
    const toServicer = await client.kfServiceStateTrans(KF, { openKfId: kfid, externalUserId: CUSTOMER, serviceState: 3, servicerUserId: "zhangsan" });
    expect(toServicer.msgCode).toMatch(/\S/);
    expect(await client.kfServiceStateGet(KF, kfid, CUSTOMER)).toEqual({ serviceState: 3, servicerUserId: "zhangsan" });
    expect(h.sim.kfSession(kfid, CUSTOMER)).toMatchObject({ serviceState: 3, servicerUserId: "zhangsan" });
    // the msg_code sends one text while the session stays with the servicer
    expect((await client.kfSendMsgOnEvent(KF, { code: toServicer.msgCode, ...text("已为您转接人工") })).msgid).not.toBe("");

    const back = await failure(client.kfServiceStateTrans(KF, { openKfId: kfid, externalUserId: CUSTOMER, serviceState: 1 }));
    expect([back.api, back.errcode, back.kind]).toEqual(["kf/service_state/trans", 95016, "final"]);
    const end = await client.kfServiceStateTrans(KF, { openKfId: kfid, externalUserId: CUSTOMER, serviceState: 4 });
    expect(end.msgCode).toMatch(/\S/);
    expect(end.msgCode).not.toBe(toServicer.msgCode);
    expect(await client.kfServiceStateGet(KF, kfid, CUSTOMER)).toEqual({ serviceState: 4 });
  });
});

describe("message/send", () => {
  it("invaliduser is parsed into a list (empty when all are valid); all invalid is 81013, thrown and final", async () => {
    const { h, client, results } = await harness();
    const body = (touser: string) => ({ touser, agentid: OTHER_APP.agentId, ...text("审批已通过") });
    const some = await client.appSendMessage(APP, body("zhangsan|Ghost|nobody"));
    expect(some.invalidUser).toEqual(["ghost", "nobody"]);
    expect(some.msgid).toBe(h.sim.sent.at(-1)?.msgid);
    expect(h.sim.sent.at(-1)?.recipients).toEqual([{ userid: "zhangsan", delivered: true }]);
    const all = await client.appSendMessage(APP, body("lisi|wangwu"));
    expect(all).toEqual({ invalidUser: [], msgid: h.sim.sent.at(-1)?.msgid });
    const none = await failure(client.appSendMessage(APP, body("ghost|nobody")));
    expect([none.api, none.errcode, none.kind, none.code]).toEqual(["message/send", 81013, "final", "wecom_81013"]);
    expect(results.filter((r) => r.startsWith("message/send"))).toEqual(["message/send 0", "message/send 0", "message/send 81013"]);
  });
});

describe("media/upload", () => {
  const dir = () => mkdtempSync(join(tmpdir(), "wb-upload-"));

  it("a PNG from a file and from bytes: the simulator stores the very bytes, the UTF-8 name and the type; media/get gives them back", async () => {
    const { h, client } = await harness();
    const path = join(dir(), "shot.png");
    writeFileSync(path, PNG);
    const fromFile = await client.uploadMedia(KF, { type: "image", fileName: "截图 1.png", contentType: "image/png", path, size: PNG.length });
    const fromBytes = await client.uploadMedia(APP, { type: "image", fileName: "plain.png", contentType: "image/png", data: new Uint8Array(PNG), size: PNG.length });
    expect(fromFile.createdAt).toBe(Math.floor(START / 1000));
    expect(fromBytes.mediaId).not.toBe(fromFile.mediaId);
    expect(h.sim.getMedia(fromFile.mediaId)).toMatchObject({ bytes: PNG, filename: "截图 1.png", contentType: "image/png", type: "image" });
    expect(h.sim.getMedia(fromBytes.mediaId)).toMatchObject({ bytes: PNG, filename: "plain.png", contentType: "image/png" });
    // back through media/get: the raw UTF-8 file name arrives as latin1 over node:http and is recovered
    const got = await client.getMedia(KF, fromFile.mediaId, { maxBytes: 4096 }, async (d: MediaDownload) => {
      const chunks: Uint8Array[] = [];
      for await (const c of d.body) chunks.push(c);
      return { bytes: Buffer.concat(chunks), fileName: d.fileName, contentType: d.contentType, length: d.length };
    });
    expect(got).toEqual({ bytes: PNG, fileName: "截图 1.png", contentType: "image/png", length: PNG.length });
  });

  it("a large file is streamed from disk byte for byte, and re-read when a token-class answer makes the call go again", async () => {
    const { h, client, calls } = await harness();
    const big = Buffer.alloc(3 * 1024 * 1024 + 17);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31 + 7) & 0xff;
    const path = join(dir(), "report.zip");
    writeFileSync(path, big);
    await client.token(KF);
    h.sim.failNext("media/upload", 42001);
    const { mediaId } = await client.uploadMedia(KF, { type: "file", fileName: "季度报告.zip", contentType: "application/zip", path, size: big.length });
    expect(h.sim.getMedia(mediaId)?.bytes.equals(big)).toBe(true);
    expect(calls()).toEqual(["gettoken 0", "media/upload 42001", "gettoken 0", "media/upload 0"]);
  });

  it("WeCom's refusal of a format is final (40123); a size that is not the file's is refused before anything is sent", async () => {
    const { h, client } = await harness();
    const notPng = await failure(client.uploadMedia(KF, { type: "image", fileName: "x.png", contentType: "image/png", data: Buffer.from("GIF89a-not-png"), size: 14 }));
    expect([notPng.api, notPng.errcode, notPng.kind]).toEqual(["media/upload", 40123, "final"]);
    const path = join(dir(), "a.png");
    writeFileSync(path, PNG);
    const before = h.sim.requests.length;
    const wrongSize = await failure(client.uploadMedia(KF, { type: "image", fileName: "a.png", contentType: "image/png", path, size: PNG.length + 1 }));
    expect([wrongSize.kind, wrongSize.errcode]).toEqual(["final", 0]);
    const missing = await failure(client.uploadMedia(KF, { type: "image", fileName: "a.png", contentType: "image/png", path: join(dir(), "nope.png"), size: 10 }));
    expect(missing.kind).toBe("final");
    const both = await failure(client.uploadMedia(KF, { type: "image", fileName: "a.png", contentType: "image/png", path, data: PNG, size: PNG.length }));
    expect(both.kind).toBe("final");
    expect(h.sim.requests.length).toBe(before);
  });

  it("the multipart body: one part `media` with an ASCII filename, RFC 5987 filename*, filelength and Content-Type; Content-Length exact; no header injection", async () => {
    let raw: { headers: IncomingMessage["headers"]; url: string; body: Buffer } | undefined;
    const server = await serve((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        res.setHeader("content-type", "application/json");
        if (req.url?.startsWith("/cgi-bin/gettoken")) return res.end(JSON.stringify({ errcode: 0, access_token: "tok", expires_in: 7200 }));
        raw = { headers: req.headers, url: req.url ?? "", body: Buffer.concat(chunks) };
        res.end(JSON.stringify({ errcode: 0, errmsg: "", type: "file", media_id: "1G6nrLmr5EC3MMb_-zK1dDdzmd0p7cNliYu9V5w7o8K0", created_at: "1380000000" }));
      });
    });
    const store = await openStore(`sqlite:${join(dir(), "bridge.db")}`, { owner: true });
    cleanups.push(() => store.close());
    const client = new WeComClient({ apiBase: server.url, store });
    cleanups.push(() => client.close());
    const data = Buffer.from("%PDF-1.4 hello");
    const name = '发票 "A"\\\r\nX-Evil: 1.pdf';
    const answer = await client.uploadMedia({ corpId: CORP, secret: "s" }, { type: "file", fileName: name, contentType: "application/pdf\r\nX-Evil: 1", data, size: data.length });
    expect(answer).toEqual({ mediaId: "1G6nrLmr5EC3MMb_-zK1dDdzmd0p7cNliYu9V5w7o8K0", createdAt: 1380000000 });
    if (raw === undefined) throw new Error("no upload arrived");
    expect(raw.url).toBe("/cgi-bin/media/upload?access_token=tok&type=file");
    const boundary = /^multipart\/form-data; boundary=(\S+)$/.exec(raw.headers["content-type"] ?? "")?.[1] as string;
    expect(boundary).toBeDefined();
    expect(Number(raw.headers["content-length"])).toBe(raw.body.length);
    const text = raw.body.toString("latin1");
    const encoded = encodeURIComponent('发票 "A"\\X-Evil: 1.pdf');
    expect(text).toBe(
      `--${boundary}\r\n` +
        `Content-Disposition: form-data; name="media"; filename="__ _A__X-Evil: 1.pdf"; filename*=UTF-8''${encoded}; filelength=${data.length}\r\n` +
        "Content-Type: application/octet-stream\r\n\r\n" +
        `${data.toString("latin1")}\r\n--${boundary}--\r\n`,
    );
  });
});

describe("access tokens", () => {
  it("a token-class answer (42001) refreshes the token once and the call goes through; a fresh token refused again is configuration, not a loop", async () => {
    const { h, client, calls, account } = await harness();
    const kfid = await account();
    await client.kfServiceStateGet(KF, kfid, CUSTOMER);
    h.sim.expireTokens();
    expect(await client.kfServiceStateGet(KF, kfid, CUSTOMER)).toEqual({ serviceState: 0 });
    expect(calls()).toEqual(["gettoken 0", "kf/service_state/get 0", "kf/service_state/get 42001", "gettoken 0", "kf/service_state/get 0"]);
    expect(h.sim.issuedTokens).toHaveLength(2);

    h.sim.failNext("kf/send_msg", 40014, 2);
    const e = await failure(client.kfSendMsg(KF, { touser: CUSTOMER, open_kfid: kfid, ...text("hi") }));
    expect([e.errcode, e.kind]).toEqual([40014, "configuration"]);
    expect(e.message).toMatch(/freshly issued/);
    expect(calls().slice(5)).toEqual(["kf/send_msg 40014", "gettoken 0", "kf/send_msg 40014"]);
    expect(h.sim.sent.filter((s) => s.api === "kf/send_msg")).toHaveLength(0);
  });

  it("the token lives in the store: a second client on the same store asks gettoken nothing", async () => {
    const { h, store, client } = await harness();
    await client.token(APP);
    const other = new WeComClient({ apiBase: h.sim.url, store, now: h.clock.now });
    cleanups.push(() => other.close());
    await other.appSendMessage(APP, { touser: "zhangsan", agentid: OTHER_APP.agentId, ...text("hi") });
    expect(h.sim.requests.filter((r) => r.path === "/cgi-bin/gettoken")).toHaveLength(1);
  });
});

describe("no answer", () => {
  it("a refused connection and a timeout are WeComApiError(api, 0, …, undefined), transient, counted as -2", async () => {
    const { h, client, results, account } = await harness({ timeoutMs: 300 });
    const kfid = await account();
    await client.token(KF);
    h.sim.setDelay("kf/service_state/get", 1500);
    const slow = await failure(client.kfServiceStateGet(KF, kfid, CUSTOMER));
    expect([slow.api, slow.errcode, slow.httpStatus, slow.kind, slow.code]).toEqual(["kf/service_state/get", 0, undefined, "transient", "wecom_unreachable"]);
    expect(slow.message).toBe("kf/service_state/get: request failed (timeout)");
    expect(results.at(-1)).toBe("kf/service_state/get -2");

    const store = await openStore(`sqlite:${join(mkdtempSync(join(tmpdir(), "wb-wecom-client-")), "bridge.db")}`, { owner: true });
    cleanups.push(() => store.close());
    const nowhere = new WeComClient({ apiBase: "http://127.0.0.1:1", store });
    cleanups.push(() => nowhere.close());
    const refused = await failure(nowhere.token(KF));
    expect([refused.api, refused.errcode, refused.httpStatus, refused.kind]).toEqual(["gettoken", 0, undefined, "transient"]);
    expect(refused.message).toBe("gettoken: request failed (network error)");
    expect(refused.message).not.toContain(KF.secret);
  });
});

describe("keep-alive", () => {
  it("many sequential calls, media downloads read to their end included, go over one connection; an abandoned download drops its socket", async () => {
    let proxy: Awaited<ReturnType<typeof countingProxy>> | undefined;
    const { h, client, account } = await harness({
      apiBase: async (url) => {
        proxy = await countingProxy(url);
        return proxy.url;
      },
    });
    const kfid = await account();
    for (let i = 0; i < 50; i++) expect((await client.kfServiceStateGet(KF, kfid, CUSTOMER)).serviceState).toBe(0);
    const mediaId = h.sim.putMedia(PNG, { contentType: "image/png", filename: "a.png" });
    const readAll = async (d: MediaDownload) => {
      let n = 0;
      for await (const c of d.body) n += c.length;
      return n;
    };
    for (let i = 0; i < 10; i++) expect(await client.getMedia(KF, mediaId, { maxBytes: 4096 }, readAll)).toBe(PNG.length);
    for (let i = 0; i < 5; i++) await client.kfSendMsg(KF, { touser: CUSTOMER, open_kfid: kfid, ...text(`第${i}条`) });
    expect(h.sim.requests.length).toBe(1 + 50 + 10 + 5);
    expect(proxy?.connections()).toBe(1);

    expect(proxy?.closed()).toBe(0);

    // a body left unread is not left hanging on its socket: the connection is dropped
    const big = h.sim.putMedia(Buffer.alloc(4 * 1024 * 1024, 1), { contentType: "application/zip", filename: "big.zip", type: "file" });
    expect(await client.getMedia(KF, big, { maxBytes: 8 * 1024 * 1024 }, async () => "not read")).toBe("not read");
    await until(() => proxy?.closed() === 1, "the abandoned download's connection closed");
    expect((await client.kfServiceStateGet(KF, kfid, CUSTOMER)).serviceState).toBe(0);
    expect(proxy?.connections()).toBe(2);
  });

  it("a shared HttpClient serves several clients; close() closes only a client's own", async () => {
    const shared = new HttpClient({ timeoutMs: 5000 });
    cleanups.push(() => shared.close());
    const { h, store, client, account } = await harness({ http: shared });
    const kfid = await account();
    const second = new WeComClient({ apiBase: h.sim.url, store, now: h.clock.now, http: shared });
    second.close(); // not its own: the shared client stays open
    expect((await second.kfServiceStateGet(KF, kfid, CUSTOMER)).serviceState).toBe(0);
    client.close();
    expect((await client.kfServiceStateGet(KF, kfid, CUSTOMER)).serviceState).toBe(0);

    shared.close(); // the clients really go through it: now they have no way out
    const closed = await failure(second.kfServiceStateGet(KF, kfid, CUSTOMER));
    expect([closed.errcode, closed.httpStatus, closed.kind]).toEqual([0, undefined, "transient"]);

    const own = new WeComClient({ apiBase: h.sim.url, store, now: h.clock.now });
    expect((await own.kfServiceStateGet(KF, kfid, CUSTOMER)).serviceState).toBe(0);
    own.close();
    const after = await failure(own.kfServiceStateGet(KF, kfid, CUSTOMER));
    expect([after.errcode, after.httpStatus, after.kind]).toEqual([0, undefined, "transient"]);
  });
});

describe("OmniClient over the keep-alive client", () => {
  const body = (n: number) => ({ FromUserId: `kf:${CORP}:wk:wm${n}`, MsgType: "text", Content: `消息 ${n}` });

  async function omni(timeoutMs?: number): Promise<{ sim: OmniSimulator; client: OmniClient; connections: () => number }> {
    const sim = await OmniSimulator.start({ appId: "1001", secret: "omni-secret" });
    cleanups.push(() => sim.close());
    const proxy = await countingProxy(sim.url);
    const client = new OmniClient({ baseUrl: proxy.url, version: "v1", appId: "1001", secret: "omni-secret", ...(timeoutMs ? { timeoutMs } : {}) });
    cleanups.push(() => client.close());
    return { sim, client, connections: proxy.connections };
  }

  it("sends signed messages one after another over one connection", async () => {
    const { sim, client, connections } = await omni();
    for (let i = 0; i < 30; i++) await client.send(body(i));
    expect(sim.received.map((r) => r.body.Content)).toEqual(Array.from({ length: 30 }, (_, i) => `消息 ${i}`));
    expect(sim.rejected).toEqual([]);
    expect(connections()).toBe(1);
    client.close();
    await expect(client.send(body(30))).rejects.toMatchObject({ status: 0, code: "omni_unreachable" });
    expect(sim.received).toHaveLength(30);
  });

  it("errcode, HTTP 500, timeout and an unreachable 全媒体 are OmniDeliveryErrors as before", async () => {
    const { sim, client } = await omni(300);
    const err = async (p: Promise<void>) => {
      const e = await p.then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(e).toBeInstanceOf(OmniDeliveryError);
      return e as OmniDeliveryError;
    };
    sim.setFailure("errcode", 1);
    expect(await err(client.send(body(1)))).toMatchObject({ status: 200, errcode: 30004, code: "omni_30004" });
    sim.setFailure("http500", 1);
    expect(await err(client.send(body(2)))).toMatchObject({ status: 500, errcode: undefined, message: "全媒体 answered HTTP 500" });
    sim.setFailure("timeout", 1);
    expect(await err(client.send(body(3)))).toMatchObject({ status: 0, message: "全媒体 unreachable (timeout)" });
    sim.setFailure(false); // releases the held request too: the simulator then handles it
    await client.send(body(4));
    const contents = sim.received.map((r) => r.body.Content);
    expect(contents.at(-1)).toBe("消息 4");
    expect(contents).not.toContain("消息 1");
    expect(contents).not.toContain("消息 2");

    const gone = new OmniClient({ baseUrl: "http://127.0.0.1:1", version: "v1", appId: "1001", secret: "omni-secret" });
    cleanups.push(() => gone.close());
    expect(await err(gone.send(body(5)))).toMatchObject({ status: 0, code: "omni_unreachable", message: "全媒体 unreachable (network error)" });
  });
});
