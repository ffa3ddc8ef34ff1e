/**
 * Run a gateway: open the store, compose the gateway, serve HTTP, start the workers.
 * @module
 */
import { createHmac, randomBytes } from "node:crypto";
import { readdirSync } from "node:fs";
import type { Config } from "../config.js";
import { startHttpServer } from "../http/server.js";
import type { Logger } from "../log.js";
import type { UnifiedMessage } from "../model.js";
import { openStore } from "../store/index.js";
import type { Store } from "../store/types.js";
import type { BotWsTiming } from "./bot-ws.js";
import type { PlaygroundHooks } from "./console/types.js";
import { Gateway } from "./gateway.js";

export { Gateway, type GatewayRequest, type GatewayResponse } from "./gateway.js";
export { toOmniBody, mediaRefs } from "./omni-map.js";
export { backoffDelay } from "./delivery.js";

/** Name of the store setting that keeps the generated media-link key. */
export const MEDIA_SECRET_SETTING = "media_link_secret";

/**
 * The media-link key a store starts with. Releases before 0.2 derived it from `adminToken`: when
 * the media folder already holds files (an upgrade), that key is kept, so that the links the
 * 全媒体 already has go on working; a new deployment gets a random one.
 */
export function firstMediaSecret(config: Pick<Config, "mediaDir" | "adminToken">): string {
  let legacy = false;
  try {
    legacy = readdirSync(config.mediaDir).length > 0;
  } catch {
    legacy = false; // no media folder yet
  }
  return legacy ? createHmac("sha256", config.adminToken).update("wecom-bridge media links").digest("hex") : randomBytes(32).toString("hex");
}

/** A running gateway. */
export interface RunningGateway {
  gateway: Gateway;
  store: Store;
  /** Base URL it listens on. */
  url: string;
  /** Stop serving, finish work in flight, close the store. */
  stop(): Promise<void>;
}

/** Options of {@link runGateway}. */
export interface RunGatewayOptions {
  log?: Logger;
  /** Use this store instead of opening `config.store`. */
  store?: Store;
  onStored?: (message: UnifiedMessage) => void;
  now?: () => number;
  /** Timers of long-connection bots (tests; the defaults are WeCom's). */
  botWs?: BotWsTiming;
  /** The console's Playground (the sandbox passes its simulators'). */
  playground?: PlaygroundHooks;
}

/** Start a gateway from a validated configuration. */
export async function runGateway(config: Config, options: RunGatewayOptions = {}): Promise<RunningGateway> {
  const store = options.store ?? (await openStore(config.store, { owner: true }));
  // media links outlive an adminToken rotation: their key is generated once and kept in the store
  const mediaSecret = config.mediaSecret ?? (await store.getOrCreateSetting(MEDIA_SECRET_SETTING, () => firstMediaSecret(config)));
  const gateway = new Gateway({
    config,
    store,
    mediaSecret,
    ...(options.log ? { log: options.log } : {}),
    ...(options.onStored ? { onStored: options.onStored } : {}),
    ...(options.now ? { now: options.now } : {}),
    ...(options.botWs ? { botWs: options.botWs } : {}),
    ...(options.playground ? { playground: options.playground } : {}),
  });
  const http = await startHttpServer(gateway, {
    host: config.listen.host,
    port: config.listen.port,
    bodyLimit: config.limits.bodyBytes,
    headersTimeoutMs: config.limits.headersTimeoutMs,
    requestTimeoutMs: config.limits.requestTimeoutMs,
    maxConnections: config.limits.maxConnections,
    trustProxy: config.trustProxy,
  });
  gateway.start();
  let stopped = false;
  return {
    gateway,
    store,
    url: http.url,
    async stop() {
      if (stopped) return;
      stopped = true;
      await http.close();
      await gateway.stop();
      if (!options.store) await store.close();
    },
  };
}
