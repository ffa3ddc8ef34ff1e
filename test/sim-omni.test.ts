/**
 * The 全媒体 simulator over real loopback sockets: the staffService rules (signature, appid,
 * window, replay, body), failure injection, delays, waiting, and agent replies to an APP.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { OmniErrcode, omniMessagePath, omniSignature, omniSignedQuery, verifyOmniSignature } from "../src/omni/index.js";
import { OMNI_SIM_BODY_LIMIT, type OmniSimOptions, OmniSimulator } from "../src/sim/omni.js";
import { fixtureNames, jsonFixture } from "./helpers.js";

const APP = "1001";
const SECRET = "abcdef";
const O = "omni";
const TEXT = jsonFixture(O, "to-omni-text.json");

const open: OmniSimulator[] = [];
const servers: http.Server[] = [];

afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()));
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

async function start(opts: Partial<OmniSimOptions> = {}): Promise<OmniSimulator> {
  const sim = await OmniSimulator.start({ appId: APP, secret: SECRET, ...opts });
  open.push(sim);
  return sim;
}

/** Distinct, fresh timestamps: two requests signed in the same millisecond would be a replay. */
let clock = Date.now();
function signed(appId = APP, secret = SECRET): string {
  clock = Math.max(clock + 1, Date.now());
  return omniSignedQuery(appId, secret, clock);
}

/** Poll until cond() holds (2 s at most), instead of guessing how long a request takes to arrive. */
async function until(cond: () => boolean): Promise<void> {
  for (const t0 = Date.now(); !cond(); ) {
    if (Date.now() - t0 > 2000) throw new Error("condition not met within 2 s");
    await new Promise((r) => setTimeout(r, 5));
  }
}

interface PostOptions {
  query?: string;
  path?: string;
  contentType?: string | null;
  raw?: string;
  signal?: AbortSignal;
  method?: string;
}

/** POST a body to the simulator's message API; returns status, content type and the parsed answer. */
async function post(sim: OmniSimulator, body: unknown, o: PostOptions = {}): Promise<{ status: number; type: string | null; reply: { errcode: number; errmsg: string } }> {
  const headers: Record<string, string> = {};
  if (o.contentType !== null) headers["content-type"] = o.contentType ?? "application/json";
  const res = await fetch(`${sim.url}${o.path ?? omniMessagePath("v1", APP)}?${o.query ?? signed()}`, {
    method: o.method ?? "POST",
    headers,
    // a Buffer body, because fetch labels a string body text/plain by itself
    body: o.method === "GET" ? undefined : Buffer.from(o.raw ?? JSON.stringify(body)),
    signal: o.signal,
  });
  const text = await res.text();
  let reply: { errcode: number; errmsg: string };
  try {
    reply = JSON.parse(text);
  } catch {
    reply = { errcode: -1, errmsg: text };
  }
  return { status: res.status, type: res.headers.get("content-type"), reply };
}

