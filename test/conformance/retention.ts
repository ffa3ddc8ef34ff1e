/**
 * Conformance: retention (pruneBatch, each kind of cutoff), erasure of a conversation, and
 * purges of dead letters. Times are the `now` of each write (received, finished).
 */
import { describe, expect, it } from "vitest";
import { mediaId } from "../../src/gateway/media.js";
import type { IngestItem, MediaRow, OutboxEntry } from "../../src/store/types.js";
import type { SuiteContext } from "./context.js";
import { cutoffsAt, DAY, everyChannel, imageItem, nothing, skipItem, T0, TENANT, textItem } from "./items.js";
import { claimOmni, deliverAll, expectConsistent, knownKeys, LEASE, messageKeys, seqOf, withDead } from "./oracle.js";

const NONE = { messages: 0, outbox: 0, ledger: 0, archive: 0, state: 0, audit: 0, media: [] };

const mediaRow = (seq: number | null, id: string, createdAt: number): MediaRow => ({ tenant: TENANT, id, messageSeq: seq, contentType: "image/jpeg", fileName: `${id}.jpg`, size: 3, createdAt });

/** Register the tests of retention, erasure and purges. */
export function retentionTests(ctx: SuiteContext): void {
  describe("pruneBatch", () => {
    it("removes messages received before the cutoff with their finished entries, and keeps newer ones", async () => {
      const s = await ctx.fresh();
      await s.ingest([textItem("old1", "A"), textItem("old2", "A"), textItem("old3", "B")], undefined, T0);
      await deliverAll(s, T0);
      await s.ingest([textItem("new1", "A")], undefined, T0 + 10 * DAY);
      await deliverAll(s, T0 + 10 * DAY);

      const r = await s.pruneBatch({ ...nothing(), messagesBefore: everyChannel(T0 + 5 * DAY) }, 100);
      expect(r).toEqual({ messages: 3, outbox: 3, ledger: 0, archive: 0, state: 0, audit: 0, media: [] });
      expect(await messageKeys(s)).toEqual(["new1"]);
      expect(await s.outboxCounts()).toEqual({ pending: 0, inflight: 0, done: 1, dead: 0, refused: 0 });
      expect(await s.listConversations({ limit: 10 })).toMatchObject([{ conversationId: "A", messages: 1 }]);
      await expectConsistent(s);
      // the keys stay until their own cutoff: a retry of an old item is still recognised
      expect((await s.ingest([textItem("old1", "A")], undefined, T0 + 10 * DAY))[0]?.stored).toBe(false);
      expect(await s.pruneBatch({ ...nothing(), messagesBefore: everyChannel(T0 + 5 * DAY) }, 100)).toEqual(NONE);
    });

    it("keeps messages whose entries are pending, in flight or dead, with those entries", async () => {
      const s = await ctx.fresh();
      const seqs = await Promise.all(["done", "dead", "inflight", "retry"].map((k) => seqOf(s, textItem(k, `conv-${k}`), T0)));
      const claimed = await s.claimOutbox(["omni"], T0, 10, 10 * DAY);
      expect(claimed).toHaveLength(4);
      const entry = (i: number) => claimed.find((e) => e.messageSeq === seqs[i]) as OutboxEntry;
      await s.finishOutbox(entry(0).id, { state: "done" }, T0);
      await s.finishOutbox(entry(1).id, { state: "dead", error: "omni: 400" }, T0);
      await s.finishOutbox(entry(3).id, { state: "pending", nextAttemptAt: T0 + 100 * DAY, error: "omni down" }, T0);

      const r = await s.pruneBatch({ ...nothing(), messagesBefore: everyChannel(T0 + 20 * DAY), outboxBefore: T0 + 20 * DAY }, 100);
      expect(r).toMatchObject({ messages: 1, outbox: 1 });
      expect(await messageKeys(s)).toEqual(["dead", "inflight", "retry"]);
      expect(await s.outboxCounts()).toEqual({ pending: 1, inflight: 1, done: 0, dead: 1, refused: 0 });
      expect((await s.listOutbox(["dead"], { limit: 10 })).map((e) => e.id)).toEqual([entry(1).id]);
      await expectConsistent(s);
    });

    it("a conversation whose newer messages go and an older one stays keeps a right summary", async () => {
      const s = await ctx.fresh();
      const m1 = await seqOf(s, textItem("m1", "A", { time: T0 - 3000 }), T0);
      await seqOf(s, textItem("m2", "A", { time: T0 - 2000 }), T0);
      const m3 = await seqOf(s, textItem("m3", "A", { time: T0 - 1000 }), T0);
      await s.listConversations({ limit: 1 });
      for (const state of ["dead", "done", "done"] as const) {
        const e = (await claimOmni(s, T0)).values().next().value as OutboxEntry;
        await s.finishOutbox(e.id, state === "dead" ? { state, error: "x" } : { state }, T0);
      }
      expect((await s.listConversations({ limit: 10 })).find((c) => c.conversationId === "A")).toMatchObject({ messages: 3, lastSeq: m3, lastTime: T0 - 1000 });
      expect((await s.pruneBatch({ ...nothing(), messagesBefore: everyChannel(T0 + DAY) }, 100)).messages).toBe(2); // m2, m3
      expect((await s.listConversations({ limit: 10 })).find((c) => c.conversationId === "A")).toEqual({
        tenant: TENANT,
        conversationId: "A",
        channel: "app",
        messages: 1,
        lastTime: T0 - 3000,
        lastSeq: m1,
      });
      await expectConsistent(s);
      expect((await s.listMessages({ conversationId: "A" }, { limit: 10 })).map((m) => m.key)).toEqual(["m1"]);
    });

    it("honours each channel's cutoff, for messages and for ledger keys", async () => {
      const s = await ctx.fresh();
      await s.ingest([textItem("app-old", "A"), textItem("rec-old", "R", { channel: "archive" })], undefined, T0);
      await deliverAll(s, T0);
      // app keeps 30 days; the archive a year
      const cut = { ...everyChannel(T0 + 10 * DAY), archive: T0 - 335 * DAY };
      const r = await s.pruneBatch({ ...nothing(), messagesBefore: cut, ledgerBefore: cut }, 100);
      expect(r).toMatchObject({ messages: 1, outbox: 1, ledger: 1 });
      expect(await messageKeys(s)).toEqual(["rec-old"]);
      // the app key is gone (an item with it would be new), the archive key is kept
      const keys = [
        { key: "app-old", channel: "app" as const },
        { key: "rec-old", channel: "archive" as const },
      ];
      expect(await knownKeys(s, keys, T0 + 40 * DAY)).toEqual(["rec-old"]);
    });

    it("removes old ledger keys, skipped items' included, and keeps recent ones", async () => {
      const s = await ctx.fresh();
      await s.ingest([skipItem("old-skip"), textItem("old-msg", "A")], undefined, T0);
      await s.ingest([skipItem("new-skip")], undefined, T0 + 5 * DAY);
      const r = await s.pruneBatch({ ...nothing(), ledgerBefore: everyChannel(T0 + DAY) }, 100);
      expect(r).toMatchObject({ ledger: 2, messages: 0 });
      // the message itself is kept (its own cutoff has not passed)
      expect(await messageKeys(s)).toEqual(["old-msg"]);
      const keys = [
        { key: "old-skip", channel: "kf" as const },
        { key: "old-msg", channel: "app" as const },
        { key: "new-skip", channel: "kf" as const },
      ];
      expect(await knownKeys(s, keys, T0 + 5 * DAY)).toEqual(["new-skip"]);
    });

    it("removes session-archive pushes received before the cutoff", async () => {
      const s = await ctx.fresh();
      const push = (id: string, receivedAt: number): IngestItem => ({
        tenant: TENANT,
        channel: "archive",
        key: `push:${id}`,
        skipReason: "push_type_19",
        archive: { tenant: TENANT, messageId: id, pushType: 19, receivedAt, body: { id } },
      });
      await s.ingest([push("p1", T0), push("p2", T0 + 3 * DAY)], undefined, T0);
      const r = await s.pruneBatch({ ...nothing(), archiveBefore: T0 + DAY }, 100);
      expect(r).toMatchObject({ archive: 1, ledger: 0 });
      expect((await s.listArchive({ limit: 10 })).map((a) => a.messageId)).toEqual(["p2"]);
    });

    it("removes media rows only when created before the cutoff and their message was delivered before it", async () => {
      const s = await ctx.fresh();
      const [delivered, late, waiting] = [await seqOf(s, imageItem("i1", "A"), T0), await seqOf(s, imageItem("i2", "B"), T0), await seqOf(s, imageItem("i3", "C"), T0)];
      await deliverAll(s, T0, ["media"]);
      for (const seq of [delivered, late, waiting]) await s.putMedia(mediaRow(seq, mediaId(seq, 0), T0));
      await s.putMedia(mediaRow(null, "loose", T0));
      await s.putMedia(mediaRow(delivered, "recent", T0 + 3 * DAY));
      const omni = await claimOmni(s, T0);
      await s.finishOutbox(omni.get(delivered)?.id as number, { state: "done" }, T0); // links signed at T0
      await s.finishOutbox(omni.get(late)?.id as number, { state: "done" }, T0 + 2 * DAY); // signed after the cutoff
      // the third message's omni entry is still pending: its links are not signed yet
      await s.finishOutbox(omni.get(waiting)?.id as number, { state: "pending", nextAttemptAt: T0 + DAY, error: "omni down" }, T0);

      const r = await s.pruneBatch({ ...nothing(), mediaBefore: T0 + DAY }, 100);
      expect(r.media.map((m) => m.id).sort()).toEqual([mediaId(delivered, 0), "loose"].sort());
      expect(r.media.find((m) => m.id === "loose")).toEqual(mediaRow(null, "loose", T0));
      expect(r.media.find((m) => m.id === mediaId(delivered, 0))).toEqual(mediaRow(delivered, mediaId(delivered, 0), T0));
      expect(await s.getMedia(TENANT, mediaId(delivered, 0))).toBeUndefined();
      expect(await s.getMedia(TENANT, "loose")).toBeUndefined();
      for (const id of [mediaId(late, 0), mediaId(waiting, 0), "recent"]) expect(await s.getMedia(TENANT, id), id).toBeDefined();
      expect(r).toMatchObject({ messages: 0, outbox: 0 });
    });

    it("removes finished entries without a message", async () => {
      const s = await ctx.fresh();
      const seq = await seqOf(s, textItem("m1", "A"), T0);
      const omni = (await claimOmni(s, T0)).get(seq) as OutboxEntry;
      await s.finishOutbox(omni.id, { state: "done" }, T0, { tenant: TENANT, messageSeq: null, entries: [{ kind: "media", conversationId: null, payload: { x: 1 } }] });
      const [orphan] = await s.claimOutbox(["media"], T0, 10, LEASE);
      expect(orphan?.messageSeq).toBeNull();
      await s.finishOutbox(orphan?.id as number, { state: "done" }, T0);
      expect(await s.pruneBatch({ ...nothing(), outboxBefore: T0 }, 100)).toMatchObject({ outbox: 0 });
      expect(await s.pruneBatch({ ...nothing(), outboxBefore: T0 + 1 }, 100)).toMatchObject({ outbox: 1, messages: 0 });
      expect((await s.listOutbox(["done"], { limit: 10 })).map((e) => e.id)).toEqual([omni.id]);
      await expectConsistent(s);
    });

    it("removes at most `limit` rows of each kind per call; calling again until nothing goes empties the past", async () => {
      const s = await ctx.fresh();
      await s.ingest(
        Array.from({ length: 25 }, (_, i) => textItem(`m${i}`, `conv-${i % 4}`)),
        undefined,
        T0,
      );
      await deliverAll(s, T0);
      await s.ingest([textItem("keep", "conv-0")], undefined, T0 + 10 * DAY);
      const removed: number[] = [];
      for (;;) {
        const r = await s.pruneBatch(cutoffsAt(T0 + DAY), 10);
        expect(r.ledger).toBeLessThanOrEqual(10);
        expect(r.outbox).toBe(r.messages); // a removed message's entry goes with it
        removed.push(r.messages);
        if (r.messages + r.ledger + r.outbox === 0) break;
      }
      expect(removed).toEqual([10, 10, 5, 0]);
      expect(await messageKeys(s)).toEqual(["keep"]);
      await expectConsistent(s);
      const keys = ["keep", ...Array.from({ length: 25 }, (_, i) => `m${i}`)].map((key) => ({ key, channel: "app" as const }));
      expect(await knownKeys(s, keys, T0 + 10 * DAY)).toEqual(["keep"]);
    });

    it("messages held by dead letters stay; removable ones received after them still go, over repeated calls", async () => {
      const s = await ctx.fresh();
      await withDead(s, 30, T0, "dead");
      await s.ingest(
        Array.from({ length: 5 }, (_, i) => textItem(`done${i}`, `later-${i}`)),
        undefined,
        T0 + 1,
      );
      await deliverAll(s, T0 + 1);
      const cut = { ...nothing(), messagesBefore: everyChannel(T0 + DAY) };
      let removed = 0;
      for (let i = 0; i < 5; i++) removed += (await s.pruneBatch(cut, 10)).messages;
      expect(removed).toBe(5);
      expect((await messageKeys(s)).filter((k) => k.startsWith("dead"))).toHaveLength(30);
      expect(await messageKeys(s)).toHaveLength(30);
      expect((await s.pruneBatch(cut, 10)).messages).toBe(0);
      await expectConsistent(s);
    });
  });

  describe("eraseConversation", () => {
    it("removes the conversation's messages, entries in every state and media, and keeps its ledger keys", async () => {
      const s = await ctx.fresh();
      const x1 = await seqOf(s, textItem("x1", "X"), T0);
      const x2 = await seqOf(s, imageItem("x2", "X"), T0);
      await seqOf(s, textItem("x3", "X"), T0);
      // x1 delivered, x2's media fetched and its delivery dead, x3 pending behind it
      await s.finishOutbox((await claimOmni(s, T0)).get(x1)?.id as number, { state: "done" }, T0);
      await deliverAll(s, T0, ["media"]);
      await s.putMedia({ tenant: TENANT, id: mediaId(x2, 0), messageSeq: x2, contentType: "image/jpeg", fileName: "a.jpg", size: 3, createdAt: T0 });
      await s.finishOutbox((await claimOmni(s, T0)).get(x2)?.id as number, { state: "dead", error: "omni: 400" }, T0);
      await seqOf(s, textItem("y1", "Y"), T0);
      expect(await s.outboxCounts()).toEqual({ pending: 2, inflight: 0, done: 2, dead: 1, refused: 0 });

      const r = await s.eraseConversation("X");
      expect(r).toMatchObject({ messages: 3, outbox: 4, ledger: 0, archive: 0 });
      expect(r.media).toEqual([{ tenant: TENANT, id: mediaId(x2, 0), messageSeq: x2, contentType: "image/jpeg", fileName: "a.jpg", size: 3, createdAt: T0 }]);
      expect(await messageKeys(s)).toEqual(["y1"]);
      expect(await s.listMessages({ conversationId: "X" }, { limit: 10 })).toEqual([]);
      expect(await s.getMessage(x1)).toBeUndefined();
      expect(await s.getMedia(TENANT, mediaId(x2, 0))).toBeUndefined();
      expect(await s.outboxCounts()).toEqual({ pending: 1, inflight: 0, done: 0, dead: 0, refused: 0 });
      expect((await s.listConversations({ limit: 10 })).map((c) => c.conversationId)).toEqual(["Y"]);
      await expectConsistent(s);

      // the keys stay: WeCom retrying an erased item stores nothing
      const again = await s.ingest([textItem("x1", "X"), imageItem("x2", "X"), textItem("x3", "X"), textItem("y1", "Y")], undefined, T0 + DAY);
      expect(again.map((a) => a.stored)).toEqual([false, false, false, false]);
      expect(await messageKeys(s)).toEqual(["y1"]);
      expect(await s.outboxCounts()).toEqual({ pending: 1, inflight: 0, done: 0, dead: 0, refused: 0 });
      expect(await s.listConversations({ limit: 10 })).toHaveLength(1);
      // and they go with the others once past the ledger's cutoff
      expect(await s.pruneBatch({ ...nothing(), ledgerBefore: everyChannel(T0 + DAY) }, 100)).toMatchObject({ ledger: 4, messages: 0 });
      expect(await messageKeys(s)).toEqual(["y1"]);
      const keys = ["x1", "x2", "x3", "y1"].map((key) => ({ key, channel: "app" as const }));
      expect(await knownKeys(s, keys, T0 + 10 * DAY)).toEqual([]);
    });

    it("erases only the given tenant's conversation when a tenant is given", async () => {
      const s = await ctx.fresh();
      await s.ingest([textItem("a", "X"), textItem("b", "X", { tenant: "wwOTHER" })], undefined, T0);
      expect(await s.eraseConversation("X", "wwOTHER")).toMatchObject({ messages: 1, outbox: 1 });
      expect((await s.listMessages({ conversationId: "X" }, { limit: 10 })).map((m) => [m.tenant, m.key])).toEqual([[TENANT, "a"]]);
      await expectConsistent(s);
    });

    it("removes the session-archive records of the conversation's archive messages", async () => {
      const s = await ctx.fresh();
      const record = (id: string, conversation: string): IngestItem => ({
        ...textItem(id, conversation, { channel: "archive" }),
        archive: { tenant: TENANT, messageId: `push-${id}`, pushType: 101, msgid: id, receivedAt: T0, body: { content: `secret words of ${id}` } },
      });
      await s.ingest([record("r1", "room-1"), record("r2", "room-2")], undefined, T0);
      expect(await s.eraseConversation("room-1")).toMatchObject({ messages: 1, archive: 1 });
      expect((await s.listArchive({ limit: 10 })).map((a) => a.msgid)).toEqual(["r2"]);
    });

    it("erases nothing for an unknown conversation", async () => {
      const s = await ctx.fresh();
      await s.ingest([textItem("a", "X")], undefined, T0);
      expect(await s.eraseConversation("nope")).toEqual(NONE);
      expect(await messageKeys(s)).toEqual(["a"]);
    });
  });

  describe("purgeDead", () => {
    it("removes dead letters last updated before a time, then all of them; nothing else; their messages then go with retention", async () => {
      const s = await ctx.fresh();
      await withDead(s, 2, T0, "old");
      await withDead(s, 1, T0 + 5 * DAY, "new");
      await s.ingest([textItem("live", "live-conv")], undefined, T0 + 5 * DAY);
      expect(await s.purgeDead(T0)).toBe(0); // strictly before
      expect(await s.purgeDead(T0 + DAY)).toBe(2);
      expect(await s.outboxCounts()).toEqual({ pending: 1, inflight: 0, done: 0, dead: 1, refused: 0 });
      expect(await s.purgeDead()).toBe(1);
      expect(await s.purgeDead()).toBe(0);
      expect(await s.outboxCounts()).toEqual({ pending: 1, inflight: 0, done: 0, dead: 0, refused: 0 });
      expect(await s.listOutbox(["dead"], { limit: 10 })).toEqual([]);
      // their messages are no longer held: retention removes them
      expect((await s.pruneBatch({ ...nothing(), messagesBefore: everyChannel(T0 + 10 * DAY) }, 100)).messages).toBe(3);
      expect(await messageKeys(s)).toEqual(["live"]);
      await expectConsistent(s);
    });
  });
}
