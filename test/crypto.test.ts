import { createCipheriv } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  BridgeError,
  parseCallbackEnvelope,
  parseEncodingAESKey,
  parseXml,
  pkcs7Pad,
  pkcs7Unpad,
  safeEqual,
  signature,
  WeComCrypto,
  WeComCryptoError,
  xmlReplyEnvelope,
} from "../src/index.js";
import { vectors } from "./helpers.js";

const url = vectors.official_verify_url;
const msg = vectors.official_decrypt_msg;
const bot = vectors.aibot_stream_reply;

const appCrypto = (over: Partial<ConstructorParameters<typeof WeComCrypto>[0]> = {}) =>
  new WeComCrypto({ token: msg.token, encodingAESKey: msg.encodingAESKey, receiveId: msg.receiveId, ...over });

/** Expect fn to throw a WeComCryptoError with this official code. */
function expectCode(fn: () => unknown, errcode: number): WeComCryptoError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(WeComCryptoError);
    expect((e as WeComCryptoError).errcode).toBe(errcode);
    expect((e as WeComCryptoError).message).toContain(String(errcode));
    return e as WeComCryptoError;
  }
  throw new Error(`expected error ${errcode}, nothing was thrown`);
}

/** Encrypt an arbitrary frame with the vector's key (to build broken ciphertexts). */
function rawEncrypt(plain: Buffer, encodingAESKey = msg.encodingAESKey): string {
  const key = parseEncodingAESKey(encodingAESKey);
  const c = createCipheriv("aes-256-cbc", key, key.subarray(0, 16)).setAutoPadding(false);
  return Buffer.concat([c.update(plain), c.final()]).toString("base64");
}

describe("official vectors", () => {
  it("computes the URL-verification signature", () => {
    expect(signature(url.token, url.timestamp, url.nonce, url.echostr)).toBe(url.msg_signature);
  });

  it("answers URL verification with the bare plaintext", () => {
    const c = new WeComCrypto({ token: url.token, encodingAESKey: url.encodingAESKey, receiveId: url.receiveId });
    const plain = c.verifyUrl({ msg_signature: url.msg_signature, timestamp: url.timestamp, nonce: url.nonce, echostr: url.echostr });
    expect(plain).toBe(url.plaintext);
  });

  it("decrypts the official callback body", () => {
    const { encrypt, toUserName, agentId } = parseCallbackEnvelope(msg.body);
    expect(toUserName).toBe("ww1436e0e65a779aee");
    expect(agentId).toBe("1000002");
    const plain = appCrypto().decryptCallback({ msg_signature: msg.msg_signature, timestamp: msg.timestamp, nonce: msg.nonce }, encrypt);
    expect(plain).toBe(msg.plaintext);
  });

  it("reports the receiveId and random prefix of a decrypted frame", () => {
    const d = appCrypto().decrypt(parseCallbackEnvelope(msg.body).encrypt);
    expect(d.receiveId).toBe(msg.receiveId);
    expect(d.random).toHaveLength(16);
  });

  it("encrypts the AI-bot reply vector byte for byte with a fixed random prefix", () => {
    const c = new WeComCrypto({ token: bot.token, encodingAESKey: bot.encodingAESKey });
    const r = c.encryptReply(bot.plaintext, bot.timestamp, bot.nonce, bot.random);
    expect(r).toEqual({ encrypt: bot.encrypt, msgsignature: bot.msgsignature, timestamp: bot.timestamp, nonce: bot.nonce });
    expect(JSON.parse(c.encryptJsonReply(bot.plaintext, bot.timestamp, bot.nonce, bot.random))).toEqual(r);
    expect(c.decryptCallback({ msg_signature: bot.msgsignature, timestamp: bot.timestamp, nonce: bot.nonce }, bot.encrypt)).toBe(bot.plaintext);
  });
});

