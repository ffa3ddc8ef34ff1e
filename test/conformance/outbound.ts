/**
 * Conformance: outbound answers (acceptOutbound: idempotency keys, the rule in the same
 * transaction, writes of one turn), shared state, settings, tokens, media rows, and the store's
 * own life (ping, migrate, close, restart).
 */
import { describe, expect, it, vi } from "vitest";
import type { IngestResult, OutboundAccept, Store } from "../../src/store/types.js";
import type { SuiteContext } from "./context.js";
import { nothing, T0, TENANT, textItem } from "./items.js";
import { allOutbox, expectConsistent, LEASE, messageKeys } from "./oracle.js";
import { kfEntry, kfText } from "./outbox.js";

const T = T0;
const CONV = "kf:ww1:wk1:wm1";

/** An accept of one answer with these keys (and an optional rule). */
const accept = (keys: OutboundAccept["keys"], text: string, now: number, rule?: OutboundAccept["rule"], tenant = TENANT): OutboundAccept => ({
  tenant,
  keys,
  entries: [kfEntry(text)],
  now,
  ...(rule === undefined ? {} : { rule }),
});

/** A rule that refuses with this answer. */
const refusing = (errcode: number, errmsg: string): OutboundAccept["rule"] => ({ key: "rules", conversationId: CONV, decide: () => ({ refuse: { errcode, errmsg } }) });

/** The texts of the queued answers, oldest first. */
async function queuedTexts(s: Store): Promise<string[]> {
  return (await allOutbox(s)).map(kfText).reverse();
}

