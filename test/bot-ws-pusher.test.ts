/**
 * The long-connection pusher on its own (issue 9): a real SQLite store, a connection that never
 * answers, and the pusher's clock moved by the test, so that its backoff runs without waiting.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { AibotWsTimeoutError } from "../src/clients/aibot-ws.js";
import { parseConfig } from "../src/config.js";
import { botConversationKey, markBotWsWork } from "../src/gateway/outbound/bot.js";
import { BotWsPusher } from "../src/gateway/outbound/bot-ws.js";
import type { OmniNoticeJob } from "../src/gateway/outbound/types.js";
import { silentLogger } from "../src/log.js";
import { openStore } from "../src/store/index.js";
import type { Store } from "../src/store/types.js";

const TENANT = "ww1436e0e65a779aee";
const ADDR = "bot:aibLIVE:user:lisi";

let dir: string | undefined;
let store: Store | undefined;
afterEach(async () => {
  await store?.close();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  store = undefined;
  dir = undefined;
});

describe("the long-connection pusher", () => {
  it("gives a message up after 8 tries that got no answer (with backoff), tells the agent, and frees its conversation", async () => {
    dir = mkdtempSync(join(tmpdir(), "wb-pusher-"));
    const s = await openStore(`sqlite:${join(dir, "bridge.db")}`, { owner: true });
    store = s;
    const bot = parseConfig({
      publicUrl: "http://127.0.0.1:8080",
      store: "sqlite:./bridge.db",
      adminToken: "admin-token-0123456789",
      wecom: { corpId: TENANT, apps: [], bots: [{ name: "live", botId: "aibLIVE", mode: "websocket", secret: "s" }] },
      omni: { baseUrl: "http://127.0.0.1:9000", appId: "1001", secret: "omni-secret" },
    }).wecom.bots[0];
    if (bot === undefined) throw new Error("no bot");
    let clock = 1_800_000_000_000;
    // an agent message that can never be sent (WeCom never answers)
    await s.updateState(TENANT, botConversationKey(ADDR), ADDR, clock, () => ({
      value: { v: 1, streams: [], applied: [], waiting: [{ text: "第一条", entryId: 7, ref: "agent-1", serviceId: "svc-9" }] },
      expiresAt: clock + 86_400_000,
    }));
    await markBotWsWork(s, TENANT, "aibLIVE", ADDR, clock);
    let tries = 0;
    const link = {
      conn: "c1",
      respond: () => Promise.reject(new Error("no stream here")),
      send: () => {
        tries++;
        return Promise.reject(new AibotWsTimeoutError("aibot_send_msg", 10_000));
      },
    };
    const pusher = new BotWsPusher({ store: s, tenant: TENANT, bot, link: () => link, log: silentLogger, now: () => clock, tickMs: 3_600_000 });
    pusher.start();
    await pusher.idle();
    expect(tries).toBe(1);
    // a wake before the backoff is over tries nothing
    pusher.wake();
    await pusher.idle();
    expect(tries).toBe(1);
    for (let i = 0; i < 10 && tries < 8; i++) {
      clock += 61_000;
      pusher.wake();
      await pusher.idle();
    }
    expect(tries).toBe(8);
    await pusher.stop();
    const row = (await s.getState(TENANT, botConversationKey(ADDR), clock)) as { sending?: unknown; waiting: unknown[] };
    expect(row.sending).toBeUndefined();
    const notices = (await s.listOutbox(["pending"], { limit: 10 })).map((e) => (e.payload as OmniNoticeJob).notice);
    expect(notices).toEqual([
      expect.objectContaining({ FromUserId: ADDR, MsgType: "event", Content: "send_failed", ServiceId: "svc-9", Tag: expect.objectContaining({ ref: "agent-1", errmsg: expect.stringContaining("given up after 8 tries") }) }),
    ]);
  });
});