describe("error codes", () => {
  const enc = parseCallbackEnvelope(msg.body).encrypt;
  const q = { msg_signature: msg.msg_signature, timestamp: msg.timestamp, nonce: msg.nonce };

  it("-40001 for a wrong signature, a changed timestamp or a missing echostr", () => {
    expectCode(() => appCrypto().decryptCallback({ ...q, msg_signature: "0".repeat(40) }, enc), -40001);
    expectCode(() => appCrypto().decryptCallback({ ...q, timestamp: "1476422780" }, enc), -40001);
    expectCode(() => appCrypto({ token: "another" }).decryptCallback(q, enc), -40001);
    expectCode(() => appCrypto().verifyUrl({ ...q }), -40001);
  });

  it("accepts an upper-case hex signature", () => {
    expect(appCrypto().decryptCallback({ ...q, msg_signature: q.msg_signature.toUpperCase() }, enc)).toBe(msg.plaintext);
  });

  it("-40002 for a body that is not an envelope", () => {
    expectCode(() => parseCallbackEnvelope("<xml><ToUserName>a</ToUserName></xml>"), -40002);
    expectCode(() => parseCallbackEnvelope("<xml><Encrypt>abc</xml>"), -40002);
    expectCode(() => parseCallbackEnvelope('{"encrypt": 1}'), -40002);
    expectCode(() => parseCallbackEnvelope("{not json"), -40002);
    expect(parseCallbackEnvelope(' {"encrypt":"abcd"}').encrypt).toBe("abcd");
  });

  it("-40004 for an EncodingAESKey that is not 43 base64 characters of 32 bytes", () => {
    expectCode(() => parseEncodingAESKey("short"), -40004);
    expectCode(() => parseEncodingAESKey(`${msg.encodingAESKey}A`), -40004);
    expectCode(() => parseEncodingAESKey(`${msg.encodingAESKey.slice(0, 42)}!`), -40004);
    expectCode(() => new WeComCrypto({ token: "t", encodingAESKey: "x".repeat(44) }), -40004);
    expect(parseEncodingAESKey(msg.encodingAESKey)).toHaveLength(32);
  });

  it("-40005 when the receiveId is not the configured one, and skips the check when empty", () => {
    expectCode(() => appCrypto({ receiveId: "wwOTHER" }).decrypt(enc), -40005);
    expect(appCrypto({ receiveId: "" }).decrypt(enc).message).toBe(msg.plaintext);
    expect(appCrypto({ receiveId: undefined }).decrypt(enc).receiveId).toBe(msg.receiveId);
  });

  it("-40007 for ciphertext of a bad length or with bad padding", () => {
    expectCode(() => appCrypto().decrypt(Buffer.alloc(20).toString("base64")), -40007);
    // a frame whose last byte is 0 (not a padding length)
    expectCode(() => appCrypto().decrypt(rawEncrypt(Buffer.alloc(32, 0))), -40007);
    // padding bytes that disagree
    const bad = Buffer.alloc(32, 4);
    bad[30] = 9;
    expectCode(() => appCrypto().decrypt(rawEncrypt(bad)), -40007);
  });

  it("-40008 for a frame whose length field overruns it", () => {
    const frame = Buffer.concat([Buffer.alloc(16, 1), Buffer.from([0, 0, 1, 0]), Buffer.from("hi")]);
    expectCode(() => appCrypto().decrypt(rawEncrypt(pkcs7Pad(frame))), -40008);
    expectCode(() => appCrypto().decrypt(rawEncrypt(pkcs7Pad(Buffer.alloc(10, 1)))), -40008);
  });

  it("-40010 for ciphertext that is not base64", () => {
    expectCode(() => appCrypto().decrypt("not base64!"), -40010);
    expectCode(() => appCrypto().decrypt(`${enc.slice(0, 20)}*${enc.slice(21)}`), -40010);
    expectCode(() => appCrypto().decrypt(""), -40010);
  });

  it("-40006 for a random prefix that is not 16 bytes", () => {
    expectCode(() => appCrypto().encrypt("x", "short"), -40006);
  });

  it("errors carry a stable code and never the key or token", () => {
    const e = expectCode(() => appCrypto({ receiveId: "wwOTHER" }).decrypt(enc), -40005);
    expect(e.code).toBe("wecom_crypto_receive_id");
    expect(e).toBeInstanceOf(BridgeError);
    for (const secret of [msg.encodingAESKey, msg.token, msg.receiveId]) expect(e.message).not.toContain(secret);
  });
});

describe("timestamp window", () => {
  const enc = parseCallbackEnvelope(msg.body).encrypt;
  const q = { msg_signature: msg.msg_signature, timestamp: msg.timestamp, nonce: msg.nonce };
  const at = (seconds: number) => () => seconds * 1000;

  it("is off by default: WeCom retries may carry old timestamps", () => {
    expect(appCrypto().decryptCallback(q, enc)).toBe(msg.plaintext);
  });

  it("accepts timestamps inside the window and rejects those outside with -40001", () => {
    const ts = Number(msg.timestamp);
    expect(appCrypto({ timestampWindowSec: 300, clock: at(ts + 299) }).decryptCallback(q, enc)).toBe(msg.plaintext);
    expect(appCrypto({ timestampWindowSec: 300, clock: at(ts - 300) }).decryptCallback(q, enc)).toBe(msg.plaintext);
    const e = expectCode(() => appCrypto({ timestampWindowSec: 300, clock: at(ts + 301) }).decryptCallback(q, enc), -40001);
    expect(e.message).toContain("window");
    expectCode(() => appCrypto({ timestampWindowSec: 300, clock: at(ts) }).decryptCallback({ ...q, timestamp: "abc" }, enc), -40001);
  });

  it("uses the injected clock for reply timestamps", () => {
    const r = appCrypto({ clock: () => 1_700_000_000_123 }).encryptReply("x", undefined, "n");
    expect(r.timestamp).toBe("1700000000");
  });
});

