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
