/**
 * `npm run bench:gateway`: the gateway on SQLite under a load generator (autocannon) on loopback
 * sending signed, encrypted app text callbacks, each a distinct message that is stored and
 * enqueued before the 200; side by side in one run with a bare node:http server that answers 200
 * at once (the ceiling). Each server runs in its own process; the load generator in this one.
 * Last line: `{"bench":"gateway","ours_rps":N,"ceiling_rps":N,"p99_ms":N}`.
 *
 * `npm run bench:gateway -- --store postgres`: stored callbacks per second on SQLite, on
 * PostgreSQL with one replica, and with two replicas on one database (the load split between
 * them, as a load balancer would), in the same run, each on a fresh store (`BENCH_PG`: the server,
 * default the test server `postgres://postgres@127.0.0.1:5432/test`; a fresh schema per phase,
 * dropped afterwards). Last line: `{"bench":"gateway-pg","sqlite_rps":N,"pg_rps_1":N,"pg_rps_2":N}`.
 * `BENCH_PROFILE=dir`: each server process writes a CPU profile there.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import autocannon from "autocannon";
import pg from "pg";
import { WeComCrypto } from "../src/wecom/crypto.js";
import { median } from "./harness.js";

const DURATION = Number(process.env.BENCH_SECONDS ?? 10);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 64);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CORP = "ww1436e0e65a779aee";
const AES = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
const TOKEN = "benchtoken";

interface Child {
  proc: ChildProcess;
  url: string;
  rss(): Promise<number>;
  stop(): Promise<void>;
}

async function startChild(args: string[]): Promise<Child> {
  const profile = process.env.BENCH_PROFILE ? ["--cpu-prof", "--cpu-prof-dir", process.env.BENCH_PROFILE] : [];
  const proc = spawn(process.execPath, [...profile, "--import", "tsx", new URL("./gateway-child.ts", import.meta.url).pathname, ...args], { stdio: ["pipe", "pipe", "inherit"] });
  const lines = createInterface({ input: proc.stdout as NodeJS.ReadableStream });
  const waiters: ((line: string) => void)[] = [];
  lines.on("line", (l) => waiters.shift()?.(l));
  const next = () => new Promise<string>((resolve) => waiters.push(resolve));
  const ready = await next();
  if (!ready.startsWith("READY ")) throw new Error(`child did not start: ${ready}`);
  return {
    proc,
    url: ready.slice(6),
    async rss() {
      proc.stdin?.write("rss\n");
      return Number((await next()).slice(4));
    },
    stop: () =>
      new Promise((resolve) => {
        proc.once("exit", () => resolve());
        proc.kill("SIGTERM");
      }),
  };
}

const crypto = new WeComCrypto({ token: TOKEN, encodingAESKey: AES, receiveId: CORP });
let counter = 0n;
const base = 7_300_000_000_000_000_000n;

/** A fresh signed, encrypted app text callback (a distinct MsgId each time). */
function nextCallback(): { path: string; body: string } {
  counter++;
  const user = `user${Number(counter % 50n)}`;
  const plain = `<xml><ToUserName><![CDATA[${CORP}]]></ToUserName><FromUserName><![CDATA[${user}]]></FromUserName><CreateTime>${Math.floor(Date.now() / 1000)}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好，我想咨询一下订单 ${counter} 的物流]]></Content><MsgId>${base + counter}</MsgId><AgentID>1000002</AgentID></xml>`;
  const timestamp = String(Math.floor(Date.now() / 1000));
  const nonce = String(counter);
  const reply = crypto.encryptReply(plain, timestamp, nonce);
  const body = `<xml><ToUserName><![CDATA[${CORP}]]></ToUserName><Encrypt><![CDATA[${reply.encrypt}]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>`;
  return { path: `/wecom/app/bench?msg_signature=${reply.msgsignature}&timestamp=${timestamp}&nonce=${nonce}`, body };
}

interface LoadResult {
  rps: number;
  p50: number;
  p99: number;
  non2xx: number;
  errors: number;
}

/** Callbacks are made before the load starts, so that encrypting them costs the generator nothing. */
const POOL_SIZE = Number(process.env.BENCH_POOL ?? 25_000) * DURATION;
let pool: { path: string; body: string }[] = [];
let poolIndex = 0;
function refillPool(): void {
  pool = Array.from({ length: POOL_SIZE }, nextCallback);
  poolIndex = 0;
}

async function load(url: string, signed: boolean, connections = CONNECTIONS, refill = true): Promise<LoadResult> {
  if (refill) refillPool();
  const r = await autocannon({
    url,
    connections,
    duration: DURATION,
    method: "POST",
    requests: [
      {
        setupRequest: (req) => {
          // past the pool's end a callback repeats: the gateway then answers a duplicate (still 200)
          const cb = pool[poolIndex++ % pool.length] as { path: string; body: string };
          return { ...req, path: signed ? cb.path : "/", body: cb.body, headers: { "content-type": "text/xml" } };
        },
      },
    ],
  });
  return { rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, non2xx: r.non2xx, errors: r.errors };
}

const dir = mkdtempSync(join(tmpdir(), "wb-bench-"));
/** The gateway's config on a store. */
const configOn = (store: string) => ({
  listen: { host: "127.0.0.1", port: 0 },
  publicUrl: "http://127.0.0.1:1",
  store,
  adminToken: "bench-admin-token-0123",
  mediaDir: join(dir, "media"),
  wecom: { apiBase: "http://127.0.0.1:1", corpId: CORP, apps: [{ name: "bench", agentId: 1000002, secret: "s", token: TOKEN, encodingAESKey: AES }] },
  // the 全媒体 is not part of this measurement: deliveries fail fast and back off
  omni: { baseUrl: "http://127.0.0.1:1", appId: "1001", secret: "omni" },
  delivery: { maxAttempts: 100, baseDelayMs: 60_000, maxDelayMs: 600_000, concurrency: 4, timeoutMs: 1000 },
});
const m = (xs: LoadResult[], k: keyof LoadResult) => median(xs.map((x) => x[k]));
const failures = (xs: LoadResult[]) => xs.reduce((n, r) => n + r.non2xx + r.errors, 0);

