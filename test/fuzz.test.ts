/**
 * HTTP fuzzing against the real server on a loopback port (both simulators, a gateway, a SQLite
 * file): every route, random methods, paths, queries, headers and bodies, including invalid
 * UTF-8, huge values, repeated headers, malformed and truncated requests (raw sockets for those).
 * Never a 5xx, never a crash, nothing stored, no new /metrics series, no error logged.
 */
import { type Agent, request as httpRequest, Agent as HttpAgent, METHODS } from "node:http";
import { connect } from "node:net";
import { join } from "node:path";
import Database from "better-sqlite3";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../src/log.js";
import { ADMIN, APP_AES, ARCHIVE_SECRET, BOT_AES, CORP, type Stack, startStack } from "./stack.js";

/** Requests per fast-check run (sent concurrently) and runs: at least 5,000 requests in all. */
const BATCH = 50;
const RUNS = 110;

/** Tables whose rows only an accepted callback or push may add. */
const TABLES = ["ledger", "messages", "outbox", "archive_pushes", "media"] as const;

/** A request sent through node:http's client: well-formed, however odd its contents. */
interface HttpCase {
  kind: "http";
  method: string;
  path: string;
  headers: Record<string, string | string[]>;
  body?: Buffer;
}

/** Bytes written on a raw socket (malformed or truncated), then our side is closed (or reset). */
interface RawCase {
  kind: "raw";
  bytes: Buffer;
  /** `end`: half-close after writing (the server sees EOF); `destroy`: drop the connection. */
  close: "end" | "destroy";
}

type Case = HttpCase | RawCase;

/** What came back: a status, or none with the reason. */
interface Outcome {
  c: Case;
  status: number | undefined;
  error?: string;
}

// --- generators ---------------------------------------------------------------------------------

