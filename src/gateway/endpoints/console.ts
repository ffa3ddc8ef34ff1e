/**
 * The operator console at `/console`: its built files, and its JSON API under `/console/api/`
 * (see `console/types.ts` for every answer). A login with the admin token sets a signed session
 * cookie (HttpOnly, SameSite=Strict); every POST needs a JSON body, the session's CSRF token in
 * `X-CSRF-Token`, and (when the browser sends one) an `Origin` of this host. Every answer carries
 * a strict Content-Security-Policy. The console's session also authorises `POST
 * /admin/outbox/replay` ({@link writeAuth}).
 * @module
 */
import { PassThrough } from "node:stream";
import type { Config } from "../../config.js";
import type { Logger } from "../../log.js";
import type { OutboxEntry, Store } from "../../store/types.js";
import { bearerMatches } from "../../wecom/crypto.js";
import type { HealthHistory } from "../console/history.js";
import { consoleChannel, type LiveFeed, summarize } from "../console/live.js";
import { cookieValue, SESSION_COOKIE, type Session, type Sessions } from "../console/session.js";
import { CONSOLE_HEADERS, type ConsoleFile } from "../console/static.js";
import type { Accounts, DoctorCheck, LiveEvent, PlaygroundChannel, PlaygroundHooks } from "../console/types.js";
import { conversations, outboxPage, transcript, type ViewSources } from "../console/views.js";
import { type Actor, BadParam, Params } from "./admin.js";
import { type GatewayRequest, type GatewayResponse, header } from "./http.js";

/** What the console needs of the gateway. */
export interface ConsoleHost {
  readonly config: Config;
  readonly store: Store;
  readonly log: Logger;
  readonly sessions: Sessions;
  readonly live: LiveFeed;
  readonly health: HealthHistory;
  readonly playground: PlaygroundHooks | undefined;
  /** The built files by path under `/console/` (undefined: the console was not built). */
  consoleFiles(): Map<string, ConsoleFile> | undefined;
  /** A same-origin link to a stored media file. */
  mediaLink(tenant: string, id: string): string;
  accounts(): Promise<Accounts>;
  doctor(): Promise<DoctorCheck[]>;
  now(): number;
}

/** Longest text a Playground message may have. */
const PLAYGROUND_TEXT_MAX = 2000;
/**
 * Heartbeat of the Live stream (a comment line, and a new look at the session), ms: keeps proxies
 * from closing an idle stream, and ends the stream of a session logged out. Tests shorten it.
 */
export const LIVE_TIMING = { heartbeatMs: 15_000 };
/** A Live client this far behind (bytes buffered) is cut off. */
const LIVE_MAX_BUFFERED = 1024 * 1024;

const answer = (status: number, body: unknown, extra: Record<string, string> = {}): GatewayResponse => ({
  status,
  headers: { ...CONSOLE_HEADERS, "content-type": "application/json; charset=utf-8", "cache-control": "no-store", ...extra },
  body: JSON.stringify(body),
});
const fail = (status: number, errcode: string, errmsg: string, extra: Record<string, string> = {}): GatewayResponse => answer(status, { errcode, errmsg }, extra);

/** The client's address, for the audit log and the login limit. */
function addressOf(req: GatewayRequest): string {
  return req.remoteAddress ?? "unknown";
}

/**
 * A POST's checks before its session: a JSON body, and an Origin (when sent) of this host (the
 * request's `Host`) or of `publicUrl` (a reverse proxy that rewrites `Host`).
 */
function postRefusal(req: GatewayRequest, publicUrl: string): GatewayResponse | undefined {
  const type = (header(req, "content-type") ?? "").split(";")[0]?.trim().toLowerCase();
  if (type !== "application/json") return fail(415, "unsupported_media_type", "send the body as application/json");
  const origin = header(req, "origin");
  if (origin !== undefined) {
    const hosts = [header(req, "host"), hostOf(publicUrl)].filter((h): h is string => h !== undefined);
    let host: string | undefined;
    try {
      host = new URL(origin).host;
    } catch {
      host = undefined;
    }
    if (host === undefined || !hosts.includes(host)) return fail(403, "cross_origin", "the request came from another site");
  }
  return undefined;
}

