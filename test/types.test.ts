/**
 * Type tests: checked by `tsc` (part of `npm test`), and run by vitest on real fixtures so the
 * narrowed values are also right at run time.
 */
import { describe, expect, expectTypeOf, it } from "vitest";
import {
  type AppEvent,
  type BotEvent,
  type Content,
  decodeAnyMessage,
  decodeAppXml,
  decodeArchivePush,
  decodeBotCallback,
  decodeKfItem,
  type KfEvent,
  type MediaRef,
  type MenuItem,
  type UnifiedMessage,
} from "../src/index.js";
import { fixture, jsonFixture } from "./helpers.js";

describe("narrowing on discriminators", () => {
  /** Type-level checks on any content; the run-time call below feeds it a real text message. */
  function narrowContent(c: Content): string {
    if (c.type === "image") {
      expectTypeOf(c.media).toEqualTypeOf<MediaRef>();
      // @ts-expect-error an image has no text
      c.text;
    }
    if (c.type === "menu") expectTypeOf(c.items).toEqualTypeOf<MenuItem[]>();
    if (c.type === "unknown") {
      expectTypeOf(c.msgType).toEqualTypeOf<string>();
      expectTypeOf(c.raw).toEqualTypeOf<unknown>();
    }
    if (c.type === "text") {
      expectTypeOf(c.text).toEqualTypeOf<string>();
      return c.text;
    }
    return "";
  }

  it("content.type narrows the content", () => {
    expect(narrowContent(decodeAppXml(fixture("app", "msg-text.xml")).content)).toContain("你好");
  });

  /** Type-level checks on any message; returns the KF welcome code when there is one. */
  function narrowMessage(m: UnifiedMessage): string | undefined {
    if (m.channel === "app") {
      expectTypeOf(m.msgId).toEqualTypeOf<string | undefined>();
      // @ts-expect-error only KF messages have an openKfId
      m.openKfId;
    }
    if (m.channel === "bot") {
      expectTypeOf(m.botId).toEqualTypeOf<string>();
      if (m.content.type === "stream_refresh") expectTypeOf(m.content.streamId).toEqualTypeOf<string>();
    }
    if (m.channel === "kf") {
      expectTypeOf(m.openKfId).toEqualTypeOf<string>();
      if (m.content.type === "event") {
        expectTypeOf(m.content.event).toEqualTypeOf<KfEvent>();
        if (m.content.event.name === "enter_session") {
          expectTypeOf(m.content.event.welcomeCode).toEqualTypeOf<string | undefined>();
          return m.content.event.welcomeCode;
        }
      }
    }
    return undefined;
  }

  it("channel narrows the message and its content union", () => {
    expect(narrowMessage(decodeKfItem(jsonFixture("kf", "event-enter_session.json")))).toBeTruthy();
    expect(narrowMessage(decodeAppXml(fixture("app", "msg-text.xml")))).toBeUndefined();
  });

  it("event.name narrows app events down to change types", () => {
    const m = decodeAppXml(fixture("app", "event-change_external_contact-transfer_fail.xml"));
    if (m.content.type !== "event") throw new Error("expected an event");
    const ev: AppEvent = m.content.event;
    if (ev.name === "change_external_contact" && ev.change.changeType === "transfer_fail") {
      expectTypeOf(ev.change.failReason).toEqualTypeOf<string>();
      expect(ev.change.failReason).toBeTruthy();
    } else {
      throw new Error("expected transfer_fail");
    }
    const other = (e: AppEvent) => {
      if (e.name === "kf_msg_or_event") expectTypeOf(e.token).toEqualTypeOf<string>();
      if (e.name === "unknown") expectTypeOf(e.eventName).toEqualTypeOf<string>();
    };
    other(ev);
  });

  it("bot events and archive pushes narrow", () => {
    const b = decodeBotCallback(fixture("bot", "event-template_card_event.json"));
    if (b.content.type === "event") {
      const ev: BotEvent = b.content.event;
      if (ev.name === "template_card_event") {
        expectTypeOf(ev.selectedItems).toEqualTypeOf<{ questionKey: string; optionIds: string[] }[]>();
        expect(ev.taskId).toBeTruthy();
      } else {
        throw new Error("expected template_card_event");
      }
    }
    const p = decodeArchivePush(fixture("archive", "seed-file.json"));
    if (p.kind === "record") {
      expectTypeOf(p.message.seq).toEqualTypeOf<number | undefined>();
      expect(p.message.seq).toBe(25825);
    } else {
      expectTypeOf(p.pushType).toEqualTypeOf<number>();
      throw new Error("expected a record");
    }
  });

  it("decodeAnyMessage returns the unified union", () => {
    expectTypeOf(decodeAnyMessage).returns.toEqualTypeOf<UnifiedMessage[]>();
    expect(decodeAnyMessage("app", fixture("app", "msg-text.xml"))[0]?.channel).toBe("app");
  });
});
