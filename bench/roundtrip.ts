/**
 * `npm run bench:roundtrip` (issue 7, point 10): both directions at once through the gateway on
 * SQLite, against the simulators, side by side in the same run with a relay ceiling.
 *
 * - Inbound: WeCom app text callbacks (signed, encrypted, made before the load, one message each)
 *   sent over keep-alive connections; measured from the callback's request to the 全媒体
 *   simulator's receipt of the message. KF customers write at the same time through the WeCom
 *   simulator (the item in sync_msg, then a kf_msg_or_event callback on a new connection, as
 *   WeCom's are; the gateway pulls the pages), measured from the customer's message to the
 *   全媒体's receipt: a second inbound figure. A customer does not wait for the callback (the
 *   gateway may pull the message on an earlier one); the callbacks' own time is shown too.
 * - Outbound: agents answer KF customers who wrote (signed staffService requests over keep-alive
 *   connections, `ToUserId` a KF conversation address); measured from the 全媒体's request to the
 *   WeCom simulator's acceptance of `kf/send_msg`. WeCom's rules stay on: each answer spends one of
 *   the 5 messages a customer's message allows, so answers are spread over many customers and a
 *   customer whose budget is spent (and whose answers all arrived) writes again.
 * - Ceiling: a bare node:http relay forwarding each request at once to the same simulators over
 *   keep-alive node:http agents (no decryption, no store), loaded the same way.
 *
 * Each direction is a closed loop with a fixed number of messages in flight end to end: a slot
 * sends its next message when the previous one arrived. The simulators and the load run in this
 * process, the gateway (or the relay) in a child process (`roundtrip-child.ts`). Each phase has
 * fresh simulators, a fresh store and a warm-up; the figures are medians over the rounds.
 *
 * Tuning (environment): BENCH_SECONDS (measured seconds per phase, 10), BENCH_WARMUP (seconds, 3),
 * BENCH_ROUNDS (3), BENCH_CONNECTIONS (app callbacks in flight, 64), BENCH_AGENTS (answers in
 * flight, 64), BENCH_KF_INFLIGHT (KF customers writing at once, 16), BENCH_KF_CUSTOMERS (customers
 * who wrote before the load, 6000), BENCH_CONCURRENCY (the gateway's delivery.concurrency, 64),
 * BENCH_POOL (callbacks made per second of load, 10000), BENCH_GRACE_MS (how long an agent waits
 * after a customer's message reached the 全媒体 before answering, 20), BENCH_PROFILE (a folder:
 * the gateway child runs with --cpu-prof and writes its profiles there), BENCH_PHASES
 * (`relay,gateway`; one of them alone for diagnostics).
 *
 * Last line: `{"bench":"roundtrip","inbound_mps":N,"outbound_mps":N,"p99_in_ms":N,"p99_out_ms":N,"relay_in_mps":N,"relay_out_mps":N}`.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { Agent, request } from "node:http";
import { cpus, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import { omniSignature } from "../src/omni/index.js";
import { OmniSimulator } from "../src/sim/omni.js";
import { WeComSimulator } from "../src/sim/wecom.js";
import { WeComCrypto } from "../src/wecom/crypto.js";
import { median } from "./harness.js";
import type { RelayOptions } from "./roundtrip-child.js";

const env = (name: string, dflt: number) => Number(process.env[name] ?? dflt);
const SECONDS = env("BENCH_SECONDS", 10);
const WARMUP = env("BENCH_WARMUP", 3);
const ROUNDS = env("BENCH_ROUNDS", 3);
const CONNECTIONS = env("BENCH_CONNECTIONS", 64);
const AGENTS = env("BENCH_AGENTS", 64);
const KF_INFLIGHT = env("BENCH_KF_INFLIGHT", 16);
const KF_CUSTOMERS = env("BENCH_KF_CUSTOMERS", 6000);
const CONCURRENCY = env("BENCH_CONCURRENCY", 64);
const POOL_PER_SEC = env("BENCH_POOL", 10_000);
const GRACE_MS = env("BENCH_GRACE_MS", 20);
const PROFILE = process.env.BENCH_PROFILE;
/** Which phases run (diagnostics): `relay,gateway` by default. */
const PHASES = (process.env.BENCH_PHASES ?? "relay,gateway").split(",");
/** A message not arrived after this long is counted lost (and its slot freed). */
const LOST_AFTER_MS = 10_000;

