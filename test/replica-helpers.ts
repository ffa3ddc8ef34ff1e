/**
 * Helpers of the replica tests: `wecom-bridge serve` children on one store, a round-robin load
 * balancer in front of them (what WeCom and the 全媒体 call), and per-replica upstream ports in
 * front of the simulators (so that the test sees which replica made each call, and which calls a
 * replica had in flight when it was killed).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, request, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { OmniSimulator } from "../src/sim/omni.js";
import { WeComCrypto } from "../src/wecom/crypto.js";
import type { WeComRouting } from "./wecom-router.js";

const BIN = fileURLToPath(new URL("../bin/wecom-bridge", import.meta.url));

/** Read a whole request body. */
function readAll(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

/** Listen on a free loopback port; resolves with the server and its URL. */
async function listen(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ server: Server; url: string; sockets: Set<Socket> }> {
  const server = createServer(handler);
  const sockets = new Set<Socket>();
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, sockets };
}

async function closeServer(s: { server: Server; sockets: Set<Socket> }): Promise<void> {
  const closed = new Promise<void>((resolve) => s.server.close(() => resolve()));
  for (const socket of s.sockets) socket.destroy();
  await closed;
}

// --- the gateway children -------------------------------------------------------------------

/** One `wecom-bridge serve` child. */
export interface Replica {
  index: number;
  port: number;
  child: ChildProcess;
  /** Its stdout and stderr lines (JSON log lines), in order. */
  lines: string[];
  /** Resolves when it exits (with the signal, when killed). */
  exited: Promise<NodeJS.Signals | number | null>;
}

/** The gateway replicas of a test: same store, same configuration but for the listen port and upstream URLs. */
export class Replicas {
  readonly #dir: string;
  readonly #config: (index: number) => Record<string, unknown>;
  /** Every child started, restarts included (index: the replica's slot). */
  readonly started: Replica[] = [];
  /** The current child of each slot. */
  readonly current = new Map<number, Replica>();

  /**
   * @param dir where the config files go
   * @param config the raw configuration of slot `index`
   */
  constructor(dir: string, config: (index: number) => Record<string, unknown>) {
    this.#dir = dir;
    this.#config = config;
  }

  /** Start the replica of slot `index` (a new process on the slot's port); resolves once it serves. */
  start(index: number): Promise<Replica> {
    const raw = this.#config(index);
    const file = join(this.#dir, `replica-${index}.json`);
    writeFileSync(file, JSON.stringify(raw, null, 2));
    const child = spawn(process.execPath, [BIN, "serve", "--config", file], { stdio: ["ignore", "pipe", "pipe"] });
    const lines: string[] = [];
    const exited = new Promise<NodeJS.Signals | number | null>((resolve) => child.once("exit", (code, signal) => resolve(signal ?? code)));
    const port = (raw.listen as { port: number }).port;
    const replica: Replica = { index, port, child, lines, exited };
    this.started.push(replica);
    this.current.set(index, replica);
    createInterface({ input: child.stderr as NodeJS.ReadableStream }).on("line", (l) => lines.push(`stderr: ${l}`));
    return new Promise((resolve, reject) => {
      createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (l) => {
        lines.push(l);
        if (l.includes("wecom-bridge serving")) resolve(replica);
      });
      void exited.then((how) => reject(new Error(`replica ${index} exited (${String(how)}) before serving:\n${lines.join("\n")}`)));
    });
  }

  /** True while the slot's current child runs. */
  alive(index: number): boolean {
    const r = this.current.get(index);
    return r !== undefined && r.child.exitCode === null && r.child.signalCode === null;
  }

  /** SIGKILL the slot's current child; resolves once it is gone. */
  async kill(index: number): Promise<void> {
    const r = this.current.get(index);
    if (r === undefined) return;
    if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill("SIGKILL");
    await r.exited;
  }

