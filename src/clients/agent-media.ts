/**
 * Fetching a 全媒体 agent's media URL without letting the 全媒体 make the gateway fetch its
 * neighbours (issue 7, KF media; server-side request forgery).
 *
 * - Only `http:` and `https:` URLs.
 * - The host is resolved here (every address of it), and the fetch is refused when any address is
 *   not public (loopback, unspecified, link-local, private, CGNAT, multicast, broadcast, reserved,
 *   documentation ranges, and the IPv4-mapped, NAT64 and 6to4 forms of those: see
 *   {@link isPublicAddress}), unless the operator allowed it (`allowHosts`: the host of
 *   `omni.baseUrl` and `omni.mediaHosts`).
 * - The connection goes to the very addresses that were checked (the request is given a `lookup`
 *   that answers with them), so a second DNS answer cannot slip a private address in (no
 *   DNS-rebinding window); the connected peer is checked once more.
 * - Redirects are followed by hand (at most `maxRedirects`), each hop checked the same way.
 * - The body is streamed to a file in `destDir` under `maxBytes` (a larger `Content-Length` is
 *   refused before reading; a body growing past it is cut off and its file removed).
 * - `timeoutMs` bounds everything up to the final answer's headers (resolution, connections,
 *   redirects), then every gap between body chunks.
 * - Failures are {@link AgentMediaError}s with a stable code and `retryable`; no message contains the
 *   URL's `user:password@` or its query string.
 * @module
 */
import { createHash, randomBytes } from "node:crypto";
import { lookup as dnsLookup } from "node:dns/promises";
import { createWriteStream } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { type ClientRequest, type IncomingMessage, request as httpRequest, type RequestOptions } from "node:http";
import { request as httpsRequest } from "node:https";
import { BlockList, isIP, type LookupFunction } from "node:net";
import { join } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { BridgeError } from "../errors.js";
import { fileNameOf } from "./wecom.js";

/**
 * Stable codes of {@link AgentMediaError}:
 * - `media_url_refused`: the policy refuses the URL (scheme, or an address that is not public and
 *   not allowed), at the first hop or at a redirect; final;
 * - `media_too_large`: the file is larger than `maxBytes`; final;
 * - `media_fetch_failed`: anything else; `retryable` for network failures, timeouts, DNS failures,
 *   HTTP 5xx, 408 and 429; final for other HTTP statuses and redirect trouble.
 */
export type AgentMediaErrorCode = "media_url_refused" | "media_too_large" | "media_fetch_failed";

/** A media URL that could not be fetched. The message never holds the URL's credentials or query. */
export class AgentMediaError extends BridgeError {
  /** The stable code (see {@link AgentMediaErrorCode}). */
  declare readonly code: AgentMediaErrorCode;
  /** True when trying again later may succeed. */
  readonly retryable: boolean;
  /** The HTTP status of the answer that failed, when one came. */
  readonly httpStatus: number | undefined;

  /**
   * @param code stable code
   * @param message one readable line, free of credentials and query strings
   * @param retryable whether trying again later may succeed
   * @param httpStatus the answer's status, when one came
   */
  constructor(code: AgentMediaErrorCode, message: string, retryable = false, httpStatus?: number) {
    super(code, message);
    this.retryable = retryable;
    this.httpStatus = httpStatus;
  }
}

/** One address of a host, as `dns.lookup` with `all: true` gives it. */
export interface ResolvedAddress {
  /** The address. */
  address: string;
  /** 4 or 6. */
  family: number;
}

