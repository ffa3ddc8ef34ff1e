import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  BridgeError,
  DecodeError,
  decodeKfItem,
  decodeKfSyncMsg,
  EncodeError,
  KF_EVENT_TYPES,
  encodeKfSendMsg,
  encodeKfSendMsgOnEvent,
  encodeKfSyncMsgRequest,
  KF_TEXT_MAX_BYTES,
  type KfMessage,
  type KfSendContent,
  type KfSendMsgOnEventInput,
  type MenuItem,
  type StructuredKind,
} from "../src/index.js";
import type { JsonObject } from "../src/wecom/fields.js";
import { fixtureNames, jsonFixture } from "./helpers.js";

const CORP = "ww8a1b2c3d4e5f6a7b";
const KFID = "wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q";
const EXT = "wmAJ2GCAAAme1XQRC-NI-q0_ZM9ukoAw";

/** A KF fixture, parsed. */
const kf = (name: string): JsonObject => jsonFixture<JsonObject>("kf", name);
/** Decode one item fixture with the test CorpID. */
const decodeFixture = (name: string): KfMessage => decodeKfItem(kf(name), { corpId: CORP });

/** A nested value of a parsed fixture. */
function at(value: unknown, ...path: (string | number)[]): unknown {
  let v = value;
  for (const k of path) {
    if (typeof v !== "object" || v === null) throw new Error(`fixture has no ${path.join(".")}`);
    v = (v as Record<string | number, unknown>)[k];
  }
  return v;
}

/** A nested string of a parsed fixture (fails the test when it is not a string). */
function str(value: unknown, ...path: (string | number)[]): string {
  const v = at(value, ...path);
  if (typeof v !== "string") throw new Error(`fixture ${path.join(".")} is not a string`);
  return v;
}

/** A nested number of a parsed fixture. */
function num(value: unknown, ...path: (string | number)[]): number {
  const v = at(value, ...path);
  if (typeof v !== "number") throw new Error(`fixture ${path.join(".")} is not a number`);
  return v;
}

/** Expect fn to throw an error of this class with this code; returns the error. */
function expectThrow<T extends BridgeError>(fn: () => unknown, cls: new (...args: never[]) => T, code: string): T {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(cls);
    expect((e as T).code).toBe(code);
    return e as T;
  }
  throw new Error(`expected ${cls.name} ${code}, nothing was thrown`);
}

const expectDecodeError = (fn: () => unknown) => expectThrow(fn, DecodeError, "decode_malformed");
const expectEncodeError = (fn: () => unknown) => expectThrow(fn, EncodeError, "encode_invalid");

// ---------------------------------------------------------------- table of every item fixture

type Expected =
  | { type: "text" | "image" | "voice" | "video" | "file" | "location" | "link" | "business_card" | "miniprogram" | "menu" | "chat_record" }
  | { type: "structured"; kind: StructuredKind }
  | { type: "event"; name: string }
  | { type: "unknown"; msgType: string }
  | { type: "unknown_event"; eventName: string };

const STRUCTURED_KINDS: readonly string[] = ["channels_shop_product", "channels_shop_order", "channels", "meeting", "schedule", "note"];
const RENAMED: Record<string, Expected["type"]> = { msgmenu: "menu", merged_msg: "chat_record" };

/** The expected discriminator, derived from the file name (`msg-<msgtype>[-variant]`, `event-<event_type>`). */
function expectedFromName(name: string): Expected {
  const stem = name.replace(/\.json$/, "");
  if (stem === "unknown-msgtype") return { type: "unknown", msgType: "channels_live" };
  if (stem === "unknown-event") return { type: "unknown_event", eventName: "customer_acquisition_link_enter_session" };
  if (stem.startsWith("event-")) return { type: "event", name: stem.slice("event-".length) };
  const msgtype = stem.slice("msg-".length).replace(/-servicer$/, "");
  if (STRUCTURED_KINDS.includes(msgtype)) return { type: "structured", kind: msgtype as StructuredKind };
  return { type: RENAMED[msgtype] ?? msgtype } as Expected;
}

/** Every item fixture this suite knows; a new fixture must be added here. */
const KF_ITEM_FIXTURES: Record<string, Expected> = {
  "event-enter_session.json": { type: "event", name: "enter_session" },
  "event-msg_send_fail.json": { type: "event", name: "msg_send_fail" },
  "event-reject_customer_msg_switch_change.json": { type: "event", name: "reject_customer_msg_switch_change" },
  "event-servicer_recall_msg.json": { type: "event", name: "servicer_recall_msg" },
  "event-servicer_status_change.json": { type: "event", name: "servicer_status_change" },
  "event-session_status_change.json": { type: "event", name: "session_status_change" },
  "event-user_recall_msg.json": { type: "event", name: "user_recall_msg" },
  "msg-business_card.json": { type: "business_card" },
  "msg-channels.json": { type: "structured", kind: "channels" },
  "msg-channels_shop_order.json": { type: "structured", kind: "channels_shop_order" },
  "msg-channels_shop_product.json": { type: "structured", kind: "channels_shop_product" },
  "msg-file.json": { type: "file" },
  "msg-image.json": { type: "image" },
  "msg-link.json": { type: "link" },
  "msg-location.json": { type: "location" },
  "msg-meeting.json": { type: "structured", kind: "meeting" },
  "msg-merged_msg.json": { type: "chat_record" },
  "msg-miniprogram.json": { type: "miniprogram" },
  "msg-msgmenu.json": { type: "menu" },
  "msg-note.json": { type: "structured", kind: "note" },
  "msg-schedule.json": { type: "structured", kind: "schedule" },
  "msg-text-servicer.json": { type: "text" },
  "msg-text.json": { type: "text" },
  "msg-video.json": { type: "video" },
  "msg-voice.json": { type: "voice" },
  "unknown-event.json": { type: "unknown_event", eventName: "customer_acquisition_link_enter_session" },
  "unknown-msgtype.json": { type: "unknown", msgType: "channels_live" },
};

