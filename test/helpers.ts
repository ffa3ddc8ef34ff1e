/**
 * Test helpers: read the real-payload fixtures under test/fixtures/.
 */
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** Absolute path of the fixtures folder. */
export const FIXTURES = fileURLToPath(new URL("./fixtures/", import.meta.url));

/** The text of one fixture, e.g. fixture("app", "msg-text.xml"). */
export function fixture(channel: string, name: string): string {
  return readFileSync(`${FIXTURES}${channel}/${name}`, "utf8");
}

/** A JSON fixture, parsed. */
export function jsonFixture<T = Record<string, unknown>>(channel: string, name: string): T {
  return JSON.parse(fixture(channel, name)) as T;
}

/** Names of a channel's fixtures matching a prefix (and the extension .xml or .json). */
export function fixtureNames(channel: string, prefix = ""): string[] {
  return readdirSync(`${FIXTURES}${channel}`)
    .filter((n) => n.startsWith(prefix) && (n.endsWith(".xml") || n.endsWith(".json")))
    .sort();
}

/** The crypto vectors. */
export const vectors = JSON.parse(readFileSync(`${FIXTURES}crypto/vectors.json`, "utf8"));

/** The error `p` rejects with, checked to be an instance of `type`; fails when `p` resolves. */
export async function failureOf<E>(p: Promise<unknown>, type: new (...args: never[]) => E): Promise<E> {
  try {
    await p;
  } catch (e) {
    if (!(e instanceof type)) throw new Error(`expected a ${type.name}, got ${String(e)}`);
    return e;
  }
  throw new Error("expected a failure");
}

/** `p`, or a failure naming `what` when it has not settled within `ms` (a deadline, not a sleep). */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}
