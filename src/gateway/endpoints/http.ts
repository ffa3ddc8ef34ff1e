/**
 * What every endpoint module shares: the request and answer shapes the gateway understands (the
 * HTTP framework stays an edge), small answer builders, and the context an endpoint works in.
 * @module
 */
import type { Readable } from "node:stream";
import type { Config } from "../../config.js";
import { DecodeError, WeComCryptoError } from "../../errors.js";
import type { Logger } from "../../log.js";
import type { Channel } from "../../model.js";
import type { Store } from "../../store/types.js";
import type { KfPuller } from "../kf-puller.js";
import type { Metrics } from "../metrics.js";
import type { Ingestor } from "../pipeline.js";

/** A request as the gateway sees it. */
export interface GatewayRequest {
  method: string;
  /** Path without query. */
  path: string;
  query: URLSearchParams;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  /** The client's address (behind `trustProxy`, the one X-Forwarded-For names). */
  remoteAddress?: string;
  /** The body was larger than `limits.bodyBytes` and was not read (`body` is empty). */
  bodyTooLarge?: boolean;
}

/** An answer. A `Readable` body (a media file) is streamed to the client. */
export interface GatewayResponse {
  status: number;
  headers?: Record<string, string>;
  body: string | Buffer | Readable;
}

/** What an endpoint needs of the gateway that composes it, as one corp sees it (`gateway/corp.ts`). */
export interface EndpointContext {
  readonly config: Config;
  readonly store: Store;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly ingestor: Ingestor;
  readonly puller: KfPuller | undefined;
  /** The CorpID of the corp this context serves: the tenant of its records. */
  readonly tenant: string;
  now(): number;
  /** Count an ingested callback: stored, or a duplicate the ledger already had. */
  countStored(channel: Channel, stored: boolean): void;
}

/** A JSON answer. */
export const json = (status: number, body: unknown): GatewayResponse => ({ status, headers: { "content-type": "application/json; charset=utf-8" }, body: JSON.stringify(body) });
/** A plain-text answer. */
export const text = (status: number, body: string): GatewayResponse => ({ status, headers: { "content-type": "text/plain; charset=utf-8" }, body });
/** An error answer: `{"errcode", "errmsg"}`. */
export const error = (status: number, errcode: number | string, errmsg: string): GatewayResponse => json(status, { errcode, errmsg });

/** Turn a failure of the inbound path (crypto, decoding) into a clear 4xx and its metrics outcome. */
export function rejection(e: unknown): { response: GatewayResponse; outcome: string } | undefined {
  if (e instanceof WeComCryptoError) {
    if (e.errcode === -40001) return { response: error(401, e.errcode, e.message), outcome: "bad_signature" };
    return { response: error(400, e.errcode, e.message), outcome: "malformed" };
  }
  if (e instanceof DecodeError) return { response: error(400, e.code, e.message), outcome: "malformed" };
  return undefined;
}

/** One header's value (the first, when repeated). */
export function header(req: GatewayRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}
