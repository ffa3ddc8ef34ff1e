import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type ArchiveMessage,
  type ArchivePush,
  BridgeError,
  DecodeError,
  decodeArchivePush,
  decodeArchiveRecord,
  normalizeArchiveRecord,
  type StructuredKind,
} from "../src/index.js";
import { fixture, fixtureNames, jsonFixture } from "./helpers.js";

type Obj = Record<string, unknown>;

const A = "archive";

/** A push envelope fixture as stored (content still a JSON string). */
const envelope = (name: string): Obj => jsonFixture<Obj>(A, name);

/** The record inside a type-101 fixture, as sent (strings for numbers, null keys kept). */
const sentRecord = (name: string): Obj => JSON.parse(envelope(name).content as string) as Obj;

/** An object-valued key of a sent record, or a failure. */
function bodyOf(rec: Obj, key: string): Obj {
  const b = rec[key];
  if (typeof b !== "object" || b === null || Array.isArray(b)) throw new Error(`fixture has no object "${key}"`);
  return b as Obj;
}

/** The record branch of a push, or a failure. */
function recordOf(p: ArchivePush): Extract<ArchivePush, { kind: "record" }> {
  if (p.kind !== "record") throw new Error(`expected a record push, got ${p.kind} ${p.pushType}`);
  return p;
}

const decodeFixture = (name: string): ArchivePush => decodeArchivePush(fixture(A, name));
const messageOf = (name: string): ArchiveMessage => recordOf(decodeFixture(name)).message;

/** An envelope with `content` replaced by the given record. */
function withRecord(name: string, edit: (rec: Obj) => void): string {
  const env = envelope(name);
  const rec = sentRecord(name);
  edit(rec);
  return JSON.stringify({ ...env, content: JSON.stringify(rec) });
}