describe("reply envelope", () => {
  it("wraps an encrypted reply in the XML envelope, signature over the same fields", () => {
    const c = appCrypto();
    const xml = c.encryptXmlReply("<xml><Content>ok</Content></xml>", "1409659813", "1372623149", "aaaaaaaaaaaaaaaa");
    const env = parseCallbackEnvelope(xml);
    const sig = /<MsgSignature><!\[CDATA\[([0-9a-f]{40})\]\]><\/MsgSignature>/.exec(xml)?.[1];
    expect(xml).toContain("<TimeStamp>1409659813</TimeStamp>");
    expect(sig).toBe(c.signature("1409659813", "1372623149", env.encrypt));
    expect(c.decryptCallback({ msg_signature: sig as string, timestamp: "1409659813", nonce: "1372623149" }, env.encrypt)).toBe(
      "<xml><Content>ok</Content></xml>",
    );
  });

  it("cannot be broken out of by a nonce containing ]]>", () => {
    const xml = xmlReplyEnvelope({ encrypt: "abc=", msgsignature: "f".repeat(40), timestamp: "x]]>", nonce: "n]]><Evil/>" });
    const doc = parseXml(xml).value;
    expect(doc.Nonce).toBe("n]]><Evil/>");
    expect(doc.TimeStamp).toBe("x]]>");
    expect(Object.keys(doc)).toEqual(["Encrypt", "MsgSignature", "TimeStamp", "Nonce"]);
  });
});

describe("primitives", () => {
  it("PKCS#7 pads to 32-byte blocks with 1..32 bytes", () => {
    for (const len of [0, 1, 31, 32, 33, 63, 64]) {
      const padded = pkcs7Pad(Buffer.alloc(len, 7));
      expect(padded.length % 32).toBe(0);
      const pad = padded.length - len;
      expect(pad).toBeGreaterThanOrEqual(1);
      expect(pad).toBeLessThanOrEqual(32);
      expect(pkcs7Unpad(padded)).toEqual(Buffer.alloc(len, 7));
    }
  });

  it("safeEqual compares exactly", () => {
    expect(safeEqual("abc", "abc")).toBe(true);
    expect(safeEqual("abc", "abd")).toBe(false);
    expect(safeEqual("abc", "ab")).toBe(false);
    expect(safeEqual("", "")).toBe(true);
  });

  it("signature sorts the four strings plainly (code-unit order, not locale)", () => {
    // "B" < "a" in code-unit order; a locale sort would put "a" first
    const expected = signature("a", "B", "c", "D");
    const manual = ["a", "B", "c", "D"].sort().join("");
    expect(manual).toBe("BDac");
    expect(expected).toBe(signature("D", "c", "B", "a"));
  });
});

describe("properties", () => {
  const key = fc
    .uint8Array({ minLength: 32, maxLength: 32 })
    .map((b) => Buffer.from(b).toString("base64").slice(0, 43))
    .filter((k) => parseEncodingAESKey(k).length === 32);

  it("encrypt then decrypt returns the message and receiveId, for any text and key", () => {
    fc.assert(
      fc.property(key, fc.string({ unit: "binary" }), fc.string({ maxLength: 40 }), fc.uint8Array({ minLength: 16, maxLength: 16 }), (k, text, rid, random) => {
        const c = new WeComCrypto({ token: "t", encodingAESKey: k, receiveId: rid });
        const enc = c.encrypt(text, Buffer.from(random));
        const d = c.decrypt(enc);
        expect(d.message).toBe(text);
        expect(d.receiveId).toBe(rid);
        expect(d.random).toEqual(Buffer.from(random));
      }),
      { numRuns: 300 },
    );
  });

  it("signed replies verify, and any other signature is rejected", () => {
    fc.assert(
      fc.property(fc.string(), fc.stringMatching(/^\d{1,10}$/), fc.string({ minLength: 1, maxLength: 20 }), (text, ts, nonce) => {
        const c = appCrypto();
        const r = c.encryptReply(text, ts, nonce);
        expect(c.decryptCallback({ msg_signature: r.msgsignature, timestamp: ts, nonce }, r.encrypt)).toBe(text);
        const other = (r.msgsignature[0] === "a" ? "b" : "a") + r.msgsignature.slice(1);
        expect(() => c.decryptCallback({ msg_signature: other, timestamp: ts, nonce }, r.encrypt)).toThrow(WeComCryptoError);
      }),
      { numRuns: 200 },
    );
  });

  it("decrypt throws only WeComCryptoError on arbitrary input", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.base64String(), fc.uint8Array().map((b) => Buffer.from(b).toString("base64"))), (s) => {
        try {
          appCrypto().decrypt(s);
        } catch (e) {
          expect(e).toBeInstanceOf(WeComCryptoError);
        }
      }),
      { numRuns: 500 },
    );
  });

  it("parseCallbackEnvelope throws only WeComCryptoError on arbitrary input", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.json()), (s) => {
        try {
          parseCallbackEnvelope(s);
        } catch (e) {
          expect(e).toBeInstanceOf(WeComCryptoError);
        }
      }),
      { numRuns: 500 },
    );
  });
});
