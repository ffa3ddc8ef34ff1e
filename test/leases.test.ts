/**
 * Leases: one holder at a time across processes (here: several holders on one store, as replicas
 * on one database), and what the gateway does with them: one pull of a KF account at a time, one
 * retention run at a time, one `gettoken` at a time. On both engines where the store is the point.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { OmniClient } from "../src/clients/omni.js";
import { WeComClient } from "../src/clients/wecom.js";
import { KF_LEASE_BUSY_RETRY_MS, KfPuller, type KfPullerTimers } from "../src/gateway/kf-puller.js";
import { Retention } from "../src/gateway/retention.js";
import { silentLogger } from "../src/log.js";
import type { KfMessage } from "../src/model.js";
import { OmniSimulator } from "../src/sim/omni.js";
import { WeComSimulator } from "../src/sim/wecom.js";
import { openStore } from "../src/store/index.js";
import { Leases } from "../src/store/leases.js";
import type { Store } from "../src/store/types.js";
import { freshSchema, pgReachable } from "./pg.js";
import { AGENT, APP_AES, CORP, eventually, KFID } from "./stack.js";
import { ManualTimers } from "./timers.js";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f();
});

/** Two store instances on one database (PostgreSQL), or one SQLite store (one process serves it). */
async function stores(engine: "sqlite" | "postgres"): Promise<[Store, Store]> {
  if (engine === "sqlite") {
    const s = await openStore(`sqlite:${join(mkdtempSync(join(tmpdir(), "wb-lease-")), "bridge.db")}`, { owner: true });
    cleanups.push(() => s.close());
    return [s, s];
  }
  const schema = await freshSchema();
  cleanups.push(() => schema.drop());
  const a = await openStore(schema.url);
  const b = await openStore(schema.url);
  cleanups.push(async () => {
    await a.close();
    await b.close();
  });
  return [a, b];
}

describe.each([
  ["sqlite", true],
  ["postgres", pgReachable],
] as const)("leases on %s", (engine, reachable) => {
  it.skipIf(!reachable)("one holder at a time; renewed by its holder; free once expired or released", async () => {
    const [sa, sb] = await stores(engine);
    let now = 1_000_000;
    const a = new Leases(sa, () => now, "replica-a");
    const b = new Leases(sb, () => now, "replica-b");
    expect(await a.acquire(CORP, "job", 1000)).toBe(true);
    expect(await b.acquire(CORP, "job", 1000)).toBe(false);
    expect(await b.acquire("another-corp", "job", 1000)).toBe(true); // per tenant
    now += 900;
    expect(await a.acquire(CORP, "job", 1000)).toBe(true); // renewed until now + 1000
    now += 900;
    expect(await b.acquire(CORP, "job", 1000)).toBe(false);
    now += 200; // a died: its lease ran out
    expect(await b.acquire(CORP, "job", 1000)).toBe(true);
    expect(await a.acquire(CORP, "job", 1000)).toBe(false);
    await b.release(CORP, "job");
    expect(await a.acquire(CORP, "job", 1000)).toBe(true);
    await b.release(CORP, "job"); // not b's: changes nothing
    expect(await b.acquire(CORP, "job", 1000)).toBe(false);
    await a.releaseAll();
    expect(await b.acquire(CORP, "job", 1000)).toBe(true);
  });

  it.skipIf(!reachable)("many holders racing for one lease: exactly one wins", async () => {
    const [sa, sb] = await stores(engine);
    const holders = Array.from({ length: 8 }, (_, i) => new Leases(i % 2 === 0 ? sa : sb, Date.now, `h${i}`));
    const won = await Promise.all(holders.map((h) => h.acquire(CORP, "race", 10_000)));
    expect(won.filter(Boolean)).toHaveLength(1);
  });

  it.skipIf(!reachable)("replicas never sign a 全媒体 request in the same millisecond (the 全媒体 would refuse it as a replay)", async () => {
    const [sa, sb] = await stores(engine);
    const omni = await OmniSimulator.start({ appId: "1001", secret: "omni-secret" });
    cleanups.push(() => omni.close());
    const body = (n: number) => ({ FromUserId: `app:${CORP}:1:u${n}`, MsgType: "text", Content: String(n) }) as never;
    const send = async (withStore: boolean) => {
      // both clocks stand still (a second apart between the runs: the 全媒体 remembers what it saw)
      const frozen = Date.now() + (withStore ? 1000 : 0);
      const clients = [sa, sb].map((store) => new OmniClient({ baseUrl: omni.url, version: "v1", appId: "1001", secret: "omni-secret", now: () => frozen, ...(withStore ? { store } : {}) }));
      const results = await Promise.allSettled(Array.from({ length: 40 }, (_, n) => (clients[n % 2] as OmniClient).send(body(n))));
      for (const c of clients) c.close();
      return results.filter((r) => r.status === "rejected").length;
    };
    // one process alone: concurrent sends never share a millisecond
    const single = new OmniClient({ baseUrl: omni.url, version: "v1", appId: "1001", secret: "omni-secret", now: () => Date.now() - 5000 });
    const alone = await Promise.allSettled(Array.from({ length: 20 }, (_, n) => single.send(body(100 + n))));
    single.close();
    expect(alone.filter((r) => r.status === "rejected")).toEqual([]);
    expect(await send(false)).toBeGreaterThan(0); // without the store the second replica collides
    const before = omni.received.length;
    expect(await send(true)).toBe(0);
    expect(omni.received.length - before).toBe(40);
  });

  it.skipIf(!reachable)("one gettoken across replicas: the others take its token from the store", async () => {
    const [sa, sb] = await stores(engine);
    const sim = await WeComSimulator.start({ corpId: CORP, apps: [{ agentId: AGENT, secret: "app-secret", token: "apptoken", encodingAESKey: APP_AES }] });
    cleanups.push(() => sim.close());
    sim.setDelay("gettoken", 150);
    const clients = [sa, sb, sa, sb].map((store) => new WeComClient({ apiBase: sim.url, store, leases: new Leases(store) }));
    const tokens = await Promise.all(clients.map((c) => c.token({ corpId: CORP, secret: "app-secret" })));
    expect(new Set(tokens).size).toBe(1);
    expect(sim.requests.filter((r) => r.path.endsWith("/gettoken"))).toHaveLength(1);
    for (const c of clients) c.close();
  });
});


