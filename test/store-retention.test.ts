/**
 * Retention, erasure, dead-letter purges and settings of the SQLite store, on a real file, with
 * the clock injected (Date is faked; the store's methods take their times as arguments).
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { mediaId } from "../src/gateway/media.js";
import type { SqliteStore } from "../src/store/sqlite/index.js";
import type { IngestItem, OutboxEntry } from "../src/store/types.js";
import { closeAll, cutoffsAt, dbPath, everyChannel, expectMatchesOracle, imageItem, nothing, openStore, TENANT, textItem } from "./store-helpers.js";

const DAY = 86_400_000;
const T0 = Date.UTC(2026, 0, 10);
const LEASE = 60_000;

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["Date"] });
  vi.setSystemTime(T0);
});

afterEach(async () => {
  vi.useRealTimers();
  await closeAll();
});

/** Claim and finish (done, at `now`) everything claimable of these kinds, until nothing is left. */
async function deliverAll(s: SqliteStore, now: number, kinds: ("omni" | "media")[] = ["omni", "media"]): Promise<void> {
  for (;;) {
    const claimed = await s.claimOutbox(kinds, now, 1000, LEASE);
    if (claimed.length === 0) return;
    for (const e of claimed) await s.finishOutbox(e.id, { state: "done" }, now);
  }
}

/** Claim every claimable omni entry; returns them by message seq. */
async function claimOmni(s: SqliteStore, now: number): Promise<Map<number, OutboxEntry>> {
  return new Map((await s.claimOutbox(["omni"], now, 1000, LEASE)).map((e) => [e.messageSeq as number, e]));
}

async function seqOf(s: SqliteStore, item: IngestItem): Promise<number> {
  const [r] = await s.ingest([item]);
  expect(r?.stored).toBe(true);
  return r?.seq as number;
}

const keys = async (s: SqliteStore) => (await s.listMessages({}, { limit: 1000 })).map((m) => m.key).sort();
const ledgerKeys = (s: SqliteStore) => (s.db.prepare("SELECT key FROM ledger ORDER BY key").all() as { key: string }[]).map((r) => r.key);

