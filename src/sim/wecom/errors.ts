/**
 * WeCom API errors of the simulator, the errcodes the sources leave open (configurable, with
 * defaults), and the small request-body helpers every API family shares.
 * @module
 */

/** A WeCom API error: the errcode to answer and a short English errmsg head. */
export class SimApiError extends Error {
  /** The errcode answered. */
  readonly errcode: number;
  /**
   * @param errcode WeCom errcode
   * @param message errmsg head (the simulator appends hint, from ip and the more-info link)
   */
  constructor(errcode: number, message: string) {
    super(message);
    this.name = "SimApiError";
    this.errcode = errcode;
  }
}

/**
 * Errcodes whose value the sources do not settle; configurable, with the defaults in
 * {@link DEFAULT_KF_ERRCODES}. (Named for KF, where the list started; it covers every API.)
 */
export interface KfErrcodes {
  /** kf/send_msg or send_msg_on_event with a msgid already used on that account. Default 40058 (invalid parameter). */
  duplicateMsgId: number;
  /** send_msg_on_event with a code that already sent its message. Default 42022 ("code已经被使用过。只能使用一次"). */
  codeUsed: number;
  /** send_msg_on_event with an unknown or expired code. Default 41050 ("无效的欢迎语code"). */
  codeInvalid: number;
  /** send_msg_on_event with a code whose session left the state that produced it. Default 95018 (session status invalid). */
  codeStateMismatch: number;
  /** sync_msg with a cursor that is malformed or belongs to another account. Default 40058. */
  invalidCursor: number;
  /** kf/send_msg more than 48 h after the customer's last message (or before any). Default 95002 ("发送客服消息时间限制"). */
  windowClosed: number;
  /** kf/send_msg text over 2048 bytes. Default 45002 (content size out of limit). */
  textTooLong: number;
  /** service_state/trans to a state not allowed from the current one. Default 95016 ("不允许这种状态转换"). */
  invalidTransition: number;
  /** service_state/trans to 3 with a servicer_userid that is not a servicer on duty. Default 95014 (not a servicer). */
  notServicer: number;
  /** A bot's response_url used a second time or after its hour. Default 40058. */
  responseUrlUsed: number;
}

/** The defaults of {@link KfErrcodes}. */
export const DEFAULT_KF_ERRCODES: KfErrcodes = {
  duplicateMsgId: 40058,
  codeUsed: 42022,
  codeInvalid: 41050,
  codeStateMismatch: 95018,
  invalidCursor: 40058,
  windowClosed: 95002,
  textTooLong: 45002,
  invalidTransition: 95016,
  notServicer: 95014,
  responseUrlUsed: 40058,
};

/** The JSON object of a request body. @throws SimApiError 40058 when it is not one */
export function jsonBody(body: Buffer): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(body.toString("utf8"));
  } catch {
    throw new SimApiError(40058, "invalid Request Parameter, Warning: wrong json format.");
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new SimApiError(40058, "invalid Request Parameter, the body must be a JSON object");
  return v as Record<string, unknown>;
}

/** A non-empty string field, else a 40058 error naming it. */
export function requireString(body: Record<string, unknown>, key: string): string {
  const v = body[key];
  if (typeof v !== "string" || v === "") throw new SimApiError(40058, `invalid Request Parameter, ${key} is required`);
  return v;
}

/** An object field, else a 40058 error naming it. */
export function objectField(body: Record<string, unknown>, key: string): Record<string, unknown> {
  const v = body[key];
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new SimApiError(40058, `invalid Request Parameter, ${key} is required`);
  return v as Record<string, unknown>;
}