function hostOf(url: string): string | undefined {
  try {
    return new URL(url).host;
  } catch {
    return undefined;
  }
}

/** The session of the request's cookie, when valid. */
async function sessionOf(host: ConsoleHost, req: GatewayRequest): Promise<Session | undefined> {
  return host.sessions.check(cookieValue(header(req, "cookie"), SESSION_COOKIE));
}

/**
 * Who may change something through the admin API's writes: the bearer token (`admin-api`), or a
 * console session with its CSRF token (`console`); else the refusal to answer.
 */
export async function writeAuth(host: ConsoleHost, req: GatewayRequest): Promise<Actor | GatewayResponse> {
  const from = addressOf(req);
  if (bearerMatches(header(req, "authorization"), host.config.adminToken)) return { actor: "admin-api", from };
  const session = await sessionOf(host, req);
  if (session === undefined) {
    return { status: 401, headers: { "content-type": "application/json; charset=utf-8", "www-authenticate": 'Bearer realm="wecom-bridge admin"' }, body: JSON.stringify({ errcode: "unauthorized", errmsg: "missing or wrong admin bearer token (or console session)" }) };
  }
  const refused = postRefusal(req, host.config.publicUrl);
  if (refused !== undefined) return refused;
  if (!host.sessions.csrfMatches(session, header(req, "x-csrf-token"))) return fail(403, "csrf", "missing or wrong X-CSRF-Token: reload the console");
  return { actor: "console", from };
}

function bodyObject(req: GatewayRequest): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(req.body === "" ? "{}" : req.body);
    return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** Answer a request under `/console` (`rest`: the path parts after `console`). */
export async function consoleEndpoint(host: ConsoleHost, req: GatewayRequest, rest: string[]): Promise<GatewayResponse> {
  if (rest[0] === "api") return api(host, req, rest.slice(1).join("/"));
  if (req.method !== "GET" && req.method !== "HEAD") return fail(405, "method_not_allowed", "use GET", { allow: "GET" });
  const files = host.consoleFiles();
  if (files === undefined) return fail(503, "console_not_built", "the console's files are missing: run npm run build");
  const file = files.get(rest.join("/"));
  if (file === undefined) return fail(404, "not_found", "no such console file");
  if (header(req, "if-none-match") === file.headers.etag) return { status: 304, headers: file.headers, body: "" };
  return { status: 200, headers: file.headers, body: file.body };
}

const GETS = new Set(["session", "live", "conversations", "transcript", "outbox", "audit", "accounts", "health", "playground", "playground/log"]);
const POSTS = new Set(["login", "logout", "doctor", "playground/customer", "playground/agent"]);

/** Loopback host names (with or without a port) a sandbox's console answers to. */
const LOOPBACK_HOST = /^(localhost|127\.0\.0\.1|\[::1\])(:\d+)?$/i;

async function api(host: ConsoleHost, req: GatewayRequest, route: string): Promise<GatewayResponse> {
  // the sandbox's admin token is public: its console answers only under a loopback name or its
  // publicUrl's, so that a web page cannot reach it through DNS rebinding
  const hostHeader = header(req, "host") ?? "";
  if (host.playground !== undefined && !LOOPBACK_HOST.test(hostHeader) && hostHeader !== hostOf(host.config.publicUrl)) {
    return fail(403, "host_not_allowed", "the sandbox's console answers on localhost only");
  }
  const isGet = GETS.has(route);
  if (!isGet && !POSTS.has(route)) return fail(404, "not_found", "no such console API");
  const want = isGet ? "GET" : "POST";
  if (req.method !== want && !(isGet && req.method === "HEAD")) return fail(405, "method_not_allowed", `use ${want}`, { allow: want });
  if (!isGet) {
    const refused = postRefusal(req, host.config.publicUrl);
    if (refused !== undefined) return refused;
  }
  if (route === "login") return login(host, req);
  const session = await sessionOf(host, req);
  if (session === undefined) return fail(401, "unauthorized", "log in with the admin token");
  if (!isGet && !host.sessions.csrfMatches(session, header(req, "x-csrf-token"))) return fail(403, "csrf", "missing or wrong X-CSRF-Token: reload the console");
  try {
    return await route_(host, req, route, session);
  } catch (e) {
    if (e instanceof BadParam) return fail(400, "bad_param", e.message);
    throw e;
  }
}

