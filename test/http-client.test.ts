/**
 * HttpClient against loopback servers: keep-alive reuse, deadlines (whole answer, and idle for
 * streams), the body cap, error shapes (stable codes, `network` for no-answer cases), the query
 * string and credentials never in an error, the retry of an idempotent request on a stale socket.
 */
import { once } from "node:events";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { Readable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { DEFAULT_MAX_RESPONSE_BYTES, HttpClient, HttpClientError } from "../src/clients/http.js";
import { failureOf, within } from "./helpers.js";
import { closeTestServers, serve } from "./test-server.js";

const clients: HttpClient[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  await closeTestServers();
});

function client(options: ConstructorParameters<typeof HttpClient>[0]): HttpClient {
  const c = new HttpClient(options);
  clients.push(c);
  return c;
}

/** The error a promise rejects with (failing the test when it resolves). */
const failure = (p: Promise<unknown>) => failureOf(p, HttpClientError);

async function readAll(body: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of body) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** A port nobody listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const s = createServer();
  s.listen(0, "127.0.0.1");
  await once(s, "listening");
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

describe("HttpClient: keep-alive", () => {
  it("reuses one connection across 50 sequential requests", async () => {
    const srv = await serve((req, res) => res.end(`hello ${req.url}`));
    const http = client({ timeoutMs: 5000 });
    for (let i = 0; i < 50; i++) {
      const r = await http.request({ method: "GET", url: `${srv.url}/n/${i}` });
      expect(r.status).toBe(200);
      expect(r.body.toString()).toBe(`hello /n/${i}`);
    }
    expect(srv.requests()).toBe(50);
    expect(srv.connections()).toBeLessThanOrEqual(2);
  });

  it("keeps concurrent requests within maxSockets and answers each one right", async () => {
    const srv = await serve((req, res) => {
      let body = "";
      req.on("data", (c) => {
        body += c;
      });
      req.on("end", () => res.end(JSON.stringify({ got: body })));
    });
    const http = client({ timeoutMs: 10_000, agentOptions: { maxSockets: 8 } });
    const answers = await Promise.all(Array.from({ length: 400 }, (_, i) => http.json({ method: "POST", url: `${srv.url}/echo`, json: { i } })));
    answers.forEach((a, i) => {
      expect(a.status).toBe(200);
      expect(a.body).toEqual({ got: JSON.stringify({ i }) });
    });
    expect(srv.connections()).toBeGreaterThanOrEqual(1);
    expect(srv.connections()).toBeLessThanOrEqual(8);
  });

  it("reuses the connection after a streamed body was read to its end", async () => {
    const big = Buffer.alloc(1024 * 1024, 7);
    const srv = await serve((_req, res) => res.end(big));
    const http = client({ timeoutMs: 5000 });
    for (let i = 0; i < 3; i++) {
      const r = await http.stream({ method: "GET", url: `${srv.url}/big` });
      expect(r.status).toBe(200);
      expect((await readAll(r.body)).equals(big)).toBe(true);
    }
    expect(srv.connections()).toBe(1);
  });
});

describe("HttpClient: bodies", () => {
  it("sends strings, bytes and streams, with a Content-Length for the first two", async () => {
    const seen: Array<{ length: string | undefined; chunked: boolean; body: string }> = [];
    const srv = await serve((req, res) => {
      let body = "";
      req.setEncoding("utf8");
      req.on("data", (c: string) => {
        body += c;
      });
      req.on("end", () => {
        seen.push({ length: req.headers["content-length"], chunked: req.headers["transfer-encoding"] === "chunked", body });
        res.end("ok");
      });
    });
    const http = client({ timeoutMs: 5000 });
    await http.request({ method: "POST", url: srv.url, body: "中文 text" });
    await http.request({ method: "POST", url: srv.url, body: new Uint8Array([104, 105]) });
    await http.request({ method: "POST", url: srv.url, body: Readable.from(["stre", "amed"]) });
    expect(seen).toEqual([
      { length: String(Buffer.byteLength("中文 text")), chunked: false, body: "中文 text" },
      { length: "2", chunked: false, body: "hi" },
      { length: undefined, chunked: true, body: "streamed" },
    ]);
  });

  it("hands back any status as an answer, and parses JSON whatever the status", async () => {
    const srv = await serve((req, res) => {
      if (req.url?.startsWith("/bad")) {
        res.writeHead(502).end("<html>bad gateway</html>");
        return;
      }
      if (req.url === "/empty") {
        res.writeHead(204).end();
        return;
      }
      res.writeHead(500, { "content-type": "application/json" }).end('{"errcode":-1,"errmsg":"system busy"}');
    });
    const http = client({ timeoutMs: 5000 });
    const busy = await http.json({ method: "POST", url: `${srv.url}/x`, json: {} });
    expect(busy).toMatchObject({ status: 500, body: { errcode: -1, errmsg: "system busy" } });
    expect((await http.json({ method: "GET", url: `${srv.url}/empty` })).body).toBeUndefined();
    const raw = await http.request({ method: "GET", url: `${srv.url}/bad` });
    expect(raw.status).toBe(502);
    const e = await failure(http.json({ method: "GET", url: `${srv.url}/bad?access_token=SECRET` }));
    expect(e.code).toBe("http_bad_json");
    expect(e.httpStatus).toBe(502);
    expect(e.network).toBe(false);
    expect(e.message).not.toContain("SECRET");
  });
});