const itemFixtureNames = () => fixtureNames("kf").filter((n) => /^(msg|event|unknown)-/.test(n));

describe("KF fixtures: table", () => {
  it("covers every msg-/event-/unknown- fixture in test/fixtures/kf", () => {
    const names = itemFixtureNames();
    expect(names.length).toBeGreaterThanOrEqual(27);
    expect(Object.keys(KF_ITEM_FIXTURES).sort()).toEqual(names);
  });

  it.each(Object.keys(KF_ITEM_FIXTURES))("%s: the table agrees with the file name and the fixture's msgtype", (name) => {
    expect(KF_ITEM_FIXTURES[name]).toEqual(expectedFromName(name));
    const item = kf(name);
    const stem = name.replace(/\.json$/, "");
    if (stem.startsWith("event-")) {
      expect(item.msgtype).toBe("event");
      expect(at(item, "event", "event_type")).toBe(stem.slice("event-".length));
    } else if (stem.startsWith("msg-")) {
      expect(stem.slice("msg-".length).startsWith(str(item, "msgtype"))).toBe(true);
    }
  });

  it.each(Object.entries(KF_ITEM_FIXTURES))("%s decodes to the expected discriminator", (name, want) => {
    const item = kf(name);
    const m = decodeKfItem(item, { corpId: CORP });
    expect(m.channel).toBe("kf");
    expect(m.id).toBe(str(item, "msgid"));
    expect(m.time).toBe(num(item, "send_time") * 1000);
    expect(m.raw).toBe(item);
    const c = m.content;
    switch (want.type) {
      case "event":
        expect(c.type).toBe("event");
        if (c.type === "event") expect(c.event.name).toBe(want.name);
        break;
      case "unknown_event":
        expect(c).toStrictEqual({ type: "event", event: { name: "unknown", eventName: want.eventName, raw: item } });
        if (c.type === "event" && c.event.name === "unknown") expect(c.event.raw).toBe(item);
        break;
      case "unknown":
        expect(c).toStrictEqual({ type: "unknown", msgType: want.msgType, raw: item });
        if (c.type === "unknown") expect(c.raw).toBe(item);
        break;
      case "structured":
        expect(c.type).toBe("structured");
        if (c.type === "structured") {
          expect(c.kind).toBe(want.kind);
          expect(c.fields).toStrictEqual(item[want.kind]);
          expect(typeof c.title).toBe("string");
        }
        break;
      default:
        expect(c.type).toBe(want.type);
    }
  });
});

// ---------------------------------------------------------------- field level

