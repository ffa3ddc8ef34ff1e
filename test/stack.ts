/**
 * A whole stack for end-to-end tests: the WeCom simulator, the 全媒体 simulator and a gateway on a
 * real SQLite file, all on loopback ports.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Config, parseConfig } from "../src/config.js";
import type { BotWsTiming } from "../src/gateway/bot-ws.js";
import { type RunningGateway, runGateway } from "../src/gateway/index.js";
import { type Logger, silentLogger } from "../src/log.js";
import { OmniSimulator } from "../src/sim/omni.js";
import { WeComSimulator } from "../src/sim/wecom.js";
import { dropSchema, PG_URL } from "./pg.js";

export const CORP = "ww1436e0e65a779aee";
export const AGENT = 1000002;
export const KFID = "wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q";
export const APP_AES = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
export const BOT_AES = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
export const ADMIN = "admin-token-0123456789";
export const ARCHIVE_SECRET = "archive-secret-0123456";
/** The long-connection Secret of the simulator's bot "live" (botId aibLIVE). */
export const LIVE_SECRET = "live-bot-secret-0123";

/** A free loopback port. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** The running stack. */
export interface Stack {
  wecom: WeComSimulator;
  omni: OmniSimulator;
  gw: RunningGateway;
  config: Config;
  dir: string;
  /** Start a new gateway on the same store file and port (a restart). */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/** Options of {@link startStack}. */
export interface StackOptions {
  dir?: string;
  config?: (raw: Record<string, any>) => void;
  /** Do not start the gateway (a child process will). */
  noGateway?: boolean;
  /** The gateway's logger (default: silent). */
  log?: Logger;
  /** The gateway's clock (default: Date.now). */
  now?: () => number;
  /** Timers of long-connection bots. */
  botWs?: BotWsTiming;
}

/**
 * The store of a stack: a SQLite file in `dir`, or with `WB_TEST_STORE=postgres` a schema of its
 * own on the test PostgreSQL server (the same end-to-end tests, on the other engine).
 */
export function storeFor(dir: string): string {
  if (process.env.WB_TEST_STORE !== "postgres") return `sqlite:${join(dir, "bridge.db")}`;
  const schema = `wb_e2e_${randomBytes(6).toString("hex")}`;
  pgSchemas.set(dir, schema);
  return `${PG_URL}${PG_URL.includes("?") ? "&" : "?"}schema=${schema}`;
}
const pgSchemas = new Map<string, string>();

/** Drop the PostgreSQL schema {@link storeFor} made for `dir`, if any. */
export async function dropStoreOf(dir: string): Promise<void> {
  const schema = pgSchemas.get(dir);
  if (schema === undefined) return;
  pgSchemas.delete(dir);
  await dropSchema(schema);
}

/** The raw config of a stack, pointing at the simulators. */
export function stackConfig(dir: string, port: number, wecomUrl: string, omniUrl: string): Record<string, any> {
  return {
    listen: { host: "127.0.0.1", port },
    publicUrl: `http://127.0.0.1:${port}`,
    store: storeFor(dir),
    adminToken: ADMIN,
    mediaDir: join(dir, "media"),
    wecom: {
      apiBase: wecomUrl,
      corpId: CORP,
      apps: [{ name: "support", agentId: AGENT, secret: "app-secret", token: "apptoken", encodingAESKey: APP_AES, kf: true }],
      bots: [{ name: "helper", botId: "aibHELPER", token: "bottoken", encodingAESKey: BOT_AES, placeholder: "正在为您转接人工…" }],
    },
    archive: { secret: ARCHIVE_SECRET },
    omni: { baseUrl: omniUrl, version: "v1", appId: "1001", secret: "omni-secret", pathPrefix: "/qmtapi" },
    delivery: { maxAttempts: 6, baseDelayMs: 20, maxDelayMs: 200, concurrency: 4, timeoutMs: 2000 },
  };
}

/** Start the simulators and a gateway wired to them. */
export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), "wb-e2e-"));
  const omni = await OmniSimulator.start({ appId: "1001", secret: "omni-secret" });
  const wecom = await WeComSimulator.start({
    corpId: CORP,
    apps: [{ name: "support", agentId: AGENT, secret: "app-secret", token: "apptoken", encodingAESKey: APP_AES, kf: true }],
    // "live" is a bot in long-connection mode (tests add it to the gateway's config when they use it)
    bots: [
      { name: "helper", botId: "aibHELPER", token: "bottoken", encodingAESKey: BOT_AES },
      { name: "live", botId: "aibLIVE", token: "livetoken", encodingAESKey: BOT_AES, secret: LIVE_SECRET },
    ],
    callbackTimeoutMs: 1000,
    retryIntervalMs: 50,
  });
  wecom.addKfAccount(KFID, "售后客服");
  const port = await freePort();
  const raw = stackConfig(dir, port, wecom.url, omni.url);
  options.config?.(raw);
  const config = parseConfig(raw);
  const url = `http://127.0.0.1:${port}`;
  wecom.setCallbackUrl("app", "support", `${url}/wecom/app/support`);
  wecom.setCallbackUrl("bot", "helper", `${url}/wecom/bot/helper`);
  omni.setAppUrl(url, "/qmtapi");
  const gatewayOptions = { log: options.log ?? silentLogger, ...(options.now ? { now: options.now } : {}), ...(options.botWs ? { botWs: options.botWs } : {}) };
  const stack: Stack = {
    wecom,
    omni,
    config,
    dir,
    gw: undefined as unknown as RunningGateway,
    async restart() {
      await stack.gw.stop();
      stack.gw = await runGateway(config, gatewayOptions);
    },
    async stop() {
      await stack.gw?.stop();
      await wecom.close();
      await omni.close();
      await dropStoreOf(dir);
    },
  };
  if (!options.noGateway) stack.gw = await runGateway(config, gatewayOptions);
  return stack;
}

/** Poll until `check` returns a value that is not undefined/false, or fail after `ms`. */
export async function eventually<T>(check: () => T | undefined | false | Promise<T | undefined | false>, ms = 5000, what = "condition"): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Sleep. */
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
