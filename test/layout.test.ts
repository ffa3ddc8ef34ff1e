/**
 * The protocol core stays pure: it imports only node:crypto and itself, never an I/O module, a
 * server, a database driver or the CLI; and each subpath export can be imported on its own.
 */
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const SRC = join(ROOT, "src");

/** Source files of the protocol core. */
function coreFiles(): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (p.endsWith(".ts")) out.push(p);
    }
  };
  walk(join(SRC, "wecom"));
  walk(join(SRC, "omni"));
  out.push(join(SRC, "model.ts"), join(SRC, "errors.ts"), join(SRC, "decode.ts"), join(SRC, "index.ts"));
  return out;
}

describe("protocol core", () => {
  it("imports nothing but node:crypto and core files", () => {
    const files = coreFiles();
    expect(files.length).toBeGreaterThan(10);
    for (const file of files) {
      const text = readFileSync(file, "utf8");
      for (const m of text.matchAll(/^\s*(?:import|export)[^;]*?from\s+"([^"]+)"/gms)) {
        const spec = m[1] as string;
        const where = relative(ROOT, file);
        if (spec.startsWith(".")) {
          const target = join(file, "..", spec).replace(/\.js$/, ".ts");
          expect(files, `${where} imports ${spec}, outside the core`).toContain(target);
        } else {
          expect(spec, `${where} imports ${spec}`).toBe("node:crypto");
        }
      }
    }
  });

  it("every subpath export loads alone, from the built package", () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { exports: Record<string, unknown> };
    const subpaths = Object.keys(pkg.exports).filter((k) => k !== "./package.json");
    expect(subpaths).toEqual(expect.arrayContaining([".", "./crypto", "./app", "./kf", "./bot", "./archive", "./omni", "./model", "./xml"]));
    const script = subpaths.map((s) => `await import(${JSON.stringify(s === "." ? "wecom-bridge" : `wecom-bridge/${s.slice(2)}`)});`).join("");
    const r = spawnSync(process.execPath, ["--input-type=module", "-e", `${script} process.stdout.write("ok")`], { cwd: ROOT, encoding: "utf8" });
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe("ok");
  });
});
