/**
 * What is SQLite's own in retention, purges and settings: the bounded walk of a pruning pass,
 * purges in transactions of 1,000, settings read by another connection on the file and the
 * store's own marks. The engine-neutral behaviours are in the conformance suite
 * (test/conformance/).
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { DAY, T0 } from "./conformance/items.js";
import { deliverAll, withDead } from "./conformance/oracle.js";
import { closeAll, dbPath, everyChannel, nothing, openStore, textItem } from "./store-helpers.js";

afterEach(closeAll);

describe("pruneBatch", () => {
  it("gets past many kept messages: a call stops after a bounded walk, the next one resumes there", async () => {
    const s = await openStore();
    const kept = 1100;
    await withDead(s, kept, T0, "dead");
    await s.ingest(
      Array.from({ length: 5 }, (_, i) => textItem(`done${i}`, `later-${i}`)),
      undefined,
      T0,
    );
    await deliverAll(s, T0);
    const cut = { ...nothing(), messagesBefore: everyChannel(T0 + DAY) };
    const first = await s.pruneBatch(cut, 10);
    const second = await s.pruneBatch(cut, 10);
    expect(first.messages + second.messages).toBe(5);
    expect(second.messages).toBe(5); // the first walked 1,000 dead letters' messages and stopped
    expect((await s.listMessages({}, { limit: 2000 })).length).toBe(kept);
    expect((await s.pruneBatch(cut, 10)).messages).toBe(0);
  });
});

describe("purgeDead", () => {
  it("purges more than one transaction's worth", async () => {
    const s = await openStore();
    await withDead(s, 1500, T0, "d");
    expect(await s.purgeDead()).toBe(1500);
    expect(await s.listOutbox(["dead"], { limit: 10 })).toEqual([]);
    expect((await s.outboxCounts()).dead).toBe(0);
  });
});

describe("getOrCreateSetting", () => {
  it("another connection on the file reads the value created; the store's own marks are not settings", async () => {
    const path = dbPath();
    const a = await openStore(path);
    expect(await a.getOrCreateSetting("media.secret", () => "generated-1")).toBe("generated-1");
    const b = await openStore(path);
    const never = vi.fn(() => "generated-2");
    expect(await b.getOrCreateSetting("media.secret", never)).toBe("generated-1");
    expect(never).not.toHaveBeenCalled();
    await expect(b.getOrCreateSetting("store.foldedSeq", () => "0")).rejects.toThrow(/store\./);
  });
});