const latin1 = (min: number, max: number) => fc.integer({ min, max }).map((c) => String.fromCharCode(c));
/** Header-safe text: visible ASCII, space, tab and obs-text (0x80-0xff), which node:http sends as is. */
const headerText = (maxLength: number) => fc.string({ unit: fc.oneof(latin1(0x20, 0x7e), latin1(0x80, 0xff), fc.constant("\t")), maxLength });
const token = fc.string({ unit: fc.constantFrom(..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_!#$%&'*+.^`|~"), minLength: 1, maxLength: 20 });
const anyText = fc.oneof(fc.string({ maxLength: 60 }), fc.string({ unit: "binary", maxLength: 60 }), fc.string({ unit: "grapheme", maxLength: 20 }));
/** encodeURIComponent, which throws on a lone surrogate: then a broken escape instead. */
const encode = (t: string) => {
  try {
    return encodeURIComponent(t);
  } catch {
    return "%ED%A0%80";
  }
};
const huge = fc.integer({ min: 2_000, max: 9_000 }).map((n) => "x".repeat(n));
const number = fc.oneof(
  fc.integer().map(String),
  fc.constantFrom("99999999999999999999", "-1", "0", "1e309", "NaN", "0x10", " 1", "1.5", "9007199254740993", ""),
);

/** A path segment: plain, percent-encoded, or broken percent-encoding / invalid UTF-8 escapes. */
const segment = fc.oneof(
  { weight: 4, arbitrary: token },
  { weight: 2, arbitrary: anyText.map(encode) },
  { weight: 1, arbitrary: fc.constantFrom("%", "%zz", "%c3%28", "%ff%fe", "%00", "%2e%2e", "..", ".", "%2F", "%e4%bd", "%ED%A0%80") },
  { weight: 1, arbitrary: huge },
);

const adminResource = fc.constantFrom("conversations", "messages", "archive", "outbox", "cursors", "", "messages/x", "..", "Conversations");
const path = fc.oneof(
  fc.constant("/wecom/app/support"),
  fc.constant("/wecom/bot/helper"),
  segment.map((s) => `/wecom/app/${s}`),
  segment.map((s) => `/wecom/bot/${s}`),
  fc.constant("/archive/push"),
  fc.constantFrom("/archive/push/", "/archive", "/archive/push/x", "//archive/push"),
  fc.tuple(fc.oneof(fc.constant(CORP), segment), segment).map(([t, id]) => `/media/${t}/${id}`),
  segment.map((s) => `/media/${s}`),
  adminResource.map((r) => `/admin/${r}`),
  fc.constantFrom("/admin", "/metrics", "/healthz", "/readyz", "/", "*", "/metrics/", "/healthz?"),
  fc.array(segment, { minLength: 1, maxLength: 6 }).map((parts) => `/${parts.join("/")}`),
  fc.webPath(),
);

const queryKey = fc.oneof(
  fc.constantFrom("msg_signature", "timestamp", "nonce", "echostr", "secret", "e", "s", "limit", "before", "since", "until", "state", "channel", "conversation"),
  token,
);
const queryValue = fc.oneof(
  number,
  anyText.map(encode),
  fc.constantFrom("%", "%zz", "%c3%28", "+", "a+b", "pending,dead,nope", "app", "kf", "omni", ARCHIVE_SECRET, "", "=", "&"),
  huge,
);
const query = fc.array(fc.tuple(queryKey, queryValue, fc.boolean()), { maxLength: 6 }).map((pairs) => {
  if (pairs.length === 0) return "";
  return `?${pairs.map(([k, v, bare]) => (bare && v === "" ? k : `${k}=${v}`)).join("&")}`;
});

const headerValue = fc.oneof({ weight: 6, arbitrary: headerText(80) }, { weight: 1, arbitrary: huge });
const headerPair = fc.oneof(
  fc.tuple(fc.constant("authorization"), fc.oneof(fc.constant(`Bearer ${ADMIN}`), fc.constant(`bearer ${ADMIN}`), headerText(40).map((t) => `Bearer ${t}`), headerValue)),
  fc.tuple(fc.constant("x-archive-secret"), fc.oneof(fc.constant(ARCHIVE_SECRET), headerValue)),
  fc.tuple(fc.constantFrom("content-type", "x-forwarded-for", "accept", "cookie", "range", "if-none-match", "accept-encoding", "origin"), headerValue),
  fc.tuple(token, headerValue),
);
/** Headers, a name possibly repeated (node:http sends each value of an array as its own line). */
const headers = fc.array(headerPair, { maxLength: 8 }).map((pairs) => {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of pairs) {
    const key = k.toLowerCase();
    // headers node:http manages itself, or that would make the request something else
    if (["host", "content-length", "transfer-encoding", "connection", "expect", "upgrade", "te", "trailer", "keep-alive"].includes(key)) continue;
    const prev = out[key];
    out[key] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  return out;
});

const b64ish = fc.string({ unit: fc.constantFrom(..."ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="), maxLength: 200 });
/** Bodies: none of them is a valid signed callback or a valid archive push. */
const body = fc.oneof(
  fc.uint8Array({ maxLength: 2_000 }).map((u) => Buffer.from(u)),
  anyText.map((t) => Buffer.from(t)),
  b64ish.map((e) => Buffer.from(`<xml><ToUserName><![CDATA[${CORP}]]></ToUserName><Encrypt><![CDATA[${e}]]></Encrypt><AgentID>1</AgentID></xml>`)),
  b64ish.map((e) => Buffer.from(JSON.stringify({ encrypt: e }))),
  fc.constantFrom("<xml>", "<xml><Encrypt></Encrypt></xml>", "<!DOCTYPE x [<!ENTITY a 'b'>]><xml>&a;</xml>", "{", "[]", "null", '{"encrypt":1}', "\u0000").map((t) => Buffer.from(t)),
  fc.constantFrom(256 * 1024 + 1, 300_000).map((n) => Buffer.alloc(n, 0x7b)),
);
const method = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH") },
  { weight: 1, arbitrary: fc.constantFrom("TRACE", "PROPFIND", "SEARCH", "PURGE") },
  { weight: 1, arbitrary: fc.stringMatching(/^[A-Z]{1,12}$/) },
);

const httpCase: fc.Arbitrary<HttpCase> = fc.record({ method, path, query, headers, body: fc.option(body, { freq: 3 }) }).map((r) => {
  const c: HttpCase = { kind: "http", method: r.method, path: r.path + r.query, headers: r.headers };
  if (r.body !== null) c.body = r.body;
  return c;
});

/** A request as bytes, for the raw cases: from a generated one, or hand-made malformed ones. */
function serialize(c: HttpCase): Buffer {
  const lines = [`${c.method} ${c.path} HTTP/1.1`, "Host: 127.0.0.1"];
  for (const [k, v] of Object.entries(c.headers)) for (const one of Array.isArray(v) ? v : [v]) lines.push(`${k}: ${one}`);
  if (c.body) lines.push(`Content-Length: ${c.body.length}`);
  return Buffer.concat([Buffer.from(`${lines.join("\r\n")}\r\n\r\n`, "latin1"), c.body ?? Buffer.alloc(0)]);
}

const malformed = fc.oneof(
  // request line garbage, bytes of any value
  fc.uint8Array({ minLength: 1, maxLength: 300 }).map((u) => Buffer.concat([Buffer.from(u), Buffer.from("\r\n\r\n")])),
  // headers node:http refuses, or that smuggling relies on
  fc.constantFrom(
    "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "POST /wecom/app/support HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "POST /archive/push HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "POST /archive/push HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc",
    "POST /archive/push HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "POST /archive/push HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n",
    "GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
    "GET /healthz HTTP/1.1\r\nHost: x\r\n: empty-name\r\n\r\n",
    "GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\u0000b\r\n\r\n",
    "GET /healthz HTTP/1.1\nHost: x\n\n",
    "GET /healthz HTTP/1.1\r\n\r\n",
    "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
    "GET /healthz HTTP/1.0\r\n\r\n",
    "GET http://evil.example/admin/messages HTTP/1.1\r\nHost: x\r\n\r\n",
    "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    "CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /healthz HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    "POST /wecom/app/support HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nabcd",
    "POST /wecom/app/support HTTP/1.1\r\nHost: x\r\nExpect: nonsense\r\nContent-Length: 4\r\n\r\nabcd",
    "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n",
    `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${"y".repeat(20_000)}\r\n\r\n`,
    `GET /${"a".repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`,
    `GET /healthz HTTP/1.1\r\nHost: x\r\n${Array.from({ length: 3000 }, (_, i) => `h${i}: v`).join("\r\n")}\r\n\r\n`,
  ).map((t) => Buffer.from(t, "latin1")),
);

const rawCase: fc.Arbitrary<RawCase> = fc.oneof(
  // a generated request cut anywhere (truncated), or whole
  fc.tuple(httpCase, fc.double({ min: 0, max: 1, noNaN: true }), fc.constantFrom("end", "destroy") as fc.Arbitrary<"end" | "destroy">).map(([c, cut, close]) => {
    const bytes = serialize(c);
    return { kind: "raw", bytes: bytes.subarray(0, Math.floor(bytes.length * cut)), close } satisfies RawCase;
  }),
  fc.tuple(malformed, fc.constantFrom("end", "destroy") as fc.Arbitrary<"end" | "destroy">).map(([bytes, close]) => ({ kind: "raw", bytes, close }) satisfies RawCase),
);

/**
 * Media links signed with the gateway's own key, for random tenants and ids: they pass the
 * signature check and reach the store and the file system (no such file: never a 5xx).
 */
function signedMedia(link: (tenant: string, id: string) => string): fc.Arbitrary<HttpCase> {
  const id = fc.oneof(fc.stringMatching(/^[A-Za-z0-9_-]{1,128}$/), anyText, fc.constantFrom("..", ".", "../../etc/passwd", "a/b", "%00", "\u0000", "con", "x".repeat(300)));
  const tenant = fc.oneof(fc.constant(CORP), anyText, fc.constantFrom("..", "", "/", "%2e%2e"));
  return fc.record({ method: fc.constantFrom("GET", "HEAD", "POST"), tenant, id, headers }).map((r) => {
    const q = new URL(link(r.tenant, r.id)).search;
    return { kind: "http", method: r.method, path: `/media/${encode(r.tenant)}/${encode(r.id)}${q}`, headers: r.headers } satisfies HttpCase;
  });
}

/** Every kind of case; `signed` adds the media links the running gateway signs. */
const fuzzCase = (signed: fc.Arbitrary<HttpCase>): fc.Arbitrary<Case> =>
  fc.oneof({ weight: 6, arbitrary: httpCase }, { weight: 2, arbitrary: rawCase }, { weight: 1, arbitrary: signed });

/**
 * True for a request the server may refuse before reading it all (a body over the limit, a header
 * block over node:http's 16 KB, a method its parser does not know): the connection is closed with
 * data unread, and the reset can reach the client before the answer.
 */
function mayBeCutOff(c: HttpCase): boolean {
  const headerBytes = c.path.length + Object.entries(c.headers).reduce((n, [k, v]) => n + (Array.isArray(v) ? v : [v]).reduce((m, one) => m + k.length + one.length + 4, 0), 0);
  return (c.body?.length ?? 0) > 256 * 1024 || headerBytes > 16 * 1024 - 512 || !METHODS.includes(c.method);
}

// --- senders ------------------------------------------------------------------------------------

function sendHttp(port: number, agent: Agent, c: HttpCase): Promise<Outcome> {
  return new Promise((resolve) => {
    let req: ReturnType<typeof httpRequest>;
    // node:http frames a GET/HEAD/DELETE/OPTIONS body only when told its length
    const headers = c.body ? { ...c.headers, "content-length": String(c.body.length) } : c.headers;
    try {
      req = httpRequest({ host: "127.0.0.1", port, method: c.method, path: c.path, headers, agent });
    } catch {
      // node:http refuses to send it (a path with a space, say): send the same bytes on a raw socket
      void sendRaw(port, { kind: "raw", bytes: serialize(c), close: "end" }).then((o) => resolve({ c, status: o.status, error: o.status === undefined ? "raw fallback: no answer" : "raw fallback" }));
      return;
    }
    req.setTimeout(10_000, () => req.destroy(new Error("timeout")));
    req.on("response", (res) => {
      res.resume();
      res.on("end", () => resolve({ c, status: res.statusCode }));
      res.on("error", () => resolve({ c, status: res.statusCode }));
    });
    req.on("error", (e: NodeJS.ErrnoException) => resolve({ c, status: undefined, error: e.code ?? e.message }));
    req.end(c.body);
  });
}

/** The status of the (first non-100) response in raw bytes, if any. */
function rawStatus(text: string): number | undefined {
  let at = 0;
  for (;;) {
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(text.slice(at));
    if (!m) return undefined;
    const status = Number(m[1]);
    if (status !== 100) return status;
    const next = text.indexOf("\r\n\r\n", at);
    if (next < 0) return undefined;
    at = next + 4;
  }
}

function sendRaw(port: number, c: RawCase): Promise<Outcome> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    const chunks: Buffer[] = [];
    const guard = setTimeout(() => socket.destroy(), 10_000);
    socket.on("data", (d: Buffer) => chunks.push(d));
    socket.on("error", () => undefined);
    socket.on("close", () => {
      clearTimeout(guard);
      resolve({ c, status: rawStatus(Buffer.concat(chunks).toString("latin1")) });
    });
    socket.once("connect", () => {
      socket.write(c.bytes);
      if (c.close === "end") socket.end();
      else setImmediate(() => socket.destroy());
    });
  });
}

