/**
 * The store's outbound parts on a real SQLite file: idempotency keys with expiry, the rule check in
 * the same transaction, shared state, the `refused` state (counted, listed, pruned) and erasure.
 */
import { afterEach, describe, expect, it } from "vitest";
import type { OutboxInsert } from "../src/store/types.js";
import { closeAll, cutoffsAt, expectMatchesOracle, nothing, openStore, TENANT } from "./store-helpers.js";

afterEach(closeAll);

const T = 1_790_000_000_000;
const CONV = "kf:ww1:wk1:wm1";
const entry = (text: string): OutboxInsert => ({ kind: "kf_send", conversationId: CONV, payload: { op: "message", body: { ToUserId: CONV, MsgType: "text", Content: text } } });

describe("acceptOutbound", () => {
  it("queues once per live key; an expired key is taken over", async () => {
    const s = await openStore(undefined, true);
    const keys = [{ key: "m:1", expiresAt: T + 1000 }];
    expect(await s.acceptOutbound({ tenant: TENANT, keys, entries: [entry("a")], now: T })).toMatchObject({ outcome: "queued", ids: [1] });
    expect(await s.acceptOutbound({ tenant: TENANT, keys, entries: [entry("a")], now: T + 999 })).toEqual({ outcome: "duplicate" });
    // another key of the same request is enough to recognise it
    expect(await s.acceptOutbound({ tenant: TENANT, keys: [{ key: "x", expiresAt: T + 5000 }, ...keys], entries: [entry("a")], now: T + 10 })).toEqual({ outcome: "duplicate" });
    expect(await s.acceptOutbound({ tenant: TENANT, keys, entries: [entry("a")], now: T + 1001 })).toMatchObject({ outcome: "queued" });
    // a key is per tenant
    expect(await s.acceptOutbound({ tenant: "other", keys: [{ key: "m:1", expiresAt: T + 9999 }], entries: [entry("a")], now: T + 1002 })).toMatchObject({ outcome: "queued" });
    expect((await s.listOutbox(["pending"], { limit: 10 })).length).toBe(3);
    await expectMatchesOracle(s);
  });

  it("a refusing rule writes nothing (no entry, no key, no state); an allowing one writes its state with the entry", async () => {
    const s = await openStore(undefined, true);
    let seen: unknown = "unset";
    const refused = await s.acceptOutbound({
      tenant: TENANT,
      keys: [{ key: "k", expiresAt: T + 60_000 }],
      entries: [entry("a")],
      now: T,
      rule: { key: "rules", conversationId: CONV, decide: () => ({ refuse: { errcode: 95001, errmsg: "budget" } }) },
    });
    expect(refused).toEqual({ outcome: "refused", errcode: 95001, errmsg: "budget" });
    expect(await s.listOutbox(["pending"], { limit: 10 })).toEqual([]);
    const payload = { op: "message", allowedParts: 0 };
    const queued = await s.acceptOutbound({
      tenant: TENANT,
      keys: [{ key: "k", expiresAt: T + 60_000 }],
      entries: [{ kind: "kf_send", conversationId: CONV, payload }],
      now: T,
      rule: {
        key: "rules",
        conversationId: CONV,
        decide: (current) => {
          seen = current;
          payload.allowedParts = 2; // the rule completes the payload before it is written
          return { value: { used: 3 }, expiresAt: T + 1000 };
        },
      },
    });
    expect(queued.outcome).toBe("queued");
    expect(seen).toBeUndefined();
    expect(await s.getState(TENANT, "rules", T)).toEqual({ used: 3 });
    expect(await s.getState(TENANT, "rules", T + 1001)).toBeUndefined(); // expired
    expect((await s.listOutbox(["pending"], { limit: 10 }))[0]?.payload).toEqual({ op: "message", allowedParts: 2 });
  });
});

describe("group commit", () => {
  it("writes asked for in one turn share a transaction; a failing one fails alone", async () => {
    const s = await openStore(undefined, true);
    const ok = s.acceptOutbound({ tenant: TENANT, keys: [{ key: "a", expiresAt: T + 1000 }], entries: [entry("a")], now: T });
    const bad = s.acceptOutbound({
      tenant: TENANT,
      keys: [{ key: "b", expiresAt: T + 1000 }],
      entries: [entry("b")],
      now: T,
      rule: {
        key: "r",
        conversationId: CONV,
        decide: () => {
          throw new Error("a rule that breaks");
        },
      },
    });
    const again = s.acceptOutbound({ tenant: TENANT, keys: [{ key: "a", expiresAt: T + 1000 }], entries: [entry("a")], now: T });
    expect(await ok).toMatchObject({ outcome: "queued" });
    await expect(bad).rejects.toThrow("a rule that breaks");
    expect(await again).toEqual({ outcome: "duplicate" }); // it saw the first one's key
    expect((await s.listOutbox(["pending"], { limit: 10 })).map((e) => (e.payload as { body: { Content: string } }).body.Content)).toEqual(["a"]);
    await expectMatchesOracle(s);
  });
});

