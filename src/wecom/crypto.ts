/**
 * WeCom callback crypto (WXBizMsgCrypt) for every channel: signatures, AES-256-CBC with PKCS#7/32,
 * URL verification and reply envelopes. Pure: no I/O, only node:crypto.
 *
 * - `msg_signature = sha1_hex(sort([token, timestamp, nonce, encrypt]).join(""))`
 * - `key = base64(EncodingAESKey + "=")`, 32 bytes; `IV = key[0..16)`
 * - plaintext = 16 random bytes ‖ uint32 BE length ‖ msg ‖ receiveId, padded to 32-byte blocks
 * @module
 */
import * as nodeCrypto from "node:crypto";
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createSecretKey,
  type Decipher,
  type KeyObject,
  randomBytes,
  timingSafeEqual,
} from "node:crypto";
import { WeComCryptoErrcode as E, WeComCryptoError } from "../errors.js";
import { cdata } from "./xml.js";

/** Block size of WeCom's PKCS#7 padding (not AES's 16). */
export const PKCS7_BLOCK_SIZE = 32;

const BASE64_43 = /^[A-Za-z0-9+/]{43}$/;

/**
 * Validate an EncodingAESKey and return the 32-byte AES key.
 * @throws WeComCryptoError -40004 when the key is not 43 base64 characters decoding to 32 bytes
 */
export function parseEncodingAESKey(encodingAESKey: string): Buffer {
  if (typeof encodingAESKey !== "string" || !BASE64_43.test(encodingAESKey)) {
    throw new WeComCryptoError(E.IllegalAesKey, "EncodingAESKey must be 43 characters of base64");
  }
  const key = Buffer.from(`${encodingAESKey}=`, "base64");
  if (key.length !== 32) {
    throw new WeComCryptoError(E.IllegalAesKey, "EncodingAESKey must decode to 32 bytes");
  }
  return key;
}

/**
 * The callback signature: lowercase hex SHA1 of the four strings sorted and concatenated.
 * @example signature("token", "1476416373", "47744683", echostr)
 */
export function signature(token: string, timestamp: string, nonce: string, encrypt: string): string {
  return sha1Hex(sort4(token, timestamp, nonce, encrypt));
}

/** The four strings in plain lexicographic (UTF-16 code unit) order, concatenated. */
function sort4(a: string, b: string, c: string, d: string): string {
  let t: string;
  // a sorting network for four elements: five compare-exchanges
  if (b < a) [a, b] = [b, a];
  if (d < c) [c, d] = [d, c];
  if (c < a) [a, c] = [c, a];
  if (d < b) [b, d] = [d, b];
  if (c < b) {
    t = b;
    b = c;
    c = t;
  }
  return a + b + c + d;
}

/** One-shot `crypto.hash` (Node ≥ 20.12) is about twice as fast as createHash for short input. */
const oneShotHash = (nodeCrypto as { hash?: (alg: string, data: string, enc: "hex") => string }).hash;

/** Lowercase hex SHA1 of a UTF-8 string. */
export function sha1Hex(data: string): string {
  return oneShotHash !== undefined ? oneShotHash("sha1", data, "hex") : createHash("sha1").update(data).digest("hex");
}

/**
 * Constant-time comparison of two strings (signatures, secrets, tokens): both are hashed to
 * SHA-256 digests of their UTF-16 code units, and the two 32-byte digests are compared with
 * `crypto.timingSafeEqual`. There is no early return on a length mismatch, so the time tells
 * neither where the strings differ nor how long the secret is. Every string is handled exactly
 * (code units, not UTF-8: two different lone surrogates are different).
 */
export function safeEqual(a: string, b: string): boolean {
  const da = createHash("sha256").update(a, "utf16le").digest();
  const db = createHash("sha256").update(b, "utf16le").digest();
  return timingSafeEqual(da, db);
}

/**
 * True when an `Authorization` header value is `Bearer {token}`. The scheme is matched
 * case-insensitively (RFC 7235 §2.1: `bearer`, `BEARER`) and may be followed by one or more
 * spaces; the credentials are compared with {@link safeEqual}. False for a missing header, another
 * scheme, or an empty `token` (an unset token never matches).
 */
export function bearerMatches(authorization: string | undefined, token: string): boolean {
  if (typeof authorization !== "string") return false;
  const scheme = /^bearer +/i.exec(authorization);
  const credentials = scheme ? authorization.slice(scheme[0].length).trimEnd() : "";
  const same = safeEqual(credentials, token);
  return scheme !== null && token !== "" && same;
}