/** Options of {@link fetchAgentMedia}. */
export interface AgentMediaOptions {
  /**
   * What may be fetched although it is not public: host names (`qmt.example.com`, any port),
   * `host:port` (that port only), addresses (`10.0.0.5`, `[fd00::5]:8080`) and CIDRs
   * (`10.20.0.0/16`). A listed name is allowed whatever it resolves to; a listed address or CIDR
   * allows the addresses in it. Typically the host of `omni.baseUrl` plus `omni.mediaHosts`.
   */
  allowHosts: readonly string[];
  /** The largest file accepted, bytes (WeCom's limit for the media type). */
  maxBytes: number;
  /** Deadline up to the final answer's headers, then the longest gap between body chunks, ms (`delivery.timeoutMs`). */
  timeoutMs: number;
  /** Redirects followed at most. Default 3. */
  maxRedirects?: number;
  /** Folder of the downloaded file (created when missing). */
  destDir: string;
  /** Resolves a host name to all its addresses; default `dns.lookup` with `all: true` (tests inject one). */
  lookup?: (hostname: string) => Promise<readonly ResolvedAddress[]>;
  /** Aborts the fetch (a retryable `media_fetch_failed`). */
  signal?: AbortSignal;
}

/** A downloaded agent's file. */
export interface AgentMedia {
  /** The file in `destDir`; the caller owns it (moves or removes it). */
  path: string;
  /** Its size, bytes. */
  size: number;
  /** `Content-Type` as sent, `application/octet-stream` when none. */
  contentType: string;
  /** From `Content-Disposition` when it names one, else the last segment of the final URL's path; undefined when neither gives one. */
  fileName: string | undefined;
  /** SHA-256 of the bytes, hex (to reuse a WeCom media_id for the same content). */
  sha256: string;
}

// ---------------------------------------------------------------------------------------------
// Addresses

/** IPv4 ranges that are not globally reachable (IANA special-purpose registry, RFC 6890 and later). */
const NOT_PUBLIC_V4: ReadonlyArray<readonly [string, number]> = [
  ["0.0.0.0", 8], // "this network"; 0.0.0.0 reaches the local host
  ["10.0.0.0", 8],
  ["100.64.0.0", 10], // CGNAT
  ["127.0.0.0", 8],
  ["169.254.0.0", 16], // link-local, cloud metadata (169.254.169.254)
  ["172.16.0.0", 12],
  ["192.0.0.0", 24], // IETF protocol assignments
  ["192.0.2.0", 24], // TEST-NET-1
  ["192.88.99.0", 24], // 6to4 relay anycast
  ["192.168.0.0", 16],
  ["198.18.0.0", 15], // benchmarking
  ["198.51.100.0", 24], // TEST-NET-2
  ["203.0.113.0", 24], // TEST-NET-3
  ["224.0.0.0", 4], // multicast
  ["240.0.0.0", 4], // reserved, and 255.255.255.255 broadcast
];

/** IPv6 ranges that are not globally reachable. */
const NOT_PUBLIC_V6: ReadonlyArray<readonly [string, number]> = [
  ["::", 96], // unspecified, loopback, IPv4-compatible
  ["64:ff9b:1::", 48], // local-use NAT64
  ["100::", 64], // discard-only
  ["2001::", 32], // Teredo (hides an IPv4 address)
  ["2001:2::", 48], // benchmarking
  ["2001:10::", 28], // ORCHID
  ["2001:20::", 28], // ORCHIDv2
  ["2001:db8::", 32], // documentation
  ["3fff::", 20], // documentation
  ["fc00::", 7], // unique local
  ["fe80::", 10], // link-local
  ["fec0::", 10], // site-local (deprecated)
  ["ff00::", 8], // multicast
];

/** The IPv6 form `prefix:hi:lo` of an IPv4 address embedded 16 bits in (6to4). */
function sixToFour(v4: string): string {
  const [a, b, c, d] = v4.split(".").map(Number) as [number, number, number, number];
  return `2002:${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}::`;
}

