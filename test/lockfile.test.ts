/**
 * The committed package-lock.json is complete: every optional platform package any locked package
 * names (biome's and esbuild's binaries for other systems) is in it, so `npm install` on a fresh
 * clone resolves nothing anew and leaves the lock unchanged on every machine.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

interface LockPackage {
  version?: string;
  optionalDependencies?: Record<string, string>;
  dependencies?: Record<string, string>;
}

const lock = JSON.parse(readFileSync(new URL("../package-lock.json", import.meta.url), "utf8")) as { lockfileVersion: number; packages: Record<string, LockPackage> };

/** Where npm would find `name` for the package at `path` (its own node_modules, then upwards). */
function resolves(path: string, name: string): boolean {
  let base = path;
  for (;;) {
    if (lock.packages[`${base === "" ? "" : `${base}/`}node_modules/${name}`] !== undefined) return true;
    if (base === "") return false;
    const up = base.lastIndexOf("/node_modules/");
    base = up < 0 ? "" : base.slice(0, up);
  }
}

describe("package-lock.json", () => {
  it("lists every optional dependency of every locked package", () => {
    expect(lock.lockfileVersion).toBe(3);
    const missing: string[] = [];
    for (const [path, pkg] of Object.entries(lock.packages)) {
      for (const name of Object.keys(pkg.optionalDependencies ?? {})) if (!resolves(path, name)) missing.push(`${path || "(root)"} → ${name}`);
    }
    expect(missing).toEqual([]);
    // the check has something to check
    expect(Object.values(lock.packages).some((p) => Object.keys(p.optionalDependencies ?? {}).length > 3)).toBe(true);
  });
});
