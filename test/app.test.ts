import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type AppMessage,
  type AppReply,
  BridgeError,
  DecodeError,
  decodeAppXml,
  EncodeError,
  encodeAppReply,
  parseCallbackEnvelope,
  parseXml,
  WeComCrypto,
  xmlText,
  xmlToPlain,
} from "../src/index.js";
import { fixture, fixtureNames, vectors } from "./helpers.js";

const decode = (name: string): AppMessage => decodeAppXml(fixture("app", name));

/** The event of a decoded fixture, or a failure. */
function eventOf(m: AppMessage) {
  if (m.content.type !== "event") throw new Error(`expected an event, got ${m.content.type}`);
  return m.content.event;
}

/** What each fixture's name promises, checked against the decoded message. */
function expectation(name: string): (m: AppMessage) => void {
  const base = name.replace(/\.xml$/, "");
  const [kind, a, b] = base.split("-");
  if (kind === "msg") return (m) => expect(m.content.type).toBe(a);
  if (kind === "unknown") {
    if (a === "msgtype") return (m) => expect(m.content).toMatchObject({ type: "unknown", msgType: "markdown" });
    if (a === "event") return (m) => expect(eventOf(m)).toMatchObject({ name: "unknown", eventName: "batch_job_result" });
    if (a === "changetype" && b === undefined)
      return (m) => expect(eventOf(m)).toMatchObject({ name: "change_external_contact", change: { changeType: "unknown", value: "msg_audit_approved" } });
    if (a === "changetype" && b === "change_contact")
      return (m) => expect(eventOf(m)).toMatchObject({ name: "change_contact", change: { changeType: "unknown", value: "create_party" } });
  }
  if (kind === "event") {
    if (b === undefined) return (m) => expect(eventOf(m).name).toBe(a);
    if (a === "change_external_chat") return (m) => expect(eventOf(m)).toMatchObject({ name: a, changeType: b });
    return (m) => expect(eventOf(m)).toMatchObject({ name: a, change: { changeType: b } });
  }
  throw new Error(`no expectation for fixture ${name}`);
}

describe("every app fixture decodes to what its name says", () => {
  const names = fixtureNames("app").filter((n) => !n.startsWith("reply-") && n !== "envelope-request.xml");
  it("covers all message types, events and change types of the seed", () => {
    const expected = [
      "msg-text",
      "msg-image",
      "msg-voice",
      "msg-video",
      "msg-location",
      "msg-link",
      ...["subscribe", "unsubscribe", "click", "view", "scancode_push", "scancode_waitmsg", "pic_sysphoto", "pic_photo_or_album", "pic_weixin", "location_select"].map(
        (e) => `event-${e}`,
      ),
      "event-kf_msg_or_event",
      ...["add_external_contact", "edit_external_contact", "add_half_external_contact", "del_external_contact", "del_follow_user", "transfer_fail"].map(
        (c) => `event-change_external_contact-${c}`,
      ),
      "event-change_external_chat-create",
      "event-change_external_chat-update",
      "event-sys_approval_change",
      "event-change_contact-create_user",
      "event-change_contact-update_user",
      ...["enter_session", "msg_send_fail", "servicer_status_change", "session_status_change", "user_recall_msg", "servicer_recall_msg", "reject_customer_msg_switch_change"].map(
        (e) => `event-${e}`,
      ),
    ];
    for (const e of expected) expect(names).toContain(`${e}.xml`);
  });
  for (const name of names) {
    it(name, () => {
      const m = decode(name);
      expect(m.channel).toBe("app");
      expect(m.raw).toBe(fixture("app", name));
      expectation(name)(m);
    });
  }
});