const NOT_PUBLIC = (() => {
  const list = new BlockList();
  for (const [addr, prefix] of NOT_PUBLIC_V4) {
    // BlockList matches IPv4-mapped IPv6 (::ffff:a.b.c.d) against IPv4 subnets by itself
    list.addSubnet(addr, prefix, "ipv4");
    list.addSubnet(`64:ff9b::${addr}`, 96 + prefix, "ipv6"); // NAT64 (RFC 6052)
    list.addSubnet(sixToFour(addr), 16 + prefix, "ipv6"); // 6to4 (RFC 3056)
  }
  for (const [addr, prefix] of NOT_PUBLIC_V6) list.addSubnet(addr, prefix, "ipv6");
  return list;
})();

/**
 * True when `ip` is an IPv4 or IPv6 address on the public internet: false for loopback,
 * unspecified, link-local (169.254/16, fe80::/10), private (10/8, 172.16/12, 192.168/16,
 * fc00::/7), CGNAT (100.64/10), multicast, broadcast, reserved and documentation ranges, Teredo,
 * and any of these IPv4 ranges written as IPv4-mapped (`::ffff:127.0.0.1`), NAT64
 * (`64:ff9b::7f00:1`) or 6to4 (`2002:7f00:1::`); false for anything that is not an address.
 */
export function isPublicAddress(ip: string): boolean {
  const family = isIP(ip);
  if (family === 0) return false;
  return !NOT_PUBLIC.check(ip, family === 4 ? "ipv4" : "ipv6");
}

// ---------------------------------------------------------------------------------------------
// The allow list

/** A compiled `allowHosts`. */
export interface AllowHosts {
  /** Allowed host names, lower-case, with the port when one was given. */
  names: Array<{ name: string; port: number | undefined }>;
  /** Allowed addresses and CIDRs, with the port when one was given. */
  nets: Array<{ list: BlockList; port: number | undefined }>;
}

/** The host of a URL as an address or a lower-case name: no brackets, no trailing dot. */
function bareHost(hostname: string): string {
  const h = hostname.startsWith("[") && hostname.endsWith("]") ? hostname.slice(1, -1) : hostname;
  return h.endsWith(".") ? h.slice(0, -1) : h;
}

function netOf(address: string, prefix?: number): BlockList {
  const family = isIP(address);
  const list = new BlockList();
  if (prefix === undefined) list.addAddress(address, family === 4 ? "ipv4" : "ipv6");
  else list.addSubnet(address, prefix, family === 4 ? "ipv4" : "ipv6");
  return list;
}

/**
 * Compile `allowHosts` entries: `name`, `name:port`, `address`, `[ipv6]`, `address:port`,
 * `[ipv6]:port`, `address/prefix`. Names are read as a URL's host is (lower-cased, IDNs as
 * punycode, `127.1` as `127.0.0.1`).
 * @throws TypeError naming the first entry that is none of these
 */