const storeArg = process.argv.indexOf("--store");
const engine = storeArg >= 0 ? process.argv[storeArg + 1] : "sqlite";
if (engine !== "sqlite" && engine !== "postgres") throw new Error(`--store takes sqlite or postgres, not ${engine}`);

if (engine === "sqlite") {
  const ours: LoadResult[] = [];
  const ceiling: LoadResult[] = [];
  let rss = 0;
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const c = await startChild(["ceiling"]);
      ceiling.push(await load(c.url, false));
      await c.stop();
      const g = await startChild(["gateway", JSON.stringify(configOn(`sqlite:${join(dir, `bridge-${round}.db`)}`))]);
      ours.push(await load(g.url, true));
      rss = Math.max(rss, await g.rss());
      await g.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const oursRps = Math.round(m(ours, "rps"));
  const ceilingRps = Math.round(m(ceiling, "rps"));
  const p99 = m(ours, "p99");
  console.log(`gateway: ${ROUNDS} rounds x ${DURATION} s, ${CONNECTIONS} connections, medians (node ${process.version})`);
  console.log("| server | req/s | p50 ms | p99 ms | non-2xx |");
  console.log("|---|---:|---:|---:|---:|");
  console.log(`| wecom-bridge (SQLite, stored + enqueued before 200) | ${oursRps} | ${m(ours, "p50")} | ${p99} | ${failures(ours)} |`);
  console.log(`| ceiling (bare node:http, 200 at once) | ${ceilingRps} | ${m(ceiling, "p50")} | ${m(ceiling, "p99")} | ${failures(ceiling)} |`);
  console.log(`ours / ceiling = ${(oursRps / ceilingRps).toFixed(2)} (target >= 0.35); peak RSS ${(rss / 1048576).toFixed(0)} MB (target < 250)`);
  console.log(JSON.stringify({ bench: "gateway", ours_rps: oursRps, ceiling_rps: ceilingRps, p99_ms: p99, rss_mb: Math.round(rss / 1048576) }));
} else {
  const server = process.env.BENCH_PG ?? "postgres://postgres@127.0.0.1:5432/test";
  const admin = async (sql: string) => {
    const c = new pg.Client({ connectionString: server });
    await c.connect();
    try {
      await c.query(sql);
    } finally {
      await c.end();
    }
  };
  /** `replicas` gateways on one fresh schema, the load split between them; the sum of their rates. */
  const pgPhase = async (round: number, replicas: number): Promise<LoadResult> => {
    const schema = `wb_bench_${process.pid}_${round}_${replicas}`;
    await admin(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    const store = `${server}${server.includes("?") ? "&" : "?"}schema=${schema}`;
    try {
      const children: Child[] = [];
      // the first migrates; the others find the schema ready
      for (let i = 0; i < replicas; i++) children.push(await startChild(["gateway", JSON.stringify(configOn(store))]));
      refillPool();
      const per = Math.max(1, Math.floor(CONNECTIONS / replicas));
      const rs = await Promise.all(children.map((c) => load(c.url, true, per, false)));
      for (const c of children) await c.stop();
      return { rps: rs.reduce((n, r) => n + r.rps, 0), p50: Math.max(...rs.map((r) => r.p50)), p99: Math.max(...rs.map((r) => r.p99)), non2xx: rs.reduce((n, r) => n + r.non2xx, 0), errors: rs.reduce((n, r) => n + r.errors, 0) };
    } finally {
      await admin(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    }
  };
  const sqlite: LoadResult[] = [];
  const pg1: LoadResult[] = [];
  const pg2: LoadResult[] = [];
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const g = await startChild(["gateway", JSON.stringify(configOn(`sqlite:${join(dir, `bridge-${round}.db`)}`))]);
      sqlite.push(await load(g.url, true));
      await g.stop();
      pg1.push(await pgPhase(round, 1));
      pg2.push(await pgPhase(round, 2));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const rate = (xs: LoadResult[]) => Math.round(m(xs, "rps"));
  console.log(`gateway on PostgreSQL: ${ROUNDS} rounds x ${DURATION} s, ${CONNECTIONS} connections in all, medians (node ${process.version})`);
  console.log("| store | stored callbacks/s | p50 ms | p99 ms | non-2xx |");
  console.log("|---|---:|---:|---:|---:|");
  console.log(`| SQLite | ${rate(sqlite)} | ${m(sqlite, "p50")} | ${m(sqlite, "p99")} | ${failures(sqlite)} |`);
  console.log(`| PostgreSQL, 1 replica | ${rate(pg1)} | ${m(pg1, "p50")} | ${m(pg1, "p99")} | ${failures(pg1)} |`);
  console.log(`| PostgreSQL, 2 replicas | ${rate(pg2)} | ${m(pg2, "p50")} | ${m(pg2, "p99")} | ${failures(pg2)} |`);
  console.log(`pg_1 / sqlite = ${(rate(pg1) / rate(sqlite)).toFixed(2)} (target >= 0.3); pg_2 / pg_1 = ${(rate(pg2) / rate(pg1)).toFixed(2)} (target >= 0.9)`);
  console.log(JSON.stringify({ bench: "gateway-pg", sqlite_rps: rate(sqlite), pg_rps_1: rate(pg1), pg_rps_2: rate(pg2) }));
}