describe("KF decode: message fields", () => {
  it("text with menu_id", () => {
    expect(decodeFixture("msg-text.json").content).toStrictEqual({ type: "text", text: "满意", menuId: "101" });
  });

  it("an empty menu_id is no menuId", () => {
    const item = { ...kf("msg-text.json"), text: { content: "hi", menu_id: "" } };
    expect(decodeKfItem(item).content).toStrictEqual({ type: "text", text: "hi" });
  });

  it("text without menu_id has no menuId", () => {
    const f = kf("msg-text-servicer.json");
    expect(decodeFixture("msg-text-servicer.json").content).toStrictEqual({ type: "text", text: str(f, "text", "content") });
  });

  it.each(["image", "voice", "video", "file"] as const)("%s carries its media_id", (t) => {
    const f = kf(`msg-${t}.json`);
    const mediaId = str(f, t, "media_id");
    expect(mediaId.length).toBeGreaterThan(10);
    expect(decodeFixture(`msg-${t}.json`).content).toStrictEqual({ type: t, media: { mediaId } });
  });

  it("location keeps the numbers and names", () => {
    expect(decodeFixture("msg-location.json").content).toStrictEqual({
      type: "location",
      latitude: 23.1060218811035,
      longitude: 113.320503234863,
      name: "广州国际媒体港(广州市海珠区)",
      address: "广东省广州市海珠区滨江东路",
    });
  });

  it("location given as numeric strings still gives numbers", () => {
    const item = { ...kf("msg-location.json"), location: { latitude: "23.5", longitude: "-113.25" } };
    expect(decodeKfItem(item).content).toStrictEqual({ type: "location", latitude: 23.5, longitude: -113.25 });
  });

  it("link maps desc and pic_url", () => {
    const f = kf("msg-link.json");
    expect(decodeFixture("msg-link.json").content).toStrictEqual({
      type: "link",
      title: "企业如何增长？企业微信给出3个答案",
      description: "今年中秋节公司有豪礼相送",
      url: str(f, "link", "url"),
      picUrl: str(f, "link", "pic_url"),
    });
  });

  it("business card userid", () => {
    expect(decodeFixture("msg-business_card.json").content).toStrictEqual({ type: "business_card", userId: "lisi" });
  });

  it("miniprogram fields", () => {
    expect(decodeFixture("msg-miniprogram.json").content).toStrictEqual({
      type: "miniprogram",
      title: "欢迎报名夏令营",
      appId: "wx8bd80126147dfAAA",
      pagePath: "pages/index/index.html?from=kf",
      thumbMediaId: "3LuBPM1ylj3fGb6QlEVVZ8wN9dZ0xfH4CqxrRkQF8bGo",
    });
  });

  it("msgmenu: head, click ×2, view, miniprogram, tail", () => {
    expect(decodeFixture("msg-msgmenu.json").content).toStrictEqual({
      type: "menu",
      head: "您对本次服务是否满意呢? ",
      items: [
        { type: "click", id: "101", content: "满意" },
        { type: "click", id: "102", content: "不满意" },
        { type: "view", url: "https://work.weixin.qq.com", content: "点击跳转到自助查询页面" },
        {
          type: "miniprogram",
          appId: "wx123123123123123",
          pagePath: "pages/index?userid=zhangsan&orderid=123123123",
          content: "点击打开小程序查询更多",
        },
      ],
      tail: "欢迎再次光临",
    });
  });

  it("msgmenu: text items (no_newline) and unknown item kinds", () => {
    const weird = { type: "hologram", hologram: { content: "x" } };
    const item = {
      ...kf("msg-msgmenu.json"),
      msgmenu: {
        list: [
          { type: "text", text: { content: "line", no_newline: 1 } },
          { type: "text", text: { content: "plain" } },
          weird,
          "not an object",
          { type: "click" },
        ],
      },
    };
    const c = decodeKfItem(item).content;
    expect(c).toStrictEqual({
      type: "menu",
      items: [
        { type: "text", content: "line", noNewline: true },
        { type: "text", content: "plain" },
        { type: "unknown", raw: weird },
        { type: "unknown", raw: "not an object" },
        { type: "unknown", raw: { type: "click" } },
      ],
    });
  });

  it("merged_msg: title and items with msg_content parsed from its JSON string", () => {
    expect(decodeFixture("msg-merged_msg.json").content).toStrictEqual({
      type: "chat_record",
      title: "张三和李四的聊天记录",
      items: [
        { type: "text", time: 1716342000000, sender: "张三", content: { text: { content: "订单什么时候发货？" } } },
        { type: "text", time: 1716342060000, sender: "李四", content: { text: { content: "预计明天上午发出" } } },
        {
          type: "image",
          time: 1716342100000,
          sender: "张三",
          content: { image: { media_id: "2iSLeVyqzk4eX0IB5kTi9Ljfa2rt9dwfq5WKRQ4Nvvgx" } },
        },
      ],
    });
  });

  it("merged_msg: a numeric msgtype and a msg_content that is not JSON are kept", () => {
    const item = {
      ...kf("msg-merged_msg.json"),
      merged_msg: { item: [{ send_time: 1, msgtype: 1, sender_name: "A", msg_content: "not json {" }] },
    };
    expect(decodeKfItem(item).content).toStrictEqual({
      type: "chat_record",
      items: [{ type: "1", time: 1000, sender: "A", content: "not json {" }],
    });
  });

  it("structured kinds keep their fields and a readable title", () => {
    const titleOf = (name: string) => {
      const c = decodeFixture(name).content;
      if (c.type !== "structured") throw new Error(`${name} is ${c.type}`);
      return c.title;
    };
    expect(titleOf("msg-channels_shop_product.json")).toBe("夏季新款纯棉短袖T恤 男女同款");
    expect(titleOf("msg-channels_shop_order.json")).toBe("夏季新款纯棉短袖T恤 男女同款");
    expect(titleOf("msg-channels.json")).toBe("三分钟了解微信客服");
    expect(titleOf("msg-meeting.json")).toBe("hy8zVQBwAAx4cLkQ9vGm3ZsXJpRt2nWq");
    expect(titleOf("msg-schedule.json")).toBe("17c7d2bd9f20d652840f72f59e796AAA");
    expect(titleOf("msg-note.json")).toBe("");
    const product = decodeFixture("msg-channels_shop_product.json").content;
    expect(product).toMatchObject({ type: "structured", fields: { product_id: "10000040328013", sales_price: "9900" } });
  });
});

