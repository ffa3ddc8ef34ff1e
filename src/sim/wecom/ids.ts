/**
 * Identifiers of the WeCom simulator, in the shapes WeCom uses: 64-bit decimal MsgIds above 2^53,
 * `from_msgid_…` KF message ids, `ENC…` callback tokens, base64 AI-bot msgids, long access tokens.
 * Every id is a counter plus random bits, so two ids of one simulator never collide, and 64-bit
 * values are built as bigint and written as decimal strings (never through a JS number).
 * @module
 */
import { randomBytes, randomInt } from "node:crypto";

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const DIGITS = "0123456789";

/** `n` random characters of `alphabet` (rejection sampling: no modulo bias). */
export function randomChars(n: number, alphabet: string = BASE62): string {
  let out = "";
  while (out.length < n) {
    for (const b of randomBytes(n * 2)) {
      // the largest multiple of the alphabet size below 256 keeps the draw uniform
      if (b < 256 - (256 % alphabet.length)) out += alphabet[b % alphabet.length];
      if (out.length === n) break;
    }
  }
  return out;
}

/** `n` random decimal digits (leading zeros allowed). */
export function randomDigits(n: number): string {
  return randomChars(n, DIGITS);
}

/** Generator of the simulator's ids; one per simulator. */
export class SimIds {
  #counter = 0n;
  /** A random start in [2^62, 2^62 + 2^61): every 64-bit id is above 2^53 and below 2^63. */
  readonly #base = (1n << 62n) + (BigInt(`0x${randomBytes(8).toString("hex")}`) & ((1n << 61n) - 1n));

  /** A fresh 64-bit id as a decimal string: the counter in the high bits, 20 random low bits. */
  uint64(): string {
    this.#counter += 1n;
    return (this.#base + (this.#counter << 20n) + BigInt(randomInt(1 << 20))).toString();
  }

  /** A KF sync_msg item msgid, e.g. `from_msgid_4622416642169452483`. */
  kfMsgId(): string {
    return `from_msgid_${this.uint64()}`;
  }

  /** The msgid WeCom assigns to a KF message sent without one (≤ 32 characters of [0-9a-zA-Z]). */
  kfSendMsgId(): string {
    return randomChars(32);
  }

  /** A message/send msgid (an opaque string, URL-safe base64 in WeCom's answers). */
  appSendMsgId(): string {
    return randomBytes(48).toString("base64url");
  }

  /** The Token of a kf_msg_or_event callback: `ENC` and 44 base62 characters. */
  kfCallbackToken(): string {
    return `ENC${randomChars(44)}`;
  }

  /** An access_token: 128 characters of URL-safe base64, as long and opaque as WeCom's. */
  accessToken(): string {
    return randomBytes(96).toString("base64url");
  }

  /** A media_id of the temporary media store (44 characters, like `2iSLeVyqzk…`). */
  mediaId(): string {
    return `${randomChars(1, "123")}${randomChars(21)}-${randomChars(21)}`;
  }

  /** An AI-bot msgid: base64 of a 23-byte protobuf-like id starting with `CAIQ`. */
  botMsgId(): string {
    return Buffer.concat([Buffer.from([0x08, 0x02, 0x10]), randomBytes(20)]).toString("base64");
  }

  /** A KF welcome_code / msg_code (43 characters of base64url). */
  kfCode(): string {
    return randomBytes(32).toString("base64url").slice(0, 43);
  }

  /** An AI-bot response_code (the one-use key of a response_url). */
  responseCode(): string {
    return randomChars(24);
  }

  /** The `hint` of an error errmsg: the second, then 15 random digits (25 in all). */
  hint(nowMs: number): string {
    return `${Math.floor(nowMs / 1000)}${randomDigits(15)}`;
  }

  /** A callback nonce: 10 random digits. */
  nonce(): string {
    return randomDigits(10);
  }
}