describe("app messages", () => {
  it("text: content with entities-in-CDATA, exact 64-bit MsgId, ids and addresses", () => {
    const m = decode("msg-text.xml");
    expect(m.content).toEqual({ type: "text", text: "你好，请问 A&B 方案的报价是多少？<急>" });
    expect(m.msgId).toBe("7381973325934178305");
    expect(m.id).toBe("7381973325934178305");
    expect(m.corpId).toBe("ww1436e0e65a779aee");
    expect(m.agentId).toBe("1000002");
    expect(m.from).toEqual({ kind: "member", id: "ChenJiaShun" });
    expect(m.to).toEqual([{ kind: "app", id: "1000002" }]);
    expect(m.time).toBe(1718852013000);
    expect(m.conversationId).toBe("app:ww1436e0e65a779aee:1000002:ChenJiaShun");
  });

  it("the configured corpId wins over ToUserName", () => {
    expect(decodeAppXml(fixture("app", "msg-text.xml"), { corpId: "wwCONFIG" }).corpId).toBe("wwCONFIG");
  });

  it("image, voice, video, location, link", () => {
    const x = (name: string) => parseXml(fixture("app", name)).value;
    const img = x("msg-image.xml");
    expect(decode("msg-image.xml").content).toEqual({ type: "image", media: { mediaId: xmlText(img, "MediaId"), url: xmlText(img, "PicUrl") } });
    const voice = x("msg-voice.xml");
    expect(decode("msg-voice.xml").content).toEqual({ type: "voice", media: { mediaId: xmlText(voice, "MediaId") }, format: xmlText(voice, "Format") });
    const video = x("msg-video.xml");
    expect(decode("msg-video.xml").content).toEqual({ type: "video", media: { mediaId: xmlText(video, "MediaId") }, thumbMediaId: xmlText(video, "ThumbMediaId") });
    expect(decode("msg-location.xml").content).toEqual({
      type: "location",
      latitude: 23.134521,
      longitude: 113.358803,
      scale: 15,
      name: "广东省广州市海珠区新港中路397号",
    });
    const link = x("msg-link.xml");
    expect(decode("msg-link.xml").content).toEqual({
      type: "link",
      title: xmlText(link, "Title"),
      description: xmlText(link, "Description"),
      url: xmlText(link, "Url"),
      picUrl: xmlText(link, "PicUrl"),
    });
  });
});

