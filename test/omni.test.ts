import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  BridgeError,
  DecodeError,
  decodeOmniMessage,
  EncodeError,
  encodeOmniFromBody,
  encodeOmniToBody,
  OMNI_SIGNATURE_WINDOW_MS,
  OmniErrcode,
  OmniError,
  type OmniMessage,
  omniMessagePath,
  omniReply,
  omniSignature,
  omniSignedQuery,
  parseOmniBody,
  verifyOmniSignature,
} from "../src/index.js";
import { fixture, fixtureNames, jsonFixture } from "./helpers.js";

type Obj = Record<string, unknown>;

const O = "omni";
const vector = jsonFixture<{ appid: string; secret: string; timestamp: string; signature: string }>(O, "signature-vector.json");
const T = Number(vector.timestamp);

/** What `f` throws (fails when it returns). */
function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  throw new Error("expected a throw");
}

/** Expect an OmniError with the given errcode. */
function expectOmniError(f: () => unknown, errcode: number): void {
  const e = thrown(f);
  expect(e).toBeInstanceOf(OmniError);
  expect(e).toBeInstanceOf(BridgeError);
  expect((e as OmniError).errcode).toBe(errcode);
  expect((e as OmniError).code).toBe(`omni_${errcode}`);
}

/** Expect a DecodeError of format omni whose message names `field`. */
function expectDecodeError(f: () => unknown, field?: string | RegExp): void {
  const e = thrown(f);
  expect(e).toBeInstanceOf(DecodeError);
  expect((e as DecodeError).code).toBe("decode_malformed");
  expect((e as DecodeError).format).toBe("omni");
  if (field !== undefined) expect((e as Error).message).toMatch(field);
}

// ---------------------------------------------------------------- signature

