/**
 * The common part of WeCom callbacks (apps and AI bots): URL verification on GET; on POST the
 * envelope, the signature, the timestamp window and decryption, before any work.
 * @module
 */
import type { WeComCrypto } from "../../wecom/crypto.js";
import { parseCallbackEnvelope } from "../../wecom/envelope.js";
import { type EndpointContext, error, type GatewayRequest, type GatewayResponse, rejection, text } from "./http.js";

function signatureQuery(req: GatewayRequest) {
  return {
    msg_signature: req.query.get("msg_signature") ?? "",
    timestamp: req.query.get("timestamp") ?? "",
    nonce: req.query.get("nonce") ?? "",
    echostr: req.query.get("echostr") ?? undefined,
  };
}

/**
 * Verify and decrypt a callback, then `handle` its plaintext. Failures of the inbound path become a
 * clear 4xx (counted by outcome, logged without secrets); the time is observed per channel.
 */
export async function wecomCallback(
  ctx: EndpointContext,
  channel: "app" | "bot",
  crypto: WeComCrypto,
  req: GatewayRequest,
  handle: (plain: string) => Promise<GatewayResponse>,
): Promise<GatewayResponse> {
  const started = performance.now();
  try {
    if (req.method === "GET") {
      const echo = crypto.verifyUrl(signatureQuery(req));
      ctx.metrics.callbacks.inc({ channel, outcome: "verified" });
      return text(200, echo);
    }
    if (req.method !== "POST") return error(405, "method_not_allowed", "use GET or POST");
    const env = parseCallbackEnvelope(req.body);
    return await handle(crypto.decryptCallback(signatureQuery(req), env.encrypt));
  } catch (e) {
    const rej = rejection(e);
    if (!rej) throw e;
    ctx.metrics.callbacks.inc({ channel, outcome: rej.outcome });
    ctx.log.warn(`${channel} callback rejected`, { path: req.path, reason: rej.outcome, error: (e as Error).message });
    return rej.response;
  } finally {
    ctx.metrics.callbackSeconds.observe({ channel }, (performance.now() - started) / 1000);
  }
}
