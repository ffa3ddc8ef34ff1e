/**
 * Conformance: ingest (the idempotency ledger, skipped items, stored rows, archive pushes,
 * effects on shared state) and KF accounts (cursors saved with their page).
 */
import { describe, expect, it } from "vitest";
import { decodeKfItem } from "../../src/index.js";
import { messageItem } from "../../src/gateway/pipeline.js";
import type { ArchivePushRow, IngestEffect, IngestItem, OutboxEntry } from "../../src/store/types.js";
import { jsonFixture } from "../helpers.js";
import type { SuiteContext } from "./context.js";
import { imageItem, skipItem, T0, TENANT, textItem } from "./items.js";
import { allMessages, allOutbox, entriesOf, expectConsistent, LEASE, messageKeys, pages } from "./oracle.js";

/** Register the tests of ingest and KF accounts. */
export function ingestTests(ctx: SuiteContext): void {
  describe("ingest: the idempotency ledger", () => {
    it("stores a new item once with its outbox, and a repeat changes nothing", async () => {
      const s = await ctx.fresh();
      const [first] = await s.ingest([textItem("1")], undefined, T0);
      expect(first).toEqual({ stored: true, seq: expect.any(Number) });
      const [again] = await s.ingest([textItem("1")], undefined, T0 + 1);
      expect(again).toEqual({ stored: false, seq: first?.seq });
      expect(await allMessages(s)).toHaveLength(1);
      expect(await allOutbox(s)).toHaveLength(1);
      expect((await s.outboxCounts()).pending).toBe(1);
      await expectConsistent(s);
    });

    it("a batch's messages get seqs, and their entries lanes, in the batch's order, whatever their keys' order", async () => {
      const s = await ctx.fresh();
      const keys = ["z9", "a1", "m5", "b2"];
      const results = await s.ingest(
        keys.map((k) => textItem(k, "ordered")),
        undefined,
        T0,
      );
      const seqs = results.map((r) => r.seq as number);
      expect([...seqs].sort((a, b) => a - b)).toEqual(seqs);
      const order: string[] = [];
      for (let n = 0; n < keys.length; n++) {
        const [e] = await s.claimOutbox(["omni"], T0, 10, LEASE);
        order.push(((await s.getMessage(e?.messageSeq as number)) as { key: string }).key);
        await s.finishOutbox(e as OutboxEntry, { state: "done" }, T0);
      }
      expect(order).toEqual(keys);
    });

    it("never merges distinct items, even with identical content and time", async () => {
      const s = await ctx.fresh();
      const r = await s.ingest([textItem("1"), textItem("2"), textItem("1")], undefined, T0);
      expect(r.map((x) => x.stored)).toEqual([true, true, false]);
      expect(r[2]?.seq).toBe(r[0]?.seq);
      expect(r[1]?.seq).not.toBe(r[0]?.seq);
      expect(await messageKeys(s)).toEqual(["1", "2"]);
    });

    it("keys are per tenant and per channel", async () => {
      const s = await ctx.fresh();
      const a = textItem("1");
      const r = await s.ingest([a, { ...a, tenant: "wwOTHER" }, { ...a, channel: "kf" }], undefined, T0);
      expect(r.map((x) => x.stored)).toEqual([true, true, true]);
      expect(new Set(r.map((x) => x.seq)).size).toBe(3);
    });

    it("records a skipped item (no message) so it is never delivered later", async () => {
      const s = await ctx.fresh();
      const [r] = await s.ingest([skipItem("old")], undefined, T0);
      expect(r).toEqual({ stored: true });
      const [again] = await s.ingest([messageItem(TENANT, { ...decodeKfItem(jsonFixture("kf", "msg-text.json")), id: "old" }, { kind: "none" })], undefined, T0 + 1);
      expect(again?.stored).toBe(false);
      expect(again?.seq).toBeUndefined();
      expect(await allMessages(s)).toHaveLength(0);
      expect(await allOutbox(s)).toHaveLength(0);
      expect((await s.outboxCounts()).pending).toBe(0);
    });

    it("stores a message and its entries as given, stamped with `now`", async () => {
      const s = await ctx.fresh();
      const item = imageItem("i1", "A");
      const message = item.message as NonNullable<IngestItem["message"]>;
      const [r] = await s.ingest([item], undefined, T0);
      const seq = r?.seq as number;
      expect(await s.getMessage(seq)).toEqual({
        seq,
        tenant: TENANT,
        channel: message.channel,
        key: "i1",
        conversationId: "A",
        time: message.time,
        receivedAt: T0,
        contentType: message.content.type,
        message,
      });
      const entries = await entriesOf(s, seq);
      expect(entries).toEqual(
        (item.outbox ?? []).map((e) => ({
          id: expect.any(Number),
          tenant: TENANT,
          kind: e.kind,
          conversationId: e.conversationId,
          messageSeq: seq,
          payload: e.payload,
          state: "pending",
          attempts: 0,
          nextAttemptAt: T0,
          lastError: null,
          errcode: null,
          createdAt: T0,
          updatedAt: T0,
        })),
      );
      expect(entries.map((e) => e.kind)).toEqual(["media", "omni"]); // in the item's order
      for (const e of entries) expect(await s.getOutbox(e.id)).toEqual(e);
      expect(await s.getMessage(seq + 1000)).toBeUndefined();
      expect(await s.getOutbox(Math.max(...entries.map((e) => e.id)) + 1000)).toBeUndefined();
    });

    it("an entry is not due before its notBefore", async () => {
      const s = await ctx.fresh();
      await s.ingest([{ ...textItem("n1", "N"), outbox: [{ kind: "omni", conversationId: "N", payload: { x: 1 }, notBefore: T0 + 5000 }] }], undefined, T0);
      expect((await allOutbox(s))[0]).toMatchObject({ nextAttemptAt: T0 + 5000, payload: { x: 1 } });
      expect(await s.nextOutboxDue(["omni"])).toBe(T0 + 5000);
      expect(await s.claimOutbox(["omni"], T0 + 4999, 10, LEASE)).toEqual([]);
      expect(await s.claimOutbox(["omni"], T0 + 5000, 10, LEASE)).toHaveLength(1);
    });

    it("keeps a session-archive push with its item, once, listed newest first and paged by id", async () => {
      const s = await ctx.fresh();
      const push = (id: string, pushType: number, extra: Partial<ArchivePushRow> = {}): IngestItem => ({
        tenant: TENANT,
        channel: "archive",
        key: `push:${id}`,
        skipReason: `push_type_${pushType}`,
        archive: { tenant: TENANT, messageId: id, pushType, receivedAt: T0, body: { id, n: [1, 2] }, ...extra },
      });
      await s.ingest([push("p1", 19), push("p2", 101, { msgid: "r2", seq: 7 }), push("p3", 20)], undefined, T0);
      await s.ingest([push("p1", 19), push("p4", 21)], undefined, T0 + 1);
      const other: IngestItem = { tenant: "wwOTHER", channel: "archive", key: "push:o1", archive: { tenant: "wwOTHER", messageId: "o1", pushType: 19, receivedAt: T0, body: {} } };
      await s.ingest([other], undefined, T0 + 2);
      expect((await s.listArchive({ limit: 100, tenant: "wwOTHER" })).map((a) => a.messageId)).toEqual(["o1"]);
      expect((await s.listArchive({ limit: 100 })).map((a) => a.messageId)).toEqual(["o1", "p4", "p3", "p2", "p1"]);
      const all = await s.listArchive({ limit: 100, tenant: TENANT });
      expect(all.map((a) => a.messageId)).toEqual(["p4", "p3", "p2", "p1"]);
      expect(all.every((a, i) => i === 0 || (all[i - 1] as { id: number }).id > a.id)).toBe(true);
      expect(all[2]).toEqual({ id: expect.any(Number), tenant: TENANT, messageId: "p2", pushType: 101, msgid: "r2", seq: 7, receivedAt: T0, body: { id: "p2", n: [1, 2] } });
      expect(all[3]).toEqual({ id: expect.any(Number), tenant: TENANT, messageId: "p1", pushType: 19, receivedAt: T0, body: { id: "p1", n: [1, 2] } });
      expect(await pages((before) => s.listArchive({ limit: 3, tenant: TENANT, ...(before === undefined ? {} : { before }) }), 3, (a) => a.id)).toEqual(all);
    });
  });

  describe("ingest: effects on shared state", () => {
    /** An effect counting the items of a conversation, queueing a kf_send entry for each. */
    const counting = (calls: { n: number }, expiresAt: number | null = null): IngestEffect => ({
      key: "rules",
      conversationId: "E",
      apply: (current) => {
        calls.n++;
        const n = ((current as number | undefined) ?? 0) + 1;
        return { state: { value: n, expiresAt }, entries: [{ kind: "kf_send", conversationId: "E", payload: { n } }] };
      },
    });

    it("apply sees the current value and writes its state and entries with a new item, after the item's own; never for a known key", async () => {
      const s = await ctx.fresh();
      const calls = { n: 0 };
      const r = await s.ingest([{ ...textItem("e1", "E"), effect: counting(calls) }, { ...textItem("e2", "E"), effect: counting(calls) }], undefined, T0);
      expect(calls.n).toBe(2);
      expect(await s.getState(TENANT, "rules", T0)).toBe(2);
      const [again] = await s.ingest([{ ...textItem("e1", "E"), effect: counting(calls) }], undefined, T0 + 1);
      expect(again?.stored).toBe(false);
      expect(calls.n).toBe(2);
      expect(await s.getState(TENANT, "rules", T0)).toBe(2);
      const entries = (await allOutbox(s)).sort((a, b) => a.id - b.id);
      const kf = entries.filter((e) => e.kind === "kf_send");
      expect(kf.map((e) => e.payload)).toEqual([{ n: 1 }, { n: 2 }]);
      const omniOf = (seq: number | undefined) => entries.find((e) => e.kind === "omni" && e.messageSeq === seq) as OutboxEntry;
      expect(omniOf(r[0]?.seq).id).toBeLessThan((kf[0] as OutboxEntry).id);
      // the effect's entries follow each other in their lane
      const [first] = await s.claimOutbox(["kf_send"], T0, 10, LEASE);
      expect(first?.payload).toEqual({ n: 1 });
      expect(await s.claimOutbox(["kf_send"], T0, 10, LEASE)).toEqual([]);
      await expectConsistent(s);
    });

    it("an expired value is seen as missing", async () => {
      const s = await ctx.fresh();
      const calls = { n: 0 };
      await s.ingest([{ ...textItem("e1", "E"), effect: counting(calls, T0 + 10) }], undefined, T0);
      await s.ingest([{ ...textItem("e2", "E"), effect: counting(calls, T0 + 100) }], undefined, T0 + 20);
      expect(await s.getState(TENANT, "rules", T0 + 20)).toBe(1);
    });
  });

  describe("KF accounts", () => {
    it("saves a KF cursor in the same transaction as the page", async () => {
      const s = await ctx.fresh();
      await s.touchKfAccount(TENANT, "wk1", 1000);
      await s.ingest([textItem("k1")], { tenant: TENANT, openKfId: "wk1", cursor: "C1" }, T0);
      expect(await s.getKfCursor(TENANT, "wk1")).toMatchObject({ tenant: TENANT, openKfId: "wk1", cursor: "C1", firstSeenAt: 1000 });
      // a failing transaction keeps neither the messages nor the cursor (nor a state write)
      const bad: IngestItem = {
        ...textItem("k2"),
        effect: {
          key: "rules",
          conversationId: "c1",
          apply: () => {
            throw new Error("an effect that breaks");
          },
        },
      };
      const good: IngestItem = { ...textItem("k3"), effect: { key: "other", conversationId: "c1", apply: () => ({ state: { value: 1, expiresAt: null } }) } };
      await expect(s.ingest([good, bad], { tenant: TENANT, openKfId: "wk1", cursor: "C2" }, T0 + 1)).rejects.toThrow("an effect that breaks");
      // and one the database refuses (a message without a conversation)
      const invalid = { ...textItem("k2"), message: { ...textItem("k2").message, conversationId: null } } as unknown as IngestItem;
      await expect(s.ingest([textItem("k3"), invalid], { tenant: TENANT, openKfId: "wk1", cursor: "C2" }, T0 + 1)).rejects.toThrow();
      expect((await s.getKfCursor(TENANT, "wk1"))?.cursor).toBe("C1");
      expect(await messageKeys(s)).toEqual(["k1"]);
      expect(await s.getState(TENANT, "other", T0 + 1)).toBeUndefined();
      expect(await allOutbox(s)).toHaveLength(1);
      // nothing of it was recorded: the same page goes in whole
      const r = await s.ingest([textItem("k3"), textItem("k2")], { tenant: TENANT, openKfId: "wk1", cursor: "C2" }, T0 + 2);
      expect(r.map((x) => x.stored)).toEqual([true, true]);
      expect((await s.getKfCursor(TENANT, "wk1"))?.cursor).toBe("C2");
      await expectConsistent(s);
    });

    it("touchKfAccount keeps the first time it saw an account; no cursor before the first page", async () => {
      const s = await ctx.fresh();
      expect(await s.getKfCursor(TENANT, "wk1")).toBeUndefined();
      const first = await s.touchKfAccount(TENANT, "wk1", 1000);
      expect(first).toMatchObject({ tenant: TENANT, openKfId: "wk1", firstSeenAt: 1000 });
      expect(first.cursor).toBeUndefined();
      expect((await s.touchKfAccount(TENANT, "wk1", 5000)).firstSeenAt).toBe(1000);
      await s.ingest([], { tenant: TENANT, openKfId: "wk1", cursor: "C1" }, T0);
      expect(await s.touchKfAccount(TENANT, "wk1", 6000)).toMatchObject({ cursor: "C1", firstSeenAt: 1000 });
      expect(await s.getKfCursor("wwOTHER", "wk1")).toBeUndefined();
    });

    it("listKfCursors pages by id, newest account first, with no account twice or missing", async () => {
      const s = await ctx.fresh();
      const names = Array.from({ length: 7 }, (_, i) => `wk${i}`);
      for (const [i, n] of names.entries()) {
        await s.touchKfAccount(TENANT, n, T0 + i);
        if (i % 3 === 0) await s.touchKfAccount("wwOTHER", `other-${i}`, T0 + i);
      }
      await s.ingest([textItem("k1", "A")], { tenant: TENANT, openKfId: "wk2", cursor: "C2" }, T0 + 100);
      const page = (tenant?: string) => (before: number | undefined) => s.listKfCursors({ limit: 3, ...(before === undefined ? {} : { before }), ...(tenant === undefined ? {} : { tenant }) });
      const every = await pages(page(), 3, (c) => c.id);
      for (let i = 1; i < every.length; i++) expect((every[i - 1]?.id as number) > (every[i]?.id as number)).toBe(true);
      expect(every.map((c) => c.openKfId)).toEqual(["other-6", "wk6", "wk5", "wk4", "other-3", "wk3", "wk2", "wk1", "other-0", "wk0"]);
      const seen = await pages(page(TENANT), 3, (c) => c.id);
      expect(seen).toEqual(every.filter((c) => c.tenant === TENANT));
      expect(seen.map((c) => c.openKfId)).toEqual([...names].reverse());
      expect((await pages(page("wwOTHER"), 3, (c) => c.id)).map((c) => c.openKfId)).toEqual(["other-6", "other-3", "other-0"]);
      // a cursor saved by a page does not move the account
      expect((await s.listKfCursors({ limit: 10 })).find((c) => c.openKfId === "wk2")).toMatchObject({ cursor: "C2", firstSeenAt: T0 + 2 });
      const oldest = every[every.length - 1]?.id as number;
      expect(await s.listKfCursors({ limit: 10, before: oldest })).toEqual([]);
      expect(await s.listKfCursors({ limit: 100, before: Number.MAX_SAFE_INTEGER })).toHaveLength(10);
    });

    it("listKfAccounts lists one tenant's accounts, a page's cursor making an account known", async () => {
      const s = await ctx.fresh();
      await s.touchKfAccount(TENANT, "wk1", T0);
      await s.touchKfAccount("wwOTHER", "wk9", T0);
      await s.ingest([], { tenant: TENANT, openKfId: "wk2", cursor: "C" }, T0);
      expect(await s.listKfAccounts(TENANT)).toEqual(["wk1", "wk2"]);
      expect(await s.listKfAccounts("wwOTHER")).toEqual(["wk9"]);
      expect(await s.listKfAccounts("wwNONE")).toEqual([]);
    });
  });
}
