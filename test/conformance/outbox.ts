/**
 * Conformance: the outbox (lanes, order, retries, leases, dead letters and replays, follow-ups,
 * refusals, listings and counts).
 */
import { describe, expect, it } from "vitest";
import type { OutboxEntry, OutboxInsert, OutboxState, Store } from "../../src/store/types.js";
import type { SuiteContext } from "./context.js";
import { cutoffsAt, imageItem, ingestMixed, T0, TENANT, textItem } from "./items.js";
import { ALL_STATES, allOutbox, deliverAll, deliverInOrder, expectConsistent, keyOf, LEASE } from "./oracle.js";

const CONV = "kf:ww1:wk1:wm1";
/** An agent's answer in the KF lane of {@link CONV}. */
export const kfEntry = (text: string, conversationId: string = CONV): OutboxInsert => ({
  kind: "kf_send",
  conversationId,
  payload: { op: "message", body: { ToUserId: conversationId, MsgType: "text", Content: text } },
});
/** The text of a {@link kfEntry}. */
export const kfText = (e: OutboxEntry): string => (e.payload as { body: { Content: string } }).body.Content;

/** Queue answers (no keys, no rule); returns their ids. */
export async function queue(s: Store, entries: OutboxInsert[], now = T0): Promise<number[]> {
  const r = await s.acceptOutbound({ tenant: TENANT, keys: [], entries, now });
  if (r.outcome !== "queued") throw new Error(`not queued: ${r.outcome}`);
  return r.ids;
}

