/**
 * AibotWsClient against a scripted peer (a `ws` WebSocketServer on loopback, in this file): the
 * subscribe and its refusal, the heartbeat and dead links, reconnects with backoff, the kick-out
 * (disconnected_event), acks and their timeouts, frames of one req_id sent one at a time, stale
 * generations, media uploads and stop(). Intervals are tens of ms; the tests wait for events (a
 * frame at the peer, a state, a log line), never for a fixed time, except to show that something
 * does NOT happen.
 */
import { EventEmitter } from "node:events";
import { type AddressInfo, createServer, type Server, type Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { afterEach, describe, expect, it } from "vitest";
import type WebSocket from "ws";
import { WebSocketServer } from "ws";
import {
  type AibotInbound,
  AibotWsApiError,
  AibotWsClient,
  AibotWsClosedError,
  AibotWsNotOpenError,
  type AibotWsOptions,
  AibotWsQueueFullError,
  AibotWsStaleError,
  type AibotWsState,
  type AibotWsStateDetail,
  AibotWsTimeoutError,
} from "../src/clients/aibot-ws.js";
import { createLogger } from "../src/log.js";
import { failureOf } from "./helpers.js";

const BOT = "aibBOT01";
const SECRET = "s3cr3t-Xy9-never-logged";

// ---- events: every frame at the peer, state change and log line ticks the bus -------------------

const bus = new EventEmitter();
bus.setMaxListeners(0);
const tick = () => bus.emit("tick");

/** Resolves with `cond()`'s first value that is not undefined/false/null, checked at every event; fails after `ms`. */
function until<T>(what: string, cond: () => T | undefined | false | null, ms = 5000): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      done();
      reject(new Error(`${what}: not within ${ms} ms`));
    }, ms);
    const done = () => {
      clearTimeout(timer);
      bus.off("tick", check);
    };
    function check() {
      let v: T | undefined | false | null;
      try {
        v = cond();
      } catch (e) {
        done();
        reject(e);
        return;
      }
      if (v !== undefined && v !== false && v !== null) {
        done();
        resolve(v);
      }
    }
    bus.on("tick", check);
    check();
  });
}

/** A pause, only to show that something does NOT happen within it. */
const quiet = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- the scripted peer -------------------------------------------------------------------------

interface Frame {
  cmd?: string;
  headers: { req_id: string };
  body?: Record<string, any>;
}

interface PeerConn {
  ws: WebSocket;
  frames: Frame[];
  /** performance.now() of each frame. */
  times: number[];
  openedAt: number;
  closedAt?: number;
  closeCode?: number;
}

class Peer {
  readonly conns: PeerConn[] = [];
  /** The secret the peer accepts. */
  secret = SECRET;
  /** Terminate this many next connections as soon as they arrive. */
  dropOnArrival = 0;
  /** Terminate this many next connections as soon as their subscribe's ack is written. */
  dropAfterSubscribe = 0;
  /** Whether to ack the n-th ping (1-based) of a connection. */
  pingAck: (n: number) => boolean = () => true;
  /** Handles frames other than subscribe and ping; default: ack with errcode 0. */
  onRequest: ((c: PeerConn, f: Frame) => void) | undefined;

  constructor(
    readonly wss: WebSocketServer,
    readonly url: string,
  ) {
    wss.on("connection", (ws) => {
      const c: PeerConn = { ws, frames: [], times: [], openedAt: performance.now() };
      this.conns.push(c);
      ws.on("message", (data) => {
        const f = JSON.parse(String(data)) as Frame;
        c.frames.push(f);
        c.times.push(performance.now());
        this.#handle(c, f);
        tick();
      });
      ws.on("close", (code) => {
        c.closedAt = performance.now();
        c.closeCode = code;
        tick();
      });
      if (this.dropOnArrival > 0) {
        this.dropOnArrival--;
        ws.terminate();
      }
      tick();
    });
  }

  #handle(c: PeerConn, f: Frame): void {
    if (f.cmd === "aibot_subscribe") {
      if (f.body?.bot_id === BOT && f.body?.secret === this.secret) {
        if (this.dropAfterSubscribe > 0) {
          this.dropAfterSubscribe--;
          c.ws.send(JSON.stringify({ headers: { req_id: f.headers.req_id }, errcode: 0, errmsg: "ok" }), () => c.ws.terminate());
        } else this.ack(c, f.headers.req_id);
      }
      // echo the wrong secret in errmsg: the client must not log it
      else this.ack(c, f.headers.req_id, 853000, `signature is incorrect, please check if the bot secret is correct (${String(f.body?.secret)})`);
    } else if (f.cmd === "ping") {
      if (this.pingAck(this.pings(c).length)) this.ack(c, f.headers.req_id);
    } else if (this.onRequest) this.onRequest(c, f);
    else this.ack(c, f.headers.req_id);
  }

  /** The latest connection. */
  get last(): PeerConn {
    const c = this.conns[this.conns.length - 1];
    if (c === undefined) throw new Error("no connection yet");
    return c;
  }

  pings(c: PeerConn): Frame[] {
    return c.frames.filter((f) => f.cmd === "ping");
  }

  framesOf(c: PeerConn, cmd: string): Frame[] {
    return c.frames.filter((f) => f.cmd === cmd);
  }

  ack(c: PeerConn, reqId: string | undefined, errcode = 0, errmsg = "ok", body?: Record<string, unknown>): void {
    const frame: Record<string, unknown> = { errcode, errmsg };
    if (reqId !== undefined) frame.headers = { req_id: reqId };
    if (body !== undefined) frame.body = body;
    c.ws.send(JSON.stringify(frame));
  }

  push(c: PeerConn, cmd: string, reqId: string, body: Record<string, unknown>): void {
    c.ws.send(JSON.stringify({ cmd, headers: { req_id: reqId }, body }));
  }
}

