/**
 * The console's Playground on the sandbox's simulators: through its hooks only, a customer writes
 * on each channel, the agent desk sees it, the agent answers and the customer sees the answer;
 * every message crosses the bridge (callbacks, sync_msg, stream refreshes, staffService).
 */
import { request } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { PlaygroundChannel, PlaygroundLine, PlaygroundLog } from "../src/gateway/console/types.js";
import { runSandbox, type Sandbox } from "../src/sim/sandbox.js";

/** Poll `check` until it returns a value (not undefined/false), or fail after `ms`. */
async function until<T>(what: string, check: () => T | undefined | false, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe("playground", () => {
  let sandbox: Sandbox;
  let out = "";

  beforeAll(async () => {
    sandbox = await runSandbox({ write: (l) => (out += l), port: 0 });
  });

  afterAll(async () => {
    await sandbox?.stop();
  });

  const log = (c: PlaygroundChannel): PlaygroundLog => sandbox.playground.log(c);
  const ids = (lines: PlaygroundLine[]) => lines.map((l) => l.id);

  it("answers its console only under a loopback name (its admin token is public: no DNS rebinding)", async () => {
    const status = (hostHeader: string) =>
      new Promise<number>((resolve, reject) => {
        const u = new URL(`${sandbox.gateway.url}/console/api/session`);
        const r = request({ host: u.hostname, port: u.port, path: u.pathname, headers: { host: hostHeader } }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        r.on("error", reject);
        r.end();
      });
    const port = new URL(sandbox.gateway.url).port;
    expect(await status(`rebound.example:${port}`)).toBe(403);
    expect(await status("evil.example")).toBe(403);
    // not logged in, but let through
    expect(await status(`127.0.0.1:${port}`)).toBe(401);
    expect(await status(`localhost:${port}`)).toBe(401);
  });

  it("prints the console's URL and how to log in", () => {
    expect(out).toContain(`  console    ${sandbox.gateway.url}/console   (admin token: sandbox-admin-token)\n`);
    expect(sandbox.playground.info()).toEqual({
      enabled: true,
      channels: [
        { id: "kf", label: "微信客服 KF" },
        { id: "app", label: "自建应用 app" },
        { id: "bot", label: "智能机器人 bot" },
      ],
    });
  });

  it("refuses an answer before the customer wrote, and empty or oversized texts", async () => {
    for (const c of ["kf", "app", "bot"] as const) {
      await expect(sandbox.playground.agentSends(c, "您好")).rejects.toThrow("nobody to answer yet: write as the customer first");
    }
    await expect(sandbox.playground.customerSends("app", "")).rejects.toThrow(/empty/);
    await expect(sandbox.playground.customerSends("kf", "   ")).rejects.toThrow(/empty/);
    await expect(sandbox.playground.customerSends("bot", "字".repeat(2001))).rejects.toThrow(/too long/);
    await expect(sandbox.playground.customerSends("nope" as PlaygroundChannel, "hi")).rejects.toThrow(/unknown channel/);
    expect(log("app")).toEqual({ channel: "app", customer: [], agent: [] });
  });

  for (const channel of ["kf", "app"] as const) {
    it(`${channel}: the customer's message reaches the agent desk and the answer reaches the customer`, async () => {
      const question = `${channel} 我的订单什么时候发货？`;
      await sandbox.playground.customerSends(channel, question);
      const first = log(channel);
      expect(first.customer.map((l) => [l.from, l.text])).toEqual([["customer", question]]);
      const asked = await until("the agent desk to show the message", () => log(channel).agent.find((l) => l.text === question));
      expect(asked.from).toBe("customer");

      const answer = `${channel} 今天下午发货`;
      await sandbox.playground.agentSends(channel, answer);
      const got = await until("the customer to see the answer", () => log(channel).customer.find((l) => l.text === answer));
      expect(got.from).toBe("agent");
      const now = log(channel);
      expect(now.customer.map((l) => l.text)).toEqual([question, answer]);
      expect(now.agent.at(-1)).toMatchObject({ from: "agent", text: answer });
      expect(now.agent.some((l) => l.failed !== undefined)).toBe(false);
      // ids are stable between calls, and unique on each side
      expect(ids(log(channel).customer)).toEqual(ids(now.customer));
      expect(ids(log(channel).agent)).toEqual(ids(now.agent));
      expect(new Set(ids(now.customer)).size).toBe(now.customer.length);
      expect(new Set(ids(now.agent)).size).toBe(now.agent.length);
      // the messages really crossed the bridge
      const to = channel === "kf" ? "wmPLAYGROUND0001" : "playground";
      expect(sandbox.wecom.sent.some((x) => x.delivered && x.body.touser === to && (x.body.text as { content?: string } | undefined)?.content === answer)).toBe(true);
    });
  }

  it("kf: the customer entered the session once, before the first message", async () => {
    await sandbox.playground.customerSends("kf", "还有一个问题");
    await until("the second message at the agent desk", () => log("kf").agent.some((l) => l.text === "还有一个问题"));
    const fromPlayground = sandbox.omni.received.filter((r) => r.body.FromUserId.endsWith(":wmPLAYGROUND0001"));
    expect(fromPlayground.filter((r) => r.body.Content === "enter_session")).toHaveLength(1);
    expect(fromPlayground[0]?.body.Content).toBe("enter_session");
  });

  it("the same answer twice is sent twice (each answer has its own msgid)", async () => {
    await sandbox.playground.agentSends("app", "好的");
    await sandbox.playground.agentSends("app", "好的");
    await until("both answers at the customer", () => log("app").customer.filter((l) => l.text === "好的").length === 2);
  });

  it("bot: the answer is one streamed line that grows from the placeholder and ends finished", async () => {
    const question = "会议室还有空吗？";
    await sandbox.playground.customerSends("bot", question);
    const seen = log("bot");
    expect(seen.customer[0]).toMatchObject({ from: "customer", text: question });
    const stream = seen.customer[1];
    expect(stream).toMatchObject({ from: "agent", streaming: true, text: "正在为您转接人工客服…" });
    await until("the agent desk to show the message", () => log("bot").agent.some((l) => l.from === "customer" && l.text === question));

    const answer = "10 楼的小会议室下午有空";
    await sandbox.playground.agentSends("bot", answer);
    const done = await until("the stream to finish with the answer", () => {
      const l = log("bot").customer.find((x) => x.id === stream?.id);
      return l?.streaming !== true && l?.text === answer ? l : undefined;
    });
    expect(done.streaming).toBeUndefined();
    const after = log("bot");
    expect(after.customer).toHaveLength(2);
    expect(ids(after.customer)).toEqual(ids(log("bot").customer));

    // a second answer to the same message goes through its response_url: its own line
    await sandbox.playground.agentSends("bot", "需要我帮您预订吗？");
    await until("the response_url answer at the customer", () => log("bot").customer.find((l) => l.text === "需要我帮您预订吗？"));
    expect(log("bot").customer.map((l) => l.text)).toEqual([question, answer, "需要我帮您预订吗？"]);

    // the next message gets a stream (and a line) of its own
    await sandbox.playground.customerSends("bot", "谢谢");
    const lines = log("bot").customer;
    expect(lines).toHaveLength(5);
    expect(new Set(ids(lines)).size).toBe(5);
    expect(lines[4]).toMatchObject({ from: "agent", streaming: true });
  });
});
