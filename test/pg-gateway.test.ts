/**
 * The gateway on PostgreSQL, end to end: a message both ways, what callers are told while the
 * database is unreachable (nothing acknowledged that was not committed), and a stop that hands
 * its work to the other replicas at once (leases released, entries it held put back).
 */
import { afterEach, describe, expect, it } from "vitest";
import { STOP_GRACE_MS } from "../src/gateway/gateway.js";
import { Leases } from "../src/store/leases.js";
import type { PostgresStore } from "../src/store/postgres/index.js";
import { freshSchema, type PgSchema, pgReachable } from "./pg.js";
import { AGENT, CORP, eventually, KFID, type Stack, startStack } from "./stack.js";

let stack: Stack | undefined;
let schema: PgSchema | undefined;
afterEach(async () => {
  await stack?.stop().catch(() => undefined);
  stack = undefined;
  await schema?.drop();
  schema = undefined;
});

async function pgStack(config: (raw: Record<string, any>) => void = () => undefined): Promise<Stack> {
  schema = await freshSchema();
  const url = schema.url;
  stack = await startStack({
    config: (raw) => {
      raw.store = url;
      config(raw);
    },
  });
  return stack;
}

describe.skipIf(!pgReachable)("the gateway on PostgreSQL", () => {
  it("carries a message both ways and says it runs on postgres", async () => {
    const s = await pgStack();
    expect(await (await fetch(`${s.gw.url}/readyz`)).json()).toEqual({ status: "ready", store: "postgres" });
    await s.wecom.appUserSendsText(AGENT, "lisi", "你好");
    const [got] = await s.omni.waitFor(1);
    const answer = await s.omni.sendAgentReply({ ToUserId: got?.body.FromUserId as string, MsgType: "text", Content: "您好" });
    expect(answer.reply).toEqual({ errcode: 0, errmsg: "ok" });
    await eventually(() => s.wecom.sent.some((x) => x.api === "message/send" && x.delivered), 5000, "the answer at WeCom");
  });

  it("while the database is unreachable: callbacks 500 (WeCom retries), the 全媒体 30004, /readyz 503", async () => {
    const s = await pgStack();
    await s.wecom.appUserSendsText(AGENT, "lisi", "先来一条");
    const [got] = await s.omni.waitFor(1);
    await (s.gw.store as PostgresStore).pool.end(); // the database is gone for this process
    const ready = await fetch(`${s.gw.url}/readyz`);
    expect(ready.status).toBe(503);
    const answer = await s.omni.sendAgentReply({ ToUserId: got?.body.FromUserId as string, MsgType: "text", Content: "稍后" });
    expect(answer.status).toBe(200);
    expect((answer.reply as { errcode: number }).errcode).toBe(30004);
    const cb = await s.wecom.appUserSendsText(AGENT, "lisi", "数据库不在");
    expect(cb.status).toBe(500); // after WeCom's own retries
    expect(s.omni.received).toHaveLength(1);
  });

  it("a stop releases the replica's leases and the entries it holds, for the others to take at once", async () => {
    // an attempt that outlives the stop's 10 s grace: the 全媒体 answers after a minute
    const s = await pgStack((raw) => (raw.delivery.timeoutMs = 60_000));
    s.omni.setDelay(60_000);
    await s.wecom.appUserSendsText(AGENT, "wangwu", "慢慢来");
    const store = s.gw.store as PostgresStore;
    // the delivery is in flight (the 全媒体 is slow), and the replica holds a KF pull lease
    await eventually(async () => (await store.outboxCounts()).inflight === 1, 5000, "an entry in flight");
    expect(await s.gw.gateway.leases.acquire(CORP, `kfpull:${KFID}`, 60_000)).toBe(true);
    const other = new Leases(store, Date.now, "another-replica");
    expect(await other.acquire(CORP, `kfpull:${KFID}`, 1000)).toBe(false);
    const t0 = Date.now();
    await s.gw.stop();
    stack = undefined;
    expect(Date.now() - t0).toBeLessThan(STOP_GRACE_MS + 3000);
    // another replica (here: a new store on the same schema) finds the entry pending and the lease free
    const { PostgresStore: Pg } = await import("../src/store/postgres/index.js");
    const next = await Pg.open({ url: (schema as PgSchema).url });
    try {
      expect(await next.outboxCounts()).toMatchObject({ inflight: 0, pending: 1 });
      expect(await new Leases(next, Date.now, "another-replica").acquire(CORP, `kfpull:${KFID}`, 1000)).toBe(true);
      const [claimed] = await next.claimOutbox(["omni"], Date.now(), 10, 30_000);
      expect(claimed?.kind).toBe("omni");
    } finally {
      await next.close();
      await s.wecom.close().catch(() => undefined);
      await s.omni.close().catch(() => undefined);
    }
  }, 30_000);
});
