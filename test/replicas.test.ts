/**
 * Replicas: three `wecom-bridge serve` processes on one PostgreSQL schema serving two corps, behind
 * a round-robin load balancer that WeCom's callbacks (and their retries), the 全媒体's answers and
 * the bot streams' refreshes go through, so that every piece of work lands on different replicas.
 * One replica is SIGKILLed while it is in the middle of a KF pull and of a delivery; the others go
 * on, the killed one is started again, and when everything is quiet: nothing was lost, and every
 * message was delivered once in each direction after the documented dedup (`Tag.id` at the 全媒体;
 * the KF msgid and the app's duplicate check at WeCom) and in order per conversation.
 *
 * The replicas' configurations differ only in their listen port and in the URLs of WeCom and the
 * 全媒体: each replica reaches the simulators through a port of its own (`Upstreams`), so the test
 * knows which replica made each call and what a replica had in flight when it was killed. The
 * balancer also loses some callbacks' answers on purpose (WeCom retries them on another replica),
 * and sends deliberate repeats to another replica than the first.
 *
 * A replica killed while it holds outbox entries keeps them until their lease runs out
 * (`delivery.leaseSec`, 5 s here), and its KF pull lease for 15 s: a run takes about 25 s.
 * `WB_REPLICAS_LOG=1` writes every replica's log and the balancer's and upstreams' records to a
 * file (always written on a failure).
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterEach, describe, expect, it, onTestFailed } from "vitest";
import { OmniSimulator } from "../src/sim/omni.js";
import { WeComSimulator } from "../src/sim/wecom.js";
import { PG_URL, type PgSchema, freshSchema, pgReachable } from "./pg.js";
import { Balancer, callbackCrypto, Replicas, Upstreams } from "./replica-helpers.js";
import { aesKey } from "./sim-wecom-helpers.js";
import { ADMIN, APP_AES, BOT_AES, CORP, eventually, freePort, KFID } from "./stack.js";
import { weComRouting } from "./wecom-router.js";

const AGENT = 1000002;
const REPLICAS = 3;
/** KF messages each customer wrote before the gateways started (a backlog read 4 per page). */
const BACKLOG_PER_CUSTOMER = 30;
const PLACEHOLDER = "请稍候";
/** How long, after the kill, everything may take: the killed replica's KF pulls wait for their 15 s lease. */
const SETTLE_MS = 60_000;

interface Corp {
  name: "A" | "B";
  corpId: string;
  kfid: string;
  app: { name: string; agentId: number; secret: string; token: string; encodingAESKey: string; kf: true };
  bot: { name: string; botId: string; token: string; encodingAESKey: string };
  omniCfg: { appId: string; secret: string };
  customers: string[];
  members: string[];
  botUsers: string[];
  sim: WeComSimulator;
  omni: OmniSimulator;
  /** What each conversation's customer wrote, in order (what WeCom holds or sent). */
  wrote: Map<string, string[]>;
  /** What the agents' accepted answers were, per conversation, in order. */
  answered: Map<string, string[]>;
  /** Messages the 全媒体 got more than once (the same Tag.id). */
  repeats: number;
}

interface Cleanup {
  replicas?: Replicas;
  balancer?: Balancer;
  upstreams?: Upstreams;
  sims: (WeComSimulator | OmniSimulator)[];
  schema?: PgSchema;
  db?: pg.Pool;
}
let cleanup: Cleanup = { sims: [] };

afterEach(async () => {
  const c = cleanup;
  cleanup = { sims: [] };
  await c.replicas?.killAll();
  await c.balancer?.close().catch(() => undefined);
  await c.upstreams?.close().catch(() => undefined);
  for (const s of c.sims) await s.close().catch(() => undefined);
  await c.db?.end().catch(() => undefined);
  await c.schema?.drop();
});

const kfAddress = (c: Corp, ext: string) => `kf:${c.corpId}:${c.kfid}:${ext}`;
const appAddress = (c: Corp, user: string) => `app:${c.corpId}:${AGENT}:${user}`;
const botAddress = (c: Corp, user: string) => `bot:${c.bot.botId}:user:${user}`;
const push = (m: Map<string, string[]>, k: string, v: string) => m.set(k, [...(m.get(k) ?? []), v]);
const errcodeOf = (reply: unknown) => (typeof reply === "object" && reply !== null ? (reply as { errcode?: unknown }).errcode : undefined);
const tagOf = (tag: unknown): { id?: string } => (typeof tag === "string" ? (JSON.parse(tag) as { id?: string }) : ((tag ?? {}) as { id?: string }));

