/**
 * The 全媒体 client: `POST {baseUrl}/api/{version}/{appid}/staffService/message?timestamp&signature`
 * with the staffService body. Every call goes to the configured `baseUrl`.
 * @module
 */
import { BridgeError } from "../errors.js";
import { omniMessagePath, omniSignedQuery, type OmniToBody } from "../omni/index.js";

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
  timeoutMs?: number;
  now?: () => number;
}

/** Sends customers' messages to the 全媒体. */
export class OmniClient {
  readonly #o: OmniClientOptions;
  #lastTs = 0;

  /** @param options where and how to send */
  constructor(options: OmniClientOptions) {
    this.#o = options;
  }

  /**
   * Send one message. Resolves when the 全媒体 answered HTTP 200 with errcode 0.
   * @throws OmniDeliveryError otherwise (HTTP status, errcode, timeout or network failure)
   */
  async send(body: OmniToBody): Promise<void> {
    const o = this.#o;
    // the signature covers only appid, secret and timestamp, and the 全媒体 rejects a replayed
    // pair: requests signed in the same millisecond would collide, so timestamps strictly increase
    this.#lastTs = Math.max(Math.floor((o.now ?? Date.now)()), this.#lastTs + 1);
    const url = `${o.baseUrl}${omniMessagePath(o.version, o.appId)}?${omniSignedQuery(o.appId, o.secret, this.#lastTs)}`;
    let res: Response;
    try {
      res = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(o.timeoutMs ?? 10_000),
      });
    } catch (e) {
      throw new OmniDeliveryError(0, undefined, `全媒体 unreachable (${(e as Error).name === "TimeoutError" ? "timeout" : "network error"})`);
    }
    const text = await res.text().catch(() => "");
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