describe("pruneBatch", () => {
  it("removes messages received before the cutoff with their finished entries, and keeps newer ones", async () => {
    const s = await openStore();
    await s.ingest([textItem("old1", "A"), textItem("old2", "A"), textItem("old3", "B")]);
    await deliverAll(s, T0);
    vi.setSystemTime(T0 + 10 * DAY);
    await s.ingest([textItem("new1", "A")]);
    await deliverAll(s, T0 + 10 * DAY);

    const r = await s.pruneBatch({ ...nothing(), messagesBefore: everyChannel(T0 + 5 * DAY) }, 100);
    expect(r).toEqual({ messages: 3, outbox: 3, ledger: 0, archive: 0, state: 0, media: [] });
    expect(await keys(s)).toEqual(["new1"]);
    expect(await s.outboxCounts()).toEqual({ pending: 0, inflight: 0, done: 1, dead: 0, refused: 0 });
    expect(await s.listConversations({ limit: 10 })).toMatchObject([{ conversationId: "A", messages: 1 }]);
    await expectMatchesOracle(s);
    // the keys stay until their own cutoff: a retry of an old item is still recognised
    expect((await s.ingest([textItem("old1", "A")]))[0]?.stored).toBe(false);
    expect(await s.pruneBatch({ ...nothing(), messagesBefore: everyChannel(T0 + 5 * DAY) }, 100)).toEqual({ messages: 0, outbox: 0, ledger: 0, archive: 0, state: 0, media: [] });
  });

  it("keeps messages whose entries are pending, in flight or dead, with those entries", async () => {
    const s = await openStore();
    const seqs = await Promise.all(["done", "dead", "inflight", "retry"].map((k) => seqOf(s, textItem(k, `conv-${k}`))));
    const claimed = await s.claimOutbox(["omni"], T0, 10, 10 * DAY);
    expect(claimed).toHaveLength(4);
    const entry = (i: number) => claimed.find((e) => e.messageSeq === seqs[i]) as OutboxEntry;
    await s.finishOutbox(entry(0).id, { state: "done" }, T0);
    await s.finishOutbox(entry(1).id, { state: "dead", error: "omni: 400" }, T0);
    await s.finishOutbox(entry(3).id, { state: "pending", nextAttemptAt: T0 + 100 * DAY, error: "omni down" }, T0);
    vi.setSystemTime(T0 + 30 * DAY);

    const r = await s.pruneBatch({ ...nothing(), messagesBefore: everyChannel(T0 + 20 * DAY), outboxBefore: T0 + 20 * DAY }, 100);
    expect(r).toMatchObject({ messages: 1, outbox: 1 });
    expect(await keys(s)).toEqual(["dead", "inflight", "retry"]);
    expect(await s.outboxCounts()).toEqual({ pending: 1, inflight: 1, done: 0, dead: 1, refused: 0 });
    expect((await s.listOutbox(["dead"], { limit: 10 })).map((e) => e.id)).toEqual([entry(1).id]);
    await expectMatchesOracle(s);
  });

  it("a conversation whose newer messages go and an older one stays keeps a right summary", async () => {
    const s = await openStore();
    const [m1, , m3] = [await seqOf(s, textItem("m1", "A", { time: T0 - 3000 })), await seqOf(s, textItem("m2", "A", { time: T0 - 2000 })), await seqOf(s, textItem("m3", "A", { time: T0 - 1000 }))];
    await s.listConversations({ limit: 1 }); // folded in
    const outcomes: ("dead" | "done")[] = ["dead", "done", "done"];
    for (const state of outcomes) {
      const e = (await claimOmni(s, T0)).values().next().value as OutboxEntry;
      await s.finishOutbox(e.id, state === "dead" ? { state, error: "x" } : { state }, T0);
    }
    expect((await s.listConversations({ limit: 10 })).find((c) => c.conversationId === "A")).toMatchObject({ messages: 3, lastSeq: m3 });
    vi.setSystemTime(T0 + 10 * DAY);
    expect((await s.pruneBatch({ ...nothing(), messagesBefore: everyChannel(T0 + DAY) }, 100)).messages).toBe(2); // m2, m3
    expect((await s.listConversations({ limit: 10 })).find((c) => c.conversationId === "A")).toEqual({
      tenant: TENANT,
      conversationId: "A",
      channel: "app",
      messages: 1,
      lastTime: T0 - 3000,
      lastSeq: m1,
    });
    await expectMatchesOracle(s);
    expect((await s.listMessages({ conversationId: "A" }, { limit: 10 })).map((m) => m.key)).toEqual(["m1"]);
  });

  it("honours each channel's cutoff, for messages and for ledger keys", async () => {
    const s = await openStore();
    await s.ingest([textItem("app-old", "A"), textItem("rec-old", "R", { channel: "archive" })]);
    await deliverAll(s, T0);
    vi.setSystemTime(T0 + 40 * DAY);
    // app keeps 30 days; the archive a year
    const cut = { ...everyChannel(T0 + 10 * DAY), archive: T0 - 335 * DAY };
    const r = await s.pruneBatch({ ...nothing(), messagesBefore: cut, ledgerBefore: cut }, 100);
    expect(r).toMatchObject({ messages: 1, outbox: 1, ledger: 1 });
    expect(await keys(s)).toEqual(["rec-old"]);
    // the app key is gone (an item with it would be new), the archive key is kept
    expect(ledgerKeys(s)).toEqual(["rec-old"]);
    expect((await s.ingest([textItem("rec-old", "R", { channel: "archive" })]))[0]?.stored).toBe(false);
  });

  it("removes old ledger keys, skipped items' included, and keeps recent ones", async () => {
    const s = await openStore();
    await s.ingest([{ tenant: TENANT, channel: "kf", key: "old-skip", skipReason: "kf_history" }, textItem("old-msg", "A")]);
    vi.setSystemTime(T0 + 5 * DAY);
    await s.ingest([{ tenant: TENANT, channel: "kf", key: "new-skip", skipReason: "kf_history" }]);
    const r = await s.pruneBatch({ ...nothing(), ledgerBefore: everyChannel(T0 + DAY) }, 100);
    expect(r).toMatchObject({ ledger: 2, messages: 0 });
    expect(ledgerKeys(s)).toEqual(["new-skip"]);
    // the message itself is kept (its own cutoff has not passed)
    expect(await keys(s)).toEqual(["old-msg"]);
    expect((await s.ingest([{ tenant: TENANT, channel: "kf", key: "new-skip", skipReason: "kf_history" }]))[0]?.stored).toBe(false);
  });

  it("removes session-archive pushes received before the cutoff", async () => {
    const s = await openStore();
    const push = (id: string, receivedAt: number): IngestItem => ({
      tenant: TENANT,
      channel: "archive",
      key: `push:${id}`,
      skipReason: "push_type_19",
      archive: { tenant: TENANT, messageId: id, pushType: 19, receivedAt, body: { id } },
    });
    await s.ingest([push("p1", T0), push("p2", T0 + 3 * DAY)]);
    const r = await s.pruneBatch({ ...nothing(), archiveBefore: T0 + DAY }, 100);
    expect(r).toMatchObject({ archive: 1 });
    expect((await s.listArchive({ limit: 10 })).map((a) => a.messageId)).toEqual(["p2"]);
  });

  it("removes media rows only when created before the cutoff and their message was delivered before it", async () => {
    const s = await openStore();
    const [delivered, late, waiting] = [await seqOf(s, imageItem("i1", "A")), await seqOf(s, imageItem("i2", "B")), await seqOf(s, imageItem("i3", "C"))];
    await deliverAll(s, T0, ["media"]);
    const row = (seq: number | null, id: string, createdAt: number) => ({ tenant: TENANT, id, messageSeq: seq, contentType: "image/jpeg", fileName: `${id}.jpg`, size: 3, createdAt });
    for (const seq of [delivered, late, waiting]) await s.putMedia(row(seq, mediaId(seq, 0), T0));
    await s.putMedia(row(null, "loose", T0));
    await s.putMedia(row(delivered, "recent", T0 + 3 * DAY));
    const omni = await claimOmni(s, T0);
    await s.finishOutbox(omni.get(delivered)?.id as number, { state: "done" }, T0); // links signed at T0
    await s.finishOutbox(omni.get(late)?.id as number, { state: "done" }, T0 + 2 * DAY); // signed after the cutoff
    await s.finishOutbox(omni.get(waiting)?.id as number, { state: "pending", nextAttemptAt: T0 + DAY, error: "omni down" }, T0);
    // the third message's omni entry is still pending: its links are not signed yet

    const r = await s.pruneBatch({ ...nothing(), mediaBefore: T0 + DAY }, 100);
    expect(r.media.map((m) => m.id).sort()).toEqual([mediaId(delivered, 0), "loose"].sort());
    expect(r.media.find((m) => m.id === "loose")).toEqual(row(null, "loose", T0));
    expect(await s.getMedia(TENANT, mediaId(delivered, 0))).toBeUndefined();
    for (const id of [mediaId(late, 0), mediaId(waiting, 0), "recent"]) expect(await s.getMedia(TENANT, id), id).toBeDefined();
    expect(r).toMatchObject({ messages: 0, outbox: 0 });
  });

  it("removes finished entries without a message", async () => {
    const s = await openStore();
    const seq = await seqOf(s, textItem("m1", "A"));
    const omni = (await claimOmni(s, T0)).get(seq) as OutboxEntry;
    await s.finishOutbox(omni.id, { state: "done" }, T0, { tenant: TENANT, messageSeq: null, entries: [{ kind: "media", conversationId: null, payload: { x: 1 } }] });
    const [orphan] = await s.claimOutbox(["media"], T0, 10, LEASE);
    expect(orphan?.messageSeq).toBeNull();
    await s.finishOutbox(orphan?.id as number, { state: "done" }, T0);
    expect(await s.pruneBatch({ ...nothing(), outboxBefore: T0 }, 100)).toMatchObject({ outbox: 0 });
    expect(await s.pruneBatch({ ...nothing(), outboxBefore: T0 + 1 }, 100)).toMatchObject({ outbox: 1, messages: 0 });
    expect((await s.listOutbox(["done"], { limit: 10 })).map((e) => e.id)).toEqual([omni.id]);
  });

  it("removes at most `limit` rows of each kind per call; calling again until nothing goes empties the past", async () => {
    const s = await openStore();
    await s.ingest(Array.from({ length: 25 }, (_, i) => textItem(`m${i}`, `conv-${i % 4}`)));
    await deliverAll(s, T0);
    vi.setSystemTime(T0 + 10 * DAY);
    await s.ingest([textItem("keep", "conv-0")]);
    const removed: number[] = [];
    for (;;) {
      const r = await s.pruneBatch(cutoffsAt(T0 + DAY), 10);
      expect(r.ledger).toBeLessThanOrEqual(10);
      removed.push(r.messages);
      if (r.messages + r.ledger + r.outbox === 0) break;
    }
    expect(removed).toEqual([10, 10, 5, 0]);
    expect(await keys(s)).toEqual(["keep"]);
    expect(ledgerKeys(s)).toEqual(["keep"]);
    await expectMatchesOracle(s);
  });

  it("gets past many kept messages: a call stops after a bounded walk, the next one resumes there", async () => {
    const s = await openStore();
    const kept = 1100;
    await s.ingest(Array.from({ length: kept }, (_, i) => textItem(`dead${i}`, `conv-${i}`)));
    for (const e of await s.claimOutbox(["omni"], T0, 2000, LEASE)) await s.finishOutbox(e.id, { state: "dead", error: "x" }, T0);
    await s.ingest(Array.from({ length: 5 }, (_, i) => textItem(`done${i}`, `later-${i}`)));
    await deliverAll(s, T0);
    vi.setSystemTime(T0 + 10 * DAY);
    const cut = { ...nothing(), messagesBefore: everyChannel(T0 + DAY) };
    const first = await s.pruneBatch(cut, 10);
    const second = await s.pruneBatch(cut, 10);
    expect(first.messages + second.messages).toBe(5);
    expect(second.messages).toBe(5); // the first walked 1,000 dead letters' messages and stopped
    expect((await s.listMessages({}, { limit: 2000 })).length).toBe(kept);
    expect((await s.pruneBatch(cut, 10)).messages).toBe(0);
  });
});

