/**
 * The gateway: composes the protocol core, the store, the clients and the workers, and answers
 * each endpoint as a plain function of a request (`GatewayRequest` → `GatewayResponse`), so the
 * HTTP framework stays an edge.
 * @module
 */
import { createHash, randomBytes } from "node:crypto";
import type { Readable } from "node:stream";
import { OmniClient } from "../clients/omni.js";
import { WeComClient, type WeComCredentials } from "../clients/wecom.js";
import type { AppConfig, BotConfig, Config } from "../config.js";
import { BridgeError, DecodeError, WeComCryptoError } from "../errors.js";
import { createLogger, type Logger } from "../log.js";
import type { Channel, UnifiedMessage } from "../model.js";
import type { IngestItem, Store } from "../store/types.js";
import { decodeAppXml } from "../wecom/app/decode.js";
import { decodeArchivePush } from "../wecom/archive/decode.js";
import { decodeBotCallback } from "../wecom/bot/decode.js";
import { encodeBotReply } from "../wecom/bot/encode.js";
import { safeEqual, WeComCrypto } from "../wecom/crypto.js";
import { parseCallbackEnvelope } from "../wecom/envelope.js";
import { adminApi } from "./admin.js";
import { DeliveryWorker } from "./delivery.js";
import { KfPuller } from "./kf-puller.js";
import { Retention } from "./retention.js";
import { MediaStore, removeMediaFile, sweepPartialFiles } from "./media.js";
import { apiLabel, Metrics, wecomErrcodeLabel } from "./metrics.js";
import { Ingestor, messageItem } from "./pipeline.js";

/** A request as the gateway sees it. */
export interface GatewayRequest {
  method: string;
  /** Path without query. */
  path: string;
  query: URLSearchParams;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  /** Peer address. */
  remoteAddress?: string;
}

/** An answer. A `Readable` body (a media file) is streamed to the client. */
export interface GatewayResponse {
  status: number;
  headers?: Record<string, string>;
  body: string | Buffer | Readable;
}

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

const json = (status: number, body: unknown): GatewayResponse => ({ status, headers: { "content-type": "application/json; charset=utf-8" }, body: JSON.stringify(body) });
const text = (status: number, body: string): GatewayResponse => ({ status, headers: { "content-type": "text/plain; charset=utf-8" }, body });
const error = (status: number, errcode: number | string, errmsg: string): GatewayResponse => json(status, { errcode, errmsg });

/** Turn a failure of the inbound path into a clear 4xx. */
function rejection(e: unknown): { response: GatewayResponse; outcome: string } | undefined {
  if (e instanceof WeComCryptoError) {
    if (e.errcode === -40001) return { response: error(401, e.errcode, e.message), outcome: "bad_signature" };
    return { response: error(400, e.errcode, e.message), outcome: "malformed" };
  }
  if (e instanceof DecodeError) return { response: error(400, e.code, e.message), outcome: "malformed" };
  return undefined;
}

