/**
 * A stand-in for qyapi.weixin.qq.com serving several corps, each from its own WeCom simulator:
 * gettoken goes to the simulator of its `corpid`, every other call to the simulator that issued
 * its `access_token`. Shared by the many-corps tests and the replica tests.
 */
import { type IncomingMessage, request, type ServerResponse } from "node:http";
import type { WeComSimulator } from "../src/sim/wecom.js";
import { serve } from "./test-server.js";

/** Which simulator a call goes to, learning the tokens each one issues. */
export interface WeComRouting {
  /** The simulator of a call (by `corpid`, else by the `access_token` it issued; the first one otherwise). */
  simFor(url: URL): WeComSimulator | undefined;
  /** Learn from an answer (a gettoken answer names a token of that simulator). */
  observe(url: URL, sim: WeComSimulator | undefined, answer: Buffer): void;
  /** Forward one request to its simulator and copy the answer back; `done` gets the HTTP status (502 when unreachable). */
  forward(req: IncomingMessage, body: Buffer, res: ServerResponse, done?: (status: number) => void): void;
}

/** The routing of calls between `sims` (one per corp). */
export function weComRouting(sims: WeComSimulator[]): WeComRouting {
  const byToken = new Map<string, WeComSimulator>();
  const routing: WeComRouting = {
    simFor(url) {
      const corpId = url.searchParams.get("corpid");
      const token = url.searchParams.get("access_token");
      return (corpId !== null ? sims.find((s) => s.corpId === corpId) : token !== null ? byToken.get(token) : undefined) ?? sims[0];
    },
    observe(url, sim, answer) {
      if (!url.pathname.endsWith("/gettoken") || sim === undefined) return;
      try {
        const t = (JSON.parse(answer.toString("utf8")) as { access_token?: string }).access_token;
        if (t !== undefined) byToken.set(t, sim);
      } catch {
        // not JSON (an injected HTTP failure): nothing to learn
      }
    },
    forward(req, body, res, done) {
      const url = new URL(req.url ?? "/", "http://router");
      const sim = routing.simFor(url);
      const target = new URL(`${sim?.url}${url.pathname}${url.search}`);
      const out = request(target, { method: req.method, headers: { ...req.headers, host: target.host } }, (answer) => {
        const chunks: Buffer[] = [];
        answer.on("data", (c: Buffer) => chunks.push(c));
        answer.on("end", () => {
          const text = Buffer.concat(chunks);
          routing.observe(url, sim, text);
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          res.end(text);
          done?.(answer.statusCode ?? 502);
        });
      });
      out.on("error", () => {
        if (!res.headersSent) res.writeHead(502).end();
        done?.(502);
      });
      out.end(body);
    },
  };
  return routing;
}

/** A stand-in for qyapi.weixin.qq.com serving two corps: gettoken by `corpid`, everything else by the token's corp. */
export async function weComRouter(sims: WeComSimulator[]): Promise<string> {
  const routing = weComRouting(sims);
  const server = await serve((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => routing.forward(req, Buffer.concat(chunks), res));
  });
  return server.url;
}
