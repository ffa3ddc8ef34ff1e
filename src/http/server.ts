/**
 * The HTTP edge: node:http, body-size limits, deadlines for slow clients, a connection cap, the
 * client's address behind trusted proxies, and a request shape the gateway understands. No
 * framework: the gateway's routes are plain functions.
 * @module
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Gateway, GatewayRequest } from "../gateway/gateway.js";
import { ClientAddress } from "./client-address.js";

/**
 * Parse a query string with `decodeURIComponent`, which (unlike URLSearchParams) keeps `+` as `+`:
 * WeCom's echostr and signatures are base64 and may arrive with a bare `+`.
 */
export function parseQuery(raw: string): URLSearchParams {
  const out = new URLSearchParams();
  if (raw === "") return out;
  for (const part of raw.split("&")) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    const k = eq < 0 ? part : part.slice(0, eq);
    const v = eq < 0 ? "" : part.slice(eq + 1);
    let key: string;
    let value: string;
    try {
      key = k.indexOf("%") === -1 ? k : decodeURIComponent(k);
      value = v.indexOf("%") === -1 ? v : decodeURIComponent(v);
    } catch {
      key = k;
      value = v;
    }
    out.append(key, value);
  }
  return out;
}

class TooLarge extends Error {}
class Aborted extends Error {}

/**
 * Read a request body up to `limit` bytes (a larger declared length is refused before reading).
 * Rejects with TooLarge when more is sent, and with Aborted when the connection ends first (a
 * client gone, or cut off by the request timeout).
 */
function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const fail = (e: Error) => {
      if (settled) return;
      settled = true;
      req.removeAllListeners("data");
      req.resume();
      reject(e);
    };
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > limit) return fail(new TooLarge());
      chunks.push(c);
    });
    req.on("end", () => {
      if (settled) return;
      settled = true;
      resolve(chunks.length === 1 ? (chunks[0] as Buffer).toString("utf8") : Buffer.concat(chunks).toString("utf8"));
    });
    // "close" comes after every request, read or not: build the error only when it matters
    req.on("error", () => settled || fail(new Aborted()));
    req.on("close", () => settled || fail(new Aborted()));
  });
}

/** The declared body length, or undefined when none (chunked, or no body). */
function declaredLength(req: IncomingMessage): number | undefined {
  const v = req.headers["content-length"];
  if (v === undefined) return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
}

/**
 * The `channel` label of a request that failed at the edge: the route's channel, else `other`
 * (never a part of the path: an unauthenticated client must not be able to add a series).
 */
export function edgeChannel(path: string): "app" | "bot" | "archive" | "other" {
  if (path.startsWith("/wecom/app/")) return "app";
  if (path.startsWith("/wecom/bot/")) return "bot";
  if (path === "/archive/push") return "archive";
  return "other";
}

/** Default request header deadline, ms (`limits.headersTimeoutMs`). */
export const DEFAULT_HEADERS_TIMEOUT_MS = 10_000;
/** Default whole-request deadline, ms (`limits.requestTimeoutMs`). */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/** Idle keep-alive connections close after this, ms (longer than the usual proxy's 60 s). */
export const KEEP_ALIVE_TIMEOUT_MS = 65_000;
/** Default most sockets open at once (`limits.maxConnections`). */
export const DEFAULT_MAX_CONNECTIONS = 10_000;

/**
 * How often Node looks for requests past their header or request deadline. Node only checks on
 * this interval (30 s by default, which would let a slow client hold a socket for its limit plus
 * up to 30 s): a quarter of the shorter deadline, between 50 ms and 1 s, so a slow client is cut
 * off within its limit plus at most a second.
 */
export function connectionsCheckingInterval(headersTimeoutMs: number, requestTimeoutMs: number): number {
  return Math.max(50, Math.min(1000, Math.floor(Math.min(headersTimeoutMs, requestTimeoutMs) / 4)));
}

/** Options of {@link startHttpServer}. */
export interface HttpServerOptions {
  host: string;
  port: number;
  /** Largest body accepted, bytes; a larger one (declared or sent) is a 413. */
  bodyLimit: number;
  /** Request headers must arrive within this, ms (default 10,000); else 408 and the socket closes. */
  headersTimeoutMs?: number;
  /** The whole request must arrive within this, ms (default 30,000); else 408 and the socket closes. */
  requestTimeoutMs?: number;
  /** Idle keep-alive connections close after this, ms (default 65,000). */
  keepAliveTimeoutMs?: number;
  /** Most sockets open at once (default 10,000); beyond it new connections are closed at once. */
  maxConnections?: number;
  /**
   * Addresses or CIDRs of trusted reverse proxies: only for a peer among them is
   * `X-Forwarded-For` read (see `client-address.ts`). Default none.
   */
  trustProxy?: readonly string[];
}