describe("KF decode: event fields", () => {
  it("enter_session: scene, scene_param, welcome_code, wechat_channels", () => {
    expect(decodeFixture("event-enter_session.json").content).toStrictEqual({
      type: "event",
      event: {
        name: "enter_session",
        openKfId: KFID,
        externalUserId: EXT,
        scene: "spring_sale",
        sceneParam: "utm_source=mp&order=3705115058471208928",
        welcomeCode: "aZjJ8kqV3Xb2mLr7Tn0Wc5Yd9Eu1Gh4Pf6Qs-KoIxAw",
        wechatChannels: { nickname: "企业微信", scene: 1 },
      },
    });
  });

  it("enter_session: shop_nickname of wechat_channels", () => {
    const item = kf("event-enter_session.json");
    const ev = { ...(item.event as JsonObject), wechat_channels: { shop_nickname: "小企的好物小店", scene: 4 } };
    expect(decodeKfItem({ ...item, event: ev }).content).toMatchObject({
      event: { wechatChannels: { shopNickname: "小企的好物小店", scene: 4 } },
    });
  });

  it("msg_send_fail: fail_msgid and fail_type", () => {
    expect(decodeFixture("event-msg_send_fail.json").content).toStrictEqual({
      type: "event",
      event: { name: "msg_send_fail", openKfId: KFID, externalUserId: EXT, failMsgId: "wb-20240522-7f3c2a9e41d84b0c", failType: 10 },
    });
  });

  it("servicer_status_change: status and stop_type", () => {
    expect(decodeFixture("event-servicer_status_change.json").content).toStrictEqual({
      type: "event",
      event: { name: "servicer_status_change", openKfId: KFID, servicerUserId: "zhangsan", status: 2, stopType: 1 },
    });
  });

  it("session_status_change: change_type, msg_code, old servicer; an empty new servicer is absent", () => {
    expect(decodeFixture("event-session_status_change.json").content).toStrictEqual({
      type: "event",
      event: {
        name: "session_status_change",
        openKfId: KFID,
        externalUserId: EXT,
        changeType: 3,
        oldServicerUserId: "zhangsan",
        msgCode: "MSG_CODE_5nB8vR2xQ7kL0pW4tY9eA3sD6fG1hJ",
      },
    });
  });

  it("session_status_change: a transfer carries both servicers", () => {
    const item = kf("event-session_status_change.json");
    const ev = { ...(item.event as JsonObject), change_type: 2, new_servicer_userid: "lisi", msg_code: undefined };
    expect(decodeKfItem({ ...item, event: ev }).content).toStrictEqual({
      type: "event",
      event: {
        name: "session_status_change",
        openKfId: KFID,
        externalUserId: EXT,
        changeType: 2,
        oldServicerUserId: "zhangsan",
        newServicerUserId: "lisi",
      },
    });
  });

  it("user_recall_msg: recall_msgid", () => {
    expect(decodeFixture("event-user_recall_msg.json").content).toStrictEqual({
      type: "event",
      event: { name: "user_recall_msg", openKfId: KFID, externalUserId: EXT, recallMsgId: "from_msgid_4622416642169452484" },
    });
  });

  it("servicer_recall_msg: recall_msgid and servicer", () => {
    expect(decodeFixture("event-servicer_recall_msg.json").content).toStrictEqual({
      type: "event",
      event: {
        name: "servicer_recall_msg",
        openKfId: KFID,
        externalUserId: EXT,
        recallMsgId: "from_msgid_4622416642169452501",
        servicerUserId: "lisi",
      },
    });
  });

  it("reject_customer_msg_switch_change: servicer and reject_switch", () => {
    expect(decodeFixture("event-reject_customer_msg_switch_change.json").content).toStrictEqual({
      type: "event",
      event: {
        name: "reject_customer_msg_switch_change",
        openKfId: KFID,
        externalUserId: EXT,
        servicerUserId: "zhangsan",
        rejectSwitch: 1,
      },
    });
  });

  it("unknown event keeps event_type and the raw item", () => {
    const item = kf("unknown-event.json");
    const m = decodeKfItem(item, { corpId: CORP });
    expect(m.content).toStrictEqual({
      type: "event",
      event: { name: "unknown", eventName: "customer_acquisition_link_enter_session", raw: item },
    });
    expect(m.openKfId).toBe(KFID);
    expect(m.externalUserId).toBe(EXT);
  });
});

describe("KF decode: origin, addresses, ids, time", () => {
  it("origin 3: the customer sends to the KF account, even when servicer_userid is present", () => {
    const m = decodeFixture("msg-text.json");
    expect(m.origin).toBe("customer");
    expect(m.originCode).toBe(3);
    expect(m.from).toStrictEqual({ kind: "external", id: EXT });
    expect(m.to).toStrictEqual([{ kind: "kf_account", id: KFID }]);
    expect(m.servicerUserId).toBe("zhangsan");
    expect(m.openKfId).toBe(KFID);
    expect(m.externalUserId).toBe(EXT);
  });

  it("origin 5: the servicer sends to the customer", () => {
    const m = decodeFixture("msg-text-servicer.json");
    expect(m.origin).toBe("servicer");
    expect(m.originCode).toBe(5);
    expect(m.from).toStrictEqual({ kind: "servicer", id: "lisi" });
    expect(m.to).toStrictEqual([{ kind: "external", id: EXT }]);
  });

  it("origin 4: events come from the system and take open_kfid/external_userid from inside event", () => {
    const item = kf("event-enter_session.json");
    expect(item.open_kfid).toBeUndefined();
    expect(item.external_userid).toBeUndefined();
    const m = decodeKfItem(item, { corpId: CORP });
    expect(m.origin).toBe("system");
    expect(m.originCode).toBe(4);
    expect(m.from).toStrictEqual({ kind: "system", id: "sys" });
    expect(m.to).toStrictEqual([{ kind: "kf_account", id: KFID }]);
    expect(m.openKfId).toBe(KFID);
    expect(m.externalUserId).toBe(EXT);
    expect(m.conversationId).toBe(`kf:${CORP}:${KFID}:${EXT}`);
  });

  it("servicer events take servicer_userid from inside event", () => {
    const m = decodeFixture("event-servicer_status_change.json");
    expect(m.servicerUserId).toBe("zhangsan");
    expect(m.openKfId).toBe(KFID);
    expect(m.externalUserId).toBeUndefined();
    // account-level: the account's own address, never a customer-less customer address
    expect(m.conversationId).toBe(`kf:${CORP}:${KFID}`);
  });

  it("an unexpected origin is 'unknown' with its code kept", () => {
    const m = decodeKfItem({ ...kf("msg-text.json"), origin: 9 });
    expect(m.origin).toBe("unknown");
    expect(m.originCode).toBe(9);
  });

  it.each(itemFixtureNames())("%s: id is msgid, time is send_time × 1000, conversationId uses the context's corpId", (name) => {
    const item = kf(name);
    const m = decodeKfItem(item, { corpId: CORP });
    expect(m.id).toBe(str(item, "msgid"));
    expect(m.time).toBe(num(item, "send_time") * 1000);
    expect(m.corpId).toBe(CORP);
    const ext = (item.external_userid as string | undefined) ?? (at(item, "event", "external_userid") as string | undefined) ?? "";
    expect(m.conversationId).toBe(ext ? `kf:${CORP}:${KFID}:${ext}` : `kf:${CORP}:${KFID}`);
  });

  it("the conversationId changes with the corpId", () => {
    const a = decodeKfItem(kf("msg-text.json"), { corpId: "wwA" });
    const b = decodeKfItem(kf("msg-text.json"), { corpId: "wwB" });
    expect(a.conversationId).toBe(`kf:wwA:${KFID}:${EXT}`);
    expect(b.conversationId).toBe(`kf:wwB:${KFID}:${EXT}`);
    expect(decodeKfItem(kf("msg-text.json")).corpId).toBeUndefined();
  });
});

