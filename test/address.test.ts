/**
 * Conversation addresses: every address the decoders give real payloads parses back to itself,
 * and anything else is refused (the 全媒体 gets 30006 for it).
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodeAnyMessage, type DecodeFormat } from "../src/decode.js";
import { formatConversationAddress, parseConversationAddress } from "../src/wecom/address.js";
import { fixture, fixtureNames } from "./helpers.js";

const CORP = "ww1436e0e65a779aee";

describe("conversation addresses", () => {
  it("every address decoded from a fixture round-trips (or names an id the payload lacks)", () => {
    let checked = 0;
    for (const format of ["app", "kf", "bot", "archive"] as DecodeFormat[]) {
      for (const name of fixtureNames(format).filter((n) => !n.startsWith("reply-") && !n.startsWith("send_msg"))) {
        let messages: ReturnType<typeof decodeAnyMessage>;
        try {
          messages = decodeAnyMessage(format, fixture(format, name), { corpId: CORP });
        } catch {
          continue; // fixtures of malformed input
        }
        for (const m of messages) {
          const parsed = parseConversationAddress(m.conversationId);
          if (parsed === undefined) {
            // only an address with a part the payload did not carry may fail to parse
            expect(m.conversationId, `${format}/${name}`).toMatch(/::|:$|\|$|:\||^bot:[^:]*:user:$/);
            continue;
          }
          expect(formatConversationAddress(parsed), `${format}/${name}`).toBe(m.conversationId);
          checked++;
        }
      }
    }
    expect(checked).toBeGreaterThan(50);
  });

  it.each([
    ["app:ww1:1000002:zhangsan", { channel: "app", corpId: "ww1", agentId: 1000002, userId: "zhangsan" }],
    ["kf:ww1:wkAB_c:wmXY-z", { channel: "kf", corpId: "ww1", openKfId: "wkAB_c", externalUserId: "wmXY-z" }],
    ["kf:ww1:wkAB", { channel: "kf_account", corpId: "ww1", openKfId: "wkAB" }],
    ["bot:aibX:user:lisi", { channel: "bot", botId: "aibX", chat: "user", id: "lisi" }],
    ["bot:aibX:group:wrQ", { channel: "bot", botId: "aibX", chat: "group", id: "wrQ" }],
    ["archive:ww1:room:wrR", { channel: "archive", corpId: "ww1", room: "wrR" }],
    ["archive:ww1:a|b", { channel: "archive", corpId: "ww1", peers: ["a", "b"] }],
  ])("%s", (address, parsed) => {
    expect(parseConversationAddress(address)).toEqual(parsed);
  });

  it.each(["", "app", "app:ww1:0:u", "app:ww1:abc:u", "app:ww1:1:u:extra", "kf:ww1", "kf:ww1::wm", "bot:aib:channel:x", "bot:aib:user:", "archive:ww1:a|b|c", "sms:1:2:3", "toString", "__proto__:a:b:c", "app:ww1:1:u s", "kf:ww1:wk:wm\n"])("%j is not an address", (address) => {
    expect(parseConversationAddress(address)).toBeUndefined();
  });

  it("never throws, whatever the input", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 600 }), (s) => {
        const p = parseConversationAddress(s);
        if (p !== undefined) expect(formatConversationAddress(p)).toBe(s);
      }),
    );
  });
});
