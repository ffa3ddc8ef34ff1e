/**
 * The simulator's rule book against the gateway's own constants: both state WeCom's limits, and a
 * drift between them is a bug on one side. Also the table's own consistency.
 */
import { describe, expect, it } from "vitest";
import { WECOM_RULES, kfTransitionAllowed } from "../src/sim/wecom.js";
import { APP_TEXT_REPLY_MAX_BYTES } from "../src/wecom/app/encode.js";
import { BOT_STREAM_MAX_BYTES } from "../src/wecom/bot/encode.js";
import { KF_TEXT_MAX_BYTES } from "../src/wecom/kf/encode.js";

describe("WECOM_RULES", () => {
  it("agrees with the gateway's constants", () => {
    expect(WECOM_RULES.kf.textMaxBytes).toBe(KF_TEXT_MAX_BYTES);
    expect(WECOM_RULES.app.textMaxBytes).toBe(APP_TEXT_REPLY_MAX_BYTES);
    expect(WECOM_RULES.bot.streamMaxBytes).toBe(BOT_STREAM_MAX_BYTES);
    expect(WECOM_RULES.bot.responseUrl.maxBytes).toBe(BOT_STREAM_MAX_BYTES);
  });

  it("is consistent: transitions between known states, sendable states among them, nothing leaves 4", () => {
    const states = WECOM_RULES.kf.serviceStates as readonly number[];
    for (const from of WECOM_RULES.kf.serviceStates) {
      for (const to of WECOM_RULES.kf.transitions[from]) expect(states).toContain(to);
      expect(kfTransitionAllowed(from, 0)).toBe(false); // nobody moves a session back to "unhandled"
    }
    expect(WECOM_RULES.kf.transitions[4]).toEqual([]);
    for (const s of WECOM_RULES.kf.sendableStates) expect(states).toContain(s);
    expect(WECOM_RULES.kf.msgidPattern.test("x".repeat(WECOM_RULES.kf.msgidMaxBytes))).toBe(true);
    expect(WECOM_RULES.kf.msgidPattern.test("x".repeat(WECOM_RULES.kf.msgidMaxBytes + 1))).toBe(false);
    expect(WECOM_RULES.app.duplicateCheck.defaultIntervalMs).toBe(1800_000);
    expect(WECOM_RULES.bot.pollWindowMs).toBe(6 * 60_000);
  });
});