describe("HttpClient: deadlines", () => {
  it("times out when no answer comes, and destroys the socket", async () => {
    const srv = await serve(() => undefined); // never answers
    const http = client({ timeoutMs: 150 });
    const closed = srv.nextClose();
    const e = await failure(http.request({ method: "POST", url: `${srv.url}/hang`, body: "{}" }));
    expect(e.code).toBe("http_timeout");
    expect(e.network).toBe(true);
    expect(e.httpStatus).toBeUndefined();
    expect(e.message).toContain("no answer within 150 ms");
    await within(closed, 5000, "the server to see the socket closed");
  });

  it("counts the body in request()'s deadline", async () => {
    const srv = await serve((_req, res) => {
      res.writeHead(200, { "content-length": "100" });
      res.write("only part of it"); // then stalls
    });
    const http = client({ timeoutMs: 5000 });
    const e = await failure(http.request({ method: "GET", url: srv.url, timeoutMs: 200 }));
    expect(e.code).toBe("http_timeout");
    expect(e.network).toBe(true);
    expect(e.message).toContain("not complete within 200 ms");
    expect(e.httpStatus).toBe(200);
  });

  it("fails a stalled stream body with http_timeout", async () => {
    const srv = await serve((_req, res) => {
      res.writeHead(200);
      res.write("first chunk"); // then stalls
    });
    const http = client({ timeoutMs: 200 });
    const r = await http.stream({ method: "GET", url: srv.url });
    expect(r.status).toBe(200);
    const e = await failure(readAll(r.body));
    expect(e.code).toBe("http_timeout");
    expect(e.network).toBe(true);
    expect(e.httpStatus).toBe(200);
  });

  it("lets a stream body take longer than the deadline while bytes keep coming", async () => {
    const srv = await serve((_req, res) => {
      res.writeHead(200);
      let n = 0;
      const tick = setInterval(() => {
        res.write(`chunk ${n}\n`);
        if (++n === 8) {
          clearInterval(tick);
          res.end();
        }
      }, 100);
      res.on("close", () => clearInterval(tick));
    });
    const http = client({ timeoutMs: 500 }); // the whole body takes about 800 ms, no gap near 500
    const r = await http.stream({ method: "GET", url: srv.url });
    const text = (await readAll(r.body)).toString();
    expect(text.split("\n").filter(Boolean)).toHaveLength(8);
  });

  it("aborts on the caller's signal", async () => {
    const srv = await serve(() => undefined);
    const http = client({ timeoutMs: 10_000 });
    const controller = new AbortController();
    const p = failure(http.request({ method: "GET", url: srv.url, signal: controller.signal }));
    await within(once(srv.server, "request"), 5000, "the request to arrive");
    controller.abort();
    const e = await p;
    expect(e.code).toBe("http_aborted");
    expect(e.network).toBe(false);
  });
});

describe("HttpClient: body cap", () => {
  it("refuses a Content-Length over the cap before reading, and closes the socket", async () => {
    const srv = await serve((_req, res) => {
      res.writeHead(200, { "content-length": String(10 * 1024 * 1024) });
      res.write(Buffer.alloc(1024)); // the rest never comes: the client must not wait for it
    });
    const http = client({ timeoutMs: 3000, maxResponseBytes: 1024 * 1024 });
    const closed = srv.nextClose();
    const e = await failure(http.request({ method: "GET", url: srv.url }));
    expect(e.code).toBe("http_response_too_large");
    expect(e.network).toBe(false);
    expect(e.httpStatus).toBe(200);
    expect(e.message).toContain(String(10 * 1024 * 1024));
    await within(closed, 5000, "the server to see the socket closed");
  });

  it("cuts off a body without a length that grows past the cap (default 4 MiB)", async () => {
    const srv = await serve((_req, res) => {
      res.writeHead(200); // chunked
      const piece = Buffer.alloc(256 * 1024, 1);
      const write = () => {
        while (res.write(piece)) {
          /* fill the buffer */
        }
      };
      res.on("drain", write);
      write();
    });
    const http = client({ timeoutMs: 10_000 });
    const e = await failure(http.request({ method: "GET", url: srv.url }));
    expect(e.code).toBe("http_response_too_large");
    expect(e.message).toContain(String(DEFAULT_MAX_RESPONSE_BYTES));
    const s = await failure(http.stream({ method: "GET", url: srv.url, maxResponseBytes: 1024 * 1024 }).then((r) => readAll(r.body)));
    expect(s.code).toBe("http_response_too_large");
  });

  it("takes a body of exactly the cap", async () => {
    const srv = await serve((_req, res) => res.end(Buffer.alloc(4096, 2)));
    const http = client({ timeoutMs: 5000, maxResponseBytes: 4096 });
    expect((await http.request({ method: "GET", url: srv.url })).body.length).toBe(4096);
  });
});