// ---------------------------------------------------------------- sync_msg

describe("KF decodeKfSyncMsg", () => {
  it("decodes the response: cursor, has_more, messages in order", () => {
    const r = decodeKfSyncMsg(kf("sync_msg-response.json"), { corpId: CORP });
    expect(r.errcode).toBe(0);
    expect(r.errmsg).toBe("ok");
    expect(r.nextCursor).toBe("4gw7MepFLfgF2VC5npN");
    expect(r.hasMore).toBe(true);
    expect(r.messages.map((m) => m.id)).toEqual([
      "from_msgid_4622416642169452483",
      "from_msgid_4622416642169452484",
      "from_msgid_4622416642169452485",
    ]);
    expect(r.messages.map((m) => m.content.type)).toEqual(["event", "text", "image"]);
    expect(r.messages[0]).toStrictEqual(decodeFixture("event-enter_session.json"));
    expect(r.messages[1]).toStrictEqual(decodeFixture("msg-text.json"));
    expect(r.messages[2]).toStrictEqual(decodeFixture("msg-image.json"));
  });

  it("accepts the response as text", () => {
    const obj = kf("sync_msg-response.json");
    const fromText = decodeKfSyncMsg(JSON.stringify(obj), { corpId: CORP });
    expect(fromText).toStrictEqual(decodeKfSyncMsg(obj, { corpId: CORP }));
    expect(fromText.messages).toHaveLength(3);
  });

  it("has_more 1 with an empty msg_list", () => {
    const r = decodeKfSyncMsg(kf("sync_msg-empty-has_more.json"));
    expect(r.hasMore).toBe(true);
    expect(r.messages).toEqual([]);
    expect(r.nextCursor).toBe("4gw7MepFLfgF2VC5npO");
  });

  it("has_more 0 is false", () => {
    expect(decodeKfSyncMsg({ ...kf("sync_msg-empty-has_more.json"), has_more: 0 }).hasMore).toBe(false);
  });

  it("an error response: errcode 95000, no messages, no cursor", () => {
    const r = decodeKfSyncMsg(kf("sync_msg-error.json"));
    expect(r.errcode).toBe(95000);
    expect(r.errmsg).toMatch(/^invalid open_kfid/);
    expect(r.messages).toEqual([]);
    expect(r.hasMore).toBe(false);
    expect(r.nextCursor).toBeUndefined();
  });

  it.each([
    ["not JSON", "{not json"],
    ["a JSON array", "[]"],
    ["a JSON string", '"msg_list"'],
    ["msg_list not an array", '{"errcode":0,"msg_list":{"msgid":"1"}}'],
    ["msg_list of a non-object", '{"errcode":0,"msg_list":[42]}'],
    ["an item missing msgid", '{"errcode":0,"msg_list":[{"msgtype":"text","text":{"content":"hi"}}]}'],
    ["an item missing msgtype", '{"errcode":0,"msg_list":[{"msgid":"m1"}]}'],
  ])("%s throws DecodeError", (_what, text) => {
    const e = expectDecodeError(() => decodeKfSyncMsg(text));
    expect(e.format).toBe("kf");
  });

  it("decodeKfItem without msgid throws DecodeError", () => {
    const { msgid: _drop, ...rest } = kf("msg-text.json");
    expectDecodeError(() => decodeKfItem(rest));
  });
});

// ---------------------------------------------------------------- encoders

interface SendFixture {
  touser: string;
  open_kfid: string;
  msgid: string;
  msgtype: string;
  [body: string]: unknown;
}

type MenuFixtureItem =
  | { type: "click"; click: { id: string; content: string } }
  | { type: "view"; view: { url: string; content: string } }
  | { type: "miniprogram"; miniprogram: { appid: string; pagepath: string; content: string } };

interface MenuFixture {
  head_content?: string;
  list: MenuFixtureItem[];
  tail_content?: string;
}

function menuFromFixture(m: MenuFixture): Extract<KfSendContent, { type: "menu" }> {
  const items = m.list.map((it): Exclude<MenuItem, { type: "unknown" }> => {
    switch (it.type) {
      case "click":
        return { type: "click", id: it.click.id, content: it.click.content };
      case "view":
        return { type: "view", url: it.view.url, content: it.view.content };
      default:
        return { type: "miniprogram", appId: it.miniprogram.appid, pagePath: it.miniprogram.pagepath, content: it.miniprogram.content };
    }
  });
  return { type: "menu", head: m.head_content, items, tail: m.tail_content };
}

/** The send content that should encode to a send_msg fixture, built from the fixture's own values. */
function contentFromFixture(f: SendFixture): KfSendContent {
  const b = f[f.msgtype] as Record<string, unknown>;
  const s = (k: string) => b[k] as string;
  switch (f.msgtype) {
    case "text":
      return { type: "text", text: s("content") };
    case "image":
    case "voice":
    case "video":
    case "file":
      return { type: f.msgtype, mediaId: s("media_id") };
    case "link":
      return { type: "link", title: s("title"), description: s("desc"), url: s("url"), thumbMediaId: s("thumb_media_id") };
    case "miniprogram":
      return { type: "miniprogram", appId: s("appid"), title: s("title"), thumbMediaId: s("thumb_media_id"), pagePath: s("pagepath") };
    case "msgmenu":
      return menuFromFixture(b as unknown as MenuFixture);
    case "location":
      return { type: "location", latitude: b.latitude as number, longitude: b.longitude as number, name: s("name"), address: s("address") };
    default:
      throw new Error(`no content for ${f.msgtype}`);
  }
}