export function parseAllowHosts(entries: readonly string[]): AllowHosts {
  const out: AllowHosts = { names: [], nets: [] };
  for (const raw of entries) {
    const entry = raw.trim();
    const bad = () => new TypeError(`allowHosts: ${JSON.stringify(raw)} is not a host, host:port, address or CIDR`);
    const slash = entry.indexOf("/");
    if (slash >= 0) {
      const addr = entry.slice(0, slash);
      const family = isIP(addr);
      const prefixText = entry.slice(slash + 1);
      const prefix = Number(prefixText);
      if (family === 0 || !/^\d{1,3}$/.test(prefixText) || prefix > (family === 4 ? 32 : 128)) throw bad();
      out.nets.push({ list: netOf(addr, prefix), port: undefined });
      continue;
    }
    if (isIP(entry) !== 0) {
      out.nets.push({ list: netOf(entry), port: undefined });
      continue;
    }
    if (entry === "" || /[@?#\\\s]/.test(entry)) throw bad();
    let url: URL;
    try {
      url = new URL(`http://${entry}`);
    } catch {
      throw bad();
    }
    if (url.pathname !== "/" || url.username !== "" || url.password !== "") throw bad();
    const portMatch = /^(?:\[[^\]]*\]|[^:[\]]*):(\d{1,5})$/.exec(entry);
    const port = portMatch ? Number(portMatch[1]) : undefined;
    if (port !== undefined && (port < 1 || port > 65535)) throw bad();
    const host = bareHost(url.hostname);
    if (isIP(host) !== 0) out.nets.push({ list: netOf(host), port });
    else if (/^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$/.test(host)) out.names.push({ name: host, port });
    else throw bad(); // e.g. a wildcard: names are matched exactly
  }
  return out;
}

/** May this address be fetched at this port: public, or listed? */
function addressAllowed(address: string, port: number, allow: AllowHosts): boolean {
  if (isPublicAddress(address)) return true;
  const family = isIP(address);
  if (family === 0) return false;
  return allow.nets.some((n) => (n.port === undefined || n.port === port) && n.list.check(address, family === 4 ? "ipv4" : "ipv6"));
}

// ---------------------------------------------------------------------------------------------
// The fetch

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** A URL as messages may show it: scheme, host, port and path (shortened); no credentials, no query. */
function shown(url: URL): string {
  const path = url.pathname.length > 120 ? `${url.pathname.slice(0, 120)}…` : url.pathname;
  return `${url.protocol}//${url.host}${path}`;
}

/** The last segment of a URL's path as a file name, decoded and cleaned; undefined when none. */
function fileNameFromPath(url: URL): string | undefined {
  const last = url.pathname.split("/").filter((s) => s !== "").pop();
  if (last === undefined) return undefined;
  let name: string;
  try {
    name = decodeURIComponent(last);
  } catch {
    name = last;
  }
  const base = name.replace(/[\u0000-\u001f\u007f]/g, "").split(/[/\\]/).pop()?.trim() ?? "";
  return base === "" || base === "." || base === ".." ? undefined : base;
}

/** The `lookup` of a request: answers with the checked addresses, in either shape Node asks for. */
function pinnedLookup(addresses: readonly ResolvedAddress[]): LookupFunction {
  return ((_hostname: string, options: { all?: boolean; family?: number } | number, callback: (...args: unknown[]) => void) => {
    const all = typeof options === "object" && options !== null && options.all === true;
    const wanted = typeof options === "number" ? options : typeof options === "object" && options !== null ? options.family : undefined;
    const usable = wanted === 4 || wanted === 6 ? addresses.filter((a) => a.family === wanted) : addresses;
    const list = usable.length > 0 ? usable : addresses;
    if (all) callback(null, list.map((a) => ({ address: a.address, family: a.family })));
    else callback(null, (list[0] as ResolvedAddress).address, (list[0] as ResolvedAddress).family);
  }) as LookupFunction;
}

async function defaultLookup(hostname: string): Promise<readonly ResolvedAddress[]> {
  return dnsLookup(hostname, { all: true, verbatim: true });
}

/**
 * Download an agent's media URL under the policy of the module comment, into a new file in
 * `destDir`.
 * @param url the agent's URL (`Content` of a 全媒体 image, voice, video or file message)
 * @param options the allow list, limits and destination
 * @throws AgentMediaError `media_url_refused`, `media_too_large` or `media_fetch_failed`
 * @throws TypeError when an `allowHosts` entry is malformed (a configuration error)
 */
export async function fetchAgentMedia(url: string, options: AgentMediaOptions): Promise<AgentMedia> {
  const allow = parseAllowHosts(options.allowHosts);
  const maxRedirects = options.maxRedirects ?? 3;
  const lookup = options.lookup ?? defaultLookup;
  let current: URL;
  try {
    current = new URL(url);
  } catch {
    throw new AgentMediaError("media_url_refused", "not an absolute URL");
  }

  // one deadline for everything up to the final headers, then refreshed by every body chunk
  const controller = new AbortController();
  const abort = (e: AgentMediaError) => {
    if (!controller.signal.aborted) controller.abort(e);
  };
  const phase = { body: false };
  const timer = setTimeout(() => {
    const what = phase.body ? `no data for ${options.timeoutMs} ms` : `no answer within ${options.timeoutMs} ms`;
    abort(new AgentMediaError("media_fetch_failed", `${shown(current)}: ${what}`, true));
  }, options.timeoutMs);
  const onCallerAbort = () => abort(new AgentMediaError("media_fetch_failed", "aborted", true));
  options.signal?.addEventListener("abort", onCallerAbort, { once: true });
  if (options.signal?.aborted) onCallerAbort();
  const aborted = new Promise<never>((_, reject) => {
    controller.signal.addEventListener("abort", () => reject(controller.signal.reason), { once: true });
  });
  aborted.catch(() => undefined);

  try {
    for (let hop = 0; ; hop++) {
      const pending = requestOnce(current, allow, lookup, controller.signal);
      pending.catch(() => undefined); // when the deadline wins the race
      const res = await Promise.race([pending, aborted]);
      const status = res.statusCode ?? 0;
      if (REDIRECTS.has(status)) {
        res.destroy();
        const location = res.headers.location;
        if (location === undefined) throw new AgentMediaError("media_fetch_failed", `${shown(current)}: HTTP ${status} without a Location`, false, status);
        if (hop >= maxRedirects) throw new AgentMediaError("media_fetch_failed", `${shown(current)}: more than ${maxRedirects} redirects`, false, status);
        try {
          current = new URL(location, current);
        } catch {
          throw new AgentMediaError("media_url_refused", `${shown(current)}: redirect to a location that is not a URL`, false, status);
        }
        continue;
      }
      if (status < 200 || status > 299) {
        res.destroy();
        const retryable = status >= 500 || status === 408 || status === 429;
        throw new AgentMediaError("media_fetch_failed", `${shown(current)}: HTTP ${status}`, retryable, status);
      }
      phase.body = true;
      return await saveBody(res, current, status, options, controller, timer);
    }
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", onCallerAbort);
    // releases a request still pending (the deadline won) and the finished one's socket
    abort(new AgentMediaError("media_fetch_failed", "finished", false));
  }
}

/** Check one URL against the policy, then ask it; resolves with the answer (headers in). */
async function requestOnce(url: URL, allow: AllowHosts, lookup: (hostname: string) => Promise<readonly ResolvedAddress[]>, signal: AbortSignal): Promise<IncomingMessage> {
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new AgentMediaError("media_url_refused", `scheme ${url.protocol} is not allowed (http: and https: only)`);
  }
  const host = bareHost(url.hostname);
  if (host === "") throw new AgentMediaError("media_url_refused", "the URL has no host");
  const port = url.port !== "" ? Number(url.port) : url.protocol === "https:" ? 443 : 80;
  const nameAllowed = allow.names.some((n) => n.name === host && (n.port === undefined || n.port === port));

  let addresses: readonly ResolvedAddress[];
  const family = isIP(host);
  if (family !== 0) {
    addresses = [{ address: host, family }];
  } else {
    try {
      addresses = await lookup(host);
    } catch (e) {
      if (signal.aborted) throw signal.reason;
      const code = typeof (e as NodeJS.ErrnoException).code === "string" ? (e as NodeJS.ErrnoException).code : "lookup failed";
      throw new AgentMediaError("media_fetch_failed", `${shown(url)}: the host does not resolve (${code})`, true);
    }
    if (addresses.length === 0) throw new AgentMediaError("media_fetch_failed", `${shown(url)}: the host has no address`, true);
  }
  if (!nameAllowed) {
    const refused = addresses.find((a) => !addressAllowed(a.address, port, allow));
    if (refused !== undefined) {
      const what = family !== 0 ? "is not a public address" : `resolves to ${refused.address}, not a public address`;
      throw new AgentMediaError("media_url_refused", `${shown(url)}: the host ${what}; list it in omni.mediaHosts to allow it`);
    }
  }
  if (signal.aborted) throw signal.reason;

  const requestOptions: RequestOptions = {
    method: "GET",
    headers: { accept: "*/*", "accept-encoding": "identity", "user-agent": "wecom-bridge" },
    agent: false,
    lookup: pinnedLookup(addresses),
    signal,
  };
  return new Promise<IncomingMessage>((resolve, reject) => {
    let req: ClientRequest;
    try {
      req = (url.protocol === "https:" ? httpsRequest : httpRequest)(url, requestOptions);
    } catch {
      reject(new AgentMediaError("media_fetch_failed", `${shown(url)}: the request could not be made`, false));
      return;
    }
    req.on("socket", (socket) => {
      socket.once("connect", () => {
        // the peer we reached must pass the policy too (belt and braces over the pinned lookup)
        const peer = socket.remoteAddress ?? "";
        if (!nameAllowed && !addressAllowed(peer, port, allow)) {
          req.destroy(new AgentMediaError("media_url_refused", `${shown(url)}: connected to ${peer}, not a public address`));
        }
      });
    });
    req.on("error", (e) => {
      if (e instanceof AgentMediaError) reject(e);
      else if (signal.aborted) reject(signal.reason);
      else {
        const code = typeof (e as NodeJS.ErrnoException).code === "string" ? (e as NodeJS.ErrnoException).code : "network error";
        reject(new AgentMediaError("media_fetch_failed", `${shown(url)}: request failed (${code})`, true));
      }
    });
    req.on("response", resolve);
    req.end();
  });
}