describe("finishing", () => {
  it("a finish that comes after the entry's lease ran out (and it went back to pending) changes nothing", async () => {
    const s = await openStore(undefined, true);
    await s.acceptOutbound({ tenant: TENANT, keys: [], entries: [entry("x"), entry("y"), entry("z")], now: T });
    const [x] = await s.claimOutbox(["kf_send"], T, 10, 1000);
    expect(x?.id).toBe(1);
    // the lease runs out: the next claim takes x again
    const [again] = await s.claimOutbox(["kf_send"], T + 2000, 10, 1000);
    expect(again?.id).toBe(1);
    await s.finishOutbox(1, { state: "done" }, T + 2001);
    await s.finishOutbox(1, { state: "done" }, T + 2002); // the first attempt, late
    const [y] = await s.claimOutbox(["kf_send"], T + 2003, 10, 1000);
    expect(y?.id).toBe(2);
    await s.finishOutbox(2, { state: "done" }, T + 2004);
    // the lane was advanced once per entry: z comes next
    const [z] = await s.claimOutbox(["kf_send"], T + 2005, 10, 1000);
    expect(z?.id).toBe(3);
    await s.finishOutbox(3, { state: "done" }, T + 2006);
    expect(await s.outboxCounts()).toMatchObject({ done: 3, pending: 0, inflight: 0 });
    await expectMatchesOracle(s);
  });

  it("close() commits the writes asked for in its turn", async () => {
    const s = await openStore(undefined, false);
    const w = s.acceptOutbound({ tenant: TENANT, keys: [], entries: [entry("x")], now: T });
    await s.close();
    expect(await w).toMatchObject({ outcome: "queued" });
  });
});

describe("shared state", () => {
  it("updateState reads, writes, keeps and deletes atomically", async () => {
    const s = await openStore(undefined, true);
    const add = (n: number) => (cur: unknown) => ({ value: ((cur as number | undefined) ?? 0) + n, expiresAt: null });
    await Promise.all(Array.from({ length: 50 }, () => s.updateState(TENANT, "count", CONV, T, add(1))));
    expect(await s.getState(TENANT, "count", T)).toBe(50);
    expect(await s.updateState(TENANT, "count", CONV, T, () => undefined)).toBe(50);
    expect(await s.updateState(TENANT, "count", CONV, T, () => null)).toBeUndefined();
    expect(await s.getState(TENANT, "count", T)).toBeUndefined();
  });

  it("retention removes expired state and keys; erasure removes a conversation's state", async () => {
    const s = await openStore(undefined, true);
    await s.updateState(TENANT, "old", CONV, T, () => ({ value: 1, expiresAt: T + 10 }));
    await s.updateState(TENANT, "kept", null, T, () => ({ value: 2, expiresAt: null }));
    await s.updateState(TENANT, "conv", CONV, T, () => ({ value: 3, expiresAt: T + 1_000_000 }));
    await s.acceptOutbound({ tenant: TENANT, keys: [{ key: "k", expiresAt: T + 10 }], entries: [entry("a")], now: T });
    const r = await s.pruneBatch({ ...nothing(), stateBefore: T + 11 }, 100);
    expect(r.state).toBe(2); // the expired state row and the expired key
    expect(await s.getState(TENANT, "kept", T + 100)).toBe(2);
    // the key is gone: the same request is taken again
    expect((await s.acceptOutbound({ tenant: TENANT, keys: [{ key: "k", expiresAt: T + 50 }], entries: [entry("a")], now: T + 20 })).outcome).toBe("queued");
    const erased = await s.eraseConversation(CONV, TENANT);
    expect(erased.state).toBe(1);
    expect(erased.outbox).toBe(2);
    expect(await s.getState(TENANT, "conv", T)).toBeUndefined();
    expect(await s.getState(TENANT, "kept", T)).toBe(2);
  });
});

describe("the refused state", () => {
  it("ends the entry (the lane moves on), keeps the errcode, is counted, listed and pruned like done", async () => {
    const s = await openStore(undefined, true);
    await s.acceptOutbound({ tenant: TENANT, keys: [], entries: [entry("a")], now: T });
    await s.acceptOutbound({ tenant: TENANT, keys: [], entries: [entry("b")], now: T });
    const [first] = await s.claimOutbox(["kf_send"], T, 10, 60_000);
    expect(first?.id).toBe(1);
    expect(await s.claimOutbox(["kf_send"], T, 10, 60_000)).toEqual([]); // the lane waits
    await s.finishOutbox(1, { state: "refused", error: "95018 session state", errcode: 95018 }, T + 1);
    const [second] = await s.claimOutbox(["kf_send"], T + 2, 10, 60_000);
    expect(second?.id).toBe(2);
    const [refused] = await s.listOutbox(["refused"], { limit: 10 });
    expect(refused).toMatchObject({ id: 1, state: "refused", errcode: 95018, lastError: "95018 session state" });
    expect((await s.getOutbox(1))?.errcode).toBe(95018);
    expect((await s.outboxCounts()).refused).toBe(1);
    await expectMatchesOracle(s);
    const pruned = await s.pruneBatch(cutoffsAt(T + 10), 100);
    expect(pruned.outbox).toBe(1); // the refused one; the in-flight one stays
    expect(await s.getOutbox(1)).toBeUndefined();
    expect(await s.getOutbox(2)).toBeDefined();
    await expectMatchesOracle(s);
  });
});