/** A running HTTP server. */
export interface RunningServer {
  server: Server;
  /** `http://host:port`. */
  url: string;
  close(): Promise<void>;
}

const jsonHeaders = { "content-type": "application/json; charset=utf-8", connection: "close" };

/** Serve a gateway over HTTP, with the limits an internet-facing server needs. */
export async function startHttpServer(gateway: Gateway, options: HttpServerOptions): Promise<RunningServer> {
  const requestTimeout = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  // Node refuses a header deadline past the request deadline
  const headersTimeout = Math.min(options.headersTimeoutMs ?? DEFAULT_HEADERS_TIMEOUT_MS, requestTimeout);
  const clients = new ClientAddress(options.trustProxy ?? []);
  const handler = async (req: IncomingMessage, res: ServerResponse) => {
    const rawUrl = req.url ?? "/";
    const q = rawUrl.indexOf("?");
    const path = q < 0 ? rawUrl : rawUrl.slice(0, q);
    let body = "";
    const declared = declaredLength(req);
    const refuse = async (tooLarge: boolean) => {
      if (tooLarge && gateway.answersOversize(path)) {
        // the 全媒体's endpoint answers everything with HTTP 200 and its errcode, the signature first
        const request: GatewayRequest = { method: req.method ?? "POST", path, query: parseQuery(q < 0 ? "" : rawUrl.slice(q + 1)), headers: req.headers, body: "", bodyTooLarge: true };
        const client = clients.resolve(req.socket.remoteAddress, req.headers["x-forwarded-for"]);
        if (client !== undefined) request.remoteAddress = client;
        const r = await gateway.handle(request);
        res.writeHead(r.status, { ...r.headers, connection: "close" });
        res.end(typeof r.body === "string" || Buffer.isBuffer(r.body) ? r.body : "");
        return;
      }
      gateway.metrics.callbacks.inc({ channel: edgeChannel(path), outcome: tooLarge ? "too_large" : "aborted" });
      res.writeHead(tooLarge ? 413 : 400, jsonHeaders);
      res.end(JSON.stringify({ errcode: tooLarge ? "too_large" : "bad_request", errmsg: tooLarge ? `body larger than ${options.bodyLimit} bytes` : "request body could not be read" }));
    };
    if (declared !== undefined && declared > options.bodyLimit) return refuse(true);
    if (req.method === "POST" || req.method === "PUT") {
      try {
        body = await readBody(req, options.bodyLimit);
      } catch (e) {
        return refuse(e instanceof TooLarge);
      }
    }
    const request: GatewayRequest = {
      method: req.method ?? "GET",
      path,
      query: parseQuery(q < 0 ? "" : rawUrl.slice(q + 1)),
      headers: req.headers,
      body,
    };
    const client = clients.resolve(req.socket.remoteAddress, req.headers["x-forwarded-for"]);
    if (client !== undefined) request.remoteAddress = client;
    const r = await gateway.handle(request);
    res.writeHead(r.status, r.headers);
    if (typeof r.body === "string" || Buffer.isBuffer(r.body)) {
      res.end(r.body);
      return;
    }
    const stream = r.body;
    stream.on("error", () => res.destroy());
    // a body stream closed before its end (destroyed by its producer) closes the connection too
    stream.on("close", () => {
      if (!res.writableEnded) res.destroy();
    });
    res.on("close", () => stream.destroy());
    stream.pipe(res);
  };
  const server = createServer(
    {
      headersTimeout,
      requestTimeout,
      keepAliveTimeout: options.keepAliveTimeoutMs ?? KEEP_ALIVE_TIMEOUT_MS,
      connectionsCheckingInterval: connectionsCheckingInterval(headersTimeout, requestTimeout),
    },
    (req, res) => {
      handler(req, res).catch((e: unknown) => {
        // the path only: the query may hold the archive secret
        gateway.log.error("request failed at the HTTP edge", { method: req.method, path: (req.url ?? "").split("?")[0]?.slice(0, 200), error: (e as Error)?.message });
        if (!res.headersSent) res.writeHead(500, { "content-type": "application/json" });
        res.end('{"errcode":"internal","errmsg":"internal error"}');
      });
    },
  );
  server.keepAliveTimeout = options.keepAliveTimeoutMs ?? KEEP_ALIVE_TIMEOUT_MS;
  server.maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
  return {
    server,
    url: `http://${host}:${addr.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