const CORP = "ww1436e0e65a779aee";
const AGENT_ID = 1000002;
const KFID = "wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q";
const APP_AES = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
const APP_TOKEN = "apptoken";
const APP_SECRET = "app-secret";
const OMNI_APP = "1001";
const OMNI_SECRET = "omni-secret";
const PREFIX = "/qmtapi";
const STAFF_PATH = `${PREFIX}/staffService/message`;
const KF_BUDGET = 5;

// --- the child process ---------------------------------------------------------------------------

interface Child {
  url: string;
  port: number;
  /** Send a stdin command and wait for the answer line starting with `prefix`. */
  ask(cmd: string, prefix: string): Promise<string>;
  /** Stop it (through stdin, so that a --cpu-prof profile is written) and wait for its exit. */
  stop(): Promise<void>;
}

let profileCount = 0;

async function startChild(mode: "gateway" | "relay", arg: unknown): Promise<Child> {
  const execArgs = ["--import", "tsx"];
  if (PROFILE !== undefined && mode === "gateway") {
    // one folder per gateway run: the main thread's profile is the largest file in it (tsx's loader thread writes one too)
    const folder = resolve(PROFILE, `gateway-${++profileCount}`);
    mkdirSync(folder, { recursive: true });
    execArgs.push("--cpu-prof", `--cpu-prof-dir=${folder}`);
  }
  const script = new URL("./roundtrip-child.ts", import.meta.url).pathname;
  const proc: ChildProcess = spawn(process.execPath, [...execArgs, script, mode, JSON.stringify(arg)], { stdio: ["pipe", "pipe", "inherit"] });
  const lines = createInterface({ input: proc.stdout as NodeJS.ReadableStream });
  const waiters: { prefix: string; resolve: (l: string) => void }[] = [];
  lines.on("line", (l) => {
    const i = waiters.findIndex((w) => l.startsWith(w.prefix));
    if (i >= 0) waiters.splice(i, 1)[0]?.resolve(l);
  });
  const next = (prefix: string) => new Promise<string>((res) => waiters.push({ prefix, resolve: res }));
  const exited = new Promise<void>((res) => proc.once("exit", () => res()));
  const ready = await Promise.race([next("READY "), exited.then(() => "")]);
  if (!ready.startsWith("READY ")) throw new Error(`${mode} child did not start`);
  const url = ready.slice(6);
  return {
    url,
    port: Number(new URL(url).port),
    ask(cmd, prefix) {
      const p = next(prefix);
      proc.stdin?.write(`${cmd}\n`);
      return p;
    },
    async stop() {
      proc.stdin?.write("stop\n");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

// --- HTTP ---------------------------------------------------------------------------------------

function post(agent: Agent, port: number, path: string, body: string, contentType: string): Promise<{ status: number; body: string }> {
  return new Promise((resolvePost, reject) => {
    const payload = Buffer.from(body, "utf8");
    const req = request({ host: "127.0.0.1", port, path, method: "POST", agent, headers: { "content-type": contentType, "content-length": payload.length } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolvePost({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(payload);
  });
}

/** Replace an array's push (the simulators' records) by `fn`: nothing is kept, so memory stays flat. */
function tap<T>(array: T[], fn: (item: T) => void): void {
  array.push = (...items: T[]) => {
    for (const item of items) fn(item);
    return array.length;
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = Float64Array.from(xs).sort();
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] as number;
}

const round1 = (x: number) => Math.round(x * 10) / 10;

/** The machine's busy and total CPU time so far (jiffies, all cores), from /proc/stat. */
function machineCpu(): { busy: number; total: number } {
  const fields = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "").trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0);
  return { busy: total - idle, total };
}

// --- one phase ---------------------------------------------------------------------------------

/** What one phase measured. */
interface PhaseResult {
  in: { mps: number; p50: number; p99: number };
  out: { mps: number; p50: number; p99: number };
  kf: { mps: number; p50: number; p99: number };
  /** The kf_msg_or_event callbacks' own time (new connections, as WeCom's), p50 and p99 ms. */
  kfCallback: { p50: number; p99: number };
  /** % of the agents' time in the measured window spent waiting for a customer with budget left (outbound starved by KF). */
  agentsIdle: number;
  /** Errors and losses, by kind. */
  problems: Record<string, number>;
  /** CPU of the child and of this process during the measured window, % of one core. */
  childCpu: number;
  parentCpu: number;
  rssMb: number;
  /** p99 of the child's event-loop delay during the measured window, ms. */
  childLoopP99: number;
  /** The child's longest event-loop delay during the measured window, ms. */
  childLoopMax: number;
  /** p99 of this process's event-loop delay during the measured window, ms. */
  loopP99: number;
  /** The whole machine's CPU during the measured window, % of one core (200 = both cores of this machine busy). */
  machineCpu: number;
}

interface Customer {
  id: string;
  address: string;
  budget: number;
  inflight: number;
}

const crypto = new WeComCrypto({ token: APP_TOKEN, encodingAESKey: APP_AES, receiveId: CORP });
const MSGID_BASE = 7_300_000_000_000_000_000n;
let appSeq = 0;
let phaseNo = 0;

/** A signed, encrypted app text callback; its nonce and Content carry `a{seq}`. */
function appCallback(seq: number): { path: string; body: string } {
  const key = `a${seq}`;
  const user = `user${seq % 1000}`;
  const now = Math.floor(Date.now() / 1000);
  const plain = `<xml><ToUserName><![CDATA[${CORP}]]></ToUserName><FromUserName><![CDATA[${user}]]></FromUserName><CreateTime>${now}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好，我想咨询一下订单的物流 #${key}]]></Content><MsgId>${MSGID_BASE + BigInt(seq)}</MsgId><AgentID>${AGENT_ID}</AgentID></xml>`;
  const reply = crypto.encryptReply(plain, String(now), key);
  const body = `<xml><ToUserName><![CDATA[${CORP}]]></ToUserName><Encrypt><![CDATA[${reply.encrypt}]]></Encrypt><AgentID><![CDATA[${AGENT_ID}]]></AgentID></xml>`;
  return { path: `/wecom/app/support?msg_signature=${reply.msgsignature}&timestamp=${now}&nonce=${key}`, body };
}

async function runPhase(mode: "gateway" | "relay"): Promise<PhaseResult> {
  phaseNo++;
  const omni = await OmniSimulator.start({ appId: OMNI_APP, secret: OMNI_SECRET });
  const wecom = await WeComSimulator.start({
    corpId: CORP,
    apps: [{ name: "support", agentId: AGENT_ID, secret: APP_SECRET, token: APP_TOKEN, encodingAESKey: APP_AES, kf: true }],
  });
  wecom.addKfAccount(KFID, "售后客服");
  const dir = mkdtempSync(join(tmpdir(), "wb-roundtrip-"));
  const problems: Record<string, number> = {};
  const problem = (k: string, n = 1) => {
    problems[k] = (problems[k] ?? 0) + n;
  };

  // --- arrivals ---
  type Kind = "in" | "out" | "kf";
  const pending = new Map<string, { t0: number; kind: Kind; done: (arrived: boolean) => void }>();
  const lat: Record<Kind, number[]> = { in: [], out: [], kf: [] };
  let mStart = Number.POSITIVE_INFINITY;
  let mEnd = Number.POSITIVE_INFINITY;
  let prewarmed = 0;
  /** How long the kf_msg_or_event callbacks took. */
  const kfCallbackMs: number[] = [];
  /** The callbacks still under way (gateway phase). */
  const callbacksUnderWay = new Set<{ t0: number }>();
  const expect = (key: string, kind: Kind, t0: number) =>
    new Promise<boolean>((done) => {
      pending.set(key, { t0, kind, done });
    });
  const arrive = (key: string, t: number) => {
    const p = pending.get(key);
    if (p === undefined) return;
    pending.delete(key);
    if (t >= mStart && t < mEnd) lat[p.kind].push(t - p.t0);
    p.done(true);
  };
  const cancel = (key: string) => {
    const p = pending.get(key);
    if (p === undefined) return;
    pending.delete(key);
    p.done(false);
  };
  const sweep = setInterval(() => {
    const old = performance.now() - LOST_AFTER_MS;
    for (const [key, p] of pending) {
      if (p.t0 > old) break; // insertion order is t0 order
      problem(`lost_${p.kind}`);
      cancel(key);
    }
  }, 500);

  const KEY = /#([akop]\d+)/;
  tap(omni.received, (r) => {
    const t = performance.now();
    const from = r.body.FromUserId;
    if (from.startsWith("relay:")) return arrive(from.slice(6), t);
    if (r.body.MsgType === "event") {
      problem(`omni_notice_${r.body.Content}`);
      const ref = KEY.exec(JSON.stringify(r.body.Tag ?? ""))?.[1];
      if (ref !== undefined) cancel(ref);
      return;
    }
    const key = KEY.exec(r.body.Content)?.[1];
    if (key === undefined) return;
    if (key.startsWith("p")) prewarmed++;
    else arrive(key, t);
  });
  tap(omni.rejected, (r) => problem(`omni_rejected_${r.errcode}`));
  tap(wecom.sent, (s) => {
    if (s.api !== "kf/send_msg") return;
    const key = KEY.exec(String((s.body.text as { content?: unknown } | undefined)?.content ?? ""))?.[1];
    if (key !== undefined) arrive(key, performance.now());
  });
  let claims = 0; // service_state/trans: the gateway claims each new KF session
  tap(wecom.requests, (r) => {
    if (r.path === "/cgi-bin/kf/service_state/trans") claims++;
    if (r.status !== 200 || (r.errcode !== undefined && r.errcode !== 0)) problem(`wecom_${r.path.replace("/cgi-bin/", "")}_${r.status}_${r.errcode ?? ""}`);
  });
  tap(wecom.syncCalls, () => {});

  // --- the server under test ---
  let child: Child;
  if (mode === "gateway") {
    const config = {
      listen: { host: "127.0.0.1", port: 0 },
      publicUrl: "http://127.0.0.1:1",
      store: `sqlite:${join(dir, "bridge.db")}`,
      adminToken: "bench-admin-token-0123",
      mediaDir: join(dir, "media"),
      wecom: { apiBase: wecom.url, corpId: CORP, apps: [{ name: "support", agentId: AGENT_ID, secret: APP_SECRET, token: APP_TOKEN, encodingAESKey: APP_AES, kf: true }] },
      omni: { baseUrl: omni.url, version: "v1", appId: OMNI_APP, secret: OMNI_SECRET, pathPrefix: PREFIX },
      delivery: { maxAttempts: 12, baseDelayMs: 200, maxDelayMs: 5000, concurrency: CONCURRENCY, timeoutMs: 5000 },
      // retention off, in effect: nothing is old enough, and the pruner runs once a day
      retention: { days: 3650, intervalSec: 86_400 },
    };
    child = await startChild("gateway", config);
  } else {
    const relay: RelayOptions = {
      omniMessageUrl: `${omni.url}/api/v1/${OMNI_APP}/staffService/message`,
      omniAppId: OMNI_APP,
      omniSecret: OMNI_SECRET,
      wecomUrl: wecom.url,
      corpId: CORP,
      kfSecret: APP_SECRET,
      staffPath: STAFF_PATH,
      maxSockets: 64,
    };
    child = await startChild("relay", relay);
  }
  wecom.setCallbackUrl("app", "support", `${child.url}/wecom/app/support`);

  // --- KF customers: who may be answered ---
  const ready: Customer[] = []; // customers with budget left, answered round robin
  let readyHead = 0;
  const depleted: Customer[] = []; // budget spent and every answer arrived: they write again
  const agentWaiters: (() => void)[] = [];
  let customerNo = 0;
  /** Time agents spent waiting for a customer they may answer, within the measured window. */
  let agentWaitMs = 0;
  const newCustomer = (): Customer => {
    const id = `wmRt${phaseNo}x${++customerNo}`;
    return { id, address: `kf:${CORP}:${KFID}:${id}`, budget: 0, inflight: 0 };
  };
  const open = (c: Customer) => {
    c.budget = KF_BUDGET;
    ready.push(c);
    // each of the customer's answers may go to another agent
    for (const w of agentWaiters.splice(0, KF_BUDGET)) w();
  };
  const takeCustomer = async (): Promise<Customer | undefined> => {
    while (running) {
      if (readyHead < ready.length) {
        const c = ready[readyHead++] as Customer;
        if (readyHead > 4096 && readyHead * 2 > ready.length) {
          ready.splice(0, readyHead);
          readyHead = 0;
        }
        c.budget--;
        c.inflight++;
        if (c.budget > 0) ready.push(c);
        return c;
      }
      const waited = performance.now();
      await new Promise<void>((r) => agentWaiters.push(r));
      const now = performance.now();
      agentWaitMs += Math.max(0, Math.min(now, mEnd) - Math.max(waited, mStart));
    }
    return undefined;
  };
  const release = (c: Customer) => {
    c.inflight--;
    if (c.budget === 0 && c.inflight === 0) depleted.push(c);
  };

  // before the load: customers who wrote (the gateway pulls them in pages of 1000)
  let running = true;
  const first: Customer[] = Array.from({ length: KF_CUSTOMERS }, newCustomer);
  for (let i = 0; i < first.length; i++) {
    const c = first[i] as Customer;
    const last = i === first.length - 1;
    await wecom.kfCustomerSends(KFID, c.id, { msgtype: "text", text: { content: `你好 #p${i}` } }, { callback: mode === "gateway" && last });
  }
  if (mode === "gateway") {
    // their messages reached the 全媒体 and their sessions were claimed: the outbox is empty again
    const until = Date.now() + 120_000;
    while ((prewarmed < first.length || claims < first.length) && Date.now() < until) await sleep(20);
    if (prewarmed < first.length) throw new Error(`only ${prewarmed} of ${first.length} KF customers' first messages reached the 全媒体`);
    await sleep(200);
  }
  for (const c of first) open(c);

  // app callbacks are made before the load, so that encrypting them costs the load nothing
  const poolSize = Math.ceil(POOL_PER_SEC * (SECONDS + WARMUP));
  const pool: { key: string; path: string; body: string }[] = [];
  for (let i = 0; i < poolSize; i++) {
    const seq = ++appSeq;
    pool.push({ key: `a${seq}`, ...appCallback(seq) });
  }
  let poolIndex = 0;

  const cbAgent = new Agent({ keepAlive: true, maxSockets: CONNECTIONS, maxFreeSockets: CONNECTIONS });
  const staffAgent = new Agent({ keepAlive: true, maxSockets: AGENTS, maxFreeSockets: AGENTS });
  let outSeq = 0;
  let kfSeq = 0;

  const appSlot = async () => {
    while (running) {
      let cb = pool[poolIndex++];
      if (cb === undefined) {
        problem("pool_exhausted");
        const seq = ++appSeq;
        cb = { key: `a${seq}`, ...appCallback(seq) };
      }
      const t0 = performance.now();
      const arrived = expect(cb.key, "in", t0);
      try {
        const r = await post(cbAgent, child.port, cb.path, cb.body, "text/xml");
        if (r.status !== 200) {
          problem(`app_http_${r.status}`);
          cancel(cb.key);
        }
      } catch {
        problem("app_network");
        cancel(cb.key);
      }
      await arrived;
    }
  };

  const agentSlot = async () => {
    while (running) {
      const c = await takeCustomer();
      if (c === undefined) break;
      const key = `o${++outSeq}`;
      const body = JSON.stringify({ ToUserId: c.address, WorkerNum: "8001", WorkerName: "坐席", ServiceId: "bench", MsgType: "text", Content: `您好，您的订单已发货，请留意查收 #${key}` });
      // distinct bodies: the same millisecond may sign several requests
      const ts = String(Date.now());
      const path = `${STAFF_PATH}?timestamp=${ts}&signature=${omniSignature(OMNI_APP, OMNI_SECRET, ts)}`;
      const t0 = performance.now();
      const arrived = expect(key, "out", t0);
      try {
        const r = await post(staffAgent, child.port, path, body, "application/json");
        const errcode = r.status === 200 ? (JSON.parse(r.body) as { errcode?: unknown }).errcode : undefined;
        if (errcode !== 0) {
          problem(`staff_${r.status}_${String(errcode)}`);
          cancel(key);
        }
      } catch {
        problem("staff_network");
        cancel(key);
      }
      await arrived;
      release(c);
    }
  };

  const kfSlot = async () => {
    while (running) {
      const c = depleted.shift() ?? newCustomer();
      const key = `k${++kfSeq}`;
      const t0 = performance.now();
      if (mode === "gateway") {
        const arrived = expect(key, "kf", t0);
        // a customer does not wait for WeCom's callback: the gateway may pull the message on an
        // earlier callback (or this one, however late it is accepted)
        const cb = { t0 };
        callbacksUnderWay.add(cb);
        void wecom.kfCustomerSends(KFID, c.id, { msgtype: "text", text: { content: `还没收到货 #${key}` } }).then(
          (r) => {
            callbacksUnderWay.delete(cb);
            const t1 = performance.now();
            if (t1 >= mEnd) return; // the simulator cancels the callbacks still under way when it closes
            if (t1 >= mStart) kfCallbackMs.push(t1 - t0);
            if (!r.callback?.delivered) problem("kf_callback_undelivered");
            else if ((r.callback?.tries ?? 1) > 1) problem("kf_callback_retried_by_wecom"); // not answered within WeCom's 5 s
          },
          () => problem("kf_callback_error"),
        );
        if (!(await arrived)) continue;
        await sleep(GRACE_MS); // the gateway's rules see the message once stored: an agent reads first
      } else {
        // the relay forwards the kf_msg_or_event callback; the message itself stays in sync_msg
        const r = await wecom.kfCustomerSends(KFID, c.id, { msgtype: "text", text: { content: `还没收到货 #${key}` } });
        const t = performance.now();
        if (!r.callback?.delivered) problem("kf_callback_undelivered");
        else if (t >= mStart && t < mEnd) {
          lat.kf.push(t - t0);
          kfCallbackMs.push(t - t0);
        }
      }
      open(c);
    }
  };

  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  const t = performance.now();
  mStart = t + WARMUP * 1000;
  mEnd = mStart + SECONDS * 1000;
  const slots = [
    ...Array.from({ length: CONNECTIONS }, appSlot),
    ...Array.from({ length: AGENTS }, agentSlot),
    ...Array.from({ length: KF_INFLIGHT }, kfSlot),
  ];
  await sleep(mStart - performance.now());
  const cpu0 = (await child.ask("cpu", "CPU ")).split(" ").map(Number);
  const own0 = process.cpuUsage();
  const m0 = machineCpu();
  const w0 = performance.now();
  loopDelay.enable();
  await sleep(mEnd - performance.now());
  const cpu1 = (await child.ask("cpu", "CPU ")).split(" ").map(Number);
  const own1 = process.cpuUsage(own0);
  const wallUs = (performance.now() - w0) * 1000;
  const m1 = machineCpu();
  loopDelay.disable();
  running = false;
  // callbacks the gateway had not answered within WeCom's 5 s: WeCom tries them again
  const late = [...callbacksUnderWay].filter((cb) => cb.t0 < mEnd - 5000).length;
  if (late > 0) problem("kf_callbacks_unanswered_after_5s", late);
  for (const w of agentWaiters.splice(0)) w();
  await Promise.race([Promise.all(slots), sleep(LOST_AFTER_MS + 2000)]);
  const rss = Number((await child.ask("rss", "RSS ")).slice(4));
  await child.stop();
  clearInterval(sweep);
  for (const key of [...pending.keys()]) cancel(key);
  cbAgent.destroy();
  staffAgent.destroy();
  await wecom.close();
  await omni.close();
  rmSync(dir, { recursive: true, force: true });

  const figures = (xs: number[]) => ({ mps: Math.round(xs.length / SECONDS), p50: round1(percentile(xs, 50)), p99: round1(percentile(xs, 99)) });
  return {
    in: figures(lat.in),
    out: figures(lat.out),
    kf: figures(lat.kf),
    kfCallback: { p50: round1(percentile(kfCallbackMs, 50)), p99: round1(percentile(kfCallbackMs, 99)) },
    agentsIdle: AGENTS === 0 ? 0 : Math.round((100 * agentWaitMs) / (AGENTS * SECONDS * 1000)),
    problems,
    childCpu: Math.round((100 * ((cpu1[1] as number) - (cpu0[1] as number) + (cpu1[2] as number) - (cpu0[2] as number))) / wallUs),
    parentCpu: Math.round((100 * (own1.user + own1.system)) / wallUs),
    rssMb: Math.round(rss / 1048576),
    loopP99: round1(loopDelay.percentile(99) / 1e6),
    childLoopP99: cpu1[3] as number,
    childLoopMax: cpu1[4] as number,
    machineCpu: Math.round((100 * cpus().length * (m1.busy - m0.busy)) / Math.max(1, m1.total - m0.total)),
  };
}

// --- rounds -----------------------------------------------------------------------------------

const relays: PhaseResult[] = [];
const gateways: PhaseResult[] = [];
const show = (name: string, r: PhaseResult) =>
  console.log(
    `  ${name}: in ${r.in.mps}/s p50 ${r.in.p50} p99 ${r.in.p99} ms | out ${r.out.mps}/s p50 ${r.out.p50} p99 ${r.out.p99} ms | ` +
      `KF ${r.kf.mps}/s p99 ${r.kf.p99} ms (its callbacks p50 ${r.kfCallback.p50} p99 ${r.kfCallback.p99} ms) | ` +
      `CPU child ${r.childCpu}%, parent ${r.parentCpu}%, others ${r.machineCpu - r.childCpu - r.parentCpu}% | ` +
      `event-loop delay p99 child ${r.childLoopP99} ms (max ${r.childLoopMax}), parent ${r.loopP99} ms` +
      (r.agentsIdle > 0 ? ` | agents idle ${r.agentsIdle}% (no customer with budget left)` : "") +
      (Object.keys(r.problems).length > 0 ? ` | ${JSON.stringify(r.problems)}` : ""),
  );
for (let round = 1; round <= ROUNDS; round++) {
  console.log(`round ${round}/${ROUNDS}`);
  if (PHASES.includes("relay")) {
    const relay = await runPhase("relay");
    show("relay  ", relay);
    relays.push(relay);
  }
  if (PHASES.includes("gateway")) {
    const gateway = await runPhase("gateway");
    show("gateway", gateway);
    gateways.push(gateway);
  }
}

const med = (xs: PhaseResult[], f: (r: PhaseResult) => number) => round1(median(xs.map(f)));
const inbound = med(gateways, (r) => r.in.mps);
const outbound = med(gateways, (r) => r.out.mps);
const relayIn = med(relays, (r) => r.in.mps);
const relayOut = med(relays, (r) => r.out.mps);
const p99In = med(gateways, (r) => r.in.p99);
const p99Out = med(gateways, (r) => r.out.p99);
const problems = (xs: PhaseResult[]) => {
  const all: Record<string, number> = {};
  for (const r of xs) for (const [k, v] of Object.entries(r.problems)) all[k] = (all[k] ?? 0) + v;
  return Object.keys(all).length === 0 ? "none" : JSON.stringify(all);
};

console.log(
  `roundtrip: ${ROUNDS} rounds x ${SECONDS} s (after ${WARMUP} s warm-up), in flight: ${CONNECTIONS} app callbacks, ${AGENTS} agents' answers, ${KF_INFLIGHT} KF customers; ` +
    `delivery.concurrency ${CONCURRENCY}; medians (node ${process.version})`,
);
console.log("| server | in msg/s | in p50 / p99 ms | out msg/s | out p50 / p99 ms | KF in msg/s | KF p50 / p99 ms | CPU child / parent |");
console.log("|---|---:|---:|---:|---:|---:|---:|---:|");
for (const [name, xs] of [
  ["wecom-bridge (SQLite)", gateways],
  ["relay ceiling (bare node:http)", relays],
] as const) {
  console.log(
    `| ${name} | ${med(xs, (r) => r.in.mps)} | ${med(xs, (r) => r.in.p50)} / ${med(xs, (r) => r.in.p99)} | ${med(xs, (r) => r.out.mps)} | ${med(xs, (r) => r.out.p50)} / ${med(xs, (r) => r.out.p99)} | ` +
      `${med(xs, (r) => r.kf.mps)} | ${med(xs, (r) => r.kf.p50)} / ${med(xs, (r) => r.kf.p99)} | ${med(xs, (r) => r.childCpu)}% / ${med(xs, (r) => r.parentCpu)}% |`,
  );
}
console.log(`gateway problems: ${problems(gateways)}; relay problems: ${problems(relays)}; gateway peak RSS ${Math.max(...gateways.map((r) => r.rssMb))} MB`);
const starved = Math.max(...[...gateways, ...relays].map((r) => r.agentsIdle));
if (starved > 5) console.log(`warning: agents waited ${starved}% of the time for a customer they may answer: outbound is limited by KF customers' budget (raise BENCH_KF_CUSTOMERS)`);
const others = Math.max(...[...gateways, ...relays].map((r) => r.machineCpu - r.childCpu - r.parentCpu));
if (others > 25) console.log(`warning: other processes used up to ${others}% of a core during a measured window (2 cores in all): these figures understate both servers`);
console.log(
  `in / relay_in = ${(inbound / relayIn).toFixed(2)}, out / relay_out = ${(outbound / relayOut).toFixed(2)} (target: each >= 0.5 and >= 3000 msg/s, p99 < 50 ms)`,
);
console.log(JSON.stringify({ bench: "roundtrip", kf_in_mps: med(gateways, (r) => r.kf.mps), kf_p99_ms: med(gateways, (r) => r.kf.p99) }));
console.log(
  JSON.stringify({ bench: "roundtrip", inbound_mps: inbound, outbound_mps: outbound, p99_in_ms: p99In, p99_out_ms: p99Out, relay_in_mps: relayIn, relay_out_mps: relayOut }),
);