  /** SIGKILL every child still running (an afterEach, whatever happened). */
  async killAll(): Promise<void> {
    await Promise.all(
      this.started.map(async (r) => {
        if (r.child.exitCode === null && r.child.signalCode === null) r.child.kill("SIGKILL");
        await r.exited;
      }),
    );
  }

  /** Every child's log, for a failure report. */
  dump(): string {
    return this.started.map((r) => `--- replica ${r.index} (pid ${r.child.pid}) ---\n${r.lines.join("\n")}`).join("\n");
  }
}

// --- the load balancer ----------------------------------------------------------------------

/** What the balancer read in a request (a callback decrypted, or an agent's answer). */
export interface RequestInfo {
  /** `app` / `bot` callbacks, `omni` agents' answers, `other`. */
  kind: "app" | "bot" | "omni" | "other";
  /** Identifies the request and its retries: an app MsgId or `kf:{Token}`, `msg:{msgid}` / `stream:{id}` of a bot, `answer:{Tag.msgid or body}`. */
  key: string;
  /** The decrypted plaintext (callbacks) or the body (answers). */
  text: string;
}

/** One request the balancer handled. */
export interface Balanced {
  info: RequestInfo;
  /** The replica slot it went to. */
  replica: number;
  /** HTTP status the replica answered (0: no answer). */
  status: number;
  /** The replica answered, but the balancer lost the answer on purpose (502 to the caller). */
  lost: boolean;
  at: number;
}

/** Options of {@link Balancer.start}. */
export interface BalancerOptions {
  /** Ports of the replica slots. */
  ports: number[];
  /** Callback crypto by endpoint path (`/wecom/app/support`, `/wecom/bot/helper`). */
  crypto: Map<string, WeComCrypto>;
  /** True to lose the replica's answer of this request (the caller sees a 502 and retries). */
  loseAnswer?: (info: RequestInfo, tries: number) => boolean;
}

/** The crypto of an app or bot callback endpoint. */
export function callbackCrypto(token: string, encodingAESKey: string, receiveId: string): WeComCrypto {
  return new WeComCrypto({ token, encodingAESKey, receiveId });
}

const xmlField = (xml: string, name: string) => new RegExp(`<${name}>(?:<!\\[CDATA\\[)?([^<\\]]*)`).exec(xml)?.[1];

/**
 * A round-robin load balancer in front of the replicas. A request already seen (the same key: a
 * WeCom retry, a repeated callback, a stream refresh, an agent's retry) goes to a replica that has
 * not had it yet when one is up, else to one other than the last: repeats and retries always change
 * replica. A replica that refuses connections is taken out (the request goes to the next), and put
 * back by {@link Balancer.up}; a replica that dies during a request gets its caller a 502.
 */
export class Balancer {
  readonly url: string;
  /** Every request, in order of completion. */
  readonly log: Balanced[] = [];
  readonly #o: BalancerOptions;
  readonly #down = new Set<number>();
  readonly #served = new Map<string, number[]>();
  #next = 0;
  readonly #srv: { server: Server; sockets: Set<Socket> };

  private constructor(o: BalancerOptions, srv: { server: Server; url: string; sockets: Set<Socket> }) {
    this.#o = o;
    this.url = srv.url;
    this.#srv = srv;
  }

  /** Start listening. */
  static async start(o: BalancerOptions): Promise<Balancer> {
    let self: Balancer | undefined;
    const srv = await listen((req, res) => void self?.handle(req, res));
    self = new Balancer(o, srv);
    return self;
  }

  /** Take a slot out (its process is gone). */
  down(slot: number): void {
    this.#down.add(slot);
  }

  /** Put a slot back (a new process serves it). */
  up(slot: number): void {
    this.#down.delete(slot);
  }

  /** The slots that served requests with this key, in order. */
  servedBy(key: string): number[] {
    return this.#served.get(key) ?? [];
  }

