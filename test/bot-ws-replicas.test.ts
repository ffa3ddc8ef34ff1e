/**
 * A bot in long-connection mode on two replicas (issue 9: "two replicas with only one connected
 * and a failover after SIGKILL"): two `wecom-bridge serve` processes (the built dist) on one
 * PostgreSQL schema, with the simulator's bot "live" in websocket mode.
 *
 * - Only the replica holding the lease `aibotws:aibLIVE` connects: one subscribe in total while
 *   both run for longer than a standby period, the other one standing by (`/readyz`).
 * - A user's message reaches the 全媒体 once; an agent's answer accepted by the replica WITHOUT the
 *   connection reaches the user through the holder's stream (the work goes through the store).
 * - The holder is SIGKILLed while a user's stream is open (placeholder shown); an agent answers
 *   through the survivor, which takes the lease over and subscribes within 30 s (lease 20 s,
 *   renewed every 5 s, standby tries every 5 s). The answer reaches the user exactly once, with
 *   `aibot_send_msg` (the stream's req_id died with the old connection). Then the new holder
 *   carries another message and answer.
 *
 * The 全媒体 simulator sends each agent answer to the replica the test chooses (`setAppUrl`), and
 * the replicas deliver to the 全媒体 directly. A failure writes every replica's log and the
 * simulator's to a file (also with `WB_REPLICAS_LOG=1`). A run takes about 30-40 s.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterEach, describe, expect, it, onTestFailed } from "vitest";
import type { BotWsStatus } from "../src/gateway/bot-ws.js";
import { OmniSimulator } from "../src/sim/omni.js";
import { WeComSimulator } from "../src/sim/wecom.js";
import { freshSchema, PG_URL, type PgSchema, pgReachable } from "./pg.js";
import { Replicas } from "./replica-helpers.js";
import { ADMIN, BOT_AES, CORP, eventually, freePort, LIVE_SECRET, sleep } from "./stack.js";

const BOT = "aibLIVE";
const USER = "lisi";
const ADDR = `bot:${BOT}:user:${USER}`;
const PLACEHOLDER = "正在为您转接人工客服…";
/** How long both replicas run side by side while the test checks that only one connects (> one standby period of 5 s). */
const OBSERVE_MS = 7_000;
/** The documented takeover bound after the holder dies (lease 20 s + a standby try every 5 s, with a margin). */
const TAKEOVER_MS = 30_000;

interface Cleanup {
  replicas?: Replicas;
  sims: (WeComSimulator | OmniSimulator)[];
  schema?: PgSchema;
  db?: pg.Pool;
  monitor?: NodeJS.Timeout;
}
let cleanup: Cleanup = { sims: [] };

afterEach(async () => {
  const c = cleanup;
  cleanup = { sims: [] };
  if (c.monitor !== undefined) clearInterval(c.monitor);
  await c.replicas?.killAll();
  for (const s of c.sims) await s.close().catch(() => undefined);
  await c.db?.end().catch(() => undefined);
  await c.schema?.drop();
});

interface Readyz {
  status: string;
  bots?: BotWsStatus[];
}

/** A replica's /readyz, or undefined when it does not answer (killed). */
async function readyz(port: number): Promise<Readyz | undefined> {
  try {
    const r = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(2000) });
    return (await r.json()) as Readyz;
  } catch {
    return undefined;
  }
}

