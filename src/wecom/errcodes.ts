/**
 * One classification of WeCom's answers, used by every caller of the WeCom API (the KF puller,
 * media fetches, and the outbox): what a failure means and what to do about it.
 *
 * | class | answers | what happens |
 * |---|---|---|
 * | `transient` | network errors and timeouts, HTTP 5xx, -1 (system busy), 45009/45033 (rate limits) | retry with backoff |
 * | `token` | 40014, 42001, 40001 on a token that worked before | refresh the token once, then retry |
 * | `configuration` | 60020 (IP not trusted), 40013 (corpId), 40001 from gettoken (secret), 95000/95004 (open_kfid), 48002 (API not authorised), an HTTP 4xx without errcode (a proxy, a wrong apiBase) | log once per change, count, retry with backoff: an operator fixes these |
 * | `final` | anything else WeCom refuses: 40007 (invalid media_id), 45002 and other content refusals, rule refusals (95001, 95002, 95013, 95018, 81013, …) | no retry; record the errcode |
 *
 * Pure: no I/O, importable alone.
 * @module
 */

/** What a failed WeCom call means. */
export type WeComErrorClass = "transient" | "token" | "configuration" | "final";

/** A failed WeCom call, as far as classification needs it. */
export interface WeComFailure {
  /** The API path, e.g. `kf/sync_msg`, `gettoken`, `media/get`. */
  api: string;
  /** WeCom's errcode; 0 (or absent) when the failure was HTTP or the network. */
  errcode?: number;
  /** HTTP status when an answer came; absent for network errors and timeouts. */
  httpStatus?: number;
  /** True when no answer came (connection refused, reset, timeout). */
  network?: boolean;
}

/**
 * errcodes that mean "try again later" (the AI bot's long connection: 846609 not subscribed any
 * more, 846601 and 846602 reported as passing, 6000 a conflict worth retrying).
 */
export const TRANSIENT_ERRCODES: ReadonlySet<number> = new Set([-1, 45009, 45033, 6000, 846601, 846602, 846609]);
/** errcodes that mean the access token is no longer good. */
export const TOKEN_ERRCODES: ReadonlySet<number> = new Set([40014, 42001, 40001]);
/** errcodes an operator fixes in WeCom's admin console or the configuration. */
export const CONFIGURATION_ERRCODES: ReadonlySet<number> = new Set([60020, 40013, 95000, 95004, 48002]);

/**
 * Every errcode the documentation of the APIs we call lists. Metrics keep these as label values
 * and put any other under `other`, so that no answer can add a series.
 */
export const KNOWN_ERRCODES: readonly number[] = [
  0, -1, 40001, 40003, 40004, 40005, 40006, 40007, 40008, 40009, 40011, 40013, 40014, 40058, 40096, 41001, 42001, 44001, 45001, 45002, 45009,
  45033, 48002, 60011, 60020, 81013, 82001, 95000, 95001, 95002, 95004, 95007, 95008, 95013, 95016, 95017, 95018, 846604, 846605, 846608,
  // the AI bot's long connection
  6000, 86201, 93019, 846601, 846602, 846609, 853000,
];

const KNOWN = new Set(KNOWN_ERRCODES);

/** The metrics label of an errcode: its number when documented, else `other`. */
export function errcodeLabel(errcode: number): string {
  return KNOWN.has(errcode) ? String(errcode) : "other";
}

/**
 * Classify a failed WeCom call.
 * @param f the failure
 * @param tokenWorkedBefore for 40001 on an API call: the token had been accepted before (a
 *   rotated or revoked token: refresh), rather than freshly issued (a wrong secret: configuration)
 */
export function classifyWeComFailure(f: WeComFailure, tokenWorkedBefore = true): WeComErrorClass {
  const code = f.errcode ?? 0;
  if (code === 0) {
    if (f.network || f.httpStatus === undefined) return "transient";
    if (f.httpStatus >= 500 || f.httpStatus === 429 || f.httpStatus === 408) return "transient";
    // an HTTP refusal without WeCom's errcode is not WeCom's answer: an egress proxy's 403, a
    // wrong apiBase's 404; an operator fixes these, so they are retried like configuration errors
    return "configuration";
  }
  if (TRANSIENT_ERRCODES.has(code)) return "transient";
  if (code === 40001) return f.api === "gettoken" || !tokenWorkedBefore ? "configuration" : "token";
  if (TOKEN_ERRCODES.has(code)) return "token";
  if (CONFIGURATION_ERRCODES.has(code)) return "configuration";
  return "final";
}

/** Readable hints for the configuration class, for logs and (later) the config doctor. */
export const CONFIGURATION_HINTS: Readonly<Record<number, string>> = {
  60020: "the gateway's outbound IP is not in the app's trusted IPs",
  40013: "wecom.corpId is wrong",
  40001: "the app's secret is wrong",
  95000: "the open_kfid is not a KF account of this corp",
  95004: "the open_kfid is not a KF account of this corp",
  48002: "the app is not authorised for this API (for KF: authorise the app in 微信客服 → API)",
};
