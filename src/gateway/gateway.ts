/**
 * The gateway's composition root: builds the protocol core, the store, the clients and the
 * workers, and routes each request to its endpoint module (`endpoints/`: app and bot callbacks,
 * the archive push, media, the admin API, probes), each a plain function of a request, so the
 * HTTP framework stays an edge.
 *
 * Each configured corp (one for `wecom.corpId`, several for `wecom.corps`) has its context
 * (`corp.ts`): app and bot callbacks are found by name across the corps and run in their corp's
 * context; archive pushes go to the corp of their secret; 全媒体 requests are checked against each
 * configured 全媒体 credential and routed by `ToUserId` within the corps of the one that signed
 * them; outbox entries run with the senders and the 全媒体 client of their tenant's corp.
 * @module
 */
import { randomBytes } from "node:crypto";
import { HttpClient } from "../clients/http.js";
import { OmniClient } from "../clients/omni.js";
import { WeComClient, type WeComCredentials } from "../clients/wecom.js";
import { type Config, corpsOf, isManyCorps, type OmniConfig, omniCredentialKey } from "../config.js";
import { BridgeError } from "../errors.js";
import { createLogger, type Logger } from "../log.js";
import type { Channel, UnifiedMessage } from "../model.js";
import { Leases } from "../store/leases.js";
import type { OutboxEntry, OutboxInsert, Store } from "../store/types.js";
import type { ConversationAddress } from "../wecom/address.js";
import { WeComCrypto } from "../wecom/crypto.js";
import { BotWsConnector, type BotWsStatus, type BotWsTiming } from "./bot-ws.js";
import { CorpContext, type CorpHost, type CorpSenders } from "./corp.js";
import { DeliveryWorker } from "./delivery.js";
import { adminApi } from "./endpoints/admin.js";
import { type AppEndpoint, appCallback } from "./endpoints/app.js";
import { type ArchiveTarget, archivePush } from "./endpoints/archive.js";
import { type BotEndpoint, botCallback } from "./endpoints/bot.js";
import { error, type GatewayRequest, type GatewayResponse, header, json } from "./endpoints/http.js";
import { type OmniRouting, omniMessage } from "./endpoints/omni.js";
import { accounts, omniName } from "./console/accounts.js";
import { HealthHistory } from "./console/history.js";
import { type AttemptOutcome, LiveFeed } from "./console/live.js";
import { Sessions } from "./console/session.js";
import { type ConsoleFile, consoleDir, loadConsoleFiles } from "./console/static.js";
import type { Accounts, DoctorCheck, PlaygroundHooks } from "./console/types.js";
import { checkConfig, doctorRecords } from "./doctor.js";
import { adminReplay } from "./endpoints/admin.js";
import { type ConsoleHost, consoleEndpoint, writeAuth } from "./endpoints/console.js";
import { handoffEntries } from "./handoff.js";
import { KfPuller } from "./kf-puller.js";
import { MediaStore } from "./media.js";
import { apiLabel, Metrics, wecomErrcodeLabel } from "./metrics.js";
import { kfInbound, observeKfStored } from "./outbound/kf-observer.js";
import type { Sender } from "./outbound/types.js";
import { Ingestor } from "./pipeline.js";
import { Retention } from "./retention.js";

/** The path of the staffService endpoint of a 全媒体's settings. */
function omniPathOf(omni: OmniConfig): string {
  return `${omni.pathPrefix.replace(/\/+$/, "")}/staffService/message`;
}

/** The request and answer shapes of every endpoint (defined in `endpoints/http.ts`). */
export type { GatewayRequest, GatewayResponse } from "./endpoints/http.js";

/** How long a stopping gateway lets attempts in flight finish, ms. */
export const STOP_GRACE_MS = 10_000;

