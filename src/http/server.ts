/**
 * The HTTP edge: node:http, body-size limits, and a request shape the gateway understands. No
 * framework: the gateway's routes are plain functions.
 * @module
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Gateway, GatewayRequest } from "../gateway/gateway.js";

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

function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers["content-length"] ?? 0);
    if (declared > limit) {
      reject(new TooLarge());
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > limit) {
        reject(new TooLarge());
        req.removeAllListeners("data");
        req.resume();
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => resolve(chunks.length === 1 ? (chunks[0] as Buffer).toString("utf8") : Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

/** Options of {@link startHttpServer}. */
export interface HttpServerOptions {
  host: string;
  port: number;
  /** Largest body accepted, bytes. */
  bodyLimit: number;
}

/** A running HTTP server. */
export interface RunningServer {
  server: Server;
  /** `http://host:port`. */
  url: string;
  close(): Promise<void>;
}

/** Serve a gateway over HTTP. */
export async function startHttpServer(gateway: Gateway, options: HttpServerOptions): Promise<RunningServer> {
  const handler = async (req: IncomingMessage, res: ServerResponse) => {
    const rawUrl = req.url ?? "/";
    const q = rawUrl.indexOf("?");
    const path = q < 0 ? rawUrl : rawUrl.slice(0, q);
    let body = "";
    if (req.method === "POST" || req.method === "PUT") {
      try {
        body = await readBody(req, options.bodyLimit);
      } catch (e) {
        const tooLarge = e instanceof TooLarge;
        gateway.metrics.callbacks.inc({ channel: path.split("/")[2] ?? path, outcome: tooLarge ? "too_large" : "aborted" });
        res.writeHead(tooLarge ? 413 : 400, { "content-type": "application/json; charset=utf-8", connection: "close" });
        res.end(JSON.stringify({ errcode: tooLarge ? "too_large" : "bad_request", errmsg: tooLarge ? `body larger than ${options.bodyLimit} bytes` : "request body could not be read" }));
        return;
      }
    }
    const request: GatewayRequest = {
      method: req.method ?? "GET",
      path,
      query: parseQuery(q < 0 ? "" : rawUrl.slice(q + 1)),
      headers: req.headers,
      body,
    };
    if (req.socket.remoteAddress !== undefined) request.remoteAddress = req.socket.remoteAddress;
    const r = await gateway.handle(request);
    res.writeHead(r.status, r.headers);
    if (typeof r.body === "string" || Buffer.isBuffer(r.body)) {
      res.end(r.body);
      return;
    }
    const stream = r.body;
    stream.on("error", () => res.destroy());
    res.on("close", () => stream.destroy());
    stream.pipe(res);
  };
  const server = createServer((req, res) => {
    handler(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500, { "content-type": "application/json" });
      res.end('{"errcode":"internal","errmsg":"internal error"}');
    });
  });
  server.keepAliveTimeout = 65_000;
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