describe("omni signature", () => {
  it("omniSignature matches the vector (sha1 hex of appid + secret + timestamp)", () => {
    expect(omniSignature(vector.appid, vector.secret, vector.timestamp)).toBe(vector.signature);
    expect(omniSignature(vector.appid, vector.secret, T)).toBe(vector.signature);
    expect(omniSignature(vector.appid, vector.secret, vector.timestamp)).toMatch(/^[0-9a-f]{40}$/);
  });

  const base = { appId: vector.appid, secret: vector.secret, timestamp: vector.timestamp, signature: vector.signature };

  it("accepts the vector with now inside the window (either side)", () => {
    expect(() => verifyOmniSignature({ ...base, now: T })).not.toThrow();
    expect(() => verifyOmniSignature({ ...base, now: T + OMNI_SIGNATURE_WINDOW_MS })).not.toThrow();
    expect(() => verifyOmniSignature({ ...base, now: T - 4 * 60_000 })).not.toThrow();
    expect(OMNI_SIGNATURE_WINDOW_MS).toBe(5 * 60_000);
  });

  it("is case-insensitive on the hex signature", () => {
    expect(() => verifyOmniSignature({ ...base, signature: vector.signature.toUpperCase(), now: T })).not.toThrow();
  });

  it("rejects a wrong signature with 30003", () => {
    const wrong = `${vector.signature.slice(0, -1)}${vector.signature.endsWith("0") ? "1" : "0"}`;
    expectOmniError(() => verifyOmniSignature({ ...base, signature: wrong, now: T }), OmniErrcode.BadSignature);
    expectOmniError(() => verifyOmniSignature({ ...base, signature: vector.signature.slice(1), now: T }), 30003);
    expectOmniError(() => verifyOmniSignature({ ...base, secret: "abcdeg", now: T }), 30003);
    expectOmniError(() => verifyOmniSignature({ ...base, appId: "1002", now: T }), 30003);
  });

  it("rejects a missing signature or timestamp with 30001", () => {
    expectOmniError(() => verifyOmniSignature({ ...base, signature: undefined, now: T }), OmniErrcode.MissingSignature);
    expectOmniError(() => verifyOmniSignature({ ...base, signature: null, now: T }), 30001);
    expectOmniError(() => verifyOmniSignature({ ...base, signature: "", now: T }), 30001);
    expectOmniError(() => verifyOmniSignature({ ...base, timestamp: undefined, now: T }), 30001);
    expectOmniError(() => verifyOmniSignature({ ...base, timestamp: "", now: T }), 30001);
  });

  it("rejects a timestamp 6 minutes off (either way) with 30003", () => {
    expectOmniError(() => verifyOmniSignature({ ...base, now: T + 6 * 60_000 }), 30003);
    expectOmniError(() => verifyOmniSignature({ ...base, now: T - 6 * 60_000 }), 30003);
    expect((thrown(() => verifyOmniSignature({ ...base, now: T + 6 * 60_000 })) as Error).message).toMatch(/300s window/);
  });

  it("accepts a custom window, and Infinity disables the age check", () => {
    expect(() => verifyOmniSignature({ ...base, now: T + 6 * 60_000, windowMs: 10 * 60_000 })).not.toThrow();
    expect(() => verifyOmniSignature({ ...base, now: Date.now(), windowMs: Number.POSITIVE_INFINITY })).not.toThrow();
    expectOmniError(() => verifyOmniSignature({ ...base, now: T + 2_000, windowMs: 1_000 }), 30003);
  });

  it("rejects a timestamp that is not milliseconds digits with 30003", () => {
    for (const ts of ["abc", "1407812629434.5", "-1407812629434", "12345678901234567"]) {
      expectOmniError(() => verifyOmniSignature({ ...base, timestamp: ts, signature: omniSignature(vector.appid, vector.secret, ts), now: T, windowMs: Number.POSITIVE_INFINITY }), 30003);
    }
  });

  it("uses Date.now() by default", () => {
    const ts = String(Date.now());
    expect(() => verifyOmniSignature({ ...base, timestamp: ts, signature: omniSignature(vector.appid, vector.secret, ts) })).not.toThrow();
    expectOmniError(() => verifyOmniSignature(base), 30003); // the 2014 vector is stale today
  });

  it("omniSignedQuery builds timestamp=…&signature=… that verifies", () => {
    expect(omniSignedQuery(vector.appid, vector.secret, T)).toBe(`timestamp=${vector.timestamp}&signature=${vector.signature}`);
    expect(omniSignedQuery(vector.appid, vector.secret, T + 0.9)).toBe(`timestamp=${vector.timestamp}&signature=${vector.signature}`);
    const q = new URLSearchParams(omniSignedQuery("app", "s3cret"));
    expect([...q.keys()]).toEqual(["timestamp", "signature"]);
    expect(() => verifyOmniSignature({ appId: "app", secret: "s3cret", timestamp: q.get("timestamp"), signature: q.get("signature") })).not.toThrow();
  });

  it("property: a signed query always verifies at its own time and fails with another secret", () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), fc.string({ minLength: 1 }), fc.integer({ min: 0, max: 4_102_444_800_000 }), (appId, secret, other, now) => {
        const q = new URLSearchParams(omniSignedQuery(appId, secret, now));
        verifyOmniSignature({ appId, secret, timestamp: q.get("timestamp"), signature: q.get("signature"), now });
        const e = thrown(() => verifyOmniSignature({ appId, secret: secret + other, timestamp: q.get("timestamp"), signature: q.get("signature"), now }));
        return e instanceof OmniError && e.errcode === 30003;
      }),
    );
  });
});

// ---------------------------------------------------------------- paths and replies

describe("omni paths and replies", () => {
  it("omniMessagePath", () => {
    expect(omniMessagePath("v1", "1001")).toBe("/api/v1/1001/staffService/message");
    expect(omniMessagePath("v1", "a/b?c")).toBe("/api/v1/a%2Fb%3Fc/staffService/message");
  });

  it("omniReply: 0 is ok, other codes default to error, errmsg as given", () => {
    expect(omniReply()).toEqual(jsonFixture(O, "reply-ok.json"));
    expect(omniReply(0)).toEqual({ errcode: 0, errmsg: "ok" });
    expect(omniReply(OmniErrcode.BadSignature)).toEqual({ errcode: 30003, errmsg: "error" });
    expect(omniReply(30003, "Signature验证失败。")).toEqual(jsonFixture(O, "reply-30003.json"));
  });

  it("OmniErrcode values", () => {
    expect(OmniErrcode).toEqual({ Ok: 0, MissingSignature: 30001, UnknownAppId: 30002, BadSignature: 30003, Internal: 30004, BadJson: 30005 });
    const e = new OmniError(OmniErrcode.Internal, "queue down");
    expect(e.message).toBe("30004 queue down");
    expect(e.name).toBe("OmniError");
  });
});