/** Register the tests of outbound answers, shared state, settings, tokens and media rows. */
export function outboundTests(ctx: SuiteContext): void {
  describe("the store itself", () => {
    it("names its engine, answers ping, and migrating again changes nothing", async () => {
      const s = await ctx.fresh();
      expect(s.engine).toBe(ctx.engine);
      expect(await s.ping()).toBe(true);
      await s.acceptOutbound(accept([], "a", T));
      await s.migrate();
      expect(await queuedTexts(s)).toEqual(["a"]);
      await expectConsistent(s);
    });

    it("a restart keeps everything; close() commits the writes asked for before it", async () => {
      const h = await ctx.open();
      const s = h.store;
      await s.ingest([textItem("m1", "A")], undefined, T);
      const [e] = await s.claimOutbox(["omni"], T, 10, LEASE);
      // writes asked for and not awaited (two of them a corp's first), then a restart
      const writes: Promise<unknown>[] = [
        s.ingest([textItem("m2", "A", { tenant: "wwSECOND" })], { tenant: "wwSECOND", openKfId: "wk1", cursor: "C1" }, T),
        s.acceptOutbound(accept([{ key: "m:1", expiresAt: T + 1000 }], "x", T, undefined, "wwTHIRD")),
        s.updateState(TENANT, "k", null, T, () => ({ value: { a: 1 }, expiresAt: null })),
        s.finishOutbox(e?.id as number, { state: "done" }, T),
      ];
      for (const w of writes) w.catch(() => undefined); // awaited below, after the restart
      const again = await h.reopen();
      const [ingested, accepted, state] = await Promise.all(writes);
      expect((ingested as IngestResult[])[0]?.stored).toBe(true);
      expect(accepted).toMatchObject({ outcome: "queued" });
      expect(state).toEqual({ a: 1 });
      expect(await again.ping()).toBe(true);
      expect(await messageKeys(again)).toEqual(["m1", "m2"]);
      expect(await again.getOutbox(e?.id as number)).toMatchObject({ state: "done" });
      expect((await again.listOutbox(["pending"], { limit: 10, tenant: "wwTHIRD" })).map(kfText)).toEqual(["x"]);
      expect(await again.acceptOutbound(accept([{ key: "m:1", expiresAt: T + 1000 }], "x", T + 1, undefined, "wwTHIRD"))).toEqual({ outcome: "duplicate" });
      expect((await again.getKfCursor("wwSECOND", "wk1"))?.cursor).toBe("C1");
      expect(await again.getState(TENANT, "k", T)).toEqual({ a: 1 });
      expect((await again.ingest([textItem("m1", "A")], undefined, T + 1))[0]?.stored).toBe(false);
      await expectConsistent(again);
    });
  });

  describe("acceptOutbound", () => {
    it("queues once per live key; an expired key is taken over", async () => {
      const s = await ctx.fresh();
      const keys = [{ key: "m:1", expiresAt: T + 1000 }];
      const first = await s.acceptOutbound(accept(keys, "a", T));
      expect(first).toEqual({ outcome: "queued", ids: [expect.any(Number)] });
      const id = (first as { ids: number[] }).ids[0] as number;
      expect(await s.getOutbox(id)).toMatchObject({ id, tenant: TENANT, kind: "kf_send", conversationId: CONV, messageSeq: null, state: "pending", nextAttemptAt: T, createdAt: T });
      expect(await s.acceptOutbound(accept(keys, "a", T + 999))).toEqual({ outcome: "duplicate" });
      expect(await s.acceptOutbound(accept(keys, "a", T + 1000))).toEqual({ outcome: "duplicate" }); // live up to its time
      // another key of the same request is enough to recognise it
      expect(await s.acceptOutbound(accept([{ key: "x", expiresAt: T + 5000 }, ...keys], "a", T + 10))).toEqual({ outcome: "duplicate" });
      expect(await s.acceptOutbound(accept([{ key: "x", expiresAt: T + 5000 }], "x", T + 11))).toMatchObject({ outcome: "queued" }); // a duplicate remembered none of its keys
      expect(await s.acceptOutbound(accept(keys, "a", T + 1001))).toMatchObject({ outcome: "queued" });
      // a key is per tenant
      expect(await s.acceptOutbound(accept([{ key: "m:1", expiresAt: T + 9999 }], "a", T + 1002, undefined, "other"))).toMatchObject({ outcome: "queued" });
      expect((await s.listOutbox(["pending"], { limit: 10 })).length).toBe(4);
      // several entries: each in its lane, in order
      const two = await s.acceptOutbound({ tenant: TENANT, keys: [{ key: "two", expiresAt: T + 1000 }], entries: [kfEntry("p1"), kfEntry("p2")], now: T + 2000 });
      expect(two.outcome === "queued" && two.ids.length === 2 && (two.ids[0] as number) < (two.ids[1] as number)).toBe(true);
      expect(await queuedTexts(s)).toEqual(["a", "x", "a", "a", "p1", "p2"]);
      await expectConsistent(s);
    });

    it("a refusing rule writes nothing (no entry, no key, no state); an allowing one writes its state with the entry", async () => {
      const s = await ctx.fresh();
      let seen: unknown = "unset";
      const refused = await s.acceptOutbound(accept([{ key: "k", expiresAt: T + 60_000 }], "a", T, refusing(95001, "budget")));
      expect(refused).toEqual({ outcome: "refused", errcode: 95001, errmsg: "budget" });
      expect(await allOutbox(s)).toEqual([]);
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
      // the rule sees the value written, and leaving it (undefined) keeps it
      const decide = vi.fn((_current: unknown) => undefined);
      expect(await s.acceptOutbound(accept([], "b", T + 10, { key: "rules", conversationId: CONV, decide }))).toMatchObject({ outcome: "queued" });
      expect(decide).toHaveBeenCalledWith({ used: 3 });
      expect(await s.getState(TENANT, "rules", T + 10)).toEqual({ used: 3 });
    });

    it("keys marked `always` are remembered from a duplicate and from a refusal, whose replay is refused alike", async () => {
      const s = await ctx.fresh();
      const live = T + 60_000;
      await s.acceptOutbound(accept([{ key: "m:1", expiresAt: live }], "a", T));
      // a retry of it with a new body hash: duplicate, and the hash is remembered
      expect(await s.acceptOutbound(accept([{ key: "m:1", expiresAt: live }, { key: "h:2", expiresAt: live, always: true }, { key: "n:3", expiresAt: live }], "a", T + 1))).toEqual({
        outcome: "duplicate",
      });
      expect(await s.acceptOutbound(accept([{ key: "h:2", expiresAt: live }], "a", T + 2))).toEqual({ outcome: "duplicate" });
      expect(await s.acceptOutbound(accept([{ key: "n:3", expiresAt: live }], "n", T + 3))).toMatchObject({ outcome: "queued" }); // not `always`
      // a refusal: its `always` key answers the same refusal, without asking the rule
      expect(await s.acceptOutbound(accept([{ key: "r:1", expiresAt: live, always: true }, { key: "r:2", expiresAt: live }], "r", T + 4, refusing(95018, "session closed")))).toEqual({
        outcome: "refused",
        errcode: 95018,
        errmsg: "session closed",
      });
      const decide = vi.fn(() => undefined);
      expect(await s.acceptOutbound(accept([{ key: "r:1", expiresAt: live }], "r", T + 5, { key: "rules", conversationId: CONV, decide }))).toEqual({
        outcome: "refused",
        errcode: 95018,
        errmsg: "session closed",
      });
      expect(decide).not.toHaveBeenCalled();
      expect(await s.acceptOutbound(accept([{ key: "r:2", expiresAt: live }], "r", T + 6))).toMatchObject({ outcome: "queued" }); // not `always`
      expect(await queuedTexts(s)).toEqual(["a", "n", "r"]);
      // past its time, a remembered refusal is forgotten too
      expect(await s.acceptOutbound(accept([{ key: "r:1", expiresAt: live + 10 }], "r", live + 1))).toMatchObject({ outcome: "queued" });
    });

    it("writes asked for in one turn: a failing one fails alone", async () => {
      const s = await ctx.fresh();
      const ok = s.acceptOutbound(accept([{ key: "a", expiresAt: T + 1000 }], "a", T));
      const bad = s.acceptOutbound(
        accept([{ key: "b", expiresAt: T + 1000 }], "b", T, {
          key: "r",
          conversationId: CONV,
          decide: () => {
            throw new Error("a rule that breaks");
          },
        }),
      );
      const again = s.acceptOutbound(accept([{ key: "a", expiresAt: T + 1000 }], "a", T));
      const state = s.updateState(TENANT, "s", null, T, () => ({ value: 1, expiresAt: null }));
      const finish = s.finishOutbox(12345, { state: "done" }, T); // an unknown entry: nothing to do
      await expect(bad).rejects.toThrow("a rule that breaks");
      expect([(await ok).outcome, (await again).outcome].sort()).toEqual(["duplicate", "queued"]);
      expect(await state).toBe(1);
      await finish;
      expect(await queuedTexts(s)).toEqual(["a"]);
      expect(await s.getState(TENANT, "s", T)).toBe(1);
      expect(await s.getState(TENANT, "r", T)).toBeUndefined();
      // nothing of the failed one was kept: its key is free
      expect(await s.acceptOutbound(accept([{ key: "b", expiresAt: T + 1000 }], "b", T + 1))).toMatchObject({ outcome: "queued" });
      await expectConsistent(s);
    });
  });

  describe("shared state", () => {
    it("updateState reads, writes, keeps and deletes; getState hides expired values", async () => {
      const s = await ctx.fresh();
      expect(await s.getState(TENANT, "count", T)).toBeUndefined();
      const seen: unknown[] = [];
      const add = (n: number, expiresAt: number | null = null) => (cur: unknown) => {
        seen.push(cur);
        return { value: ((cur as number | undefined) ?? 0) + n, expiresAt };
      };
      expect(await s.updateState(TENANT, "count", CONV, T, add(1))).toBe(1);
      expect(await s.updateState(TENANT, "count", CONV, T, add(2, T + 100))).toBe(3);
      expect(await s.getState(TENANT, "count", T + 100)).toBe(3);
      expect(await s.getState(TENANT, "count", T + 101)).toBeUndefined();
      expect(await s.getState("wwOTHER", "count", T)).toBeUndefined();
      // an expired value is seen as missing
      expect(await s.updateState(TENANT, "count", CONV, T + 101, add(5))).toBe(5);
      expect(seen).toEqual([undefined, 1, undefined]);
      expect(await s.updateState(TENANT, "count", CONV, T, () => undefined)).toBe(5);
      expect(await s.updateState(TENANT, "count", CONV, T, () => null)).toBeUndefined();
      expect(await s.getState(TENANT, "count", T)).toBeUndefined();
      expect(await s.updateState(TENANT, "json", null, T, () => ({ value: { a: [1, "x", null], b: { c: true } }, expiresAt: null }))).toEqual({ a: [1, "x", null], b: { c: true } });
      expect(await s.getState(TENANT, "json", T)).toEqual({ a: [1, "x", null], b: { c: true } });
    });

    it("retention removes expired state and keys; erasure removes a conversation's state and answers", async () => {
      const s = await ctx.fresh();
      await s.updateState(TENANT, "old", CONV, T, () => ({ value: 1, expiresAt: T + 10 }));
      await s.updateState(TENANT, "kept", null, T, () => ({ value: 2, expiresAt: null }));
      await s.updateState(TENANT, "conv", CONV, T, () => ({ value: 3, expiresAt: T + 1_000_000 }));
      await s.acceptOutbound(accept([{ key: "k", expiresAt: T + 10 }], "a", T));
      expect((await s.pruneBatch({ ...nothing(), stateBefore: T + 10 }, 100)).state).toBe(0); // strictly before
      const r = await s.pruneBatch({ ...nothing(), stateBefore: T + 11 }, 100);
      expect(r.state).toBe(2); // the expired state row and the expired key
      expect(await s.getState(TENANT, "kept", T + 100)).toBe(2);
      expect(await s.getState(TENANT, "conv", T + 100)).toBe(3);
      // the key is gone: the same request is taken again
      expect((await s.acceptOutbound(accept([{ key: "k", expiresAt: T + 50 }], "a", T + 5))).outcome).toBe("queued");
      const erased = await s.eraseConversation(CONV, TENANT);
      expect(erased.state).toBe(1);
      expect(erased.outbox).toBe(2);
      expect(await allOutbox(s)).toEqual([]);
      expect(await s.getState(TENANT, "conv", T)).toBeUndefined();
      expect(await s.getState(TENANT, "kept", T)).toBe(2);
      await expectConsistent(s);
    });
  });

  describe("settings, tokens and media rows", () => {
    it("getOrCreateSetting creates once and returns the same value afterwards, across a restart", async () => {
      const h = await ctx.open();
      const create = vi.fn(() => "generated-1");
      expect(await h.store.getOrCreateSetting("media.secret", create)).toBe("generated-1");
      expect(await h.store.getOrCreateSetting("media.secret", () => "generated-2")).toBe("generated-1");
      expect(create).toHaveBeenCalledTimes(1);
      const again = await h.reopen();
      const never = vi.fn(() => "generated-4");
      expect(await again.getOrCreateSetting("media.secret", never)).toBe("generated-1");
      expect(never).not.toHaveBeenCalled();
      expect(await again.getOrCreateSetting("other", () => "x")).toBe("x");
    });

    it("tokens round-trip, are replaced and deleted, per tenant and key", async () => {
      const s = await ctx.fresh();
      await s.putToken({ tenant: TENANT, key: "k", token: "t1", expiresAt: 10 });
      await s.putToken({ tenant: TENANT, key: "k", token: "t2", expiresAt: T + 7_200_000 });
      await s.putToken({ tenant: "wwOTHER", key: "k", token: "o", expiresAt: 30 });
      expect(await s.getToken(TENANT, "k")).toEqual({ tenant: TENANT, key: "k", token: "t2", expiresAt: T + 7_200_000 });
      expect(await s.getToken(TENANT, "nope")).toBeUndefined();
      await s.deleteToken(TENANT, "k");
      expect(await s.getToken(TENANT, "k")).toBeUndefined();
      expect(await s.getToken("wwOTHER", "k")).toMatchObject({ token: "o" });
      await s.deleteToken(TENANT, "k"); // already gone
    });

    it("media rows round-trip, per tenant", async () => {
      const s = await ctx.fresh();
      const row = { tenant: TENANT, id: "m1-0", messageSeq: 1, contentType: "image/png", fileName: "a.png", size: 3, createdAt: 1 };
      await s.putMedia(row);
      await s.putMedia({ ...row, id: "loose", messageSeq: null, size: 20 * 1024 * 1024 });
      expect(await s.getMedia(TENANT, "m1-0")).toEqual(row);
      expect(await s.getMedia(TENANT, "loose")).toEqual({ ...row, id: "loose", messageSeq: null, size: 20 * 1024 * 1024 });
      expect(await s.getMedia("wwOTHER", "m1-0")).toBeUndefined();
    });
  });
}