const peers: Peer[] = [];
const clients: AibotWsClient[] = [];
const servers: Server[] = [];
let logs: string[] = [];

async function startPeer(): Promise<Peer> {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise<void>((resolve) => wss.once("listening", () => resolve()));
  const peer = new Peer(wss, `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`);
  peers.push(peer);
  return peer;
}

interface Made {
  client: AibotWsClient;
  states: { state: AibotWsState; detail: AibotWsStateDetail; at: number }[];
  inbound: AibotInbound[];
}

function makeClient(peer: { url: string }, over: Partial<AibotWsOptions> = {}): Made {
  const states: Made["states"] = [];
  const inbound: AibotInbound[] = [];
  const client = new AibotWsClient({
    url: peer.url,
    botId: BOT,
    secret: SECRET,
    pingIntervalMs: 5_000,
    ackTimeoutMs: 1_000,
    backoffMinMs: 20,
    backoffMaxMs: 80,
    kickedQuietMs: 300,
    handshakeTimeoutMs: 1_000,
    log: createLogger({
      level: "debug",
      write: (l) => {
        logs.push(l);
        tick();
      },
    }),
    onInbound: (f) => {
      inbound.push(f);
      tick();
    },
    onState: (state, detail) => {
      states.push({ state, detail, at: performance.now() });
      tick();
    },
    ...over,
  });
  clients.push(client);
  return { client, states, inbound };
}

/** Parsed log lines. */
const logLines = () => logs.map((l) => JSON.parse(l) as { level: string; msg: string; [k: string]: unknown });

/** A round trip on the connection: every frame the client wrote before it has reached the peer. */
async function barrier(client: AibotWsClient): Promise<void> {
  expect((await client.send("barrier", {})).errcode).toBe(0);
}

afterEach(async () => {
  for (const c of clients.splice(0)) await c.stop();
  for (const p of peers.splice(0)) {
    for (const c of p.conns) c.ws.terminate();
    await new Promise((r) => p.wss.close(r));
  }
  for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
  // the secret never reaches a log line, whatever the test did
  expect(logs.filter((l) => l.includes(SECRET))).toEqual([]);
  logs = [];
});

// ---- tests -------------------------------------------------------------------------------------

describe("AibotWsClient: subscribe", () => {
  it("subscribes with bot_id and secret on a fresh req_id: state open, generation 1, callbacks delivered", async () => {
    const peer = await startPeer();
    const { client, states, inbound } = makeClient(peer);
    expect(client.state).toBe("idle");
    client.start();
    await until("open", () => client.state === "open");
    expect(client.generation).toBe(1);
    expect(states.map((s) => s.state)).toEqual(["connecting", "subscribing", "open"]);
    const sub = peer.last.frames[0] as Frame;
    expect(sub.cmd).toBe("aibot_subscribe");
    expect(sub.body).toEqual({ bot_id: BOT, secret: SECRET });
    expect(sub.headers.req_id).toMatch(/^aibot_subscribe_\d{13}_[0-9a-f]{8}$/);
    expect(client.counters).toEqual({ connects: 1, reconnects: 0, kicks: 0, deadByPing: 0, authFailures: 0 });

    const body = { msgid: "m1", aibotid: BOT, chattype: "single", from: { userid: "u1" }, msgtype: "text", text: { content: "hi" } };
    peer.push(peer.last, "aibot_msg_callback", "zYiT5A1AQVaghhPBWxgzAwAA", body);
    peer.push(peer.last, "aibot_event_callback", "4FcR2bSZRBevQKigbaUvNgAA", { msgtype: "event", event: { eventtype: "enter_chat" } });
    await until("two callbacks", () => inbound.length === 2);
    expect(inbound[0]).toEqual({ cmd: "aibot_msg_callback", reqId: "zYiT5A1AQVaghhPBWxgzAwAA", body, generation: 1 });
    expect(inbound[1]).toMatchObject({ cmd: "aibot_event_callback", reqId: "4FcR2bSZRBevQKigbaUvNgAA", generation: 1 });
  });

  it("a refused subscribe: auth_failed, an error log with the errcode (never the secret), retried at the longest backoff until the secret is right", async () => {
    const peer = await startPeer();
    peer.secret = "the-new-secret";
    const { client, states } = makeClient(peer, { backoffMinMs: 10, backoffMaxMs: 120, random: () => 1 });
    client.start();
    await until("auth_failed", () => client.state === "auth_failed");
    const failedAt = performance.now();
    expect(client.counters.authFailures).toBe(1);
    expect(states.find((s) => s.state === "auth_failed")?.detail).toEqual({ reason: "subscribe refused: errcode 853000", delayMs: 120 });
    const error = logLines().find((l) => l.level === "error");
    expect(error).toMatchObject({ errcode: 853000 });
    expect(String(error?.errmsg)).toContain("[redacted]");
    // the client closes the refused connection itself
    await until("refused connection closed", () => peer.conns[0]?.closedAt !== undefined);

    // the secret gets fixed on WeCom's side: the client's next try succeeds
    peer.secret = SECRET;
    await until("open", () => client.state === "open");
    expect(peer.conns[1]!.openedAt - failedAt).toBeGreaterThanOrEqual(119);
    expect(client.generation).toBe(1);
    expect(client.counters).toMatchObject({ connects: 1, reconnects: 1, authFailures: 1 });
  });

  it("an error frame without req_id before the subscribe is answered counts as the subscribe's answer", async () => {
    const peer = await startPeer();
    peer.secret = "other";
    peer.wss.removeAllListeners("connection");
    peer.wss.on("connection", (ws) => ws.on("message", () => ws.send(JSON.stringify({ errcode: 40058, errmsg: "invalid Request Parameter" }))));
    const { client } = makeClient(peer, { backoffMaxMs: 5_000 });
    client.start();
    await until("auth_failed", () => client.state === "auth_failed");
    expect(client.counters.authFailures).toBe(1);
  });
});

