/**
 * Typed errors of the protocol core. Every error carries a stable string `code` that tools can
 * match on; WeCom crypto errors also carry the official numeric `errcode` (-40001..-40011).
 * Messages are one readable line and never contain secrets (tokens, keys, plaintext secrets).
 * @module
 */

/** Base class of every error the project throws on purpose. */
export class BridgeError extends Error {
  /** Stable, machine-readable code, e.g. `wecom_crypto_signature` or `decode_malformed`. */
  readonly code: string;

  /**
   * @param code stable machine-readable code
   * @param message one readable line, free of secrets
   */
  constructor(code: string, message: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}

/** Official error codes of WeCom's callback crypto sample (WXBizMsgCrypt). */
export const WeComCryptoErrcode = {
  /** -40001: the signature does not match. */
  ValidateSignature: -40001,
  /** -40002: the XML or JSON body could not be parsed. */
  Parse: -40002,
  /** -40003: the signature could not be computed. */
  ComputeSignature: -40003,
  /** -40004: the EncodingAESKey is not 43 characters of base64 decoding to 32 bytes. */
  IllegalAesKey: -40004,
  /** -40005: the receiveId (CorpID / SuiteID) inside the message is not the expected one. */
  ValidateReceiveId: -40005,
  /** -40006: AES encryption failed. */
  Encrypt: -40006,
  /** -40007: AES decryption failed (bad length, bad padding). */
  Decrypt: -40007,
  /** -40008: the decrypted buffer is not a valid message frame. */
  IllegalBuffer: -40008,
  /** -40009: base64 encoding failed. */
  EncodeBase64: -40009,
  /** -40010: the ciphertext is not valid base64. */
  DecodeBase64: -40010,
  /** -40011: the reply envelope could not be built. */
  GenReturn: -40011,
} as const;

/** One of the official crypto error codes. */
export type WeComCryptoErrcode = (typeof WeComCryptoErrcode)[keyof typeof WeComCryptoErrcode];

const cryptoCodeNames: Record<number, string> = {
  [-40001]: "wecom_crypto_signature",
  [-40002]: "wecom_crypto_parse",
  [-40003]: "wecom_crypto_compute_signature",
  [-40004]: "wecom_crypto_aes_key",
  [-40005]: "wecom_crypto_receive_id",
  [-40006]: "wecom_crypto_encrypt",
  [-40007]: "wecom_crypto_decrypt",
  [-40008]: "wecom_crypto_buffer",
  [-40009]: "wecom_crypto_base64_encode",
  [-40010]: "wecom_crypto_base64_decode",
  [-40011]: "wecom_crypto_gen_return",
};

/**
 * A callback-crypto failure with WeCom's official code.
 * @example
 * try { crypto.decryptCallback(query, body) } catch (e) {
 *   if (e instanceof WeComCryptoError && e.errcode === -40001) reply(401)
 * }
 */
export class WeComCryptoError extends BridgeError {
  /** The official numeric code (-40001..-40011). */
  readonly errcode: WeComCryptoErrcode;

  /**
   * @param errcode official code
   * @param message one readable line, free of secrets
   */
  constructor(errcode: WeComCryptoErrcode, message: string) {
    super(cryptoCodeNames[errcode] ?? "wecom_crypto", `${errcode} ${message}`);
    this.errcode = errcode;
  }
}

/**
 * Input that is not what the format says (not XML, not JSON, a required field missing or of the
 * wrong type). Unknown *types* are never this error: they decode to an `unknown` variant.
 */
export class DecodeError extends BridgeError {
  /** Which format was being decoded: `xml`, `app`, `kf`, `bot`, `archive`, `omni`, `json`. */
  readonly format: string;

  /**
   * @param format the format being decoded
   * @param message one readable line
   */
  constructor(format: string, message: string) {
    super("decode_malformed", `${format}: ${message}`);
    this.format = format;
  }
}

/** A value that an encoder refuses because WeCom or the 全媒体 would (a limit, a missing field). */
export class EncodeError extends BridgeError {
  /** Which format was being encoded. */
  readonly format: string;

  /**
   * @param format the format being encoded
   * @param message one readable line naming the rule that was broken
   */
  constructor(format: string, message: string) {
    super("encode_invalid", `${format}: ${message}`);
    this.format = format;
  }
}