// ---------------------------------------------------------------- decode, table-driven

/** What each message fixture promises. */
const MESSAGE_CASES: Record<string, (m: OmniMessage, body: Obj) => void> = {
  "to-omni-text.json": (m) => expect(m.content).toEqual({ type: "text", text: "Hello World!" }),
  "to-omni-image.json": (m, b) => expect(m.content).toEqual({ type: "image", media: { url: b.Content } }),
  "to-omni-voice.json": (m, b) => expect(m.content).toEqual({ type: "voice", media: { url: b.Content } }),
  "to-omni-video.json": (m, b) => expect(m.content).toEqual({ type: "video", media: { url: b.Content } }),
  "to-omni-file.json": (m, b) => expect(m.content).toEqual({ type: "file", media: { url: b.Content } }),
  "to-omni-location.json": (m) =>
    expect(m.content).toEqual({
      type: "location",
      latitude: 39.911125799,
      longitude: 116.586285899,
      name: "xxx管理中心",
      address: "北京市xxx区xxx路xxx大厦x座",
    }),
  "to-omni-link.json": (m, b) => {
    const tag = b.Tag as Obj;
    expect(m.content).toEqual({ type: "link", title: tag.title, url: tag.url, description: tag.description, picUrl: tag.picUrl });
  },
  "to-omni-event.json": (m) => {
    expect(m.content).toEqual({ type: "event", event: { name: "omni_event", key: "CLICK.RG" } });
    expect(m.msgType).toBe("event.CLICK.RG");
  },
  "from-omni-text.json": (m) => expect(m.content).toEqual({ type: "text", text: "亲,你好,欢迎回来。" }),
  "from-omni-image.json": (m, b) => expect(m.content).toEqual({ type: "image", media: { url: b.Content } }),
  "from-omni-file.json": (m, b) => expect(m.content).toEqual({ type: "file", media: { url: b.Content } }),
  "from-omni-unknown.json": (m, b) => {
    expect(m.content).toEqual({ type: "unknown", msgType: "card", raw: { MsgType: "card", Content: b.Content, Tag: { survey_id: 42 } } });
  },
};

const MESSAGE_FIXTURES = [...fixtureNames(O, "to-omni-"), ...fixtureNames(O, "from-omni-")].filter((n) => n !== "to-omni-leavemessage.json");

describe("decodeOmniMessage on the fixtures", () => {
  it("covers every fixture file", () => {
    const other = ["to-omni-leavemessage.json", "reply-ok.json", "reply-30003.json", "signature-vector.json"];
    expect([...Object.keys(MESSAGE_CASES), ...other].sort()).toEqual(fixtureNames(O));
    expect(MESSAGE_FIXTURES.sort()).toEqual(Object.keys(MESSAGE_CASES).sort());
  });

  it.each(MESSAGE_FIXTURES)("%s", (name) => {
    const text = fixture(O, name);
    const body = JSON.parse(text) as Obj;
    const m = decodeOmniMessage(text);
    expect(m.channel).toBe("omni");
    expect(m.msgType).toBe(body.MsgType);
    expect(m.raw).toEqual(body);
    expect(m.time).toBe(0);
    expect(m.id).toMatch(/^omni:[0-9a-f]{40}$/);
    expect(m.tag).toEqual(body.Tag);
    expect(m.serviceId).toBe(body.ServiceId);
    if (name.startsWith("to-omni-")) {
      expect(m.direction).toBe("to_omni");
      expect(m.conversationId).toBe(body.FromUserId);
      const from: Obj = { kind: "customer", id: body.FromUserId };
      if (body.FromUserName) from.name = body.FromUserName;
      expect(m.from).toEqual(from);
      expect(m.to).toEqual([]);
      expect(m.workerNum).toBeUndefined();
    } else {
      expect(m.direction).toBe("from_omni");
      expect(m.conversationId).toBe(body.ToUserId);
      expect(m.to).toEqual([{ kind: "customer", id: body.ToUserId }]);
      expect(m.workerNum).toBe(body.WorkerNum);
      // WorkerName "" (as the vendor's adapter sends it) is absent
      expect(m.workerName).toBe(body.WorkerName || undefined);
      const agent: Obj = { kind: "agent", id: body.WorkerNum };
      if (body.WorkerName) agent.name = body.WorkerName;
      expect(m.from).toEqual(agent);
    }
    MESSAGE_CASES[name]!(m, body);
  });

  it("the same body decodes the same from text or object, with the same default id", () => {
    for (const name of MESSAGE_FIXTURES) {
      const text = fixture(O, name);
      expect(decodeOmniMessage(jsonFixture(O, name))).toEqual(decodeOmniMessage(text));
    }
    expect(decodeOmniMessage(fixture(O, "to-omni-text.json")).id).not.toBe(decodeOmniMessage(fixture(O, "from-omni-text.json")).id);
  });

  it("context id and time are used when given", () => {
    const m = decodeOmniMessage(fixture(O, "from-omni-text.json"), { id: "1407812629434:82f3", time: 1407812629434 });
    expect(m.id).toBe("1407812629434:82f3");
    expect(m.time).toBe(1407812629434);
  });

  it("to-omni-leavemessage.json is the leavemessage API, not a staffService message: DecodeError naming MsgType", () => {
    // leavemessage has FromUserId but no MsgType / Content: the staffService decoder must not guess
    expectDecodeError(() => decodeOmniMessage(fixture(O, "to-omni-leavemessage.json")), /MsgType/);
    expectDecodeError(() => parseOmniBody(fixture(O, "to-omni-leavemessage.json")), /MsgType/);
  });

  it("the reply and signature fixtures are not messages", () => {
    for (const name of ["reply-ok.json", "reply-30003.json", "signature-vector.json"]) expectDecodeError(() => decodeOmniMessage(fixture(O, name)), /MsgType/);
  });
});

