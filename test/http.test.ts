/**
 * The HTTP edge: deadlines for slow clients, the connection cap, the client's address behind
 * trusted proxies, bounded metric labels, and constant-time comparisons.
 */
import * as nodeCrypto from "node:crypto";
import { request as httpRequest } from "node:http";
import { connect } from "node:net";
import { afterEach, describe, expect, it, vi } from "vitest";
import { apiLabel, CHANNEL_LABELS, Metrics, wecomErrcodeLabel } from "../src/gateway/metrics.js";
import { ClientAddress, normalizeAddress, parseForwardedElement } from "../src/http/client-address.js";
import { connectionsCheckingInterval, edgeChannel } from "../src/http/server.js";
import type { Store } from "../src/store/types.js";
import { bearerMatches, safeEqual } from "../src/wecom/crypto.js";
import { fixture } from "./helpers.js";
import { ARCHIVE_SECRET, eventually, KFID, type Stack, startStack } from "./stack.js";

// node:crypto as is, with timingSafeEqual observed (the comparison test checks what it is given)
vi.mock("node:crypto", async (importOriginal) => {
  const actual = await importOriginal<typeof import("node:crypto")>();
  return { ...actual, timingSafeEqual: vi.fn(actual.timingSafeEqual) };
});

let stack: Stack | undefined;
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
});

/** The series of a /metrics text: every sample line without its value. */
function series(text: string): string[] {
  return text
    .split("\n")
    .filter((l) => l !== "" && !l.startsWith("#"))
    .map((l) => l.slice(0, l.lastIndexOf(" ")));
}

async function metricsText(s: Stack): Promise<string> {
  return (await fetch(`${s.gw.url}/metrics`)).text();
}

/** A raw TCP connection to the gateway: what it received and when it was closed. */
function rawSocket(s: Stack) {
  const socket = connect(s.config.listen.port, "127.0.0.1");
  socket.setNoDelay(true);
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  socket.on("error", () => undefined);
  const opened = Date.now();
  const closed = new Promise<number>((resolve) => socket.on("close", () => resolve(Date.now() - opened)));
  const connected = new Promise<void>((resolve) => socket.once("connect", () => resolve()));
  return { socket, closed, connected, received: () => Buffer.concat(chunks).toString("latin1") };
}

/** `p`, or a failure naming `what` when it has not settled within `ms` (a deadline, not a sleep). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

/** A request with exact headers (repeated ones included), through node:http's client, from 127.0.0.1. */
function request(s: Stack, path: string, init: { method?: string; headers?: Record<string, string | string[]>; body?: string } = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`http://127.0.0.1:${s.config.listen.port}${path}`, { method: init.method ?? "GET", headers: init.headers ?? {} }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", reject);
    req.end(init.body);
  });
}

describe("slow clients", () => {
  const limits = { headersTimeoutMs: 500, requestTimeoutMs: 1000 };

  it("a client sending half a request line is cut off after the header deadline; others are answered meanwhile", async () => {
    stack = await startStack({ config: (c) => (c.limits = limits) });
    const slow = Array.from({ length: 20 }, () => rawSocket(stack as Stack));
    await Promise.all(slow.map((c) => c.connected));
    for (const c of slow) c.socket.write("GET /healthz HT");
    // the server keeps answering while they hang
    for (let i = 0; i < 5; i++) expect((await fetch(`${stack.gw.url}/healthz`)).status).toBe(200);
    const times = await within(Promise.all(slow.map((c) => c.closed)), limits.headersTimeoutMs + 2500, "slow request lines closed");
    for (const t of times) expect(t).toBeGreaterThanOrEqual(limits.headersTimeoutMs - 50);
    expect(slow[0]?.received()).toMatch(/^HTTP\/1\.1 408 /);
    expect((await fetch(`${stack.gw.url}/healthz`)).status).toBe(200);
  });

  it("a client sending headers and half a body is cut off after the request deadline; others are answered meanwhile", async () => {
    stack = await startStack({ config: (c) => (c.limits = limits) });
    const slow = Array.from({ length: 10 }, () => rawSocket(stack as Stack));
    await Promise.all(slow.map((c) => c.connected));
    for (const c of slow) c.socket.write(`POST /archive/push HTTP/1.1\r\nHost: x\r\nX-Archive-Secret: ${ARCHIVE_SECRET}\r\nContent-Length: 100\r\n\r\n${"{".repeat(50)}`);
    for (let i = 0; i < 5; i++) expect((await fetch(`${stack.gw.url}/healthz`)).status).toBe(200);
    const times = await within(Promise.all(slow.map((c) => c.closed)), limits.requestTimeoutMs + 2500, "slow bodies closed");
    for (const t of times) expect(t).toBeGreaterThanOrEqual(limits.requestTimeoutMs - 50);
    expect((await fetch(`${stack.gw.url}/healthz`)).status).toBe(200);
  });

  it("the checking interval keeps the overshoot within a second", () => {
    expect(connectionsCheckingInterval(10_000, 30_000)).toBe(1000);
    expect(connectionsCheckingInterval(500, 1000)).toBe(125);
    expect(connectionsCheckingInterval(100, 100)).toBe(50);
  });
});