describe("eraseConversation", () => {
  it("removes the conversation's messages, entries in every state and media, and keeps its ledger keys", async () => {
    const s = await openStore();
    const x1 = await seqOf(s, textItem("x1", "X"));
    const x2 = await seqOf(s, imageItem("x2", "X"));
    await seqOf(s, textItem("x3", "X"));
    // x1 delivered, x2's media fetched and its delivery dead, x3 pending behind it
    await s.finishOutbox((await claimOmni(s, T0)).get(x1)?.id as number, { state: "done" }, T0);
    await deliverAll(s, T0, ["media"]);
    await s.putMedia({ tenant: TENANT, id: mediaId(x2, 0), messageSeq: x2, contentType: "image/jpeg", fileName: "a.jpg", size: 3, createdAt: T0 });
    await s.finishOutbox((await claimOmni(s, T0)).get(x2)?.id as number, { state: "dead", error: "omni: 400" }, T0);
    await seqOf(s, textItem("y1", "Y"));
    expect(await s.outboxCounts()).toEqual({ pending: 2, inflight: 0, done: 2, dead: 1, refused: 0 });

    const r = await s.eraseConversation("X");
    expect(r).toMatchObject({ messages: 3, outbox: 4, ledger: 0, archive: 0 });
    expect(r.media.map((m) => m.id)).toEqual([mediaId(x2, 0)]);
    expect(await keys(s)).toEqual(["y1"]);
    expect(await s.listMessages({ conversationId: "X" }, { limit: 10 })).toEqual([]);
    expect(await s.getMedia(TENANT, mediaId(x2, 0))).toBeUndefined();
    expect(await s.outboxCounts()).toEqual({ pending: 1, inflight: 0, done: 0, dead: 0, refused: 0 });
    expect((await s.listConversations({ limit: 10 })).map((c) => c.conversationId)).toEqual(["Y"]);
    await expectMatchesOracle(s);

    // the keys stay: WeCom retrying an erased item stores nothing
    expect(ledgerKeys(s)).toEqual(["x1", "x2", "x3", "y1"]);
    const again = await s.ingest([textItem("x1", "X"), imageItem("x2", "X")]);
    expect(again.map((a) => a.stored)).toEqual([false, false]);
    expect(await keys(s)).toEqual(["y1"]);
    expect(await s.outboxCounts()).toEqual({ pending: 1, inflight: 0, done: 0, dead: 0, refused: 0 });
    expect(await s.listConversations({ limit: 10 })).toHaveLength(1);
    // and they go with the others once past the ledger's cutoff
    vi.setSystemTime(T0 + 10 * DAY);
    expect(await s.pruneBatch({ ...nothing(), ledgerBefore: everyChannel(T0 + DAY) }, 100)).toMatchObject({ ledger: 4, messages: 0 });
    expect(ledgerKeys(s)).toEqual([]);
    expect(await keys(s)).toEqual(["y1"]);
  });

  it("erases only the given tenant's conversation when a tenant is given", async () => {
    const s = await openStore();
    await s.ingest([textItem("a", "X"), textItem("b", "X", { tenant: "wwOTHER" })]);
    expect(await s.eraseConversation("X", "wwOTHER")).toMatchObject({ messages: 1, outbox: 1 });
    expect((await s.listMessages({ conversationId: "X" }, { limit: 10 })).map((m) => [m.tenant, m.key])).toEqual([[TENANT, "a"]]);
    await expectMatchesOracle(s);
  });

  it("removes the session-archive records of the conversation's archive messages", async () => {
    const s = await openStore();
    const record = (id: string, conversation: string): IngestItem => ({
      ...textItem(id, conversation, { channel: "archive" }),
      archive: { tenant: TENANT, messageId: `push-${id}`, pushType: 101, msgid: id, receivedAt: T0, body: { content: `secret words of ${id}` } },
    });
    await s.ingest([record("r1", "room-1"), record("r2", "room-2")]);
    expect(await s.eraseConversation("room-1")).toMatchObject({ messages: 1, archive: 1 });
    expect((await s.listArchive({ limit: 10 })).map((a) => a.msgid)).toEqual(["r2"]);
  });

  it("erases nothing for an unknown conversation", async () => {
    const s = await openStore();
    await s.ingest([textItem("a", "X")]);
    expect(await s.eraseConversation("nope")).toEqual({ messages: 0, outbox: 0, ledger: 0, archive: 0, state: 0, media: [] });
    expect(await keys(s)).toEqual(["a"]);
  });
});