  async close(): Promise<void> {
    await closeServer(this.#srv);
  }

  #info(req: IncomingMessage, body: Buffer): RequestInfo {
    const url = new URL(req.url ?? "/", "http://lb");
    const text = body.toString("utf8");
    const crypto = this.#o.crypto.get(url.pathname);
    try {
      if (url.pathname.startsWith("/wecom/app/") && crypto !== undefined) {
        const plain = crypto.decrypt(xmlField(text, "Encrypt") ?? "").message;
        const msgId = xmlField(plain, "MsgId");
        const key = msgId !== undefined ? msgId : `${xmlField(plain, "Event") ?? "?"}:${xmlField(plain, "Token") ?? ""}`;
        return { kind: "app", key, text: plain };
      }
      if (url.pathname.startsWith("/wecom/bot/") && crypto !== undefined) {
        const plain = crypto.decrypt((JSON.parse(text) as { encrypt: string }).encrypt).message;
        const m = JSON.parse(plain) as { msgtype?: string; msgid?: string; stream?: { id?: string } };
        return { kind: "bot", key: m.msgtype === "stream" ? `stream:${m.stream?.id}` : `msg:${m.msgid}`, text: plain };
      }
      if (url.pathname.endsWith("/staffService/message")) {
        const b = JSON.parse(text) as { Tag?: { msgid?: string } };
        return { kind: "omni", key: `answer:${typeof b.Tag?.msgid === "string" ? b.Tag.msgid : text}`, text };
      }
    } catch {
      // not what it should be: the replica will say so
    }
    return { kind: "other", key: `${req.method} ${url.pathname}`, text };
  }

  #pick(key: string, exclude: Set<number>): number | undefined {
    const live = this.#o.ports.map((_, i) => i).filter((i) => !this.#down.has(i) && !exclude.has(i));
    if (live.length === 0) return undefined;
    const served = this.servedBy(key);
    let candidates = live.filter((i) => !served.includes(i));
    if (candidates.length === 0) candidates = live.filter((i) => i !== served.at(-1));
    if (candidates.length === 0) candidates = live;
    return candidates[this.#next++ % candidates.length];
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readAll(req);
    const info = this.#info(req, body);
    const tries = this.servedBy(info.key).length;
    const lose = this.#o.loseAnswer?.(info, tries) ?? false;
    const refused = new Set<number>();
    for (;;) {
      const slot = this.#pick(info.key, refused);
      if (slot === undefined) {
        res.writeHead(503).end();
        return;
      }
      const port = this.#o.ports[slot] as number;
      const outcome = await new Promise<{ status: number; headers?: IncomingMessage["headers"]; body?: Buffer; refused?: boolean }>((resolve) => {
        const out = request({ host: "127.0.0.1", port, method: req.method, path: req.url, headers: { ...req.headers, host: `127.0.0.1:${port}` } }, (answer) => {
          void readAll(answer).then(
            (b) => resolve({ status: answer.statusCode ?? 0, headers: answer.headers, body: b }),
            () => resolve({ status: 0 }),
          );
        });
        out.on("error", (e: NodeJS.ErrnoException) => resolve({ status: 0, refused: e.code === "ECONNREFUSED" }));
        // the caller gave up (WeCom's callback timeout): so does the balancer
        res.once("close", () => {
          if (!res.writableFinished) out.destroy();
        });
        out.end(body);
      });
      if (outcome.refused === true) {
        // nothing reached it: take it out and try the next one
        this.#down.add(slot);
        refused.add(slot);
        continue;
      }
      const served = this.#served.get(info.key) ?? [];
      served.push(slot);
      this.#served.set(info.key, served);
      const lost = lose && outcome.status === 200;
      this.log.push({ info, replica: slot, status: outcome.status, lost, at: Date.now() });
      if (res.destroyed) return;
      if (outcome.status === 0 || lost) res.writeHead(502).end();
      else res.writeHead(outcome.status, outcome.headers).end(outcome.body);
      return;
    }
  }
}

// --- the upstreams (what the replicas call) -------------------------------------------------

