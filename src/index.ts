/**
 * wecom-bridge protocol core: callback crypto, the unified message model, and the codecs of
 * every channel (app XML, KF, AI bot, session archive, 全媒体). Pure and I/O-free: importing it
 * pulls in no server, database driver or CLI.
 *
 * Subpaths import one part alone: `wecom-bridge/crypto`, `wecom-bridge/app`, `wecom-bridge/kf`,
 * `wecom-bridge/bot`, `wecom-bridge/archive`, `wecom-bridge/omni`, `wecom-bridge/model`,
 * `wecom-bridge/xml`.
 * @module
 */
export * from "./errors.js";
export * from "./model.js";
export * from "./wecom/crypto.js";
export * from "./wecom/xml.js";
export * from "./wecom/envelope.js";
export * from "./wecom/errcodes.js";
export { splitUtf8 } from "./wecom/text-split.js";
export * from "./wecom/address.js";
export * from "./wecom/app/index.js";
export * from "./wecom/kf/index.js";
export * from "./wecom/bot/index.js";
export * from "./wecom/archive/index.js";
export * from "./omni/index.js";
export { decodeAny, decodeAnyMessage, type DecodeFormat, DECODE_FORMATS } from "./decode.js";
