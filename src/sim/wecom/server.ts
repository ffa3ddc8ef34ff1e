/**
 * The HTTP side of the WeCom simulator: one node:http server routing `/cgi-bin/{api}` to the API
 * families, WeCom's error answers (errmsg with hint, caller ip and the more-info link), the record
 * of requests served, and injected faults (errcodes, HTTP failures, slow answers).
 * @module
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import type { CallbackClient } from "./callback-client.js";
import type { Answer, Handler, RequestCtx, SimContext } from "./context.js";
import { SimApiError } from "./errors.js";
import type { WeComSimRequest } from "./types.js";

const JSON_TYPE = "application/json; charset=UTF-8";
const NOT_FOUND: Answer = { status: 404, headers: { "Content-Type": "text/html" }, body: Buffer.from("<html><body>404 Not Found</body></html>") };

/** Routes of the server: the API families' handlers, and the raw paths outside /cgi-bin/. */
export interface SimRoutes {
  /** `/cgi-bin/{api}` handlers. */
  api: Record<string, Handler>;
  /** GET paths outside /cgi-bin/ by prefix (e.g. `/aibot-media/`), given the rest of the path. */
  raw: Record<string, (rest: string) => Answer>;
  /** WebSocket endpoints by exact path (e.g. `/aibot/ws`). */
  upgrade?: Record<string, UpgradeRoute>;
}

/** A WebSocket endpoint: it takes the HTTP upgrades of its path and ends its connections when the server closes. */
export interface UpgradeRoute {
  /** Take one upgrade request (the socket is the endpoint's from then on). */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  /** End every connection (the server is closing). */
  close(): void;
}

/** The simulator's HTTP server, its request log and its faults. */
export class SimServer {
  readonly #ctx: SimContext;
  readonly #routes: SimRoutes;
  readonly #client: CallbackClient;
  readonly #maxBodyBytes: number;
  readonly #server: Server;
  readonly #failNext = new Map<string, { errcode: number; times: number }[]>();
  readonly #httpFailures = new Map<string, { status: number; times: number }[]>();
  readonly #delays = new Map<string, number>();
  readonly #answerDelays = new Map<string, number>();
  /** Every request served (path without query), in order of completion. */
  readonly requests: WeComSimRequest[] = [];

