/**
 * The client's address behind trusted reverse proxies (`trustProxy`). `X-Forwarded-For` is read
 * only when the socket's peer is a trusted proxy; the client is then the rightmost address of the
 * chain that is not a trusted proxy (the one the nearest untrusted hop was seen as: everything to
 * its left was written by the client and proves nothing).
 * @module
 */
import { BlockList, isIP, isIPv4 } from "node:net";

/** The most `X-Forwarded-For` hops looked at, from the right; a longer chain is not believed. */
export const MAX_FORWARDED_HOPS = 32;

/**
 * An address as the gateway reports it: an IPv4-mapped IPv6 address (`::ffff:1.2.3.4`, what a
 * dual-stack socket shows for an IPv4 peer) becomes its IPv4 form; anything else is kept as is.
 */
export function normalizeAddress(address: string): string {
  if (address.length > 7 && address.slice(0, 7).toLowerCase() === "::ffff:") {
    const v4 = address.slice(7);
    if (isIPv4(v4)) return v4;
  }
  return address;
}

/**
 * One `X-Forwarded-For` element as an address: `1.2.3.4`, `1.2.3.4:5678`, `::1`, `[::1]`,
 * `[::1]:5678`, `::ffff:1.2.3.4`; undefined for anything else (`unknown`, obfuscated names,
 * garbage).
 */
export function parseForwardedElement(element: string): string | undefined {
  let s = element.trim();
  if (s.startsWith("[")) {
    const end = s.indexOf("]");
    if (end < 0) return undefined;
    const rest = s.slice(end + 1);
    if (rest !== "" && !/^:\d{1,5}$/.test(rest)) return undefined;
    s = s.slice(1, end);
    return isIP(s) === 6 ? normalizeAddress(s) : undefined;
  }
  if (isIP(s) !== 0) return normalizeAddress(s);
  const port = /^([0-9.]+):\d{1,5}$/.exec(s);
  if (port && isIPv4(port[1] as string)) return port[1];
  return undefined;
}

/**
 * A `trustProxy` entry (address or CIDR, already validated by the config) added to a BlockList.
 * BlockList matches across the IPv4-mapped form both ways (`10.0.0.0/8` holds `::ffff:10.1.2.3`,
 * `::ffff:10.0.0.0/104` holds `10.1.2.3`), so entries are added as written.
 */
function addEntry(list: BlockList, entry: string, what: string): void {
  const slash = entry.indexOf("/");
  const addr = slash < 0 ? entry : entry.slice(0, slash);
  const family = isIP(addr);
  if (family === 0) throw new Error(`${what}: ${JSON.stringify(entry)} is not an address or CIDR`);
  const max = family === 4 ? 32 : 128;
  const prefix = slash < 0 ? max : Number(entry.slice(slash + 1));
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) throw new Error(`${what}: ${JSON.stringify(entry)} has a bad prefix`);
  list.addSubnet(addr, prefix, family === 4 ? "ipv4" : "ipv6");
}

/**
 * A matcher of addresses against a list of addresses and CIDRs (already validated by the config):
 * true when `address` is in one of them. An empty list matches nothing.
 */
export function addressMatcher(entries: readonly string[], what: string): (address: string | undefined) => boolean {
  if (entries.length === 0) return () => false;
  const list = new BlockList();
  for (const entry of entries) addEntry(list, entry, what);
  return (address) => {
    if (address === undefined) return false;
    const a = normalizeAddress(address);
    const family = isIP(a);
    return family !== 0 && list.check(a, family === 4 ? "ipv4" : "ipv6");
  };
}

/** Finds the client's address of a request, given the proxies to trust. */
export class ClientAddress {
  readonly #trusted: BlockList | undefined;

  /**
   * @param trustProxy addresses or CIDRs of the trusted reverse proxies; empty: none, so
   *   `X-Forwarded-For` is never read
   * @throws Error when an entry is not an address or CIDR
   */
  constructor(trustProxy: readonly string[] = []) {
    if (trustProxy.length === 0) return;
    const list = new BlockList();
    for (const entry of trustProxy) addEntry(list, entry, "trustProxy");
    this.#trusted = list;
  }

  /** True when `address` (any form {@link normalizeAddress} accepts) is a trusted proxy. */
  isTrusted(address: string): boolean {
    if (this.#trusted === undefined) return false;
    const family = isIP(address);
    if (family === 0) return false;
    return this.#trusted.check(address, family === 4 ? "ipv4" : "ipv6");
  }

  /**
   * The client's address: the peer's, unless the peer is a trusted proxy and `X-Forwarded-For`
   * names someone else. Repeated headers are read as one list, in order. An element that is not
   * an address, where the client should be, makes the client unknown (undefined): a trusted
   * proxy always writes a real address, so garbage there means the chain cannot be believed.
   * @param peer the socket's remote address
   * @param forwardedFor the `X-Forwarded-For` header(s)
   */
  resolve(peer: string | undefined, forwardedFor: string | readonly string[] | undefined): string | undefined {
    if (peer === undefined) return undefined;
    const client = normalizeAddress(peer);
    if (this.#trusted === undefined || forwardedFor === undefined || !this.isTrusted(client)) return client;
    const raw = typeof forwardedFor === "string" ? forwardedFor : forwardedFor.join(",");
    const elements = raw.split(",").filter((e) => e.trim() !== "");
    let current = client;
    for (let i = elements.length - 1, hops = 0; i >= 0; i--, hops++) {
      if (hops >= MAX_FORWARDED_HOPS) return undefined;
      const addr = parseForwardedElement(elements[i] as string);
      if (addr === undefined) return undefined;
      current = addr;
      if (!this.isTrusted(addr)) return addr;
    }
    // every hop is a trusted proxy: the leftmost is the client
    return current;
  }
}