describe("purgeDead", () => {
  async function withDead(s: SqliteStore, n: number, at: number, prefix: string): Promise<void> {
    await s.ingest(Array.from({ length: n }, (_, i) => textItem(`${prefix}${i}`, `${prefix}-conv-${i}`)));
    const claimed = await s.claimOutbox(["omni"], at, 10_000, LEASE);
    for (const e of claimed) await s.finishOutbox(e.id, { state: "dead", error: "x" }, at);
  }

  it("removes dead letters last updated before a time, then all of them; nothing else", async () => {
    const s = await openStore();
    await withDead(s, 2, T0, "old");
    vi.setSystemTime(T0 + 5 * DAY);
    await withDead(s, 1, T0 + 5 * DAY, "new");
    await s.ingest([textItem("live", "live-conv")]);
    expect(await s.purgeDead(T0 + DAY)).toBe(2);
    expect(await s.outboxCounts()).toEqual({ pending: 1, inflight: 0, done: 0, dead: 1, refused: 0 });
    expect(await s.purgeDead()).toBe(1);
    expect(await s.outboxCounts()).toEqual({ pending: 1, inflight: 0, done: 0, dead: 0, refused: 0 });
    // their messages are no longer held: retention removes them
    expect((await s.pruneBatch({ ...nothing(), messagesBefore: everyChannel(T0 + 10 * DAY) }, 100)).messages).toBe(3);
    expect(await keys(s)).toEqual(["live"]);
    await expectMatchesOracle(s);
  });

  it("purges more than one transaction's worth", async () => {
    const s = await openStore();
    await withDead(s, 1500, T0, "d");
    expect(await s.purgeDead()).toBe(1500);
    expect(await s.listOutbox(["dead"], { limit: 10 })).toEqual([]);
    expect((await s.outboxCounts()).dead).toBe(0);
  });
});