describe("app events", () => {
  it("menu events carry EventKey and their info", () => {
    expect(eventOf(decode("event-click.xml"))).toMatchObject({ name: "click" });
    expect(eventOf(decode("event-view.xml")).name).toBe("view");
    expect(eventOf(decode("event-scancode_waitmsg.xml"))).toEqual({
      name: "scancode_waitmsg",
      eventKey: "rselfmenu_0_0",
      scanCode: { scanType: "barcode", scanResult: "EAN_13,6901234567892" },
    });
    expect(eventOf(decode("event-pic_photo_or_album.xml"))).toEqual({
      name: "pic_photo_or_album",
      eventKey: "rselfmenu_1_1",
      pictures: { count: 2, md5s: ["5a75aaca956d97be686719218f275c6b", "9e107d9d372bb6826bd81d3542a419d6"] },
    });
    // a real capture repeats PicList once per picture
    expect(eventOf(decode("event-pic_weixin.xml"))).toMatchObject({
      pictures: { count: 2, md5s: ["aef52ae501537e552725c5d7f99c1741", "c4564632a4fab91378c39bea6aad6f9e"] },
    });
    expect(eventOf(decode("event-location_select.xml"))).toEqual({
      name: "location_select",
      eventKey: "rselfmenu_2_0",
      location: { latitude: 23.137466, longitude: 113.352425, scale: 15, label: " 广州市海珠区客村艺苑路 106号", poiName: "" },
    });
  });

  it("subscribe and unsubscribe", () => {
    expect(eventOf(decode("event-subscribe.xml"))).toEqual({ name: "subscribe" });
    expect(eventOf(decode("event-unsubscribe.xml")).name).toBe("unsubscribe");
  });

  it("kf_msg_or_event carries Token and OpenKfId and has no sender", () => {
    const m = decode("event-kf_msg_or_event.xml");
    expect(eventOf(m)).toEqual({ name: "kf_msg_or_event", token: "ENC3LWxM1xSCBaWkhgz3yfWWn27WrBvB7wDWs5LgyAP6WH7", openKfId: "wkfqLUQwAApHj0eaMhYPQOOamS3Wz17w" });
    expect(m.from).toEqual({ kind: "system", id: "sys" });
    expect(m.conversationId).toBe("app:wwfc2fead39b1e60dd::kf:wkfqLUQwAApHj0eaMhYPQOOamS3Wz17w");
    // its id includes the Token, so two wake-ups in one second stay distinct
    expect(m.id).toContain("ENC3LWxM1xSCBaWkhgz3yfWWn27WrBvB7wDWs5LgyAP6WH7");
  });

  it("change_external_contact, per change type", () => {
    expect(eventOf(decode("event-change_external_contact-add_external_contact.xml"))).toEqual({
      name: "change_external_contact",
      change: {
        changeType: "add_external_contact",
        userId: "zhangsan",
        externalUserId: "woAJ2GCAAAXtWyujaWJHDDGi0mACH71w",
        state: "teststate",
        welcomeCode: "CALZmkxH2bmzi7bI-tBDW5Gie8EK6OzgrkO5zTmIRxE",
      },
    });
    for (const ct of ["edit_external_contact", "add_half_external_contact", "del_external_contact", "del_follow_user"]) {
      const ev = eventOf(decode(`event-change_external_contact-${ct}.xml`));
      expect(ev).toMatchObject({ name: "change_external_contact", change: { changeType: ct, userId: expect.any(String), externalUserId: expect.any(String) } });
    }
    const fail = eventOf(decode("event-change_external_contact-transfer_fail.xml"));
    expect(fail).toMatchObject({ change: { changeType: "transfer_fail", failReason: "customer_refused" } });
  });

  it("change_external_chat keeps its details", () => {
    const ev = eventOf(decode("event-change_external_chat-update.xml"));
    expect(ev).toMatchObject({ name: "change_external_chat", chatId: "wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA", changeType: "update", updateDetail: "add_member" });
    if (ev.name !== "change_external_chat") throw new Error("narrowing");
    expect(ev.fields.MemChangeList).toEqual({ Item: ["wmOgQhDgAAuXFJGwbve4g4iXknfOAAAA", "zhangsan"] });
  });

  it("sys_approval_change decodes ApprovalInfo with repeated records and keeps big ids as text", () => {
    const ev = eventOf(decode("event-sys_approval_change.xml"));
    if (ev.name !== "sys_approval_change") throw new Error(`got ${ev.name}`);
    const a = ev.approval;
    expect(a).toMatchObject({ spNo: "201910220003", spName: "示例模板", spStatus: 1, applyTime: 1571728713, statusChangeEvent: 10 });
    expect(a.applyer).toEqual({ userId: "WuJunJie", party: "1" });
    expect(a.spRecords).toHaveLength(2);
    expect(a.spRecords[0]?.details.map((d) => d.approver)).toEqual(["WangXiaoMing", "XiaoGangHuang"]);
    expect(a.spRecords[1]).toMatchObject({ approverAttr: 1, details: [{ approver: "XiaoHongLiu", spStatus: 1, spTime: 0 }] });
    expect(a.notifyers).toEqual(["ChengLiang"]);
    expect((a.fields.Comments as Record<string, unknown>).CommentId).toBe("6750538708562308220");
  });

  it("change_contact create_user and update_user", () => {
    const ev = eventOf(decode("event-change_contact-update_user.xml"));
    if (ev.name !== "change_contact" || ev.change.changeType !== "update_user") throw new Error("narrowing");
    expect(ev.change).toMatchObject({
      userId: "zhangsan",
      newUserId: "zhangsan001",
      name: "张三",
      departments: ["1", "2", "3"],
      isLeaderInDept: ["1", "0", "0"],
      mobile: "13800000000",
      gender: 1,
      status: 1,
      email: "zhangsan@gzdev.com",
    });
    expect(ev.change.extAttr).toEqual([
      { name: "爱好", type: 0, text: "旅游" },
      { name: "卡号", type: 1, web: { title: "企业微信", url: "https://work.weixin.qq.com" } },
    ]);
    expect(eventOf(decode("event-change_contact-create_user.xml"))).toMatchObject({ change: { changeType: "create_user" } });
  });

  it("KF events in XML decode like their sync_msg twins", () => {
    expect(eventOf(decode("event-enter_session.xml"))).toEqual({
      name: "enter_session",
      openKfId: "wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q",
      externalUserId: "wmAJ2GCAAAme1XQRC-NI-q0_ZM9ukoAw",
      scene: "channels_live",
      sceneParam: "order%3D20240620001",
      welcomeCode: "kfwc_aZt8s1qYj3cBvH0xW9mN2lRpE6dUo4Fg",
      wechatChannels: { nickname: "企业微信官方视频号", scene: 1 },
    });
    expect(eventOf(decode("event-session_status_change.xml"))).toEqual({
      name: "session_status_change",
      openKfId: "wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q",
      externalUserId: "wmAJ2GCAAAme1XQRC-NI-q0_ZM9ukoAw",
      changeType: 2,
      oldServicerUserId: "zhangsan",
      newServicerUserId: "lisi",
      msgCode: "MSGCODE_v2_3d9fK1xQp7sL0aZt5RbN8cWm",
    });
    expect(eventOf(decode("event-msg_send_fail.xml"))).toMatchObject({ name: "msg_send_fail", failMsgId: expect.any(String), failType: expect.any(Number) });
    expect(eventOf(decode("event-servicer_status_change.xml"))).toMatchObject({ name: "servicer_status_change", status: expect.any(Number) });
    expect(eventOf(decode("event-user_recall_msg.xml"))).toMatchObject({ name: "user_recall_msg", recallMsgId: expect.stringMatching(/.+/) });
    expect(eventOf(decode("event-servicer_recall_msg.xml"))).toMatchObject({ name: "servicer_recall_msg", servicerUserId: expect.stringMatching(/.+/) });
    expect(eventOf(decode("event-reject_customer_msg_switch_change.xml"))).toMatchObject({ name: "reject_customer_msg_switch_change", rejectSwitch: expect.any(Number) });
  });

  it("unknown types keep the raw XML", () => {
    const m = decode("unknown-msgtype.xml");
    expect(m.content).toEqual({ type: "unknown", msgType: "markdown", raw: fixture("app", "unknown-msgtype.xml") });
    const ev = eventOf(decode("unknown-event.xml"));
    expect(ev).toEqual({ name: "unknown", eventName: "batch_job_result", raw: fixture("app", "unknown-event.xml") });
    const ch = eventOf(decode("unknown-changetype.xml"));
    if (ch.name !== "change_external_contact" || ch.change.changeType !== "unknown") throw new Error("narrowing");
    expect(ch.change.fields.ChangeType).toBe("msg_audit_approved");
  });
});

