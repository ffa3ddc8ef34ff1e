/**
 * The 全媒体 contact center's staffService message API (seed 004), both directions:
 * APP → 全媒体 `POST {base}/api/{version}/{appid}/staffService/message` with `FromUserId`, and
 * 全媒体 → APP `POST {app}/{path_prefix}/staffService/message` with `ToUserId`. Both are signed
 * with `signature = sha1_hex(appid + secret + timestamp)`, timestamp in milliseconds.
 * Pure: no I/O.
 * @module
 */
import { BridgeError, DecodeError, EncodeError } from "../errors.js";
import type { Identity, OmniContent, OmniMessage } from "../model.js";
import { compact, isObject, type JsonObject, parseJsonObject } from "../wecom/fields.js";
import { safeEqual, sha1Hex } from "../wecom/crypto.js";

const F = "omni";

/** errcodes of the staffService API. */
export const OmniErrcode = {
  /** Success. */
  Ok: 0,
  /** signature or timestamp missing. */
  MissingSignature: 30001,
  /** unknown appid. */
  UnknownAppId: 30002,
  /** bad signature (or timestamp outside the window, or replayed). */
  BadSignature: 30003,
  /** internal queue error. */
  Internal: 30004,
  /** bad JSON body. */
  BadJson: 30005,
} as const;

/** One of {@link OmniErrcode}. */
export type OmniErrcode = (typeof OmniErrcode)[keyof typeof OmniErrcode];

/** A staffService failure with its errcode; answer it with {@link omniReply}. */
export class OmniError extends BridgeError {
  /** The staffService errcode. */
  readonly errcode: OmniErrcode;

  /**
   * @param errcode staffService errcode
   * @param message one readable line, free of secrets
   */
  constructor(errcode: OmniErrcode, message: string) {
    super(`omni_${errcode}`, `${errcode} ${message}`);
    this.errcode = errcode;
  }
}

/** The reply body `{errcode, errmsg}` of both directions. */
export interface OmniReply {
  errcode: number;
  errmsg: string;
}

/** Build a reply body; errmsg defaults to "ok" for 0. */
export function omniReply(errcode: number = OmniErrcode.Ok, errmsg?: string): OmniReply {
  return { errcode, errmsg: errmsg ?? (errcode === 0 ? "ok" : "error") };
}

/** Default freshness window of signed requests: 5 minutes. */
export const OMNI_SIGNATURE_WINDOW_MS = 5 * 60 * 1000;

/** `sha1_hex(appid + secret + timestamp)`, timestamp in milliseconds. */
export function omniSignature(appId: string, secret: string, timestamp: string | number): string {
  return sha1Hex(`${appId}${secret}${timestamp}`);
}

/** Arguments of {@link verifyOmniSignature}. */
export interface OmniVerifyInput {
  appId: string;
  secret: string;
  /** The `timestamp` query parameter (ms), as received. */
  timestamp: string | undefined | null;
  /** The `signature` query parameter, as received. */
  signature: string | undefined | null;
  /** Now, ms. Default `Date.now()`. */
  now?: number;
  /** Accepted clock skew either way, ms. Default 5 minutes; `Infinity` disables the check. */
  windowMs?: number;
}

/**
 * Check a staffService signature in constant time and the timestamp window.
 * Replay rejection (the same signature twice) needs state and is the server's job.
 * @throws OmniError 30001 when missing, 30003 when wrong or stale
 */
export function verifyOmniSignature(input: OmniVerifyInput): void {
  const { timestamp, signature } = input;
  if (!timestamp || !signature) throw new OmniError(OmniErrcode.MissingSignature, "timestamp and signature are required");
  if (!/^\d{1,16}$/.test(timestamp)) throw new OmniError(OmniErrcode.BadSignature, "timestamp must be milliseconds since the epoch");
  const window = input.windowMs ?? OMNI_SIGNATURE_WINDOW_MS;
  const now = input.now ?? Date.now();
  if (Math.abs(now - Number(timestamp)) > window) {
    throw new OmniError(OmniErrcode.BadSignature, `timestamp is outside the ${Math.round(window / 1000)}s window`);
  }
  if (!safeEqual(omniSignature(input.appId, input.secret, timestamp), signature.toLowerCase())) {
    throw new OmniError(OmniErrcode.BadSignature, "signature mismatch");
  }
}

