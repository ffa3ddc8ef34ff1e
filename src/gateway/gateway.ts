/**
 * The gateway's composition root: builds the protocol core, the store, the clients and the
 * workers, and routes each request to its endpoint module (`endpoints/`: app and bot callbacks,
 * the archive push, media, the admin API, probes), each a plain function of a request, so the
 * HTTP framework stays an edge.
 * @module
 */
import { randomBytes } from "node:crypto";
import { HttpClient } from "../clients/http.js";
import { OmniClient } from "../clients/omni.js";
import { WeComClient, type WeComCredentials } from "../clients/wecom.js";
import type { Config } from "../config.js";
import { BridgeError } from "../errors.js";
import { createLogger, type Logger } from "../log.js";
import type { Channel, UnifiedMessage } from "../model.js";
import type { Store } from "../store/types.js";
import { WeComCrypto } from "../wecom/crypto.js";
import { DeliveryWorker } from "./delivery.js";
import { adminApi } from "./endpoints/admin.js";
import { type AppEndpoint, appCallback } from "./endpoints/app.js";
import { archivePush } from "./endpoints/archive.js";
import { type BotEndpoint, botCallback } from "./endpoints/bot.js";
import { type EndpointContext, error, type GatewayRequest, type GatewayResponse, header, json } from "./endpoints/http.js";
import { omniMessage, type OmniEndpointContext } from "./endpoints/omni.js";
import { handoffEntries } from "./handoff.js";
import { KfPuller } from "./kf-puller.js";
import { MediaStore, removeMediaFile, sweepPartialFiles } from "./media.js";
import { apiLabel, Metrics, wecomErrcodeLabel } from "./metrics.js";
import { Ingestor } from "./pipeline.js";
import { AppSender } from "./outbound/app.js";
import { BotSender } from "./outbound/bot.js";
import { KfSender } from "./outbound/kf.js";
import { kfInbound, observeKfStored } from "./outbound/kf-observer.js";
import type { OutboundContext } from "./outbound/types.js";
import { Retention } from "./retention.js";

/** The request and answer shapes of every endpoint (defined in `endpoints/http.ts`). */
export type { GatewayRequest, GatewayResponse } from "./endpoints/http.js";

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
}

/** The gateway. */
export class Gateway implements EndpointContext, OmniEndpointContext, OutboundContext {
  readonly config: Config;
  readonly store: Store;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly wecom: WeComClient;
  readonly omni: OmniClient;
  /** The keep-alive HTTP client of every outgoing call. */
  readonly http: HttpClient;
  readonly media: MediaStore;
  readonly ingestor: Ingestor;
  readonly delivery: DeliveryWorker;
  readonly puller: KfPuller | undefined;
  /** Prunes what is past its retention, on a timer. */
  readonly retention: Retention;
  /** The CorpID: the tenant of every record. */
  readonly tenant: string;
  readonly #apps = new Map<string, AppEndpoint>();
  readonly #bots = new Map<string, BotEndpoint>();
  readonly #now: () => number;
  readonly #onStored: ((m: UnifiedMessage) => void) | undefined;

