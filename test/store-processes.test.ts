/**
 * Two SqliteStore instances on one file: the serving process (owner, which keeps the outbox lanes
 * in memory) and a command such as `replay`, `purge --dead` or `erase --conversation` opened by
 * another process. Counts, conversation summaries and lanes stay right on both sides. Also: the
 * incremental counts and summaries against a full recount over random sequences of operations.
 */
import fc from "fast-check";
import { afterEach, describe, expect, it, vi } from "vitest";
import type { SqliteStore } from "../src/store/sqlite/index.js";
import type { OutboxEntry } from "../src/store/types.js";
import { closeAll, cutoffsAt, dbPath, expectMatchesOracle, openStore, textItem } from "./store-helpers.js";

afterEach(async () => {
  vi.useRealTimers();
  await closeAll();
});

const LEASE = 60_000;

/** Deliver (claim, finish done) until nothing can be claimed; returns the message keys in delivery order. */
async function drain(s: SqliteStore, now: number): Promise<string[]> {
  const order: string[] = [];
  for (;;) {
    const claimed = await s.claimOutbox(["omni", "media"], now, 100, LEASE);
    if (claimed.length === 0) return order;
    const lanes = new Set(claimed.map((e) => `${e.kind}/${e.conversationId}`));
    expect(lanes.size, "never two entries of one conversation in flight").toBe(claimed.length);
    for (const e of claimed) {
      order.push((await s.getMessage(e.messageSeq as number))?.key ?? `#${e.id}`);
      await s.finishOutbox(e.id, { state: "done" }, now);
    }
  }
}

describe("another process erases, purges and replays while the gateway serves", () => {
  it("erasing a conversation whose lane has pending entries: the owner's next entries of it are still delivered, in order", async () => {
    const path = dbPath();
    const owner = await openStore(path, true);
    const tool = await openStore(path);
    await owner.ingest([textItem("a1", "A"), textItem("a2", "A"), textItem("a3", "A"), textItem("b1", "B")]);
    const now = Date.now();
    const inflight = await owner.claimOutbox(["omni"], now, 10, LEASE);
    expect(inflight).toHaveLength(2);

    expect(await tool.eraseConversation("A")).toMatchObject({ messages: 3, outbox: 3 });
    // the owner's worker finishes what it had in flight: the erased entry is gone, nothing breaks
    for (const e of inflight) await owner.finishOutbox(e.id, { state: "done" }, now);

    await owner.ingest([textItem("a4", "A"), textItem("a5", "A")]);
    expect(await drain(owner, Date.now() + 1)).toEqual(["a4", "a5"]);
    expect(await owner.outboxCounts()).toEqual({ pending: 0, inflight: 0, done: 3, dead: 0, refused: 0 });
    await expectMatchesOracle(owner);
    await expectMatchesOracle(tool);
  });

  it("an erase while the owner keeps ingesting into the same conversation leaves no entry stranded", async () => {
    const path = dbPath();
    const owner = await openStore(path, true);
    const tool = await openStore(path);
    await owner.ingest([textItem("a1", "A"), textItem("a2", "A")]);
    const [head] = await owner.claimOutbox(["omni"], Date.now(), 10, LEASE);
    await owner.finishOutbox(head?.id as number, { state: "pending", nextAttemptAt: Date.now(), error: "omni down" }, Date.now());
    await tool.eraseConversation("A");
    await owner.ingest([textItem("a3", "A")]);
    await tool.eraseConversation("A");
    await owner.ingest([textItem("a4", "A")]);
    expect(await drain(owner, Date.now() + 1)).toEqual(["a4"]);
    expect((await owner.outboxCounts()).pending).toBe(0);
  });

  it("counts and conversation summaries read right from both sides through replay, purge, erase and prune", async () => {
    const path = dbPath();
    const owner = await openStore(path, true);
    const tool = await openStore(path);
    const both = async () => {
      await expectMatchesOracle(owner);
      await expectMatchesOracle(tool);
    };
    await owner.ingest([textItem("a1", "A"), textItem("a2", "A"), textItem("b1", "B"), textItem("c1", "C", { channel: "kf" })]);
    await both();
    const now = Date.now();
    const claimed = await owner.claimOutbox(["omni"], now, 10, LEASE);
    for (const e of claimed) await owner.finishOutbox(e.id, { state: "dead", error: "x" }, now);
    expect((await tool.outboxCounts()).dead).toBe(3);
    await both();
    expect(await tool.replayDead("all", now)).toBe(3);
    await both();
    await owner.ingest([textItem("b2", "B")]);
    await both();
    expect(await drain(owner, Date.now() + 1000)).toHaveLength(5);
    await both();
    await owner.ingest([textItem("d1", "D")]);
    for (const e of await owner.claimOutbox(["omni"], Date.now() + 1000, 10, LEASE)) await owner.finishOutbox(e.id, { state: "dead", error: "x" }, now + 2);
    expect(await tool.purgeDead()).toBe(1);
    await both();
    expect(await tool.eraseConversation("B")).toMatchObject({ messages: 2 });
    await both();
    expect((await owner.pruneBatch(cutoffsAt(Date.now() + 1), 100)).messages).toBe(4);
    await both();
    expect(await owner.listConversations({ limit: 10 })).toEqual([]);
    expect(await tool.outboxCounts()).toEqual({ pending: 0, inflight: 0, done: 0, dead: 0, refused: 0 });
  });

  it("a store opened after another process changed everything reads the same", async () => {
    const path = dbPath();
    const owner = await openStore(path, true);
    await owner.ingest([textItem("a1", "A"), textItem("b1", "B")]);
    const tool = await openStore(path);
    await tool.eraseConversation("A");
    await owner.close();
    const again = await openStore(path, true);
    await expectMatchesOracle(again);
    await again.ingest([textItem("a2", "A")]);
    expect(await drain(again, Date.now() + 1)).toEqual(["b1", "a2"]);
  });
});

