/**
 * Conformance: the admin listings (messages by time window, channel, tenant and conversation;
 * conversations), paged by key, against the store's own full listing.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { Channel } from "../../src/model.js";
import type { MessageFilter, Store } from "../../src/store/types.js";
import type { SuiteContext } from "./context.js";
import { everyChannel, HOUR, ingestMixed, nothing, T0, textItem } from "./items.js";
import { allMessages, expectConsistent, LEASE, pagedConversations, pagedSeqs, summarize } from "./oracle.js";

/**
 * `runs` random queries of listMessages (a time window, a channel, a tenant, a conversation, a
 * page) give what filtering the full listing gives.
 */
export async function expectWindowsMatch(s: Store, runs: number): Promise<void> {
  const all = await allMessages(s);
  const maxSeq = all[0]?.seq as number;
  const conversations = [...new Set(all.map((m) => m.conversationId))].sort();
  await fc.assert(
    fc.asyncProperty(
      fc.record({
        since: fc.option(fc.integer({ min: T0 - 70 * HOUR, max: T0 + 460 * HOUR }), { nil: undefined }),
        span: fc.option(fc.integer({ min: 1, max: 200 * HOUR }), { nil: undefined }),
        channel: fc.option(fc.constantFrom<Channel>("app", "kf", "bot", "archive", "omni"), { nil: undefined }),
        tenant: fc.option(fc.constantFrom(...new Set(all.map((m) => m.tenant)), "wwNONE"), { nil: undefined }),
        conversationId: fc.option(fc.constantFrom(...conversations, "none"), { nil: undefined, freq: 3 }),
        before: fc.option(fc.integer({ min: 1, max: maxSeq + 5 }), { nil: undefined }),
        limit: fc.integer({ min: 1, max: 40 }),
      }),
      async (q) => {
        const until = q.span === undefined ? undefined : (q.since ?? T0) + q.span;
        const filter: MessageFilter = {
          ...(q.since !== undefined ? { since: q.since } : {}),
          ...(until !== undefined ? { until } : {}),
          ...(q.channel ? { channel: q.channel } : {}),
          ...(q.tenant ? { tenant: q.tenant } : {}),
          ...(q.conversationId ? { conversationId: q.conversationId } : {}),
        };
        const page = q.before === undefined ? { limit: q.limit } : { limit: q.limit, before: q.before };
        const expected = all
          .filter(
            (r) =>
              (q.since === undefined || r.time >= q.since) &&
              (until === undefined || r.time < until) &&
              (!q.channel || r.channel === q.channel) &&
              (!q.tenant || r.tenant === q.tenant) &&
              (!q.conversationId || r.conversationId === q.conversationId) &&
              (q.before === undefined || r.seq < q.before),
          )
          .slice(0, q.limit);
        expect(await s.listMessages(filter, page)).toEqual(expected);
      },
    ),
    { numRuns: runs },
  );
}

/**
 * A conversation of `n` messages (and three short ones beside it): paged through, then through
 * retention around kept messages (3/7 of it delivered, 5 of those dead), then through erasure.
 * `stored` runs once everything is stored, `erased` after the erasure (an engine's own checks).
 */
