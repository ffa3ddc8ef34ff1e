/**
 * One corp of the gateway: what its endpoints, its KF puller and its senders work with. A
 * deployment serves one corp (`wecom.corpId`) or several (`wecom.corps`); each gets a context whose
 * `tenant` is its CorpID and whose `config` is the configuration as that corp sees it
 * ({@link corpView}: its apps, bots, archive push and 全媒体), so that code written for one corp
 * runs for each. Everything else (store, ingestor, WeCom client, metrics, clock) is the gateway's.
 * @module
 */
import type { HttpClient } from "../clients/http.js";
import type { OmniClient } from "../clients/omni.js";
import type { WeComClient, WeComCredentials } from "../clients/wecom.js";
import { type Config, type CorpConfig, corpView } from "../config.js";
import type { Logger } from "../log.js";
import type { Channel } from "../model.js";
import type { Store, OutboxInsert } from "../store/types.js";
import type { OmniEndpointContext } from "./endpoints/omni.js";
import type { KfPuller } from "./kf-puller.js";
import type { Metrics } from "./metrics.js";
import { AppSender } from "./outbound/app.js";
import { BotSender } from "./outbound/bot.js";
import { KfSender } from "./outbound/kf.js";
import type { OutboundContext, Sender } from "./outbound/types.js";
import type { Ingestor } from "./pipeline.js";

/** What a corp's context takes from the gateway that composes it (shared by every corp). */
export interface CorpHost {
  readonly config: Config;
  readonly store: Store;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly ingestor: Ingestor;
  readonly wecom: WeComClient;
  readonly http: HttpClient;
  now(): number;
  /** Count an ingested callback: stored, or a duplicate the ledger already had. */
  countStored(channel: Channel, stored: boolean): void;
  /** New outbound entries were queued (with what was queued, when known): wake the outbox worker. */
  notifyOutbound(queued?: { tenant: string; ids: number[]; entries: OutboxInsert[] }): void;
  /** Count a WeCom answer of a call made outside the WeCom client (a bot's response_url). */
  onWeComResult(api: string, errcode: number): void;
  /** A long-connection bot has something to push: wake its pusher when this process holds it. */
  onBotWsWork(botId: string): void;
}

/** The outbound kinds, each with its sender. */
export type CorpSenders = Record<"kf_send" | "app_send" | "bot_reply", Sender>;

/** One corp's context: its endpoints', KF puller's and senders' view of the gateway. */
export class CorpContext implements OmniEndpointContext, OutboundContext {
  /** The corp as configured (its resolved 全媒体 and archive push included). */
  readonly corp: CorpConfig;
  /** The configuration as this corp sees it (see {@link corpView}). */
  readonly config: Config;
  /** The CorpID: the tenant of this corp's records. */
  readonly tenant: string;
  /** The client of this corp's 全媒体 (shared with the corps that have the same one). */
  readonly omni: OmniClient;
  /** The KF puller of this corp's KF app; undefined without one (set once by the gateway). */
  puller: KfPuller | undefined;
  /** The senders of this corp's agents' answers. */
  readonly senders: CorpSenders;
  readonly #host: CorpHost;

  /**
   * @param host the gateway
   * @param corp the corp, as {@link corpsOf} resolves it
   * @param omni the client of the corp's 全媒体
   */
  constructor(host: CorpHost, corp: CorpConfig, omni: OmniClient) {
    this.#host = host;
    this.corp = corp;
    this.config = corpView(host.config, corp);
    this.tenant = corp.corpId;
    this.omni = omni;
    this.puller = undefined;
    this.senders = { kf_send: new KfSender(this), app_send: new AppSender(this), bot_reply: new BotSender(this) };
  }

  /** The gateway's store. */
  get store(): Store {
    return this.#host.store;
  }

  /** The gateway's logger. */
  get log(): Logger {
    return this.#host.log;
  }

  /** The gateway's metrics. */
  get metrics(): Metrics {
    return this.#host.metrics;
  }

  /** The gateway's ingestor (group commit of inbound items). */
  get ingestor(): Ingestor {
    return this.#host.ingestor;
  }

  /** The gateway's WeCom client (tokens are kept per corp and secret). */
  get wecom(): WeComClient {
    return this.#host.wecom;
  }

  /** The gateway's keep-alive HTTP client. */
  get http(): HttpClient {
    return this.#host.http;
  }

  /** The gateway's clock (ms). */
  now(): number {
    return this.#host.now();
  }

  /** Count an ingested callback (the gateway's metrics). */
  countStored(channel: Channel, stored: boolean): void {
    this.#host.countStored(channel, stored);
  }

  /** New outbound entries were queued (`ids` of `entries`, when known): wake the outbox worker. */
  notifyOutbound(queued?: { ids: number[]; entries: OutboxInsert[] }): void {
    this.#host.notifyOutbound(queued === undefined ? undefined : { tenant: this.tenant, ...queued });
  }

  /** Count a WeCom answer of a call made outside the WeCom client (a bot's response_url). */
  onWeComResult(api: string, errcode: number): void {
    this.#host.onWeComResult(api, errcode);
  }

  /** A long-connection bot has something to push (see {@link CorpHost.onBotWsWork}). */
  onBotWsWork(botId: string): void {
    this.#host.onBotWsWork(botId);
  }

  /** Credentials of this corp's app with this agentId, or of its KF app (`"kf"`). */
  credentials(app: number | "kf"): WeComCredentials | undefined {
    const a = app === "kf" ? this.corp.apps.find((x) => x.kf) : this.corp.apps.find((x) => x.agentId === app);
    return a ? { corpId: this.corp.corpId, secret: a.secret } : undefined;
  }
}