  /**
   * @param ctx the shared simulator context
   * @param routes what to serve
   * @param client whose sleeps the injected delays use (cancelled on close)
   * @param maxBodyBytes largest body accepted (HTTP 413 beyond)
   */
  constructor(ctx: SimContext, routes: SimRoutes, client: CallbackClient, maxBodyBytes: number) {
    this.#ctx = ctx;
    this.#routes = routes;
    this.#client = client;
    this.#maxBodyBytes = maxBodyBytes;
    this.#server = createServer((req, res) => {
      this.#handle(req, res).catch((e: unknown) => {
        this.#ctx.log(`internal error: ${(e as Error).message}`);
        if (!res.headersSent) res.writeHead(500, { "Content-Type": "text/plain" });
        res.end();
      });
    });
    this.#server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => this.#upgrade(req, socket, head));
  }

  /** Hand an upgrade to the WebSocket endpoint of its path; 404 and close for any other path. */
  #upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const path = new URL(req.url ?? "/", "http://sim.invalid").pathname;
    const routes = this.#routes.upgrade ?? {};
    const route = Object.hasOwn(routes, path) ? routes[path] : undefined;
    const method = req.method ?? "GET";
    this.requests.push({ method, path, at: this.#ctx.now(), status: route === undefined ? 404 : 101 });
    this.#ctx.log(`${method} ${path} upgrade → ${route === undefined ? 404 : 101}`);
    if (route === undefined) {
      socket.on("error", () => {});
      socket.end("HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
      return;
    }
    route.upgrade(req, socket, head);
  }

  /** Listen; resolves with the base URL (`http://host:port`). */
  async listen(port: number, host: string): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once("error", reject);
      this.#server.listen(port, host, () => {
        this.#server.off("error", reject);
        resolve();
      });
    });
    const addr = this.#server.address() as AddressInfo;
    const h = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
    return `http://${h}:${addr.port}`;
  }

  /** Stop listening and drop open connections (WebSocket ones too). */
  close(): Promise<void> {
    for (const route of Object.values(this.#routes.upgrade ?? {})) route.close();
    return new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }

  /** Answer the next `times` calls of `api` with `errcode`. */
  failNext(api: string, errcode: number, times: number): void {
    const list = this.#failNext.get(api) ?? [];
    list.push({ errcode, times });
    this.#failNext.set(api, list);
  }

  /**
   * Delay every answer of `api` by `ms` (0 removes the delay): before the call is handled
   * (`before`, the default), or after (`after`: the call took effect, its answer is late, as when
   * a connection dies between WeCom's work and its answer).
   */
  setDelay(api: string, ms: number, when: "before" | "after" = "before"): void {
    const map = when === "before" ? this.#delays : this.#answerDelays;
    if (ms > 0) map.set(api, ms);
    else map.delete(api);
  }

  /** Answer the next `times` calls of `api` with HTTP `status` and an HTML body. */
  setHttpFailure(api: string, status: number, times: number): void {
    const list = this.#httpFailures.get(api) ?? [];
    list.push({ status, times });
    this.#httpFailures.set(api, list);
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = Date.now();
    const at = this.#ctx.now();
    const url = new URL(req.url ?? "/", "http://sim.invalid");
    const method = req.method ?? "GET";
    const path = url.pathname;
    let answer: Answer = NOT_FOUND;
    const body = await this.#readBody(req);
    if (body === undefined) {
      answer = { status: 413, headers: { "Content-Type": "text/html" }, body: Buffer.from("<html><body>413 Request Entity Too Large</body></html>") };
    } else if (path.startsWith("/cgi-bin/")) {
      answer = await this.#api(path.slice("/cgi-bin/".length), { req, url, body });
    } else if (method === "GET") {
      for (const [prefix, serve] of Object.entries(this.#routes.raw)) {
        if (path.startsWith(prefix)) {
          answer = serve(path.slice(prefix.length));
          break;
        }
      }
    }
    let status: number;
    let errcode: number | undefined;
    if ("json" in answer) {
      status = answer.status ?? 200;
      errcode = typeof answer.json.errcode === "number" ? answer.json.errcode : undefined;
      const text = Buffer.from(JSON.stringify(answer.json), "utf8");
      res.writeHead(status, { "Content-Type": JSON_TYPE, "Content-Length": text.length });
      res.end(text);
    } else {
      status = answer.status;
      res.writeHead(status, { ...answer.headers, "Content-Length": answer.body.length });
      res.end(answer.body);
    }
    const record: WeComSimRequest = { method, path, at, status };
    if (errcode !== undefined) record.errcode = errcode;
    this.requests.push(record);
    this.#ctx.log(`${method} ${path} → ${status}${errcode !== undefined ? ` errcode ${errcode}` : ""} (${Date.now() - started} ms)`);
  }

  /** The request body, or undefined when it is larger than allowed. */
  #readBody(req: IncomingMessage): Promise<Buffer | undefined> {
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let over = false;
      req.on("data", (c: Buffer) => {
        size += c.length;
        if (size > this.#maxBodyBytes) over = true;
        else chunks.push(c);
      });
      req.on("end", () => resolve(over ? undefined : Buffer.concat(chunks)));
      req.on("error", () => resolve(undefined));
    });
  }

  #errorAnswer(e: SimApiError, req: IncomingMessage): Answer {
    const ip = (req.socket.remoteAddress ?? "").replace(/^::ffff:/, "");
    return {
      json: {
        errcode: e.errcode,
        errmsg: `${e.message}, hint: [${this.#ctx.ids.hint(this.#ctx.now())}], from ip: ${ip}, more info at https://open.work.weixin.qq.com/devtool/query?e=${e.errcode}`,
      },
    };
  }

  #consume<T extends { times: number }>(map: Map<string, T[]>, api: string): T | undefined {
    const list = map.get(api);
    const first = list?.[0];
    if (list === undefined || first === undefined) return undefined;
    first.times--;
    if (first.times <= 0) list.shift();
    if (list.length === 0) map.delete(api);
    return first;
  }

  async #api(api: string, ctx: RequestCtx): Promise<Answer> {
    const handler = Object.hasOwn(this.#routes.api, api) ? this.#routes.api[api] : undefined;
    if (handler === undefined) return NOT_FOUND;
    const delay = this.#delays.get(api);
    if (delay !== undefined) await this.#client.sleep(delay);
    const http = this.#consume(this.#httpFailures, api);
    if (http !== undefined) {
      return { status: http.status, headers: { "Content-Type": "text/html" }, body: Buffer.from(`<html><body>${http.status} simulated failure</body></html>`) };
    }
    const fail = this.#consume(this.#failNext, api);
    try {
      if (fail !== undefined) throw new SimApiError(fail.errcode, fail.errcode === 0 ? "ok" : `simulated errcode ${fail.errcode}`);
      const answer = await handler(ctx);
      const late = this.#answerDelays.get(api);
      if (late !== undefined) await this.#client.sleep(late);
      return answer;
    } catch (e) {
      if (e instanceof SimApiError) return this.#errorAnswer(e, ctx.req);
      throw e;
    }
  }
}