describe("the gateway's leases", () => {
  async function kf(store: Store, leases: Leases, timers: KfPullerTimers) {
    const sim = await WeComSimulator.start({ corpId: CORP, apps: [{ agentId: AGENT, secret: "app-secret", token: "apptoken", encodingAESKey: APP_AES, kf: true }] });
    sim.addKfAccount(KFID, "售后客服");
    const stored: KfMessage[] = [];
    const wecom = new WeComClient({ apiBase: sim.url, store });
    const puller = new KfPuller({
      store,
      wecom,
      credentials: { corpId: CORP, secret: "app-secret" },
      appName: "support",
      deliverHistory: true,
      firstPullGraceSec: 60,
      log: silentLogger,
      onStored: (m) => void stored.push(...m),
      leases,
      timers,
    });
    cleanups.push(async () => {
      await puller.stop();
      wecom.close();
      await sim.close();
    });
    return { sim, puller, stored, syncs: () => sim.requests.filter((r) => r.path === "/cgi-bin/kf/sync_msg").length };
  }

  it("a KF account another replica is pulling is not pulled; it is looked at again, and pulled from the stored cursor once free", async () => {
    const [store] = await stores("sqlite");
    const other = new Leases(store, Date.now, "other-replica");
    expect(await other.acquire(CORP, `kfpull:${KFID}`, 60_000)).toBe(true);
    const timers = new ManualTimers();
    const h = await kf(store, new Leases(store), timers);
    await h.sim.kfCustomerSends(KFID, "wmL", { msgtype: "text", text: { content: "一" } }, { callback: false });
    await h.puller.wake(KFID, undefined, Date.now()).catch(() => undefined);
    expect(h.syncs()).toBe(0);
    expect(timers.armed.filter((t) => !t.cleared).map((t) => t.ms)).toEqual([KF_LEASE_BUSY_RETRY_MS]);
    // still held: the next look finds it busy again
    timers.fire((t) => t.ms === KF_LEASE_BUSY_RETRY_MS);
    await eventually(() => timers.armed.filter((t) => !t.cleared && t.ms === KF_LEASE_BUSY_RETRY_MS).length === 1, 5000, "another look");
    expect(h.syncs()).toBe(0);
    await other.release(CORP, `kfpull:${KFID}`);
    timers.fire((t) => t.ms === KF_LEASE_BUSY_RETRY_MS);
    await eventually(() => h.stored.length === 1, 5000, "the message");
    // the lease is given back after the pull: the other replica may take it at once
    await eventually(async () => await other.acquire(CORP, `kfpull:${KFID}`, 1000), 5000, "the lease back");
  });

  it("one retention run at a time: a replica whose turn another holds removes nothing", async () => {
    const [store] = await stores("sqlite");
    const config = { retention: { days: 1, intervalSec: 60, batchSize: 100, auditDays: 365 }, mediaLinkTtlSec: 60 } as const;
    const old = Date.now() - 10 * 86_400_000;
    await store.ingest([{ tenant: CORP, channel: "app", key: "gone", skipReason: "test" }], undefined, old);
    const other = new Leases(store, Date.now, "other-replica");
    const retention = new Retention({ config, store, removeFile: async () => undefined, log: silentLogger, leases: new Leases(store) });
    expect(await other.acquire("", "retention", 60_000)).toBe(true);
    expect((await retention.run()).ledger).toBe(0);
    await other.release("", "retention");
    expect((await retention.run()).ledger).toBe(1);
    // and the run gave the lease back
    expect(await other.acquire("", "retention", 60_000)).toBe(true);
  });
});
