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
      const { delivered } = await sandbox.script();
      expect(delivered).toBe(8);
      const channels = sandbox.omni.received.map((r) => r.body.FromUserId.split(":")[0]);
      expect(new Set(channels)).toEqual(new Set(["app", "kf", "bot", "archive"]));
      const ids = sandbox.omni.received.map((r) => (r.body.Tag as { id: string }).id);
      expect(new Set(ids).size).toBe(ids.length);
      expect(out).toContain("全媒体 <=");
      expect(out).toContain("stored     kf");
      expect(out).toContain("8 messages crossed the bridge, each once.");
      const image = sandbox.omni.received.find((r) => r.body.MsgType === "image");
      const res = await fetch(image?.body.Content as string);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toBe("image/png");
    } finally {
      await sandbox.stop();
    }
  }, 30_000);
});