describe("HttpClient: errors", () => {
  it("reports a refused connection as a network failure", async () => {
    const port = await closedPort();
    const http = client({ timeoutMs: 5000 });
    const e = await failure(http.request({ method: "POST", url: `http://127.0.0.1:${port}/cgi-bin/kf/send_msg?access_token=SECRET`, body: "{}" }));
    expect(e.code).toBe("http_network");
    expect(e.network).toBe(true);
    expect(e.errno).toBe("ECONNREFUSED");
    expect(e.httpStatus).toBeUndefined();
    expect(e.method).toBe("POST");
    expect(e.target).toBe(`http://127.0.0.1:${port}/cgi-bin/kf/send_msg`);
    expect(e.message).toBe(`POST http://127.0.0.1:${port}/cgi-bin/kf/send_msg: request failed (ECONNREFUSED)`);
  });

  it("reports a connection dropped mid-answer as a network failure with the status", async () => {
    const srv = await serve((_req, res) => {
      res.writeHead(200, { "content-length": "1000" });
      res.write("partial", () => res.socket?.destroy());
    });
    const http = client({ timeoutMs: 5000 });
    const e = await failure(http.request({ method: "GET", url: srv.url }));
    expect(e.code).toBe("http_network");
    expect(e.network).toBe(true);
    expect(e.httpStatus).toBe(200);
  });

  it("never puts the query string or the URL's credentials in an error", async () => {
    const port = await closedPort();
    const hang = await serve(() => undefined);
    const huge = await serve((_req, res) => res.end(Buffer.alloc(2048)));
    const http = client({ timeoutMs: 150, maxResponseBytes: 1024 });
    const secretQuery = "?access_token=SECRET-TOKEN&debug=1";
    const errors = [
      await failure(http.request({ method: "GET", url: `http://user:PASSWORD@127.0.0.1:${port}/a${secretQuery}` })),
      await failure(http.request({ method: "GET", url: `http://user:PASSWORD@127.0.0.1:${hang.port}/b${secretQuery}` })),
      await failure(http.request({ method: "GET", url: `http://user:PASSWORD@127.0.0.1:${huge.port}/c${secretQuery}` })),
      await failure(http.request({ method: "GET", url: `ftp://user:PASSWORD@example.com/d${secretQuery}` })),
    ];
    expect(errors.map((e) => e.code)).toEqual(["http_network", "http_timeout", "http_response_too_large", "http_invalid_request"]);
    for (const e of errors) {
      const everything = `${e.message} ${e.stack} ${JSON.stringify(e)} ${e.target} ${String(e)}`;
      expect(everything).not.toContain("SECRET-TOKEN");
      expect(everything).not.toContain("PASSWORD");
      expect(everything).not.toContain("debug");
    }
  });

  it("refuses URLs that are not absolute http(s)", async () => {
    const http = client({ timeoutMs: 5000 });
    for (const url of ["ftp://example.com/x", "file:///etc/passwd", "not a url", "/relative"]) {
      const e = await failure(http.request({ method: "GET", url }));
      expect(e.code).toBe("http_invalid_request");
      expect(e.network).toBe(false);
    }
  });

  it("refuses requests once closed, and closes idle sockets", async () => {
    const srv = await serve((_req, res) => res.end("ok"));
    const http = client({ timeoutMs: 5000 });
    await http.request({ method: "GET", url: srv.url });
    const closed = srv.nextClose();
    http.close();
    await within(closed, 5000, "the idle socket to be closed");
    const e = await failure(http.request({ method: "GET", url: srv.url }));
    expect(e.code).toBe("http_closed");
  });
});

describe("HttpClient: a keep-alive socket the server closed", () => {
  /** A server that drops the second request of every connection without answering. */
  const dropSecond = () =>
    serve((_req, res, nth) => {
      if (nth === 2) res.socket?.destroy();
      else res.end(`answer ${nth}`);
    });

  it("sends an idempotent request again on a fresh connection", async () => {
    const srv = await dropSecond();
    const http = client({ timeoutMs: 5000 });
    expect((await http.request({ method: "GET", url: srv.url })).body.toString()).toBe("answer 1");
    expect((await http.request({ method: "GET", url: srv.url })).body.toString()).toBe("answer 1");
    expect(srv.connections()).toBe(2);
    expect(srv.requests()).toBe(3);
  });

  it("never sends a POST twice", async () => {
    const srv = await dropSecond();
    const http = client({ timeoutMs: 5000 });
    await http.request({ method: "POST", url: srv.url, body: "{}" });
    const e = await failure(http.request({ method: "POST", url: srv.url, body: "{}" }));
    expect(e.code).toBe("http_network");
    expect(e.network).toBe(true);
    expect(srv.requests()).toBe(2);
  });
});
