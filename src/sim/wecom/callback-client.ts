/**
 * Outbound HTTP of the WeCom simulator: callback POSTs with WeCom's timeout and retry policy,
 * and URL-verification GETs. node:http only, no keep-alive (each try is a new connection, as
 * WeCom's are), and everything in flight is cancelled by {@link CallbackClient.close}.
 * @module
 */
import { Agent, type ClientRequest, request } from "node:http";

/** The outcome of one HTTP exchange. */
export interface HttpExchange {
  /** HTTP status; 0 when no answer came (timeout, refused, reset). */
  status: number;
  /** The answer body as UTF-8 text ("" when none). */
  body: string;
  /** Why there was no answer: `timeout`, or the socket error code. */
  error?: string;
  /** Milliseconds the exchange took. */
  ms: number;
}

/** The result of delivering one callback. */
export interface CallbackResult {
  /** HTTP status of the last try; 0 when it got no answer. */
  status: number;
  /** Body of the last try's answer. */
  body: string;
  /** How many tries were made (1..maxTries). */
  tries: number;
  /** True when a try was answered 200 within the timeout. */
  delivered: boolean;
  /** Why the last try got no answer (`timeout`, `ECONNREFUSED`, …), when it got none. */
  error?: string;
}

/** The query WeCom adds to every callback. */
export interface SignedQuery {
  /** `msg_signature` */
  msg_signature: string;
  /** `timestamp`, seconds */
  timestamp: string;
  /** `nonce` */
  nonce: string;
}

/** What one callback try sends. */
export interface CallbackTry {
  /** The signature query of this try. */
  query: SignedQuery;
  /** The POST body (the encrypted envelope). */
  body: string;
}

/** How to deliver one callback. */
export interface DeliveryPlan {
  /** A name for log lines (never a secret), e.g. `app 1000002`. */
  label: string;
  /** The receiver's URL; the signature query is appended to its own query. */
  url: string;
  /** Content-Type of the body. */
  contentType: string;
  /** Builds the body and query of a try (called once when `reuse`, else once per try). */
  build: () => CallbackTry;
  /** Send the same body, timestamp and nonce on every try. */
  reuse: boolean;
  /** How long one try may take, ms. */
  timeoutMs: number;
  /** Wait between tries, ms. */
  retryIntervalMs: number;
  /** Tries in all. */
  maxTries: number;
}

const MAX_ANSWER_BYTES = 4 * 1024 * 1024;

/** `url` with `params` added to its query (existing parameters kept). */
export function withQuery(url: string, params: Record<string, string>): URL {
  const u = new URL(url);
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);
  return u;
}

/** A URL as logged: origin and path only (never the query, which carries signatures). */
export function logUrl(url: URL | string): string {
  const u = typeof url === "string" ? new URL(url) : url;
  return `${u.origin}${u.pathname}`;
}

/** HTTP client of the simulator's callbacks; cancel everything in flight with {@link close}. */
export class CallbackClient {
  readonly #agent = new Agent({ keepAlive: false });
  readonly #inflight = new Set<ClientRequest>();
  readonly #sleeps = new Map<NodeJS.Timeout, () => void>();
  #closed = false;

  /** True once {@link close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * One exchange that must complete (answer headers and body) within `timeoutMs`.
   * Never rejects: failures come back as status 0 with `error`.
   */
  exchange(method: "GET" | "POST", url: URL, body: string | undefined, contentType: string | undefined, timeoutMs: number): Promise<HttpExchange> {
    const started = Date.now();
    return new Promise((resolve) => {
      if (this.#closed) {
        resolve({ status: 0, body: "", error: "closed", ms: 0 });
        return;
      }
      if (url.protocol !== "http:") {
        resolve({ status: 0, body: "", error: `unsupported protocol ${url.protocol}`, ms: 0 });
        return;
      }
      let settled = false;
      const payload = body === undefined ? undefined : Buffer.from(body, "utf8");
      const headers: Record<string, string | number> = {};
      if (payload !== undefined) {
        headers["Content-Length"] = payload.length;
        if (contentType !== undefined) headers["Content-Type"] = contentType;
      }
      const req = request(url, { method, agent: this.#agent, headers });
      this.#inflight.add(req);
      const finish = (r: Omit<HttpExchange, "ms">) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.#inflight.delete(req);
        resolve({ ...r, ms: Date.now() - started });
      };
      const timer = setTimeout(() => {
        finish({ status: 0, body: "", error: "timeout" });
        req.destroy();
      }, timeoutMs);
      req.on("error", (e: NodeJS.ErrnoException) => finish({ status: 0, body: "", error: this.#closed ? "closed" : (e.code ?? e.message) }));
      req.on("response", (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (c: Buffer) => {
          size += c.length;
          if (size > MAX_ANSWER_BYTES) {
            finish({ status: 0, body: "", error: "answer too large" });
            req.destroy();
            return;
          }
          chunks.push(c);
        });
        res.on("end", () => finish({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
        res.on("error", (e: NodeJS.ErrnoException) => finish({ status: 0, body: "", error: e.code ?? e.message }));
      });
      req.end(payload);
    });
  }

  /** Wait `ms`; resolves early (at once) when the client is closed. */
  sleep(ms: number): Promise<void> {
    if (this.#closed || ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.#sleeps.delete(t);
        resolve();
      }, ms);
      this.#sleeps.set(t, resolve);
    });
  }

  /**
   * Deliver a callback the way WeCom does: a try that is not answered 200 within the timeout is
   * retried after the interval, `maxTries` tries in all.
   */
  async deliver(plan: DeliveryPlan, log: (line: string) => void): Promise<CallbackResult> {
    let fixed: CallbackTry | undefined;
    let last: HttpExchange = { status: 0, body: "", error: "not sent", ms: 0 };
    let tries = 0;
    for (let i = 1; i <= plan.maxTries && !this.#closed; i++) {
      if (i > 1) await this.sleep(plan.retryIntervalMs);
      if (this.#closed) break;
      if (!plan.reuse || fixed === undefined) fixed = plan.build();
      const t = fixed;
      const url = withQuery(plan.url, { ...t.query });
      tries = i;
      last = await this.exchange("POST", url, t.body, plan.contentType, plan.timeoutMs);
      log(
        `callback ${plan.label} try ${i}/${plan.maxTries} → ${logUrl(url)}: ` +
          `${last.status === 0 ? (last.error ?? "no answer") : last.status} (${last.ms} ms)`,
      );
      if (last.status === 200) break;
    }
    const result: CallbackResult = { status: last.status, body: last.body, tries, delivered: last.status === 200 };
    if (last.error !== undefined) result.error = last.error;
    return result;
  }

  /** Cancel every exchange and wait in flight, and refuse new ones. */
  close(): void {
    this.#closed = true;
    for (const req of this.#inflight) req.destroy();
    this.#inflight.clear();
    for (const [t, resolve] of this.#sleeps) {
      clearTimeout(t);
      resolve();
    }
    this.#sleeps.clear();
    this.#agent.destroy();
  }
}
