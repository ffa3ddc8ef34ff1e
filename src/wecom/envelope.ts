/**
 * The outer envelope of encrypted callbacks: `<xml><ToUserName/><Encrypt/><AgentID/></xml>` for
 * self-built apps, `{"encrypt": "..."}` for AI bots.
 * @module
 */
import { WeComCryptoErrcode, WeComCryptoError } from "../errors.js";
import { parseXml, xmlText } from "./xml.js";

/** What the envelope carries besides the query parameters. */
export interface CallbackEnvelope {
  /** The base64 ciphertext. */
  encrypt: string;
  /** XML only: ToUserName (CorpID). */
  toUserName?: string;
  /** XML only: AgentID. */
  agentId?: string;
}

/**
 * Read the envelope of a callback body, XML or JSON (decided by its first non-blank character).
 * @throws WeComCryptoError -40002 when the body is not a well-formed envelope with an Encrypt
 */
export function parseCallbackEnvelope(body: string): CallbackEnvelope {
  let i = 0;
  while (i < body.length && body.charCodeAt(i) <= 32) i++;
  if (body.charCodeAt(i) === 123 /* { */) {
    let obj: unknown;
    try {
      obj = JSON.parse(body);
    } catch {
      throw new WeComCryptoError(WeComCryptoErrcode.Parse, "body is not valid JSON");
    }
    const encrypt = typeof obj === "object" && obj !== null ? (obj as { encrypt?: unknown }).encrypt : undefined;
    if (typeof encrypt !== "string" || encrypt === "") throw new WeComCryptoError(WeComCryptoErrcode.Parse, 'JSON body has no "encrypt"');
    return { encrypt };
  }
  let value: ReturnType<typeof parseXml>["value"];
  try {
    value = parseXml(body).value;
  } catch (e) {
    throw new WeComCryptoError(WeComCryptoErrcode.Parse, `body is not a well-formed XML envelope (${(e as Error).message})`);
  }
  const encrypt = xmlText(value, "Encrypt");
  if (encrypt === undefined || encrypt === "") throw new WeComCryptoError(WeComCryptoErrcode.Parse, "XML body has no <Encrypt>");
  const out: CallbackEnvelope = { encrypt };
  const to = xmlText(value, "ToUserName");
  if (to !== undefined) out.toUserName = to;
  const agent = xmlText(value, "AgentID");
  if (agent !== undefined) out.agentId = agent;
  return out;
}