/** The query string `timestamp=…&signature=…` of a signed request. */
export function omniSignedQuery(appId: string, secret: string, now: number = Date.now()): string {
  const ts = String(Math.floor(now));
  return `timestamp=${ts}&signature=${omniSignature(appId, secret, ts)}`;
}

/** Path of the APP → 全媒体 message API. */
export function omniMessagePath(version: string, appId: string): string {
  return `/api/${encodeURIComponent(version)}/${encodeURIComponent(appId)}/staffService/message`;
}

/** MsgType values of the staffService API. */
export const OMNI_MSG_TYPES = ["text", "image", "voice", "video", "file", "location", "link", "event"] as const;

/** Body of APP → 全媒体 (a customer's message). */
export interface OmniToBody {
  FromUserId: string;
  FromUserName?: string;
  ServiceId?: string;
  MsgType: string;
  Content: string;
  Tag?: unknown;
}

/** Body of 全媒体 → APP (an agent's answer). */
export interface OmniFromBody {
  ToUserId: string;
  WorkerNum?: string;
  WorkerName?: string;
  ServiceId?: string;
  MsgType: string;
  Content: string;
  Tag?: unknown;
}

function reqStr(o: JsonObject, k: string): string {
  const v = o[k];
  if (typeof v !== "string" || v === "") throw new DecodeError(F, `${k} is required and must be a non-empty string`);
  return v;
}

function optStr(o: JsonObject, k: string): string | undefined {
  const v = o[k];
  if (v === undefined || v === null || v === "") return undefined;
  if (typeof v !== "string") {
    if (typeof v === "number") return String(v);
    throw new DecodeError(F, `${k} must be a string`);
  }
  return v;
}

/**
 * Validate a staffService body of either direction (decided by ToUserId / FromUserId).
 * @throws DecodeError naming the first wrong field
 */
export function parseOmniBody(input: string | JsonObject): OmniToBody | OmniFromBody {
  const o = typeof input === "string" ? parseJsonObject(F, input) : input;
  if (!isObject(o)) throw new DecodeError(F, "expected a JSON object");
  const msgType = reqStr(o, "MsgType");
  if (typeof o.Content !== "string") throw new DecodeError(F, "Content is required and must be a string");
  const base = { ServiceId: optStr(o, "ServiceId"), MsgType: msgType, Content: o.Content, Tag: o.Tag ?? undefined };
  if (o.ToUserId !== undefined && o.ToUserId !== null) {
    return compact({ ToUserId: reqStr(o, "ToUserId"), WorkerNum: optStr(o, "WorkerNum"), WorkerName: optStr(o, "WorkerName"), ...base });
  }
  if (o.FromUserId !== undefined && o.FromUserId !== null) return compact({ FromUserId: reqStr(o, "FromUserId"), FromUserName: optStr(o, "FromUserName"), ...base });
  throw new DecodeError(F, "either ToUserId or FromUserId is required");
}

function num(v: unknown): number | undefined {
  const n = typeof v === "string" ? Number(v) : v;
  return typeof n === "number" && Number.isFinite(n) ? n : undefined;
}

