/**
 * The KF puller's resilience: backoff after failed pulls, a stale callback Token, configuration
 * errors an operator fixes while the gateway runs, catch-up on start and periodic polls. Against
 * the WeCom simulator on loopback and a real SQLite store in a temp dir; timers are injected where
 * the schedule itself is under test, so nothing waits for a backoff.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { WeComClient } from "../src/clients/wecom.js";
import { parseConfig } from "../src/config.js";
import { type RunningGateway, runGateway } from "../src/gateway/index.js";
import { KfPuller, type KfPullerOptions, } from "../src/gateway/kf-puller.js";
import { Metrics } from "../src/gateway/metrics.js";
import { createLogger, silentLogger } from "../src/log.js";
import type { KfMessage } from "../src/model.js";
import { OmniSimulator } from "../src/sim/omni.js";
import { WeComSimulator } from "../src/sim/wecom.js";
import { openStore } from "../src/store/index.js";
import type { Store } from "../src/store/types.js";
import { AGENT, APP_AES, CORP, eventually, freePort, KFID, type Stack, stackConfig, startStack } from "./stack.js";
import { ManualTimers } from "./timers.js";

const SECRET = "app-secret";


/** A KF puller on a real simulator, client and SQLite store, with its log lines and stored messages. */
interface Harness {
  sim: WeComSimulator;
  store: Store;
  puller: KfPuller;
  metrics: Metrics;
  lines: Record<string, unknown>[];
  stored: KfMessage[];
  /** Sync_msg answers with this errcode so far. */
  answered(errcode: number): number;
  close(): Promise<void>;
}

const harnesses: Harness[] = [];
let stack: Stack | undefined;
const extra: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const h of harnesses.splice(0)) await h.close();
  await stack?.stop();
  stack = undefined;
  for (const f of extra.splice(0)) await f();
});

async function harness(options: Partial<KfPullerOptions> = {}): Promise<Harness> {
  const sim = await WeComSimulator.start({ corpId: CORP, apps: [{ agentId: AGENT, secret: SECRET, token: "apptoken", encodingAESKey: APP_AES, kf: true }] });
  sim.addKfAccount(KFID, "售后客服");
  const store = await openStore(`sqlite:${join(mkdtempSync(join(tmpdir(), "wb-kf-")), "bridge.db")}`, { owner: true });
  const metrics = new Metrics(store);
  const lines: Record<string, unknown>[] = [];
  const stored: KfMessage[] = [];
  const puller = new KfPuller({
    store,
    wecom: new WeComClient({ apiBase: sim.url, store }),
    credentials: { corpId: CORP, secret: SECRET },
    appName: "support",
    deliverHistory: false,
    firstPullGraceSec: 60,
    log: createLogger({ level: "debug", write: (l) => lines.push(JSON.parse(l)) }),
    metrics,
    onStored: (m) => void stored.push(...m),
    ...options,
  });
  const h: Harness = {
    sim,
    store,
    puller,
    metrics,
    lines,
    stored,
    answered: (errcode) => sim.requests.filter((r) => r.path === "/cgi-bin/kf/sync_msg" && r.errcode === errcode).length,
    async close() {
      await puller.stop();
      await sim.close();
      await store.close();
    },
  };
  harnesses.push(h);
  return h;
}