describe("OmniSimulator: APP → 全媒体", () => {
  it("accepts a correctly signed message, answers like the vendor and records it", async () => {
    const lines: string[] = [];
    const sim = await start({ log: (l) => lines.push(l) });
    expect(sim.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const query = signed();
    const r = await post(sim, TEXT, { query });
    expect(r).toEqual({ status: 200, type: "application/json", reply: jsonFixture(O, "reply-ok.json") });
    expect(sim.received).toHaveLength(1);
    const got = sim.received[0]!;
    expect(got.body).toEqual(TEXT);
    expect(got.raw).toEqual(TEXT);
    expect(`timestamp=${got.timestamp}&signature=${got.signature}`).toBe(query);
    expect(Math.abs(got.at - Date.now())).toBeLessThan(5000);
    expect(sim.rejected).toEqual([]);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("/api/v1/1001/staffService/message → 200 errcode=0");
  });

  it("accepts every to-omni fixture, keeping Tag and unknown keys as sent", async () => {
    const sim = await start();
    const names = fixtureNames(O, "to-omni-").filter((n) => n !== "to-omni-leavemessage.json");
    expect(names.length).toBeGreaterThan(5);
    for (const n of names) expect((await post(sim, jsonFixture(O, n))).reply.errcode, n).toBe(0);
    expect(sim.received.map((r) => r.body.MsgType)).toEqual(names.map((n) => jsonFixture(O, n).MsgType));
    const withExtra = { ...TEXT, ServiceId: "", Tag: { a: [1, { b: null }] }, extra: 1, ToUserId: "ignored" };
    expect((await post(sim, withExtra)).reply.errcode).toBe(0);
    const last = sim.received.at(-1)!;
    expect(last.body).toEqual({ ...TEXT, Tag: { a: [1, { b: null }] } });
    expect(last.raw).toEqual(withExtra);
  });

  it("accepts the vendor's own signature vector when the clock is at its timestamp", async () => {
    const v = jsonFixture<{ appid: string; secret: string; timestamp: string; signature: string }>(O, "signature-vector.json");
    const sim = await start({ appId: v.appid, secret: v.secret, now: () => Number(v.timestamp) + 1000 });
    const r = await post(sim, TEXT, { path: omniMessagePath("v1", v.appid), query: `timestamp=${v.timestamp}&signature=${v.signature.toUpperCase()}` });
    expect(r.reply).toEqual({ errcode: 0, errmsg: "ok" });
    expect(sim.received[0]!.at).toBe(Number(v.timestamp) + 1000);
  });

  it("refuses bad signatures, unknown appids, stale timestamps and replays, and records nothing", async () => {
    const lines: string[] = [];
    const sim = await start({ log: (l) => lines.push(l) });
    const ts = String(Date.now());
    const cases: [string, string, number, string][] = [
      ["no query", "", 30001, "signature或timestamp参数不存在。"],
      ["no signature", `timestamp=${ts}`, 30001, "signature或timestamp参数不存在。"],
      ["no timestamp", `signature=${omniSignature(APP, SECRET, ts)}`, 30001, "signature或timestamp参数不存在。"],
      ["empty signature", `timestamp=${ts}&signature=`, 30001, "signature或timestamp参数不存在。"],
      ["wrong secret", signed(APP, "nope"), 30003, "Signature验证失败。"],
      ["other timestamp", `timestamp=${Number(ts) + 1}&signature=${omniSignature(APP, SECRET, ts)}`, 30003, "Signature验证失败。"],
      ["stale", omniSignedQuery(APP, SECRET, Date.now() - 6 * 60_000), 30003, "Signature验证失败。(timestamp is outside the 300s window)"],
      ["future", omniSignedQuery(APP, SECRET, Date.now() + 6 * 60_000), 30003, "Signature验证失败。(timestamp is outside the 300s window)"],
      ["seconds", omniSignedQuery(APP, SECRET, Math.floor(Date.now() / 1000)), 30003, "Signature验证失败。(timestamp is outside the 300s window)"],
    ];
    for (const [name, query, errcode, errmsg] of cases) {
      const r = await post(sim, TEXT, { query });
      expect({ name, status: r.status, ...r.reply }).toEqual({ name, status: 200, errcode, errmsg });
    }
    // the vendor's exact answer for a wrong signature
    expect((await post(sim, TEXT, { query: signed(APP, "nope") })).reply).toEqual(jsonFixture(O, "reply-30003.json"));
    // unknown appid, even correctly signed for that appid (and before the signature check: vendor order)
    const other = await post(sim, TEXT, { path: omniMessagePath("v1", "2002"), query: signed("2002", SECRET) });
    expect(other.reply).toEqual({ errcode: 30002, errmsg: "Appsecret不存在，请检查appid参数。" });
    expect((await post(sim, TEXT, { path: omniMessagePath("v1", "2002"), query: "timestamp=1&signature=x" })).reply.errcode).toBe(30002);
    expect((await post(sim, TEXT, { path: omniMessagePath("v1", "2002"), query: "" })).reply.errcode).toBe(30001);
    expect(sim.received).toEqual([]);
    expect(sim.rejected.map((r) => r.errcode)).toEqual([...cases.map((c) => c[2]), 30003, 30002, 30002, 30001]);
    expect(sim.rejected.every((r) => r.status === 200 && r.reason.length > 0)).toBe(true);
    // replay: the same timestamp+signature twice, even with another body
    const q = signed();
    expect((await post(sim, TEXT, { query: q })).reply.errcode).toBe(0);
    const replay = await post(sim, { ...TEXT, Content: "again" }, { query: q });
    expect(replay.reply).toEqual({ errcode: 30003, errmsg: "Signature验证失败。(replay: this timestamp and signature were already used)" });
    expect(sim.received).toHaveLength(1);
    // one line per request, never the secret nor the signature
    expect(lines).toHaveLength(cases.length + 6);
    expect(lines.join("\n")).not.toMatch(new RegExp(`${SECRET}|${q.split("signature=")[1]}`));
  });

  it("refuses bad JSON, a wrong Content-Type and missing fields with 30005 and a readable errmsg", async () => {
    const sim = await start();
    const cases: [string, PostOptions & { body?: unknown }, RegExp][] = [
      ["bad JSON", { raw: "{FromUserId:" }, /^body is not valid JSON \(/],
      ["empty body", { raw: "" }, /^body is not valid JSON/],
      ["array", { body: [TEXT] }, /^body must be a JSON object$/],
      ["no Content-Type", { contentType: null }, /^Content-Type must be application\/json \(none sent\)$/],
      ["form", { contentType: "application/x-www-form-urlencoded" }, /^Content-Type must be application\/json \(got "application\/x-www-form-urlencoded"\)$/],
      ["text/plain", { contentType: "text/plain" }, /^Content-Type must be application\/json/],
      ["GBK", { contentType: "application/json; charset=GBK" }, /^JSON must be UTF-8/],
      ["no FromUserId", { body: { MsgType: "text", Content: "x" } }, /^FromUserId is required/],
      ["empty FromUserId", { body: { ...TEXT, FromUserId: "" } }, /^FromUserId is required/],
      ["only ToUserId", { body: { ToUserId: "123", MsgType: "text", Content: "x" } }, /^FromUserId is required/],
      ["no MsgType", { body: { FromUserId: "1", Content: "x" } }, /^MsgType is required/],
      ["no Content", { body: { FromUserId: "1", MsgType: "text" } }, /^Content is required/],
      ["Content not a string", { body: { FromUserId: "1", MsgType: "text", Content: 5 } }, /^Content is required and must be a string$/],
      ["FromUserName object", { body: { ...TEXT, FromUserName: {} } }, /^FromUserName must be a string$/],
    ];
    for (const [name, o, errmsg] of cases) {
      const r = await post(sim, o.body ?? TEXT, o);
      expect({ name, status: r.status, errcode: r.reply.errcode }).toEqual({ name, status: 200, errcode: OmniErrcode.BadJson });
      expect(r.reply.errmsg, name).toMatch(errmsg);
    }
    // bytes that are not UTF-8
    const res = await fetch(`${sim.url}${omniMessagePath("v1", APP)}?${signed()}`, { method: "POST", headers: { "content-type": "application/json" }, body: Buffer.from([0x7b, 0xff, 0x7d]) });
    expect(await res.json()).toEqual({ errcode: 30005, errmsg: "body is not valid UTF-8" });
    expect(sim.received).toEqual([]);
    expect(sim.rejected).toHaveLength(cases.length + 1);
    // charset utf-8 in any spelling is fine
    expect((await post(sim, TEXT, { contentType: "Application/JSON; Charset=\"UTF-8\"" })).reply.errcode).toBe(0);
  });

  it("answers 404 for unknown paths and versions, 405 for other methods, 413 over 1 MB", async () => {
    const sim = await start();
    for (const path of ["/", "/api/v1/1001/staffService/messages", "/api/v2/1001/staffService/message", "/api/v1/1001/staffService/demand", "/api/v1/%E0%A4%A/staffService/message"]) {
      const r = await post(sim, TEXT, { path });
      expect({ path, status: r.status, type: r.type, errcode: r.reply.errcode }).toEqual({ path, status: 404, type: "application/json", errcode: 404 });
    }
    const get = await post(sim, TEXT, { method: "GET" });
    expect([get.status, get.reply.errcode]).toEqual([405, 405]);
    const big = { ...TEXT, Content: "x".repeat(OMNI_SIM_BODY_LIMIT) };
    const r = await post(sim, big);
    expect(r.status).toBe(413);
    expect(r.reply).toEqual({ errcode: 30005, errmsg: `request body exceeds ${OMNI_SIM_BODY_LIMIT} bytes` });
    // the same without a Content-Length (chunked): refused once the limit is crossed
    const chunked = await new Promise<string>((resolve, reject) => {
      const req = http.request(`${sim.url}${omniMessagePath("v1", APP)}?${signed()}`, { method: "POST", headers: { "content-type": "application/json" } }, (res) => {
        let b = "";
        res.on("data", (c: Buffer) => {
          b += c;
        });
        res.on("end", () => resolve(`${res.statusCode} ${b}`));
      });
      req.on("error", reject);
      for (let i = 0; i < 12; i++) req.write("x".repeat(100_000));
      req.end();
    });
    expect(chunked).toBe(`413 {"errcode":30005,"errmsg":"request body exceeds ${OMNI_SIM_BODY_LIMIT} bytes"}`);
    // just under the limit is fine
    const fits = { ...TEXT, Content: "x".repeat(OMNI_SIM_BODY_LIMIT - 100) };
    expect((await post(sim, fits)).reply.errcode).toBe(0);
    expect(sim.received).toHaveLength(1);
    expect(sim.rejected.map((x) => x.status)).toEqual([413, 413]);
  });

  it("serves under a context path and another version", async () => {
    const sim = await start({ basePath: "/weChatAdapter/", version: "v2" });
    expect(sim.url).toMatch(/\/weChatAdapter$/);
    expect((await post(sim, TEXT, { path: omniMessagePath("v2", APP) })).reply.errcode).toBe(0);
    expect((await post(sim, TEXT, { path: omniMessagePath("v1", APP) })).status).toBe(404);
    const res = await fetch(`${sim.url.replace("/weChatAdapter", "")}${omniMessagePath("v2", APP)}?${signed()}`, { method: "POST", body: "{}" });
    expect(res.status).toBe(404);
  });

  it("records 留言 at leavemessage", async () => {
    const sim = await start();
    const body = jsonFixture(O, "to-omni-leavemessage.json");
    const r = await post(sim, body, { path: `/api/v1/${APP}/leavemessage` });
    expect(r.reply).toEqual({ errcode: 0, errmsg: "ok" });
    expect(sim.leaveMessages.map((l) => l.body)).toEqual([body]);
    expect((await post(sim, { content: "x" }, { path: `/api/v1/${APP}/leavemessage` })).reply.errcode).toBe(30005);
    expect((await post(sim, body, { path: `/api/v1/${APP}/leavemessage`, query: signed(APP, "x") })).reply.errcode).toBe(30003);
    expect(sim.leaveMessages).toHaveLength(1);
    expect(sim.received).toEqual([]);
  });
});

describe("OmniSimulator: failures, delays, waiting", () => {
  it("http500 and errcode failures, limited by times, record nothing", async () => {
    const sim = await start();
    sim.setFailure("http500", 1);
    const a = await post(sim, TEXT);
    expect(a.status).toBe(500);
    expect(a.type).toMatch(/^text\/html/);
    expect((await post(sim, TEXT)).reply.errcode).toBe(0);

    sim.setFailure("errcode", 2);
    for (let i = 0; i < 2; i++) {
      const r = await post(sim, TEXT);
      expect(r.status).toBe(200);
      expect(r.reply.errcode).toBe(30004);
      expect(r.reply.errmsg).toMatch(/injected/);
    }
    expect((await post(sim, TEXT)).reply.errcode).toBe(0);

    sim.setFailure("http500");
    for (let i = 0; i < 3; i++) expect((await post(sim, TEXT)).status).toBe(500);
    sim.setFailure(false);
    expect((await post(sim, TEXT)).reply.errcode).toBe(0);

    expect(sim.received).toHaveLength(3);
    expect(sim.failed.map((f) => f.mode)).toEqual(["http500", "errcode", "errcode", "http500", "http500", "http500"]);
    expect(sim.rejected).toEqual([]);
    expect(() => sim.setFailure("errcode", 0)).toThrow(/positive integer/);
  });

  it("a failed request does not use up its signature: a retry with the same one is accepted", async () => {
    const sim = await start();
    sim.setFailure("errcode", 1);
    const q = signed();
    expect((await post(sim, TEXT, { query: q })).reply.errcode).toBe(30004);
    expect((await post(sim, TEXT, { query: q })).reply.errcode).toBe(0);
  });

  it("timeout never answers, until the client gives up or the mode changes", async () => {
    const sim = await start();
    sim.setFailure("timeout");
    const gaveUp = post(sim, TEXT, { signal: AbortSignal.timeout(300) });
    await until(() => sim.failed.length === 1); // arrived and held
    await expect(gaveUp).rejects.toThrow(/abort|timeout/i);
    const pending = post(sim, TEXT);
    await until(() => sim.failed.length === 2);
    expect(sim.received).toEqual([]);
    sim.setFailure(false); // releases the held request, handled as if it just arrived
    expect((await pending).reply.errcode).toBe(0);
    expect(sim.received).toHaveLength(1); // the abandoned one was never recorded
    expect(sim.failed.map((f) => f.mode)).toEqual(["timeout", "timeout"]);
  });

  it("timeout with times holds only that many requests", async () => {
    const sim = await start();
    sim.setFailure("timeout", 1);
    const held = post(sim, TEXT);
    await until(() => sim.failed.length === 1);
    expect((await post(sim, TEXT)).reply.errcode).toBe(0);
    sim.setFailure(false);
    expect((await held).reply.errcode).toBe(0);
    expect(sim.received).toHaveLength(2);
    // a client giving up does not use up another failure
    sim.setFailure("timeout", 2);
    for (const n of [2, 3]) {
      const ac = new AbortController();
      const p = post(sim, TEXT, { signal: ac.signal });
      await until(() => sim.failed.length === n);
      ac.abort();
      await expect(p).rejects.toThrow(/abort/i);
    }
    expect((await post(sim, TEXT)).reply.errcode).toBe(0);
    expect(sim.failed).toHaveLength(3);
    expect(sim.received).toHaveLength(3);
  });

  it("close() drops held requests", async () => {
    const sim = await start();
    sim.setFailure("timeout");
    const held = post(sim, TEXT);
    await until(() => sim.failed.length === 1);
    await sim.close();
    await expect(held).rejects.toThrow();
    expect(sim.received).toEqual([]);
  });

  it("setDelay slows answers; a client that gives up during the delay gets nothing recorded", async () => {
    const sim = await start();
    sim.setDelay(120);
    const t0 = Date.now();
    expect((await post(sim, TEXT)).reply.errcode).toBe(0);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(110);
    await expect(post(sim, TEXT, { signal: AbortSignal.timeout(40) })).rejects.toThrow();
    await new Promise((r) => setTimeout(r, 120));
    expect(sim.received).toHaveLength(1);
    sim.setDelay(0);
    expect((await post(sim, TEXT)).reply.errcode).toBe(0);
    expect(() => sim.setDelay(-1)).toThrow(/>= 0/);
  });

  it("waitFor resolves when enough messages arrived and times out with a readable error", async () => {
    const sim = await start();
    const waiting = sim.waitFor(2, 2000);
    await post(sim, { FromUserId: "u1", MsgType: "text", Content: "one" });
    await post(sim, { FromUserId: "u2", MsgType: "image", Content: "https://x/y.png" });
    const got = await waiting;
    expect(got.map((r) => r.body.Content)).toEqual(["one", "https://x/y.png"]);
    expect(await sim.waitFor(1)).toHaveLength(2);
    await post(sim, TEXT, { query: signed(APP, "bad") });
    const err = await sim.waitFor(3, 50).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    const msg = (err as Error).message;
    expect(msg).toMatch(/^omni simulator: waited 50 ms for 3 messages, got 2:/);
    expect(msg).toContain('u1 text "one"');
    expect(msg).toContain("u2 image");
    expect(msg).toContain("30003 Signature验证失败。");
  });

  it("conversation() lists one customer's messages in order", async () => {
    const sim = await start();
    for (const [from, content] of [["a", "1"], ["b", "x"], ["a", "2"], ["a", "3"], ["b", "y"]] as const) {
      await post(sim, { FromUserId: from, MsgType: "text", Content: content });
    }
    expect(sim.conversation("a").map((m) => m.Content)).toEqual(["1", "2", "3"]);
    expect(sim.conversation("b").map((m) => m.Content)).toEqual(["x", "y"]);
    expect(sim.conversation("c")).toEqual([]);
  });

  it("a window of Infinity accepts any timestamp, as the vendor did (replays still refused)", async () => {
    const sim = await start({ windowMs: Number.POSITIVE_INFINITY });
    const q = omniSignedQuery(APP, SECRET, 1407812629434);
    expect((await post(sim, TEXT, { query: q })).reply.errcode).toBe(0);
    expect((await post(sim, TEXT, { query: q })).reply.errcode).toBe(30003);
  });
});

interface Seen {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A tiny APP: checks the path and the signature like a gateway would, records what arrived. */
async function app(secret: string, prefix = "/qmtapi"): Promise<{ url: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const u = new URL(req.url ?? "/", "http://app");
      seen.push({ method: req.method ?? "", path: u.pathname, query: u.searchParams, headers: req.headers, body: Buffer.concat(chunks).toString("utf8") });
      let answer = { errcode: 0, errmsg: "ok" };
      let status = 200;
      if (u.pathname !== `${prefix}/staffService/message`) status = 404;
      else {
        try {
          verifyOmniSignature({ appId: APP, secret, timestamp: u.searchParams.get("timestamp"), signature: u.searchParams.get("signature") });
        } catch (e) {
          answer = { errcode: (e as { errcode: number }).errcode, errmsg: "Signature验证失败。" };
        }
      }
      res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(answer));
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  servers.push(server);
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen };
}

describe("OmniSimulator: 全媒体 → APP (agent replies)", () => {
  const reply = jsonFixture<{ ToUserId: string; MsgType: string; Content: string }>(O, "from-omni-text.json");

  it("posts a signed agent reply to {appUrl}{pathPrefix}/staffService/message", async () => {
    const a = await app(SECRET);
    const lines: string[] = [];
    const sim = await start({ appUrl: `${a.url}/`, log: (l) => lines.push(l) });
    const r = await sim.sendAgentReply(reply);
    expect(r).toEqual({ status: 200, reply: { errcode: 0, errmsg: "ok" } });
    const s = a.seen[0]!;
    expect(s.method).toBe("POST");
    expect(s.path).toBe("/qmtapi/staffService/message");
    expect([...s.query.keys()]).toEqual(["timestamp", "signature"]);
    expect(s.headers["content-type"]).toBe("application/json");
    expect(Number(s.headers["content-length"])).toBe(Buffer.byteLength(s.body));
    expect(JSON.parse(s.body)).toEqual(reply);
    expect(lines.join("\n")).not.toContain(SECRET);
    expect(lines.join("\n")).not.toContain(s.query.get("signature"));

    // back to back: strictly increasing timestamps, so the APP never sees a replayed pair
    for (let i = 0; i < 5; i++) await sim.sendAgentReply({ ...reply, Content: `#${i}` });
    const stamps = a.seen.map((x) => Number(x.query.get("timestamp")));
    expect(stamps.every((t, i) => i === 0 || t > (stamps[i - 1] as number))).toBe(true);
    // keeps Tag {} and WorkerName "" as the vendor sends them
    await sim.sendAgentReply(jsonFixture(O, "from-omni-file.json") as never);
    expect(JSON.parse(a.seen.at(-1)!.body)).toEqual(jsonFixture(O, "from-omni-file.json"));
  });

  it("signs with replySecret, a given secret or timestamp, or not at all", async () => {
    const a = await app("reply-secret", "/hook/v1");
    const sim = await start({ replySecret: "reply-secret", pathPrefix: "/hook/v1/" });
    await expect(sim.sendAgentReply(reply)).rejects.toThrow(/no appUrl/);
    sim.setAppUrl(a.url);
    expect((await sim.sendAgentReply(reply)).reply).toEqual({ errcode: 0, errmsg: "ok" });
    expect(a.seen[0]!.path).toBe("/hook/v1/staffService/message");
    expect((await sim.sendAgentReply(reply, { secret: SECRET })).reply).toMatchObject({ errcode: 30003 });
    expect((await sim.sendAgentReply(reply, { timestamp: Date.now() - 3_600_000 })).reply).toMatchObject({ errcode: 30003 });
    expect((await sim.sendAgentReply(reply, { signature: "0".repeat(40) })).reply).toMatchObject({ errcode: 30003 });
    expect((await sim.sendAgentReply(reply, { unsigned: true })).reply).toMatchObject({ errcode: 30001 });
    expect([...a.seen.at(-1)!.query.keys()]).toEqual([]);
    await sim.sendAgentReply(reply, { rawBody: "{oops" });
    expect(a.seen.at(-1)!.body).toBe("{oops");
    sim.setAppUrl(a.url, "/elsewhere");
    expect((await sim.sendAgentReply(reply)).status).toBe(404);
    await expect(sim.sendAgentReply({ ...reply, ToUserId: "" })).rejects.toThrow(/ToUserId is required/);
  });

  it("reports an unreachable APP and a slow one", async () => {
    const sim = await start({ appUrl: "http://127.0.0.1:1" });
    await expect(sim.sendAgentReply(reply)).rejects.toThrow(/ECONNREFUSED/);
    const slow = http.createServer(() => {});
    await new Promise<void>((r) => slow.listen(0, "127.0.0.1", r));
    servers.push(slow);
    sim.setAppUrl(`http://127.0.0.1:${(slow.address() as AddressInfo).port}`);
    await expect(sim.sendAgentReply(reply, { timeoutMs: 50 })).rejects.toThrow(/timed out after 50 ms/);
    slow.closeAllConnections();
  });
});