/** Options of {@link Gateway}. */
export interface GatewayOptions {
  config: Config;
  store: Store;
  log?: Logger;
  now?: () => number;
  /** Called when a message is stored (the sandbox's live log). */
  onStored?: (message: UnifiedMessage) => void;
  /** Key of media links when `config.mediaSecret` is unset (runGateway keeps one in the store). */
  mediaSecret?: string;
  /** Timers of long-connection bots (tests; the defaults are WeCom's). */
  botWs?: BotWsTiming;
  /** The console's Playground (the sandbox's simulators); absent: the page says it is sandbox-only. */
  playground?: PlaygroundHooks;
}

/** The gateway. */
export class Gateway implements CorpHost, ConsoleHost {
  readonly config: Config;
  readonly store: Store;
  readonly log: Logger;
  readonly metrics: Metrics;
  /** Leases shared with the other replicas (see store/leases.ts). */
  readonly leases: Leases;
  readonly wecom: WeComClient;
  /** The client of the top-level 全媒体 (`omni`), the one of every corp without its own. */
  readonly omni: OmniClient;
  /** The keep-alive HTTP client of every outgoing call. */
  readonly http: HttpClient;
  readonly media: MediaStore;
  readonly ingestor: Ingestor;
  readonly delivery: DeliveryWorker;
  /** Every corp the gateway serves, in the configuration's order (one for `wecom.corpId`). */
  readonly corps: readonly CorpContext[];
  /** Prunes what is past its retention, on a timer. */
  readonly retention: Retention;
  readonly #byTenant = new Map<string, CorpContext>();
  readonly #byBotId = new Map<string, CorpContext>();
  readonly #apps = new Map<string, { endpoint: AppEndpoint; corp: CorpContext }>();
  readonly #bots = new Map<string, { endpoint: BotEndpoint; corp: CorpContext }>();
  /** Long-connection bots by botId (websocket mode): no callback path. */
  readonly #botWs = new Map<string, BotWsConnector>();
  /** Their names (a callback to one is answered 404 with the reason). */
  readonly #botWsNames = new Set<string>();
  /** The corps that take archive pushes, in the configuration's order. */
  readonly #archiveTargets: ArchiveTarget[];
  /** The staffService paths, each with the credentials that may sign its requests. */
  readonly #omniRoutes = new Map<string, OmniRouting>();
  /** Senders of entries whose tenant is no configured corp (a corp removed from the configuration): they refuse. */
  readonly #orphanSenders: CorpSenders;
  readonly #now: () => number;
  readonly #onStored: ((m: UnifiedMessage) => void) | undefined;
  /** The console's Playground, in the sandbox. */
  readonly playground: PlaygroundHooks | undefined;
  /** The console's Live feed (what crosses this replica). */
  readonly live: LiveFeed;
  /** The console's Health page: the last hour of figures. */
  readonly health: HealthHistory;
  /** The console's sessions. */
  readonly sessions: Sessions;
  #consoleFiles: Map<string, ConsoleFile> | undefined;
  /** The last WeCom failure of each app's calls (by configured name: bounded). */
  readonly #appErrors = new Map<string, string>();
  /** The last delivery to each corp's 全媒体, by tenant (corps sharing a 全媒体 share the record; time 0: none yet). */
  readonly #omniLast = new Map<string, { time: number; ok: boolean; error: string | null }>();