describe("getOrCreateSetting", () => {
  it("creates once and returns the same value afterwards, across a reopen and from another connection", async () => {
    const path = dbPath();
    const a = await openStore(path);
    const create = vi.fn(() => "generated-1");
    expect(await a.getOrCreateSetting("media.secret", create)).toBe("generated-1");
    expect(await a.getOrCreateSetting("media.secret", () => "generated-2")).toBe("generated-1");
    expect(create).toHaveBeenCalledTimes(1);
    const b = await openStore(path);
    expect(await b.getOrCreateSetting("media.secret", () => "generated-3")).toBe("generated-1");
    await a.close();
    const c = await openStore(path);
    const never = vi.fn(() => "generated-4");
    expect(await c.getOrCreateSetting("media.secret", never)).toBe("generated-1");
    expect(never).not.toHaveBeenCalled();
    expect(await c.getOrCreateSetting("other", () => "x")).toBe("x");
    // the store's own marks are not settings
    await expect(c.getOrCreateSetting("store.foldedSeq", () => "0")).rejects.toThrow(/store\./);
  });
});

describe("KF accounts", () => {
  it("listKfCursors pages by id, newest account first, with no account twice or missing", async () => {
    const s = await openStore();
    const names = Array.from({ length: 7 }, (_, i) => `wk${i}`);
    for (const [i, n] of names.entries()) await s.touchKfAccount(TENANT, n, T0 + i);
    await s.ingest([textItem("k1", "A")], { tenant: TENANT, openKfId: "wk2", cursor: "C2" });
    const seen: string[] = [];
    let before: number | undefined;
    for (;;) {
      const page = await s.listKfCursors(before === undefined ? { limit: 3 } : { limit: 3, before });
      seen.push(...page.map((c) => c.openKfId));
      for (let i = 1; i < page.length; i++) expect((page[i - 1]?.id as number) > (page[i]?.id as number)).toBe(true);
      if (page.length < 3) break;
      before = page[2]?.id;
    }
    expect(seen).toEqual([...names].reverse());
    // a cursor saved by a page does not move the account
    expect((await s.listKfCursors({ limit: 10 })).find((c) => c.openKfId === "wk2")).toMatchObject({ cursor: "C2", firstSeenAt: T0 + 2 });
    expect(await s.listKfCursors({ limit: 10, before: 1 })).toEqual([]);
    expect(await s.listKfCursors({ limit: 10, before: 1e20 })).toHaveLength(7);
  });

  it("listKfAccounts lists one tenant's accounts", async () => {
    const s = await openStore();
    await s.touchKfAccount(TENANT, "wk1", T0);
    await s.touchKfAccount("wwOTHER", "wk9", T0);
    await s.ingest([], { tenant: TENANT, openKfId: "wk2", cursor: "C" });
    expect(await s.listKfAccounts(TENANT)).toEqual(["wk1", "wk2"]);
    expect(await s.listKfAccounts("wwOTHER")).toEqual(["wk9"]);
    expect(await s.listKfAccounts("wwNONE")).toEqual([]);
  });
});