/** One call a replica made to WeCom or the 全媒体. */
export interface UpstreamCall {
  replica: number;
  /** The WeCom API (`kf/sync_msg`, `message/send`, …) or `omni`. */
  api: string;
  started: number;
  /** When the answer went back (undefined while in flight). */
  ended?: number;
  status?: number;
  /** The errcode answered, for JSON answers. */
  errcode?: number;
  /** The request body (JSON calls), for evidence. */
  body: string;
}

/**
 * One port per replica in front of the simulators: WeCom calls (`/cgi-bin/…`) go through the
 * WeCom routing, 全媒体 calls (`/api/{version}/{appId}/…`) to the 全媒体 simulator of that appId.
 * A call is carried to its end even when the replica dies meanwhile (WeCom and the 全媒体 act on a
 * request they received whole, whether or not anyone reads the answer).
 */
export class Upstreams {
  /** The base URL of each replica slot. */
  readonly urls: string[];
  readonly calls: UpstreamCall[] = [];
  readonly #servers: { server: Server; sockets: Set<Socket> }[];

  private constructor(servers: { server: Server; url: string; sockets: Set<Socket> }[]) {
    this.#servers = servers;
    this.urls = servers.map((s) => s.url);
  }

  /** Start `n` ports. */
  static async start(n: number, wecom: WeComRouting, omnis: OmniSimulator[]): Promise<Upstreams> {
    let self: Upstreams | undefined;
    const servers = [];
    for (let i = 0; i < n; i++) {
      const replica = i;
      servers.push(await listen((req, res) => void self?.handle(replica, req, res, wecom, omnis)));
    }
    self = new Upstreams(servers);
    return self;
  }

  /** The calls of a replica still waiting for their answer. */
  inFlight(replica?: number): UpstreamCall[] {
    return this.calls.filter((c) => c.ended === undefined && (replica === undefined || c.replica === replica));
  }

  async close(): Promise<void> {
    await Promise.all(this.#servers.map(closeServer));
  }

  async handle(replica: number, req: IncomingMessage, res: ServerResponse, wecom: WeComRouting, omnis: OmniSimulator[]): Promise<void> {
    const body = await readAll(req);
    const url = new URL(req.url ?? "/", "http://upstream");
    const omniPath = /^\/api\/[^/]+\/([^/]+)\//.exec(url.pathname);
    const call: UpstreamCall = { replica, api: omniPath ? "omni" : url.pathname.replace(/^\/cgi-bin\//, ""), started: Date.now(), body: body.toString("utf8") };
    this.calls.push(call);
    const finish = (status: number, answer?: Buffer) => {
      call.ended = Date.now();
      call.status = status;
      try {
        const e = (JSON.parse(answer?.toString("utf8") ?? "") as { errcode?: unknown }).errcode;
        if (typeof e === "number") call.errcode = e;
      } catch {
        // not JSON
      }
    };
    if (!omniPath) {
      // the answer is copied back by the routing; it is parsed again here for the errcode
      const write = res.end.bind(res);
      res.end = ((chunk?: unknown, ...rest: unknown[]) => {
        if (Buffer.isBuffer(chunk)) finish(res.statusCode, chunk);
        else finish(res.statusCode);
        return (write as (...a: unknown[]) => ServerResponse)(chunk, ...rest);
      }) as ServerResponse["end"];
      wecom.forward(req, body, res);
      return;
    }
    const omni = omnis.find((o) => o.appId === decodeURIComponent(omniPath[1] as string));
    if (omni === undefined) {
      finish(404);
      res.writeHead(404).end();
      return;
    }
    const target = new URL(`${omni.url}${url.pathname}${url.search}`);
    const out = request(target, { method: req.method, headers: { ...req.headers, host: target.host } }, (answer) => {
      void readAll(answer).then((b) => {
        finish(answer.statusCode ?? 0, b);
        if (!res.destroyed) res.writeHead(answer.statusCode ?? 502, answer.headers).end(b);
      });
    });
    out.on("error", () => {
      finish(502);
      if (!res.destroyed) res.writeHead(502).end();
    });
    out.end(body);
  }
}