// --- the run ------------------------------------------------------------------------------------

/** The series of a /metrics text: every sample line without its value. */
function series(text: string): string[] {
  return text
    .split("\n")
    .filter((l) => l !== "" && !l.startsWith("#"))
    .map((l) => l.slice(0, l.lastIndexOf(" ")))
    .sort();
}

function rowCounts(dbFile: string): Record<string, number> {
  const db = new Database(dbFile, { readonly: true, fileMustExist: true });
  try {
    return Object.fromEntries(TABLES.map((t) => [t, (db.prepare(`SELECT count(*) AS n FROM ${t}`).get() as { n: number }).n]));
  } finally {
    db.close();
  }
}

describe("HTTP fuzzing", () => {
  let stack: Stack;
  const logs: string[] = [];
  beforeAll(async () => {
    // small deadlines, so that truncated requests are cut off quickly
    stack = await startStack({
      config: (c) => (c.limits = { headersTimeoutMs: 1000, requestTimeoutMs: 2000 }),
      log: createLogger({ level: "debug", write: (l) => void logs.push(l) }),
    });
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it("every route answers random, malformed and truncated requests without a 5xx, a crash, a stored row or a new series", async () => {
    const port = stack.config.listen.port;
    const base = `http://127.0.0.1:${port}`;
    const dbFile = join(stack.dir, "bridge.db");
    const agent = new HttpAgent({ keepAlive: true, maxSockets: BATCH });
    const seriesBefore = series(await (await fetch(`${base}/metrics`)).text());
    const rowsBefore = rowCounts(dbFile);
    const outcomes: Outcome[] = [];
    let sent = 0;
    const media = stack.gw.gateway.media;
    const cases = fuzzCase(signedMedia((t, id) => media.link(t, id)));
    const property = fc.asyncProperty(fc.array(cases, { minLength: BATCH, maxLength: BATCH }), async (batch) => {
      const got = await Promise.all(batch.map((c) => (c.kind === "http" ? sendHttp(port, agent, c) : sendRaw(port, c))));
      sent += got.length;
      outcomes.push(...got);
      const serverErrors = got.filter((o) => o.status !== undefined && o.status >= 500);
      if (serverErrors.length > 0) throw new Error(`5xx answers:\n${serverErrors.map((o) => `${o.status} <- ${describeCase(o.c)}`).join("\n")}`);
      // a well-formed request always gets an answer, unless node:http refuses it while it is still
      // being sent (then the connection may be reset before the client reads the answer)
      const unanswered = got.filter((o) => o.c.kind === "http" && o.status === undefined && !mayBeCutOff(o.c));
      if (unanswered.length > 0) throw new Error(`no answer:\n${unanswered.map((o) => `${o.error} <- ${describeCase(o.c)}`).join("\n")}`);
    });
    // FUZZ_SEED=n replays a failed run; the report names the failing requests (not the whole batch)
    const seed = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : undefined;
    const run = await fc.check(property, { numRuns: RUNS, endOnFailure: true, ...(seed !== undefined ? { seed } : {}) });
    if (run.failed) throw new Error(`fuzzing failed (FUZZ_SEED=${run.seed}): ${(run.errorInstance as Error | undefined)?.message ?? "see above"}`);
    agent.destroy();
    expect(sent).toBeGreaterThanOrEqual(5_000);
    // the fuzzer reached the routes it was meant to (answers other than 404 on each)
    const answered = (prefix: string) => outcomes.filter((o) => o.c.kind === "http" && o.c.path.startsWith(prefix) && o.status !== undefined && o.status !== 404).length;
    for (const prefix of ["/wecom/app/support", "/wecom/bot/helper", "/archive/push", "/media/", "/admin/", "/metrics", "/healthz", "/readyz"]) {
      expect(answered(prefix), prefix).toBeGreaterThan(0);
    }
    // signed links got past the signature check (a 404 from the store, not a 403)
    expect(outcomes.filter((o) => o.c.kind === "http" && o.c.path.startsWith(`/media/${CORP}/`) && o.status === 404).length).toBeGreaterThan(0);
    expect(outcomes.filter((o) => o.c.kind === "raw" && o.status !== undefined).length).toBeGreaterThan(100);

    // still alive, nothing stored, no new series, nothing logged as an error
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/readyz`)).status).toBe(200);
    expect(rowCounts(dbFile)).toEqual(rowsBefore);
    expect(series(await (await fetch(`${base}/metrics`)).text())).toEqual(seriesBefore);
    expect(logs.filter((l) => JSON.parse(l).level === "error")).toEqual([]);
    // and whatever the fuzzer sent (the admin token and archive secret included), no secret was logged
    const logged = logs.join("");
    for (const secret of [ADMIN, ARCHIVE_SECRET, APP_AES, BOT_AES, "app-secret", "apptoken", "bottoken", "omni-secret", ...stack.wecom.issuedTokens]) {
      expect(logged.includes(secret), `a secret (${secret.length} chars) was logged`).toBe(false);
    }
  }, 60_000);
});

/** A short, readable description of a case for a failure message. */
function describeCase(c: Case): string {
  if (c.kind === "raw") return `raw(${c.close}) ${JSON.stringify(c.bytes.subarray(0, 200).toString("latin1"))}`;
  const hdrs = JSON.stringify(c.headers).slice(0, 300);
  return `${c.method} ${c.path.slice(0, 300)} headers=${hdrs} body=${c.body ? JSON.stringify(c.body.subarray(0, 120).toString("latin1")) : "none"}`;
}
