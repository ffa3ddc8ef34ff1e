/**
 * The mapping of every content type to the 全媒体's MsgType / Content / Tag (the README table).
 */
import { describe, expect, it } from "vitest";
import { toOmniBody } from "../src/gateway/omni-map.js";
import { decodeAppXml, decodeArchivePush, decodeBotCallback, decodeKfItem, type UnifiedMessage } from "../src/index.js";
import { fixture, jsonFixture } from "./helpers.js";

const kf = (name: string) => decodeKfItem(jsonFixture("kf", name), { corpId: "ww1" });
const app = (name: string) => decodeAppXml(fixture("app", name));
const archive = (name: string) => {
  const p = decodeArchivePush(fixture("archive", name));
  if (p.kind !== "record") throw new Error("not a record");
  return p.message;
};
const bot = (name: string) => decodeBotCallback(fixture("bot", name), { receivedAt: 1 });

function mapped(m: UnifiedMessage, url?: string) {
  const b = toOmniBody(m, () => url);
  return { MsgType: b.MsgType, Content: b.Content, data: (b.Tag as { data?: unknown }).data, tag: b.Tag as Record<string, unknown>, body: b };
}

describe("mapping to the 全媒体", () => {
  it("never passes a long-connection bot's file keys (aeskey) to the 全媒体, in media or in unknown payloads", () => {
    const base = { msgid: "m1", aibotid: "aibLIVE", chattype: "single", from: { userid: "lisi" } };
    const img = decodeBotCallback({ ...base, msgtype: "image", image: { url: "https://example.com/x", aeskey: "S2V5S2V5S2V5S2V5S2V5S2V5S2V5S2V5S2V5S2V5S2U=" } }, { receivedAt: 1 });
    expect(img.content.type === "image" && img.content.media?.aesKey).toBe("S2V5S2V5S2V5S2V5S2V5S2V5S2V5S2V5S2V5S2V5S2U=");
    for (const url of [undefined, "https://bridge.example.com/media/1"]) expect(JSON.stringify(mapped(img, url).body)).not.toMatch(/aes_?key/i);
    const odd = decodeBotCallback({ ...base, msgtype: "hologram", hologram: { parts: [{ url: "u", aeskey: "secret-key" }] }, quote: { image: { aeskey: "k2" } } }, { receivedAt: 1 });
    const r = mapped(odd);
    expect(r.Content).toBe("[unsupported message type: hologram]");
    expect(JSON.stringify(r.body)).not.toMatch(/aeskey|secret-key|k2/);
    expect(JSON.stringify(r.data)).toContain('"url":"u"');
  });

  it("text: Content is the text, FromUserId the conversation address, Tag the channel data", () => {
    const m = app("msg-text.xml");
    const r = mapped(m);
    expect(r.body).toMatchObject({ FromUserId: m.conversationId, FromUserName: "ChenJiaShun", MsgType: "text", Content: m.content.type === "text" ? m.content.text : "" });
    expect(r.tag).toMatchObject({ channel: "app", id: "7381973325934178305", contentType: "text", from: { kind: "member", id: "ChenJiaShun" } });
    expect(mapped(kf("msg-text.json")).data).toEqual({ menuId: expect.any(String) });
  });

  it("media: the download URL when stored, a readable placeholder when not", () => {
    expect(mapped(app("msg-image.xml"), "https://bridge/media/x")).toMatchObject({ MsgType: "image", Content: "https://bridge/media/x" });
    expect(mapped(kf("msg-voice.json"), "https://u")).toMatchObject({ MsgType: "voice", Content: "https://u" });
    expect(mapped(kf("msg-video.json"), "https://u")).toMatchObject({ MsgType: "video" });
    expect(mapped(kf("msg-file.json"), "https://u")).toMatchObject({ MsgType: "file" });
    expect(mapped(archive("record-emotion.json"), "https://u")).toMatchObject({ MsgType: "image" });
    expect(mapped(app("msg-image.xml"))).toMatchObject({ MsgType: "text", Content: "[图片: not available]" });
    expect(mapped(bot("msg-voice.json"))).toMatchObject({ MsgType: "text", data: { voice: true } });
  });

  it("location and link keep their structure in Tag", () => {
    expect(mapped(kf("msg-location.json"))).toMatchObject({ MsgType: "location", data: { latitude: expect.any(Number), longitude: expect.any(Number) } });
    expect(mapped(app("msg-link.xml"))).toMatchObject({ MsgType: "link", data: { title: expect.any(String), url: expect.any(String) } });
  });

  it("cards, mini programs, menus, news, chat records, structured and mixed become readable text", () => {
    expect(mapped(kf("msg-business_card.json")).Content).toMatch(/^\[名片\] /);
    expect(mapped(kf("msg-miniprogram.json")).Content).toMatch(/^\[小程序\] /);
    const menu = mapped(kf("msg-msgmenu.json"));
    expect(menu.MsgType).toBe("text");
    expect(menu.Content.split("\n").length).toBeGreaterThan(2);
    expect(mapped(archive("record-news.json")).MsgType).toBe("text");
    expect(mapped(kf("msg-merged_msg.json")).Content).toMatch(/^\[聊天记录\]/);
    expect(mapped(kf("msg-channels_shop_product.json")).Content).toMatch(/^\[channels_shop_product\] /);
    const mixed = mapped(bot("msg-mixed.json"), "https://img");
    expect(mixed.MsgType).toBe("text");
    expect(mixed.Content).toContain("https://img");
  });

  it("events, recalls and consents are events; unknown types say so and keep the raw payload", () => {
    expect(mapped(kf("event-enter_session.json"))).toMatchObject({ MsgType: "event", Content: "enter_session" });
    expect(mapped(app("event-click.xml"))).toMatchObject({ MsgType: "event", Content: "click" });
    expect(mapped(bot("event-enter_chat.json"))).toMatchObject({ MsgType: "event", Content: "enter_chat" });
    expect(mapped(archive("record-revoke.json"))).toMatchObject({ MsgType: "event", Content: "recall" });
    expect(mapped(archive("record-disagree.json"))).toMatchObject({ MsgType: "event", Content: "consent.disagree" });
    expect(mapped(app("unknown-event.xml"))).toMatchObject({ MsgType: "event", Content: "batch_job_result" });
    const unknown = mapped(kf("unknown-msgtype.json"));
    expect(unknown).toMatchObject({ MsgType: "text", Content: "[unsupported message type: channels_live]", data: { msgType: "channels_live", raw: expect.any(Object) } });
  });
});
