/**
 * The 全媒体 client: `POST {baseUrl}/api/{version}/{appid}/staffService/message?timestamp&signature`
 * with the staffService body. Every call goes to the configured `baseUrl`, through the keep-alive
 * {@link HttpClient} (sockets reused, not one connection per message as with global `fetch`).
 * @module
 */
import { BridgeError } from "../errors.js";
import { omniMessagePath, omniSignedQuery, type OmniToBody } from "../omni/index.js";
import type { Store } from "../store/types.js";
import { HttpClient, HttpClientError, type HttpResponse } from "./http.js";

/** The largest answer read from the 全媒体 (its answers are `{errcode, errmsg}`). */
const MAX_ANSWER_BYTES = 1024 * 1024;

/** The 全媒体 refused a message or could not be reached. */
export class OmniDeliveryError extends BridgeError {
  /** HTTP status (0 when unreachable). */
  readonly status: number;
  /** errcode of the answer, when there was one. */
  readonly errcode: number | undefined;

  /**
   * @param status HTTP status, 0 when unreachable
   * @param errcode the answer's errcode, if any
   * @param message one readable line
   */
  constructor(status: number, errcode: number | undefined, message: string) {
    super(errcode !== undefined ? `omni_${errcode}` : "omni_unreachable", message);
    this.status = status;
    this.errcode = errcode;
  }
}

/** Options of {@link OmniClient}. */
export interface OmniClientOptions {
  baseUrl: string;
  version: string;
  appId: string;
  secret: string;
  /** Per-request timeout, ms, also on a shared `http` client. Default 10 s. */
  timeoutMs?: number;
  now?: () => number;
  /**
   * The keep-alive HTTP client to send through, shared with other clients; default a new one of
   * this client's own (closed by {@link OmniClient.close}).
   */
  http?: HttpClient;
  /**
   * A store shared with other replicas: each process then signs with timestamps from blocks of
   * {@link OMNI_TS_BLOCK_MS} it reserves there, so two replicas never sign in the same millisecond
   * (the 全媒体 would refuse the second as a replay: its signature covers only the timestamp).
   */
  store?: Store;
}

/** Milliseconds of signature timestamps a process reserves at a time (see {@link OmniClientOptions.store}). */
export const OMNI_TS_BLOCK_MS = 25;

/** Sends customers' messages to the 全媒体. */
export class OmniClient {
  readonly #o: OmniClientOptions;
  readonly #http: HttpClient;
  readonly #ownHttp: boolean;
  #lastTs = 0;
  /** The block of timestamps this process reserved: the next to use, and its end (exclusive). */
  #block: { next: number; end: number } | undefined;
  #reserving: Promise<void> | undefined;

  /** @param options where and how to send */
  constructor(options: OmniClientOptions) {
    this.#o = options;
    this.#ownHttp = options.http === undefined;
    this.#http = options.http ?? new HttpClient({ timeoutMs: options.timeoutMs ?? 10_000 });
  }

  /** Close the HTTP client this client created (a shared one given as `http` is left open). */
  close(): void {
    if (this.#ownHttp) this.#http.close();
  }

  /**
   * The next signature timestamp. The signature covers only appid, secret and timestamp, and the
   * 全媒体 rejects a replayed pair: requests signed in the same millisecond would collide, so
   * timestamps strictly increase, and with a shared store they come from this process's own block.
   */
  async #timestamp(): Promise<number> {
    const now = Math.floor((this.#o.now ?? Date.now)());
    const store = this.#o.store;
    // taken synchronously: concurrent sends never share one
    if (store === undefined) {
      this.#lastTs = Math.max(now, this.#lastTs + 1);
      return this.#lastTs;
    }
    for (;;) {
      const b = this.#block;
      // a block is used until spent, or until it lies a second in the past (stay near the clock)
      if (b !== undefined && b.next < b.end && b.end > now - 1000) {
        this.#lastTs = b.next++;
        return this.#lastTs;
      }
      if (this.#reserving === undefined) {
        this.#reserving = this.#reserve(store, now).finally(() => {
          this.#reserving = undefined;
        });
      }
      await this.#reserving;
    }
  }

  async #reserve(store: Store, now: number): Promise<void> {
    const key = `omni-ts:${this.#o.appId}:${this.#o.baseUrl}`.slice(0, 200);
    const v = (await store.updateState("", key, null, now, (cur) => {
      const until = typeof (cur as { until?: unknown } | undefined)?.until === "number" ? (cur as { until: number }).until : 0;
      return { value: { until: Math.max(now, until) + OMNI_TS_BLOCK_MS }, expiresAt: now + 3_600_000 };
    })) as { until: number };
    this.#block = { next: Math.max(v.until - OMNI_TS_BLOCK_MS, this.#lastTs + 1), end: v.until };
  }

  /**
   * Send one message. Resolves when the 全媒体 answered HTTP 200 with errcode 0.
   * @throws OmniDeliveryError otherwise (HTTP status, errcode, timeout or network failure)
   */
  async send(body: OmniToBody): Promise<void> {
    const o = this.#o;
    const ts = await this.#timestamp();
    const url = `${o.baseUrl}${omniMessagePath(o.version, o.appId)}?${omniSignedQuery(o.appId, o.secret, ts)}`;
    let res: HttpResponse;
    try {
      res = await this.#http.request({
        method: "POST",
        url,
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
        timeoutMs: o.timeoutMs ?? 10_000,
        maxResponseBytes: MAX_ANSWER_BYTES,
      });
    } catch (e) {
      if (e instanceof HttpClientError && e.code === "http_response_too_large") {
        throw new OmniDeliveryError(e.httpStatus ?? 0, undefined, `全媒体 answered HTTP ${e.httpStatus ?? "?"} with more than ${MAX_ANSWER_BYTES} bytes`);
      }
      throw new OmniDeliveryError(0, undefined, `全媒体 unreachable (${e instanceof HttpClientError && e.code === "http_timeout" ? "timeout" : "network error"})`);
    }
    const text = res.body.toString("utf8");
    let reply: { errcode?: unknown; errmsg?: unknown } | undefined;
    try {
      reply = JSON.parse(text) as typeof reply;
    } catch {
      reply = undefined;
    }
    const errcode = reply && typeof reply.errcode === "number" ? reply.errcode : undefined;
    // the vendor's web app answers some failures with HTTP 500 and errcode 0: check both
    if (res.status !== 200) throw new OmniDeliveryError(res.status, errcode, `全媒体 answered HTTP ${res.status}`);
    if (errcode !== 0) {
      throw new OmniDeliveryError(res.status, errcode, `全媒体 answered errcode ${errcode ?? "(none)"} ${String(reply?.errmsg ?? "").slice(0, 200)}`.trim());
    }
  }
}