describe("decodeOmniMessage content rules", () => {
  const to = (MsgType: string, Content: string, Tag?: unknown) => decodeOmniMessage({ FromUserId: "u1", MsgType, Content, Tag });

  it("location: Tag lat/lon as numbers or numeric strings; without them the readable Content as text", () => {
    expect(to("location", "somewhere", { latitude: "39.5", longitude: "116.25" }).content).toEqual({
      type: "location",
      latitude: 39.5,
      longitude: 116.25,
      address: "somewhere",
    });
    expect(to("location", "somewhere").content).toEqual({ type: "text", text: "somewhere" });
    expect(to("location", "somewhere", { latitude: "x", longitude: 1 }).content).toEqual({ type: "text", text: "somewhere" });
  });

  it("link: without Tag, Content is both title and url", () => {
    expect(to("link", "https://example.com/").content).toEqual({ type: "link", title: "https://example.com/", url: "https://example.com/" });
  });

  it("MsgType event: Content is the key; event.X: the key is in MsgType", () => {
    expect(to("event", "CLICK.RG").content).toEqual({ type: "event", event: { name: "omni_event", key: "CLICK.RG" } });
    expect(to("event.CLICK.RG", "请转人工").content).toEqual({ type: "event", event: { name: "omni_event", key: "CLICK.RG" } });
  });

  it("unknown MsgType keeps the payload", () => {
    expect(to("card", "{}", [1]).content).toEqual({ type: "unknown", msgType: "card", raw: { MsgType: "card", Content: "{}", Tag: [1] } });
    expect(to("TEXT", "hi").content).toMatchObject({ type: "unknown", msgType: "TEXT" });
  });

  it("Tag null is absent; a numeric WorkerNum becomes a string", () => {
    const m = decodeOmniMessage({ ToUserId: "u1", WorkerNum: 8001, MsgType: "text", Content: "x", Tag: null, ServiceId: "" });
    expect(m.tag).toBeUndefined();
    expect("tag" in m).toBe(false);
    expect(m.workerNum).toBe("8001");
    expect(m.serviceId).toBeUndefined();
    expect(m.from).toEqual({ kind: "agent", id: "8001" });
  });

  it("a from_omni body without WorkerNum has no sender", () => {
    expect(decodeOmniMessage({ ToUserId: "u1", MsgType: "text", Content: "x" }).from).toBeUndefined();
  });
});

// ---------------------------------------------------------------- parseOmniBody errors