describe.skipIf(!pgReachable)("a long-connection bot on two replicas sharing one PostgreSQL", () => {
  it("connects from one replica only, carries messages both ways through either replica, and fails over after a SIGKILL without losing or doubling an answer", async () => {
    const t0 = Date.now();
    const dir = mkdtempSync(join(tmpdir(), "wb-botws-replicas-"));
    const schema = await freshSchema();
    cleanup.schema = schema;
    const db = new pg.Pool({ connectionString: PG_URL, max: 2 });
    cleanup.db = db;
    const sql = async (text: string, params: unknown[] = []) => (await db.query(text.replaceAll("$S.", `${schema.name}.`), params)).rows as Record<string, any>[];

    // --- the simulators ---------------------------------------------------------------------------
    const simLog: string[] = [];
    const wecom = await WeComSimulator.start({
      corpId: CORP,
      apps: [],
      bots: [{ name: "live", botId: BOT, token: "livetoken", encodingAESKey: BOT_AES, secret: LIVE_SECRET }],
      callbackTimeoutMs: 1000,
      retryIntervalMs: 50,
      log: (l) => simLog.push(`${Date.now() - t0} ${l}`),
    });
    cleanup.sims.push(wecom);
    const omni = await OmniSimulator.start({ appId: "1001", secret: "omni-secret" });
    cleanup.sims.push(omni);

    // --- two replicas with the same configuration (but the listen port) ------------------------------
    const ports = [await freePort(), await freePort()];
    const replicas = new Replicas(dir, (i) => ({
      listen: { host: "127.0.0.1", port: ports[i] },
      publicUrl: `http://127.0.0.1:${ports[i]}`,
      store: schema.url,
      adminToken: ADMIN,
      mediaDir: join(dir, "media"),
      wecom: {
        apiBase: wecom.url,
        corpId: CORP,
        bots: [{ name: "live", botId: BOT, mode: "websocket", secret: LIVE_SECRET, wsUrl: wecom.botWsUrl, kickedQuietSec: 1, welcomeText: "您好" }],
      },
      omni: { baseUrl: omni.url, version: "v1", appId: "1001", secret: "omni-secret", pathPrefix: "/qmtapi" },
      // fast retries, never dead within the test; a killed replica's entries come back after 5 s
      delivery: { maxAttempts: 10_000, baseDelayMs: 20, maxDelayMs: 300, concurrency: 4, timeoutMs: 3000, leaseSec: 5 },
    }));
    cleanup.replicas = replicas;
    const dumpLogs = () => {
      const file = join(dir, "bot-ws-replicas.log");
      const frames = wecom.botWsFrames().map((f) => `${f.at - t0} ${f.connectionId} ${f.direction} ${f.cmd ?? ""} ${f.reqId ?? ""} ${f.errcode ?? ""}`);
      writeFileSync(file, `${replicas.dump()}\n--- wecom simulator ---\n${simLog.join("\n")}\n--- frames ---\n${frames.join("\n")}\n`);
      console.error(`replica logs: ${file}`);
    };
    onTestFailed(dumpLogs);

    /** Every subscribed connection seen, and the most seen subscribed at one moment, for the whole run. */
    const seen = { ids: new Set<string>(), most: 0 };
    const sample = () => {
      const subs = wecom.botWsConnections("live").filter((c) => c.subscribed);
      seen.most = Math.max(seen.most, subs.length);
      for (const c of subs) seen.ids.add(c.id);
    };
    cleanup.monitor = setInterval(sample, 20);

    const subscribed = () => wecom.botWsConnections("live").filter((c) => c.subscribed);
    /** Every aibot_subscribe frame the simulator received (tried, whether or not it succeeded). */
    const subscribeFrames = () => wecom.botWsFrames().filter((f) => f.direction === "in" && f.cmd === "aibot_subscribe").length;
    const streamOf = (reqId: string) => wecom.botWsStreams("live").find((x) => x.reqId === reqId);
    const received = (content: string) => omni.conversation(ADDR).filter((b) => b.Content === content);
    const outboxLive = async () => Number((await sql("SELECT count(*) AS n FROM $S.outbox WHERE state IN ('pending', 'inflight')"))[0]?.n);
    /** An agent answers through the replica of `slot` (the 全媒体 calls that replica). */
    const agentSays = async (slot: number, content: string, tag?: Record<string, unknown>) => {
      omni.setAppUrl(`http://127.0.0.1:${ports[slot]}`, "/qmtapi");
      const r = await omni.sendAgentReply({ ToUserId: ADDR, WorkerNum: "8001", WorkerName: "王客服", MsgType: "text", Content: content, ...(tag !== undefined ? { Tag: tag } : {}) });
      expect(r, `the answer "${content}" accepted by replica ${slot}`).toMatchObject({ status: 200, reply: { errcode: 0 } });
    };
    /** A user writes over the long connection; resolves once the 全媒体 has it and the stream shows the placeholder. */
    const userWrites = async (content: string) => {
      const m = wecom.botUserSendsWs("live", { userid: USER, msgtype: "text", text: content });
      expect(m.delivered, `the callback of "${content}" went out`).toBe(true);
      await eventually(() => received(content).length > 0, 10_000, `"${content}" at the 全媒体`);
      await eventually(() => streamOf(m.reqId)?.frames.some((f) => f.content === PLACEHOLDER && !f.finish && f.errcode === 0), 10_000, `the placeholder on the stream of "${content}"`);
      return m;
    };

    // --- 1. both replicas start at once on the fresh schema ------------------------------------------
    await Promise.all([0, 1].map((i) => replicas.start(i)));
    const upAt = Date.now();

    // --- 2. exactly one replica connects, and it stays one ----------------------------------------------
    const first = await eventually(() => (subscribed().length === 1 ? subscribed()[0] : undefined), 15_000, "a subscribed connection");
    const holder = await eventually(
      async () => {
        expect(wecom.botWsConnections().map((c) => c.id), "every connection ever opened to the simulator").toEqual([first.id]);
        const r = await Promise.all(ports.map(readyz));
        const holders = r.flatMap((x, i) => (x?.bots?.[0]?.holder === true ? [i] : []));
        return holders.length === 1 && r[holders[0] as number]?.bots?.[0]?.state === "open" ? (holders[0] as number) : undefined;
      },
      10_000,
      "exactly one replica holding the bot, its connection open",
    );
    const other = 1 - holder;
    // both keep running for longer than a standby period (and some renewals): never a second connection
    const observeUntil = Date.now() + OBSERVE_MS;
    let polls = 0;
    while (Date.now() < observeUntil) {
      expect(replicas.alive(0) && replicas.alive(1), "both replicas run").toBe(true);
      expect(subscribed().map((c) => c.id), "the one subscribed connection").toEqual([first.id]);
      expect(wecom.botWsConnections().map((c) => c.id), "every connection ever opened to the simulator").toEqual([first.id]);
      expect(subscribeFrames(), "aibot_subscribe frames received").toBe(1);
      const [a, b] = await Promise.all(ports.map(readyz));
      expect(a?.bots?.[0]?.holder, "replica 0 holds the bot").toBe(holder === 0);
      expect(b?.bots?.[0]?.holder, "replica 1 holds the bot").toBe(holder === 1);
      expect((holder === 0 ? b : a)?.bots?.[0]?.state, "the other replica stands by").toBe("standby");
      polls++;
      await sleep(100);
    }
    expect(polls, "the observation window was polled").toBeGreaterThan(20);
    expect(first.open).toBe(true);

    // --- 3. a message in; an answer through the replica WITHOUT the connection, out through the holder's stream ---
    const Q1 = "我的订单还没到";
    const A1 = "已为您查询，明天送达";
    const m1 = await userWrites(Q1);
    expect(m1.connectionId).toBe(first.id);
    await agentSays(other, A1, { finish: true });
    await eventually(() => {
      const s = streamOf(m1.reqId);
      return s?.status === "finished" && s.shown === A1;
    }, 10_000, "the answer given to the standby replica, finished in the holder's stream");

    // --- 4. SIGKILL the holder while a user's stream is open (placeholder shown) ---------------------------
    const Q2 = "我要退货，怎么寄回？";
    const A2 = "退货地址已发送，请查收";
    const m2 = await userWrites(Q2);
    expect(m2.connectionId).toBe(first.id);
    // whatever the holder had to deliver is delivered (so that the kill loses nothing in flight but the stream)
    await eventually(async () => (await outboxLive()) === 0, 10_000, "the outbox idle before the kill");
    expect(streamOf(m2.reqId)).toMatchObject({ status: "open", shown: PLACEHOLDER });
    expect(subscribed().map((c) => c.id), "still the first connection before the kill").toEqual([first.id]);
    expect(subscribeFrames(), "still one aibot_subscribe before the kill").toBe(1);
    const killedAt = Date.now();
    await replicas.kill(holder);
    await eventually(() => subscribed().length === 0, 5_000, "the killed holder's connection closed at the simulator");
    // an agent answers meanwhile, through the surviving replica (it has no connection yet)
    await agentSays(other, A2);
    expect((await readyz(ports[other] as number))?.bots?.[0], "the survivor has not connected yet (the dead holder's lease runs)").toMatchObject({ holder: false, state: "standby" });
    const second = await eventually(() => subscribed().find((c) => c.id !== first.id), TAKEOVER_MS - (Date.now() - killedAt), `the survivor subscribing within ${TAKEOVER_MS} ms of the kill`);
    const tookOverMs = Date.now() - killedAt;
    await eventually(async () => {
      const b = (await readyz(ports[other] as number))?.bots?.[0];
      return b?.holder === true && b.state === "open";
    }, 5_000, "the survivor reporting itself the holder");
    // the answer goes by aibot_send_msg: the old req_id died with the old connection
    const sent = await eventually(() => wecom.botWsSends("live").find((x) => x.errcode === 0 && JSON.stringify(x.body).includes(A2)), 10_000, "the answer after the failover");
    expect(sent).toMatchObject({ cmd: "aibot_send_msg", connectionId: second.id, chatid: USER, msgtype: "markdown" });
    expect(sent.body).toMatchObject({ markdown: { content: A2 } });

    // --- 5. the new holder carries another message and answer ------------------------------------------
    const Q3 = "好的，谢谢";
    const A3 = "不客气，祝您生活愉快";
    const m3 = await userWrites(Q3);
    expect(m3.connectionId).toBe(second.id);
    await agentSays(other, A3, { finish: true });
    await eventually(() => {
      const s = streamOf(m3.reqId);
      return s?.status === "finished" && s.shown === A3;
    }, 10_000, "the next answer in the new holder's stream");
    // quiet: nothing left to deliver or to push
    await eventually(
      async () => {
        if ((await outboxLive()) !== 0) return false;
        const row = (await sql("SELECT value FROM $S.shared_state WHERE key = $1", [`botws:${BOT}`]))[0];
        return row === undefined || (JSON.parse(row.value as string) as { addresses?: unknown[] }).addresses?.length === 0;
      },
      10_000,
      "the outbox idle and nothing left to push",
    );
    sample();

    // --- nothing lost, nothing doubled ------------------------------------------------------------------
    // inbound: each user message once at the 全媒体, no notice of a failed or waiting answer
    for (const q of [Q1, Q2, Q3]) expect(received(q), `"${q}" at the 全媒体`).toHaveLength(1);
    expect(omni.conversation(ADDR).map((b) => b.Content), "the 全媒体's conversation").toEqual([Q1, Q2, Q3]);
    // outbound: every answer exactly once across the streams' shown texts and the successful sends
    const streams = wecom.botWsStreams("live");
    const sends = wecom.botWsSends("live").filter((x) => x.errcode === 0);
    const times = (text: string) => streams.filter((s) => s.shown.includes(text)).length + sends.filter((x) => JSON.stringify(x.body).includes(text)).length;
    expect({ A1: times(A1), A2: times(A2), A3: times(A3) }, "each answer shown or sent once").toEqual({ A1: 1, A2: 1, A3: 1 });
    expect(sends.map((x) => (x.body.markdown as { content?: string } | undefined)?.content), "the only message sent outside a stream").toEqual([A2]);
    // the killed holder's stream never carried the answer (not even a refused frame: its req_id was given up)
    const s2 = streamOf(m2.reqId);
    expect(s2?.connectionId).toBe(first.id);
    expect(s2?.shown).toBe(PLACEHOLDER);
    expect(s2?.frames.some((f) => f.content.includes(A2)), "a frame of the dead stream with the answer").toBe(false);
    expect(streams.filter((s) => s.frames.some((f) => f.errcode !== 0)), "streams with refused frames").toEqual([]);
    // the connections: the first until the kill, the survivor's after it; never two at once, never a kick
    expect(seen.most, "subscribed connections at one moment").toBe(1);
    expect([...seen.ids], "subscribed connections over the run").toEqual([first.id, second.id]);
    expect(wecom.botWsConnections().map((c) => c.id), "connections ever opened").toEqual([first.id, second.id]);
    expect(subscribeFrames(), "aibot_subscribe frames over the run").toBe(2);
    expect(wecom.botWsConnections().filter((c) => c.endedBy === "kicked"), "connections kicked").toEqual([]);
    expect(tookOverMs).toBeLessThan(TAKEOVER_MS);

    console.info(
      `bot-ws replicas: serving at +${upAt - t0} ms; replica ${holder} held the bot (${first.id}); killed at +${killedAt - t0} ms; ` +
        `replica ${other} subscribed (${second.id}) ${tookOverMs} ms later; done at +${Date.now() - t0} ms`,
    );
    if (process.env.WB_REPLICAS_LOG) dumpLogs();
  }, 120_000);
});
