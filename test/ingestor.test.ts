/**
 * The Ingestor's group commit with several batches in flight (a networked store): batches commit
 * in any order, so a conversation's later items wait until its batch committed; other
 * conversations go on. On a real SQLite store whose commits the test releases one by one.
 */
import { afterEach, describe, expect, it } from "vitest";
import { Ingestor } from "../src/gateway/pipeline.js";
import type { IngestItem, IngestResult, Store } from "../src/store/types.js";
import { closeAll, openStore, textItem } from "./store-helpers.js";

afterEach(closeAll);

/** A store whose ingests wait until the test lets them finish, in any order. */
function gated(store: Store): { store: Store; batches: string[][]; release(n: number): void } {
  const batches: string[][] = [];
  const gates: (() => void)[] = [];
  const wrapped = Object.create(store) as Store;
  wrapped.ingest = async (items: IngestItem[], cursor, now) => {
    batches.push(items.map((i) => i.key));
    await new Promise<void>((r) => gates.push(r));
    return store.ingest(items, cursor, now);
  };
  return { store: wrapped, batches, release: (n) => gates[n]?.() };
}

const tick = () => new Promise((r) => setImmediate(r));

describe("Ingestor with batches in flight", () => {
  it("holds a conversation's later items until its batch commits; other conversations go on", async () => {
    const g = gated(await openStore());
    const ing = new Ingestor(g.store, 256, Date.now, 4);
    const done: string[] = [];
    const submit = (key: string, conv: string) => ing.submit(textItem(key, conv)).then((r: IngestResult) => done.push(`${key}:${r.stored}`));
    const a1 = submit("a1", "A");
    await tick();
    expect(g.batches).toEqual([["a1"]]);
    const rest = [submit("a2", "A"), submit("b1", "B"), submit("a3", "A")];
    await tick();
    // b1 starts at once; a2 and a3 wait for a1's batch
    expect(g.batches).toEqual([["a1"], ["b1"]]);
    g.release(1);
    await rest[1];
    expect(g.batches).toHaveLength(2);
    g.release(0);
    await a1;
    await tick();
    expect(g.batches).toEqual([["a1"], ["b1"], ["a2", "a3"]]);
    g.release(2);
    await Promise.all(rest);
    expect(done).toEqual(["b1:true", "a1:true", "a2:true", "a3:true"]);
    await ing.drain();
  });

  it("with one batch in flight (SQLite), everything waits for the batch committing", async () => {
    const g = gated(await openStore());
    const ing = new Ingestor(g.store, 256, Date.now, 1);
    const first = ing.submit(textItem("x1", "X"));
    await tick();
    const second = ing.submit(textItem("y1", "Y"));
    await tick();
    expect(g.batches).toEqual([["x1"]]);
    g.release(0);
    await first;
    await tick();
    expect(g.batches).toEqual([["x1"], ["y1"]]);
    g.release(1);
    expect((await second).stored).toBe(true);
  });
});
