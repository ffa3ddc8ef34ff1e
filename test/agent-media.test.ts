/**
 * fetchAgentMedia against loopback servers: what is allowed is served byte for byte; loopback,
 * private, link-local and metadata addresses are refused unless listed (also behind a public-looking
 * name, a redirect, or an odd spelling of the address); the connection uses the checked address;
 * size caps, deadlines and statuses give the right error; credentials never show.
 */
import { createHash } from "node:crypto";
import { once } from "node:events";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AgentMediaError, type AgentMediaOptions, fetchAgentMedia, isPublicAddress, parseAllowHosts, type ResolvedAddress } from "../src/clients/agent-media.js";
import { failureOf, within } from "./helpers.js";
import { closeTestServers, serve } from "./test-server.js";

let dir = "";

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "agent-media-"));
});

afterEach(async () => {
  rmSync(dir, { recursive: true, force: true });
  await closeTestServers();
});

/** An injected DNS: fixed answers per name, counting calls; unknown names fail as NXDOMAIN. */
function fakeDns(table: Record<string, string[]>) {
  const calls: string[] = [];
  const lookup = async (hostname: string): Promise<ResolvedAddress[]> => {
    calls.push(hostname);
    const addrs = table[hostname];
    if (!addrs) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: "ENOTFOUND" });
    return addrs.map((address) => ({ address, family: address.includes(":") ? 6 : 4 }));
  };
  return { lookup, calls };
}

function opts(extra: Partial<AgentMediaOptions> = {}): AgentMediaOptions {
  return { allowHosts: [], maxBytes: 1024 * 1024, timeoutMs: 3000, destDir: dir, ...extra };
}

const failure = (p: Promise<unknown>) => failureOf(p, AgentMediaError);

