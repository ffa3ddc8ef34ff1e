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

describe("SIGKILL between WeCom's work and its answer (outbound)", () => {
  /** A gateway child with a customer who wrote on KF and a member who wrote on the app. */
  async function setup(): Promise<{ file: string; url: string; kfAddress: string; appAddress: string }> {
    stack = await startStack({ noGateway: true });
    const dir = mkdtempSync(join(tmpdir(), "wb-kill-out-"));
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const raw = stackConfig(dir, port, stack.wecom.url, stack.omni.url);
    const file = join(dir, "config.json");
    writeFileSync(file, JSON.stringify(raw));
    stack.wecom.setCallbackUrl("app", "support", `${url}/wecom/app/support`);
    stack.omni.setAppUrl(url, "/qmtapi");
    await serve(file);
    await stack.wecom.kfCustomerSends(KFID, "wmKill", { msgtype: "text", text: { content: "在吗" } });
    await stack.wecom.appUserSendsText(1000002, "zhangsan", "你好");
    const got = await stack.omni.waitFor(2, 10_000);
    const addresses = got.map((r) => r.body.FromUserId);
    return { file, url, kfAddress: addresses.find((a) => a.startsWith("kf:")) as string, appAddress: addresses.find((a) => a.startsWith("app:")) as string };
  }

  it("a KF message is neither lost nor doubled at WeCom (the same msgid on the retry)", async () => {
    const { file, kfAddress } = await setup();
    const s = stack as Stack;
    s.wecom.setDelay("kf/send_msg", 10_000, "after");
    const text = `${"甲".repeat(682)}${"乙".repeat(10)}`; // two parts
    expect((await s.omni.sendAgentReply({ ToUserId: kfAddress, MsgType: "text", Content: text })).reply).toMatchObject({ errcode: 0 });
    await eventually(() => s.wecom.sent.some((x) => x.api === "kf/send_msg"), 10_000, "WeCom took the first part");
    children[0]?.kill("SIGKILL");
    await new Promise((r) => children[0]?.once("exit", r));
    s.wecom.setDelay("kf/send_msg", 0, "after");
    await serve(file);
    const sends = await eventually(() => {
      const list = s.wecom.sent.filter((x) => x.api === "kf/send_msg");
      return list.length >= 2 ? list : undefined;
    }, 15_000, "both parts");
    expect(sends.map((x) => (x.body.text as { content: string }).content).join("")).toBe(text);
    expect(new Set(sends.map((x) => x.msgid)).size).toBe(2);
    expect(s.wecom.kfSession(KFID, "wmKill")?.sentSinceCustomer).toBe(2);
  }, 60_000);

  it("an app message is neither lost nor doubled for the member (WeCom's duplicate check)", async () => {
    const { file, appAddress } = await setup();
    const s = stack as Stack;
    s.wecom.setDelay("message/send", 10_000, "after");
    expect((await s.omni.sendAgentReply({ ToUserId: appAddress, MsgType: "text", Content: "工单已处理" })).reply).toMatchObject({ errcode: 0 });
    await eventually(() => s.wecom.sent.some((x) => x.api === "message/send"), 10_000, "WeCom took the message");
    children[0]?.kill("SIGKILL");
    await new Promise((r) => children[0]?.once("exit", r));
    s.wecom.setDelay("message/send", 0, "after");
    await serve(file);
    const sends = await eventually(() => {
      const list = s.wecom.sent.filter((x) => x.api === "message/send");
      return list.length >= 2 ? list : undefined;
    }, 15_000, "the resend after the restart");
    expect(sends.filter((x) => x.delivered)).toHaveLength(1);
    expect(sends[1]?.dropped).toBe("duplicate");
  }, 60_000);
});