describe("event idempotency keys", () => {
  it("are stable for a retry and distinct for distinct events of the same second", () => {
    const xml = fixture("app", "event-change_external_contact-add_external_contact.xml");
    const first = decodeAppXml(xml).id;
    expect(decodeAppXml(xml).id).toBe(first);
    expect(first.startsWith("sys:1718853001:change_external_contact:add_external_contact")).toBe(true);
    const other = decodeAppXml(xml.replace("woAJ2GCAAAXtWyujaWJHDDGi0mACH71w", "woANOTHER")).id;
    expect(other).not.toBe(first);
  });

  it("approval events of one SpNo with different statuses differ", () => {
    const xml = fixture("app", "event-sys_approval_change.xml");
    const a = decodeAppXml(xml).id;
    const b = decodeAppXml(xml.replace("<StatuChangeEvent>10</StatuChangeEvent>", "<StatuChangeEvent>2</StatuChangeEvent>")).id;
    expect(a).toContain("201910220003");
    expect(a).not.toBe(b);
  });
});

describe("malformed app XML", () => {
  for (const [what, xml, fragment] of [
    ["not XML", "hello", "expected a root element"],
    ["another root", "<root><MsgType>text</MsgType></root>", "root element must be <xml>"],
    ["no MsgType", "<xml><CreateTime>1</CreateTime></xml>", "missing <MsgType>"],
    ["no CreateTime", "<xml><MsgType>text</MsgType></xml>", "CreateTime"],
    ["approval without info", "<xml><MsgType>event</MsgType><CreateTime>1</CreateTime><Event>sys_approval_change</Event></xml>", "ApprovalInfo"],
  ] as const) {
    it(`${what}: DecodeError`, () => {
      expect(() => decodeAppXml(xml)).toThrow(DecodeError);
      expect(() => decodeAppXml(xml)).toThrow(fragment);
    });
  }

  it("arbitrary input never throws anything but a BridgeError", () => {
    const fields = fc.record({
      MsgType: fc.oneof(fc.constantFrom("text", "image", "event", "location", "link", "voice", "video"), fc.string()),
      Event: fc.oneof(fc.constantFrom("click", "change_external_contact", "sys_approval_change", "change_contact", "enter_session", "pic_weixin"), fc.string()),
      CreateTime: fc.oneof(fc.nat().map(String), fc.string()),
      ChangeType: fc.string(),
      Content: fc.string(),
      ApprovalInfo: fc.string(),
    });
    fc.assert(
      fc.property(fc.oneof(fc.string(), fields.map((f) => `<xml>${Object.entries(f).map(([k, v]) => `<${k}><![CDATA[${v.replaceAll("]]>", "")}]]></${k}>`).join("")}</xml>`)), (s) => {
        try {
          decodeAppXml(s);
        } catch (e) {
          expect(e).toBeInstanceOf(BridgeError);
        }
      }),
      { numRuns: 1000 },
    );
  });
});