const SEND_FIXTURES = ["text", "image", "voice", "video", "file", "link", "miniprogram", "msgmenu", "location"];

describe("KF encodeKfSendMsg", () => {
  it("has an expectation for every send_msg request fixture", () => {
    const names = fixtureNames("kf", "send_msg-").filter((n) => n !== "send_msg-response.json");
    expect(names).toEqual(SEND_FIXTURES.map((t) => `send_msg-${t}.json`).sort());
  });

  it.each(SEND_FIXTURES)("%s equals send_msg-%s.json", (t) => {
    const f = jsonFixture<SendFixture>("kf", `send_msg-${t}.json`);
    const out = encodeKfSendMsg({ toUser: f.touser, openKfId: f.open_kfid, msgId: f.msgid, content: contentFromFixture(f) });
    expect(out).toStrictEqual(f);
  });

  it("omits msgid when not given, and optional fields when absent", () => {
    expect(encodeKfSendMsg({ toUser: EXT, openKfId: KFID, content: { type: "link", title: "t", url: "https://x", thumbMediaId: "m" } })).toStrictEqual({
      touser: EXT,
      open_kfid: KFID,
      msgtype: "link",
      link: { title: "t", url: "https://x", thumb_media_id: "m" },
    });
  });

  it("menu text items encode no_newline as 0/1", () => {
    const out = encodeKfSendMsg({
      toUser: EXT,
      openKfId: KFID,
      content: {
        type: "menu",
        items: [
          { type: "text", content: "a", noNewline: true },
          { type: "text", content: "b", noNewline: false },
          { type: "text", content: "c" },
        ],
      },
    });
    expect(out.msgmenu).toStrictEqual({
      list: [
        { type: "text", text: { content: "a", no_newline: 1 } },
        { type: "text", text: { content: "b", no_newline: 0 } },
        { type: "text", text: { content: "c" } },
      ],
    });
  });

  const send = (content: KfSendContent, msgId?: string) => encodeKfSendMsg({ toUser: EXT, openKfId: KFID, msgId, content });

  it("text of exactly 2048 UTF-8 bytes passes, 2049 fails (bytes, not characters)", () => {
    expect(KF_TEXT_MAX_BYTES).toBe(2048);
    const ok = "你".repeat(682) + "ab"; // 682 × 3 + 2 = 2048 bytes, 684 chars
    expect(Buffer.byteLength(ok)).toBe(2048);
    expect(send({ type: "text", text: ok }).text).toStrictEqual({ content: ok });
    const tooLong = "你".repeat(683); // 2049 bytes, 683 chars
    expect(Buffer.byteLength(tooLong)).toBe(2049);
    expect(tooLong.length).toBeLessThan(2048);
    const e = expectEncodeError(() => send({ type: "text", text: tooLong }));
    expect(e.message).toContain("2049");
    expect(e.format).toBe("kf");
  });

  it("empty text fails", () => {
    expectEncodeError(() => send({ type: "text", text: "" }));
  });

  it("msgid: 32 characters of [0-9a-zA-Z_-] pass; 33, a dot or empty fail", () => {
    const id32 = "a".repeat(16) + "_-0123456789ABCD";
    expect(id32).toHaveLength(32);
    expect(send({ type: "text", text: "hi" }, id32).msgid).toBe(id32);
    expectEncodeError(() => send({ type: "text", text: "hi" }, `${id32}Z`));
    expectEncodeError(() => send({ type: "text", text: "hi" }, "out.1"));
    expectEncodeError(() => send({ type: "text", text: "hi" }, "out 1"));
    expectEncodeError(() => send({ type: "text", text: "hi" }, ""));
  });

  it("touser, open_kfid and media_id are required", () => {
    expectEncodeError(() => encodeKfSendMsg({ toUser: "", openKfId: KFID, content: { type: "text", text: "hi" } }));
    expectEncodeError(() => encodeKfSendMsg({ toUser: EXT, openKfId: "", content: { type: "text", text: "hi" } }));
    expectEncodeError(() => send({ type: "image", mediaId: "" }));
  });
});

describe("KF send field limits (bytes, as the send_msg documentation gives them)", () => {
  const send = (content: KfSendContent) => () => encodeKfSendMsg({ toUser: EXT, openKfId: KFID, content });
  const link = (over: Partial<Extract<KfSendContent, { type: "link" }>>): KfSendContent => ({
    type: "link",
    title: "t",
    url: "https://example.com",
    thumbMediaId: "MEDIA",
    ...over,
  });

  it("link: title ≤ 128, desc ≤ 512, url ≤ 2048 bytes, a thumb_media_id", () => {
    expect(send(link({ title: "标".repeat(42) + "ab" }))).not.toThrow(); // 128 bytes
    expect(send(link({ title: "标".repeat(43) }))).toThrow(/link title/); // 129 bytes
    expect(send(link({ description: "d".repeat(512) }))).not.toThrow();
    expect(send(link({ description: "d".repeat(513) }))).toThrow(/link desc/);
    expect(send(link({ url: `https://e.com/${"u".repeat(2034)}` }))).not.toThrow();
    expect(send(link({ url: `https://e.com/${"u".repeat(2035)}` }))).toThrow(/link url/);
    expect(send(link({ thumbMediaId: "" }))).toThrow(/thumb_media_id/);
  });

  it("menu: head ≤ 1024, click id 1..64, click content 1..128 bytes, not empty", () => {
    const menu = (items: Extract<KfSendContent, { type: "menu" }>["items"], head?: string): KfSendContent => ({ type: "menu", head, items });
    expect(send(menu([{ type: "click", id: "i".repeat(64), content: "c".repeat(128) }], "h".repeat(1024)))).not.toThrow();
    expect(send(menu([], "h".repeat(1025)))).toThrow(/head_content/);
    expect(send(menu([{ type: "click", id: "i".repeat(65), content: "c" }]))).toThrow(/click id/);
    expect(send(menu([{ type: "click", id: "", content: "c" }]))).toThrow(/click id/);
    expect(send(menu([{ type: "click", id: "1", content: "c".repeat(129) }]))).toThrow(/click content/);
    expect(send(menu([{ type: "miniprogram", appId: "a".repeat(33), pagePath: "p", content: "c" }]))).toThrow(/appid/);
    expect(send(menu([]))).toThrow(/needs items/);
  });

  it("location: latitude in -90..90 and longitude in -180..180", () => {
    expect(send({ type: "location", latitude: 90, longitude: -180 })).not.toThrow();
    expect(send({ type: "location", latitude: 90.1, longitude: 0 })).toThrow(EncodeError);
    expect(send({ type: "location", latitude: 0, longitude: Number.NaN })).toThrow(/longitude/);
  });
});