type Op =
  | { op: "ingest"; conv: number; channel: "app" | "kf" | "archive"; n: number; dup: boolean }
  | { op: "claim" }
  | { op: "finish"; pick: number; outcome: "done" | "dead" | "retry" }
  | { op: "replay" }
  | { op: "purge" }
  | { op: "erase"; conv: number; fromTool: boolean }
  | { op: "prune"; limit: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant("ingest" as const), conv: fc.nat(3), channel: fc.constantFrom("app" as const, "kf" as const, "archive" as const), n: fc.integer({ min: 1, max: 3 }), dup: fc.boolean() }),
  fc.record({ op: fc.constant("claim" as const) }),
  fc.record({ op: fc.constant("finish" as const), pick: fc.nat(20), outcome: fc.constantFrom("done" as const, "dead" as const, "retry" as const) }),
  fc.record({ op: fc.constant("replay" as const) }),
  fc.record({ op: fc.constant("purge" as const) }),
  fc.record({ op: fc.constant("erase" as const), conv: fc.nat(3), fromTool: fc.boolean() }),
  fc.record({ op: fc.constant("prune" as const), limit: fc.integer({ min: 1, max: 4 }) }),
);

describe("incremental counts and summaries equal a full recount", () => {
  it("over random sequences of ingest, claims, outcomes, replays, purges, erasures and prunes from two processes", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 40 }), async (ops) => {
        vi.useFakeTimers({ toFake: ["Date"] });
        let clock = Date.UTC(2026, 0, 10);
        vi.setSystemTime(clock);
        const path = dbPath();
        const owner = await openStore(path, true);
        const tool = await openStore(path);
        let id = 0;
        const inflight: OutboxEntry[] = [];
        try {
          for (const o of ops) {
            clock += 10;
            vi.setSystemTime(clock);
            switch (o.op) {
              case "ingest": {
                const items = Array.from({ length: o.n }, () => textItem(`k${id++}`, `${o.channel}-conv-${o.conv}`, { channel: o.channel, time: clock - (id % 7) * 1000 }));
                if (o.dup && id > o.n) items.push(textItem(`k${id - o.n - 1}`, `${o.channel}-conv-${o.conv}`, { channel: o.channel }));
                await owner.ingest(items);
                break;
              }
              case "claim":
                inflight.push(...(await owner.claimOutbox(["omni", "media"], clock, 5, LEASE)));
                break;
              case "finish": {
                const e = inflight.splice(o.pick % Math.max(1, inflight.length), 1)[0];
                if (e === undefined) break;
                const outcome =
                  o.outcome === "done" ? { state: "done" as const } : o.outcome === "dead" ? { state: "dead" as const, error: "x" } : { state: "pending" as const, nextAttemptAt: clock, error: "x" };
                await owner.finishOutbox(e.id, outcome, clock);
                break;
              }
              case "replay":
                await tool.replayDead("all", clock);
                break;
              case "purge":
                await tool.purgeDead();
                break;
              case "erase":
                await (o.fromTool ? tool : owner).eraseConversation(`${["app", "kf", "archive"][o.conv % 3]}-conv-${o.conv}`);
                break;
              case "prune":
                await owner.pruneBatch(cutoffsAt(clock - 50), o.limit);
                break;
            }
            await expectMatchesOracle(owner);
            await expectMatchesOracle(tool);
          }
          // no lane is stuck: once the leases run out, every live entry gets delivered
          for (const e of inflight.splice(0)) await owner.finishOutbox(e.id, { state: "done" }, clock);
          await tool.replayDead("all", clock);
          await drain(owner, clock + 10 * LEASE);
          expect(await owner.outboxCounts()).toMatchObject({ pending: 0, inflight: 0, dead: 0 });
          await expectMatchesOracle(owner);
        } finally {
          await owner.close();
          await tool.close();
          vi.useRealTimers();
        }
      }),
      { numRuns: 60 },
    );
  });
});