function decodeOmniContent(msgType: string, content: string, tag: unknown): OmniContent {
  const t = isObject(tag) ? tag : {};
  switch (msgType) {
    case "text":
      return { type: "text", text: content };
    case "image":
    case "file":
      return { type: msgType, media: { url: content } };
    case "voice":
      return { type: "voice", media: { url: content } };
    case "video":
      return { type: "video", media: { url: content } };
    case "location": {
      const lat = num(t.latitude);
      const lon = num(t.longitude);
      if (lat === undefined || lon === undefined) return { type: "text", text: content };
      return compact({ type: "location", latitude: lat, longitude: lon, name: typeof t.name === "string" ? t.name : undefined, address: typeof t.address === "string" ? t.address : content });
    }
    case "link": {
      const url = typeof t.url === "string" ? t.url : content;
      return compact({
        type: "link",
        title: typeof t.title === "string" ? t.title : content,
        url,
        description: typeof t.description === "string" ? t.description : undefined,
        picUrl: typeof t.picUrl === "string" ? t.picUrl : undefined,
      });
    }
    case "event":
      return { type: "event", event: { name: "omni_event", key: content } };
    default:
      // the vendor's web chat sends the event key inside MsgType: `event.CLICK.RG`
      if (msgType.startsWith("event.")) return { type: "event", event: { name: "omni_event", key: msgType.slice(6) } };
      return { type: "unknown", msgType, raw: { MsgType: msgType, Content: content, Tag: tag } };
  }
}

/** Context of {@link decodeOmniMessage}. */
export interface OmniDecodeContext {
  /** An id for the message (the 全媒体 sends none), e.g. the request's timestamp+signature. */
  id?: string;
  /** Time of the message, ms. Default 0 (unknown). */
  time?: number;
}

/**
 * Decode a staffService body of either direction into the model. `conversationId` is the
 * customer address (FromUserId / ToUserId). The 全媒体 sends no message id: pass one in
 * `context.id` (default: a SHA1 of the body, which is not an idempotency key).
 * @throws DecodeError naming the first wrong field
 */
export function decodeOmniMessage(input: string | JsonObject, context: OmniDecodeContext = {}): OmniMessage {
  const raw = typeof input === "string" ? parseJsonObject(F, input) : input;
  const body = parseOmniBody(raw);
  const content = decodeOmniContent(body.MsgType, body.Content, body.Tag);
  const id = context.id ?? `omni:${sha1Hex(JSON.stringify(raw))}`;
  if ("ToUserId" in body) {
    const agent: Identity | undefined = body.WorkerNum ? compact<Identity>({ kind: "agent", id: body.WorkerNum, name: body.WorkerName }) : undefined;
    return compact({
      channel: "omni",
      id,
      conversationId: body.ToUserId,
      from: agent,
      to: [{ kind: "customer", id: body.ToUserId }],
      time: context.time ?? 0,
      content,
      raw,
      direction: "from_omni",
      serviceId: body.ServiceId,
      workerNum: body.WorkerNum,
      workerName: body.WorkerName,
      msgType: body.MsgType,
      tag: body.Tag,
    });
  }
  return compact({
    channel: "omni",
    id,
    conversationId: body.FromUserId,
    from: compact<Identity>({ kind: "customer", id: body.FromUserId, name: body.FromUserName }),
    to: [],
    time: context.time ?? 0,
    content,
    raw,
    direction: "to_omni",
    serviceId: body.ServiceId,
    msgType: body.MsgType,
    tag: body.Tag,
  });
}

/**
 * Build and validate an APP → 全媒体 body.
 * @throws EncodeError when FromUserId, MsgType or Content is missing
 */
export function encodeOmniToBody(body: OmniToBody): OmniToBody {
  if (!body.FromUserId) throw new EncodeError(F, "FromUserId is required");
  if (!body.MsgType) throw new EncodeError(F, "MsgType is required");
  if (typeof body.Content !== "string") throw new EncodeError(F, "Content is required");
  return compact({ ...body });
}

/**
 * Build and validate a 全媒体 → APP body (used by the 全媒体 simulator and tests).
 * @throws EncodeError when ToUserId, MsgType or Content is missing
 */
export function encodeOmniFromBody(body: OmniFromBody): OmniFromBody {
  if (!body.ToUserId) throw new EncodeError(F, "ToUserId is required");
  if (!body.MsgType) throw new EncodeError(F, "MsgType is required");
  if (typeof body.Content !== "string") throw new EncodeError(F, "Content is required");
  return compact({ ...body });
}