  /** @param options configuration, store and hooks */
  constructor(options: GatewayOptions) {
    const cfg = options.config;
    this.config = cfg;
    this.store = options.store;
    this.log = options.log ?? createLogger();
    this.#now = options.now ?? Date.now;
    this.#onStored = options.onStored;
    this.tenant = cfg.wecom.corpId;
    this.metrics = new Metrics(this.store);
    const window = cfg.wecom.callbackWindowSec > 0 ? { timestampWindowSec: cfg.wecom.callbackWindowSec, clock: this.#now } : {};
    for (const app of cfg.wecom.apps) {
      this.#apps.set(app.name, { cfg: app, crypto: new WeComCrypto({ token: app.token, encodingAESKey: app.encodingAESKey, receiveId: cfg.wecom.corpId, ...window }) });
    }
    for (const bot of cfg.wecom.bots) {
      this.#bots.set(bot.name, { cfg: bot, crypto: new WeComCrypto({ token: bot.token, encodingAESKey: bot.encodingAESKey, receiveId: "", ...window }) });
    }
    this.http = new HttpClient({ timeoutMs: cfg.delivery.timeoutMs });
    this.wecom = new WeComClient({ apiBase: cfg.wecom.apiBase, store: this.store, timeoutMs: cfg.delivery.timeoutMs, now: this.#now, http: this.http });
    // label values from fixed lists (metrics.ts): an unknown api or undocumented errcode is `other`
    this.wecom.onResult = (api, errcode) => this.onWeComResult(api, errcode);
    this.omni = new OmniClient({ baseUrl: cfg.omni.baseUrl, version: cfg.omni.version, appId: cfg.omni.appId, secret: cfg.omni.secret, timeoutMs: cfg.delivery.timeoutMs, now: this.#now, http: this.http });
    // runGateway passes the secret kept in the store; a gateway built directly without one signs
    // with a per-process key (its links end with the process)
    const mediaSecret = cfg.mediaSecret ?? options.mediaSecret ?? randomBytes(32).toString("hex");
    this.media = new MediaStore({ dir: cfg.mediaDir, publicUrl: cfg.publicUrl, secret: mediaSecret, ttlSec: cfg.mediaLinkTtlSec, store: this.store, now: this.#now });
    this.ingestor = new Ingestor(this.store, 256, this.#now);
    this.ingestor.onCommit = (items, results) => {
      let stored = 0;
      results.forEach((r, i) => {
        const m = items[i]?.message;
        if (r.stored && m) {
          stored++;
          this.#onStored?.(m);
        }
      });
      if (stored > 0) this.delivery.notify();
    };
    this.delivery = new DeliveryWorker({
      store: this.store,
      omni: this.omni,
      wecom: this.wecom,
      media: this.media,
      policy: cfg.delivery,
      mediaMaxBytes: cfg.limits.mediaBytes,
      appCredentials: (name) => {
        const a = this.#apps.get(name);
        return a ? { corpId: cfg.wecom.corpId, secret: a.cfg.secret } : undefined;
      },
      botKey: (name) => this.#bots.get(name)?.cfg.encodingAESKey,
      senders: { kf_send: new KfSender(this), app_send: new AppSender(this), bot_reply: new BotSender(this) },
      log: this.log,
      metrics: this.metrics,
      now: this.#now,
    });
    const kfApp = cfg.wecom.apps.find((a) => a.kf);
    this.puller = kfApp
      ? new KfPuller({
          store: this.store,
          wecom: this.wecom,
          credentials: { corpId: cfg.wecom.corpId, secret: kfApp.secret } satisfies WeComCredentials,
          appName: kfApp.name,
          deliverHistory: cfg.kf.deliverHistory,
          firstPullGraceSec: cfg.kf.firstPullGraceSec,
          limit: cfg.kf.pageSize,
          pollIntervalSec: cfg.kf.pollIntervalSec,
          log: this.log,
          metrics: this.metrics,
          now: this.#now,
          extra: (m) => {
            const kf = kfInbound(cfg, m);
            return { entries: [...handoffEntries(cfg.handoff, m), ...kf.entries], ...(kf.effect ? { effect: kf.effect } : {}) };
          },
          onStored: async (messages) => {
            for (const m of messages) this.#onStored?.(m);
            try {
              await observeKfStored(this, messages);
            } catch (e) {
              this.log.error("KF msg_send_fail not reported", { error: (e as Error).message });
            }
            this.delivery.notify();
          },
        })
      : undefined;
    this.retention = new Retention({
      config: cfg,
      store: this.store,
      removeFile: async (row) => void (await removeMediaFile(cfg.mediaDir, row)),
      sweepPartial: (before) => sweepPartialFiles(cfg.mediaDir, before),
      log: this.log,
      metrics: this.metrics,
      now: this.#now,
    });
  }

  /** Start the workers. */
  start(): void {
    this.delivery.start();
    this.retention.start();
    // catch up on KF messages that arrived while the gateway was down, then poll
    void this.puller?.start();
  }

  /** Stop the workers (after finishing what is in flight). */
  async stop(): Promise<void> {
    await this.retention.stop();
    await this.puller?.stop();
    await this.ingestor.drain();
    await this.delivery.stop();
    this.http.close();
  }

  /** The path of the 全媒体's staffService endpoint. */
  get omniPath(): string {
    return `${this.config.omni.pathPrefix.replace(/\/+$/, "")}/staffService/message`;
  }

  /** True for a path whose endpoint answers an oversized body itself (the 全媒体's: HTTP 200 and an errcode). */
  answersOversize(path: string): boolean {
    return path === this.omniPath;
  }

  /** Count a WeCom answer of a call made outside the WeCom client (a bot's response_url). */
  onWeComResult(api: string, errcode: number): void {
    this.metrics.wecomErrcodes.inc({ api: apiLabel(api), errcode: wecomErrcodeLabel(errcode) });
  }

  /** New outbound entries were queued: wake the outbox worker. */
  notifyOutbound(): void {
    this.delivery.notify();
  }

  /** Credentials of the app with this agentId, or of the KF app (`"kf"`). */
  credentials(app: number | "kf"): WeComCredentials | undefined {
    const a = app === "kf" ? this.config.wecom.apps.find((x) => x.kf) : this.config.wecom.apps.find((x) => x.agentId === app);
    return a ? { corpId: this.config.wecom.corpId, secret: a.secret } : undefined;
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
      if (first === "wecom" && second === "app" && parts.length === 3) return await appCallback(this, third as string, this.#apps.get(third as string), req);
      if (first === "wecom" && second === "bot" && parts.length === 3) return await botCallback(this, third as string, this.#bots.get(third as string), req);
      if (req.path === "/archive/push") return await archivePush(this, req);
      if (req.path === this.omniPath) return await omniMessage(this, req);
      if (req.path === "/healthz") return json(200, { status: "ok" });
      if (req.path === "/readyz") return (await this.store.ping()) ? json(200, { status: "ready", store: this.store.engine }) : json(503, { status: "store unreachable" });
      if (req.path === "/metrics") return { status: 200, headers: { "content-type": this.metrics.registry.contentType }, body: await this.metrics.registry.metrics() };
      if (first === "media" && parts.length === 3) return await this.media.serve(second as string, third as string, req.query.get("e"), req.query.get("s"));
      if (first === "admin") return await adminApi(this.store, this.config.adminToken, parts.slice(1), { method: req.method, query: req.query, authorization: header(req, "authorization") });
      // answers never repeat what the caller sent (a path may carry anything, a secret included)
      return error(404, "not_found", "no such endpoint (see the README's endpoint list)");
    } catch (e) {
      this.log.error("request failed", { path: req.path, error: e instanceof BridgeError ? e.message : (e as Error)?.message });
      return error(500, "internal", "internal error");
    }
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
