/**
 * The console's files: built by `npm run build` into `dist/console/` (Vite), read once into
 * memory and served with a strict Content-Security-Policy (no inline script or style, nothing
 * from another origin). Hashed assets are cached for a year; the page itself is revalidated.
 * @module
 */
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { extname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";

/** The Content-Security-Policy of the console's pages and answers. */
export const CONSOLE_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/** Headers of every console answer (pages, files and API). */
export const CONSOLE_HEADERS: Readonly<Record<string, string>> = {
  "content-security-policy": CONSOLE_CSP,
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
};

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".json": "application/json; charset=utf-8",
  ".woff2": "font/woff2",
  ".txt": "text/plain; charset=utf-8",
};

/** One file of the console. */
export interface ConsoleFile {
  body: Buffer;
  headers: Record<string, string>;
}

/** The built console's folder: `dist/console` next to the compiled gateway, or the repository's when run from source. */
export function consoleDir(): string | undefined {
  const here = fileURLToPath(new URL(".", import.meta.url));
  for (const candidate of [join(here, "..", "..", "console"), join(here, "..", "..", "..", "dist", "console")]) {
    if (existsSync(join(candidate, "index.html"))) return candidate;
  }
  return undefined;
}

/** Every file of a built console, by its path under `/console/` (`""` is the page). */
export function loadConsoleFiles(dir: string): Map<string, ConsoleFile> {
  const files = new Map<string, ConsoleFile>();
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const full = join(d, name);
      if (statSync(full).isDirectory()) {
        walk(full);
        continue;
      }
      const type = TYPES[extname(name)];
      if (type === undefined) continue;
      const body = readFileSync(full);
      const path = relative(dir, full).split(sep).join("/");
      const hashed = path.startsWith("assets/");
      files.set(path, {
        body,
        headers: {
          ...CONSOLE_HEADERS,
          "content-type": type,
          etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"`,
          "cache-control": hashed ? "public, max-age=31536000, immutable" : "no-cache",
        },
      });
    }
  };
  walk(dir);
  const page = files.get("index.html");
  if (page !== undefined) files.set("", page);
  return files;
}