describe("KF encodeKfSendMsgOnEvent", () => {
  it("text equals send_msg_on_event-text.json", () => {
    const f = jsonFixture<SendFixture>("kf", "send_msg_on_event-text.json");
    const out = encodeKfSendMsgOnEvent({ code: str(f, "code"), msgId: f.msgid, content: { type: "text", text: str(f, "text", "content") } });
    expect(out).toStrictEqual(f);
  });

  it("menu equals send_msg_on_event-msgmenu.json", () => {
    const f = jsonFixture<SendFixture>("kf", "send_msg_on_event-msgmenu.json");
    const out = encodeKfSendMsgOnEvent({ code: str(f, "code"), msgId: f.msgid, content: menuFromFixture(f.msgmenu as MenuFixture) });
    expect(out).toStrictEqual(f);
  });

  it("has an expectation for every send_msg_on_event fixture", () => {
    expect(fixtureNames("kf", "send_msg_on_event-")).toEqual(["send_msg_on_event-msgmenu.json", "send_msg_on_event-text.json"]);
  });

  it("refuses image (and other non text/msgmenu types)", () => {
    const image = { type: "image", mediaId: "m1" } as unknown as KfSendMsgOnEventInput["content"];
    const e = expectEncodeError(() => encodeKfSendMsgOnEvent({ code: "c1", content: image }));
    expect(e.message).toContain("image");
    const link = { type: "link", title: "t", url: "u", thumbMediaId: "m" } as unknown as KfSendMsgOnEventInput["content"];
    expectEncodeError(() => encodeKfSendMsgOnEvent({ code: "c1", content: link }));
  });

  it("applies the code, msgid and text limits", () => {
    expectEncodeError(() => encodeKfSendMsgOnEvent({ code: "", content: { type: "text", text: "hi" } }));
    expectEncodeError(() => encodeKfSendMsgOnEvent({ code: "c", msgId: "a.b", content: { type: "text", text: "hi" } }));
    expectEncodeError(() => encodeKfSendMsgOnEvent({ code: "c", content: { type: "text", text: "你".repeat(683) } }));
    expect(encodeKfSendMsgOnEvent({ code: "c", content: { type: "text", text: "hi" } })).toStrictEqual({
      code: "c",
      msgtype: "text",
      text: { content: "hi" },
    });
  });
});

describe("KF encodeKfSyncMsgRequest", () => {
  it("uses sync_msg's field names", () => {
    expect(encodeKfSyncMsgRequest({ openKfId: KFID, cursor: "cur", token: "tok", limit: 50, voiceFormat: 1 })).toStrictEqual({
      cursor: "cur",
      token: "tok",
      limit: 50,
      voice_format: 1,
      open_kfid: KFID,
    });
  });

  it("defaults limit to 1000 and omits empty cursor/token", () => {
    expect(encodeKfSyncMsgRequest({ openKfId: KFID, cursor: "", token: "" })).toStrictEqual({ limit: 1000, open_kfid: KFID });
  });

  it("limit 1 and 1000 pass; 0, 1001, 1.5 and NaN fail", () => {
    expect(encodeKfSyncMsgRequest({ openKfId: KFID, limit: 1 }).limit).toBe(1);
    expect(encodeKfSyncMsgRequest({ openKfId: KFID, limit: 1000 }).limit).toBe(1000);
    for (const limit of [0, 1001, 1.5, Number.NaN, -1]) expectEncodeError(() => encodeKfSyncMsgRequest({ openKfId: KFID, limit }));
  });

  it("open_kfid is required", () => {
    expectEncodeError(() => encodeKfSyncMsgRequest({ openKfId: "" }));
  });
});

// ---------------------------------------------------------------- round trip

