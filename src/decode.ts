/**
 * One entry point that decodes any channel's payload into the unified model, as the CLI's
 * `decode` command does.
 * @module
 */
import { DecodeError } from "./errors.js";
import type { UnifiedMessage } from "./model.js";
import { decodeAppXml } from "./wecom/app/decode.js";
import { type ArchivePush, decodeArchivePush } from "./wecom/archive/decode.js";
import { decodeBotCallback } from "./wecom/bot/decode.js";
import { parseJsonObject } from "./wecom/fields.js";
import { decodeKfItem, decodeKfSyncMsg, isKfSyncMsgResponse, type KfSyncMsgResponse } from "./wecom/kf/decode.js";
import { decodeOmniMessage } from "./omni/index.js";

/** The input formats of {@link decodeAny}. */
export const DECODE_FORMATS = ["app", "kf", "bot", "archive", "omni"] as const;
/** One of {@link DECODE_FORMATS}. */
export type DecodeFormat = (typeof DECODE_FORMATS)[number];

/**
 * Decode text of the given format:
 * `app` decrypted callback XML; `kf` a whole sync_msg response (gives the response) or one item;
 * `bot` a decrypted callback JSON; `archive` a push envelope (gives the push); `omni` a
 * staffService body.
 * @throws DecodeError for malformed input or an unknown format
 */
export function decodeAny(
  format: DecodeFormat,
  text: string,
  context: { corpId?: string } = {},
): UnifiedMessage | KfSyncMsgResponse | ArchivePush {
  switch (format) {
    case "app":
      return decodeAppXml(text, context);
    case "kf": {
      const obj = parseJsonObject("kf", text);
      return isKfSyncMsgResponse(obj) ? decodeKfSyncMsg(obj, context) : decodeKfItem(obj, context);
    }
    case "bot":
      return decodeBotCallback(text);
    case "archive":
      return decodeArchivePush(text);
    case "omni":
      return decodeOmniMessage(text);
    default:
      throw new DecodeError(String(format), `unknown format; use one of ${DECODE_FORMATS.join(", ")}`);
  }
}

/**
 * Decode text of the given format into the messages it carries: a sync_msg response gives its
 * items, an archive push its record (none for other push types), every other format one message.
 * @throws DecodeError for malformed input
 */
export function decodeAnyMessage(format: DecodeFormat, text: string, context: { corpId?: string } = {}): UnifiedMessage[] {
  const decoded = decodeAny(format, text, context);
  if ("channel" in decoded) return [decoded];
  if ("messages" in decoded) return decoded.messages;
  return decoded.kind === "record" ? [decoded.message] : [];
}
