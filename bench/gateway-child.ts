/**
 * A server process for `bench:gateway`: either the gateway on a fresh SQLite file
 * (`gateway DIR CONFIG_JSON`) or the ceiling, a bare node:http server that answers 200 at once
 * (`ceiling`). Prints `READY <url>` when listening; on stdin "rss" prints its peak RSS in bytes.
 */
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { parseConfig } from "../src/config.js";
import { runGateway } from "../src/gateway/index.js";
import { silentLogger } from "../src/log.js";

function peakRss(): number {
  const status = readFileSync("/proc/self/status", "utf8");
  const kb = /VmHWM:\s+(\d+) kB/.exec(status)?.[1];
  return kb ? Number(kb) * 1024 : process.memoryUsage().rss;
}

process.stdin.setEncoding("utf8");
process.stdin.on("data", (d: string) => {
  if (d.includes("rss")) process.stdout.write(`RSS ${peakRss()}\n`);
});

const mode = process.argv[2];
if (mode === "ceiling") {
  const server = createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("");
  });
  server.listen(0, "127.0.0.1", () => process.stdout.write(`READY http://127.0.0.1:${(server.address() as AddressInfo).port}\n`));
} else {
  const config = parseConfig(JSON.parse(process.argv[3] as string));
  const running = await runGateway(config, { log: silentLogger });
  process.stdout.write(`READY ${running.url}\n`);
  process.on("SIGTERM", () => {
    void running.stop().then(() => process.exit(0));
  });
}
