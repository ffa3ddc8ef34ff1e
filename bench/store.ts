/**
 * `npm run bench:store`: the costs that grow with the data. Builds a SQLite store with
 * `BENCH_ROWS` messages (default 1,000,000) and as many outbox entries: four channels, many
 * conversations of uneven length, a month of messages (each stored with the clock at its time;
 * a few KF messages are history stored two days late), most entries delivered, some pending,
 * some dead, a few in flight, the session archive's records, a hundred KF accounts. Then times
 * the `/metrics` scrape path (outboxCounts) and every admin listing, `BENCH_RUNS` times each
 * (default 41), and prints the medians. Last line:
 * `{"bench":"store","rows":N,"scrape_ms":N,"admin_ms":N}` (admin_ms: the slowest listing).
 */
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { messageItem } from "../src/gateway/pipeline.js";
import type { Channel, UnifiedMessage } from "../src/model.js";
import { SqliteStore } from "../src/store/sqlite/index.js";
import type { IngestItem, OutboxState } from "../src/store/types.js";
import { decodeAppXml } from "../src/index.js";
import { median } from "./harness.js";

const ROWS = Number(process.env.BENCH_ROWS ?? 1_000_000);
const RUNS = Number(process.env.BENCH_RUNS ?? 41);
const TENANT = "ww1436e0e65a779aee";
const DAY = 86_400_000;
const PAGE = 50;
/** Message times run over the 30 days before this. */
const END = Date.UTC(2026, 10, 30);
const START = END - 30 * DAY;

/** Deterministic pseudo-random numbers (mulberry32), so every run builds the same store. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const rnd = random(42);
/** Channel mix of the messages. */
const MIX: [Channel, number][] = [
  ["app", 0.45],
  ["kf", 0.35],
  ["bot", 0.1],
  ["archive", 0.1],
];
function pickChannel(): Channel {
  let x = rnd();
  for (const [c, p] of MIX) {
    x -= p;
    if (x < 0) return c;
  }
  return "app";
}
/** About one conversation per 50 messages; a few conversations get most of the traffic. */
const CONVERSATIONS = Math.max(10, Math.floor(ROWS / 50));
function pickConversation(channel: Channel): string {
  const n = Math.floor(CONVERSATIONS * rnd() ** 3);
  return `${channel}:${TENANT}:bench:${n}`;
}

const template = decodeAppXml(readFileSync(new URL("../test/fixtures/app/msg-text.xml", import.meta.url), "utf8"), { corpId: TENANT });

/** When message `i` is stored. */
const receivedAt = (i: number) => Math.floor(START + ((END - START) * i) / ROWS);

function item(i: number): IngestItem {
  const channel = pickChannel();
  const conversationId = pickConversation(channel);
  const history = channel === "kf" && rnd() < 0.03;
  const time = Math.floor(receivedAt(i) - rnd() * 30_000 - (history ? 2 * DAY : 0));
  const message = { ...template, channel, id: `bench-${i}`, conversationId, time } as UnifiedMessage;
  // a KF message from a customer (one without is an account-level event, never delivered)
  if (channel === "kf") Object.assign(message, { externalUserId: `wmbench-${conversationId}` });
  const it = messageItem(TENANT, message, { kind: "none" });
  if (channel === "archive") {
    it.archive = { tenant: TENANT, messageId: `push-${i}`, pushType: 101, msgid: message.id, seq: i, receivedAt: time, body: { msgid: message.id, seq: i } };
  }
  return it;
}