describe("KF round trip: send body → sync_msg item → content", () => {
  const roundTrip = (content: KfSendContent) => {
    const req = encodeKfSendMsg({ toUser: EXT, openKfId: KFID, msgId: "rt_1", content });
    const msgtype = req.msgtype as string;
    const item = {
      msgid: "from_msgid_rt",
      open_kfid: KFID,
      external_userid: EXT,
      send_time: 1716345600,
      origin: 5,
      servicer_userid: "lisi",
      msgtype,
      [msgtype]: req[msgtype],
    };
    return decodeKfItem(item, { corpId: CORP }).content;
  };

  it("text", () => {
    const content: KfSendContent = { type: "text", text: "您好，订单已发货 https://work.weixin.qq.com" };
    expect(roundTrip(content)).toStrictEqual(content);
  });

  it("menu (fixture's click, view, miniprogram)", () => {
    const content = menuFromFixture(at(kf("send_msg-msgmenu.json"), "msgmenu") as MenuFixture);
    expect(content.items).toHaveLength(4);
    expect(roundTrip(content)).toStrictEqual(content);
  });

  it("location", () => {
    const content: KfSendContent = { type: "location", latitude: 23.106022, longitude: 113.320503, name: "广州国际媒体港", address: "广东省广州市海珠区滨江东路" };
    expect(roundTrip(content)).toStrictEqual(content);
  });

  it("property: any text within the limit and any location round-trip", () => {
    const text = fc
      .string({ minLength: 1, maxLength: 300, unit: "grapheme" })
      .filter((t) => Buffer.byteLength(t) <= KF_TEXT_MAX_BYTES)
      .map((t): KfSendContent => ({ type: "text", text: t }));
    const location = fc
      .record({
        latitude: fc.double({ min: -90, max: 90, noNaN: true }),
        longitude: fc.double({ min: -180, max: 180, noNaN: true }),
        name: fc.string({ minLength: 1 }),
        address: fc.string({ minLength: 1 }),
      })
      .map((l): KfSendContent => ({ type: "location", ...l, latitude: l.latitude + 0, longitude: l.longitude + 0 }));
    fc.assert(
      fc.property(fc.oneof(text, location), (content) => {
        expect(roundTrip(content)).toStrictEqual(content);
      }),
    );
  });
});

// ---------------------------------------------------------------- robustness

/** Run fn: returning is fine, a BridgeError is fine, anything else fails the property. */
function onlyBridgeErrors(fn: () => unknown): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof BridgeError)) throw e;
  }
}

const KF_MSGTYPES = [
  "text",
  "image",
  "voice",
  "video",
  "file",
  "location",
  "link",
  "business_card",
  "miniprogram",
  "msgmenu",
  "merged_msg",
  "event",
  ...STRUCTURED_KINDS,
  "channels_live",
  "toString",
  "constructor",
  "__proto__",
  "hasOwnProperty",
];
const KF_EVENT_TYPES_FUZZ = [
  ...KF_EVENT_TYPES,
  "toString",
  "",
];

/** Items shaped like sync_msg items, with arbitrary values where the decoder reads fields. */
const fuzzItem = fc
  .record(
    {
      msgid: fc.oneof(fc.string(), fc.integer(), fc.jsonValue()),
      msgtype: fc.constantFrom(...KF_MSGTYPES),
      origin: fc.oneof(fc.constantFrom(3, 4, 5, "3"), fc.jsonValue()),
      send_time: fc.oneof(fc.integer(), fc.string(), fc.jsonValue()),
      open_kfid: fc.jsonValue(),
      external_userid: fc.jsonValue(),
      servicer_userid: fc.jsonValue(),
      body: fc.oneof(fc.jsonValue(), fc.dictionary(fc.constantFrom("content", "menu_id", "media_id", "latitude", "list", "item", "title", "head_content"), fc.jsonValue())),
      event: fc.oneof(
        fc.jsonValue(),
        fc.record({ event_type: fc.constantFrom(...KF_EVENT_TYPES_FUZZ), open_kfid: fc.jsonValue(), wechat_channels: fc.jsonValue(), status: fc.jsonValue() }),
      ),
    },
    { requiredKeys: ["msgid", "msgtype"] },
  )
  .map(({ body, event, ...rest }): JsonObject => (rest.msgtype === "event" ? { ...rest, event } : { ...rest, [rest.msgtype]: body }));

describe("KF robustness (fast-check)", () => {
  it("decodeKfItem on any JSON value returns or throws a BridgeError", () => {
    fc.assert(fc.property(fc.jsonValue(), (v) => onlyBridgeErrors(() => decodeKfItem(v as JsonObject))));
  });

  it("decodeKfItem on any object returns or throws a BridgeError", () => {
    fc.assert(fc.property(fc.object(), (v) => onlyBridgeErrors(() => decodeKfItem(v as JsonObject, { corpId: CORP }))));
  });

  it("decodeKfItem on sync_msg-shaped items returns or throws a BridgeError", () => {
    fc.assert(fc.property(fuzzItem, (v) => onlyBridgeErrors(() => decodeKfItem(v, { corpId: CORP }))), { numRuns: 500 });
  });

  it("decodeKfSyncMsg on any JSON value, object or string returns or throws a BridgeError", () => {
    fc.assert(fc.property(fc.jsonValue(), (v) => onlyBridgeErrors(() => decodeKfSyncMsg(v as JsonObject))));
    fc.assert(fc.property(fc.object(), (v) => onlyBridgeErrors(() => decodeKfSyncMsg(v as JsonObject))));
    fc.assert(fc.property(fc.string(), (s) => onlyBridgeErrors(() => decodeKfSyncMsg(s))));
    fc.assert(fc.property(fc.json(), (s) => onlyBridgeErrors(() => decodeKfSyncMsg(s))));
  });

  it("decodeKfSyncMsg on responses of fuzzed items returns or throws a BridgeError", () => {
    const response = fc.record({
      errcode: fc.jsonValue(),
      next_cursor: fc.jsonValue(),
      has_more: fc.jsonValue(),
      msg_list: fc.oneof(fc.array(fuzzItem, { maxLength: 4 }), fc.jsonValue()),
    });
    fc.assert(fc.property(response, (r) => onlyBridgeErrors(() => decodeKfSyncMsg(JSON.stringify(r)))), { numRuns: 300 });
  });

  it("a non-object item is a DecodeError, not a TypeError", () => {
    for (const v of [null, 42, "x", [], true]) expectDecodeError(() => decodeKfItem(v as unknown as JsonObject));
    for (const v of [null, 42, [], true]) expectDecodeError(() => decodeKfSyncMsg(v as unknown as JsonObject));
  });
});