describe("parseOmniBody", () => {
  it("treats a null ToUserId as absent and reads the body as APP → 全媒体", () => {
    expect(parseOmniBody({ ToUserId: null, FromUserId: "u", MsgType: "text", Content: "x" })).toEqual({ FromUserId: "u", MsgType: "text", Content: "x" });
  });

  it("returns the body of either direction without empty optionals", () => {
    expect(parseOmniBody(fixture(O, "to-omni-text.json"))).toEqual({ FromUserId: "123", MsgType: "text", Content: "Hello World!" });
    expect(parseOmniBody(fixture(O, "from-omni-file.json"))).toEqual({
      ToUserId: "wmGAgeDQAAdBjb8CK4ieMPRm7Cqm-9VA",
      WorkerNum: "8001",
      ServiceId: "1c9e3a52-8f7b-4d36-9f0e-2b7a5d1e4c10",
      MsgType: "file",
      Content: "https://qmt.example.com/files/1001/2024/3/8/%E6%8A%A5%E4%BB%B7%E5%8D%95.pdf",
      Tag: {},
    });
  });

  it.each([
    ["missing MsgType", { FromUserId: "u", Content: "x" }, /MsgType/],
    ["empty MsgType", { FromUserId: "u", MsgType: "", Content: "x" }, /MsgType/],
    ["MsgType a number", { FromUserId: "u", MsgType: 1, Content: "x" }, /MsgType/],
    ["missing Content", { FromUserId: "u", MsgType: "text" }, /Content/],
    ["Content a number", { FromUserId: "u", MsgType: "text", Content: 5 }, /Content/],
    ["Content an object", { FromUserId: "u", MsgType: "text", Content: { text: "x" } }, /Content/],
    ["Content null", { FromUserId: "u", MsgType: "text", Content: null }, /Content/],
    ["neither ToUserId nor FromUserId", { MsgType: "text", Content: "x" }, /ToUserId.*FromUserId/],
    ["empty FromUserId", { FromUserId: "", MsgType: "text", Content: "x" }, /FromUserId/],
    ["FromUserId a number", { FromUserId: 123, MsgType: "text", Content: "x" }, /FromUserId/],
    ["empty ToUserId", { ToUserId: "", MsgType: "text", Content: "x" }, /ToUserId/],
    ["WorkerNum a boolean", { ToUserId: "u", WorkerNum: true, MsgType: "text", Content: "x" }, /WorkerNum/],
    ["WorkerName an object", { ToUserId: "u", WorkerName: {}, MsgType: "text", Content: "x" }, /WorkerName/],
    ["FromUserName an array", { FromUserId: "u", FromUserName: [], MsgType: "text", Content: "x" }, /FromUserName/],
    ["ServiceId a boolean", { FromUserId: "u", ServiceId: false, MsgType: "text", Content: "x" }, /ServiceId/],
  ])("%s → DecodeError naming the field", (_label, body, field) => {
    expectDecodeError(() => parseOmniBody(body as Obj), field);
    expectDecodeError(() => parseOmniBody(JSON.stringify(body)), field);
    expectDecodeError(() => decodeOmniMessage(body as Obj), field);
  });

  it.each([
    ["not JSON", "not json", /JSON/],
    ["truncated", '{"FromUserId":"u"', /JSON/],
    ["an array", "[]", /object/],
    ["null", "null", /object/],
    ["a string", '"text"', /object/],
  ])("%s → DecodeError", (_label, text, message) => {
    expectDecodeError(() => parseOmniBody(text), message);
    expectDecodeError(() => decodeOmniMessage(text), message);
  });

  it("a parsed non-object passed at runtime is a DecodeError too", () => {
    expectDecodeError(() => parseOmniBody(null as unknown as Obj), /object/);
    expectDecodeError(() => decodeOmniMessage([] as unknown as Obj), /object/);
  });
});

// ---------------------------------------------------------------- encode

