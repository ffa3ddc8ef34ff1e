/**
 * Conformance under concurrency: parallel claims, the same item ingested twice at once, leases
 * that run out, two writers of one KF cursor, the same answer accepted twice at once, and
 * read-modify-writes of shared state. Each test runs with concurrent callers of one store and,
 * where the engine has them, with replicas on one database (see {@link concurrently}).
 */
import { describe, expect } from "vitest";
import type { IngestEffect, IngestItem, IngestResult, OutboxEntry, OutboundAcceptResult, Store } from "../../src/store/types.js";
import { acrossReplicas, concurrently, type SuiteContext } from "./context.js";
import { imageItem, T0, TENANT, textItem } from "./items.js";
import { allMessages, allOutbox, expectConsistent, lane, LEASE } from "./oracle.js";
import { kfEntry, kfText, queue } from "./outbox.js";

/** `n` items, one of each store's calls: the store of call i is `stores[i % stores.length]`. */
function spread<T>(stores: Store[], n: number, call: (s: Store, i: number) => Promise<T>): Promise<T[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => call(stores[i % stores.length] as Store, i)));
}

/** Register the concurrency tests. */
export function concurrencyTests(ctx: SuiteContext): void {
  describe("concurrency", () => {
    concurrently(ctx, "parallel claims never hand out an entry twice nor two entries of one lane, and keep each lane's order", 3, async (stores, h) => {
      const s = h.store;
      // 5 conversations × 4 messages (omni lanes), images (media entries without a lane), and
      // agents' answers in kf_send lanes of the same conversations
      for (let i = 0; i < 4; i++) {
        await s.ingest(
          Array.from({ length: 5 }, (_, c) => (i === 1 && c < 2 ? imageItem(`m${i}-${c}`, `conv-${c}`) : textItem(`m${i}-${c}`, `conv-${c}`))),
          undefined,
          T0,
        );
        await queue(s, [kfEntry(`k${i}-0`, "conv-0"), kfEntry(`k${i}-1`, "conv-1")]);
      }
      const entries = await allOutbox(s);
      expect(entries).toHaveLength(5 * 4 + 2 + 8);
      const expected = new Map<string, number[]>();
      for (const e of [...entries].sort((a, b) => a.id - b.id)) {
        const l = lane(e);
        if (l !== null) expected.set(l, [...(expected.get(l) ?? []), e.id]);
      }
      const kinds = ["omni", "media", "kf_send"] as const;
      const seen = new Set<number>();
      const held = new Map<string, number>();
      const order = new Map<string, number[]>();
      /** Claimed entries, each with the store that claimed it (and finishes it). */
      type Held = { e: OutboxEntry; by: Store };
      let carried: Held[] = [];
      for (let round = 0; ; round++) {
        expect(round, "rounds").toBeLessThan(100);
        const claimed = (await spread(stores, 2 * stores.length, async (w) => (await w.claimOutbox([...kinds], T0, 2, LEASE)).map((e): Held => ({ e, by: w })))).flat();
        for (const { e } of claimed) {
          expect(seen.has(e.id), `entry ${e.id} handed out twice`).toBe(false);
          seen.add(e.id);
          expect(e.state).toBe("inflight");
          const l = lane(e);
          if (l === null) continue;
          expect(held.get(l), `two entries of ${l} in flight`).toBeUndefined();
          held.set(l, e.id);
          order.set(l, [...(order.get(l) ?? []), e.id]);
        }
        if (claimed.length === 0 && carried.length === 0) break;
        // finish what was held since the last round and half of this round's (the others stay in
        // flight through the next round's claims), from every store at once
        const finishing = [...carried, ...claimed.filter((_, i) => i % 2 === 0)];
        carried = claimed.filter((_, i) => i % 2 === 1);
        await Promise.all(finishing.map(({ e, by }) => by.finishOutbox(e.id, { state: "done" }, T0)));
        for (const { e } of finishing) {
          const l = lane(e);
          if (l !== null) held.delete(l);
        }
      }
      expect(seen.size).toBe(entries.length);
      expect(order).toEqual(expected);
      expect(await s.outboxCounts()).toEqual({ pending: 0, inflight: 0, done: entries.length, dead: 0, refused: 0 });
      await expectConsistent(s);
    });

    concurrently(ctx, "claims racing for one entry whose lease ran out: exactly one gets it", 3, async (stores, h) => {
      const s = h.store;
      await queue(s, [kfEntry("x"), kfEntry("y")]);
      const [first] = await s.claimOutbox(["kf_send"], T0, 10, 1000);
      for (let i = 0; i < 3; i++) {
        const at = T0 + (i + 1) * 2000;
        const got = (await spread(stores, 6, (w) => w.claimOutbox(["kf_send"], at, 10, 1000))).flat();
        expect(got.map((e) => [e.id, e.attempts])).toEqual([[first?.id, i + 2]]);
      }
    });

    concurrently(ctx, "an entry whose lease ran out is claimed again; the first claimant's late finish changes nothing", 2, async ([a, b]) => {
      const A = a as Store;
      const B = b as Store;
      const [x, y, z] = await queue(A, [kfEntry("x"), kfEntry("y"), kfEntry("z")]);
      const [first] = await A.claimOutbox(["kf_send"], T0, 10, 1000);
      expect(first?.id).toBe(x);
      expect(await B.claimOutbox(["kf_send"], T0 + 1000, 10, 1000)).toEqual([]); // the lease runs to its end
      const [second] = await B.claimOutbox(["kf_send"], T0 + 1001, 10, 1000);
      expect(second).toMatchObject({ id: x, attempts: 2 });
      await B.finishOutbox(x as number, { state: "done" }, T0 + 1002);
      // the first claimant, late, with a retry and a follow-up, and with a done
      await Promise.all([
        A.finishOutbox(x as number, { state: "pending", nextAttemptAt: T0, error: "late" }, T0 + 1003, { tenant: TENANT, messageSeq: null, entries: [kfEntry("follow-up")] }),
        A.finishOutbox(x as number, { state: "done" }, T0 + 1003),
      ]);
      expect(await B.getOutbox(x as number)).toMatchObject({ state: "done", attempts: 2, lastError: null, updatedAt: T0 + 1002 });
      // the lane was advanced once: y, then z
      const claims = (await spread([A, B], 4, (w) => w.claimOutbox(["kf_send"], T0 + 1004, 10, 1000))).flat();
      expect(claims.map((e) => e.id)).toEqual([y]);
      await A.finishOutbox(y as number, { state: "done" }, T0 + 1005);
      expect((await spread([A, B], 4, (w) => w.claimOutbox(["kf_send"], T0 + 1006, 10, 1000))).flat().map((e) => e.id)).toEqual([z]);
      expect((await allOutbox(A)).map(kfText).sort()).toEqual(["x", "y", "z"]);
      await expectConsistent(A);
    });

    acrossReplicas(ctx, "a late finish from the replica that first claimed an entry, while another one holds it, changes nothing", 2, async ([a, b]) => {
      const A = a as Store;
      const B = b as Store;
      const [x, y] = await queue(A, [kfEntry("x"), kfEntry("y")]);
      const [first] = await A.claimOutbox(["kf_send"], T0, 10, 1000);
      const second = await B.claimOutbox(["kf_send"], T0 + 1001, 10, LEASE);
      expect(second).toMatchObject([{ id: x, attempts: 2 }]);
      expect(await A.renewLease(first as OutboxEntry, T0 + 5000, T0 + 1002)).toBe(false);
      await A.finishOutbox(first as OutboxEntry, { state: "dead", error: "late" }, T0 + 1002);
      expect(await B.getOutbox(x as number)).toMatchObject({ state: "inflight", attempts: 2, lastError: null });
      expect(await A.claimOutbox(["kf_send"], T0 + 1003, 10, LEASE)).toEqual([]); // y waits behind x
      await B.finishOutbox(second[0] as OutboxEntry, { state: "done" }, T0 + 1004);
      expect(await A.claimOutbox(["kf_send"], T0 + 1005, 10, LEASE)).toMatchObject([{ id: y }]);
      await expectConsistent(A);
    });

    concurrently(ctx, "the same item ingested at once: stored once, both calls answered after it is committed", 2, async (stores, h) => {
      for (let i = 0; i < 10; i++) {
        const item = textItem(`dup${i}`, `c${i % 3}`);
        const results = await spread(stores, 2, async (w) => {
          const [r] = await w.ingest([item], undefined, T0 + i);
          return { r, stored: r?.seq === undefined ? undefined : await w.getMessage(r.seq) };
        });
        expect(results.map((x) => x.r?.stored).sort(), item.key).toEqual([false, true]);
        expect(results[0]?.r?.seq).toBe(results[1]?.r?.seq);
        for (const x of results) expect(x.stored?.key, "readable when the call is answered").toBe(item.key);
      }
      const messages = await allMessages(h.store);
      expect(messages.map((m) => m.key).sort()).toEqual(Array.from({ length: 10 }, (_, i) => `dup${i}`).sort());
      expect(await allOutbox(h.store)).toHaveLength(10);
      await expectConsistent(h.store);
    });

    concurrently(ctx, "overlapping batches in opposite orders at once: each item stored once, both calls succeed", 2, async (stores, h) => {
      for (let round = 0; round < 5; round++) {
        const items = Array.from({ length: 6 }, (_, i) => textItem(`r${round}-${i}`, `c${i % 2}`));
        const batches = [items.slice(0, 4), [...items.slice(2)].reverse()];
        const results = await Promise.all(batches.map((batch, i) => (stores[i] as Store).ingest(batch, undefined, T0 + round)));
        const answers = new Map<string, IngestResult[]>();
        batches.forEach((batch, b) => {
          batch.forEach((it, i) => {
            answers.set(it.key, [...(answers.get(it.key) ?? []), results[b]?.[i] as IngestResult]);
          });
        });
        for (const [key, got] of answers) {
          expect(got.filter((a) => a.stored), key).toHaveLength(1);
          expect(new Set(got.map((a) => a.seq)).size, key).toBe(1);
        }
      }
      const keys = (await allMessages(h.store)).map((m) => m.key);
      expect(keys).toHaveLength(30);
      expect(new Set(keys).size).toBe(30);
      await expectConsistent(h.store);
    });

    concurrently(ctx, "two writers of one KF cursor: it ends as one of their values, never a mix, and each page's items are stored once", 2, async ([a, b], h) => {
      for (let round = 0; round < 8; round++) {
        const account = `wk${round}`;
        await h.store.touchKfAccount(TENANT, account, T0);
        const page = (from: number) => Array.from({ length: 3 }, (_, i) => textItem(`${account}-${from + i}`, `kf-${account}`));
        // two pullers: the same first page, or overlapping pages, each with its next_cursor
        const [p1, p2] = round % 2 === 0 ? [page(0), page(0)] : [page(0), page(2)];
        const [r1, r2] = await Promise.all([
          (a as Store).ingest(p1, { tenant: TENANT, openKfId: account, cursor: `${account}-A` }, T0 + 1),
          (b as Store).ingest(p2, { tenant: TENANT, openKfId: account, cursor: `${account}-B` }, T0 + 2),
        ]);
        const cursor = await h.store.getKfCursor(TENANT, account);
        expect([`${account}-A`, `${account}-B`]).toContain(cursor?.cursor);
        expect(cursor).toMatchObject({ firstSeenAt: T0, updatedAt: cursor?.cursor === `${account}-A` ? T0 + 1 : T0 + 2 });
        const stored = [...(r1 ?? []), ...(r2 ?? [])].filter((r) => r.stored).length;
        const distinct = new Set([...p1, ...p2].map((it) => it.key)).size;
        expect(stored).toBe(distinct);
        const keys = (await h.store.listMessages({ conversationId: `kf-${account}` }, { limit: 100 })).map((m) => m.key).sort();
        expect(keys).toEqual([...new Set([...p1, ...p2].map((it) => it.key))].sort());
      }
      expect(await h.store.listKfAccounts(TENANT)).toHaveLength(8);
      await expectConsistent(h.store);
    });

    concurrently(ctx, "the same answer accepted at once queues once", 3, async (stores, h) => {
      for (let i = 0; i < 8; i++) {
        const results = await spread(stores, 3, (w) => w.acceptOutbound({ tenant: TENANT, keys: [{ key: `m:${i}`, expiresAt: T0 + 60_000 }], entries: [kfEntry(`t${i}`)], now: T0 }));
        expect(results.map((r) => r.outcome).sort()).toEqual(["duplicate", "duplicate", "queued"]);
      }
      expect((await allOutbox(h.store)).map(kfText).sort()).toEqual(Array.from({ length: 8 }, (_, i) => `t${i}`).sort());
      await expectConsistent(h.store);
    });

    concurrently(ctx, "a rule's budget holds under concurrent accepts", 3, async (stores, h) => {
      const rule = {
        key: "budget",
        conversationId: "kf:b",
        decide: (current: unknown) => {
          const used = (current as number | undefined) ?? 0;
          return used >= 5 ? { refuse: { errcode: 95001, errmsg: "over budget" } } : { value: used + 1, expiresAt: null };
        },
      };
      const results: OutboundAcceptResult[] = await spread(stores, 9, (w, i) =>
        w.acceptOutbound({ tenant: TENANT, keys: [{ key: `b:${i}`, expiresAt: T0 + 60_000 }], entries: [kfEntry(`b${i}`, "kf:b")], now: T0, rule }),
      );
      expect(results.filter((r) => r.outcome === "queued")).toHaveLength(5);
      expect(results.filter((r) => r.outcome === "refused")).toHaveLength(4);
      expect(await h.store.getState(TENANT, "budget", T0)).toBe(5);
      expect(await allOutbox(h.store)).toHaveLength(5);
    });

    concurrently(ctx, "updateState and ingest effects are atomic read-modify-writes", 3, async (stores, h) => {
      const add = (cur: unknown) => ({ value: ((cur as number | undefined) ?? 0) + 1, expiresAt: null });
      await spread(stores, 50, (w) => w.updateState(TENANT, "count", "c1", T0, add));
      expect(await h.store.getState(TENANT, "count", T0)).toBe(50);
      const effect: IngestEffect = { key: "seen", conversationId: "c1", apply: (cur) => ({ state: add(cur) }) };
      // 20 items, each submitted twice: counted once each
      const items: IngestItem[] = Array.from({ length: 20 }, (_, i) => ({ ...textItem(`e${i}`, "c1"), effect }));
      await spread(stores, 40, (w, i) => w.ingest([items[i % 20] as IngestItem], undefined, T0));
      expect(await h.store.getState(TENANT, "seen", T0)).toBe(20);
    });

    concurrently(ctx, "getOrCreateSetting called at once gives every caller the same value", 3, async (stores) => {
      const values = await spread(stores, 6, (w, i) => w.getOrCreateSetting("media.secret", () => `generated-${i}`));
      expect(new Set(values).size).toBe(1);
      expect(values[0]).toMatch(/^generated-\d$/);
      expect(await (stores[stores.length - 1] as Store).getOrCreateSetting("media.secret", () => "late")).toBe(values[0]);
    });
  });
}