export async function longConversation(s: Store, n: number, hooks: { stored?: () => unknown; erased?: () => unknown } = {}): Promise<void> {
  const truth = async (conv: string) => (await allMessages(s)).filter((m) => m.conversationId === conv).map((m) => m.seq);
  for (let i = 0; i < n; i++) {
    await s.ingest([textItem(`L${i}`, "long"), ...(i % 10 === 0 ? [textItem(`S${i}`, `short-${i % 3}`)] : [])], undefined, T0 + i);
    if (i % 45 === 0) await s.listConversations({ limit: 1 }); // an admin reading meanwhile
  }
  await hooks.stored?.();
  expect(await truth("long")).toHaveLength(n);
  expect(await pagedSeqs(s, { conversationId: "long" }, 37)).toEqual(await truth("long"));
  // delivered in order: 3/7 of it, of which 5 dead after the first third; the rest pending
  const delivered = Math.floor((n * 3) / 7);
  const dead = Math.floor(delivered / 3);
  const now = T0 + n + 1000;
  for (let i = 0; i < delivered; i++) {
    const claimed = (await s.claimOutbox(["omni"], now, 100, LEASE)).filter((e) => e.conversationId === "long");
    expect(claimed).toHaveLength(1);
    await s.finishOutbox(claimed[0]?.id as number, i >= dead && i < dead + 5 ? { state: "dead", error: "x" } : { state: "done" }, now);
  }
  const r = await s.pruneBatch({ ...nothing(), messagesBefore: everyChannel(now) }, 1000);
  expect(r.messages).toBe(delivered - 5);
  expect(await truth("long")).toHaveLength(n - delivered + 5);
  expect(await pagedSeqs(s, { conversationId: "long" }, 37)).toEqual(await truth("long"));
  expect(await pagedSeqs(s, { conversationId: "long" }, 500)).toEqual(await truth("long"));
  await expectConsistent(s);
  await s.eraseConversation("long");
  expect(await pagedSeqs(s, { conversationId: "long" }, 37)).toEqual([]);
  expect((await s.listConversations({ limit: 10 })).map((c) => c.conversationId).sort()).toEqual(["short-0", "short-1", "short-2"]);
  await expectConsistent(s);
  await hooks.erased?.();
}

/** Register the tests of the admin listings. */
export function listingTests(ctx: SuiteContext): void {
  describe("admin listings agree with the full listing", () => {
    /** A mixed store (see ingestMixed), and a few messages of another tenant among them. */
    async function mixed(n: number, seed: number): Promise<Store> {
      const s = await ctx.fresh();
      await ingestMixed(s, n, seed, async (i) => {
        if (i % 97 === 0) await s.listConversations({ limit: 1 });
        if (i % 25 === 0) {
          const at = T0 + i * 6 * 60_000 + 1000; // after the mixed one: receipt times keep the seq order
          await s.ingest([textItem(`o${i}`, `other-${i % 2}`, { tenant: "wwOTHER", time: at - 1000 })], undefined, at);
        }
      });
      return s;
    }

    it("messages with a time window, a channel, a tenant, a conversation and paging: the same as filtering every row", async () => {
      const s = await mixed(200, 7);
      const all = await allMessages(s);
      expect(all).toHaveLength(208);
      expect(new Set(all.map((m) => m.key)).size).toBe(208);
      await expectWindowsMatch(s, 120);
    });

    it("messages of a conversation, and conversations paged by their last seq, by tenant and channel", async () => {
      const s = await mixed(200, 11);
      const all = await allMessages(s);
      const summaries = summarize(all);
      for (const { conversationId } of summaries) {
        const expected = all.filter((m) => m.conversationId === conversationId).map((m) => m.seq);
        expect(await pagedSeqs(s, { conversationId }, 7), conversationId).toEqual(expected);
      }
      const filters: { tenant?: string; channel?: Channel }[] = [{}, { channel: "kf" }, { channel: "bot" }, { tenant: "wwOTHER" }, { tenant: "wwOTHER", channel: "kf" }, { tenant: "wwNONE" }];
      for (const f of filters) {
        const expected = summaries.filter((c) => (!f.channel || c.channel === f.channel) && (!f.tenant || c.tenant === f.tenant)).map((c) => c.conversationId);
        expect(await pagedConversations(s, 5, f), JSON.stringify(f)).toEqual(expected);
      }
      expect(await s.listConversations({ limit: 1000 })).toEqual(summaries);
      await expectConsistent(s);
    });

    it("a long conversation: its pages, through retention around kept messages and through erasure", async () => {
      await longConversation(await ctx.fresh(), 140);
    });
  });
}