describe("encodeOmniToBody / encodeOmniFromBody", () => {
  it("returns a copy without undefined keys", () => {
    const input = { FromUserId: "u1", FromUserName: undefined, MsgType: "text", Content: "hi" };
    const out = encodeOmniToBody(input);
    expect(out).toEqual({ FromUserId: "u1", MsgType: "text", Content: "hi" });
    expect(Object.keys(out)).not.toContain("FromUserName");
    expect(out).not.toBe(input);
    expect(encodeOmniFromBody({ ToUserId: "u1", WorkerNum: "8001", MsgType: "event.CLICK.RG", Content: "", Tag: { a: 1 } })).toEqual({
      ToUserId: "u1",
      WorkerNum: "8001",
      MsgType: "event.CLICK.RG",
      Content: "",
      Tag: { a: 1 },
    });
  });

  it.each([
    ["FromUserId", { FromUserId: "", MsgType: "text", Content: "x" }],
    ["MsgType", { FromUserId: "u", MsgType: "", Content: "x" }],
    ["Content", { FromUserId: "u", MsgType: "text", Content: undefined }],
    ["Content", { FromUserId: "u", MsgType: "text", Content: 5 }],
  ])("encodeOmniToBody refuses a bad %s", (field, body) => {
    const e = thrown(() => encodeOmniToBody(body as unknown as Parameters<typeof encodeOmniToBody>[0]));
    expect(e).toBeInstanceOf(EncodeError);
    expect((e as EncodeError).code).toBe("encode_invalid");
    expect((e as EncodeError).format).toBe("omni");
    expect((e as Error).message).toContain(field);
  });

  it.each([
    ["ToUserId", { ToUserId: "", MsgType: "text", Content: "x" }],
    ["MsgType", { ToUserId: "u", MsgType: "", Content: "x" }],
    ["Content", { ToUserId: "u", MsgType: "text", Content: null }],
  ])("encodeOmniFromBody refuses a bad %s", (field, body) => {
    const e = thrown(() => encodeOmniFromBody(body as unknown as Parameters<typeof encodeOmniFromBody>[0]));
    expect(e).toBeInstanceOf(EncodeError);
    expect((e as Error).message).toContain(field);
  });

  it("encode → JSON → decode round-trips both directions", () => {
    const from = encodeOmniFromBody({ ToUserId: "wm1", WorkerNum: "8001", WorkerName: "小王", ServiceId: "s1", MsgType: "text", Content: "你好" });
    const m = decodeOmniMessage(JSON.stringify(from));
    expect(m).toMatchObject({ direction: "from_omni", conversationId: "wm1", workerNum: "8001", workerName: "小王", serviceId: "s1", content: { type: "text", text: "你好" } });
    const toBody = encodeOmniToBody({ FromUserId: "wm1", FromUserName: "张三", MsgType: "image", Content: "https://x/y.png", Tag: { md5: "m" } });
    expect(parseOmniBody(JSON.stringify(toBody))).toEqual(toBody);
    expect(decodeOmniMessage({ ...toBody })).toMatchObject({ direction: "to_omni", conversationId: "wm1", content: { type: "image", media: { url: "https://x/y.png" } } });
  });
});

// ---------------------------------------------------------------- properties

/** Only BridgeErrors may escape decodeOmniMessage. */
function onlyBridgeErrors(input: string | Obj): boolean {
  try {
    const m = decodeOmniMessage(input);
    expect(["to_omni", "from_omni"]).toContain(m.direction);
    expect(typeof m.conversationId).toBe("string");
    expect(m.conversationId).not.toBe("");
  } catch (e) {
    if (!(e instanceof BridgeError)) throw e;
    expect(e).toBeInstanceOf(DecodeError);
  }
  return true;
}

describe("decodeOmniMessage properties", () => {
  it("arbitrary strings and JSON texts: returns or throws a BridgeError", () => {
    fc.assert(fc.property(fc.oneof(fc.string(), fc.jsonValue().map((v) => JSON.stringify(v))), onlyBridgeErrors), { numRuns: 300 });
  });

  it("arbitrary bodies (as objects and as text): returns or throws a BridgeError", () => {
    const any = fc.oneof(fc.string(), fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.jsonValue({ maxDepth: 2 }));
    const body = fc.record(
      {
        ToUserId: any,
        FromUserId: any,
        FromUserName: any,
        WorkerNum: any,
        WorkerName: any,
        ServiceId: any,
        MsgType: fc.oneof(fc.constantFrom("text", "image", "voice", "video", "file", "location", "link", "event", "event.CLICK.RG", "event.", "constructor", "__proto__"), any),
        Content: fc.oneof(fc.string(), any),
        Tag: fc.oneof(
          fc.record({ latitude: any, longitude: any, name: any, address: any, title: any, url: any, description: any, picUrl: any }, { requiredKeys: [] }),
          any,
        ),
      },
      { requiredKeys: [] },
    );
    fc.assert(fc.property(body, (b) => onlyBridgeErrors(b as Obj) && onlyBridgeErrors(JSON.stringify(b))), { numRuns: 500 });
  });
});
