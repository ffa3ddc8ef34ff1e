/**
 * Vite's configuration for the operator console (`console/`): a Preact single-page app built to
 * `dist/console/`, which the gateway serves at `/console/`. JSX goes through Vite's own Oxc
 * transform, set for Preact's automatic runtime (no Babel, no plugin).
 *
 * The gateway sends a strict Content-Security-Policy (`script-src 'self'; style-src 'self'`), so
 * the build must not inline anything into index.html: the module-preload polyfill is off (one
 * chunk needs none) and assets are never inlined as data URLs into scripts.
 * @module
 */
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const here = fileURLToPath(new URL(".", import.meta.url));

export default defineConfig({
  root: here,
  base: "/console/",
  publicDir: false,
  oxc: {
    jsx: { runtime: "automatic", importSource: "preact" },
  },
  build: {
    outDir: fileURLToPath(new URL("../dist/console", import.meta.url)),
    emptyOutDir: true,
    target: "es2022",
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    sourcemap: false,
    reportCompressedSize: true,
  },
  server: {
    // `npx vite --config console/vite.config.ts` during development: the API is the gateway's
    proxy: { "/console/api": "http://127.0.0.1:8080", "/admin": "http://127.0.0.1:8080" },
  },
});