async function login(host: ConsoleHost, req: GatewayRequest): Promise<GatewayResponse> {
  const from = addressOf(req);
  if (!host.sessions.mayTry(from)) return fail(429, "too_many_attempts", "too many wrong tokens: wait a minute", { "retry-after": "60" });
  const token = bodyObject(req)?.token;
  if (typeof token !== "string" || token.length > 1024 || !bearerMatches(`Bearer ${token}`, host.config.adminToken)) {
    host.sessions.failed(from);
    host.log.warn("console login refused", { from });
    return fail(401, "unauthorized", "wrong admin token");
  }
  host.sessions.succeeded(from);
  const { cookie, session } = host.sessions.issue();
  await host.store.appendAudit({ time: host.now(), tenant: null, actor: "console", from, action: "login", detail: "console session opened" });
  return answer(200, { csrf: session.csrf, sandbox: host.playground !== undefined }, { "set-cookie": host.sessions.setCookie(cookie) });
}

/** The consoles whose doctor is running (one run at a time). */
const doctorRunning = new WeakSet<ConsoleHost>();

async function route_(host: ConsoleHost, req: GatewayRequest, route: string, session: Session): Promise<GatewayResponse> {
  const views: ViewSources = { store: host.store, config: host.config, mediaLink: (t, id) => host.mediaLink(t, id) };
  switch (route) {
    case "session":
      return answer(200, { csrf: session.csrf, sandbox: host.playground !== undefined });
    case "logout":
      await host.sessions.revoke(session);
      await host.store.appendAudit({ time: host.now(), tenant: null, actor: "console", from: addressOf(req), action: "logout", detail: "console session closed" });
      return answer(200, {}, { "set-cookie": host.sessions.setCookie(undefined) });
    case "live":
      if (req.method === "HEAD") return answer(200, {});
      if (host.live.recent().length === 0) host.live.seed(await earlier(host));
      return live(host, session);
    case "conversations": {
      const p = new Params(req.query, ["limit", "before", "tenant", "channel", "q"]);
      const page = p.page();
      const channel = p.channel();
      const q = p.text("q", 100);
      return answer(200, await conversations(views, { ...page, ...p.tenant(), ...(channel ? { channel } : {}), ...(q ? { q } : {}) }));
    }
    case "transcript": {
      const p = new Params(req.query, ["conversation", "tenant"]);
      const conversation = p.text("conversation", 512);
      const tenant = p.tenant().tenant;
      if (conversation === undefined || tenant === undefined) throw new BadParam("conversation and tenant are required");
      return answer(200, await transcript(views, tenant, conversation));
    }
    case "outbox": {
      const p = new Params(req.query, ["limit", "before", "tenant", "state"]);
      const states = req.query.has("state") ? p.states() : (["pending", "inflight", "refused", "dead"] as const).slice();
      return answer(200, await outboxPage(views, states, { ...p.page(), ...p.tenant() }));
    }
    case "audit": {
      const page = new Params(req.query, ["limit", "before"]).page();
      const items = await host.store.listAudit(page);
      return answer(200, { items, next: items.length === page.limit ? (items.at(-1)?.id ?? null) : null });
    }
    case "accounts":
      return answer(200, await host.accounts());
    case "health":
      return answer(200, { intervalSec: 10, points: host.health.points() });
    case "doctor": {
      if (doctorRunning.has(host)) return fail(409, "busy", "the checks are already running");
      doctorRunning.add(host);
      try {
        return answer(200, { rows: await host.doctor() });
      } finally {
        doctorRunning.delete(host);
      }
    }
    default:
      return playground(host, req, route);
  }
}

/**
 * The Live page's stream: the rows kept, then each change as it happens, for as long as the
 * session lasts (checked again at each heartbeat: a logout ends it; the page then logs in again).
 */