function header(req: GatewayRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** The gateway. */
export class Gateway {
  readonly config: Config;
  readonly store: Store;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly wecom: WeComClient;
  readonly omni: OmniClient;
  readonly media: MediaStore;
  readonly ingestor: Ingestor;
  readonly delivery: DeliveryWorker;
  readonly puller: KfPuller | undefined;
  /** Prunes what is past its retention, on a timer. */
  readonly retention: Retention;
  readonly #tenant: string;
  readonly #apps = new Map<string, { cfg: AppConfig; crypto: WeComCrypto }>();
  readonly #bots = new Map<string, { cfg: BotConfig; crypto: WeComCrypto }>();
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
    this.#tenant = cfg.wecom.corpId;
    this.metrics = new Metrics(this.store);
    const window = cfg.wecom.callbackWindowSec > 0 ? { timestampWindowSec: cfg.wecom.callbackWindowSec, clock: this.#now } : {};
    for (const app of cfg.wecom.apps) {
      this.#apps.set(app.name, { cfg: app, crypto: new WeComCrypto({ token: app.token, encodingAESKey: app.encodingAESKey, receiveId: cfg.wecom.corpId, ...window }) });
    }
    for (const bot of cfg.wecom.bots) {
      this.#bots.set(bot.name, { cfg: bot, crypto: new WeComCrypto({ token: bot.token, encodingAESKey: bot.encodingAESKey, receiveId: "", ...window }) });
    }
    this.wecom = new WeComClient({ apiBase: cfg.wecom.apiBase, store: this.store, timeoutMs: cfg.delivery.timeoutMs, now: this.#now });
    // label values from fixed lists (metrics.ts): an unknown api or undocumented errcode is `other`
    this.wecom.onResult = (api, errcode) => this.metrics.wecomErrcodes.inc({ api: apiLabel(api), errcode: wecomErrcodeLabel(errcode) });
    this.omni = new OmniClient({ baseUrl: cfg.omni.baseUrl, version: cfg.omni.version, appId: cfg.omni.appId, secret: cfg.omni.secret, timeoutMs: cfg.delivery.timeoutMs, now: this.#now });
    // runGateway passes the secret kept in the store; a gateway built directly without one signs
    // with a per-process key (its links end with the process)
    const mediaSecret = cfg.mediaSecret ?? options.mediaSecret ?? randomBytes(32).toString("hex");
    this.media = new MediaStore({ dir: cfg.mediaDir, publicUrl: cfg.publicUrl, secret: mediaSecret, ttlSec: cfg.mediaLinkTtlSec, store: this.store, now: this.#now });
    this.ingestor = new Ingestor(this.store);
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
          onStored: (messages) => {
            for (const m of messages) this.#onStored?.(m);
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
  }

  /** Route one request. */
  async handle(req: GatewayRequest): Promise<GatewayResponse> {
    let parts: string[];
    try {
      parts = req.path.split("/").filter(Boolean).map(decodeURIComponent);
    } catch {
      return error(400, "bad_path", "the path is not valid percent-encoding");
    }
    try {
      if (parts[0] === "wecom" && parts[1] === "app" && parts.length === 3) return await this.appCallback(parts[2] as string, req);
      if (parts[0] === "wecom" && parts[1] === "bot" && parts.length === 3) return await this.botCallback(parts[2] as string, req);
      if (req.path === "/archive/push") return await this.archivePush(req);
      if (req.path === "/healthz") return json(200, { status: "ok" });
      if (req.path === "/readyz") return (await this.store.ping()) ? json(200, { status: "ready", store: this.store.engine }) : json(503, { status: "store unreachable" });
      if (req.path === "/metrics") return { status: 200, headers: { "content-type": this.metrics.registry.contentType }, body: await this.metrics.registry.metrics() };
      if (parts[0] === "media" && parts.length === 3) return await this.mediaFile(parts[1] as string, parts[2] as string, req);
      if (parts[0] === "admin") return await this.admin(parts.slice(1), req);
      // answers never repeat what the caller sent (a path may carry anything, a secret included)
      return error(404, "not_found", "no such endpoint (see the README's endpoint list)");
    } catch (e) {
      this.log.error("request failed", { path: req.path, error: e instanceof BridgeError ? e.message : (e as Error)?.message });
      return error(500, "internal", "internal error");
    }
  }

  #query(req: GatewayRequest) {
    return {
      msg_signature: req.query.get("msg_signature") ?? "",
      timestamp: req.query.get("timestamp") ?? "",
      nonce: req.query.get("nonce") ?? "",
      echostr: req.query.get("echostr") ?? undefined,
    };
  }

  /**
   * The common part of WeCom callbacks: URL verification on GET; on POST the envelope, the
   * signature, the timestamp window and decryption, then `handle` with the plaintext. Failures of
   * the inbound path become a clear 4xx (counted by outcome); the time is observed per channel.
   */
  async #callback(channel: "app" | "bot", crypto: WeComCrypto, req: GatewayRequest, handle: (plain: string) => Promise<GatewayResponse>): Promise<GatewayResponse> {
    const started = performance.now();
    try {
      if (req.method === "GET") {
        const echo = crypto.verifyUrl(this.#query(req));
        this.metrics.callbacks.inc({ channel, outcome: "verified" });
        return text(200, echo);
      }
      if (req.method !== "POST") return error(405, "method_not_allowed", "use GET or POST");
      const env = parseCallbackEnvelope(req.body);
      return await handle(crypto.decryptCallback(this.#query(req), env.encrypt));
    } catch (e) {
      const rej = rejection(e);
      if (!rej) throw e;
      this.metrics.callbacks.inc({ channel, outcome: rej.outcome });
      this.log.warn(`${channel} callback rejected`, { path: req.path, reason: rej.outcome, error: (e as Error).message });
      return rej.response;
    } finally {
      this.metrics.callbackSeconds.observe({ channel }, (performance.now() - started) / 1000);
    }
  }

  /** `GET|POST /wecom/app/{name}`: URL verification and encrypted XML callbacks. */
  async appCallback(name: string, req: GatewayRequest): Promise<GatewayResponse> {
    const app = this.#apps.get(name);
    if (!app) return error(404, "unknown_app", "no app of that name is configured (the path is /wecom/app/{wecom.apps[].name})");
    return this.#callback("app", app.crypto, req, async (plain) => {
      const msg = decodeAppXml(plain, { corpId: this.#tenant });
      if (msg.content.type === "event" && msg.content.event.name === "kf_msg_or_event") {
        const ev = msg.content.event;
        this.metrics.callbacks.inc({ channel: "app", outcome: "kf_wakeup" });
        if (this.puller && app.cfg.kf) {
          // answered at once; the pull runs after the answer
          setImmediate(() => void this.puller?.wake(ev.openKfId, ev.token, msg.time).catch(() => undefined));
        } else {
          this.log.warn("kf_msg_or_event for an app without kf: true", { app: name });
        }
        return text(200, "");
      }
      const r = await this.ingestor.submit(messageItem(this.#tenant, msg, { kind: "wecom", app: name }));
      this.#count("app", r.stored);
      return text(200, "");
    });
  }

  #count(channel: Channel, stored: boolean): void {
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

  /** The stream id of a bot message: derived from its msgid, so WeCom's retries get the same one. */
  static streamId(botId: string, msgid: string): string {
    return `s${createHash("sha1").update(`${botId}\n${msgid}`).digest("hex").slice(0, 24)}`;
  }

  /** `GET|POST /wecom/bot/{name}`: URL verification and encrypted JSON AI-bot callbacks. */
  async botCallback(name: string, req: GatewayRequest): Promise<GatewayResponse> {
    const bot = this.#bots.get(name);
    if (!bot) return error(404, "unknown_bot", "no bot of that name is configured (the path is /wecom/bot/{wecom.bots[].name})");
    const reply = (payload: Parameters<typeof encodeBotReply>[0]): GatewayResponse => ({
      status: 200,
      headers: { "content-type": "application/json; charset=utf-8" },
      body: bot.crypto.encryptJsonReply(JSON.stringify(encodeBotReply(payload))),
    });
    return this.#callback("bot", bot.crypto, req, async (plain) => {
      const msg = decodeBotCallback(plain, { receivedAt: this.#now() });
      if (msg.content.type === "stream_refresh") {
        this.metrics.callbacks.inc({ channel: "bot", outcome: "stream_refresh" });
        return reply({ type: "stream", id: msg.content.streamId, finish: false, content: bot.cfg.placeholder });
      }
      const r = await this.ingestor.submit(messageItem(this.#tenant, msg, { kind: "bot", bot: name }));
      this.#count("bot", r.stored);
      if (msg.content.type === "event") return text(200, "");
      return reply({ type: "stream", id: Gateway.streamId(msg.botId, msg.id), finish: false, content: bot.cfg.placeholder });
    });
  }

  /** `POST /archive/push`: a session-archive push, authenticated by the shared secret. */
  async archivePush(req: GatewayRequest): Promise<GatewayResponse> {
    const cfg = this.config.archive;
    if (!cfg) return error(404, "archive_disabled", "the session-archive push is not configured");
    if (req.method !== "POST") return error(405, "method_not_allowed", "use POST");
    const given = req.query.get("secret") ?? header(req, "x-archive-secret") ?? "";
    if (!safeEqual(given, cfg.secret)) {
      this.metrics.callbacks.inc({ channel: "archive", outcome: "bad_secret" });
      return error(401, "bad_secret", "missing or wrong archive secret");
    }
    const ip = (req.remoteAddress ?? "").replace(/^::ffff:/, "");
    if (cfg.allowIps.length > 0 && !cfg.allowIps.includes(ip)) {
      this.metrics.callbacks.inc({ channel: "archive", outcome: "ip_refused" });
      return error(403, "ip_refused", `address ${ip} is not allowed to push`);
    }
    let push: ReturnType<typeof decodeArchivePush>;
    try {
      push = decodeArchivePush(req.body);
    } catch (e) {
      const rej = rejection(e);
      if (!rej) throw e;
      this.metrics.callbacks.inc({ channel: "archive", outcome: rej.outcome });
      return rej.response;
    }
    const receivedAt = this.#now();
    let item: IngestItem;
    if (push.kind === "record") {
      const m = push.message;
      const tenant = m.corpId ?? this.#tenant;
      item = {
        ...messageItem(tenant, m, { kind: "none" }),
        archive: { tenant, messageId: push.messageId, pushType: 101, msgid: m.id, ...(m.seq !== undefined ? { seq: m.seq } : {}), receivedAt, body: push.record },
      };
    } else {
      item = {
        tenant: this.#tenant,
        channel: "archive",
        key: `push:${push.messageId}`,
        skipReason: `push_type_${push.pushType}`,
        archive: { tenant: this.#tenant, messageId: push.messageId, pushType: push.pushType, receivedAt, body: push.raw },
      };
    }
    const r = await this.ingestor.submit(item);
    this.#count("archive", r.stored);
    return json(200, { errcode: 0, errmsg: "ok" });
  }

  /** `GET /media/{tenant}/{id}?e&s`: a stored media file behind a signed, expiring link, streamed (see `media.ts`). */
  async mediaFile(tenant: string, id: string, req: GatewayRequest): Promise<GatewayResponse> {
    return this.media.serve(tenant, id, req.query.get("e"), req.query.get("s"));
  }

  /** `GET /admin/...`: the read-only admin API (see `admin.ts`). */
  async admin(parts: string[], req: GatewayRequest): Promise<GatewayResponse> {
    return adminApi(this.store, this.config.adminToken, parts, { method: req.method, query: req.query, authorization: header(req, "authorization") });
  }
}