describe("passive replies", () => {
  const address = { toUser: "ChenJiaShun", fromUser: "ww1436e0e65a779aee" };
  /** Compare an encoded reply with a fixture, structure and text, ignoring whitespace. */
  function expectSameAs(name: string, reply: AppReply): string {
    const want = parseXml(fixture("app", name)).value;
    const createTime = Number(xmlText(want, "CreateTime"));
    const xml = encodeAppReply(reply, { ...address, createTime });
    expect(xmlToPlain(parseXml(xml).value)).toEqual(xmlToPlain(want));
    return xml;
  }

  it("text", () => {
    const xml = expectSameAs("reply-text.xml", { type: "text", content: "已收到，报价单稍后发送给您。" });
    expect(xml.startsWith("<xml><ToUserName><![CDATA[ChenJiaShun]]></ToUserName><FromUserName><![CDATA[ww1436e0e65a779aee]]></FromUserName><CreateTime>1718852014</CreateTime>")).toBe(true);
  });

  it("image, voice, video", () => {
    const media = (name: string, tag: string) => xmlText(parseXml(fixture("app", name)).value[tag] as never, "MediaId") as string;
    expectSameAs("reply-image.xml", { type: "image", mediaId: media("reply-image.xml", "Image") });
    expectSameAs("reply-voice.xml", { type: "voice", mediaId: media("reply-voice.xml", "Voice") });
    expectSameAs("reply-video.xml", { type: "video", mediaId: media("reply-video.xml", "Video"), title: "产品演示", description: "第二季度新品功能演示视频" });
  });

  it("news with two articles", () => {
    const xml = expectSameAs("reply-news.xml", {
      type: "news",
      articles: [
        {
          title: "今日销售日报",
          description: "截至 18:00 的成交与线索汇总",
          picUrl: "https://wework.qpic.cn/wwpic/252813_jOfDHtcISzuodLa_1629280209/0",
          url: "https://example.com/report/daily?date=2024-06-20",
        },
        {
          title: "本周待办",
          description: "3 项待审批，1 项已逾期",
          picUrl: "https://wework.qpic.cn/wwpic/252813_jOfDHtcISzuodLa_1629280209/100",
          url: "https://example.com/todo?week=25&owner=ChenJiaShun",
        },
      ],
    });
    expect(xml).toContain("<ArticleCount>2</ArticleCount>");
  });

  it("update_button", () => {
    expectSameAs("reply-update_button.xml", { type: "update_button", replaceName: "已批准" });
  });

  it("update_template_card", () => {
    const xml = expectSameAs("reply-update_template_card.xml", {
      type: "update_template_card",
      templateCard: {
        CardType: "button_interaction",
        Source: { IconUrl: "https://wework.qpic.cn/wwpic/252813_jOfDHtcISzuodLa_1629280209/0", Desc: "更新后的卡片", DescColor: 2 },
        ActionMenu: {
          Desc: "您可以使用以下功能",
          ActionList: [
            { Text: "您将收到A回调", Key: "A" },
            { Text: "您将收到B回调", Key: "B" },
          ],
        },
        MainTitle: { Title: "更新后的卡片标题", Desc: "更新后的卡片副标题" },
        QuoteArea: { Type: 1, Url: "https://work.weixin.qq.com", Title: "企业微信", QuoteText: "企业微信真好用呀" },
        SubTitleText: "更新后的卡片二级标题",
        HorizontalContentList: [
          { KeyName: "应用名称", Value: "企业微信" },
          { Type: 1, KeyName: "跳转企业微信", Value: "跳转企业微信", Url: "https://work.weixin.qq.com" },
        ],
        CardAction: { Type: 1, Url: "https://work.weixin.qq.com" },
        ButtonSelection: {
          QuestionKey: "QuestionKey1",
          Title: "下拉式选择器",
          OptionList: [
            { Id: "option_id1", Text: "选择题选项1" },
            { Id: "option_id2", Text: "选择题选项2" },
          ],
          SelectedId: "option_id2",
          Disable: false,
        },
        ButtonList: [
          { Text: "按钮1", Style: 1, Key: "button_key_1" },
          { Text: "按钮2", Style: 2, Key: "button_key_2" },
        ],
        ReplaceText: "已提交",
      },
    });
    expect(xml).toContain("<DescColor>2</DescColor>");
    expect(xml).toContain("<Disable>false</Disable>");
  });

  it("enforces the text limit in bytes and the news article count", () => {
    expect(() => encodeAppReply({ type: "text", content: "你".repeat(682) + "ab" }, address)).not.toThrow(); // 2048 bytes
    expect(() => encodeAppReply({ type: "text", content: "你".repeat(683) }, address)).toThrow(EncodeError); // 2049 bytes
    expect(() => encodeAppReply({ type: "text", content: "你".repeat(683) }, address)).toThrow("2049 bytes");
    const art = { title: "t" };
    expect(() => encodeAppReply({ type: "news", articles: Array(8).fill(art) }, address)).not.toThrow();
    expect(() => encodeAppReply({ type: "news", articles: Array(9).fill(art) }, address)).toThrow(EncodeError);
    expect(() => encodeAppReply({ type: "news", articles: [] }, address)).toThrow(EncodeError);
  });

  it("round-trips a text reply through encryption and the decoder", () => {
    const c = new WeComCrypto({ token: vectors.official_decrypt_msg.token, encodingAESKey: vectors.official_decrypt_msg.encodingAESKey, receiveId: "ww1436e0e65a779aee" });
    const plain = encodeAppReply({ type: "text", content: "a]]>b <c> & d" }, { ...address, createTime: 1718852014 });
    const env = c.encryptXmlReply(plain, "1718852014", "123456");
    const { encrypt } = parseCallbackEnvelope(env);
    const sig = /<MsgSignature><!\[CDATA\[(\w+)\]\]>/.exec(env)?.[1] as string;
    const back = decodeAppXml(c.decryptCallback({ msg_signature: sig, timestamp: "1718852014", nonce: "123456" }, encrypt));
    expect(back.content).toEqual({ type: "text", text: "a]]>b <c> & d" });
    expect(back.from).toEqual({ kind: "member", id: "ww1436e0e65a779aee" });
  });
});

describe("the official request envelope", () => {
  it("is the crypto vector's body and decrypts to an app text message", () => {
    const v = vectors.official_decrypt_msg;
    expect(fixture("app", "envelope-request.xml")).toBe(v.body);
    const c = new WeComCrypto({ token: v.token, encodingAESKey: v.encodingAESKey, receiveId: v.receiveId });
    const m = decodeAppXml(c.decryptCallback({ msg_signature: v.msg_signature, timestamp: v.timestamp, nonce: v.nonce }, parseCallbackEnvelope(v.body).encrypt));
    expect(m.content).toEqual({ type: "text", text: "你好" });
    expect(m.msgId).toBe("1456453720");
  });
});