function live(host: ConsoleHost, session: Session): GatewayResponse {
  const stream = new PassThrough();
  const send = (text: string) => {
    if (stream.destroyed) return;
    // a client this far behind is cut off (the edge closes its connection; the page reconnects)
    if (stream.writableLength > LIVE_MAX_BUFFERED) return void stream.destroy(new Error("slow Live client"));
    stream.write(text);
  };
  const unsubscribe = host.live.subscribe((e) => send(`event: live\ndata: ${JSON.stringify(e)}\n\n`));
  if (unsubscribe === undefined) return fail(503, "too_many_listeners", "too many Live pages are open on this replica", { "retry-after": "10" });
  send("retry: 2000\n\n");
  for (const e of host.live.recent()) send(`event: live\ndata: ${JSON.stringify(e)}\n\n`);
  const heartbeat = setInterval(() => {
    host.sessions.stillValid(session).then(
      (ok) => (ok ? send(": ping\n\n") : stream.end()),
      () => send(": ping\n\n"), // the store did not answer: keep the stream, look again at the next beat
    );
  }, LIVE_TIMING.heartbeatMs);
  heartbeat.unref();
  const expiry = setTimeout(() => stream.end(), Math.max(0, session.expiresAt - host.now()));
  expiry.unref();
  stream.on("close", () => {
    clearInterval(heartbeat);
    clearTimeout(expiry);
    unsubscribe();
  });
  return { status: 200, headers: { ...CONSOLE_HEADERS, "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-store", "x-accel-buffering": "no" }, body: stream };
}

/** Messages read back from the store for a Live page that opens on a feed nobody watched. */
const LIVE_BACKLOG = 50;

/**
 * The newest messages stored while nobody watched, as Live rows: `delivered` unless their
 * delivery to the 全媒体 is still pending, in flight or dead (latency unknown: it happened unseen).
 */
async function earlier(host: ConsoleHost): Promise<LiveEvent[]> {
  const [messages, open] = await Promise.all([host.store.listMessages({}, { limit: LIVE_BACKLOG }), host.store.listOutbox(["pending", "inflight", "dead"], { limit: 500 })]);
  const waiting = new Map<string, OutboxEntry>();
  for (const e of open) if (e.kind === "omni" && e.messageSeq !== null) waiting.set(`${e.tenant}:${e.messageSeq}`, e);
  return messages.reverse().map((m) => {
    const e = waiting.get(`${m.tenant}:${m.seq}`);
    const state: LiveEvent["state"] = e === undefined ? "delivered" : e.state === "dead" ? "dead" : e.attempts > 0 ? "retrying" : "stored";
    return { key: `in:${m.tenant}:${m.seq}`, time: m.receivedAt, channel: consoleChannel(m.channel), direction: "in", tenant: m.tenant, conversationId: m.conversationId, state, latencyMs: null, summary: summarize(m.message), error: e?.lastError ?? undefined };
  });
}

const CHANNELS: readonly PlaygroundChannel[] = ["kf", "app", "bot"];

async function playground(host: ConsoleHost, req: GatewayRequest, route: string): Promise<GatewayResponse> {
  const pg = host.playground;
  if (route === "playground") return answer(200, pg?.info() ?? { enabled: false, channels: [] });
  if (pg === undefined) return fail(404, "no_playground", "the Playground runs in the sandbox only (npm start without a configuration)");
  if (route === "playground/log") {
    const channel = new Params(req.query, ["channel"]).text("channel", 8);
    if (!CHANNELS.includes(channel as PlaygroundChannel)) throw new BadParam(`channel: must be one of ${CHANNELS.join(", ")}`);
    return answer(200, pg.log(channel as PlaygroundChannel));
  }
  const body = bodyObject(req);
  const channel = body?.channel;
  const text = body?.text;
  if (!CHANNELS.includes(channel as PlaygroundChannel)) return fail(400, "bad_param", `channel: must be one of ${CHANNELS.join(", ")}`);
  if (typeof text !== "string" || text.trim() === "" || text.length > PLAYGROUND_TEXT_MAX) return fail(400, "bad_param", `text: must be 1 to ${PLAYGROUND_TEXT_MAX} characters`);
  try {
    if (route === "playground/customer") await pg.customerSends(channel as PlaygroundChannel, text);
    else await pg.agentSends(channel as PlaygroundChannel, text);
  } catch (e) {
    return fail(409, "playground", (e as Error).message.split("\n")[0] ?? "the simulator refused");
  }
  return answer(200, {});
}
