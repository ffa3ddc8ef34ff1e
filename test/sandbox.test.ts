/**
 * `npm start` with no config: the sandbox runs its scripted conversation through every channel,
 * and every message reaches the 全媒体 simulator exactly once.
 */
import { describe, expect, it } from "vitest";
import { runSandbox } from "../src/sim/sandbox.js";
import { freePort } from "./stack.js";

describe("sandbox", () => {
  it("carries a conversation through every channel, each message once, with a live log", async () => {
    let out = "";
    const sandbox = await runSandbox({ write: (l) => (out += l), port: await freePort() });
    try {
      const { delivered, answered } = await sandbox.script();
      expect(delivered).toBe(9);
      expect(answered).toBe(2);
      const customers = sandbox.omni.received.slice(0, delivered);
      const channels = customers.map((r) => r.body.FromUserId.split(":")[0]);
      expect(new Set(channels)).toEqual(new Set(["app", "kf", "bot", "archive"]));
      const ids = customers.map((r) => (r.body.Tag as { id: string }).id);
      expect(new Set(ids).size).toBe(ids.length);
      expect(out).toContain("全媒体 <=");
      expect(out).toContain("stored     kf");
      expect(out).toContain("9 messages crossed the bridge, each once.");
      // the bot in long-connection mode: the answer pushed in its stream, the late one sent on its own
      expect(out).toContain('aibot_respond_msg finish=true "您的快递已到驿站，"');
      expect(out).toMatch(/aibot_send_msg +sunqi +"取件码 3-2-1008"/);
      const image = sandbox.omni.received.find((r) => r.body.MsgType === "image");
      const res = await fetch(image?.body.Content as string);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toBe("image/png");
      // the way back: app and KF answers at WeCom, the bot's stream finished with the agent's text,
      // a refusal told to the agent (and the next message refused at once), a handoff
      expect(out).toMatch(/WeCom <= {3}message\/send +zhangsan +"您的报销单已转财务审批，今天内完成"/);
      expect(out).toMatch(/WeCom <= {3}kf\/send_msg +wmCUSTOMER0001 +"很抱歉给您带来不便，已为您登记换货"/);
      expect(out).toContain('finish=true "10 楼的小会议室下午有空，\\n\\n需要我帮您预订吗？"');
      const notice = sandbox.omni.received.find((r) => r.body.Content === "send_failed");
      expect(notice?.body.Tag).toMatchObject({ errcode: 95018, ref: "text: 退款已受理" });
      expect(out).toContain('"errcode":30009');
      expect(sandbox.omni.received.at(-1)?.body.MsgType).toBe("event.CLICK.RG");
    } finally {
      await sandbox.stop();
    }
  }, 30_000);
});
