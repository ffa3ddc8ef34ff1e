/**
 * The gateway as a real child process (`bin/wecom-bridge serve`), killed with SIGKILL in the
 * middle of a KF pull: after a restart nothing is lost and nothing is duplicated.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { ADMIN, eventually, freePort, KFID, type Stack, stackConfig, startStack } from "./stack.js";

const BIN = fileURLToPath(new URL("../bin/wecom-bridge", import.meta.url));
let stack: Stack | undefined;
const children: ChildProcess[] = [];

afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
  await stack?.stop();
  stack = undefined;
});

/** Start `wecom-bridge serve` and resolve once it logs that it serves. */
function serve(configFile: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, [BIN, "serve", "--config", configFile], { stdio: ["ignore", "pipe", "pipe"] });
  children.push(child);
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    lines.on("line", (l) => {
      if (l.includes("wecom-bridge serving")) resolve(child);
    });
    let err = "";
    child.stderr?.on("data", (d) => (err += String(d)));
    child.once("exit", (code) => reject(new Error(`gateway exited with ${code}: ${err}`)));
  });
}

async function storedCount(url: string): Promise<number> {
  try {
    const res = await fetch(`${url}/admin/messages?limit=500&channel=kf`, { headers: { authorization: `Bearer ${ADMIN}` } });
    return ((await res.json()) as { items: unknown[] }).items.length;
  } catch {
    return 0;
  }
}

describe("SIGKILL in the middle of a pull", () => {
  it("loses nothing and duplicates nothing", async () => {
    stack = await startStack({ noGateway: true });
    const dir = mkdtempSync(join(tmpdir(), "wb-kill-"));
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const raw = stackConfig(dir, port, stack.wecom.url, stack.omni.url);
    raw.kf = { pageSize: 4 };
    const file = join(dir, "config.json");
    writeFileSync(file, JSON.stringify(raw));
    stack.wecom.setCallbackUrl("app", "support", `${url}/wecom/app/support`);

    // a backlog the pull reads slowly, 4 per page; the 全媒体 refuses everything meanwhile, so
    // nothing is in delivery when the process dies
    const customers = ["wmA", "wmB", "wmC"];
    const total = 120;
    for (let i = 0; i < total; i++) {
      const ext = customers[i % customers.length] as string;
      await stack.wecom.kfCustomerSends(KFID, ext, { msgtype: "text", text: { content: `${ext}-${i}` } }, { callback: false });
    }
    stack.omni.setFailure("http500");
    stack.wecom.setDelay("kf/sync_msg", 25);

    const first = await serve(file);
    await stack.wecom.kfCustomerSends(KFID, "wmA", { msgtype: "text", text: { content: "wake-1" } });
    const atKill = await eventually(async () => {
      const n = await storedCount(url);
      return n >= 20 ? n : undefined;
    }, 10_000, "part of the backlog stored");
    first.kill("SIGKILL");
    expect(atKill).toBeLessThan(total); // the kill really came in the middle of the pull
    await new Promise((r) => first.once("exit", r));
    const storedBeforeKill = total + 1; // what WeCom holds

    await serve(file);
    stack.omni.setFailure(false);
    await stack.wecom.kfCustomerSends(KFID, "wmB", { msgtype: "text", text: { content: "wake-2" } });
    const got = await stack.omni.waitFor(storedBeforeKill + 1, 20_000);
    await new Promise((r) => setTimeout(r, 300));

    const contents = stack.omni.received.map((r) => r.body.Content);
    expect(contents).toHaveLength(total + 2);
    expect(new Set(contents).size).toBe(total + 2);
    // per customer, in the order they wrote
    for (const ext of customers) {
      const mine = stack.omni.received.filter((r) => r.body.FromUserId.endsWith(`:${ext}`)).map((r) => r.body.Content);
      const expected = Array.from({ length: total }, (_, i) => i)
        .filter((i) => customers[i % customers.length] === ext)
        .map((i) => `${ext}-${i}`);
      expect(mine.filter((c) => !c.startsWith("wake"))).toEqual(expected);
    }
    expect(got.length).toBeGreaterThanOrEqual(total + 1);
  }, 60_000);
});