const dir = mkdtempSync(join(tmpdir(), "wb-bench-store-"));
const path = join(dir, "bridge.db");
const lines: string[] = [];
let result: { scrape: number; admin: number; rows: number } | undefined;
try {
  const store = await SqliteStore.open({ path });

  // build: the store's own ingest, in transactions of up to 128 messages stored within 5 minutes,
  // each with the clock at its last message
  const t0 = performance.now();
  const BATCH = Math.max(1, Math.min(128, Math.floor(300_000 / ((END - START) / ROWS))));
  const realNow = Date.now;
  try {
    for (let i = 0; i < ROWS; i += BATCH) {
      const items: IngestItem[] = [];
      const end = Math.min(ROWS, i + BATCH);
      for (let j = i; j < end; j++) items.push(item(j));
      const at = receivedAt(end - 1);
      Date.now = () => at;
      store.ingestSync(items);
      // fold in as the serving process does every 250 ms
      if (Math.floor(i / BATCH) % Math.ceil(4096 / BATCH) === 0) await store.listConversations({ limit: 1 });
    }
  } finally {
    Date.now = realNow;
  }
  for (let k = 0; k < 100; k++) await store.touchKfAccount(TENANT, `wkbench${k}`, START + k * 1000);
  const tIngest = performance.now() - t0;

  // outcomes, set in bulk (the outbox triggers keep the counts): the newest 1.5% still pending,
  // one in 200 dead, eight in flight, the rest delivered
  const t1 = performance.now();
  const maxId = (store.db.prepare("SELECT max(id) AS m FROM outbox").get() as { m: number }).m;
  const pendingFrom = Math.floor(maxId * 0.985);
  store.db.transaction(() => {
    store.db.prepare("UPDATE outbox SET state = 'done', ready = 0, updated_at = created_at + 2000 WHERE id < ?").run(pendingFrom);
    store.db.prepare("UPDATE outbox SET state = 'dead', last_error = 'omni: 500', attempts = 12 WHERE id < ? AND id % 200 = 7").run(pendingFrom);
    store.db.prepare("UPDATE outbox SET ready = 0 WHERE state = 'pending'").run();
    store.db
      .prepare("UPDATE outbox SET ready = 1 WHERE id IN (SELECT min(id) FROM outbox WHERE state = 'pending' GROUP BY tenant, kind, conversation_id)")
      .run();
    store.db
      .prepare("UPDATE outbox SET state = 'inflight', lease_until = ? WHERE id IN (SELECT id FROM outbox WHERE state = 'pending' AND ready = 1 ORDER BY id LIMIT 8)")
      .run(END + 60_000);
  })();
  const tStates = performance.now() - t1;
  const t2 = performance.now();
  await store.listConversations({ limit: 1 }); // folds in what is left
  const tFold = performance.now() - t2;
  store.db.pragma("wal_checkpoint(TRUNCATE)");

  const counts = await store.outboxCounts();
  const outboxRows = counts.pending + counts.inflight + counts.done + counts.dead;
  const mid = Math.floor(ROWS / 2);
  const deadMid = (store.db.prepare("SELECT id FROM outbox WHERE state = 'dead' ORDER BY id LIMIT 1 OFFSET ?").get(Math.floor(counts.dead / 2)) as { id: number }).id;
  const convPage = await store.listConversations({ limit: PAGE * 20 });
  const beforeConv = convPage[convPage.length - 1]?.lastSeq as number;
  const busy = `app:${TENANT}:bench:0`;
  const quiet = (await store.listConversations({ limit: 1, channel: "bot", before: mid })).at(0)?.conversationId as string;
  const archiveMid = (store.db.prepare("SELECT id FROM archive_pushes ORDER BY id LIMIT 1 OFFSET ?").get(Math.floor(ROWS / 20)) as { id: number }).id;

  const cases: [string, () => Promise<unknown[] | unknown>][] = [
    ["scrape: outboxCounts()", () => store.outboxCounts()],
    ["conversations", () => store.listConversations({ limit: PAGE })],
    ["conversations ?before (page 21)", () => store.listConversations({ limit: PAGE, before: beforeConv })],
    ["conversations ?channel=kf", () => store.listConversations({ limit: PAGE, channel: "kf" })],
    ["conversations ?channel=bot&before (older half)", () => store.listConversations({ limit: PAGE, channel: "bot", before: mid })],
    ["messages", () => store.listMessages({}, { limit: PAGE })],
    ["messages ?before (middle)", () => store.listMessages({}, { limit: PAGE, before: mid })],
    ["messages ?channel=bot", () => store.listMessages({ channel: "bot" }, { limit: PAGE })],
    ["messages ?channel=archive&before (middle)", () => store.listMessages({ channel: "archive" }, { limit: PAGE, before: mid })],
    ["messages ?conversation (busiest)", () => store.listMessages({ conversationId: busy }, { limit: PAGE })],
    ["messages ?conversation (busiest, before middle)", () => store.listMessages({ conversationId: busy }, { limit: PAGE, before: mid })],
    ["messages ?conversation (a quiet one)", () => store.listMessages({ conversationId: quiet }, { limit: PAGE })],
    ["messages ?since (last 24 h)", () => store.listMessages({ since: END - DAY }, { limit: PAGE })],
    ["messages ?since&until (one day, a week ago)", () => store.listMessages({ since: END - 8 * DAY, until: END - 7 * DAY }, { limit: PAGE })],
    ["messages ?since&until (one hour, three weeks ago)", () => store.listMessages({ since: END - 21 * DAY - 3_600_000, until: END - 21 * DAY }, { limit: PAGE })],
    ["messages ?channel=kf&since&until (one day)", () => store.listMessages({ channel: "kf", since: END - 8 * DAY, until: END - 7 * DAY }, { limit: PAGE })],
    ["outbox (default: pending,inflight,dead)", () => store.listOutbox(["pending", "inflight", "dead"], { limit: PAGE })],
    ["outbox ?state=dead", () => store.listOutbox(["dead"], { limit: PAGE })],
    ["outbox ?state=dead&before (middle)", () => store.listOutbox(["dead"], { limit: PAGE, before: deadMid })],
    ["outbox ?state=done", () => store.listOutbox(["done"], { limit: PAGE })],
    ["outbox ?state=pending,done&before (middle)", () => store.listOutbox(["pending", "done"] as OutboxState[], { limit: PAGE, before: Math.floor(maxId / 2) })],
    ["archive", () => store.listArchive({ limit: PAGE })],
    ["archive ?before (middle)", () => store.listArchive({ limit: PAGE, before: archiveMid })],
    ["cursors", () => store.listKfCursors({ limit: PAGE })],
    ["cursors ?before", () => store.listKfCursors({ limit: PAGE, before: 60 })],
  ];
  const timings: [string, number, number][] = [];
  for (const [name, op] of cases) {
    const first = await op();
    const n = Array.isArray(first) ? first.length : 1;
    for (let i = 0; i < 3; i++) await op(); // warm-up
    const samples: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const t = performance.now();
      await op();
      samples.push(performance.now() - t);
    }
    timings.push([name, median(samples), n]);
  }
  const size = statSync(path).size;
  await store.close();

  lines.push(
    `store: ${ROWS.toLocaleString("en")} messages, ${outboxRows.toLocaleString("en")} outbox entries (${counts.done} done, ${counts.pending} pending, ${counts.inflight} in flight, ${counts.dead} dead), ${CONVERSATIONS.toLocaleString("en")} conversations, ${(size / 1048576).toFixed(0)} MB (node ${process.version})`,
  );
  lines.push(`built in ${(tIngest / 1000).toFixed(1)} s (ingest), ${(tStates / 1000).toFixed(1)} s (outcomes), ${(tFold / 1000).toFixed(1)} s (folding in); medians of ${RUNS} runs, pages of ${PAGE}`);
  lines.push("| call | median ms | rows |");
  lines.push("|---|---:|---:|");
  for (const [name, ms, n] of timings) lines.push(`| ${name} | ${ms.toFixed(3)} | ${n} |`);
  const scrape = timings[0]?.[1] ?? Number.NaN;
  const admin = Math.max(...timings.slice(1).map((t) => t[1]));
  const slowest = timings.slice(1).find((t) => t[1] === admin)?.[0];
  lines.push(`scrape ${scrape.toFixed(3)} ms, slowest listing ${admin.toFixed(3)} ms (${slowest}); target < 10 ms each`);
  result = { scrape, admin, rows: ROWS };
} finally {
  rmSync(dir, { recursive: true, force: true });
}
for (const l of lines) console.log(l);
if (result) {
  const round = (x: number) => Math.round(x * 1000) / 1000;
  console.log(JSON.stringify({ bench: "store", rows: result.rows, scrape_ms: round(result.scrape), admin_ms: round(result.admin) }));
}