/** Register the tests of the outbox. */
export function outboxTests(ctx: SuiteContext): void {
  describe("outbox: lanes and order", () => {
    it("claims one entry per conversation, in order, and the next only after the first is done", async () => {
      const s = await ctx.fresh();
      await s.ingest([textItem("1", "A"), textItem("2", "A"), textItem("3", "B")], undefined, T0);
      const first = await s.claimOutbox(["omni"], T0, 10, LEASE);
      expect(first.map((e) => [e.conversationId, e.attempts, e.state])).toEqual([
        ["A", 1, "inflight"],
        ["B", 1, "inflight"],
      ]);
      expect(await keyOf(s, first[0] as OutboxEntry)).toBe("1");
      expect(await s.claimOutbox(["omni"], T0, 10, LEASE)).toEqual([]);
      expect((await s.getOutbox(first[0]?.id as number))?.state).toBe("inflight");
      await s.finishOutbox(first[0]?.id as number, { state: "done" }, T0);
      const next = await s.claimOutbox(["omni"], T0, 10, LEASE);
      expect(next).toHaveLength(1);
      expect(await keyOf(s, next[0] as OutboxEntry)).toBe("2");
      expect(await s.getOutbox(first[0]?.id as number)).toMatchObject({ state: "done", attempts: 1, lastError: null, updatedAt: T0 });
      await expectConsistent(s);
    });

    it("a lane is one kind in one conversation; entries without a conversation have no order; claims take the kinds asked and at most `limit`", async () => {
      const s = await ctx.fresh();
      await s.ingest([imageItem("i1", "A"), imageItem("i2", "A")], undefined, T0);
      await queue(s, [kfEntry("a", "A"), kfEntry("b", "A")]);
      expect(await s.claimOutbox(["kf_send"], T0, 1, LEASE)).toMatchObject([{ kind: "kf_send", conversationId: "A" }]);
      const claimed = await s.claimOutbox(["omni", "media", "kf_send"], T0, 10, LEASE);
      expect(claimed.map((e) => `${e.kind}/${e.conversationId}`).sort()).toEqual(["media/null", "media/null", "omni/A"]);
      expect(await s.claimOutbox(["omni", "media", "kf_send"], T0, 10, LEASE)).toEqual([]);
      expect(await s.claimOutbox([], T0, 10, LEASE)).toEqual([]);
      expect(await s.claimOutbox(["omni", "media", "kf_send"], T0, 0, LEASE)).toEqual([]);
      expect((await s.outboxCounts()).inflight).toBe(4);
      await expectConsistent(s);
    });

    it("a retry waits for its time and keeps blocking later entries of its conversation", async () => {
      const s = await ctx.fresh();
      await s.ingest([textItem("1", "A"), textItem("2", "A")], undefined, T0);
      const [e] = await s.claimOutbox(["omni"], T0, 10, LEASE);
      await s.finishOutbox(e?.id as number, { state: "pending", nextAttemptAt: T0 + 5000, error: "down" }, T0);
      expect(await s.getOutbox(e?.id as number)).toMatchObject({ state: "pending", attempts: 1, nextAttemptAt: T0 + 5000, lastError: "down" });
      expect(await s.claimOutbox(["omni"], T0 + 1000, 10, LEASE)).toEqual([]);
      expect(await s.nextOutboxDue(["omni"])).toBe(T0 + 5000); // the entry behind it is due, but not claimable
      const [again] = await s.claimOutbox(["omni"], T0 + 5000, 10, LEASE);
      expect(again).toMatchObject({ id: e?.id, attempts: 2, lastError: "down" });
      // a wait that is not an attempt (pacing) does not count
      await s.finishOutbox(e?.id as number, { state: "pending", nextAttemptAt: T0 + 6000, error: "paced", countAttempt: false }, T0 + 5000);
      expect(await s.getOutbox(e?.id as number)).toMatchObject({ state: "pending", attempts: 1, lastError: "paced" });
      await expectConsistent(s);
    });

    it("nextOutboxDue: the earliest head of the kinds asked, undefined when there is none", async () => {
      const s = await ctx.fresh();
      expect(await s.nextOutboxDue(["omni"])).toBeUndefined();
      await s.ingest([textItem("1", "A")], undefined, T0 + 300);
      await queue(s, [kfEntry("a")], T0 + 100);
      expect(await s.nextOutboxDue(["omni"])).toBe(T0 + 300);
      expect(await s.nextOutboxDue(["kf_send"])).toBe(T0 + 100);
      expect(await s.nextOutboxDue(["omni", "kf_send"])).toBe(T0 + 100);
      expect(await s.nextOutboxDue(["app_send"])).toBeUndefined();
      expect(await s.nextOutboxDue([])).toBeUndefined();
      await deliverAll(s, T0 + 300, ["omni", "kf_send"]);
      expect(await s.nextOutboxDue(["omni", "kf_send"])).toBeUndefined();
    });

    it("an expired lease makes an entry claimable again (a worker died), as a new attempt", async () => {
      const s = await ctx.fresh();
      await s.ingest([textItem("1")], undefined, T0);
      const [e] = await s.claimOutbox(["omni"], T0, 10, 1000);
      expect(await s.claimOutbox(["omni"], T0 + 500, 10, 1000)).toEqual([]);
      const [re] = await s.claimOutbox(["omni"], T0 + 1001, 10, 1000);
      expect(re).toMatchObject({ id: e?.id, attempts: 2, state: "inflight" });
      await expectConsistent(s);
    });

    it("renewLease keeps a long attempt's entry from being claimed again; false when the entry is not in flight", async () => {
      const s = await ctx.fresh();
      await s.ingest([textItem("1", "A"), textItem("2", "A")], undefined, T0);
      const [e, behind] = (await allOutbox(s)).sort((a, b) => a.id - b.id);
      expect(await s.renewLease(e?.id as number, T0 + 9000, T0)).toBe(false); // pending
      await s.claimOutbox(["omni"], T0, 10, 1000);
      expect(await s.renewLease(e?.id as number, T0 + 5000, T0 + 500)).toBe(true);
      expect(await s.claimOutbox(["omni"], T0 + 2000, 10, 1000)).toEqual([]);
      expect(await s.getOutbox(e?.id as number)).toMatchObject({ state: "inflight", attempts: 1 });
      const [again] = await s.claimOutbox(["omni"], T0 + 5001, 10, 1000);
      expect(again).toMatchObject({ id: e?.id, attempts: 2 });
      await s.finishOutbox(e?.id as number, { state: "done" }, T0 + 5002);
      expect(await s.renewLease(e?.id as number, T0 + 9000, T0 + 5003)).toBe(false); // done
      expect(await s.renewLease(behind?.id as number, T0 + 9000, T0 + 5003)).toBe(false); // pending
      expect(await s.renewLease((behind?.id as number) + 1000, T0 + 9000, T0 + 5003)).toBe(false); // unknown
    });
  });

  describe("outbox: dead letters and replays", () => {
    it("dead entries do not block their conversation and can be replayed, with their attempts anew", async () => {
      const s = await ctx.fresh();
      await s.ingest([textItem("1", "A"), textItem("2", "A")], undefined, T0);
      const [e] = await s.claimOutbox(["omni"], T0, 10, LEASE);
      await s.finishOutbox(e?.id as number, { state: "dead", error: "gave up" }, T0);
      expect((await s.outboxCounts()).dead).toBe(1);
      const [next] = await s.claimOutbox(["omni"], T0, 10, LEASE);
      expect(next?.id).not.toBe(e?.id);
      expect(await s.listOutbox(["dead"], { limit: 10 })).toMatchObject([{ id: e?.id, state: "dead", lastError: "gave up", attempts: 1, updatedAt: T0 }]);
      expect(await s.replayDead([next?.id as number], T0 + 1)).toBe(0); // not dead
      expect(await s.replayDead("all", T0 + 1)).toBe(1);
      expect(await s.replayDead("all", T0 + 2)).toBe(0);
      expect((await s.outboxCounts()).dead).toBe(0);
      expect(await s.getOutbox(e?.id as number)).toMatchObject({ state: "pending", attempts: 0, nextAttemptAt: T0 + 1 });
      expect(await s.getOutbox(next?.id as number)).toMatchObject({ state: "inflight" });
      await expectConsistent(s);
    });

    it("a replayed dead letter joins the end of its lane: never two in flight for one conversation", async () => {
      const s = await ctx.fresh();
      await s.ingest([textItem("1", "A"), textItem("2", "A")], undefined, T0);
      const [first] = await s.claimOutbox(["omni"], T0, 10, LEASE);
      await s.finishOutbox(first?.id as number, { state: "dead", error: "x" }, T0);
      const [second] = await s.claimOutbox(["omni"], T0, 10, LEASE);
      expect(second?.id).not.toBe(first?.id);
      expect(await s.replayDead([first?.id as number], T0)).toBe(1);
      expect(await s.claimOutbox(["omni"], T0, 10, LEASE)).toEqual([]); // "2" is still in flight
      await s.finishOutbox(second?.id as number, { state: "done" }, T0);
      // the head of its lane now, due since its replay: a worker asking when to look is told now
      expect((await s.nextOutboxDue(["omni"])) ?? Number.POSITIVE_INFINITY).toBeLessThanOrEqual(T0);
      const [again] = await s.claimOutbox(["omni"], T0, 10, LEASE);
      expect(again?.id).toBe(first?.id);
      await s.finishOutbox(again?.id as number, { state: "done" }, T0);
      // the lane is empty: a new entry is its head at once
      await s.ingest([textItem("3", "A")], undefined, T0 + 1);
      expect(await s.claimOutbox(["omni"], T0 + 1, 10, LEASE)).toHaveLength(1);
      await expectConsistent(s);
    });

    it("lanes survive a restart: the lane's entries in order, a replayed dead letter after those queued before its replay", async () => {
      const h = await ctx.open();
      const a = h.store;
      await a.ingest([textItem("1", "A"), textItem("2", "A"), textItem("3", "A")], undefined, T0);
      const [first] = await a.claimOutbox(["omni"], T0, 10, LEASE);
      await a.finishOutbox(first?.id as number, { state: "dead", error: "x" }, T0);
      expect(await a.replayDead("all", T0)).toBe(1);
      const b = await h.reopen();
      await b.ingest([textItem("4", "A")], undefined, T0 + 1);
      const order = await deliverInOrder(b, T0 + 1);
      expect(order.filter((k) => k !== "1")).toEqual(["2", "3", "4"]);
      // where it joins among entries queued after its replay is the engine's (SQLite: at the next claim)
      expect(order.indexOf("1")).toBeGreaterThan(order.indexOf("3"));
      expect(order).toHaveLength(4);
      await expectConsistent(b);
    });
  });

  describe("outbox: finishing", () => {
    it("follow-up entries are written with the result, linked to the message given", async () => {
      const s = await ctx.fresh();
      await s.ingest([textItem("1")], undefined, T0);
      const [e] = await s.claimOutbox(["omni"], T0, 10, LEASE);
      await s.finishOutbox(e?.id as number, { state: "done" }, T0 + 1, {
        tenant: TENANT,
        messageSeq: e?.messageSeq ?? null,
        entries: [
          { kind: "media", conversationId: null, payload: { x: 1 } },
          { kind: "kf_send", conversationId: CONV, payload: { y: 2 }, notBefore: T0 + 50 },
        ],
      });
      const [m] = await s.claimOutbox(["media"], T0 + 1, 10, LEASE);
      expect(m).toMatchObject({ kind: "media", payload: { x: 1 }, messageSeq: e?.messageSeq, tenant: TENANT, attempts: 1 });
      expect(await s.claimOutbox(["kf_send"], T0 + 49, 10, LEASE)).toEqual([]);
      expect(await s.claimOutbox(["kf_send"], T0 + 50, 10, LEASE)).toMatchObject([{ payload: { y: 2 }, conversationId: CONV }]);
      await expectConsistent(s);
    });

    it("a finish with a claim another claim has replaced changes nothing, while the new claim works on", async () => {
      const s = await ctx.fresh();
      const [x, y] = await queue(s, [kfEntry("x"), kfEntry("y")]);
      const [stale] = await s.claimOutbox(["kf_send"], T0, 10, 1000);
      const [fresh] = await s.claimOutbox(["kf_send"], T0 + 1001, 10, 1000); // the first worker stalled past its lease
      expect(fresh).toMatchObject({ id: x, attempts: 2 });
      expect(await s.renewLease(stale as OutboxEntry, T0 + 9000, T0 + 1002)).toBe(false);
      for (const outcome of [{ state: "done" }, { state: "dead", error: "late" }, { state: "refused", error: "late", errcode: 1 }, { state: "pending", nextAttemptAt: T0, error: "late" }] as const) {
        await s.finishOutbox(stale as OutboxEntry, outcome, T0 + 1002, { tenant: TENANT, messageSeq: null, entries: [kfEntry("follow-up")] });
      }
      expect(await s.getOutbox(x as number)).toMatchObject({ state: "inflight", attempts: 2, lastError: null });
      expect(await s.claimOutbox(["kf_send"], T0 + 1003, 10, 1000)).toEqual([]); // y still waits behind x
      expect(await s.renewLease(fresh as OutboxEntry, T0 + 9000, T0 + 1003)).toBe(true);
      await s.finishOutbox(fresh as OutboxEntry, { state: "done" }, T0 + 1004);
      expect(await s.claimOutbox(["kf_send"], T0 + 1005, 10, 1000)).toMatchObject([{ id: y }]);
      expect((await allOutbox(s)).map(kfText).sort()).toEqual(["x", "y"]); // no follow-up of the stale finishes
      await expectConsistent(s);
    });

    it("a finish that comes after the entry's lease ran out (and it went back to pending) changes nothing", async () => {
      const s = await ctx.fresh();
      const [x, y, z] = await queue(s, [kfEntry("x"), kfEntry("y"), kfEntry("z")]);
      const [first] = await s.claimOutbox(["kf_send"], T0, 10, 1000);
      expect(first?.id).toBe(x);
      // the lease runs out: the next claim takes x again
      const [again] = await s.claimOutbox(["kf_send"], T0 + 2000, 10, 1000);
      expect(again).toMatchObject({ id: x, attempts: 2 });
      await s.finishOutbox(x as number, { state: "done" }, T0 + 2001);
      // the first attempt, late: whatever it says, with follow-ups or not
      await s.finishOutbox(x as number, { state: "done" }, T0 + 2002);
      await s.finishOutbox(x as number, { state: "pending", nextAttemptAt: T0, error: "late" }, T0 + 2002, { tenant: TENANT, messageSeq: null, entries: [kfEntry("follow-up")] });
      await s.finishOutbox(x as number, { state: "dead", error: "late" }, T0 + 2002);
      await s.finishOutbox(x as number, { state: "refused", error: "late", errcode: 1 }, T0 + 2002);
      expect(await s.getOutbox(x as number)).toMatchObject({ state: "done", attempts: 2, lastError: null, errcode: null, updatedAt: T0 + 2001 });
      const [second] = await s.claimOutbox(["kf_send"], T0 + 2003, 10, 1000);
      expect(second?.id).toBe(y);
      await s.finishOutbox(y as number, { state: "done" }, T0 + 2004);
      // the lane was advanced once per entry: z comes next
      const [third] = await s.claimOutbox(["kf_send"], T0 + 2005, 10, 1000);
      expect(third?.id).toBe(z);
      await s.finishOutbox(z as number, { state: "done" }, T0 + 2006);
      expect(await s.claimOutbox(["kf_send"], T0 + 2007, 10, 1000)).toEqual([]);
      expect(await s.outboxCounts()).toMatchObject({ done: 3, pending: 0, inflight: 0 });
      expect((await allOutbox(s)).map(kfText)).toEqual(["z", "y", "x"]); // no follow-up of the late finish
      await expectConsistent(s);
    });

    it("the refused state ends the entry (the lane moves on), keeps the errcode, is counted, listed and pruned like done", async () => {
      const s = await ctx.fresh();
      const [a] = await queue(s, [kfEntry("a")]);
      const [b] = await queue(s, [kfEntry("b")]);
      const [first] = await s.claimOutbox(["kf_send"], T0, 10, LEASE);
      expect(first?.id).toBe(a);
      expect(await s.claimOutbox(["kf_send"], T0, 10, LEASE)).toEqual([]); // the lane waits
      await s.finishOutbox(a as number, { state: "refused", error: "95018 session state", errcode: 95018 }, T0 + 1);
      const [second] = await s.claimOutbox(["kf_send"], T0 + 2, 10, LEASE);
      expect(second?.id).toBe(b);
      const [refused] = await s.listOutbox(["refused"], { limit: 10 });
      expect(refused).toMatchObject({ id: a, state: "refused", errcode: 95018, lastError: "95018 session state", updatedAt: T0 + 1 });
      expect((await s.getOutbox(a as number))?.errcode).toBe(95018);
      expect((await s.outboxCounts()).refused).toBe(1);
      await expectConsistent(s);
      const pruned = await s.pruneBatch(cutoffsAt(T0 + 10), 100);
      expect(pruned.outbox).toBe(1); // the refused one; the in-flight one stays
      expect(await s.getOutbox(a as number)).toBeUndefined();
      expect(await s.getOutbox(b as number)).toBeDefined();
      await expectConsistent(s);
    });

    it("refuseDelivered marks a done entry refused after the fact, and only a done one", async () => {
      const s = await ctx.fresh();
      const [a, b, c] = await queue(s, [kfEntry("a"), kfEntry("b"), kfEntry("c")]);
      const [first] = await s.claimOutbox(["kf_send"], T0, 10, LEASE);
      expect(await s.refuseDelivered(a as number, 0, "msg_send_fail", T0)).toBe(false); // in flight
      expect(await s.refuseDelivered(b as number, 0, "msg_send_fail", T0)).toBe(false); // pending
      await s.finishOutbox(first?.id as number, { state: "done" }, T0 + 1);
      expect(await s.refuseDelivered(a as number, 0, "msg_send_fail fail_type 6", T0 + 2)).toBe(true);
      expect(await s.getOutbox(a as number)).toMatchObject({ state: "refused", errcode: 0, lastError: "msg_send_fail fail_type 6", updatedAt: T0 + 2 });
      expect(await s.refuseDelivered(a as number, 1, "again", T0 + 3)).toBe(false); // refused already
      expect(await s.getOutbox(a as number)).toMatchObject({ errcode: 0, lastError: "msg_send_fail fail_type 6" });
      expect(await s.refuseDelivered((c as number) + 1000, 0, "x", T0 + 3)).toBe(false);
      // the lane is not touched: b is its head, c behind it
      expect(await s.claimOutbox(["kf_send"], T0 + 4, 10, LEASE)).toMatchObject([{ id: b }]);
      expect(await s.outboxCounts()).toEqual({ pending: 1, inflight: 1, done: 0, dead: 0, refused: 1 });
      await expectConsistent(s);
    });
  });

  describe("outbox: listings", () => {
    it("entries in any set of states, newest first, paged by id", async () => {
      const s = await ctx.fresh();
      await ingestMixed(s, 120, 3);
      await s.acceptOutbound({ tenant: "wwOTHER", keys: [], entries: [kfEntry("o1"), kfEntry("o2", "kf:other"), kfEntry("o3")], now: T0 });
      const now = T0 + 1000 * 3_600_000;
      const states = new Map<number, OutboxState>((await allOutbox(s)).map((e) => [e.id, "pending"]));
      expect(states.size).toBe(123);
      const claimed = await s.claimOutbox(["omni"], now, 1000, LEASE);
      for (const [i, e] of claimed.entries()) {
        const outcome = i % 3 === 0 ? ({ state: "done" } as const) : i % 3 === 1 ? ({ state: "dead", error: "x" } as const) : ({ state: "pending", nextAttemptAt: now, error: "x" } as const);
        await s.finishOutbox(e.id, outcome, now);
        states.set(e.id, outcome.state);
      }
      for (const e of await s.claimOutbox(["omni"], now, 3, LEASE)) states.set(e.id, "inflight");
      const [refusable] = [...states].find(([, st]) => st === "done") ?? [];
      await s.refuseDelivered(refusable as number, 0, "x", now);
      states.set(refusable as number, "refused");
      const rows = await allOutbox(s);
      expect(rows.map((r) => [r.id, r.state])).toEqual([...states].sort((a, b) => b[0] - a[0]));
      const sets: OutboxState[][] = [["pending"], ["inflight"], ["done"], ["dead"], ["refused"], ["pending", "inflight", "dead"], ["done", "dead"], ["dead", "done", "dead"], ALL_STATES, []];
      for (const set of sets) {
        for (const before of [undefined, rows[10]?.id, rows[60]?.id]) {
          for (const tenant of [undefined, TENANT, "wwOTHER", "wwNONE"]) {
            const expected = rows.filter((r) => set.includes(r.state) && (before === undefined || r.id < before) && (tenant === undefined || r.tenant === tenant)).slice(0, 9);
            const got = await s.listOutbox(set, { limit: 9, ...(before === undefined ? {} : { before }), ...(tenant === undefined ? {} : { tenant }) });
            expect(got, `${set} before ${before} of ${tenant}`).toEqual(expected);
          }
        }
      }
      expect((await s.listOutbox(["pending"], { limit: 10, tenant: "wwOTHER" })).map(kfText)).toEqual(["o3", "o2", "o1"]);
      await expectConsistent(s);
    });
  });
}