/** Stream a 2xx answer into a new file under the size cap, hashing it; the file is removed on failure. */
async function saveBody(res: IncomingMessage, url: URL, status: number, options: AgentMediaOptions, controller: AbortController, timer: NodeJS.Timeout): Promise<AgentMedia> {
  const lengthHeader = res.headers["content-length"];
  const length = lengthHeader !== undefined && /^\d+$/.test(lengthHeader) ? Number(lengthHeader) : undefined;
  if (length !== undefined && length > options.maxBytes) {
    res.destroy();
    throw new AgentMediaError("media_too_large", `${shown(url)}: the file is ${length} bytes, more than ${options.maxBytes}`, false, status);
  }
  await mkdir(options.destDir, { recursive: true });
  const path = join(options.destDir, `agent-media-${randomBytes(12).toString("hex")}.part`);
  const hash = createHash("sha256");
  let size = 0;
  timer.refresh();
  const meter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      timer.refresh();
      size += chunk.length;
      if (size > options.maxBytes) {
        callback(new AgentMediaError("media_too_large", `${shown(url)}: the file is more than ${options.maxBytes} bytes`, false, status));
        return;
      }
      hash.update(chunk);
      callback(null, chunk);
    },
  });
  try {
    await pipeline(res, meter, createWriteStream(path, { flags: "wx", mode: 0o600 }), { signal: controller.signal });
    if (!res.complete) throw new AgentMediaError("media_fetch_failed", `${shown(url)}: the connection closed before the whole file came`, true, status);
  } catch (e) {
    res.destroy();
    await rm(path, { force: true });
    if (e instanceof AgentMediaError) throw e;
    if (controller.signal.aborted && controller.signal.reason instanceof AgentMediaError) throw controller.signal.reason;
    const code = typeof (e as NodeJS.ErrnoException).code === "string" ? (e as NodeJS.ErrnoException).code : "network error";
    throw new AgentMediaError("media_fetch_failed", `${shown(url)}: download failed (${code})`, true, status);
  }
  const contentType = res.headers["content-type"] ?? "application/octet-stream";
  const fileName = fileNameOf(res.headers["content-disposition"] ?? null) ?? fileNameFromPath(url);
  return { path, size, contentType, fileName, sha256: hash.digest("hex") };
}