/** A port nobody listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const s = createServer();
  s.listen(0, "127.0.0.1");
  await once(s, "listening");
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

const filesIn = (d: string) => readdirSync(d);
const PNG = Buffer.concat([Buffer.from("89504e470d0a1a0a", "hex"), Buffer.alloc(5000, 0xab)]);
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

describe("isPublicAddress", () => {
  it.each([
    ["8.8.8.8", true],
    ["1.1.1.1", true],
    ["93.184.216.34", true],
    ["100.63.255.255", true], // just below CGNAT
    ["100.128.0.0", true], // just above CGNAT
    ["172.15.255.255", true],
    ["172.32.0.0", true],
    ["192.169.0.1", true],
    ["203.0.114.1", true],
    ["223.255.255.255", true],
    ["2001:4860:4860::8888", true],
    ["2606:4700:4700::1111", true],
    ["::ffff:8.8.8.8", true],
    ["64:ff9b::808:808", true], // NAT64 of 8.8.8.8
    ["2002:808:808::1", true], // 6to4 of 8.8.8.8
    ["127.0.0.1", false],
    ["127.255.255.254", false],
    ["0.0.0.0", false],
    ["0.1.2.3", false],
    ["10.0.0.1", false],
    ["10.255.255.255", false],
    ["172.16.0.1", false],
    ["172.31.255.255", false],
    ["192.168.1.1", false],
    ["169.254.169.254", false], // cloud metadata
    ["169.254.0.1", false],
    ["100.64.0.1", false],
    ["100.127.255.255", false],
    ["224.0.0.1", false],
    ["239.255.255.250", false],
    ["255.255.255.255", false],
    ["240.0.0.1", false],
    ["192.0.2.1", false],
    ["198.18.0.1", false],
    ["198.51.100.7", false],
    ["203.0.113.9", false],
    ["192.0.0.8", false],
    ["::1", false],
    ["::", false],
    ["fe80::1", false],
    ["febf:ffff::1", false],
    ["fe80::1%eth0", false],
    ["fc00::1", false],
    ["fd12:3456:789a::1", false],
    ["ff02::1", false],
    ["::ffff:127.0.0.1", false],
    ["::ffff:7f00:1", false],
    ["::ffff:10.0.0.1", false],
    ["::ffff:169.254.169.254", false],
    ["::ffff:0.0.0.0", false],
    ["::127.0.0.1", false], // IPv4-compatible
    ["64:ff9b::7f00:1", false], // NAT64 of 127.0.0.1
    ["64:ff9b::a9fe:a9fe", false], // NAT64 of 169.254.169.254
    ["64:ff9b:1::1", false],
    ["2002:7f00:1::1", false], // 6to4 of 127.0.0.1
    ["2002:a00:1::", false], // 6to4 of 10.0.0.1
    ["2002:c0a8:101::1", false], // 6to4 of 192.168.1.1
    ["2001:db8::1", false],
    ["2001::1", false], // Teredo
    ["100::1", false],
    ["fec0::1", false],
    ["", false],
    ["localhost", false],
    ["example.com", false],
    ["1.2.3", false],
    ["1.2.3.4.5", false],
    ["::g", false],
  ])("%s → %s", (ip, expected) => {
    expect(isPublicAddress(ip)).toBe(expected);
  });
});

describe("parseAllowHosts", () => {
  it("reads names, host:port, addresses, bracketed IPv6 and CIDRs", () => {
    const a = parseAllowHosts(["QMT.Example.com.", "files.internal:8080", "10.0.0.5", "[fd00::5]:8443", "10.20.0.0/16", "fd00::/8", "127.1", "münchen.de"]);
    expect(a.names).toEqual([
      { name: "qmt.example.com", port: undefined },
      { name: "files.internal", port: 8080 },
      { name: "xn--mnchen-3ya.de", port: undefined },
    ]);
    expect(a.nets.map((n) => n.port)).toEqual([undefined, 8443, undefined, undefined, undefined]);
    expect(a.nets[0]?.list.check("10.0.0.5", "ipv4")).toBe(true);
    expect(a.nets[0]?.list.check("10.0.0.6", "ipv4")).toBe(false);
    expect(a.nets[2]?.list.check("10.20.255.1", "ipv4")).toBe(true);
    expect(a.nets[4]?.list.check("127.0.0.1", "ipv4")).toBe(true);
  });

  it.each(["http://qmt.example.com", "a/b", "10.0.0.0/33", "10.0.0.0/x", "host:0", "host:99999", "", "a b", "user@host", "*.example.com", "host?x", "[::1]:0"])(
    "refuses %j",
    (entry) => {
      expect(() => parseAllowHosts([entry])).toThrow(TypeError);
    },
  );
});

describe("fetchAgentMedia: allowed", () => {
  it("downloads from an allowed address: bytes, size, hash, type and name", async () => {
    const srv = await serve((_req, res) => res.writeHead(200, { "content-type": "image/png" }).end(PNG));
    const got = await fetchAgentMedia(`${srv.url}/pics/%E5%9B%BE%E7%89%87.png?sig=abc`, opts({ allowHosts: [`127.0.0.1:${srv.port}`] }));
    expect(readFileSync(got.path).equals(PNG)).toBe(true);
    expect(got).toMatchObject({ size: PNG.length, contentType: "image/png", fileName: "图片.png", sha256: sha256(PNG) });
    expect(filesIn(dir)).toEqual([got.path.slice(dir.length + 1)]);
  });

  it("takes the file name from Content-Disposition (raw UTF-8 and RFC 8187), else none for a bare path", async () => {
    const srv = await serve((req, res) => {
      if (req.url === "/raw") res.setHeader("content-disposition", `attachment; filename="${Buffer.from("发票.pdf").toString("latin1")}"`);
      if (req.url === "/ext") res.setHeader("content-disposition", "attachment; filename*=UTF-8''%E5%90%88%E5%90%8C.docx");
      res.end("12345678");
    });
    const o = opts({ allowHosts: ["127.0.0.1"] });
    expect((await fetchAgentMedia(`${srv.url}/raw`, o)).fileName).toBe("发票.pdf");
    expect((await fetchAgentMedia(`${srv.url}/ext`, o)).fileName).toBe("合同.docx");
    const bare = await fetchAgentMedia(`${srv.url}/`, o);
    expect(bare.fileName).toBeUndefined();
    expect(bare.contentType).toBe("application/octet-stream");
  });

  it("allows a listed name whatever it resolves to, and connects to the address it checked", async () => {
    const srv = await serve((_req, res) => res.end(PNG));
    const dns = fakeDns({ "files.internal": ["127.0.0.1"] });
    const got = await fetchAgentMedia(`http://files.internal:${srv.port}/a.png`, opts({ allowHosts: ["files.internal"], lookup: dns.lookup }));
    expect(got.sha256).toBe(sha256(PNG));
    expect(dns.calls).toEqual(["files.internal"]);
    // the name is allowed only on the port listed
    const e = await failure(fetchAgentMedia(`http://files.internal:${srv.port}/a.png`, opts({ allowHosts: ["files.internal:1"], lookup: dns.lookup })));
    expect(e.code).toBe("media_url_refused");
  });

  it("resolves once per hop and never again at connection time (no DNS-rebinding window)", async () => {
    const srv = await serve((_req, res) => res.end(PNG));
    let calls = 0;
    // first answer: an allowed address; any later answer: one where nothing listens
    const lookup = async (): Promise<ResolvedAddress[]> => [{ address: calls++ === 0 ? "127.0.0.1" : "127.0.0.2", family: 4 }];
    const got = await fetchAgentMedia(`http://rebind.test:${srv.port}/x.png`, opts({ allowHosts: ["127.0.0.1/32"], lookup }));
    expect(got.size).toBe(PNG.length);
    expect(calls).toBe(1);
  });

  it("follows redirects within the allowed hosts, relative ones included", async () => {
    const srv = await serve((req, res) => {
      if (req.url === "/start") res.writeHead(302, { location: "/next" }).end();
      else if (req.url === "/next") res.writeHead(307, { location: `http://127.0.0.1:${(req.socket.localPort as number).toString()}/files/final.png` }).end();
      else res.end(PNG);
    });
    const got = await fetchAgentMedia(`${srv.url}/start`, opts({ allowHosts: ["127.0.0.1"] }));
    expect(got.fileName).toBe("final.png");
    expect(got.sha256).toBe(sha256(PNG));
    expect(srv.requests()).toBe(3);
  });

  it("sends the URL's credentials to the server, and never shows them (nor the query) in errors", async () => {
    let auth: string | undefined;
    const srv = await serve((req, res) => {
      auth = req.headers.authorization;
      if (req.url?.startsWith("/missing")) res.writeHead(404).end();
      else res.end(PNG);
    });
    const allowHosts = [`127.0.0.1:${srv.port}`];
    await fetchAgentMedia(`http://agent:S3CRETPW@127.0.0.1:${srv.port}/ok.png?sig=QUERYSECRET`, opts({ allowHosts }));
    expect(auth).toBe(`Basic ${Buffer.from("agent:S3CRETPW").toString("base64")}`);
    const errors = [
      await failure(fetchAgentMedia(`http://agent:S3CRETPW@127.0.0.1:${srv.port}/missing?sig=QUERYSECRET`, opts({ allowHosts }))),
      await failure(fetchAgentMedia(`http://agent:S3CRETPW@127.0.0.1:${srv.port}/ok.png?sig=QUERYSECRET`, opts())),
      await failure(fetchAgentMedia(`http://agent:S3CRETPW@evil.test/x?sig=QUERYSECRET`, opts({ lookup: fakeDns({ "evil.test": ["10.0.0.1"] }).lookup }))),
      await failure(fetchAgentMedia(`ftp://agent:S3CRETPW@example.com/x?sig=QUERYSECRET`, opts())),
    ];
    expect(errors.map((e) => e.code)).toEqual(["media_fetch_failed", "media_url_refused", "media_url_refused", "media_url_refused"]);
    for (const e of errors) {
      const everything = `${e.message} ${e.stack} ${JSON.stringify(e)}`;
      expect(everything).not.toContain("S3CRETPW");
      expect(everything).not.toContain("QUERYSECRET");
    }
  });

  it("creates the destination folder when missing", async () => {
    const srv = await serve((_req, res) => res.end("hello world"));
    const nested = join(dir, "a", "b");
    const got = await fetchAgentMedia(`${srv.url}/f.txt`, opts({ allowHosts: ["127.0.0.1"], destDir: nested }));
    expect(got.path.startsWith(nested)).toBe(true);
    expect(readFileSync(got.path, "utf8")).toBe("hello world");
  });
});

describe("fetchAgentMedia: refused", () => {
  it("refuses loopback when not allowed, without connecting", async () => {
    const srv = await serve((_req, res) => res.end(PNG));
    const e = await failure(fetchAgentMedia(`${srv.url}/a.png`, opts()));
    expect(e.code).toBe("media_url_refused");
    expect(e.retryable).toBe(false);
    expect(e.message).toContain("omni.mediaHosts");
    // listed on another port only: still refused
    expect((await failure(fetchAgentMedia(`${srv.url}/a.png`, opts({ allowHosts: [`127.0.0.1:${srv.port + 1}`] })))).code).toBe("media_url_refused");
    expect(srv.connections()).toBe(0);
  });

  it("refuses every spelling of a local address", async () => {
    const srv = await serve((_req, res) => res.end(PNG));
    const p = srv.port;
    const urls = [
      `http://localhost:${p}/`,
      `http://[::1]:${p}/`,
      `http://[::ffff:127.0.0.1]:${p}/`,
      `http://[::ffff:7f00:1]:${p}/`,
      `http://0x7f.0.0.1:${p}/`,
      `http://2130706433:${p}/`,
      `http://127.1:${p}/`,
      `http://0177.0.0.1:${p}/`,
      `http://0.0.0.0:${p}/`,
      `http://[::]:${p}/`,
      `http://[64:ff9b::7f00:1]:${p}/`,
      "http://169.254.169.254/latest/meta-data/",
      "http://[::ffff:169.254.169.254]/latest/meta-data/",
      "http://[fe80::1]/",
      "http://10.0.0.1/",
      "http://172.16.5.4/",
      "http://192.168.0.1/",
      "http://100.64.0.1/",
      "http://[fd00::1]/",
      "https://127.0.0.1/",
    ];
    for (const url of urls) {
      const e = await failure(fetchAgentMedia(url, opts({ allowHosts: ["qmt.example.com"] })));
      expect(e.code, url).toBe("media_url_refused");
    }
    expect(srv.connections()).toBe(0);
  });

  it("refuses a public-looking name that resolves to a private or metadata address", async () => {
    const dns = fakeDns({ "cdn.example.com": ["10.0.0.1"], "img.example.com": ["169.254.169.254"], "mixed.example.com": ["93.184.216.34", "10.0.0.1"], "v6.example.com": ["::1"] });
    for (const host of ["cdn.example.com", "img.example.com", "mixed.example.com", "v6.example.com"]) {
      const e = await failure(fetchAgentMedia(`http://${host}/a.png`, opts({ lookup: dns.lookup })));
      expect(e.code, host).toBe("media_url_refused");
      expect(e.retryable).toBe(false);
    }
    expect(dns.calls).toEqual(["cdn.example.com", "img.example.com", "mixed.example.com", "v6.example.com"]);
    const e = await failure(fetchAgentMedia("http://img.example.com/a.png", opts({ lookup: dns.lookup })));
    expect(e.message).toContain("resolves to 169.254.169.254");
  });

  it("allows a private address listed by address or CIDR", async () => {
    const srv = await serve((_req, res) => res.end(PNG));
    const dns = fakeDns({ "files.corp": ["127.0.0.1"] });
    expect((await fetchAgentMedia(`http://files.corp:${srv.port}/a`, opts({ allowHosts: ["127.0.0.0/8"], lookup: dns.lookup }))).size).toBe(PNG.length);
    expect((await fetchAgentMedia(`http://files.corp:${srv.port}/a`, opts({ allowHosts: [`127.0.0.1:${srv.port}`], lookup: dns.lookup }))).size).toBe(PNG.length);
  });

  it("refuses a redirect from an allowed host to a refused address", async () => {
    const other = await serve((_req, res) => res.end("internal secret"));
    const dns = fakeDns({ "metadata.test": ["169.254.169.254"] });
    const srv = await serve((req, res) => {
      const to: Record<string, string> = {
        "/to-loopback": `${other.url}/secret`,
        "/to-metadata": "http://metadata.test/latest/meta-data/",
        "/to-file": "file:///etc/passwd",
        "/to-v6": `http://[::1]:${other.port}/`,
      };
      res.writeHead(302, { location: to[req.url ?? ""] ?? "/" }).end();
    });
    for (const path of ["/to-loopback", "/to-metadata", "/to-file", "/to-v6"]) {
      const e = await failure(fetchAgentMedia(`${srv.url}${path}`, opts({ allowHosts: [`127.0.0.1:${srv.port}`], lookup: dns.lookup })));
      expect(e.code, path).toBe("media_url_refused");
    }
    expect(other.requests()).toBe(0);
    expect(other.connections()).toBe(0);
    expect(filesIn(dir)).toEqual([]);
  });

  it("caps redirects (a loop ends)", async () => {
    const srv = await serve((_req, res) => res.writeHead(302, { location: "/loop" }).end());
    const e = await failure(fetchAgentMedia(`${srv.url}/loop`, opts({ allowHosts: ["127.0.0.1"] })));
    expect(e.code).toBe("media_fetch_failed");
    expect(e.retryable).toBe(false);
    expect(e.message).toContain("more than 3 redirects");
    expect(srv.requests()).toBe(4);
    const none = await failure(fetchAgentMedia(`${srv.url}/loop`, opts({ allowHosts: ["127.0.0.1"], maxRedirects: 0 })));
    expect(none.code).toBe("media_fetch_failed");
    expect(srv.requests()).toBe(5);
  });

  it("refuses schemes other than http(s) without resolving anything", async () => {
    const dns = fakeDns({});
    for (const url of ["file:///etc/passwd", "ftp://example.com/a.png", "data:image/png;base64,iVBORw0KGgo=", "gopher://example.com:70/_GET", "javascript:alert(1)", "ws://example.com/", "not a url"]) {
      const e = await failure(fetchAgentMedia(url, opts({ lookup: dns.lookup, allowHosts: ["example.com"] })));
      expect(e.code, url).toBe("media_url_refused");
      expect(e.retryable).toBe(false);
    }
    expect(dns.calls).toEqual([]);
  });
});

describe("fetchAgentMedia: limits and failures", () => {
  it("refuses a Content-Length over the cap before reading, leaving no file", async () => {
    const srv = await serve((_req, res) => {
      res.writeHead(200, { "content-length": String(10 * 1024 * 1024) });
      res.write(Buffer.alloc(1024)); // the rest never comes
    });
    const closed = srv.nextClose();
    const e = await failure(fetchAgentMedia(`${srv.url}/big`, opts({ allowHosts: ["127.0.0.1"], maxBytes: 1024 * 1024, timeoutMs: 5000 })));
    expect(e.code).toBe("media_too_large");
    expect(e.retryable).toBe(false);
    expect(e.httpStatus).toBe(200);
    await within(closed, 5000, "the server to see the socket closed");
    expect(filesIn(dir)).toEqual([]);
  });

  it("cuts off a body that grows past the cap and removes its file", async () => {
    const srv = await serve((_req, res) => {
      res.writeHead(200); // chunked, no length
      const piece = Buffer.alloc(64 * 1024, 3);
      const write = () => {
        while (res.write(piece)) {
          /* fill */
        }
      };
      res.on("drain", write);
      write();
    });
    const closed = srv.nextClose();
    const e = await failure(fetchAgentMedia(`${srv.url}/endless`, opts({ allowHosts: ["127.0.0.1"], maxBytes: 256 * 1024 })));
    expect(e.code).toBe("media_too_large");
    await within(closed, 5000, "the server to see the socket closed");
    expect(filesIn(dir)).toEqual([]);
  });

  it("takes a file of exactly the cap", async () => {
    const body = Buffer.alloc(4096, 9);
    const srv = await serve((_req, res) => res.end(body));
    expect((await fetchAgentMedia(`${srv.url}/f`, opts({ allowHosts: ["127.0.0.1"], maxBytes: 4096 }))).size).toBe(4096);
  });

  it("times out a stalled body (retryable) and removes its file", async () => {
    const srv = await serve((_req, res) => {
      res.writeHead(200, { "content-length": "100000" });
      res.write(Buffer.alloc(1000)); // then stalls
    });
    const e = await failure(fetchAgentMedia(`${srv.url}/slow`, opts({ allowHosts: ["127.0.0.1"], timeoutMs: 200 })));
    expect(e.code).toBe("media_fetch_failed");
    expect(e.retryable).toBe(true);
    expect(e.message).toContain("no data for 200 ms");
    expect(filesIn(dir)).toEqual([]);
  });

  it("times out when no answer comes, or the name never resolves", async () => {
    const srv = await serve(() => undefined);
    const e = await failure(fetchAgentMedia(`${srv.url}/hang`, opts({ allowHosts: ["127.0.0.1"], timeoutMs: 200 })));
    expect(e.code).toBe("media_fetch_failed");
    expect(e.retryable).toBe(true);
    expect(e.message).toContain("no answer within 200 ms");
    const never = () => new Promise<ResolvedAddress[]>(() => undefined);
    const d = await failure(fetchAgentMedia("http://slow-dns.example.com/a", opts({ lookup: never, timeoutMs: 200 })));
    expect(d.code).toBe("media_fetch_failed");
    expect(d.retryable).toBe(true);
  });

  it("lets a body take longer than the deadline while bytes keep coming", async () => {
    const srv = await serve((_req, res) => {
      res.writeHead(200);
      let n = 0;
      const tick = setInterval(() => {
        res.write(Buffer.alloc(100, n));
        if (++n === 8) {
          clearInterval(tick);
          res.end();
        }
      }, 100);
      res.on("close", () => clearInterval(tick));
    });
    const got = await fetchAgentMedia(`${srv.url}/trickle`, opts({ allowHosts: ["127.0.0.1"], timeoutMs: 500 }));
    expect(got.size).toBe(800);
  });

  it("classifies statuses: 4xx final, 5xx, 408 and 429 retryable", async () => {
    const srv = await serve((req, res) => res.writeHead(Number(req.url?.slice(1))).end("no"));
    const cases: Array<[number, boolean]> = [
      [400, false],
      [403, false],
      [404, false],
      [408, true],
      [429, true],
      [500, true],
      [503, true],
    ];
    for (const [status, retryable] of cases) {
      const e = await failure(fetchAgentMedia(`${srv.url}/${status}`, opts({ allowHosts: ["127.0.0.1"] })));
      expect(e.code).toBe("media_fetch_failed");
      expect(e.httpStatus).toBe(status);
      expect(e.retryable, String(status)).toBe(retryable);
    }
    expect(filesIn(dir)).toEqual([]);
  });

  it("reports a refused connection and a body cut short as retryable failures", async () => {
    const port = await closedPort();
    const e = await failure(fetchAgentMedia(`http://127.0.0.1:${port}/a`, opts({ allowHosts: ["127.0.0.1"] })));
    expect(e.code).toBe("media_fetch_failed");
    expect(e.retryable).toBe(true);
    expect(e.message).toContain("ECONNREFUSED");

    const cut = await serve((_req, res) => {
      res.writeHead(200, { "content-length": "5000" });
      res.write(Buffer.alloc(100), () => res.socket?.destroy());
    });
    const c = await failure(fetchAgentMedia(`${cut.url}/a`, opts({ allowHosts: ["127.0.0.1"] })));
    expect(c.code).toBe("media_fetch_failed");
    expect(c.retryable).toBe(true);
    expect(filesIn(dir)).toEqual([]);
  });

  it("fails on the caller's abort", async () => {
    let arrived: () => void = () => undefined;
    const requested = new Promise<void>((resolve) => {
      arrived = resolve;
    });
    const srv = await serve(() => arrived());
    const controller = new AbortController();
    const p = failure(fetchAgentMedia(`${srv.url}/hang`, opts({ allowHosts: ["127.0.0.1"], signal: controller.signal, timeoutMs: 10_000 })));
    await within(requested, 5000, "the request to arrive");
    controller.abort();
    const e = await p;
    expect(e.code).toBe("media_fetch_failed");
    expect(e.message).toContain("aborted");
  });
});