const text = (content: string) => ({ msgtype: "text", text: { content } });
const contents = (ms: KfMessage[]) => ms.map((m) => (m.content.type === "text" ? m.content.text : m.content.type));
/** The sum of the series of a metrics text whose line matches `series`. */
const total = (metrics: string, series: RegExp) =>
  metrics
    .split("\n")
    .filter((l) => series.test(l))
    .reduce((sum, l) => sum + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
/** The un-jittered wait before retry `n` (1-based): 1 s doubling, capped at 5 minutes. */
const nominal = (n: number) => Math.min(300_000, 1000 * 2 ** (n - 1));

describe("backoff after a failed pull", () => {
  it("waits 1 s doubling to a 5-minute cap, each wait within its jitter range", async () => {
    const timers = new ManualTimers();
    const jitter = [0, 0.5, 0.999];
    let draws = 0;
    const h = await harness({ timers, backoff: { random: () => jitter[draws++ % jitter.length] as number } });
    const failures = 12;
    h.sim.failNext("kf/sync_msg", -1, failures);
    await h.sim.kfCustomerSends(KFID, "wmB", text("终于"), { callback: false });
    void h.puller.wake(KFID, undefined, Date.now()).catch(() => undefined);
    const waits: number[] = [];
    for (let n = 1; n <= failures; n++) {
      await eventually(() => timers.pending().length === 1 && h.answered(-1) === n, 5000, `failed pull ${n}`);
      const ms = (timers.pending()[0] as { ms: number }).ms;
      waits.push(ms);
      const d = nominal(n);
      expect(ms).toBe(Math.round(d * (0.5 + (jitter[(n - 1) % jitter.length] as number) * 0.5)));
      expect(ms).toBeGreaterThanOrEqual(d / 2);
      expect(ms).toBeLessThanOrEqual(d);
      timers.fire();
    }
    // 1000, 2000, 4000, … 256000, then the cap of 300000, each scaled by 0.5 + jitter/2
    expect(waits).toEqual([500, 1500, 3998, 4000, 12_000, 31_984, 32_000, 96_000, 255_872, 150_000, 225_000, 299_850]);
    await eventually(() => h.stored.length === 1, 5000, "delivery after the failures");
    expect(contents(h.stored)).toEqual(["终于"]);
    expect(timers.pending()).toHaveLength(0);
  });

  it("is reset by a new callback, which pulls at once", async () => {
    const timers = new ManualTimers();
    const h = await harness({ timers, backoff: { random: () => 0.5 } });
    h.sim.failNext("kf/sync_msg", -1, 4);
    await h.sim.kfCustomerSends(KFID, "wmC", text("一"), { callback: false });
    void h.puller.wake(KFID, undefined, Date.now()).catch(() => undefined);
    for (let n = 1; n <= 3; n++) {
      await eventually(() => timers.pending().length === 1 && h.answered(-1) === n, 5000, `failed pull ${n}`);
      if (n < 3) timers.fire();
    }
    const waiting = timers.pending()[0] as { ms: number; cleared: boolean };
    expect(waiting.ms).toBe(0.75 * 4000);
    // a new callback: the pending retry is cancelled and the pull runs now
    void h.puller.wake(KFID, undefined, Date.now()).catch(() => undefined);
    expect(waiting.cleared).toBe(true);
    await eventually(() => timers.pending().length === 1 && h.answered(-1) === 4, 5000, "the pull the callback started");
    expect((timers.pending()[0] as { ms: number }).ms).toBe(0.75 * 1000); // back to the first step
    timers.fire();
    await eventually(() => h.stored.length === 1, 5000, "delivery");
  });

  it("is reset by a success", async () => {
    const timers = new ManualTimers();
    const h = await harness({ timers, pollIntervalSec: 60, backoff: { random: () => 0.5 } });
    const isPoll = (t: { ms: number }) => t.ms === 60_000;
    const isRetry = (t: { ms: number }) => !isPoll(t);
    await h.puller.start(); // nothing known yet: no catch-up pull, the poll is armed
    expect(timers.pending().map((t) => t.ms)).toEqual([60_000]);
    await h.sim.kfCustomerSends(KFID, "wmS", text("一"), { callback: false });
    h.sim.failNext("kf/sync_msg", -1, 3);
    void h.puller.wake(KFID, undefined, Date.now()).catch(() => undefined);
    for (let n = 1; n <= 3; n++) {
      await eventually(() => timers.pending().filter(isRetry).length === 1 && h.answered(-1) === n, 5000, `failed pull ${n}`);
      expect((timers.pending().find(isRetry) as { ms: number }).ms).toBe(0.75 * nominal(n));
      timers.fire(isRetry);
    }
    await eventually(() => h.stored.length === 1 && h.lines.some((l) => l.msg === "kf pull recovered"), 5000, "delivery");
    // a poll (no callback) fails after that success: its retry starts from the first step again
    h.sim.failNext("kf/sync_msg", -1, 1);
    timers.fire(isPoll);
    await eventually(() => h.answered(-1) === 4 && timers.pending().filter(isRetry).length === 1, 5000, "the failed poll's retry");
    expect((timers.pending().find(isRetry) as { ms: number }).ms).toBe(0.75 * 1000);
    expect(timers.pending().filter(isPoll)).toHaveLength(1); // the next poll is armed
  });

  it("stop() cancels a pending retry and returns", async () => {
    const timers = new ManualTimers();
    const h = await harness({ timers });
    h.sim.failNext("kf/sync_msg", 60020, 1);
    void h.puller.wake(KFID, undefined, Date.now()).catch(() => undefined);
    await eventually(() => timers.pending().length === 1, 5000, "a pending retry");
    await h.puller.stop();
    expect(timers.pending()).toHaveLength(0);
  });
});

describe("the callback Token", () => {
  it("a Token WeCom calls stale (95007) is dropped and the pull continues at once without it", async () => {
    const timers = new ManualTimers();
    const h = await harness({ timers });
    await h.sim.kfCustomerSends(KFID, "wmT", text("令牌过期"), { callback: false });
    await h.puller.wake(KFID, "ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR", Date.now());
    expect(contents(h.stored)).toEqual(["令牌过期"]);
    expect(h.answered(95007)).toBe(1);
    expect(h.sim.syncCalls.map((c) => c.withToken)).toEqual([false]);
    expect(timers.pending()).toHaveLength(0); // no retry was needed
    expect(h.lines.filter((l) => l.level === "warn" || l.level === "error")).toEqual([]);
  });

  it("after a failed pull, the retry does not keep sending the Token once it went stale", async () => {
    // the simulator's clock can be moved on: the Token is valid 10 minutes
    let skew = 0;
    const wecom = await WeComSimulator.start({
      corpId: CORP,
      apps: [{ name: "support", agentId: AGENT, secret: SECRET, token: "apptoken", encodingAESKey: APP_AES, kf: true }],
      callbackTimeoutMs: 1000,
      retryIntervalMs: 50,
      now: () => Date.now() + skew,
    });
    wecom.addKfAccount(KFID, "售后客服");
    const omni = await OmniSimulator.start({ appId: "1001", secret: "omni-secret" });
    const dir = mkdtempSync(join(tmpdir(), "wb-kf-"));
    const port = await freePort();
    const config = parseConfig(stackConfig(dir, port, wecom.url, omni.url));
    wecom.setCallbackUrl("app", "support", `http://127.0.0.1:${port}/wecom/app/support`);
    omni.setAppUrl(`http://127.0.0.1:${port}`, "/qmtapi");
    const gw: RunningGateway = await runGateway(config, { log: silentLogger });
    extra.push(async () => {
      await gw.stop();
      await wecom.close();
      await omni.close();
    });
    wecom.failNext("kf/sync_msg", -1, 1); // the first pull fails…
    await wecom.kfCustomerSends(KFID, "wmSTALE", text("还在吗"));
    skew = 11 * 60_000; // …and by its retry the callback's Token has expired
    const [got] = await omni.waitFor(1, 8000);
    expect(got?.body.Content).toBe("还在吗");
    const answers = wecom.requests.filter((r) => r.path === "/cgi-bin/kf/sync_msg").map((r) => r.errcode);
    expect(answers.filter((e) => e === 95007)).toHaveLength(1);
    expect(wecom.syncCalls.at(-1)?.withToken).toBe(false);
  });
});

describe("configuration errors", () => {
  it("are logged once per change, counted, retried with backoff, and recover without a restart", async () => {
    const h = await harness({ backoff: { baseMs: 5, capMs: 40 } });
    h.sim.failNext("kf/sync_msg", 60020, 4); // the gateway's IP is not trusted yet…
    h.sim.failNext("kf/sync_msg", 48002, 3); // …then the app is not authorised for KF…
    await h.sim.kfCustomerSends(KFID, "wmCFG", text("配置好了吗"), { callback: false });
    void h.puller.wake(KFID, undefined, Date.now()).catch(() => undefined);
    // …and then the operator has fixed both: the next retry delivers
    await eventually(() => h.stored.length === 1, 5000, "delivery after the fix");
    expect(contents(h.stored)).toEqual(["配置好了吗"]);
    expect(h.answered(60020)).toBe(4);
    expect(h.answered(48002)).toBe(3);
    const refused = h.lines.filter((l) => l.level === "error");
    expect(refused.map((l) => l.errcode)).toEqual([60020, 48002]);
    expect(refused.every((l) => l.class === "configuration" && typeof l.hint === "string")).toBe(true);
    const recovered = await eventually(() => h.lines.filter((l) => l.msg === "kf pull recovered").length > 0 && h.lines.filter((l) => l.msg === "kf pull recovered"));
    expect(recovered).toHaveLength(1);
    expect(recovered[0]).toMatchObject({ openKfId: KFID, failedPulls: 7 });
    const metrics = await h.metrics.registry.metrics();
    expect(metrics).toMatch(/wecom_bridge_wecom_config_errors_total\{api="kf\/sync_msg",errcode="60020"\} 4\n/);
    expect(metrics).toMatch(/wecom_bridge_wecom_config_errors_total\{api="kf\/sync_msg",errcode="48002"\} 3\n/);
    expect(metrics).toMatch(/wecom_bridge_kf_pull_errors_total\{class="configuration"\} 7\n/);
  });

  it("a token WeCom refuses right after a refresh is a configuration error, not a token loop", async () => {
    const h = await harness({ backoff: { baseMs: 5, capMs: 40 } });
    h.sim.failNext("kf/sync_msg", 42001, 2); // refused, refreshed, refused again
    await h.sim.kfCustomerSends(KFID, "wmTOK", text("令牌"), { callback: false });
    void h.puller.wake(KFID, undefined, Date.now()).catch(() => undefined);
    await eventually(() => h.stored.length === 1, 5000, "delivery");
    expect(h.lines.filter((l) => l.level === "error")).toMatchObject([{ class: "configuration", errcode: 42001 }]);
    const metrics = await h.metrics.registry.metrics();
    // 42001 is not a configuration errcode of its own: whatever label it gets, it is counted once
    expect(total(metrics, /^wecom_bridge_wecom_config_errors_total\{api="kf\/sync_msg",/)).toBe(1);
    expect(metrics).toMatch(/wecom_bridge_kf_pull_errors_total\{class="configuration"\} 1\n/);
  });
});

describe("messages without a callback", () => {
  it("on start, every known account is pulled once: what arrived while the gateway was down is delivered", async () => {
    stack = await startStack();
    await stack.wecom.kfCustomerSends(KFID, "wmDOWN", text("之前"));
    await stack.omni.waitFor(1);
    await stack.gw.stop();
    // WeCom tries its callback 3 times, then gives up: the gateway is down
    const sent = await stack.wecom.kfCustomerSends(KFID, "wmDOWN", text("宕机期间"));
    expect(sent.callback?.delivered).toBe(false);
    const calls = stack.wecom.syncCalls.length;
    await stack.restart();
    const got = await stack.omni.waitFor(2, 5000);
    expect(got.map((g) => g.body.Content)).toEqual(["之前", "宕机期间"]);
    expect(stack.wecom.syncCalls.slice(calls).every((c) => !c.withToken)).toBe(true);
  });

  it("every pollIntervalSec, every known account is pulled: a lost callback costs at most that long", async () => {
    stack = await startStack({ config: (c) => (c.kf = { pollIntervalSec: 1 }) });
    await stack.wecom.kfCustomerSends(KFID, "wmLOST", text("一"));
    await stack.omni.waitFor(1);
    await stack.wecom.kfCustomerSends(KFID, "wmLOST", text("回调丢了"), { callback: false });
    const got = await stack.omni.waitFor(2, 5000);
    expect(got.map((g) => g.body.Content)).toEqual(["一", "回调丢了"]);
  });

  it("with pollIntervalSec 0 there is no poll", async () => {
    const timers = new ManualTimers();
    const h = await harness({ timers, pollIntervalSec: 0 });
    await h.puller.start();
    expect(timers.armed).toHaveLength(0);
  });
});