/** Expect a DecodeError with the stable code. */
function expectDecodeError(f: () => unknown, message?: RegExp): void {
  let caught: unknown;
  try {
    f();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(DecodeError);
  expect(caught).toBeInstanceOf(BridgeError);
  expect((caught as DecodeError).code).toBe("decode_malformed");
  expect((caught as DecodeError).format).toBe("archive");
  if (message) expect((caught as Error).message).toMatch(message);
}

// ---------------------------------------------------------------- the table

/** Structured msgtypes: the record key their data lives under and the key of their title (none: no title in the fixture). */
const STRUCTURED: Record<string, { kind: StructuredKind; key: string; title?: string }> = {
  todo: { kind: "todo", key: "todo", title: "title" },
  vote: { kind: "vote", key: "vote", title: "votetitle" },
  collect: { kind: "collect", key: "collect", title: "title" },
  redpacket: { kind: "redpacket", key: "redpacket", title: "wish" },
  external_redpacket: { kind: "external_redpacket", key: "redpacket", title: "wish" },
  meeting: { kind: "meeting", key: "meeting", title: "topic" },
  docmsg: { kind: "docmsg", key: "doc", title: "title" },
  calendar: { kind: "calendar", key: "calendar", title: "title" },
  meeting_voice_call: { kind: "meeting_voice_call", key: "meeting_voice_call" },
  voip_doc_share: { kind: "voip_doc_share", key: "voip_doc_share", title: "filename" },
  sphfeed: { kind: "sphfeed", key: "sphfeed", title: "feedDesc" },
};

/** Media msgtypes and their model content type. */
const MEDIA: Record<string, string> = { image: "image", voice: "voice", video: "video", file: "file", emotion: "emotion" };

/** What a fixture's name promises, checked against the decoded push. */
function expectation(name: string): (p: ArchivePush) => void {
  const base = name.replace(/\.json$/, "");

  const push = /^push-type-(\d+)$/.exec(base);
  if (push) {
    const type = Number(push[1]);
    return (p) => {
      const env = envelope(name);
      expect(p.kind).toBe("unknown");
      if (p.kind !== "unknown") return;
      expect(p.pushType).toBe(type);
      expect(p.messageId).toBe(env.message_id);
      expect(p.gmtCreate).toBe((env.gmt_create as number) * 1000);
      expect(p.raw).toEqual(env);
      if (type === 38) {
        // the vendor's own example is not valid JSON: kept as the string sent
        expect(() => JSON.parse(env.content as string)).toThrow();
        expect(p.content).toBe(env.content);
      } else {
        expect(p.content).toEqual(JSON.parse(env.content as string));
      }
      if (type === 41) expect(Array.isArray(p.content)).toBe(true);
    };
  }

  if (base.startsWith("unknown-")) {
    return (p) => {
      const rec = sentRecord(name);
      expect(recordOf(p).message.content).toEqual({ type: "unknown", msgType: rec.msgtype, raw: rec });
    };
  }

  if (base === "seed-file" || base === "message_id-number") {
    return (p) => expect(recordOf(p).message.content).toMatchObject({ type: "file", media: { fileExt: "xls" } });
  }

  const m = /^record-(.+)$/.exec(base);
  if (!m) throw new Error(`no expectation for fixture ${name}`);
  const kind = m[1]!;

  const content = (p: ArchivePush) => recordOf(p).message.content;

  if (kind === "text" || kind === "group-text")
    return (p) => expect(content(p)).toEqual({ type: "text", text: bodyOf(sentRecord(name), "text").content });
  if (kind === "markdown")
    return (p) => expect(content(p)).toEqual({ type: "text", text: bodyOf(sentRecord(name), "info").content, format: "markdown" });
  if (Object.hasOwn(MEDIA, kind)) {
    return (p) => {
      const b = bodyOf(sentRecord(name), kind);
      expect(typeof b.sdkfileid).toBe("string");
      expect(content(p)).toMatchObject({ type: MEDIA[kind], media: { sdkFileId: b.sdkfileid, md5: b.md5sum } });
    };
  }
  if (kind === "revoke" || kind === "action-recall") {
    return (p) => {
      const msg = recordOf(p).message;
      expect(msg.action).toBe("recall");
      expect(msg.content).toEqual({ type: "recall", recalledId: bodyOf(sentRecord(name), "revoke").pre_msgid });
    };
  }
  if (kind === "agree" || kind === "disagree") {
    return (p) => {
      // disagree data sits under the `agree` key in the push
      const b = bodyOf(sentRecord(name), "agree");
      expect(content(p)).toEqual({ type: "consent", agreed: kind === "agree", userId: b.userid, time: Number(b.agree_time) });
    };
  }
  if (kind === "card") {
    return (p) => {
      const b = bodyOf(sentRecord(name), "card");
      expect(content(p)).toEqual({ type: "business_card", userId: b.userid, corpName: b.corpname });
    };
  }
  if (kind === "location") {
    return (p) => {
      const b = bodyOf(sentRecord(name), "location");
      expect(content(p)).toEqual({
        type: "location",
        latitude: Number(b.latitude),
        longitude: Number(b.longitude),
        name: b.title,
        address: b.address,
        scale: Number(b.zoom),
      });
    };
  }
  if (kind === "link") {
    return (p) => {
      const b = bodyOf(sentRecord(name), "link");
      expect(content(p)).toEqual({ type: "link", title: b.title, description: b.description, url: b.link_url, picUrl: b.image_url });
    };
  }
  if (kind === "weapp") {
    return (p) => {
      const b = bodyOf(sentRecord(name), "weapp");
      expect(content(p)).toEqual({
        type: "miniprogram",
        title: b.title,
        description: b.description,
        userName: b.username,
        displayName: b.displayname,
      });
    };
  }
  if (kind === "news" || kind === "news-info") {
    return (p) => {
      const rec = sentRecord(name);
      const items = bodyOf(rec, kind === "news" ? "news" : "info").item as Obj[];
      expect(items.length).toBeGreaterThan(0);
      expect(content(p)).toEqual({
        type: "news",
        articles: items.map((a) => ({ title: a.title, description: a.description, url: a.url, picUrl: a.picurl })),
      });
    };
  }
  if (kind === "chatrecord") {
    return (p) => {
      const b = bodyOf(sentRecord(name), "chatrecord");
      const items = b.item as Obj[];
      const c = content(p);
      expect(c.type).toBe("chat_record");
      if (c.type !== "chat_record") return;
      expect(c.title).toBe(b.title);
      expect(c.items.map((i) => i.type)).toEqual(["text", "text", "image", "file", "link", "location"]);
      expect(c.items).toHaveLength(items.length);
    };
  }
  if (kind === "mixed") {
    return (p) => {
      const c = content(p);
      expect(c.type).toBe("mixed");
      if (c.type !== "mixed") return;
      expect(c.items.map((i) => i.type)).toEqual(["text", "image"]);
    };
  }
  if (kind === "action-switch") {
    return (p) => expect(content(p)).toMatchObject({ type: "structured", kind: "switch", title: "XuJinSheng" });
  }
  const st = STRUCTURED[kind];
  if (st !== undefined) {
    return (p) => {
      const rec = sentRecord(name);
      const b = bodyOf(rec, st.key);
      const c = content(p);
      expect(c).toMatchObject({ type: "structured", kind: st.kind });
      if (c.type !== "structured") return;
      expect(c.fields).toEqual(normalizeArchiveRecord(b));
      if (st.title !== undefined) {
        expect(b[st.title]).toBeTruthy();
        expect(c.title).toBe(b[st.title]);
      } else {
        expect(typeof c.title).toBe("string");
      }
    };
  }
  throw new Error(`no expectation for fixture ${name}`);
}

const COVERED_PREFIXES = ["record-", "seed-file", "unknown-", "push-type-", "message_id-number"];
const ALL = fixtureNames(A);
const TABLE = ALL.filter((n) => COVERED_PREFIXES.some((p) => n.startsWith(p)));
const RECORDS = TABLE.filter((n) => envelope(n).type === 101);

describe("archive fixtures, table-driven", () => {
  it("covers every fixture file", () => {
    expect(ALL.length).toBeGreaterThanOrEqual(40);
    expect(TABLE).toEqual(ALL);
    for (const name of ALL) expect(() => expectation(name)).not.toThrow();
    // every documented structured msgtype and every media msgtype has its own fixture
    for (const kind of [...Object.keys(STRUCTURED), ...Object.keys(MEDIA)]) expect(ALL).toContain(`record-${kind}.json`);
  });

  it.each(TABLE)("%s decodes as its name says", (name) => {
    expectation(name)(decodeFixture(name));
  });

  it.each(RECORDS)("%s: envelope and record fields", (name) => {
    const env = envelope(name);
    const rec = sentRecord(name);
    const p = recordOf(decodeFixture(name));
    const m = p.message;
    expect(p.pushType).toBe(101);
    expect(p.messageId).toBe(String(name === "message_id-number.json" ? "1531161872865219346" : env.message_id));
    expect(p.gmtCreate).toBe((env.gmt_create as number) * 1000);
    expect(m.channel).toBe("archive");
    expect(m.id).toBe(rec.msgid);
    expect(m.corpId).toBe(rec.corpid);
    expect(m.seq).toBe(Number(rec.seq));
    expect(m.action).toBe(rec.action);
    expect(m.time).toBe(Number(rec.msgtime ?? rec.time));
    expect(m.pushMessageId).toBe(p.messageId);
    expect(m.raw).toEqual(rec);
    expect(m.isGroup).toBe(rec.is_grp === "true");
    expect(m.isFromExternal).toBe(rec.is_from_ext === "true");
    if (rec.action === "switch") return;
    const from = rec.from as string;
    expect(m.from?.id).toBe(from);
    expect(m.from?.kind).toBe(rec.is_from_ext === "true" ? "external" : "member");
    const to = (rec.tolist as string).split(",");
    if (rec.roomid) {
      expect(m.roomId).toBe(rec.roomid);
      expect(m.conversationId).toBe(`archive:${rec.corpid}:room:${rec.roomid}`);
      expect(m.to).toEqual([{ kind: "group", id: rec.roomid }]);
    } else {
      expect(m.roomId).toBeUndefined();
      expect(m.conversationId).toBe(`archive:${rec.corpid}:${[from, to[0]].sort().join("|")}`);
      expect(m.to.map((i) => i.id)).toEqual(to);
    }
    // the normalized record never keeps nulls
    expect(JSON.stringify(p.record)).not.toContain(":null");
  });
});

// ---------------------------------------------------------------- field level

describe("archive field level", () => {
  it("seed-file.json: the seed's own push", () => {
    const p = recordOf(decodeFixture("seed-file.json"));
    expect(p.messageId).toBe("1531161872865219346");
    expect(p.gmtCreate).toBe(1656037941000);
    const m = p.message;
    expect(m.id).toBe("4538352996756104940_1691386670520_external");
    expect(m.seq).toBe(25825);
    expect(typeof m.seq).toBe("number");
    expect(m.time).toBe(1691386666454);
    expect(m.action).toBe("send");
    expect(m.corpId).toBe("ww1037de59e176cef9");
    expect(m.isGroup).toBe(false);
    expect(m.isFromExternal).toBe(true);
    expect(m.from).toEqual({ kind: "external", id: "wm1cKySwAAg9qJcBjjyWF8FArK4k5wHw" });
    expect(m.to).toEqual([{ kind: "member", id: "WangDaKeAi" }]);
    expect(m.conversationId).toBe("archive:ww1037de59e176cef9:WangDaKeAi|wm1cKySwAAg9qJcBjjyWF8FArK4k5wHw");
    expect(m.pushMessageId).toBe("1531161872865219346");
    const file = bodyOf(sentRecord("seed-file.json"), "file");
    expect(m.content).toEqual({
      type: "file",
      media: { sdkFileId: file.sdkfileid, md5: "dba562ac49757cbb9b9079d686076a87", size: 32768, fileName: "8.7预开票差额.xls", fileExt: "xls" },
    });
  });

  it("seed-file.json: the normalized record has numbers, booleans and no null keys", () => {
    const { record } = recordOf(decodeFixture("seed-file.json"));
    expect(record.seq).toBe(25825);
    expect(record.msgtime).toBe(1691386666454);
    expect(record.is_grp).toBe(false);
    expect(record.is_rb).toBe(false);
    expect(record.is_ext).toBe(false);
    expect(record.is_from_ext).toBe(true);
    expect(record.msgid).toBe("4538352996756104940_1691386670520_external");
    expect(record.roomid).toBe("");
    expect(record.content).toBe("");
    for (const k of ["id", "from_avatar", "user", "time", "text", "image", "sphfeed", "info"]) expect(k in record).toBe(false);
    const file = record.file as Obj;
    expect(file.filesize).toBe(32768);
    expect("attachment" in file).toBe(false);
    expect(file.md5sum).toBe("dba562ac49757cbb9b9079d686076a87");
  });

  it("message_id-number.json keeps the bare 19-digit message_id exact", () => {
    const text = fixture(A, "message_id-number.json");
    // the fixture is only meaningful because JSON.parse rounds the id
    expect(String((JSON.parse(text) as Obj).message_id)).not.toBe("1531161872865219346");
    const p = recordOf(decodeArchivePush(text));
    expect(p.messageId).toBe("1531161872865219346");
    expect(p.message.pushMessageId).toBe("1531161872865219346");
  });

  it("a bare-number message_id survives whitespace and key order, and small ids stay as they are", () => {
    const content = fixture(A, "seed-file.json").match(/"content": (".*")/)?.[1];
    expect(content).toBeDefined();
    const text = `{ "type" : 101 , "gmt_create": 1 ,\n "message_id" :\n 9223372036854775807 , "content": ${content}}`;
    expect(decodeArchivePush(text).messageId).toBe("9223372036854775807");
    expect(decodeArchivePush(`{"message_id": 42, "type": 19, "content": "{}"}`).messageId).toBe("42");
    expect(decodeArchivePush(`{"type": 19, "content": "{}"}`).messageId).toBe("");
  });

  it("a meetingid above 2^53 stays an exact string; small ones become numbers", () => {
    const big = "11101571002822706744";
    const text = withRecord("record-meeting.json", (r) => {
      (r.meeting as Obj).meetingid = big;
    });
    const p = recordOf(decodeArchivePush(text));
    expect((p.record.meeting as Obj).meetingid).toBe(big);
    const c = p.message.content;
    expect(c.type === "structured" && c.fields.meetingid).toBe(big);

    const small = recordOf(decodeFixture("record-meeting.json")).message.content;
    expect(small).toMatchObject({ type: "structured", kind: "meeting", title: "夕会", fields: { meetingid: 1210342560, starttime: 1603877400, status: 1 } });
  });

  it("group record: conversationId by room, receivers as the group", () => {
    const m = messageOf("record-group-text.json");
    expect(m.isGroup).toBe(true);
    expect(m.roomId).toBe("wrJ7ijBwAAG1vly_DzVI72Ghc-PtA5Dw");
    expect(m.conversationId).toBe("archive:ww1037de59e176cef9:room:wrJ7ijBwAAG1vly_DzVI72Ghc-PtA5Dw");
    expect(m.to).toEqual([{ kind: "group", id: "wrJ7ijBwAAG1vly_DzVI72Ghc-PtA5Dw" }]);
    expect(m.content).toEqual({ type: "text", text: "@王大可 请问发票什么时候能开？" });
  });

  it("1:1 conversationId is the same in both directions", () => {
    const there = messageOf("record-text.json");
    const back = decodeArchivePush(
      withRecord("record-text.json", (r) => {
        r.msgid = "reply";
        r.from = "icefog";
        r.tolist = "XuJinSheng";
      }),
    );
    expect(there.conversationId).toBe("archive:ww1037de59e176cef9:XuJinSheng|icefog");
    expect(recordOf(back).message.conversationId).toBe(there.conversationId);
  });

  it("chatrecord: item msgtime in seconds becomes ms, item content is parsed and normalized", () => {
    const rec = sentRecord("record-chatrecord.json");
    const items = bodyOf(rec, "chatrecord").item as Obj[];
    // the fixture keeps WeCom's quirk: item times are seconds, the record's time is ms
    expect(Number(items[0]!.msgtime)).toBeLessThan(1e11);
    expect(Number(rec.msgtime)).toBeGreaterThan(1e11);
    const c = messageOf("record-chatrecord.json").content;
    if (c.type !== "chat_record") throw new Error(c.type);
    expect(c.title).toBe("群聊");
    expect(c.items.map((i) => i.time)).toEqual(items.map((i) => Number(i.msgtime) * 1000));
    expect(c.items[0]).toEqual({ type: "text", time: 1603875610000, content: { content: "test" } });
    expect(c.items[1]?.content).toEqual({ content: "test2" });
    expect(c.items[2]?.content).toMatchObject({ md5sum: "50de8e5ae8ffe4f1df7a93841f71993a", filesize: 70961 });
    expect(c.items[3]?.content).toMatchObject({ filename: "大黄蜂10号（旗舰版）健康管理服务手册.doc", fileext: "doc", filesize: 22528 });
    expect(c.items[4]?.content).toMatchObject({ title: "邀请你加入群聊", link_url: "https://work.weixin.qq.com/wework_admin/external_room/join/exceed?vcode=xxx" });
    expect(c.items[5]?.content).toMatchObject({ latitude: 39.911125799, longitude: 116.586285899, zoom: 15 });
  });

  it("chatrecord: item msgtime already in ms stays as it is", () => {
    const text = withRecord("record-chatrecord.json", (r) => {
      ((r.chatrecord as Obj).item as Obj[])[0]!.msgtime = "1603875610123";
    });
    const c = recordOf(decodeArchivePush(text)).message.content;
    expect(c.type === "chat_record" && c.items[0]?.time).toBe(1603875610123);
  });

  it("mixed: every item is decoded like a record of its msgtype", () => {
    const c = messageOf("record-mixed.json").content;
    if (c.type !== "mixed") throw new Error(c.type);
    expect(c.items[0]).toEqual({ type: "text", text: "你好[微笑]\n" });
    expect(c.items[1]).toMatchObject({ type: "image", media: { md5: "368b6c18c82e6441bfd89b343e9d2429", size: 13177 } });
    const img = c.items[1];
    expect(img?.type === "image" && img.media.sdkFileId?.startsWith("CtYBMzA2OTAy")).toBe(true);
  });

  it("media details: size, duration, emotion size and type are numbers", () => {
    expect(messageOf("record-voice.json").content).toMatchObject({ type: "voice", media: { size: 6810 }, durationSec: 10 });
    expect(messageOf("record-video.json").content).toMatchObject({ type: "video", media: { size: 15169724 }, durationSec: 108 });
    expect(messageOf("record-image.json").content).toMatchObject({ type: "image", media: { size: 70961 } });
    expect(messageOf("record-emotion.json").content).toMatchObject({
      type: "emotion",
      media: { size: 962604, md5: "94c2b0bba52cc456cb8221b248096612" },
      emotionType: 1,
      width: 290,
      height: 290,
    });
    expect(messageOf("record-file.json").content).toMatchObject({ type: "file", media: { size: 18181, fileName: "资料.docx", fileExt: "docx" } });
  });

  it("collect details keep `collect_type`; vote items stay an array", () => {
    const collect = messageOf("record-collect.json").content;
    expect(collect).toMatchObject({ type: "structured", kind: "collect", title: "这是填表title" });
    expect(collect.type === "structured" && collect.fields.details).toEqual([
      { id: 1, ques: "表项1，文本", collect_type: "Text" },
      { id: 2, ques: "表项2，数字", collect_type: "Number" },
      { id: 3, ques: "表项3，日期", collect_type: "Date" },
      { id: 4, ques: "表项4，时间", collect_type: "Time" },
    ]);
    expect(messageOf("record-vote.json").content).toMatchObject({
      type: "structured",
      kind: "vote",
      fields: { votetitle: "团建地点投票", voteitem: ["北京", "上海"], votetype: 101, voteid: "2707235395181454978_1603875639" },
    });
    expect(messageOf("record-redpacket.json").content).toMatchObject({ fields: { type: 1, totalcnt: 1, totalamount: 3000 } });
    expect(messageOf("record-sphfeed.json").content).toMatchObject({ fields: { feedType: 4, sphName: "云游天地旅行家" } });
  });

  it("action switch: structured kind switch, time from `time`, the user as sender", () => {
    const m = messageOf("record-action-switch.json");
    expect(m.action).toBe("switch");
    expect(m.id).toBe("125289002219525886280");
    expect(m.time).toBe(1554119421840);
    expect(m.seq).toBe(25856);
    expect(m.from).toEqual({ kind: "member", id: "XuJinSheng" });
    expect(m.content).toEqual({ type: "structured", kind: "switch", title: "XuJinSheng", fields: { user: "XuJinSheng", time: 1554119421840 } });
     // a switch has no receiver: its conversation is the user's alone, with no empty peer
    expect(m.conversationId).toBe(`archive:${m.corpId ?? ""}:XuJinSheng`);
  });

  it("action recall in a group", () => {
    const m = messageOf("record-action-recall.json");
    expect(m.action).toBe("recall");
    expect(m.isGroup).toBe(true);
    expect(m.content).toEqual({ type: "recall", recalledId: "4538352996756104940_1691386670520_external" });
    expect(m.conversationId).toBe("archive:ww1037de59e176cef9:room:wrJ7ijBwAAG1vly_DzVI72Ghc-PtA5Dw");
  });

  it("news and disagree accept both placements", () => {
    expect(messageOf("record-news.json").content).toEqual(messageOf("record-news-info.json").content);
    const officialDisagree = withRecord("record-disagree.json", (r) => {
      r.agree = null;
      r.disagree = { userid: "wmErxtDgAA9AW32YyyuYRimKr7D1KWlw", disagree_time: "1603875944122" };
    });
    expect(recordOf(decodeArchivePush(officialDisagree)).message.content).toEqual({
      type: "consent",
      agreed: false,
      userId: "wmErxtDgAA9AW32YyyuYRimKr7D1KWlw",
      time: 1603875944122,
    });
  });

  it("msgtypes named like Object.prototype members decode as unknown, never crash", () => {
    for (const t of ["constructor", "toString", "__proto__", "hasOwnProperty", "valueOf"]) {
      const text = JSON.stringify({ message_id: "1", type: 101, content: JSON.stringify({ msgid: "m", msgtype: t }) });
      expect(recordOf(decodeArchivePush(text)).message.content).toMatchObject({ type: "unknown", msgType: t });
      const mixed = decodeArchiveRecord({ msgid: "m", msgtype: "mixed", mixed: { item: [{ type: t, content: "{}" }] } });
      expect(mixed.content).toMatchObject({ type: "mixed", items: [{ type: "unknown", msgType: t.toLowerCase() }] });
    }
  });

  it("type 101 content may also be an object; a string message_id is kept as sent", () => {
    const rec = sentRecord("record-text.json");
    const p = recordOf(decodeArchivePush({ message_id: "7", type: 101, content: rec }));
    expect(p.messageId).toBe("7");
    expect(p.gmtCreate).toBeUndefined();
    expect(p.message.content).toEqual({ type: "text", text: "test" });
    expect(p.message.raw).toBe(rec);
  });
});

// ---------------------------------------------------------------- normalizeArchiveRecord / decodeArchiveRecord

describe("normalizeArchiveRecord", () => {
  it("restores numbers and booleans by key, recursively, and drops nulls", () => {
    const out = normalizeArchiveRecord({
      seq: "12",
      msgid: "123",
      tolist: "15108264797",
      from: "18002520162",
      is_grp: "true",
      is_rb: "false",
      is_ext: "yes",
      user: null,
      location: { latitude: "39.5", longitude: "-116.25", zoom: "15", title: "100" },
      items: [{ msgtime: "1603875610", from_chatroom: "true", type: "ChatRecordText" }],
      text: { content: "true" },
    });
    expect(out).toEqual({
      seq: 12,
      msgid: "123",
      tolist: "15108264797",
      from: "18002520162",
      is_grp: true,
      is_rb: false,
      is_ext: "yes",
      location: { latitude: 39.5, longitude: -116.25, zoom: 15, title: "100" },
      items: [{ msgtime: 1603875610, from_chatroom: true, type: "ChatRecordText" }],
      text: { content: "true" },
    });
  });

  it("keeps integers beyond 2^53 and non-numeric text as strings", () => {
    expect(normalizeArchiveRecord({ meetingid: "11101571002822706744", id: "9007199254740993", seq: "abc", msgtime: "" })).toEqual({
      meetingid: "11101571002822706744",
      id: "9007199254740993",
      seq: "abc",
      msgtime: "",
    });
    expect(normalizeArchiveRecord({ meetingid: "9007199254740991" })).toEqual({ meetingid: 9007199254740991 });
  });

  it("leaves scalars and real numbers alone, and keeps `__proto__` keys as data", () => {
    expect(normalizeArchiveRecord("25825")).toBe("25825");
    expect(normalizeArchiveRecord(null)).toBeNull();
    expect(normalizeArchiveRecord({ seq: 5, is_grp: true })).toEqual({ seq: 5, is_grp: true });
    const out = normalizeArchiveRecord(JSON.parse('{"__proto__": {"polluted": "yes"}}')) as Obj;
    expect(Object.getPrototypeOf(out)).toBe(Object.prototype);
    expect(Object.hasOwn(out, "__proto__")).toBe(true);
    expect(({} as Obj).polluted).toBeUndefined();
  });
});

describe("decodeArchiveRecord", () => {
  it("decodes an SDK-style record (real numbers, tolist array)", () => {
    const rec = {
      msgid: "sdk-1",
      action: "send",
      from: "wmUser",
      tolist: ["zhangsan", "lisi"],
      roomid: "",
      msgtime: 1603875609704,
      msgtype: "text",
      text: { content: "hi" },
      seq: 7,
    };
    const m = decodeArchiveRecord(rec, rec, "42");
    expect(m).toMatchObject({
      channel: "archive",
      id: "sdk-1",
      seq: 7,
      time: 1603875609704,
      action: "send",
      isGroup: false,
      pushMessageId: "42",
      from: { kind: "external", id: "wmUser" },
      to: [
        { kind: "member", id: "zhangsan" },
        { kind: "member", id: "lisi" },
      ],
      conversationId: "archive::wmUser|zhangsan",
      content: { type: "text", text: "hi" },
    });
    expect(m.raw).toBe(rec);
    expect(m.corpId).toBeUndefined();
    expect(decodeArchiveRecord(rec).raw).toBe(rec);
  });

  it("defaults: action send, time 0, no sender", () => {
    const m = decodeArchiveRecord({ msgid: "x", msgtype: "text", text: { content: "" } });
    expect(m.action).toBe("send");
    expect(m.time).toBe(0);
    expect(m.from).toBeUndefined();
    expect(m.to).toEqual([]);
  });

  it("throws DecodeError without msgid", () => {
    expectDecodeError(() => decodeArchiveRecord({ msgtype: "text" }), /msgid/);
    expectDecodeError(() => decodeArchiveRecord({ msgid: "", msgtype: "text" }), /msgid/);
  });
});

// ---------------------------------------------------------------- malformed input

describe("decodeArchivePush: malformed input", () => {
  it.each([
    ["not JSON", "not json", /JSON/],
    ["truncated JSON", fixture(A, "seed-file.json").slice(0, 200), /JSON/],
    ["a JSON array", "[1,2]", /object/],
    ["a JSON string", '"101"', /object/],
    ["missing type", '{"message_id":"1","content":"{}"}', /type/],
    ["non-numeric type", '{"message_id":"1","type":"abc","content":"{}"}', /type/],
    ["type 101, content not JSON", '{"message_id":"1","type":101,"content":"{oops"}', /JSON/],
    ["type 101, content a JSON array", '{"message_id":"1","type":101,"content":"[1]"}', /object/],
    ["type 101, content a number", '{"message_id":"1","type":101,"content":5}', /record/],
    ["type 101, content null", '{"message_id":"1","type":101,"content":null}', /record/],
    ["type 101, content empty", '{"message_id":"1","type":101,"content":""}', /JSON/],
    ["type 101, record without msgid", '{"message_id":"1","type":101,"content":"{\\"msgtype\\":\\"text\\"}"}', /msgid/],
    ["type 101, msgid null", withRecord("record-text.json", (r) => {
      r.msgid = null;
    }), /msgid/],
  ])("%s → DecodeError", (_label, text, message) => {
    expectDecodeError(() => decodeArchivePush(text), message);
  });

  it("a numeric-string type is accepted", () => {
    const text = JSON.stringify({ ...envelope("record-text.json"), type: "101" });
    expect(decodeArchivePush(text).kind).toBe("record");
    expect(decodeArchivePush('{"type":"19","content":"x"}')).toMatchObject({ kind: "unknown", pushType: 19, content: "x" });
  });
});

// ---------------------------------------------------------------- properties

const MSGTYPES = [
  "text", "image", "revoke", "agree", "disagree", "voice", "video", "card", "location", "emotion", "file", "link", "weapp",
  "chatrecord", "todo", "vote", "collect", "redpacket", "meeting", "docmsg", "markdown", "news", "calendar", "mixed",
  "meeting_voice_call", "voip_doc_share", "external_redpacket", "sphfeed", "switch", "constructor", "__proto__", "toString",
];

/** Only BridgeErrors may escape. */
function onlyBridgeErrors(input: string | Obj): boolean {
  try {
    const p = decodeArchivePush(input);
    expect(["record", "unknown"]).toContain(p.kind);
    if (p.kind === "record") {
      expect(typeof p.message.id).toBe("string");
      expect(typeof p.message.conversationId).toBe("string");
      expect(typeof p.message.time).toBe("number");
    }
  } catch (e) {
    if (!(e instanceof BridgeError)) throw e;
    expect(e.code).toBe("decode_malformed");
  }
  return true;
}

describe("decodeArchivePush properties", () => {
  it("arbitrary strings and JSON texts: returns or throws a BridgeError", () => {
    fc.assert(fc.property(fc.oneof(fc.string(), fc.jsonValue().map((v) => JSON.stringify(v))), onlyBridgeErrors), { numRuns: 300 });
  });

  it("arbitrary envelopes and records: returns or throws a BridgeError", () => {
    const scalar = fc.oneof(fc.string(), fc.integer().map(String), fc.constantFrom("true", "false", "1e400", "-0"), fc.integer(), fc.boolean(), fc.constant(null));
    const item = fc.record(
      {
        type: fc.oneof(fc.constantFrom(...MSGTYPES), fc.constantFrom(...MSGTYPES).map((t) => `ChatRecord${t}`), fc.string()),
        msgtime: scalar,
        content: fc.oneof(fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)), fc.jsonValue({ maxDepth: 3 }), fc.string()),
      },
      { requiredKeys: [] },
    );
    const body = fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.record({ item: fc.oneof(fc.array(item, { maxLength: 4 }), scalar), title: scalar }, { requiredKeys: [] }));
    const record = fc
      .record(
        {
          msgid: scalar,
          msgtype: fc.oneof(fc.constantFrom(...MSGTYPES), fc.string()),
          action: fc.oneof(fc.constantFrom("send", "recall", "switch"), scalar),
          from: scalar,
          user: scalar,
          tolist: fc.oneof(scalar, fc.array(fc.oneof(fc.string(), fc.integer()))),
          roomid: scalar,
          msgtime: scalar,
          time: scalar,
          seq: scalar,
          corpid: scalar,
          is_grp: scalar,
          is_from_ext: scalar,
          body,
        },
        { requiredKeys: ["msgtype"] },
      )
      .map(({ body: b, ...r }) => ({ ...r, [String(r.msgtype)]: b, info: b, agree: b, doc: b, redpacket: b }) as Obj);
    const envelopeArb = fc.record(
      {
        message_id: fc.oneof(fc.string(), fc.integer(), fc.bigInt().map(String)),
        type: fc.oneof(fc.constant(101), fc.constant("101"), fc.integer(), fc.string(), fc.constant(null)),
        content: fc.oneof(record.map((r) => JSON.stringify(r)), record, fc.jsonValue({ maxDepth: 2 }), fc.string()),
        gmt_create: scalar,
      },
      { requiredKeys: [] },
    );
    fc.assert(fc.property(envelopeArb, (env) => onlyBridgeErrors(env as Obj) && onlyBridgeErrors(JSON.stringify(env))), { numRuns: 500 });
    // bare big message_id numbers in the text
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: 10n ** 30n }), record, (id, r) => {
        const p = decodeArchivePush(`{"message_id": ${id}, "type": 19, "content": ${JSON.stringify(JSON.stringify(r))}}`);
        return p.messageId === String(id);
      }),
    );
  });
});