/** Add PKCS#7 padding with WeCom's 32-byte block (pad byte 1..32). */
export function pkcs7Pad(data: Buffer): Buffer {
  const pad = PKCS7_BLOCK_SIZE - (data.length % PKCS7_BLOCK_SIZE);
  return Buffer.concat([data, Buffer.alloc(pad, pad)]);
}

/**
 * Remove PKCS#7 padding with WeCom's 32-byte block.
 * @throws WeComCryptoError -40007 when the padding is not 1..32 identical bytes
 */
export function pkcs7Unpad(data: Buffer): Buffer {
  const pad = data.length > 0 ? (data[data.length - 1] as number) : 0;
  if (pad < 1 || pad > PKCS7_BLOCK_SIZE || pad > data.length) {
    throw new WeComCryptoError(E.Decrypt, "bad PKCS#7 padding");
  }
  for (let i = data.length - pad; i < data.length; i++) {
    if (data[i] !== pad) throw new WeComCryptoError(E.Decrypt, "bad PKCS#7 padding");
  }
  return data.subarray(0, data.length - pad);
}

/** Options of {@link WeComCrypto}. */
export interface WeComCryptoOptions {
  /** The callback Token configured in WeCom's admin console. */
  token: string;
  /** The 43-character EncodingAESKey. */
  encodingAESKey: string;
  /**
   * Expected receiveId: the CorpID for a self-built app, the SuiteID for a third-party suite,
   * `""` (the default) for an AI bot. When empty the check is skipped.
   */
  receiveId?: string;
  /**
   * When set, callbacks whose timestamp is more than this many seconds away from the clock are
   * rejected with -40001. Default: no window (WeCom retries reuse old timestamps).
   */
  timestampWindowSec?: number;
  /** Clock in milliseconds since the epoch. Default `Date.now`. */
  clock?: () => number;
}

/** The result of decrypting one ciphertext. */
export interface Decrypted {
  /** The message, decoded as UTF-8. */
  message: string;
  /** The receiveId found after the message (CorpID, SuiteID or empty for bots). */
  receiveId: string;
  /** The 16-byte random prefix, as bytes (it is arbitrary binary). */
  random: Buffer;
}

/** Query parameters WeCom sends with every callback. */
export interface CallbackQuery {
  /** `msg_signature` */
  msg_signature: string;
  /** `timestamp` (seconds, as sent) */
  timestamp: string;
  /** `nonce` */
  nonce: string;
  /** `echostr`, on URL verification only */
  echostr?: string;
}

/** An encrypted reply, in the JSON shape of AI-bot replies; the XML envelope has the same fields. */
export interface EncryptedReply {
  /** base64 ciphertext */
  encrypt: string;
  /** signature over token, timestamp, nonce, encrypt */
  msgsignature: string;
  /** timestamp as sent */
  timestamp: string;
  /** nonce as sent */
  nonce: string;
}

/**
 * WXBizMsgCrypt for one (token, EncodingAESKey, receiveId).
 * @example
 * const c = new WeComCrypto({ token, encodingAESKey, receiveId: corpId });
 * const xml = c.decryptCallback(query, encryptFromBody);
 */
export class WeComCrypto {
  readonly #token: string;
  readonly #key: KeyObject;
  readonly #iv: Buffer;
  readonly #receiveId: string;
  readonly #windowSec: number | undefined;
  readonly #clock: () => number;
  #ecb: Decipher | undefined;

  /**
   * @throws WeComCryptoError -40004 for an invalid EncodingAESKey
   */
  constructor(options: WeComCryptoOptions) {
    const key = parseEncodingAESKey(options.encodingAESKey);
    if (typeof options.token !== "string" || options.token.length === 0) {
      throw new WeComCryptoError(E.ComputeSignature, "token must be a non-empty string");
    }
    this.#token = options.token;
    this.#key = createSecretKey(key);
    this.#iv = key.subarray(0, 16);
    this.#receiveId = options.receiveId ?? "";
    this.#windowSec = options.timestampWindowSec;
    this.#clock = options.clock ?? Date.now;
  }