describe("AibotWsClient: heartbeat", () => {
  it("pings every interval after the subscribe, without a body, and stays open while acked", async () => {
    const peer = await startPeer();
    const { client } = makeClient(peer, { pingIntervalMs: 30, ackTimeoutMs: 200 });
    client.start();
    await until("open", () => client.state === "open");
    const openAt = performance.now();
    await until("4 pings", () => peer.pings(peer.last).length >= 4);
    const pings = peer.pings(peer.last);
    for (const p of pings) {
      expect(p).not.toHaveProperty("body");
      expect(p.headers.req_id).toMatch(/^ping_\d{13}_[0-9a-f]{8}$/);
    }
    expect(new Set(pings.map((p) => p.headers.req_id)).size).toBe(pings.length);
    const times = peer.last.times.filter((_, i) => peer.last.frames[i]?.cmd === "ping");
    expect(times[0]! - openAt).toBeGreaterThanOrEqual(20);
    for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!).toBeGreaterThanOrEqual(20);
    expect(client.state).toBe("open");
    expect(client.counters.deadByPing).toBe(0);
    expect(peer.conns).toHaveLength(1);
  });

  it("a silent peer: two pings without ack (each past ackTimeoutMs) → dead, terminated, a new connection", async () => {
    const peer = await startPeer();
    peer.pingAck = () => false;
    const { client } = makeClient(peer, { pingIntervalMs: 30, ackTimeoutMs: 20 });
    client.start();
    await until("open", () => client.state === "open");
    await until("second connection open", () => client.counters.deadByPing === 1 && peer.conns.length === 2 && client.state === "open");
    const first = peer.conns.find((c) => peer.pings(c).length > 0)!; // the first connection, unless a subscribe was lost under load
    expect(peer.pings(first)).toHaveLength(2);
    expect(first.closeCode).toBe(1006); // terminated, no close handshake
    expect(first.closedAt! - first.openedAt).toBeGreaterThanOrEqual(70); // ping at ~30 and ~60, second miss at ~80
    expect(client.generation).toBe(2);
    expect(logLines().some((l) => l.level === "warn" && l.msg.includes("two pings"))).toBe(true);
  });

  it("a ping still unanswered at the next tick is missed too (ackTimeoutMs longer than the interval)", async () => {
    const peer = await startPeer();
    peer.pingAck = () => false;
    const { client } = makeClient(peer, { pingIntervalMs: 30, ackTimeoutMs: 5_000 });
    client.start();
    await until("dead", () => client.counters.deadByPing === 1);
    expect(peer.pings(peer.conns.find((c) => peer.pings(c).length > 0)!)).toHaveLength(2);
  });

  it("any ack resets the miss count: a peer that answers every second ping is never declared dead", async () => {
    const peer = await startPeer();
    peer.pingAck = (n) => n % 2 === 0;
    // a miss is counted at the next tick (ackTimeoutMs is longer than the interval): an ack has a whole interval to come
    const { client } = makeClient(peer, { pingIntervalMs: 50, ackTimeoutMs: 5_000 });
    client.start();
    await until("7 pings", () => peer.conns.length > 0 && peer.pings(peer.last).length >= 7);
    expect(client.counters.deadByPing).toBe(0);
    expect(peer.conns).toHaveLength(1);
    expect(client.state).toBe("open");
  });
});