describe("connection cap", () => {
  it("beyond limits.maxConnections a new socket is closed at once; a freed slot serves again", async () => {
    stack = await startStack({ config: (c) => (c.limits = { maxConnections: 3 }) });
    const held = Array.from({ length: 3 }, () => rawSocket(stack as Stack));
    await Promise.all(held.map((c) => c.connected));
    // accepted in order after the three: closed by the server with no answer
    const extra = rawSocket(stack);
    await within(extra.closed, 2000, "the extra socket closed");
    expect(extra.received()).toBe("");
    held[0]?.socket.destroy();
    await held[0]?.closed;
    const ok = await eventually(async () => {
      const c = rawSocket(stack as Stack);
      c.socket.write("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
      await c.closed;
      return c.received().startsWith("HTTP/1.1 200") ? c.received() : false;
    }, 3000, "a request served after a slot was freed");
    expect(ok).toMatch(/"status":"ok"/);
    for (const c of held) c.socket.destroy();
  });
});

describe("behind a reverse proxy (trustProxy)", () => {
  const CLIENT = "203.0.113.7";
  const push = (s: Stack, xff: string | string[] | undefined) =>
    request(s, "/archive/push", { method: "POST", headers: { "x-archive-secret": ARCHIVE_SECRET, "content-type": "application/json", ...(xff !== undefined ? { "x-forwarded-for": xff } : {}) }, body: fixture("archive", "record-text.json") });

  it("archive.allowIps sees the client named by a trusted proxy, and only that client", async () => {
    stack = await startStack({
      config: (c) => {
        c.trustProxy = ["127.0.0.0/8", "10.0.0.0/8"];
        c.archive.allowIps = [CLIENT];
      },
    });
    expect(await push(stack, CLIENT)).toBe(200);
    expect(await push(stack, `${CLIENT}, 10.1.2.3`)).toBe(200); // through two trusted proxies
    expect(await push(stack, `${CLIENT}:5123`)).toBe(200);
    expect(await push(stack, ["198.51.100.1", CLIENT])).toBe(200); // repeated headers, in order
    expect(await push(stack, "198.51.100.1")).toBe(403);
    // the client wrote the allowed address itself: the proxy appended the real one
    expect(await push(stack, `${CLIENT}, 198.51.100.1`)).toBe(403);
    expect(await push(stack, [CLIENT, "198.51.100.1"])).toBe(403);
    expect(await push(stack, undefined)).toBe(403); // the proxy itself
    for (const garbage of ["unknown", "", " , ,", "not an address", `${CLIENT}, _hidden`, "1.2.3.4.5", "[::1", "\u00ff\u00fe"]) {
      expect(await push(stack, garbage), JSON.stringify(garbage)).toBe(403);
    }
  });

  it("a dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d, and still trusts them", async () => {
    stack = await startStack({
      config: (c) => {
        c.listen.host = "::";
        c.trustProxy = ["127.0.0.1"];
        c.archive.allowIps = [CLIENT];
      },
    });
    expect(await push(stack, CLIENT)).toBe(200);
    expect(await push(stack, "198.51.100.1")).toBe(403);
  });

  it("X-Forwarded-For is ignored when the peer is not a trusted proxy", async () => {
    stack = await startStack({
      config: (c) => {
        c.trustProxy = ["10.0.0.0/8"];
        c.archive.allowIps = [CLIENT];
      },
    });
    expect(await push(stack, CLIENT)).toBe(403);
    await stack.stop();
    stack = await startStack({ config: (c) => (c.archive.allowIps = ["127.0.0.1"]) });
    expect(await push(stack, "198.51.100.1")).toBe(200); // no trustProxy: the peer is the client
  });
});

describe("client address", () => {
  it("normalizes IPv4-mapped IPv6 and parses forwarded elements", () => {
    expect(normalizeAddress("::ffff:1.2.3.4")).toBe("1.2.3.4");
    expect(normalizeAddress("::FFFF:1.2.3.4")).toBe("1.2.3.4");
    expect(normalizeAddress("::ffff:abcd")).toBe("::ffff:abcd");
    expect(normalizeAddress("2001:db8::1")).toBe("2001:db8::1");
    expect(parseForwardedElement(" 1.2.3.4 ")).toBe("1.2.3.4");
    expect(parseForwardedElement("1.2.3.4:80")).toBe("1.2.3.4");
    expect(parseForwardedElement("[2001:db8::1]:443")).toBe("2001:db8::1");
    expect(parseForwardedElement("[2001:db8::1]")).toBe("2001:db8::1");
    expect(parseForwardedElement("2001:db8::1")).toBe("2001:db8::1");
    expect(parseForwardedElement("::ffff:9.8.7.6")).toBe("9.8.7.6");
    for (const bad of ["unknown", "", "[1.2.3.4]", "[::1]x", "1.2.3.4:", "1.2.3.4:123456", "_obf", "999.1.1.1", "[::1"]) expect(parseForwardedElement(bad), bad).toBeUndefined();
  });

  it("walks the chain from the right to the first address that is not a trusted proxy", () => {
    const c = new ClientAddress(["10.0.0.0/8", "2001:db8::/32", "192.0.2.1"]);
    expect(c.resolve("10.0.0.1", "1.1.1.1")).toBe("1.1.1.1");
    expect(c.resolve("::ffff:10.0.0.1", "1.1.1.1")).toBe("1.1.1.1");
    expect(c.resolve("2001:db8::5", "1.1.1.1, 192.0.2.1")).toBe("1.1.1.1");
    expect(c.resolve("10.0.0.1", "6.6.6.6, 1.1.1.1, 10.9.9.9")).toBe("1.1.1.1");
    expect(c.resolve("10.0.0.1", ["6.6.6.6", "1.1.1.1"])).toBe("1.1.1.1");
    expect(c.resolve("10.0.0.1", "10.0.0.2, 10.0.0.3")).toBe("10.0.0.2"); // all proxies: the leftmost
    expect(c.resolve("10.0.0.1", undefined)).toBe("10.0.0.1");
    expect(c.resolve("10.0.0.1", "garbage, 1.1.1.1")).toBe("1.1.1.1"); // garbage left of the client is never read
    expect(c.resolve("10.0.0.1", "1.1.1.1, garbage")).toBeUndefined();
    expect(c.resolve("10.0.0.1", `${"10.0.0.2, ".repeat(40)}10.0.0.3`)).toBeUndefined();
    expect(c.resolve("1.1.1.1", "10.0.0.1")).toBe("1.1.1.1"); // untrusted peer: XFF ignored
    expect(c.resolve("::ffff:1.1.1.1", "10.0.0.1")).toBe("1.1.1.1");
    expect(c.resolve(undefined, "1.1.1.1")).toBeUndefined();
    expect(new ClientAddress([]).resolve("10.0.0.1", "1.1.1.1")).toBe("10.0.0.1");
    expect(new ClientAddress(["::ffff:10.0.0.0/104"]).isTrusted("10.3.3.3")).toBe(true);
    expect(new ClientAddress(["10.0.0.0/8"]).isTrusted("::ffff:10.3.3.3")).toBe(true);
    expect(() => new ClientAddress(["nope"])).toThrow(/trustProxy/);
  });
});

describe("metric labels", () => {
  const store = { outboxCounts: async () => ({ pending: 1, inflight: 0, done: 0, dead: 0 }) } as unknown as Store;

  it("every label comes from a fixed list: anything else is other", async () => {
    const m = new Metrics(store);
    const before = series(await m.registry.metrics());
    m.callbacks.inc({ channel: "evil", outcome: "made-up" });
    m.callbacks.labels({ channel: "app", outcome: "x".repeat(100) }).inc();
    m.dedupHits.inc({ channel: "omni" });
    m.kfPages.inc({ outcome: "weird" });
    m.deliveryAttempts.inc({ kind: "unknown-kind", outcome: "done" });
    m.deliveryFailures.inc({ kind: "x" });
    m.deliverySeconds.observe({ kind: "y" }, 0.1);
    m.callbackSeconds.observe({ channel: "z" }, 0.1);
    m.wecomErrcodes.inc({ api: apiLabel("cgi-bin/../secret"), errcode: wecomErrcodeLabel(123456) });
    m.wecomErrcodes.inc({ api: "x", errcode: "y" });
    m.wecomConfigErrors.inc({ api: "kf/sync_msg", errcode: 45009 });
    m.kfPullErrors.inc({ class: "nope" });
    m.retentionDeleted.inc({ what: "everything" }, 3);
    const after = await m.registry.metrics();
    expect(series(after)).toEqual(before);
    expect(after).toContain('wecom_bridge_callbacks_total{channel="other",outcome="other"} 1');
    expect(after).toContain('wecom_bridge_callbacks_total{channel="app",outcome="other"} 1');
    expect(after).toContain('wecom_bridge_wecom_errcodes_total{api="other",errcode="other"} 2');
    expect(after).toContain('wecom_bridge_retention_deleted_total{what="other"} 3');
    expect(after).toContain('wecom_bridge_outbox_depth{state="pending"} 1');
  });

  it("the fixed combinations exist from the start", async () => {
    const text = await new Metrics(store).registry.metrics();
    for (const channel of CHANNEL_LABELS) expect(text).toContain(`wecom_bridge_callbacks_total{channel="${channel}",outcome="stored"} 0`);
    expect(text).toContain('wecom_bridge_wecom_errcodes_total{api="kf/sync_msg",errcode="95007"} 0');
    expect(text).toContain('wecom_bridge_wecom_errcodes_total{api="gettoken",errcode="-2"} 0');
    expect(text).toContain('wecom_bridge_wecom_config_errors_total{api="media/get",errcode="60020"} 0');
    expect(text).toContain('wecom_bridge_callback_duration_seconds_count{channel="bot"} 0');
    expect(text).toContain('wecom_bridge_delivery_attempts_total{kind="omni",outcome="dead"} 0');
    expect(text).toContain('wecom_bridge_kf_pull_errors_total{class="configuration"} 0');
    expect(text).toContain('wecom_bridge_outbox_depth{state="dead"} 0');
  });

  it("errcode and api labels", () => {
    expect(wecomErrcodeLabel(0)).toBe("0");
    expect(wecomErrcodeLabel(60020)).toBe("60020");
    expect(wecomErrcodeLabel(-2)).toBe("-2");
    expect(wecomErrcodeLabel(4242)).toBe("other");
    expect(apiLabel("kf/sync_msg")).toBe("kf/sync_msg");
    expect(apiLabel("kf/sync_msg/")).toBe("other");
  });

  it("the KF lag has no per-account label: no account adds a series", async () => {
    const m = new Metrics(store);
    const before = series(await m.registry.metrics());
    m.kfPullLag.set(3);
    const after = series(await m.registry.metrics());
    expect(after).toEqual(before);
    expect(after).toContain("wecom_bridge_kf_pull_lag_seconds");
  });

  it("the edge names a channel only for its routes", () => {
    expect(edgeChannel("/wecom/app/support")).toBe("app");
    expect(edgeChannel("/wecom/bot/x")).toBe("bot");
    expect(edgeChannel("/archive/push")).toBe("archive");
    expect(edgeChannel("/x/evil/y")).toBe("other");
    expect(edgeChannel("/wecom/kf")).toBe("other");
  });

  it("2,000 oversized or unknown requests on random paths add no series to /metrics", async () => {
    stack = await startStack();
    const s = stack;
    const before = series(await metricsText(s));
    const rand = () => Math.random().toString(36).slice(2);
    const oversized = async (j: number) => {
      const c = rawSocket(s);
      const path = [`/wecom/${rand()}/${rand()}`, `/${rand()}/${rand()}/${rand()}`, `/wecom/app/${rand()}`, `/archive/${rand()}`][j % 4];
      c.socket.write(`POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n`);
      await c.closed;
      return c.received().slice(0, 12);
    };
    const unknown = async (i: number) => {
      const body = Buffer.from(Array.from({ length: 20 + (i % 200) }, () => Math.floor(Math.random() * 256)));
      const res = await fetch(`${s.gw.url}/${i % 2 ? "wecom/app" : rand()}/${rand()}?${rand()}=${rand()}`, { method: "POST", body });
      await res.arrayBuffer();
      return res.status;
    };
    const statuses: string[] = [];
    for (let start = 0; start < 2000; start += 50) {
      const batch = Array.from({ length: 50 }, (_, k) => start + k);
      statuses.push(...(await Promise.all(batch.map((i) => (i % 2 === 0 ? oversized(i / 2) : unknown(i).then(String))))));
    }
    expect(statuses.filter((st) => st === "HTTP/1.1 413")).toHaveLength(1000);
    expect(statuses.filter((st) => st.startsWith("5"))).toEqual([]);
    const text = await metricsText(s);
    expect(series(text)).toEqual(before);
    expect(text).toMatch(/wecom_bridge_callbacks_total\{channel="other",outcome="too_large"\} 750/);
    expect(text).toMatch(/wecom_bridge_callbacks_total\{channel="app",outcome="too_large"\} 250/);
   }, 30_000);

  it("an undocumented errcode from WeCom is counted under other", async () => {
    stack = await startStack();
    const s = stack;
    const fixed = (t: string) => series(t);
    const before = fixed(await metricsText(s));
    s.wecom.failNext("kf/sync_msg", 99_999);
    await s.wecom.kfCustomerSends(KFID, "wmHTTP", { msgtype: "text", text: { content: "hi" } });
    const text = await eventually(async () => {
      const t = await metricsText(s);
      return /wecom_bridge_wecom_errcodes_total\{api="kf\/sync_msg",errcode="other"\} [1-9]/.test(t) ? t : false;
    }, 5000, "the errcode counted");
    expect(fixed(text)).toEqual(before);
  });
});

describe("comparisons", () => {
  it("safeEqual compares fixed-length digests with timingSafeEqual, whatever the lengths", () => {
    const spy = vi.mocked(nodeCrypto.timingSafeEqual);
    spy.mockClear();
    expect(safeEqual("short", "a much longer secret value")).toBe(false);
    expect(safeEqual("same", "same")).toBe(true);
    expect(safeEqual("", "x")).toBe(false);
    expect(spy).toHaveBeenCalledTimes(3);
    for (const [a, b] of spy.mock.calls) {
      expect((a as Buffer).length).toBe(32);
      expect((b as Buffer).length).toBe(32);
    }
  });

  it("safeEqual is exact for every string", () => {
    expect(safeEqual("\uD800", "\uD801")).toBe(false); // lone surrogates (UTF-8 would make both U+FFFD)
    expect(safeEqual("发票", "发票")).toBe(true);
    expect(safeEqual("ā", "\u0101")).toBe(true);
    expect(safeEqual("a\u0000", "a")).toBe(false);
  });

  it("bearerMatches takes the scheme in any case and compares the token exactly", () => {
    const token = "admin-token-0123456789";
    for (const scheme of ["Bearer", "bearer", "BEARER", "bEaReR"]) expect(bearerMatches(`${scheme} ${token}`, token), scheme).toBe(true);
    expect(bearerMatches(`Bearer   ${token}`, token)).toBe(true);
    for (const bad of [undefined, "", token, `Basic ${token}`, `Bearer${token}`, `Bearer ${token}x`, `Bearer ${token.slice(0, -1)}`, "Bearer ", `Bearer\t${token}`, `xBearer ${token}`]) {
      expect(bearerMatches(bad, token), String(bad)).toBe(false);
    }
    expect(bearerMatches("Bearer ", "")).toBe(false);
  });
});
