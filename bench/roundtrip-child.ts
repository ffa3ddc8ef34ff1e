/**
 * A server process for `bench:roundtrip`: either the gateway on a fresh SQLite file
 * (`gateway CONFIG_JSON`), or the relay ceiling (`relay RELAY_JSON`): a bare node:http server that
 * forwards each request at once over keep-alive node:http agents, with no decryption and no store:
 * - `POST /wecom/app/{name}` (a WeCom callback) → the 全媒体 simulator's staffService/message, the
 *   raw callback body as the Content of a signed message (FromUserId `relay:{nonce}`, so that the
 *   load generator can tell which callback arrived), answered once the 全媒体 answered;
 * - `POST {pathPrefix}/staffService/message` (an agent's answer) → the WeCom simulator's
 *   `kf/send_msg` to the customer of `ToUserId` (`kf:{corpId}:{openKfId}:{externalUserId}`),
 *   answered with WeCom's answer.
 * Prints `READY <url>` when listening; on stdin `rss` prints `RSS <peak bytes>`, `cpu` prints
 * `CPU <user µs> <system µs> <event-loop delay p99 and max ms since the last cpu>`, `stop` stops and
 * exits (so that `--cpu-prof` writes its profile).
 */
import { readFileSync } from "node:fs";
import { Agent, createServer, type IncomingMessage, request } from "node:http";
import type { AddressInfo } from "node:net";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { createInterface } from "node:readline";
import { omniSignature } from "../src/omni/index.js";

/** What the relay forwards to. */
export interface RelayOptions {
  /** The 全媒体 simulator's message URL, e.g. `http://127.0.0.1:PORT/api/v1/1001/staffService/message`. */
  omniMessageUrl: string;
  /** appId and secret the relay signs with (APP → 全媒体). */
  omniAppId: string;
  omniSecret: string;
  /** The WeCom simulator's base URL. */
  wecomUrl: string;
  corpId: string;
  /** The KF app's secret (for gettoken). */
  kfSecret: string;
  /** Path of the staffService endpoint, e.g. `/qmtapi/staffService/message`. */
  staffPath: string;
  /** Sockets per upstream (as the gateway's HttpClient: 64). */
  maxSockets: number;
}

function peakRss(): number {
  const status = readFileSync("/proc/self/status", "utf8");
  const kb = /VmHWM:\s+(\d+) kB/.exec(status)?.[1];
  return kb ? Number(kb) * 1024 : process.memoryUsage().rss;
}

function readAll(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

/** POST `body` over `agent`; resolves with the status and the answer. */
function post(agent: Agent, url: string, body: string, contentType: string): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const payload = Buffer.from(body, "utf8");
    const req = request(url, { method: "POST", agent, headers: { "content-type": contentType, "content-length": payload.length } }, (res) => {
      readAll(res).then((b) => resolve({ status: res.statusCode ?? 0, body: b }), reject);
    });
    req.on("error", reject);
    req.end(payload);
  });
}

async function relay(o: RelayOptions): Promise<{ url: string; stop(): Promise<void> }> {
  const agentOptions = { keepAlive: true, maxSockets: o.maxSockets, maxFreeSockets: o.maxSockets, scheduling: "lifo" as const };
  const omniAgent = new Agent(agentOptions);
  const wecomAgent = new Agent(agentOptions);
  const tokenAnswer = await new Promise<string>((resolve, reject) => {
    request(`${o.wecomUrl}/cgi-bin/gettoken?corpid=${encodeURIComponent(o.corpId)}&corpsecret=${encodeURIComponent(o.kfSecret)}`, { agent: wecomAgent }, (res) =>
      readAll(res).then((b) => resolve(b.toString("utf8")), reject),
    )
      .on("error", reject)
      .end();
  });
  const token = String((JSON.parse(tokenAnswer) as { access_token?: unknown }).access_token ?? "");
  if (token === "") throw new Error("relay: gettoken answered no token");
  const sendUrl = `${o.wecomUrl}/cgi-bin/kf/send_msg?access_token=${encodeURIComponent(token)}`;
  // as the gateway's 全媒体 client: the signature covers only the timestamp, so timestamps strictly increase
  let lastTs = 0;
  const server = createServer((req, res) => {
    const raw = req.url ?? "/";
    const q = raw.indexOf("?");
    const path = q < 0 ? raw : raw.slice(0, q);
    const fail = (e: unknown) => {
      if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
      res.end(String((e as Error)?.message ?? e));
    };
    readAll(req)
      .then(async (body) => {
        if (path.startsWith("/wecom/app/")) {
          const nonce = new URLSearchParams(q < 0 ? "" : raw.slice(q + 1)).get("nonce") ?? "";
          lastTs = Math.max(Date.now(), lastTs + 1);
          const ts = String(lastTs);
          const url = `${o.omniMessageUrl}?timestamp=${ts}&signature=${omniSignature(o.omniAppId, o.omniSecret, ts)}`;
          const msg = JSON.stringify({ FromUserId: `relay:${nonce}`, MsgType: "text", Content: body.toString("utf8") });
          const a = await post(omniAgent, url, msg, "application/json");
          res.writeHead(a.status === 200 ? 200 : 502, { "content-type": "text/plain" });
          res.end("");
        } else if (path === o.staffPath) {
          const m = JSON.parse(body.toString("utf8")) as { ToUserId: string; Content: string };
          const [, , openKfId, touser] = m.ToUserId.split(":");
          const send = JSON.stringify({ touser, open_kfid: openKfId, msgtype: "text", text: { content: m.Content } });
          const a = await post(wecomAgent, sendUrl, send, "application/json");
          res.writeHead(200, { "content-type": "application/json" });
          res.end(a.body);
        } else {
          res.writeHead(404, { "content-type": "text/plain" });
          res.end("");
        }
      })
      .catch(fail);
  });
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        omniAgent.destroy();
        wecomAgent.destroy();
      }),
  };
}

const mode = process.argv[2];
const arg = JSON.parse(process.argv[3] ?? "{}") as unknown;
let running: { url: string; stop(): Promise<void> };
if (mode === "relay") {
  running = await relay(arg as RelayOptions);
} else if (mode === "gateway") {
  // loaded here only: the relay needs none of the gateway
  const [{ parseConfig }, { runGateway }, { createLogger }] = await Promise.all([import("../src/config.js"), import("../src/gateway/index.js"), import("../src/log.js")]);
  // warnings and errors go to stderr (inherited): stdout is the protocol with the parent
  const log = createLogger({ level: "warn", write: (line) => process.stderr.write(line) });
  running = await runGateway(parseConfig(arg), { log });
} else {
  throw new Error(`unknown mode ${String(mode)}: gateway CONFIG_JSON | relay RELAY_JSON`);
}
let stopping = false;
const stop = () => {
  if (stopping) return;
  stopping = true;
  void running.stop().then(() => process.exit(0));
};
const loopDelay = monitorEventLoopDelay({ resolution: 10 });
loopDelay.enable();
createInterface({ input: process.stdin }).on("line", (line) => {
  const cmd = line.trim();
  if (cmd === "rss") process.stdout.write(`RSS ${peakRss()}\n`);
  else if (cmd === "cpu") {
    const c = process.cpuUsage();
    process.stdout.write(`CPU ${c.user} ${c.system} ${(loopDelay.percentile(99) / 1e6).toFixed(1)} ${(loopDelay.max / 1e6).toFixed(1)}\n`);
    loopDelay.reset();
  } else if (cmd === "stop") stop();
});
process.on("SIGTERM", stop);
process.stdout.write(`READY ${running.url}\n`);