  /** @param options configuration, store and hooks */
  constructor(options: GatewayOptions) {
    const cfg = options.config;
    this.config = cfg;
    this.store = options.store;
    this.log = options.log ?? createLogger();
    this.#now = options.now ?? Date.now;
    this.#onStored = options.onStored;
    this.playground = options.playground;
    this.live = new LiveFeed(this.#now);
    this.sessions = new Sessions(cfg.adminToken, this.store, this.#now, cfg.publicUrl.startsWith("https:"));
    this.metrics = new Metrics(this.store);
    this.http = new HttpClient({ timeoutMs: cfg.delivery.timeoutMs });
    // one KF pull per account, one retention run and one gettoken per app at a time, across replicas
    this.leases = new Leases(this.store, this.#now);
    this.wecom = new WeComClient({ apiBase: cfg.wecom.apiBase, store: this.store, timeoutMs: cfg.delivery.timeoutMs, now: this.#now, http: this.http, leases: this.leases });
    // label values from fixed lists (metrics.ts): an unknown api or undocumented errcode is `other`
    this.wecom.onResult = (api, errcode) => this.onWeComResult(api, errcode);
    // one client per 全媒体: its timestamps strictly increase, whichever corp sends
    const omniClients = new Map<string, OmniClient>();
    const omniClient = (o: OmniConfig): OmniClient => {
      const key = JSON.stringify([o.baseUrl, o.version, o.appId, o.secret]);
      let c = omniClients.get(key);
      if (c === undefined) {
        c = new OmniClient({
          baseUrl: o.baseUrl,
          version: o.version,
          appId: o.appId,
          secret: o.secret,
          timeoutMs: cfg.delivery.timeoutMs,
          now: this.#now,
          http: this.http,
          // replicas sign from timestamp blocks reserved in the store (never the same millisecond)
          ...(this.store.engine === "postgres" ? { store: this.store } : {}),
        });
        omniClients.set(key, c);
      }
      return c;
    };
    this.omni = omniClient(cfg.omni);
    const window = cfg.wecom.callbackWindowSec > 0 ? { timestampWindowSec: cfg.wecom.callbackWindowSec, clock: this.#now } : {};
    const corps: CorpContext[] = [];
    const credentials = new Map<string, { path: string; omni: OmniConfig; corps: Set<string> }>();
    for (const corp of corpsOf(cfg)) {
      const ctx = new CorpContext(this, corp, omniClient(corp.omni));
      corps.push(ctx);
      this.#byTenant.set(corp.corpId, ctx);
      for (const app of corp.apps) {
        this.#apps.set(app.name, { corp: ctx, endpoint: { cfg: app, crypto: new WeComCrypto({ token: app.token, encodingAESKey: app.encodingAESKey, receiveId: corp.corpId, ...window }) } });
      }
      for (const bot of corp.bots) {
        if (bot.mode === "websocket") {
          this.#botWsNames.add(bot.name);
          this.#botWs.set(bot.botId, new BotWsConnector({ ctx, bot, leases: this.leases, onResult: (api, errcode) => this.onWeComResult(api, errcode), ...(options.botWs ? { timing: options.botWs } : {}) }));
        } else this.#bots.set(bot.name, { corp: ctx, endpoint: { cfg: bot, crypto: new WeComCrypto({ token: bot.token ?? "", encodingAESKey: bot.encodingAESKey ?? "", receiveId: "", ...window }) } });
        if (!this.#byBotId.has(bot.botId)) this.#byBotId.set(bot.botId, ctx);
      }
      // the corps that share a 全媒体 credential are one candidate (config validation made their checks agree)
      const key = omniCredentialKey(corp.omni);
      const credential = credentials.get(key) ?? { path: omniPathOf(corp.omni), omni: corp.omni, corps: new Set<string>() };
      credential.corps.add(corp.corpId);
      credentials.set(key, credential);
    }
    this.corps = corps;
    const byOmni = new Map<string, { time: number; ok: boolean; error: string | null }>();
    for (const c of corps) {
      const name = omniName(c.corp, cfg.omni.baseUrl, cfg.omni.appId);
      const last = byOmni.get(name) ?? { time: 0, ok: false, error: null };
      byOmni.set(name, last);
      this.#omniLast.set(c.tenant, last);
    }
    this.#archiveTargets = corps.flatMap((c) => (c.corp.archive !== undefined ? [{ ctx: c, archive: c.corp.archive }] : []));
    for (const c of credentials.values()) {
      const routing = this.#omniRoutes.get(c.path) ?? { credentials: [], corpOf: (a: ConversationAddress) => this.#corpOf(a) };
      this.#omniRoutes.set(c.path, { ...routing, credentials: [...routing.credentials, { omni: c.omni, corps: c.corps }] });
    }
    this.#orphanSenders = new CorpContext(this, { corpId: "", apps: [], bots: [], archive: undefined, omni: cfg.omni }, this.omni).senders;
    // runGateway passes the secret kept in the store; a gateway built directly without one signs
    // with a per-process key (its links end with the process)
    const mediaSecret = cfg.mediaSecret ?? options.mediaSecret ?? randomBytes(32).toString("hex");
    this.media = new MediaStore({ dir: cfg.mediaDir, publicUrl: cfg.publicUrl, secret: mediaSecret, ttlSec: cfg.mediaLinkTtlSec, store: this.store, now: this.#now });
    // one batch committing at a time, on both engines: the items arriving meanwhile make the next
    // batch larger. On PostgreSQL several batches at once gained nothing with one replica and cost
    // a fifth of the throughput with two (smaller batches waiting on each other's lane and summary
    // rows): see the README's PostgreSQL benchmark
    this.ingestor = new Ingestor(this.store, 256, this.#now);
    this.ingestor.onCommit = (items, results) => {
      let stored = 0;
      results.forEach((r, i) => {
        const item = items[i];
        const m = item?.message;
        if (r.stored && m) {
          stored++;
          this.live.stored(item?.tenant ?? "", m, r.seq);
          this.#onStored?.(m);
        }
      });
      if (stored > 0) this.delivery.notify();
    };
    this.delivery = new DeliveryWorker({
      store: this.store,
      // a message goes to its corp's 全媒体 (a tenant no longer configured: the top-level one)
      omni: (tenant) => this.#byTenant.get(tenant)?.omni ?? this.omni,
      wecom: this.wecom,
      media: this.media,
      policy: cfg.delivery,
      leaseMs: cfg.delivery.leaseSec * 1000,
      mediaMaxBytes: cfg.limits.mediaBytes,
      // app and bot names are unique across the deployment: the name finds the corp
      appCredentials: (name) => {
        const a = this.#apps.get(name);
        return a ? { corpId: a.corp.tenant, secret: a.endpoint.cfg.secret } : undefined;
      },
      botKey: (name) => this.#bots.get(name)?.endpoint.cfg.encodingAESKey,
      senders: { kf_send: this.#sender("kf_send"), app_send: this.#sender("app_send"), bot_reply: this.#sender("bot_reply") },
      log: this.log,
      metrics: this.metrics,
      now: this.#now,
      onAttempt: (entry, outcome, error) => this.#attempted(entry, outcome, error),
    });
    for (const corp of corps) corp.puller = this.#kfPuller(corp);
    this.health = new HealthHistory({ registry: this.metrics.registry, counts: this.live.counts, outboxCounts: () => this.store.outboxCounts(), now: this.#now });
    if (this.#botWs.size > 0) this.metrics.botWs(() => this.botWsStatus());
    this.retention = new Retention({
      config: cfg,
      store: this.store,
      removeFile: async (row) => void (await this.media.files.remove(row.tenant, row.id)),
      sweepPartial: (before) => this.media.files.sweepPartial(before),
      log: this.log,
      metrics: this.metrics,
      now: this.#now,
      leases: this.leases,
    });
  }

  /** The sender of an outbound kind: each entry goes to the sender of its corp (its tenant). */
  #sender(kind: keyof CorpSenders): Sender {
    const of = (entry: OutboxEntry) => (this.#byTenant.get(entry.tenant)?.senders ?? this.#orphanSenders)[kind];
    return {
      send: (entry) => of(entry).send(entry),
      gaveUp: async (entry) => {
        const s = of(entry);
        if (s.gaveUp !== undefined) await s.gaveUp(entry);
      },
    };
  }

  /** The KF puller of a corp's KF app (the first with `kf: true`), or undefined without one. */
  #kfPuller(corp: CorpContext): KfPuller | undefined {
    const cfg = this.config;
    const kfApp = corp.corp.apps.find((a) => a.kf);
    if (kfApp === undefined) return undefined;
    return new KfPuller({
      store: this.store,
      wecom: this.wecom,
      credentials: { corpId: corp.tenant, secret: kfApp.secret } satisfies WeComCredentials,
      appName: kfApp.name,
      deliverHistory: cfg.kf.deliverHistory,
      firstPullGraceSec: cfg.kf.firstPullGraceSec,
      limit: cfg.kf.pageSize,
      pollIntervalSec: cfg.kf.pollIntervalSec,
      log: this.log,
      metrics: this.metrics,
      now: this.#now,
      leases: this.leases,
      extra: (m) => {
        const kf = kfInbound(cfg, m);
        return { entries: [...handoffEntries(cfg.handoff, m), ...kf.entries], ...(kf.effect ? { effect: kf.effect } : {}) };
      },
      onStored: async (messages, seqs) => {
        messages.forEach((m, i) => {
          this.live.stored(corp.tenant, m, seqs[i]);
          this.#onStored?.(m);
        });
        try {
          await observeKfStored(corp, messages);
        } catch (e) {
          this.log.error("KF msg_send_fail not reported", { error: (e as Error).message });
        }
        this.delivery.notify();
      },
    });
  }

  /** The configured corp of a conversation address: by its corpId, or by a bot's botId. */
  #corpOf(a: ConversationAddress): CorpContext | undefined {
    return a.channel === "bot" ? this.#byBotId.get(a.botId) : this.#byTenant.get(a.corpId);
  }

  /** The corp with this CorpID (tenant), if configured. */
  corp(tenant: string): CorpContext | undefined {
    return this.#byTenant.get(tenant);
  }

  /** Start the workers. */
  start(): void {
    this.health.start();
    this.delivery.start();
    this.retention.start();
    // catch up on KF messages that arrived while the gateway was down, then poll
    for (const corp of this.corps) void corp.puller?.start();
    for (const c of this.#botWs.values()) c.start();
  }

  /**
   * Stop the workers: no new work is taken, what is in flight finishes within
   * {@link STOP_GRACE_MS} (an attempt still running then is abandoned: its entry goes back to the
   * store for another replica), and this process's leases are released, so that another replica
   * takes over at once (a rolling restart loses no time).
   */
  async stop(): Promise<void> {
    this.health.stop();
    await this.retention.stop();
    await Promise.all([...this.#botWs.values()].map((c) => c.stop()));
    await Promise.all(this.corps.map((c) => c.puller?.stop()));
    await this.ingestor.drain();
    await this.delivery.stop(STOP_GRACE_MS);
    await this.leases.releaseAll();
    this.http.close();
  }

  /** The paths of the 全媒体's staffService endpoint (one per `pathPrefix` of the corps' 全媒体). */
  get omniPaths(): string[] {
    return [...this.#omniRoutes.keys()];
  }

  /** True for a path whose endpoint answers an oversized body itself (the 全媒体's: HTTP 200 and an errcode). */
  answersOversize(path: string): boolean {
    return this.#omniRoutes.has(path);
  }

  /** Count a WeCom answer of a call made outside the WeCom client (a bot's response_url). */
  onWeComResult(api: string, errcode: number): void {
    this.metrics.wecomErrcodes.inc({ api: apiLabel(api), errcode: wecomErrcodeLabel(errcode) });
  }

  /** New outbound entries were queued (the console's Live page shows them): wake the outbox worker. */
  notifyOutbound(queued?: { tenant: string; ids: number[]; entries: OutboxInsert[] }): void {
    if (queued !== undefined) this.live.queued(queued.tenant, queued.ids, queued.entries);
    this.delivery.notify();
  }

  /** An outbox attempt ended: the Live page, and the Accounts page's last results. */
  #attempted(entry: OutboxEntry, outcome: AttemptOutcome, error?: string): void {
    try {
      this.#recordAttempt(entry, outcome, error);
    } catch (e) {
      // what the console shows must never change what the outbox records
      this.log.error("console: attempt not recorded", { outbox: entry.id, error: (e as Error)?.message });
    }
  }

  #recordAttempt(entry: OutboxEntry, outcome: AttemptOutcome, error?: string): void {
    this.live.attempt(entry, outcome, error);
    if (outcome === "wait" || outcome === "later") return;
    const corp = this.#byTenant.get(entry.tenant);
    if (corp === undefined) return;
    if (entry.kind === "omni") {
      // every delivery passes here: the record of its 全媒体 (one per corp, made at start) changes in place
      const last = this.#omniLast.get(entry.tenant);
      if (last === undefined) return;
      last.time = this.#now();
      last.ok = outcome === "done";
      last.error = last.ok ? null : (error ?? outcome);
      return;
    }
    const app = this.#appOfEntry(corp, entry);
    if (app === undefined) return;
    if (outcome === "done") this.#appErrors.delete(app);
    else this.#appErrors.set(app, (error ?? outcome).slice(0, 300));
  }

  /** The app that sends an outbound entry: the KF app for `kf_send`, the agentId of an `app:` conversation for `app_send`. */
  #appOfEntry(corp: CorpContext, entry: OutboxEntry): string | undefined {
    if (entry.kind === "kf_send") return corp.corp.apps.find((a) => a.kf)?.name;
    if (entry.kind !== "app_send") return undefined;
    const agentId = Number((entry.conversationId ?? "").split(":")[2]);
    return corp.corp.apps.find((a) => a.agentId === agentId)?.name;
  }

  /** The console's built files (read once; undefined when the console was not built). */
  consoleFiles(): Map<string, ConsoleFile> | undefined {
    if (this.#consoleFiles === undefined) {
      const dir = consoleDir();
      if (dir !== undefined) this.#consoleFiles = loadConsoleFiles(dir);
    }
    return this.#consoleFiles;
  }

  /** A same-origin link to a stored media file (the console shows it; the signed path of {@link MediaStore.link}). */
  mediaLink(tenant: string, id: string): string {
    const u = new URL(this.media.link(tenant, id));
    return `${u.pathname}${u.search}`;
  }

  /** The console's Accounts page. */
  accounts(): Promise<Accounts> {
    return accounts(
      {
        store: this.store,
        corps: this.corps,
        topOmniBaseUrl: this.config.omni.baseUrl,
        botWsStatus: () => this.botWsStatus(),
        tokenState: (corpId, secret) => this.wecom.tokenState({ corpId, secret }),
        appError: (name) => this.#appErrors.get(name),
        omniLast: (tenant) => {
          const last = this.#omniLast.get(tenant);
          return last === undefined || last.time === 0 ? null : { ...last };
        },
        now: this.#now,
      },
      this.config.omni.appId,
    );
  }

  /** The config doctor's checks, on this gateway's configuration (the console's Doctor page). */
  async doctor(): Promise<DoctorCheck[]> {
    return doctorRecords(await checkConfig(this.config, { timeoutMs: 5000, now: this.#now }));
  }

  /** A long-connection bot has something to push: its pusher runs now when this process holds it. */
  onBotWsWork(botId: string): void {
    this.#botWs.get(botId)?.wake();
  }

  /** The long-connection bots as this replica sees them (`/readyz` details, `/metrics`). */
  botWsStatus(): BotWsStatus[] {
    return [...this.#botWs.values()].map((c) => c.status());
  }

  /** The gateway's clock (ms). */
  now(): number {
    return this.#now();
  }

  /** Route one request to its endpoint module. */
  async handle(req: GatewayRequest): Promise<GatewayResponse> {
    let parts: string[];
    try {
      parts = req.path.split("/").filter(Boolean).map(decodeURIComponent);
    } catch {
      return error(400, "bad_path", "the path is not valid percent-encoding");
    }
    try {
      const [first, second, third] = parts;
      if (first === "wecom" && second === "app" && parts.length === 3) {
        const app = this.#apps.get(third as string);
        return await appCallback(app?.corp ?? this.#anyCorp, third as string, app?.endpoint, req);
      }
      if (first === "wecom" && second === "bot" && parts.length === 3) {
        const bot = this.#bots.get(third as string);
        if (bot === undefined && this.#botWsNames.has(third as string)) {
          return json(404, { errcode: "websocket_bot", errmsg: "this bot runs in websocket mode (wecom.bots[].mode): WeCom sends its messages over the long connection, not to a callback URL" });
        }
        return await botCallback(bot?.corp ?? this.#anyCorp, third as string, bot?.endpoint, req);
      }
      if (req.path === "/archive/push") return await archivePush(this, this.#archiveTargets, req, { recordTenant: isManyCorps(this.config) ? "corp" : "record" });
      const omni = this.#omniRoutes.get(req.path);
      if (omni !== undefined) return await omniMessage(this, omni, req);
      if (req.path === "/healthz") return json(200, { status: "ok" });
      if (req.path === "/readyz") {
        // the bots' connections are details: only one replica holds each, so they never decide readiness
        const bots = this.#botWs.size > 0 ? { bots: this.botWsStatus() } : {};
        return (await this.store.ping()) ? json(200, { status: "ready", store: this.store.engine, ...bots }) : json(503, { status: "store unreachable", ...bots });
      }
      if (req.path === "/metrics") return { status: 200, headers: { "content-type": this.metrics.registry.contentType }, body: await this.metrics.registry.metrics() };
      if (first === "media" && parts.length === 3) return await this.media.serve(second as string, third as string, req.query.get("e"), req.query.get("s"));
      if (first === "console") return await consoleEndpoint(this, req, parts.slice(1));
      if (first === "admin" && second === "outbox" && third === "replay" && parts.length === 3) {
        if (req.method !== "POST") return { ...error(405, "method_not_allowed", "use POST"), headers: { "content-type": "application/json; charset=utf-8", allow: "POST" } };
        const who = await writeAuth(this, req);
        return "actor" in who ? await adminReplay(this.store, req.body, who, this.#now()) : who;
      }
      if (first === "admin") return await adminApi(this.store, this.config.adminToken, parts.slice(1), { method: req.method, query: req.query, authorization: header(req, "authorization") });
      // answers never repeat what the caller sent (a path may carry anything, a secret included)
      return error(404, "not_found", "no such endpoint (see the README's endpoint list)");
    } catch (e) {
      this.log.error("request failed", { path: req.path, error: e instanceof BridgeError ? e.message : (e as Error)?.message });
      return error(500, "internal", "internal error");
    }
  }

  /** A corp for answers that need none (an unknown app or bot: 404). */
  get #anyCorp(): CorpContext {
    return this.corps[0] as CorpContext;
  }

  /** Count an ingested callback: stored, or a duplicate the ledger already had. */
  countStored(channel: Channel, stored: boolean): void {
    // labelled children are cached by prom-client per label set; inc on them skips the hashing
    if (stored) this.#stored(channel).inc();
    else {
      this.metrics.callbacks.inc({ channel, outcome: "duplicate" });
      this.metrics.dedupHits.inc({ channel });
    }
  }

  readonly #storedCounters = new Map<Channel, { inc(): void }>();
  #stored(channel: Channel): { inc(): void } {
    let c = this.#storedCounters.get(channel);
    if (c === undefined) {
      c = this.metrics.callbacks.labels({ channel, outcome: "stored" });
      this.#storedCounters.set(channel, c);
    }
    return c;
  }
}