describe("AibotWsClient: reconnects", () => {
  it("connections dropped before the subscribe: exponential backoff 40, 80, 160, 160 (capped); a subscribe alone does not reset it; jitter within [d/2, d]", async () => {
    const peer = await startPeer();
    peer.dropOnArrival = 5; // the first connection and four reconnects
    let r = 1; // the top of the jitter range: delays are exact
    const { client, states } = makeClient(peer, { backoffMinMs: 40, backoffMaxMs: 160, random: () => r });
    client.start();
    await until("open", () => client.state === "open", 10_000);
    const delays = states.filter((s) => s.state === "backoff").map((s) => s.detail.delayMs);
    expect(delays).toEqual([40, 80, 160, 160, 160]);
    expect(peer.conns).toHaveLength(6);
    // each new connection came no sooner than its delay after the previous one was dropped
    for (let i = 1; i < peer.conns.length; i++) expect(peer.conns[i]!.openedAt - peer.conns[i - 1]!.closedAt!).toBeGreaterThanOrEqual(delays[i - 1]! - 1);
    expect(client.counters).toMatchObject({ connects: 1, reconnects: 5 });

    // an abrupt drop of a subscribed connection that never had a ping acked: not yet stable, the
    // backoff stays at the cap (at the bottom of the jitter range: 160 / 2)
    r = 0;
    const before = states.length;
    peer.last.ws.terminate();
    await until("open again", () => client.state === "open" && client.generation === 2);
    const again = states.slice(before);
    expect(again.map((s) => s.state)).toEqual(["backoff", "connecting", "subscribing", "open"]);
    expect(again[0]!.detail.delayMs).toBe(80);
    expect(peer.conns[6]!.openedAt - peer.conns[5]!.closedAt!).toBeGreaterThanOrEqual(79);
    expect(client.counters).toMatchObject({ connects: 2, reconnects: 6 });
  });

  it("a link cut right after each subscribe backs off 40, 80, 160, 320 (not backoffMinMs each time); the first ping ack resets the backoff", async () => {
    const peer = await startPeer();
    peer.dropAfterSubscribe = 4;
    const { client, states } = makeClient(peer, { backoffMinMs: 40, backoffMaxMs: 320, pingIntervalMs: 30, random: () => 1 });
    client.start();
    await until("fifth connection open", () => client.state === "open" && client.generation === 5, 10_000);
    // every one of the four cut connections was subscribed
    expect(client.counters).toMatchObject({ connects: 5, reconnects: 4 });
    const backoffs = states.filter((s) => s.state === "backoff");
    expect(backoffs.map((s) => s.detail.delayMs)).toEqual([40, 80, 160, 320]);
    expect(backoffs.every((s) => s.detail.reason?.startsWith("connection closed"))).toBe(true);
    // the attempts really were spaced by those delays
    expect(peer.conns).toHaveLength(5);
    for (let i = 1; i < peer.conns.length; i++) expect(peer.conns[i]!.openedAt - peer.conns[i - 1]!.closedAt!).toBeGreaterThanOrEqual(backoffs[i - 1]!.detail.delayMs! - 1);

    // the fifth connection stays: its first ping is acked, it is stable, the next drop starts from backoffMinMs again
    await until("a ping acked", () => logLines().find((l) => l.level === "debug" && l.msg.includes("the backoff is reset")));
    const before = states.length;
    peer.last.ws.terminate();
    await until("open again", () => client.state === "open" && client.generation === 6);
    expect(states.slice(before).find((s) => s.state === "backoff")?.detail.delayMs).toBe(40);
  });

  it("a handshake that never completes times out and is tried again", async () => {
    const sockets: Socket[] = [];
    const server = createServer((s) => sockets.push(s)); // accepts TCP, never answers the upgrade
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { client, states } = makeClient({ url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}` }, { handshakeTimeoutMs: 50 });
    client.start();
    await until("second attempt", () => sockets.length >= 2);
    const backoff = states.find((s) => s.state === "backoff")!;
    expect(backoff.at - states[0]!.at).toBeGreaterThanOrEqual(45);
    expect(client.counters.connects).toBe(0);
    await client.stop();
    for (const s of sockets) s.destroy();
  });

  it("846609 (not subscribed) on an ack: the request resolves with it and the client reconnects", async () => {
    const peer = await startPeer();
    peer.onRequest = (c, f) => peer.ack(c, f.headers.req_id, 846609, "aibot websocket not subscribed");
    const { client } = makeClient(peer);
    client.start();
    await until("open", () => client.state === "open");
    expect((await client.send("aibot_send_msg", { chatid: "u1", msgtype: "markdown", markdown: { content: "x" } })).errcode).toBe(846609);
    await until("resubscribed", () => client.state === "open" && client.generation === 2);
  });
});

describe("AibotWsClient: disconnected_event", () => {
  it("kicked: not passed on, a warning, the socket closed by us, no reconnect before kickedQuietMs, then reconnects", async () => {
    const peer = await startPeer();
    const { client, states, inbound } = makeClient(peer, { kickedQuietMs: 250 });
    client.start();
    await until("open", () => client.state === "open");
    const kickedAt = performance.now();
    // the server does not close the socket after the event: the client must
    peer.push(peer.last, "aibot_event_callback", "kickREQ", { msgid: "e1", msgtype: "event", event: { eventtype: "disconnected_event" } });
    await until("kicked", () => client.state === "kicked");
    expect(client.counters.kicks).toBe(1);
    expect(states.find((s) => s.state === "kicked")?.detail.delayMs).toBe(250);
    const warn = logLines().find((l) => l.level === "warn" && l.msg.includes("taken over by another connection"));
    expect(warn?.msg).toMatch(/two deployments, or replicas without a shared store/);
    await until("first socket closed", () => peer.conns[0]!.closedAt !== undefined);
    expect(peer.conns[0]!.closeCode).toBe(1000);
    expect(await failureOf(client.send("aibot_send_msg", {}), AibotWsNotOpenError)).toBeInstanceOf(AibotWsNotOpenError);

    await until("open again", () => client.state === "open" && client.generation === 2);
    expect(peer.conns).toHaveLength(2);
    expect(peer.conns[1]!.openedAt - kickedAt).toBeGreaterThanOrEqual(250);
    expect(inbound).toEqual([]);
    expect(client.counters).toMatchObject({ kicks: 1, connects: 2, reconnects: 1 });
  });
});

describe("AibotWsClient: requests and acks", () => {
  it("send: a fresh req_id; resolves with the ack whatever its errcode, body included", async () => {
    const peer = await startPeer();
    peer.onRequest = (c, f) => {
      if (f.body?.markdown?.content === "late") peer.ack(c, f.headers.req_id, 846608, "stream message update expired");
      else peer.ack(c, f.headers.req_id, 0, "ok", { echo: f.body?.chatid });
    };
    const { client } = makeClient(peer);
    expect(await failureOf(client.send("aibot_send_msg", {}), AibotWsNotOpenError)).toMatchObject({ code: "aibot_ws_not_open", cmd: "aibot_send_msg" });
    client.start();
    await until("open", () => client.state === "open");
    const body = { chatid: "u1", msgtype: "markdown", markdown: { content: "late" } };
    expect(await client.send("aibot_send_msg", body)).toEqual({ errcode: 846608, errmsg: "stream message update expired" });
    expect(await client.send("aibot_send_msg", { chatid: "u2", msgtype: "markdown", markdown: { content: "x" } })).toEqual({ errcode: 0, errmsg: "ok", body: { echo: "u2" } });
    const sent = peer.framesOf(peer.last, "aibot_send_msg");
    expect(sent[0]).toEqual({ cmd: "aibot_send_msg", headers: { req_id: expect.stringMatching(/^aibot_send_msg_\d{13}_[0-9a-f]{8}$/) }, body });
    expect(sent[0]!.headers.req_id).not.toBe(sent[1]!.headers.req_id);
  });

  it("no ack within ackTimeoutMs → AibotWsTimeoutError; a late ack is swallowed, an unknown one and an error frame without req_id are logged", async () => {
    const peer = await startPeer();
    const held: Frame[] = [];
    peer.onRequest = (_c, f) => {
      held.push(f);
      tick();
    };
    const { client } = makeClient(peer, { ackTimeoutMs: 60 });
    client.start();
    await until("open", () => client.state === "open");
    const started = performance.now();
    const e = await failureOf(client.send("aibot_send_msg", { chatid: "u1" }), AibotWsTimeoutError);
    expect(performance.now() - started).toBeGreaterThanOrEqual(55);
    expect(e).toMatchObject({ code: "aibot_ws_timeout", cmd: "aibot_send_msg" });
    peer.ack(peer.last, held[0]!.headers.req_id);
    await until("late ack swallowed", () => logLines().find((l) => l.level === "debug" && l.msg.includes("late ack of a frame that timed out") && l.reqId === held[0]!.headers.req_id));
    // a second ack on that req_id was owed nothing: unknown
    peer.ack(peer.last, held[0]!.headers.req_id);
    await until("unknown ack logged", () => logLines().find((l) => l.level === "debug" && l.msg.includes("matches no waiting request") && l.reqId === held[0]!.headers.req_id));
    peer.ack(peer.last, undefined, 40058, "missing field `body.image.media_id`");
    await until("req_id-less error logged", () => logLines().find((l) => l.level === "warn" && l.errcode === 40058));
    expect(client.state).toBe("open");
  });

  it("an unparseable frame and an onInbound that throws do not stop the reader", async () => {
    const peer = await startPeer();
    let calls = 0;
    const { client } = makeClient(peer, {
      onInbound: () => {
        calls++;
        tick();
        if (calls === 1) throw new Error("handler bug");
      },
    });
    client.start();
    await until("open", () => client.state === "open");
    peer.last.ws.send("{not json");
    peer.push(peer.last, "aibot_msg_callback", "r1", { msgid: "1" });
    peer.push(peer.last, "aibot_msg_callback", "r2", { msgid: "2" });
    await until("both delivered", () => calls === 2);
    await barrier(client);
    const lines = logLines();
    expect(lines.some((l) => l.level === "error" && l.msg.includes("onInbound threw") && String(l.error).includes("handler bug"))).toBe(true);
    expect(lines.some((l) => l.level === "warn" && l.reason === "not JSON")).toBe(true);
  });
});

describe("AibotWsClient: respond", () => {
  it("frames of one req_id go one at a time, in order, each after the previous ack, error ack or timeout; other req_ids are not held up", async () => {
    const peer = await startPeer();
    const held: Frame[] = [];
    peer.onRequest = (c, f) => {
      if (f.cmd === "aibot_respond_msg" && f.headers.req_id === "R1") held.push(f);
      else peer.ack(c, f.headers.req_id);
    };
    const { client, inbound } = makeClient(peer, { ackTimeoutMs: 1_000 });
    client.start();
    await until("open", () => client.state === "open");
    peer.push(peer.last, "aibot_msg_callback", "R1", { msgid: "m1", msgtype: "text", text: { content: "q" } });
    const cb = await until("callback", () => inbound[0]);
    const stream = (content: string, finish = false) => ({ msgtype: "stream", stream: { id: "s1", finish, content } });
    const p1 = client.respond(cb.reqId, "aibot_respond_msg", stream("a"), cb.generation);
    const p2 = client.respond(cb.reqId, "aibot_respond_msg", stream("ab"), cb.generation);
    const p3 = client.respond(cb.reqId, "aibot_respond_msg", stream("abc", true), cb.generation);
    // another req_id runs alongside
    expect((await client.respond("R2", "aibot_respond_welcome_msg", { msgtype: "text", text: { content: "hi" } }, cb.generation)).errcode).toBe(0);
    await barrier(client);
    expect(held.map((f) => f.body?.stream.content)).toEqual(["a"]);

    peer.ack(peer.last, "R1");
    expect(await p1).toEqual({ errcode: 0, errmsg: "ok" });
    await until("second frame", () => held.length === 2);
    await barrier(client);
    expect(held).toHaveLength(2);

    peer.ack(peer.last, "R1", 846608, "stream message update expired");
    expect(await p2).toEqual({ errcode: 846608, errmsg: "stream message update expired" });
    await until("third frame", () => held.length === 3);
    expect(await failureOf(p3, AibotWsTimeoutError)).toMatchObject({ cmd: "aibot_respond_msg" });

    expect(held.map((f) => [f.cmd, f.headers.req_id, f.body?.stream.content, f.body?.stream.finish])).toEqual([
      ["aibot_respond_msg", "R1", "a", false],
      ["aibot_respond_msg", "R1", "ab", false],
      ["aibot_respond_msg", "R1", "abc", true],
    ]);
    // after the timeout the req_id is held: a fourth frame waits for the third one's late ack (or the grace)
    const p4 = client.respond(cb.reqId, "aibot_respond_msg", stream("abcd", true), cb.generation);
    await barrier(client);
    expect(held).toHaveLength(3);
    peer.ack(peer.last, "R1", 0, "ok"); // the third frame's late ack: swallowed, it frees the req_id
    await until("fourth frame", () => held.length === 4);
    peer.ack(peer.last, "R1", 846608, "stream message update expired");
    expect(await p4).toEqual({ errcode: 846608, errmsg: "stream message update expired" });
  });

  it("a late ack settles nothing: the next frame on the req_id waits for it (then goes at once) or for ackTimeoutMs more (then the ack is taken as lost: the next frame's own ack settles it)", async () => {
    const peer = await startPeer();
    const held: Frame[] = [];
    peer.onRequest = (c, f) => {
      if (f.cmd === "aibot_respond_msg") held.push(f);
      else peer.ack(c, f.headers.req_id);
    };
    const ackTimeoutMs = 300;
    const { client } = makeClient(peer, { ackTimeoutMs });
    client.start();
    await until("open", () => client.state === "open");
    const g = client.generation;
    const stream = (content: string) => ({ msgtype: "stream", stream: { id: "s1", finish: false, content } });
    const sentAt = (f: Frame) => peer.last.times[peer.last.frames.indexOf(f)]!;

    // 1. the late ack comes within the grace: frame 2 goes right after it, never before
    const a1 = failureOf(client.respond("RA", "aibot_respond_msg", stream("1"), g), AibotWsTimeoutError);
    const a2 = client.respond("RA", "aibot_respond_msg", stream("2"), g);
    await a1;
    const timedOutAt = performance.now();
    await quiet(ackTimeoutMs / 3);
    await barrier(client);
    expect(held.map((f) => f.body?.stream.content)).toEqual(["1"]);
    const lateAt = performance.now();
    peer.ack(peer.last, "RA", 0, "ok"); // frame 1's late ack
    await until("frame 2", () => held.length === 2);
    expect(sentAt(held[1]!)).toBeGreaterThanOrEqual(lateAt);
    expect(sentAt(held[1]!) - timedOutAt).toBeLessThan(ackTimeoutMs); // released by the ack, not by the grace
    peer.ack(peer.last, "RA", 846608, "stream message update expired");
    expect(await a2).toEqual({ errcode: 846608, errmsg: "stream message update expired" });
    expect(logLines().some((l) => l.level === "debug" && l.msg.includes("late ack of a frame that timed out") && l.reqId === "RA" && l.errcode === 0)).toBe(true);

    // 2. no late ack within the grace (frame 1's ack was lost): frame 2 goes after it, and its own
    // ack settles it (a lost ack must not make every later ack on the req_id one behind)
    const b1 = failureOf(client.respond("RB", "aibot_respond_msg", stream("1"), g), AibotWsTimeoutError);
    const b2 = client.respond("RB", "aibot_respond_msg", stream("2"), g);
    await b1;
    const bTimedOutAt = performance.now();
    await until("frame 2 of RB", () => held.filter((f) => f.headers.req_id === "RB").length === 2);
    const rb = held.filter((f) => f.headers.req_id === "RB");
    expect(sentAt(rb[1]!) - bTimedOutAt).toBeGreaterThanOrEqual(ackTimeoutMs - 5);
    peer.ack(peer.last, "RB", 846608, "stream message update expired"); // frame 2's ack
    expect(await b2).toEqual({ errcode: 846608, errmsg: "stream message update expired" });
    expect(rb.map((f) => f.body?.stream.content)).toEqual(["1", "2"]);
    expect(client.state).toBe("open");
  });

  it("stale generation → AibotWsStaleError at once; at a close the frame in flight rejects Closed, the queued ones Stale", async () => {
    const peer = await startPeer();
    peer.onRequest = () => tick(); // never acks
    const { client, inbound } = makeClient(peer);
    client.start();
    await until("open", () => client.state === "open");
    expect(await failureOf(client.respond("R0", "aibot_respond_msg", {}, 0), AibotWsStaleError)).toMatchObject({ code: "aibot_ws_stale" });
    peer.push(peer.last, "aibot_msg_callback", "R1", { msgid: "m1" });
    const cb = await until("callback", () => inbound[0]);
    const failures = [
      failureOf(client.respond(cb.reqId, "aibot_respond_msg", { n: 1 }, cb.generation), AibotWsClosedError), // in flight
      failureOf(client.respond(cb.reqId, "aibot_respond_msg", { n: 2 }, cb.generation), AibotWsStaleError), // queued
      failureOf(client.respond(cb.reqId, "aibot_respond_msg", { n: 3 }, cb.generation), AibotWsStaleError), // queued
      failureOf(client.send("aibot_send_msg", { chatid: "u1" }), AibotWsClosedError),
    ];
    await until("in flight", () => peer.framesOf(peer.last, "aibot_respond_msg").length === 1 && peer.framesOf(peer.last, "aibot_send_msg").length === 1);
    peer.last.ws.terminate();
    await Promise.all(failures);
    // between connections the req_id's generation is no longer connected
    expect(await failureOf(client.respond(cb.reqId, "aibot_respond_msg", {}, cb.generation), AibotWsStaleError)).toBeInstanceOf(AibotWsStaleError);
    await until("open again", () => client.state === "open" && client.generation === 2);
    expect(await failureOf(client.respond(cb.reqId, "aibot_respond_msg", {}, cb.generation), AibotWsStaleError)).toMatchObject({ message: expect.stringContaining("generation 1, current 2") });
    expect(peer.framesOf(peer.conns[0]!, "aibot_respond_msg")).toHaveLength(1);
    expect(peer.framesOf(peer.conns[1]!, "aibot_respond_msg")).toHaveLength(0);
  });

  it("a req_id's queue is bounded", async () => {
    const peer = await startPeer();
    peer.onRequest = () => tick();
    const { client } = makeClient(peer, { maxQueuePerReqId: 2 });
    client.start();
    await until("open", () => client.state === "open");
    const g = client.generation;
    const kept = [client.respond("R", "aibot_respond_msg", {}, g), client.respond("R", "aibot_respond_msg", {}, g)];
    for (const p of kept) p.catch(() => {});
    expect(await failureOf(client.respond("R", "aibot_respond_msg", {}, g), AibotWsQueueFullError)).toMatchObject({ code: "aibot_ws_queue_full" });
  });
});

describe("AibotWsClient: uploadMedia", () => {
  const bytes = Buffer.alloc(1_200_000);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 131 + (i >> 9)) & 0xff;

  it("init (size, chunk count, md5) → three 0-based chunks of ≤ 512 KiB in base64 → finish", async () => {
    const peer = await startPeer();
    peer.onRequest = (c, f) => {
      if (f.cmd === "aibot_upload_media_init") peer.ack(c, f.headers.req_id, 0, "ok", { upload_id: "UP1" });
      else if (f.cmd === "aibot_upload_media_finish") peer.ack(c, f.headers.req_id, 0, "ok", { type: "file", media_id: "MEDIA1", created_at: 1_780_000_000 });
      else peer.ack(c, f.headers.req_id);
    };
    const { client } = makeClient(peer);
    client.start();
    await until("open", () => client.state === "open");
    expect(await client.uploadMedia("file", "report.bin", bytes)).toEqual({ mediaId: "MEDIA1", type: "file", createdAt: 1_780_000_000 });
    const frames = peer.last.frames.filter((f) => f.cmd?.startsWith("aibot_upload_media"));
    expect(frames.map((f) => f.cmd)).toEqual(["aibot_upload_media_init", "aibot_upload_media_chunk", "aibot_upload_media_chunk", "aibot_upload_media_chunk", "aibot_upload_media_finish"]);
    const { createHash } = await import("node:crypto");
    expect(frames[0]!.body).toEqual({ type: "file", filename: "report.bin", total_size: 1_200_000, total_chunks: 3, md5: createHash("md5").update(bytes).digest("hex") });
    const chunks = frames.slice(1, 4);
    expect(chunks.map((f) => f.body?.chunk_index)).toEqual([0, 1, 2]);
    expect(chunks.every((f) => f.body?.upload_id === "UP1")).toBe(true);
    const parts = chunks.map((f) => Buffer.from(f.body?.base64_data as string, "base64"));
    expect(parts.map((p) => p.length)).toEqual([524_288, 524_288, 151_424]);
    expect(Buffer.concat(parts).equals(bytes)).toBe(true);
    expect(frames[4]!.body).toEqual({ upload_id: "UP1" });
    expect(new Set(frames.map((f) => f.headers.req_id)).size).toBe(5);
  });

  it("an error ack → AibotWsApiError naming the step; nothing is sent after it", async () => {
    const peer = await startPeer();
    peer.onRequest = (c, f) => {
      if (f.cmd === "aibot_upload_media_init") peer.ack(c, f.headers.req_id, 0, "ok", { upload_id: "UP2" });
      else if (f.cmd === "aibot_upload_media_chunk" && f.body?.chunk_index === 1) peer.ack(c, f.headers.req_id, 40058, "invalid Request Parameter");
      else peer.ack(c, f.headers.req_id);
    };
    const { client } = makeClient(peer);
    client.start();
    await until("open", () => client.state === "open");
    const e = await failureOf(client.uploadMedia("image", "a.png", bytes), AibotWsApiError);
    expect(e).toMatchObject({ cmd: "aibot_upload_media_chunk", errcode: 40058, errmsg: "invalid Request Parameter", code: "aibot_ws_api" });
    await barrier(client);
    expect(peer.last.frames.filter((f) => f.cmd?.startsWith("aibot_upload_media")).map((f) => f.body?.chunk_index ?? f.cmd)).toEqual(["aibot_upload_media_init", 0, 1]);

    peer.onRequest = (c, f) => peer.ack(c, f.headers.req_id, 45009, "api freq out of limit");
    expect(await failureOf(client.uploadMedia("image", "a.png", bytes), AibotWsApiError)).toMatchObject({ cmd: "aibot_upload_media_init", errcode: 45009 });
  });
});

describe("AibotWsClient: stop", () => {
  it("rejects what waits with AibotWsClosedError, closes the socket, never reconnects", async () => {
    const peer = await startPeer();
    peer.onRequest = () => tick(); // never acks
    const { client, states } = makeClient(peer, { backoffMinMs: 10, backoffMaxMs: 40 });
    client.start();
    await until("open", () => client.state === "open");
    const pending = failureOf(client.send("aibot_send_msg", { chatid: "u1" }), AibotWsClosedError);
    await until("request at the peer", () => peer.framesOf(peer.last, "aibot_send_msg").length === 1);
    await client.stop();
    expect(await pending).toMatchObject({ code: "aibot_ws_closed" });
    expect(client.state).toBe("stopped");
    expect(states.at(-1)?.state).toBe("stopped");
    await until("socket closed at the peer", () => peer.last.closedAt !== undefined);
    expect(peer.last.closeCode).toBe(1000);
    await failureOf(client.send("aibot_send_msg", {}), AibotWsNotOpenError);
    await quiet(200); // five times the longest backoff: no new connection
    expect(peer.conns).toHaveLength(1);
    expect(client.counters.reconnects).toBe(0);
  });

  it("stop during a backoff cancels the reconnect", async () => {
    const peer = await startPeer();
    const { client } = makeClient(peer, { backoffMinMs: 60, backoffMaxMs: 60 });
    client.start();
    await until("open", () => client.state === "open");
    peer.last.ws.terminate();
    await until("backoff", () => client.state === "backoff");
    await client.stop();
    await quiet(150);
    expect(peer.conns).toHaveLength(1);
    expect(client.state).toBe("stopped");
  });

  it("start after stop connects again, on a new generation", async () => {
    const peer = await startPeer();
    const { client } = makeClient(peer);
    client.start();
    await until("open", () => client.state === "open");
    await client.stop();
    client.start();
    await until("open again", () => client.state === "open" && client.generation === 2);
    expect(peer.conns).toHaveLength(2);
    expect(client.counters).toMatchObject({ connects: 2, reconnects: 0 });
  });
});