  /**
   * AES-256-CBC decryption of whole blocks. CBC decryption is ECB decryption of each block XORed
   * with the previous ciphertext block (the IV for the first), so one long-lived ECB decipher
   * serves every message: this saves creating an OpenSSL context per callback, the largest cost
   * of the inbound path. Input length must be a multiple of 16.
   */
  #cbcDecrypt(cipherText: Buffer): Buffer {
    this.#ecb ??= createDecipheriv("aes-256-ecb", this.#key, null).setAutoPadding(false);
    const plain = this.#ecb.update(cipherText);
    if (plain.length !== cipherText.length) {
      this.#ecb = undefined; // never reuse a context in an unexpected state
      throw new Error("ECB output length");
    }
    const iv = this.#iv;
    for (let i = 0; i < 16; i++) plain[i] = (plain[i] as number) ^ (iv[i] as number);
    for (let i = 16; i < plain.length; i++) plain[i] = (plain[i] as number) ^ (cipherText[i - 16] as number);
    return plain;
  }

  /** The expected receiveId ("" when the check is skipped). */
  get receiveId(): string {
    return this.#receiveId;
  }

  /** Signature of `encrypt` with this token. */
  signature(timestamp: string, nonce: string, encrypt: string): string {
    return signature(this.#token, timestamp, nonce, encrypt);
  }

  /**
   * Check a signature in constant time, and the timestamp window when one is configured.
   * @throws WeComCryptoError -40001
   */
  verifySignature(msgSignature: string, timestamp: string, nonce: string, encrypt: string): void {
    if (typeof msgSignature !== "string" || typeof timestamp !== "string" || typeof nonce !== "string") {
      throw new WeComCryptoError(E.ValidateSignature, "msg_signature, timestamp and nonce are required");
    }
    if (this.#windowSec !== undefined) {
      const ts = Number(timestamp);
      const now = this.#clock() / 1000;
      if (!Number.isFinite(ts) || Math.abs(now - ts) > this.#windowSec) {
        throw new WeComCryptoError(
          E.ValidateSignature,
          `timestamp ${JSON.stringify(timestamp)} is outside the ${this.#windowSec}s window`,
        );
      }
    }
    if (!safeEqual(this.signature(timestamp, nonce, encrypt), msgSignature.toLowerCase())) {
      throw new WeComCryptoError(E.ValidateSignature, "signature mismatch");
    }
  }

  /**
   * Encrypt a message. `random` (16 bytes or 16 latin1 characters) makes the output
   * deterministic, for tests; by default 16 random bytes are drawn.
   * @throws WeComCryptoError -40006 when `random` is not 16 bytes
   */
  encrypt(message: string, random?: Buffer | string): string {
    const prefix = random === undefined ? randomBytes(16) : Buffer.isBuffer(random) ? random : Buffer.from(random, "latin1");
    if (prefix.length !== 16) throw new WeComCryptoError(E.Encrypt, "random prefix must be 16 bytes");
    const msg = Buffer.from(message, "utf8");
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32BE(msg.length, 0);
    const plain = pkcs7Pad(Buffer.concat([prefix, len, msg, Buffer.from(this.#receiveId, "utf8")]));
    try {
      const cipher = createCipheriv("aes-256-cbc", this.#key, this.#iv).setAutoPadding(false);
      return Buffer.concat([cipher.update(plain), cipher.final()]).toString("base64");
    } catch {
      throw new WeComCryptoError(E.Encrypt, "AES encryption failed");
    }
  }

  /**
   * Decrypt a ciphertext and check its receiveId (skipped when the expected one is empty).
   * @throws WeComCryptoError -40010 bad base64, -40007 bad AES/padding, -40008 bad frame,
   *   -40005 receiveId mismatch
   */
  decrypt(encrypt: string): Decrypted {
    if (typeof encrypt !== "string" || encrypt.length === 0 || encrypt.length % 4 !== 0) {
      throw new WeComCryptoError(E.DecodeBase64, "ciphertext is not valid base64");
    }
    const cipherText = Buffer.from(encrypt, "base64");
    // Node's decoder skips characters outside the alphabet: a short result means there were some
    const padding = encrypt.charCodeAt(encrypt.length - 1) === 61 ? (encrypt.charCodeAt(encrypt.length - 2) === 61 ? 2 : 1) : 0;
    if (cipherText.length !== (encrypt.length / 4) * 3 - padding) {
      throw new WeComCryptoError(E.DecodeBase64, "ciphertext is not valid base64");
    }
    if (cipherText.length === 0 || cipherText.length % 16 !== 0) {
      throw new WeComCryptoError(E.Decrypt, "ciphertext length is not a multiple of the AES block");
    }
    let plain: Buffer;
    try {
      plain = this.#cbcDecrypt(cipherText);
    } catch {
      throw new WeComCryptoError(E.Decrypt, "AES decryption failed");
    }
    const body = pkcs7Unpad(plain);
    if (body.length < 20) throw new WeComCryptoError(E.IllegalBuffer, "decrypted frame is too short");
    const msgLen = body.readUInt32BE(16);
    if (20 + msgLen > body.length) {
      throw new WeComCryptoError(E.IllegalBuffer, "message length exceeds the decrypted frame");
    }
    const message = body.toString("utf8", 20, 20 + msgLen);
    const receiveId = body.toString("utf8", 20 + msgLen);
    if (this.#receiveId !== "" && receiveId !== this.#receiveId) {
      throw new WeComCryptoError(E.ValidateReceiveId, "receiveId does not match the configured one");
    }
    return { message, receiveId, random: body.subarray(0, 16) };
  }

  /**
   * Verify the signature over `encrypt` then decrypt it: the whole inbound step of a callback.
   * @returns the plaintext message (XML for apps, JSON for bots)
   */
  decryptCallback(query: CallbackQuery, encrypt: string): string {
    this.verifySignature(query.msg_signature, query.timestamp, query.nonce, encrypt);
    return this.decrypt(encrypt).message;
  }

  /**
   * URL verification (`GET ?msg_signature&timestamp&nonce&echostr`): verify the signature over
   * echostr and return the bare plaintext to answer with. Pass the URL-decoded echostr.
   */
  verifyUrl(query: CallbackQuery): string {
    if (typeof query.echostr !== "string" || query.echostr.length === 0) {
      throw new WeComCryptoError(E.ValidateSignature, "echostr is required");
    }
    return this.decryptCallback(query, query.echostr);
  }

  /**
   * Encrypt and sign a reply.
   * @param timestamp seconds, as a string (default: now)
   * @param nonce any string (default: 10 random digits)
   * @param random 16-byte prefix for deterministic output (tests)
   */
  encryptReply(message: string, timestamp?: string, nonce?: string, random?: Buffer | string): EncryptedReply {
    const ts = timestamp ?? String(Math.floor(this.#clock() / 1000));
    const n = nonce ?? String(randomBytes(4).readUInt32BE(0)).padStart(10, "0");
    const encrypt = this.encrypt(message, random);
    return { encrypt, msgsignature: this.signature(ts, n, encrypt), timestamp: ts, nonce: n };
  }

  /** Encrypt a reply and wrap it in the XML envelope of self-built app passive replies. */
  encryptXmlReply(message: string, timestamp?: string, nonce?: string, random?: Buffer | string): string {
    return xmlReplyEnvelope(this.encryptReply(message, timestamp, nonce, random));
  }

  /** Encrypt a reply as the JSON body of AI-bot passive replies. */
  encryptJsonReply(message: string, timestamp?: string, nonce?: string, random?: Buffer | string): string {
    return JSON.stringify(this.encryptReply(message, timestamp, nonce, random));
  }
}

/**
 * The XML envelope of an encrypted passive reply:
 * `<xml><Encrypt/><MsgSignature/><TimeStamp/><Nonce/></xml>`.
 */
export function xmlReplyEnvelope(reply: EncryptedReply): string {
  return (
    `<xml><Encrypt><![CDATA[${reply.encrypt}]]></Encrypt>` +
    `<MsgSignature>${cdata(reply.msgsignature)}</MsgSignature>` +
    `<TimeStamp>${/^\d+$/.test(reply.timestamp) ? reply.timestamp : cdata(reply.timestamp)}</TimeStamp>` +
    `<Nonce>${cdata(reply.nonce)}</Nonce></xml>`
  );
}

/**
 * Decrypt a file downloaded from an AI bot's media URL: AES-256-CBC with the bot's
 * EncodingAESKey, IV = key[0..16), PKCS#7 padding with 32-byte blocks.
 * @throws WeComCryptoError -40004 bad key, -40007 bad length or padding
 */
export function decryptBotMedia(encodingAESKey: string, data: Uint8Array): Buffer {
  const key = parseEncodingAESKey(encodingAESKey);
  if (data.length === 0 || data.length % 16 !== 0) {
    throw new WeComCryptoError(E.Decrypt, "media length is not a multiple of the AES block");
  }
  let plain: Buffer;
  try {
    const decipher = createDecipheriv("aes-256-cbc", key, key.subarray(0, 16)).setAutoPadding(false);
    plain = Buffer.concat([decipher.update(data), decipher.final()]);
  } catch {
    throw new WeComCryptoError(E.Decrypt, "AES decryption of media failed");
  }
  return pkcs7Unpad(plain);
}

/** Encrypt bytes the way WeCom encrypts AI-bot media (for simulators and tests). */
export function encryptBotMedia(encodingAESKey: string, data: Uint8Array): Buffer {
  const key = parseEncodingAESKey(encodingAESKey);
  const cipher = createCipheriv("aes-256-cbc", key, key.subarray(0, 16)).setAutoPadding(false);
  return Buffer.concat([cipher.update(pkcs7Pad(Buffer.from(data))), cipher.final()]);
}