/** A text of two parts (over WeCom's 2048 bytes). */
const longText = (head: string) => `${head}:${"甲".repeat(690)}${"乙".repeat(20)}`;

/** Cut what WeCom delivered to one conversation back into the answers it carries; what is left over, or what does not fit, shows. */
function regroup(delivered: string[], answers: string[]): { answers: string[]; parts: number[]; leftover: string[] } {
  const out: string[] = [];
  const parts: number[] = [];
  let i = 0;
  for (const a of answers) {
    let acc = "";
    let n = 0;
    while (acc.length < a.length && i < delivered.length && a.startsWith(acc + delivered[i])) {
      acc += delivered[i++];
      n++;
    }
    out.push(acc);
    parts.push(n);
  }
  return { answers: out, parts, leftover: delivered.slice(i) };
}

describe.skipIf(!pgReachable)("three replicas on one PostgreSQL, one SIGKILLed mid-pull and mid-delivery", () => {
  it("loses nothing and delivers every message once, in order, in both directions, for both corps", async () => {
    const t0 = Date.now();
    const dir = mkdtempSync(join(tmpdir(), "wb-replicas-"));
    const schema = await freshSchema();
    cleanup.schema = schema;
    const db = new pg.Pool({ connectionString: PG_URL, max: 4 });
    cleanup.db = db;
    const sql = async (text: string, params: unknown[] = []) => (await db.query(text.replaceAll("$S.", `${schema.name}.`), params)).rows as Record<string, any>[];

    // --- two corps, each with its WeCom and its 全媒体 ---------------------------------------------
    const corps: Corp[] = [];
    for (const [name, corpId, kfid, appId] of [
      ["A", CORP, KFID, "1001"],
      ["B", "wwB0000000000000b2", "wkBBBBBBBBBBBBB_BBBBBBBBBBBBBBBBB", "2002"],
    ] as const) {
      const app = { name: name === "A" ? "support" : "sales", agentId: AGENT, secret: `app-secret-${name}`, token: `apptoken${name}`, encodingAESKey: name === "A" ? APP_AES : aesKey(), kf: true as const };
      const bot = { name: name === "A" ? "helper" : "bhelper", botId: `aibHELPER${name}`, token: `bottoken${name}`, encodingAESKey: name === "A" ? BOT_AES : aesKey() };
      const sim = await WeComSimulator.start({ corpId, apps: [app], bots: [bot], callbackTimeoutMs: 3000, retryIntervalMs: 50, maxTries: 5, timers: "realtime", botPollIntervalMs: 150 });
      cleanup.sims.push(sim);
      sim.addKfAccount(kfid, `${name} 的客服`);
      const omniCfg = { appId, secret: `omni-secret-${name}` };
      const omni = await OmniSimulator.start(omniCfg);
      cleanup.sims.push(omni);
      const lower = name.toLowerCase();
      corps.push({
        name,
        corpId,
        kfid,
        app,
        bot,
        omniCfg,
        customers: [1, 2, 3, 4, 5].map((i) => `wm${name}customer${i}`),
        members: [1, 2, 3, 4, 5].map((i) => `${lower}member${i}`),
        botUsers: [1, 2, 3].map((i) => `${lower}botuser${i}`),
        sim,
        omni,
        wrote: new Map(),
        answered: new Map(),
        repeats: 0,
      });
    }
    const [corpA, corpB] = corps as [Corp, Corp];

    // --- the upstreams, the replicas' configuration, the balancer ------------------------------------
    const upstreams = await Upstreams.start(
      REPLICAS,
      weComRouting(corps.map((c) => c.sim)),
      corps.map((c) => c.omni),
    );
    cleanup.upstreams = upstreams;
    const ports: number[] = [];
    for (let i = 0; i < REPLICAS; i++) ports.push(await freePort());
    const crypto = new Map(
      corps.flatMap((c) => [
        [`/wecom/app/${c.app.name}`, callbackCrypto(c.app.token, c.app.encodingAESKey, c.corpId)] as const,
        [`/wecom/bot/${c.bot.name}`, callbackCrypto(c.bot.token, c.bot.encodingAESKey, "")] as const,
      ]),
    );
    /** Contents whose callback's first answer the balancer loses (WeCom retries on another replica). */
    const loseFirst = new Set<string>();
    let kfWakes = 0;
    const balancer = await Balancer.start({
      ports,
      crypto,
      loseAnswer: (info, tries) => {
        if (tries > 0) return false;
        if (info.kind === "app" && info.key.startsWith("kf_msg_or_event:")) return ++kfWakes % 4 === 0;
        return [...loseFirst].some((s) => info.text.includes(s));
      },
    });
    cleanup.balancer = balancer;
    const botCfg = (c: Corp) => ({ ...c.bot, placeholder: PLACEHOLDER, streamIdleSec: 300, streamMaxSec: 340 });
    const replicas = new Replicas(dir, (i) => ({
      listen: { host: "127.0.0.1", port: ports[i] },
      publicUrl: balancer.url,
      store: schema.url,
      adminToken: ADMIN,
      mediaDir: join(dir, "media"),
      wecom: {
        apiBase: upstreams.urls[i],
        corps: [
          { corpId: corpA.corpId, apps: [corpA.app], bots: [botCfg(corpA)] },
          { corpId: corpB.corpId, apps: [corpB.app], bots: [botCfg(corpB)], omni: { baseUrl: upstreams.urls[i], ...corpB.omniCfg, dedupWindowSec: 0 } },
        ],
      },
      omni: { baseUrl: upstreams.urls[i], version: "v1", ...corpA.omniCfg, pathPrefix: "/qmtapi", dedupWindowSec: 0 },
      kf: { pageSize: 4, deliverHistory: true },
      // fast retries, never dead within the test; a killed replica's entries come back after 5 s
      delivery: { maxAttempts: 10_000, baseDelayMs: 20, maxDelayMs: 300, concurrency: 8, timeoutMs: 3000, leaseSec: 5 },
    }));
    cleanup.replicas = replicas;
    /** Every replica's log, the balancer's and the upstreams' records, in one file (on failure, or always with WB_REPLICAS_LOG=1). */
    const dumpLogs = () => {
      const file = join(dir, "replicas.log");
      const lb = balancer.log.map((b) => `${b.at - t0} r${b.replica} ${b.status}${b.lost ? " lost" : ""} ${b.info.kind} ${b.info.key.slice(0, 80)}`);
      const up = upstreams.calls.map((c) => `${c.started - t0}-${c.ended === undefined ? "…" : c.ended - t0} r${c.replica} ${c.api} ${c.status ?? ""} ${c.errcode ?? ""} ${c.body.slice(0, 100)}`);
      writeFileSync(file, `${replicas.dump()}\n--- balancer ---\n${lb.join("\n")}\n--- upstream ---\n${up.join("\n")}\n`);
      console.error(`replica logs: ${file}`);
    };
    onTestFailed(dumpLogs);
    for (const c of corps) {
      c.sim.setCallbackUrl("app", c.app.name, `${balancer.url}/wecom/app/${c.app.name}`);
      c.sim.setCallbackUrl("bot", c.bot.name, `${balancer.url}/wecom/bot/${c.bot.name}`);
      c.omni.setAppUrl(balancer.url, "/qmtapi");
    }

    // --- the KF backlog WeCom holds before any gateway runs ----------------------------------------
    for (const c of corps) {
      for (let i = 0; i < BACKLOG_PER_CUSTOMER * c.customers.length; i++) {
        const ext = c.customers[i % c.customers.length] as string;
        const content = `${c.name}-kf-${ext}-backlog-${i}`;
        await c.sim.kfCustomerSends(c.kfid, ext, { msgtype: "text", text: { content } }, { callback: false });
        push(c.wrote, kfAddress(c, ext), content);
      }
      // pulls are slow, so are the 全媒体 and WeCom's answers to sends (the send took effect: a lost
      // answer); each send holds its replica for 1.5 s, so that every replica has sends in flight
      c.sim.setDelay("kf/sync_msg", 40);
      c.sim.setDelay("kf/send_msg", 1500, "after");
      c.sim.setDelay("message/send", 1500, "after");
      c.omni.setDelay(100);
    }

    // --- three replicas, started at once on the fresh schema ----------------------------------------
    await Promise.all([0, 1, 2].map((i) => replicas.start(i)));
    const upAt = Date.now();

    // --- traffic, both corps at once ----------------------------------------------------------------
    let killed: (slot: number) => void = () => {};
    const afterKill = new Promise<number>((resolve) => {
      killed = resolve;
    });
    const callbackResults: { what: string; delivered: boolean; tries: number }[] = [];
    let msgIdSeq = 0n;
    const appXml = (c: Corp, user: string, content: string, msgId: string) =>
      `<xml><ToUserName><![CDATA[${c.corpId}]]></ToUserName><FromUserName><![CDATA[${user}]]></FromUserName><CreateTime>${Math.floor(Date.now() / 1000)}</CreateTime>` +
      `<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[${content}]]></Content><MsgId>${msgId}</MsgId><AgentID>${AGENT}</AgentID></xml>`;

    /** A KF customer writes (the message goes into sync_msg, then kf_msg_or_event goes to the balancer). */
    const kfWrites = async (c: Corp, ext: string, content: string) => {
      push(c.wrote, kfAddress(c, ext), content);
      const r = await c.sim.kfCustomerSends(c.kfid, ext, { msgtype: "text", text: { content } });
      callbackResults.push({ what: `kf_msg_or_event after ${content}`, delivered: r.callback?.delivered === true, tries: r.callback?.tries ?? 0 });
    };
    /** An app member writes; `twice`: WeCom's callback is sent again (a new delivery, through another replica). */
    const appWrites = async (c: Corp, user: string, content: string, opts: { twice?: boolean; lose?: boolean } = {}) => {
      push(c.wrote, appAddress(c, user), content);
      const msgId = (9_007_199_254_740_993n + 1_000_003n * ++msgIdSeq).toString();
      if (opts.lose) loseFirst.add(`<MsgId>${msgId}</MsgId>`);
      const xml = appXml(c, user, content, msgId);
      for (let n = 0; n < (opts.twice ? 2 : 1); n++) {
        const r = await c.sim.appSends(AGENT, xml);
        callbackResults.push({ what: `app ${content}${n > 0 ? " (again)" : ""}`, delivered: r.delivered, tries: r.tries });
      }
    };
    /** A bot user writes; `twice`: the same message is called back again. Resolves with the stream id. */
    const botWrites = async (c: Corp, user: string, content: string, opts: { twice?: boolean; lose?: boolean } = {}) => {
      push(c.wrote, botAddress(c, user), content);
      if (opts.lose) loseFirst.add(content);
      if (!opts.twice) {
        const r = await c.sim.botUserSendsText(c.bot.botId, user, content);
        callbackResults.push({ what: `bot ${content}`, delivered: r.delivered, tries: r.tries });
        return r.stream?.streamId;
      }
      const message = {
        msgid: `botmsg-${c.name}-${user}`,
        aibotid: c.bot.botId,
        chattype: "single",
        from: { userid: user },
        response_url: `${c.sim.url}/cgi-bin/aibot/response?response_code=unused${user}`,
        msgtype: "text",
        text: { content },
      };
      let streamId: string | undefined;
      for (let n = 0; n < 2; n++) {
        const r = await c.sim.botSends(c.bot.botId, message);
        callbackResults.push({ what: `bot ${content}${n > 0 ? " (again)" : ""}`, delivered: r.delivered, tries: r.tries });
        const s = (r.reply as { stream?: { id?: string } } | undefined)?.stream?.id;
        if (n === 0) streamId = s;
        else expect(s, "the repeated bot message is answered with the same stream").toBe(streamId);
      }
      return streamId;
    };

    // agents' answers: signed with strictly increasing timestamps per 全媒体; retried until errcode 0
    const lastTs = new Map<OmniSimulator, number>();
    const nextTs = (o: OmniSimulator) => {
      const t = Math.max(Date.now(), (lastTs.get(o) ?? 0) + 1);
      lastTs.set(o, t);
      return t;
    };
    let accepted = 0;
    const answerLog: { to: string; attempt: number; outcome: string }[] = [];
    /**
     * An agent answers. With `msgid`, a retry is signed anew with the same Tag.msgid; without one, a
     * retry is a byte-identical replay. `again` sends it once more after it was accepted (a 全媒体
     * retry whose answer was lost): it must change nothing.
     */
    const agentSays = async (c: Corp, to: string, content: string, opts: { msgid?: string; finish?: boolean; again?: boolean } = {}) => {
      const tag: Record<string, unknown> = {};
      if (opts.msgid !== undefined) tag.msgid = opts.msgid;
      if (opts.finish) tag.finish = true;
      const body = { ToUserId: to, WorkerNum: "8001", WorkerName: "王客服", MsgType: "text", Content: content, ...(Object.keys(tag).length > 0 ? { Tag: tag } : {}) };
      const firstTs = nextTs(c.omni);
      const sendOnce = async (attempt: number): Promise<boolean> => {
        const timestamp = opts.msgid !== undefined && attempt > 0 ? nextTs(c.omni) : firstTs;
        try {
          const r = await c.omni.sendAgentReply(body, { timestamp, timeoutMs: 8000 });
          answerLog.push({ to, attempt, outcome: `${r.status} ${JSON.stringify(r.reply)}` });
          if (r.status === 200 && errcodeOf(r.reply) === 0) return true;
          // a replica died under the request (502), or the store failed (30004): the 全媒体 sends it again
          if (r.status === 502 || r.status === 503 || errcodeOf(r.reply) === 30004) return false;
          throw new Error(`the answer ${content.slice(0, 40)} to ${to} was refused: ${r.status} ${JSON.stringify(r.reply)}`);
        } catch (e) {
          if ((e as Error).message.startsWith("the answer")) throw e;
          answerLog.push({ to, attempt, outcome: `error ${(e as Error).message}` });
          return false;
        }
      };
      let attempt = 0;
      await eventually(async () => (await sendOnce(attempt++)) || undefined, 30_000, `the answer to ${to} accepted`);
      accepted++;
      push(c.answered, to, content);
      // the repeat must be answered 0 too (sendOnce throws on any other errcode)
      if (opts.again) await eventually(async () => (await sendOnce(attempt++)) || undefined, 30_000, `the repeat of the answer to ${to} answered`);
    };
    /** The gateway stored a message of the conversation (an agent may answer a KF customer from then on). */
    const known = (address: string) =>
      eventually(async () => (await sql("SELECT 1 FROM $S.conversations WHERE conversation_id = $1", [address])).length > 0, 20_000, `a message of ${address} stored`);
    /** Answers start when the corp's KF customers are known, so that sends of both kinds overlap the pull. */
    const customersKnown = (c: Corp) => Promise.all(c.customers.map((ext) => known(kfAddress(c, ext))));

    const streams = new Map<string, { corp: Corp; user: string; streamId: string }>();
    const traffic = corps.flatMap((c) => [
      // KF: every customer writes more while the backlog is pulled, and again after the kill
      ...c.customers.map(async (ext) => {
        for (let j = 0; j < 4; j++) await kfWrites(c, ext, `${c.name}-kf-${ext}-live-${j}`);
        await afterKill;
        for (let j = 0; j < 3; j++) await kfWrites(c, ext, `${c.name}-kf-${ext}-after-${j}`);
      }),
      // agents: one answer with Tag.msgid (sent twice), one of two parts; after the kill one without msgid (replayed byte for byte)
      ...c.customers.map(async (ext, k) => {
        const to = kfAddress(c, ext);
        await customersKnown(c);
        await agentSays(c, to, `${c.name}-answer-${ext}-1`, { msgid: `${c.name}-kf-${k}-1`, again: true });
        await agentSays(c, to, longText(`${c.name}-answer-${ext}-2`), { msgid: `${c.name}-kf-${k}-2` });
        await afterKill;
        await agentSays(c, to, `${c.name}-answer-${ext}-3`, { again: true });
      }),
      // the app: members write (some callbacks twice, some answers lost), agents answer
      ...c.members.map(async (user, k) => {
        for (let j = 0; j < 4; j++) await appWrites(c, user, `${c.name}-app-${user}-${j}`, { twice: j === 1, lose: j === 2 });
        await afterKill;
        for (let j = 4; j < 6; j++) await appWrites(c, user, `${c.name}-app-${user}-${j}`, { lose: j === 5 && k === 0 });
      }),
      ...c.members.map(async (user, k) => {
        const to = appAddress(c, user);
        await customersKnown(c);
        await agentSays(c, to, `${c.name}-reply-${user}-1`, { msgid: `${c.name}-app-${k}-1`, again: true });
        await agentSays(c, to, longText(`${c.name}-reply-${user}-2`), { msgid: `${c.name}-app-${k}-2` });
        await afterKill;
        await agentSays(c, to, `${c.name}-reply-${user}-3`, { again: true });
      }),
      // the bot: each user writes once (one twice, one with the first answer lost); agents answer into the stream
      ...c.botUsers.map(async (user, k) => {
        const content = `${c.name}-bot-${user}`;
        const streamId = await botWrites(c, user, content, { twice: k === 0, lose: k === 1 });
        expect(streamId, `a stream for ${content}`).toBeTruthy();
        streams.set(botAddress(c, user), { corp: c, user, streamId: streamId as string });
        const to = botAddress(c, user);
        const first = `${c.name}-bot-answer-${user}-1`;
        await agentSays(c, to, first, { msgid: `${c.name}-bot-${k}-1` });
        // WeCom's refreshes, through different replicas, show the first answer before the second comes
        await eventually(
          () =>
            c.sim.botStream(c.bot.botId, streamId as string)?.frames.some((f) => f.source === "poll" && f.accepted && f.content === first) &&
            new Set(balancer.servedBy(`stream:${streamId}`)).size >= 2,
          20_000,
          `the stream of ${to} refreshed with the first answer`,
        );
        await afterKill;
        await agentSays(c, to, `${c.name}-bot-answer-${user}-2`, { msgid: `${c.name}-bot-${k}-2`, finish: true, again: true });
      }),
    ]);
    const trafficDone = Promise.all(traffic);
    trafficDone.catch(() => undefined); // awaited below; a failure must not go unhandled meanwhile

    // --- SIGKILL a replica that is pulling a KF account and delivering ---------------------------------
    const kfStored = async (tenant: string) => Number((await sql("SELECT count(*) AS n FROM $S.messages WHERE tenant = $1 AND channel = 'kf'", [tenant]))[0]?.n);
    const outboundLive = async () => Number((await sql("SELECT count(*) AS n FROM $S.outbox WHERE kind IN ('kf_send', 'app_send', 'bot_reply') AND state IN ('pending', 'inflight')"))[0]?.n);
    const kill = await eventually(
      async () => {
        const stored = new Map<string, number>();
        for (const c of corps) stored.set(c.corpId, await kfStored(c.corpId));
        const queued = await outboundLive();
        if (accepted < 2 || queued === 0) return undefined;
        for (let slot = 0; slot < REPLICAS; slot++) {
          const calls = upstreams.inFlight(slot);
          const pull = calls.find((x) => x.api === "kf/sync_msg");
          // in the middle of a pull, of a delivery to the 全媒体 and of sends to WeCom by KF and by the app
          const apis = new Set(calls.map((x) => x.api));
          if (pull === undefined || !apis.has("omni") || !apis.has("kf/send_msg") || !apis.has("message/send")) continue;
          const corp = corps.find((c) => pull.body.includes(c.kfid)) as Corp;
          const written = [...corp.wrote].filter(([a]) => a.startsWith("kf:")).reduce((n, [, v]) => n + v.length, 0);
          const storedNow = stored.get(corp.corpId) ?? 0;
          if (storedNow === 0 || storedNow >= written) continue;
          replicas.current.get(slot)?.child.kill("SIGKILL");
          return { slot, corp: corp.name, stored: storedNow, written, queued, inFlight: calls.map((x) => x.api), at: Date.now() };
        }
        return undefined;
      },
      30_000,
      "a replica in the middle of a KF pull and of a delivery",
    );
    await replicas.kill(kill.slot);
    const victimCalls = upstreams.calls.filter((x) => x.replica === kill.slot).length;
    killed(kill.slot);

    // the others go on alone until the traffic is in and one of them has taken over the killed one's
    // KF pull (its lease runs out after 15 s); then the killed one comes back (a new process)
    await trafficDone;
    const victimKf = corps.find((c) => c.name === kill.corp) as Corp;
    const takeover = await eventually(
      () => upstreams.calls.find((x) => x.api === "kf/sync_msg" && x.replica !== kill.slot && x.started > kill.at && x.body.includes(victimKf.kfid) && x.status === 200),
      30_000,
      "another replica pulling the killed one's KF account",
    );
    await replicas.start(kill.slot);
    balancer.up(kill.slot);

    // --- wait until everything arrived and nothing is left to do -------------------------------------
    const delivered = (c: Corp, api: string) => c.sim.sent.filter((s) => s.api === api && s.delivered);
    const textOf = (s: { body: Record<string, unknown> }) => (s.body.text as { content: string }).content;
    const missing = async (): Promise<string[]> => {
      const out: string[] = [];
      for (const c of corps) {
        const got = new Set(c.omni.received.map((r) => `${r.body.FromUserId}\u0000${r.body.Content}`));
        for (const [a, contents] of c.wrote) for (const m of contents) if (!got.has(`${a}\u0000${m}`)) out.push(`inbound ${a} ${m}`);
        const sent = [...delivered(c, "kf/send_msg"), ...delivered(c, "message/send")].map(textOf).join("\n");
        for (const [a, answers] of c.answered) {
          if (a.startsWith("bot:")) continue;
          for (const text of answers) if (!sent.includes(text.slice(0, 30))) out.push(`outbound ${a} ${text.slice(0, 30)}`);
        }
      }
      for (const [a, s] of streams) if (s.corp.sim.botStream(s.corp.bot.botId, s.streamId)?.status !== "finished") out.push(`stream of ${a} not finished`);
      const live = Number((await sql("SELECT count(*) AS n FROM $S.outbox WHERE state IN ('pending', 'inflight')"))[0]?.n);
      if (live > 0) out.push(`${live} outbox entries pending or in flight`);
      const calls = upstreams.inFlight();
      if (calls.length > 0) out.push(`${calls.length} calls to WeCom or the 全媒体 in flight`);
      return out;
    };
    try {
      await eventually(async () => (await missing()).length === 0, SETTLE_MS, "everything delivered and the outbox empty");
    } catch (e) {
      throw new Error(`${(e as Error).message}; still missing:\n${(await missing()).slice(0, 40).join("\n")}`);
    }
    const settledAt = Date.now();

    // --- the scenario did what it says ----------------------------------------------------------------
    expect(kill.inFlight, "the killed replica had a pull, deliveries and sends in flight").toEqual(expect.arrayContaining(["kf/sync_msg", "omni", "kf/send_msg", "message/send"]));
    expect(kill.stored, "part of its account's KF messages were stored at the kill, not all").toBeLessThan(kill.written);
    expect(victimCalls, "the killed replica worked before the kill").toBeGreaterThan(0);
    // WeCom gave up on no callback; the deliberately lost answers were retried on another replica
    expect(callbackResults.filter((r) => !r.delivered), "callbacks WeCom gave up on").toEqual([]);
    const retried = balancer.log.filter((b) => b.lost).map((b) => b.info.key);
    expect(retried.length, "callbacks whose answer was lost").toBeGreaterThanOrEqual(12);
    for (const key of retried) {
      const by = balancer.servedBy(key);
      expect(new Set(by).size, `the retry of ${key} went to another replica`).toBeGreaterThanOrEqual(2);
    }
    const served = (kind: string) => new Set(balancer.log.filter((b) => b.info.kind === kind && b.status === 200).map((b) => b.replica));
    for (const kind of ["app", "bot", "omni"]) expect(served(kind).size, `${kind} requests spread over the replicas`).toBeGreaterThanOrEqual(2);
    expect(balancer.log.filter((b) => b.replica === kill.slot && b.at < kill.at && b.status === 200).length, "requests the killed replica served").toBeGreaterThan(0);
    for (const [a, s] of streams) {
      const refreshedBy = new Set(balancer.servedBy(`stream:${s.streamId}`));
      expect(refreshedBy.size, `the stream of ${a} was refreshed through different replicas`).toBeGreaterThanOrEqual(2);
    }

    // --- inbound: everything once (after dedup by Tag.id), in order, and only to its own corp -----------------
    for (const c of corps) {
      const byId = new Map<string, string>();
      const perConversation = new Map<string, string[]>();
      let repeats = 0;
      for (const r of c.omni.received) {
        const id = tagOf(r.body.Tag).id;
        expect(id, `Tag.id of ${r.body.FromUserId} ${r.body.Content}`).toEqual(expect.any(String));
        const seen = byId.get(id as string);
        if (seen !== undefined) {
          repeats++;
          expect(`${r.body.FromUserId} ${r.body.Content}`, "a repeat carries the same message").toBe(seen);
          continue;
        }
        byId.set(id as string, `${r.body.FromUserId} ${r.body.Content}`);
        push(perConversation, r.body.FromUserId, r.body.Content);
      }
      expect(Object.fromEntries(perConversation), `corp ${c.name}: each message once, in the order written`).toEqual(Object.fromEntries(c.wrote));
      for (const r of c.omni.received) {
        const own = [`kf:${c.corpId}:`, `app:${c.corpId}:`, `bot:${c.bot.botId}:`].some((p) => r.body.FromUserId.startsWith(p));
        expect(own, `corp ${c.name}'s 全媒体 got ${r.body.FromUserId}`).toBe(true);
      }
      c.repeats = repeats;
    }

    // --- outbound: every accepted answer once (after WeCom's dedup), in order ---------------------------
    for (const c of corps) {
      const kf = c.sim.sent.filter((s) => s.api === "kf/send_msg");
      expect(kf.filter((s) => !s.delivered), "KF sends not delivered").toEqual([]);
      expect(new Set(kf.map((s) => s.msgid)).size, "KF msgids").toBe(kf.length);
      const app = c.sim.sent.filter((s) => s.api === "message/send");
      expect(app.filter((s) => !s.delivered && s.dropped !== "duplicate"), "app sends dropped for another reason than the duplicate check").toEqual([]);
      expect(c.sim.sent.filter((s) => s.api === "aibot/response"), "nothing went by a response_url").toEqual([]);
      for (const [to, answers] of c.answered) {
        if (to.startsWith("bot:")) continue;
        const [api, user] = to.startsWith("kf:") ? ["kf/send_msg", to.split(":")[3]] : ["message/send", to.split(":")[3]];
        const got = c.sim.sent.filter((s) => s.api === api && s.delivered && s.body.touser === user).map(textOf);
        const r = regroup(got, answers);
        expect(r, `${to}: each answer delivered once, in order`).toEqual({ answers, parts: answers.map((a) => (Buffer.byteLength(a) > 2048 ? 2 : 1)), leftover: [] });
      }
      for (const user of c.botUsers) {
        const to = botAddress(c, user);
        const s = streams.get(to);
        const stream = c.sim.botStream(c.bot.botId, s?.streamId ?? "");
        const [a1, a2] = c.answered.get(to) ?? [];
        const final = `${a1}\n\n${a2}`;
        expect(stream?.status, `the stream of ${to}`).toBe("finished");
        expect(stream?.shown, `the stream of ${to} finished with the agents' answers, once`).toBe(final);
        const frames = (stream?.frames ?? []).filter((f) => f.accepted);
        expect(frames.filter((f) => f.finish).map((f) => f.content), `${to}: one finishing frame`).toEqual([final]);
        // never a piece twice, never backwards: the frames only ever show these, in this order
        const stages = [PLACEHOLDER, a1, final];
        expect(frames.map((f) => f.content).filter((x) => !stages.includes(x)), `${to}: frames showing anything else`).toEqual([]);
        const seq = frames.map((f) => stages.indexOf(f.content ?? ""));
        expect(seq, `${to}: the stream only moves forward`).toEqual([...seq].sort((x, y) => x - y));
      }
      // no notice of a failed or waiting message to the agents
      expect(c.omni.received.filter((r) => r.body.MsgType === "event"), "notices to the 全媒体").toEqual([]);
    }

    // --- the store agrees: nothing live, nothing dead, lanes and counters square -------------------------
    expect(await sql("SELECT state, count(*)::int AS n FROM $S.outbox WHERE state <> 'done' GROUP BY state"), "outbox entries not done").toEqual([]);
    expect(await sql("SELECT tenant, kind, conversation_id, live FROM $S.outbox_lanes WHERE live <> 0"), "lanes with live entries").toEqual([]);
    const counters = await sql(
      `SELECT c.tenant, c.state, c.n::int AS counted, coalesce(o.n, 0)::int AS actual
         FROM (SELECT tenant, state, sum(n) AS n FROM $S.outbox_counts GROUP BY tenant, state) c
         LEFT JOIN (SELECT tenant, state, count(*) AS n FROM $S.outbox GROUP BY tenant, state) o USING (tenant, state)
        WHERE c.n <> coalesce(o.n, 0)`,
    );
    expect(counters, "outbox counters that disagree with the outbox").toEqual([]);
    expect(await sql("SELECT tenant, channel, key, count(*)::int AS n FROM $S.messages GROUP BY 1, 2, 3 HAVING count(*) > 1"), "messages stored twice").toEqual([]);

    // what the killed replica had in flight took effect and was sent again by another: each dedup did its part
    const wecomDedup = corps.reduce((n, c) => n + c.sim.sent.filter((s) => s.api === "message/send" && s.dropped === "duplicate").length, 0);
    const kfRepeats = upstreams.calls.filter((x) => x.api === "kf/send_msg" && x.errcode === 40058).length;
    expect(wecomDedup, "app messages sent again and dropped by WeCom's duplicate check").toBeGreaterThan(0);
    expect(kfRepeats, "KF parts sent again and refused by WeCom as a repeated msgid").toBeGreaterThan(0);
    expect(corpA.repeats + corpB.repeats, "messages the 全媒体 got again (the same Tag.id)").toBeGreaterThan(0);
    console.info(
      `replicas: serving at +${upAt - t0} ms; killed slot ${kill.slot} at +${kill.at - t0} ms (corp ${kill.corp}: ${kill.stored}/${kill.written} KF stored, ${kill.queued} answers queued, in flight: ${kill.inFlight.join(", ")}); ` +
        `replica ${takeover.replica} pulled on at +${takeover.started - t0} ms; settled at +${settledAt - t0} ms; 全媒体 repeats dropped by Tag.id: ${corps.map((c) => `${c.name} ${c.repeats}`).join(", ")}; ` +
        `WeCom dropped ${wecomDedup} app duplicates and refused ${kfRepeats} repeated KF msgids; callbacks retried: ${callbackResults.filter((r) => r.tries > 1).length}; ` +
        `answers retried: ${answerLog.filter((x) => x.attempt > 0).length}`,
    );
    if (process.env.WB_REPLICAS_LOG) dumpLogs();
  }, 150_000);
});
