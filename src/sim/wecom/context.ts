/**
 * What the API families of the WeCom simulator share: the simulated corp's apps and bots, the
 * clock, ids, errcodes, the scheduler, the record of accepted sends, and the shape of a route.
 * The composition root (`simulator.ts`) builds one and hands it to every family.
 * @module
 */
import type { IncomingMessage } from "node:http";
import type { WeComCrypto } from "../../wecom/crypto.js";
import type { KfErrcodes } from "./errors.js";
import type { SimIds } from "./ids.js";
import type { SimScheduler } from "./scheduler.js";
import type { WeComSimApp, WeComSimBot, WeComSimSent } from "./types.js";

/** An app of the simulated corp, with its callback crypto. */
export interface SimApp {
  /** As configured. */
  cfg: WeComSimApp;
  /** Signs and encrypts its callbacks (receiveId = CorpID). */
  crypto: WeComCrypto;
  /** Where its callbacks go, when set. */
  callbackUrl?: string;
}

/** A bot of the simulated corp, with its callback crypto. */
export interface SimBot {
  /** As configured. */
  cfg: WeComSimBot;
  /** Signs and encrypts its callbacks (receiveId ""). */
  crypto: WeComCrypto;
  /** Where its callbacks go, when set. */
  callbackUrl?: string;
}

/** One API request: the raw request, its URL (with the query) and its body. */
export interface RequestCtx {
  /** The request (headers, socket). */
  req: IncomingMessage;
  /** The URL, query included. */
  url: URL;
  /** The whole body. */
  body: Buffer;
}

/** An answer: WeCom JSON (HTTP 200 unless `status`), or raw bytes with headers. */
export type Answer = { json: Record<string, unknown>; status?: number } | { status: number; headers: Record<string, string | number>; body: Buffer };

/** A route of the simulated API (`/cgi-bin/{api}`). */
export type Handler = (ctx: RequestCtx) => Answer | Promise<Answer>;

/** The state and services every API family of one simulator shares. */
export interface SimContext {
  /** The simulated corp's CorpID. */
  readonly corpId: string;
  /** The simulator's clock, ms since the epoch. */
  now(): number;
  /** One log line (never a secret). */
  log(line: string): void;
  /** The simulator's id generator. */
  readonly ids: SimIds;
  /** Errcodes the sources leave open. */
  readonly errcodes: KfErrcodes;
  /** The API base URL (`http://127.0.0.1:PORT`), once listening. */
  baseUrl(): string;
  /** Apps by agentId. */
  readonly apps: Map<number, SimApp>;
  /** Bots by botId. */
  readonly bots: Map<string, SimBot>;
  /** Runs what WeCom does later on its own. */
  readonly scheduler: SimScheduler;
  /** Record an accepted send or upload. */
  record(sent: WeComSimSent): void;
}

/** The current second of the simulator's clock, as WeCom writes timestamps (decimal string). */
export function seconds(ctx: SimContext): string {
  return String(Math.floor(ctx.now() / 1000));
}
