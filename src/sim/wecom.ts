/**
 * The WeCom simulator: a stand-in for `qyapi.weixin.qq.com` and for WeCom's callbacks, speaking
 * the published protocol byte for byte so that the gateway can be tested end to end where WeCom
 * is unreachable.
 *
 * - Server side (node:http): `gettoken`, `kf/sync_msg` (opaque cursors, pages, has_more, empty
 *   pages, the 3-day window), `kf/send_msg`, `kf/send_msg_on_event`, `kf/service_state/get`,
 *   `kf/account/list`, `message/send`, `media/upload`, `media/get`, an AI bot's `response_url`
 *   and its encrypted media URLs; each with WeCom's validation and errcodes.
 * - Client side: signed, encrypted callbacks (app XML, AI-bot JSON, kf_msg_or_event) with WeCom's
 *   5-second timeout and retries, URL verification, and verification of the bot's replies.
 * - Faults: injected errcodes, slow answers, HTTP failures, expired tokens.
 *
 * Crypto and codecs are the project's own (WeComCrypto, the XML writer), so simulator and gateway
 * agree byte for byte. Log lines never carry secrets, tokens or signed queries.
 * @module
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { utf8Length } from "../wecom/fields.js";
import { WeComCrypto, encryptBotMedia } from "../wecom/crypto.js";
import { cdata, parseXml, xmlText } from "../wecom/xml.js";
import { APP_TEXT_REPLY_MAX_BYTES } from "../wecom/app/encode.js";
import { BOT_STREAM_MAX_BYTES } from "../wecom/bot/encode.js";
import { CallbackClient, type CallbackResult, type CallbackTry, withQuery } from "./wecom-callback.js";
import { SimIds, randomDigits } from "./wecom-ids.js";
import {
  DEFAULT_KF_ERRCODES,
  KF_CURSOR_MAX_BYTES,
  KF_SEND_MSGTYPES,
  KF_SYNC_LIMIT_MAX,
  KF_TOKEN_MAX_BYTES,
  type KfErrcodes,
  KfStore,
  SimApiError,
  checkKfMessageBody,
  requireString,
} from "./wecom-kf.js";
import { multipartBoundary, parseMultipart } from "./wecom-multipart.js";

/** The result of delivering one callback (re-exported from the callback client). */
export type { CallbackResult } from "./wecom-callback.js";

/** A self-built app of the simulated corp. */
export interface WeComSimApp {
  /** AgentID. */
  agentId: number;
  /** The app's Secret (for gettoken). */
  secret: string;
  /** The callback Token. */
  token: string;
  /** The callback EncodingAESKey (43 characters). */
  encodingAESKey: string;
  /** Where WeCom POSTs this app's callbacks. */
  callbackUrl?: string;
  /** True for the app authorised for WeChat Customer Service: it receives kf_msg_or_event and may call kf/*. */
  kf?: boolean;
  /** A name to address the app by in {@link WeComSimulator.setCallbackUrl} and {@link WeComSimulator.verifyUrl} (e.g. the gateway's config name). */
  name?: string;
  /** The app's visible members; when set, message/send lists others in `invaliduser` (81013 when none is valid). */
  members?: string[];
}

/** An AI bot (智能机器人) of the simulated corp. */
export interface WeComSimBot {
  /** The bot id (aibotid). */
  botId: string;
  /** The callback Token. */
  token: string;
  /** The callback EncodingAESKey; also the key of the bot's media files. */
  encodingAESKey: string;
  /** Where WeCom POSTs this bot's callbacks. */
  callbackUrl?: string;
  /** A name to address the bot by (e.g. the gateway's config name). */
  name?: string;
}

/** Options of {@link WeComSimulator.start}. */
export interface WeComSimOptions {
  /** The simulated corp's CorpID (the receiveId of app callbacks). */
  corpId: string;
  /** Its self-built apps. */
  apps: WeComSimApp[];
  /** Its AI bots. */
  bots?: WeComSimBot[];
  /** Listen address; default 127.0.0.1. */
  host?: string;
  /** Listen port; default 0 (any free port). */
  port?: number;
  /** gettoken expires_in, seconds; default 7200. */
  tokenTtlSec?: number;
  /** How long WeCom waits for a callback's answer, ms; default 5000. */
  callbackTimeoutMs?: number;
  /** Wait between callback tries, ms; default 5000. */
  retryIntervalMs?: number;
  /** Callback tries in all; default 3. */
  maxTries?: number;
  /** The clock, ms since the epoch; default Date.now. Drives token, media, code and window expiry. */
  now?: () => number;
  /** One line per request and per callback try (never secrets, tokens or signatures). */
  log?: (line: string) => void;
  /** Errcodes the sources leave open (see {@link KfErrcodes}); defaults in DEFAULT_KF_ERRCODES. */
  errcodes?: Partial<KfErrcodes>;
  /** Largest request body accepted, bytes; default 32 MiB (larger ones get HTTP 413). */
  maxBodyBytes?: number;
}

/** One request the simulator served. */
export interface WeComSimRequest {
  /** HTTP method. */
  method: string;
  /** Path only: the query (access_token, …) is never recorded. */
  path: string;
  /** When it arrived, per the simulator's clock. */
  at: number;
  /** HTTP status answered. */
  status: number;
  /** The errcode answered, for JSON answers. */
  errcode?: number;
}

/** One accepted send or upload, as the gateway sent it. */
export interface WeComSimSent {
  /** `kf/send_msg`, `kf/send_msg_on_event`, `message/send`, `media/upload` or `aibot/response`. */
  api: string;
  /** The request body (for uploads: type, media_id, filename, content_type, size). */
  body: Record<string, unknown>;
  /** When, per the simulator's clock. */
  at: number;
}

/** A stored temporary media file. */
export interface WeComSimMedia {
  /** The bytes. */
  bytes: Buffer;
  /** Content-Type served by media/get. */
  contentType: string;
  /** File name served in Content-Disposition. */
  filename: string;
  /**
   * How media/get sends the name: `raw` (default) as WeCom does, `filename="…"` with the UTF-8 bytes
   * as they are; `rfc5987` as `filename*=UTF-8''…` after an ASCII `filename` fallback.
   */
  disposition?: "raw" | "rfc5987";
  /** image, voice, video or file. */
  type: string;
  /** When it was stored, ms (media_id is valid 3 days). */
  createdAt: number;
}

/** The result of a callback, with the decrypted passive reply when one came back. */
export type CallbackWithReply<R> = CallbackResult & {
  /** The decrypted reply (XML text for apps, parsed JSON for bots); absent when the answer was empty. */
  reply?: R;
  /** Why an answer that was not empty could not be verified and decrypted. */
  replyError?: string;
};

interface AppState {
  cfg: WeComSimApp;
  crypto: WeComCrypto;
  callbackUrl?: string;
}

interface BotState {
  cfg: WeComSimBot;
  crypto: WeComCrypto;
  callbackUrl?: string;
}

interface TokenInfo {
  app: AppState;
  expiresAt: number;
  revoked: boolean;
}

interface Ctx {
  req: IncomingMessage;
  url: URL;
  body: Buffer;
}

type Answer = { json: Record<string, unknown>; status?: number } | { status: number; headers: Record<string, string | number>; body: Buffer };

const MEDIA_TTL_MS = 3 * 24 * 3600_000;
const BOT_MEDIA_TTL_MS = 5 * 60_000;
const RESPONSE_URL_TTL_MS = 3600_000;
const WELCOME_CODE_MS = 20_000;
const SESSION_END_CODE_MS = 20_000;
const SESSION_CODE_MS = 48 * 3600_000;
const BOT_VERIFY_TIMEOUT_MS = 1000;
const APP_MSGTYPES = new Set(["text", "image", "voice", "video", "file", "textcard", "news", "mpnews", "markdown", "miniprogram_notice", "template_card"]);
const UPLOAD_LIMITS: Record<string, { max: number; errcode: number }> = {
  image: { max: 10 * 1024 * 1024, errcode: 40009 },
  voice: { max: 2 * 1024 * 1024, errcode: 40006 },
  video: { max: 10 * 1024 * 1024, errcode: 40011 },
  file: { max: 20 * 1024 * 1024, errcode: 40006 },
};
const JSON_TYPE = "application/json; charset=UTF-8";

/** The JSON object of a request body. @throws SimApiError 40058 when it is not one */
function jsonBody(body: Buffer): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(body.toString("utf8"));
  } catch {
    throw new SimApiError(40058, "invalid Request Parameter, Warning: wrong json format.");
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new SimApiError(40058, "invalid Request Parameter, the body must be a JSON object");
  return v as Record<string, unknown>;
}

/** A header value carrying UTF-8 text as raw bytes (what WeCom sends for non-ASCII file names). */
function rawUtf8Header(text: string): string {
  return Buffer.from(text.replace(/["\r\n\\]/g, "_"), "utf8").toString("latin1");
}

/** Image formats WeCom accepts for uploads: JPG and PNG (40123 otherwise). */
function isJpgOrPng(b: Buffer): boolean {
  return (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) || b.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
}

/**
 * A running WeCom simulator.
 * @example
 * const sim = await WeComSimulator.start({ corpId, apps: [{ agentId: 1000002, secret, token, encodingAESKey, kf: true, callbackUrl }] });
 * sim.addKfAccount("wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q");
 * await sim.kfCustomerSends("wkAJ2…", "wmAJ2…", { msgtype: "text", text: { content: "你好" } });
 * await sim.close();
 */
export class WeComSimulator {
  readonly #corpId: string;
  readonly #apps = new Map<number, AppState>();
  readonly #bots = new Map<string, BotState>();
  readonly #now: () => number;
  readonly #log: (line: string) => void;
  readonly #tokenTtlMs: number;
  readonly #callbackTimeoutMs: number;
  readonly #retryIntervalMs: number;
  readonly #maxTries: number;
  readonly #maxBodyBytes: number;
  readonly #errcodes: KfErrcodes;
  readonly #ids = new SimIds();
  readonly #kf = new KfStore();
  readonly #client = new CallbackClient();
  readonly #tokens = new Map<string, TokenInfo>();
  readonly #appTokens = new Map<number, string>();
  readonly #media = new Map<string, WeComSimMedia>();
  readonly #botMedia = new Map<string, { bytes: Buffer; expiresAt: number }>();
  readonly #responseCodes = new Map<string, { botId: string; expiresAt: number; used: boolean }>();
  readonly #failNext = new Map<string, { errcode: number; times: number }[]>();
  readonly #httpFailures = new Map<string, { status: number; times: number }[]>();
  readonly #delays = new Map<string, number>();
  readonly #server: Server;
  #url = "";

  /** What the gateway sent: every accepted kf/send_msg, kf/send_msg_on_event, message/send, media/upload and aibot/response. */
  readonly sent: WeComSimSent[] = [];
  /** Every request served (path without query), in order of completion. */
  readonly requests: WeComSimRequest[] = [];
  /** Every access token issued, in order (tests check that none leaks). */
  readonly issuedTokens: string[] = [];
  /** Every accepted kf/sync_msg call: whether it carried a (valid) callback Token. */
  readonly syncCalls: { openKfId: string; withToken: boolean; at: number }[] = [];

  private constructor(opts: WeComSimOptions) {
    if (!opts.corpId) throw new Error("corpId is required");
    this.#corpId = opts.corpId;
    this.#now = opts.now ?? Date.now;
    const log = opts.log;
    this.#log = log === undefined ? () => {} : (line) => log(`[wecom-sim] ${line}`);
    this.#tokenTtlMs = (opts.tokenTtlSec ?? 7200) * 1000;
    this.#callbackTimeoutMs = opts.callbackTimeoutMs ?? 5000;
    this.#retryIntervalMs = opts.retryIntervalMs ?? 5000;
    this.#maxTries = Math.max(1, opts.maxTries ?? 3);
    this.#maxBodyBytes = opts.maxBodyBytes ?? 32 * 1024 * 1024;
    this.#errcodes = { ...DEFAULT_KF_ERRCODES, ...opts.errcodes };
    for (const app of opts.apps) {
      if (!Number.isInteger(app.agentId)) throw new Error("app agentId must be an integer");
      if (this.#apps.has(app.agentId)) throw new Error(`duplicate app ${app.agentId}`);
      const state: AppState = { cfg: app, crypto: new WeComCrypto({ token: app.token, encodingAESKey: app.encodingAESKey, receiveId: this.#corpId }) };
      if (app.callbackUrl !== undefined) state.callbackUrl = app.callbackUrl;
      this.#apps.set(app.agentId, state);
    }
    for (const bot of opts.bots ?? []) {
      if (this.#bots.has(bot.botId)) throw new Error(`duplicate bot ${bot.botId}`);
      const state: BotState = { cfg: bot, crypto: new WeComCrypto({ token: bot.token, encodingAESKey: bot.encodingAESKey, receiveId: "" }) };
      if (bot.callbackUrl !== undefined) state.callbackUrl = bot.callbackUrl;
      this.#bots.set(bot.botId, state);
    }
    this.#server = createServer((req, res) => {
      this.#handle(req, res).catch((e: unknown) => {
        this.#log(`internal error: ${(e as Error).message}`);
        if (!res.headersSent) res.writeHead(500, { "Content-Type": "text/plain" });
        res.end();
      });
    });
  }

  /** Start a simulator listening on `host:port` (default 127.0.0.1, any free port). */
  static async start(opts: WeComSimOptions): Promise<WeComSimulator> {
    const sim = new WeComSimulator(opts);
    await new Promise<void>((resolve, reject) => {
      sim.#server.once("error", reject);
      sim.#server.listen(opts.port ?? 0, opts.host ?? "127.0.0.1", () => {
        sim.#server.off("error", reject);
        resolve();
      });
    });
    const addr = sim.#server.address() as AddressInfo;
    const host = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
    sim.#url = `http://${host}:${addr.port}`;
    sim.#log(`listening on ${sim.#url} (corp ${sim.#corpId}, ${sim.#apps.size} app(s), ${sim.#bots.size} bot(s))`);
    return sim;
  }

  /** The API base, e.g. `http://127.0.0.1:PORT`: the gateway calls `${url}/cgi-bin/...`. */
  get url(): string {
    return this.#url;
  }

  /** The simulated corp's CorpID. */
  get corpId(): string {
    return this.#corpId;
  }

  /** Stop listening, cancel callbacks in flight and drop open connections. */
  async close(): Promise<void> {
    this.#client.close();
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }

  /** Point an app (by agentId or name) or a bot (by botId or name) at a callback URL. */
  setCallbackUrl(kind: "app" | "bot", nameOrId: string | number, url: string): void {
    new URL(url); // throws on a malformed URL
    const target = kind === "app" ? this.#app(nameOrId) : this.#bot(nameOrId);
    target.callbackUrl = url;
  }

  #app(nameOrId: string | number): AppState {
    for (const a of this.#apps.values()) {
      if (a.cfg.agentId === Number(nameOrId) || (a.cfg.name !== undefined && a.cfg.name === nameOrId)) return a;
    }
    throw new Error(`unknown app ${String(nameOrId)}`);
  }

  #bot(nameOrId: string | number): BotState {
    for (const b of this.#bots.values()) {
      if (b.cfg.botId === nameOrId || (b.cfg.name !== undefined && b.cfg.name === nameOrId)) return b;
    }
    throw new Error(`unknown bot ${String(nameOrId)}`);
  }

  #seconds(): string {
    return String(Math.floor(this.#now() / 1000));
  }

  // --- faults ------------------------------------------------------------------------------

  /** Answer the next `times` (default 1) calls of `api` (e.g. `kf/sync_msg`, `gettoken`) with `errcode`. */
  failNext(api: string, errcode: number, times = 1): void {
    const list = this.#failNext.get(api) ?? [];
    list.push({ errcode, times });
    this.#failNext.set(api, list);
  }

  /** Delay every answer of `api` by `ms` (0 removes the delay). */
  setDelay(api: string, ms: number): void {
    if (ms > 0) this.#delays.set(api, ms);
    else this.#delays.delete(api);
  }

  /** Answer the next `times` (default 1) calls of `api` with HTTP `status` (e.g. 502) and an HTML body. */
  setHttpFailure(api: string, status: number, times = 1): void {
    const list = this.#httpFailures.get(api) ?? [];
    list.push({ status, times });
    this.#httpFailures.set(api, list);
  }

  /** Every token issued so far becomes invalid: its next use answers 42001, and gettoken issues a new one. */
  expireTokens(): void {
    for (const t of this.#tokens.values()) t.revoked = true;
  }

  // --- KF ------------------------------------------------------------------------------------

  /** Add a KF account (open_kfid like `wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q`). */
  addKfAccount(openKfId: string, name?: string): void {
    this.#kf.addAccount(openKfId, name ?? openKfId);
  }

  /** Make the next `n` sync_msg answers for the account empty pages with has_more 1 (a real WeCom behaviour). */
  injectEmptyPages(openKfId: string, n: number): void {
    this.#kf.injectEmptyPages(openKfId, n);
  }

  /**
   * Set a customer's service_state (0 unhandled, 1 smart assistant, 2 waiting pool, 3 human
   * servicer, 4 ended): kf/send_msg answers 95018 outside 0 and 1.
   */
  setKfServiceState(openKfId: string, externalUserId: string, state: 0 | 1 | 2 | 3 | 4, servicerUserId?: string): void {
    if (!this.#kf.hasAccount(openKfId)) throw new Error(`unknown KF account ${openKfId}`);
    const s = this.#kf.session(openKfId, externalUserId);
    s.serviceState = state;
    if (servicerUserId !== undefined) s.servicerUserId = servicerUserId;
  }

  /**
   * A customer writes to a KF account: the item is appended to the account's sync_msg log and a
   * kf_msg_or_event callback (with a fresh Token valid 10 min and OpenKfId) is POSTed, signed and
   * encrypted, to the app that has kf: true (unless `callback: false`, or no URL is set).
   * `origin: 5` with `servicerUserId` records a servicer's message from the WeCom client instead.
   */
  async kfCustomerSends(
    openKfId: string,
    externalUserId: string,
    msg: { msgtype: string; [body: string]: unknown },
    opts: { sendTime?: number; callback?: boolean; servicerUserId?: string; origin?: 3 | 5 } = {},
  ): Promise<{ msgid: string; callback?: CallbackResult }> {
    if (!this.#kf.hasAccount(openKfId)) throw new Error(`unknown KF account ${openKfId}`);
    const sendTime = opts.sendTime ?? Math.floor(this.#now() / 1000);
    const msgid = this.#ids.kfMsgId();
    const origin = opts.origin ?? 3;
    const item: Record<string, unknown> = { msgid, open_kfid: openKfId, external_userid: externalUserId, send_time: sendTime, origin };
    // WeCom names the servicer of the session on customer items too (see the KF fixtures)
    const servicer = opts.servicerUserId ?? this.#kf.servicerOf(openKfId, externalUserId);
    if (servicer !== undefined) item.servicer_userid = servicer;
    Object.assign(item, msg);
    this.#kf.append(openKfId, sendTime, item);
    if (origin === 3) {
      const s = this.#kf.session(openKfId, externalUserId);
      if (s.serviceState === 4) s.serviceState = 0; // a new message opens a new session
      this.#kf.customerWrote(openKfId, externalUserId, sendTime * 1000);
    }
    const callback = opts.callback === false ? undefined : await this.#kfCallback(openKfId);
    return callback === undefined ? { msgid } : { msgid, callback };
  }

  /**
   * A KF event (origin 4, msgtype event): `open_kfid` is added inside the event when missing. An
   * enter_session `welcome_code` becomes usable with send_msg_on_event for 20 s (text|msgmenu); a
   * session_status_change `msg_code` for 20 s when the session ends (change_type 3, text|msgmenu),
   * else 48 h (text). session_status_change also moves the customer's service_state.
   */
  async kfEvent(openKfId: string, event: Record<string, unknown> & { event_type: string }, opts: { callback?: boolean; sendTime?: number } = {}): Promise<{ msgid: string; callback?: CallbackResult }> {
    if (!this.#kf.hasAccount(openKfId)) throw new Error(`unknown KF account ${openKfId}`);
    const sendTime = opts.sendTime ?? Math.floor(this.#now() / 1000);
    const msgid = this.#ids.kfMsgId();
    const { event_type, ...rest } = event;
    const ev: Record<string, unknown> = { event_type, open_kfid: openKfId, ...rest };
    this.#kf.append(openKfId, sendTime, { msgid, send_time: sendTime, origin: 4, msgtype: "event", event: ev });
    const user = typeof ev.external_userid === "string" ? ev.external_userid : undefined;
    const at = sendTime * 1000;
    if (user !== undefined) this.#kf.session(openKfId, user);
    if (event_type === "enter_session" && typeof ev.welcome_code === "string") {
      this.#kf.addCode(ev.welcome_code, { openKfId, expiresAt: at + WELCOME_CODE_MS, used: false, msgtypes: ["text", "msgmenu"] });
    }
    if (event_type === "session_status_change") {
      const change = Number(ev.change_type);
      if (typeof ev.msg_code === "string" && ev.msg_code !== "") {
        const end = change === 3;
        this.#kf.addCode(ev.msg_code, {
          openKfId,
          expiresAt: at + (end ? SESSION_END_CODE_MS : SESSION_CODE_MS),
          used: false,
          msgtypes: end ? ["text", "msgmenu"] : ["text"],
        });
      }
      if (user !== undefined) {
        const s = this.#kf.session(openKfId, user);
        if (change === 1 || change === 2 || change === 4) {
          s.serviceState = 3;
          if (typeof ev.new_servicer_userid === "string" && ev.new_servicer_userid !== "") s.servicerUserId = ev.new_servicer_userid;
        } else if (change === 3) s.serviceState = 4;
      }
    }
    const callback = opts.callback === false ? undefined : await this.#kfCallback(openKfId);
    return callback === undefined ? { msgid } : { msgid, callback };
  }

  /** A new welcome_code / msg_code in WeCom's shape, for events built by hand. */
  newKfCode(): string {
    return this.#ids.kfCode();
  }

  /** The kf_msg_or_event callback to the KF app; undefined when there is none or it has no URL. */
  async #kfCallback(openKfId: string): Promise<CallbackResult | undefined> {
    const app = [...this.#apps.values()].find((a) => a.cfg.kf === true);
    if (app?.callbackUrl === undefined) {
      this.#log(`kf_msg_or_event for ${openKfId} not sent: no KF app with a callback URL`);
      return undefined;
    }
    const token = this.#ids.kfCallbackToken();
    this.#kf.addCallbackToken(token, this.#now());
    const xml =
      `<xml><ToUserName>${cdata(this.#corpId)}</ToUserName><CreateTime>${this.#seconds()}</CreateTime>` +
      `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[kf_msg_or_event]]></Event>` +
      `<Token>${cdata(token)}</Token><OpenKfId>${cdata(openKfId)}</OpenKfId></xml>`;
    return this.#deliverApp(app, xml, false, `app ${app.cfg.agentId} kf_msg_or_event`);
  }

  // --- app callbacks ---------------------------------------------------------------------------

  /**
   * POST a plaintext callback XML to an app, signed and encrypted in the app envelope
   * (`<xml><ToUserName/><Encrypt/><AgentID/></xml>`, receiveId = CorpID), with WeCom's retries.
   * `reply` is the decrypted passive reply, when the app answered one.
   */
  appSends(agentId: number, plaintextXml: string, opts: { sameTimestampOnRetry?: boolean } = {}): Promise<CallbackWithReply<string>> {
    const app = this.#app(agentId);
    return this.#deliverApp(app, plaintextXml, opts.sameTimestampOnRetry ?? false, `app ${app.cfg.agentId}`);
  }

  /** A member's text message to an app (MsgId a 64-bit decimal string above 2^53), sent as a callback. */
  async appUserSendsText(agentId: number, fromUser: string, text: string, opts: { sameTimestampOnRetry?: boolean } = {}): Promise<CallbackWithReply<string> & { msgId: string }> {
    const app = this.#app(agentId);
    const msgId = this.#ids.uint64();
    const xml =
      `<xml><ToUserName>${cdata(this.#corpId)}</ToUserName><FromUserName>${cdata(fromUser)}</FromUserName>` +
      `<CreateTime>${this.#seconds()}</CreateTime><MsgType><![CDATA[text]]></MsgType>` +
      `<Content>${cdata(text)}</Content><MsgId>${msgId}</MsgId><AgentID>${app.cfg.agentId}</AgentID></xml>`;
    const r = await this.#deliverApp(app, xml, opts.sameTimestampOnRetry ?? false, `app ${app.cfg.agentId}`);
    return { ...r, msgId };
  }

  async #deliverApp(app: AppState, plaintext: string, reuse: boolean, label: string): Promise<CallbackWithReply<string>> {
    const url = app.callbackUrl;
    if (url === undefined) throw new Error(`app ${app.cfg.agentId} has no callback URL`);
    const build = (): CallbackTry => {
      const r = app.crypto.encryptReply(plaintext, this.#seconds(), this.#ids.nonce());
      return {
        query: { msg_signature: r.msgsignature, timestamp: r.timestamp, nonce: r.nonce },
        body: `<xml><ToUserName>${cdata(this.#corpId)}</ToUserName><Encrypt><![CDATA[${r.encrypt}]]></Encrypt><AgentID>${cdata(String(app.cfg.agentId))}</AgentID></xml>`,
      };
    };
    const result: CallbackWithReply<string> = await this.#client.deliver(
      { label, url, contentType: "text/xml", build, reuse, timeoutMs: this.#callbackTimeoutMs, retryIntervalMs: this.#retryIntervalMs, maxTries: this.#maxTries },
      this.#log,
    );
    const body = result.body.trim();
    if (result.delivered && body !== "" && body !== "success") {
      try {
        const x = parseXml(body).value;
        const encrypt = xmlText(x, "Encrypt") ?? "";
        const q = { msg_signature: xmlText(x, "MsgSignature") ?? "", timestamp: xmlText(x, "TimeStamp") ?? "", nonce: xmlText(x, "Nonce") ?? "" };
        result.reply = app.crypto.decryptCallback(q, encrypt);
      } catch (e) {
        result.replyError = (e as Error).message;
      }
    }
    return result;
  }

  // --- AI bot callbacks --------------------------------------------------------------------------

  /**
   * POST a bot callback `{"encrypt": …}` (receiveId ""), with WeCom's retries; `reply` is the bot's
   * answer `{encrypt, msgsignature, timestamp, nonce}` verified, decrypted and parsed.
   */
  botSends(botId: string, message: Record<string, unknown>, opts: { sameTimestampOnRetry?: boolean } = {}): Promise<CallbackWithReply<unknown>> {
    const bot = this.#bot(botId);
    return this.#deliverBot(bot, JSON.stringify(message), opts.sameTimestampOnRetry ?? false);
  }

  /** A member's text message to a bot (single chat, or a group with `chatId`), with a response_url on the simulator. */
  async botUserSendsText(botId: string, userId: string, text: string, opts: { chatId?: string } = {}): Promise<CallbackWithReply<unknown> & { msgid: string }> {
    const bot = this.#bot(botId);
    const msgid = this.#ids.botMsgId();
    const message: Record<string, unknown> = { msgid, aibotid: bot.cfg.botId };
    if (opts.chatId !== undefined) message.chatid = opts.chatId;
    message.chattype = opts.chatId !== undefined ? "group" : "single";
    message.from = { userid: userId };
    message.response_url = this.#newResponseUrl(bot.cfg.botId);
    message.msgtype = "text";
    message.text = { content: text };
    const r = await this.#deliverBot(bot, JSON.stringify(message), false);
    return { ...r, msgid };
  }

  /** WeCom polls an open stream: a msgtype "stream" callback with that id; returns the decrypted answer. */
  botPollStream(botId: string, streamId: string, userId: string, opts: { chatId?: string } = {}): Promise<CallbackWithReply<unknown>> {
    const bot = this.#bot(botId);
    const message: Record<string, unknown> = { msgid: this.#ids.botMsgId(), aibotid: bot.cfg.botId };
    if (opts.chatId !== undefined) message.chatid = opts.chatId;
    message.chattype = opts.chatId !== undefined ? "group" : "single";
    message.from = { userid: userId };
    message.msgtype = "stream";
    message.stream = { id: streamId };
    return this.#deliverBot(bot, JSON.stringify(message), false);
  }

  /** A response_url for a bot message: one use within an hour, served by the simulator. */
  #newResponseUrl(botId: string): string {
    const code = this.#ids.responseCode();
    this.#responseCodes.set(code, { botId, expiresAt: this.#now() + RESPONSE_URL_TTL_MS, used: false });
    return `${this.#url}/cgi-bin/aibot/response?response_code=${code}`;
  }

  async #deliverBot(bot: BotState, plaintext: string, reuse: boolean): Promise<CallbackWithReply<unknown>> {
    const url = bot.callbackUrl;
    if (url === undefined) throw new Error(`bot ${bot.cfg.botId} has no callback URL`);
    const build = (): CallbackTry => {
      const r = bot.crypto.encryptReply(plaintext, this.#seconds(), this.#ids.nonce());
      return { query: { msg_signature: r.msgsignature, timestamp: r.timestamp, nonce: r.nonce }, body: JSON.stringify({ encrypt: r.encrypt }) };
    };
    const result: CallbackWithReply<unknown> = await this.#client.deliver(
      {
        label: `bot ${bot.cfg.name ?? bot.cfg.botId}`,
        url,
        contentType: "application/json",
        build,
        reuse,
        timeoutMs: this.#callbackTimeoutMs,
        retryIntervalMs: this.#retryIntervalMs,
        maxTries: this.#maxTries,
      },
      this.#log,
    );
    if (result.delivered && result.body.trim() !== "") {
      try {
        const r = JSON.parse(result.body) as Record<string, unknown>;
        const str = (k: string) => (typeof r[k] === "string" ? (r[k] as string) : "");
        const text = bot.crypto.decryptCallback({ msg_signature: str("msgsignature"), timestamp: str("timestamp"), nonce: str("nonce") }, str("encrypt"));
        try {
          result.reply = JSON.parse(text);
        } catch {
          result.reply = text;
        }
      } catch (e) {
        result.replyError = (e as Error).message;
      }
    }
    return result;
  }

  // --- URL verification ----------------------------------------------------------------------------

  /**
   * The URL verification GET (`msg_signature, timestamp, nonce, echostr`) against a callback URL;
   * returns the body answered and the plaintext expected (the answer must be exactly it). Bots
   * must answer within 1 s.
   */
  async verifyUrl(kind: "app" | "bot", nameOrId: string | number): Promise<{ status: number; body: string; expected: string }> {
    const target = kind === "app" ? this.#app(nameOrId) : this.#bot(nameOrId);
    if (target.callbackUrl === undefined) throw new Error(`${kind} ${String(nameOrId)} has no callback URL`);
    const expected = randomDigits(19);
    const r = target.crypto.encryptReply(expected, this.#seconds(), this.#ids.nonce());
    const url = withQuery(target.callbackUrl, { msg_signature: r.msgsignature, timestamp: r.timestamp, nonce: r.nonce, echostr: r.encrypt });
    const timeout = kind === "bot" ? Math.min(BOT_VERIFY_TIMEOUT_MS, this.#callbackTimeoutMs) : this.#callbackTimeoutMs;
    const x = await this.#client.exchange("GET", url, undefined, undefined, timeout);
    this.#log(`verify ${kind} ${String(nameOrId)}: ${x.status === 0 ? (x.error ?? "no answer") : x.status}${x.status === 200 && x.body === expected ? " ok" : ""} (${x.ms} ms)`);
    return { status: x.status, body: x.body, expected };
  }

  // --- media ---------------------------------------------------------------------------------------

  /** Store a temporary media file (valid 3 days per `now`) and return its media_id for media/get. */
  putMedia(bytes: Uint8Array, opts: { contentType: string; filename: string; type?: "image" | "voice" | "video" | "file"; disposition?: "raw" | "rfc5987" }): string {
    const id = this.#ids.mediaId();
    const type = opts.type ?? (opts.contentType.startsWith("image/") ? "image" : opts.contentType.startsWith("video/") ? "video" : opts.contentType.startsWith("audio/") ? "voice" : "file");
    const media: WeComSimMedia = { bytes: Buffer.from(bytes), contentType: opts.contentType, filename: opts.filename, type, createdAt: this.#now() };
    if (opts.disposition !== undefined) media.disposition = opts.disposition;
    this.#media.set(id, media);
    return id;
  }

  /** A stored media file (uploaded by the gateway or put by a test), or undefined. */
  getMedia(mediaId: string): WeComSimMedia | undefined {
    return this.#media.get(mediaId);
  }

  /**
   * Serve bytes the way WeCom serves an AI bot's image/file/video: an URL on the simulator whose
   * body is the bytes AES-encrypted with the bot's EncodingAESKey, valid 5 minutes per `now`.
   */
  putBotMedia(botId: string, bytes: Uint8Array): string {
    const bot = this.#bot(botId);
    const key = this.#ids.responseCode();
    this.#botMedia.set(key, { bytes: encryptBotMedia(bot.cfg.encodingAESKey, bytes), expiresAt: this.#now() + BOT_MEDIA_TTL_MS });
    return `${this.#url}/aibot-media/${key}?sign=q-sign-algorithm%3Dsha1%26q-sign-time%3D${this.#seconds()}`;
  }

  // --- the HTTP server -------------------------------------------------------------------------------

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = Date.now();
    const at = this.#now();
    const url = new URL(req.url ?? "/", "http://sim.invalid");
    const method = req.method ?? "GET";
    const path = url.pathname;
    let answer: Answer;
    const body = await this.#readBody(req);
    if (body === undefined) {
      answer = { status: 413, headers: { "Content-Type": "text/html" }, body: Buffer.from("<html><body>413 Request Entity Too Large</body></html>") };
    } else if (path.startsWith("/cgi-bin/")) {
      answer = await this.#api(path.slice("/cgi-bin/".length), { req, url, body });
    } else if (path.startsWith("/aibot-media/") && method === "GET") {
      answer = this.#serveBotMedia(path.slice("/aibot-media/".length));
    } else {
      answer = { status: 404, headers: { "Content-Type": "text/html" }, body: Buffer.from("<html><body>404 Not Found</body></html>") };
    }
    let status: number;
    let errcode: number | undefined;
    if ("json" in answer) {
      status = answer.status ?? 200;
      errcode = typeof answer.json.errcode === "number" ? answer.json.errcode : undefined;
      const text = Buffer.from(JSON.stringify(answer.json), "utf8");
      res.writeHead(status, { "Content-Type": JSON_TYPE, "Content-Length": text.length });
      res.end(text);
    } else {
      status = answer.status;
      res.writeHead(status, { ...answer.headers, "Content-Length": answer.body.length });
      res.end(answer.body);
    }
    const record: WeComSimRequest = { method, path, at, status };
    if (errcode !== undefined) record.errcode = errcode;
    this.requests.push(record);
    this.#log(`${method} ${path} → ${status}${errcode !== undefined ? ` errcode ${errcode}` : ""} (${Date.now() - started} ms)`);
  }

  /** The request body, or undefined when it is larger than allowed. */
  #readBody(req: IncomingMessage): Promise<Buffer | undefined> {
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let over = false;
      req.on("data", (c: Buffer) => {
        size += c.length;
        if (size > this.#maxBodyBytes) over = true;
        else chunks.push(c);
      });
      req.on("end", () => resolve(over ? undefined : Buffer.concat(chunks)));
      req.on("error", () => resolve(undefined));
    });
  }

  #errorAnswer(e: SimApiError, req: IncomingMessage): Answer {
    const ip = (req.socket.remoteAddress ?? "").replace(/^::ffff:/, "");
    return {
      json: {
        errcode: e.errcode,
        errmsg: `${e.message}, hint: [${this.#ids.hint(this.#now())}], from ip: ${ip}, more info at https://open.work.weixin.qq.com/devtool/query?e=${e.errcode}`,
      },
    };
  }

  #consume<T extends { times: number }>(map: Map<string, T[]>, api: string): T | undefined {
    const list = map.get(api);
    const first = list?.[0];
    if (list === undefined || first === undefined) return undefined;
    first.times--;
    if (first.times <= 0) list.shift();
    if (list.length === 0) map.delete(api);
    return first;
  }

  async #api(api: string, ctx: Ctx): Promise<Answer> {
    const handler = this.#routes[api];
    if (handler === undefined) {
      return { status: 404, headers: { "Content-Type": "text/html" }, body: Buffer.from("<html><body>404 Not Found</body></html>") };
    }
    const delay = this.#delays.get(api);
    if (delay !== undefined) await this.#client.sleep(delay);
    const http = this.#consume(this.#httpFailures, api);
    if (http !== undefined) {
      return { status: http.status, headers: { "Content-Type": "text/html" }, body: Buffer.from(`<html><body>${http.status} simulated failure</body></html>`) };
    }
    const fail = this.#consume(this.#failNext, api);
    try {
      if (fail !== undefined) throw new SimApiError(fail.errcode, fail.errcode === 0 ? "ok" : `simulated errcode ${fail.errcode}`);
      return handler(ctx);
    } catch (e) {
      if (e instanceof SimApiError) return this.#errorAnswer(e, ctx.req);
      throw e;
    }
  }

  /** The app of a valid access_token. @throws SimApiError 41001, 40014, 42001 */
  #auth(url: URL): AppState {
    const token = url.searchParams.get("access_token");
    if (token === null || token === "") throw new SimApiError(41001, "access_token missing");
    const info = this.#tokens.get(token);
    if (info === undefined) throw new SimApiError(40014, "invalid access_token");
    if (info.revoked || this.#now() >= info.expiresAt) throw new SimApiError(42001, "access_token expired");
    return info.app;
  }

  /** The app of a valid token that may call kf/* (the app authorised for KF). @throws SimApiError 48002 */
  #authKf(url: URL): AppState {
    const app = this.#auth(url);
    if (app.cfg.kf !== true) throw new SimApiError(48002, "api forbidden, the app is not authorised for WeChat Customer Service");
    return app;
  }

  readonly #routes: Record<string, (ctx: Ctx) => Answer> = {
    gettoken: (ctx) => this.#getToken(ctx),
    "kf/sync_msg": (ctx) => this.#syncMsg(ctx),
    "kf/send_msg": (ctx) => this.#kfSendMsg(ctx),
    "kf/send_msg_on_event": (ctx) => this.#kfSendMsgOnEvent(ctx),
    "kf/service_state/get": (ctx) => this.#kfServiceState(ctx),
    "kf/account/list": (ctx) => this.#kfAccountList(ctx),
    "message/send": (ctx) => this.#messageSend(ctx),
    "media/upload": (ctx) => this.#mediaUpload(ctx),
    "media/get": (ctx) => this.#mediaGet(ctx),
    "aibot/response": (ctx) => this.#aibotResponse(ctx),
  };

  #getToken({ url }: Ctx): Answer {
    const corpid = url.searchParams.get("corpid");
    const secret = url.searchParams.get("corpsecret");
    if (corpid === null || corpid === "") throw new SimApiError(41002, "corpid missing");
    if (secret === null || secret === "") throw new SimApiError(41004, "corpsecret missing");
    if (corpid !== this.#corpId) throw new SimApiError(40013, "invalid corpid");
    const app = [...this.#apps.values()].find((a) => a.cfg.secret === secret);
    if (app === undefined) throw new SimApiError(40001, "invalid credential");
    const now = this.#now();
    const current = this.#appTokens.get(app.cfg.agentId);
    const info = current === undefined ? undefined : this.#tokens.get(current);
    if (current !== undefined && info !== undefined && !info.revoked && now < info.expiresAt) {
      // within its lifetime WeCom answers the same token
      return { json: { errcode: 0, errmsg: "ok", access_token: current, expires_in: Math.floor((info.expiresAt - now) / 1000) } };
    }
    const token = this.#ids.accessToken();
    this.issuedTokens.push(token);
    this.#tokens.set(token, { app, expiresAt: now + this.#tokenTtlMs, revoked: false });
    this.#appTokens.set(app.cfg.agentId, token);
    return { json: { errcode: 0, errmsg: "ok", access_token: token, expires_in: Math.floor(this.#tokenTtlMs / 1000) } };
  }

  #syncMsg({ url, body }: Ctx): Answer {
    this.#authKf(url);
    const b = jsonBody(body);
    let scope: string | undefined;
    if (b.open_kfid !== undefined && b.open_kfid !== null && b.open_kfid !== "") {
      if (typeof b.open_kfid !== "string" || !this.#kf.hasAccount(b.open_kfid)) throw new SimApiError(95000, "invalid open_kfid");
      scope = b.open_kfid;
    }
    let limit = KF_SYNC_LIMIT_MAX;
    if (b.limit !== undefined && b.limit !== null && b.limit !== 0) {
      if (typeof b.limit !== "number" || !Number.isInteger(b.limit) || b.limit < 1 || b.limit > KF_SYNC_LIMIT_MAX) {
        throw new SimApiError(40058, `invalid Request Parameter, limit must be 1..${KF_SYNC_LIMIT_MAX}`);
      }
      limit = b.limit;
    }
    if (b.voice_format !== undefined && b.voice_format !== null && b.voice_format !== 0 && b.voice_format !== 1) {
      throw new SimApiError(40058, "invalid Request Parameter, voice_format must be 0 or 1");
    }
    const now = this.#now();
    const withToken = b.token !== undefined && b.token !== null && b.token !== "";
    if (withToken) {
      if (typeof b.token !== "string" || utf8Length(b.token) > KF_TOKEN_MAX_BYTES || !this.#kf.callbackTokenValid(b.token, now)) {
        throw new SimApiError(95007, "invalid msg token");
      }
    }
    this.syncCalls.push({ openKfId: scope ?? "", withToken, at: now });
    let after = 0;
    if (b.cursor !== undefined && b.cursor !== null && b.cursor !== "") {
      const seq = typeof b.cursor === "string" && utf8Length(b.cursor) <= KF_CURSOR_MAX_BYTES ? this.#kf.parseCursor(scope, b.cursor) : undefined;
      if (seq === undefined) throw new SimApiError(this.#errcodes.invalidCursor, "invalid cursor");
      after = seq;
    }
    const page = this.#kf.page(scope, after, limit, now);
    return { json: { errcode: 0, errmsg: "ok", next_cursor: page.nextCursor, has_more: page.hasMore ? 1 : 0, msg_list: page.items } };
  }

  #mediaExists = (id: string): boolean => {
    const m = this.#media.get(id);
    return m !== undefined && this.#now() - m.createdAt < MEDIA_TTL_MS;
  };

  #kfSendMsg({ url, body }: Ctx): Answer {
    this.#authKf(url);
    const b = jsonBody(body);
    const touser = requireString(b, "touser");
    const openKfId = requireString(b, "open_kfid");
    if (!this.#kf.hasAccount(openKfId)) throw new SimApiError(95000, "invalid open_kfid");
    if (!this.#kf.knowsCustomer(openKfId, touser)) throw new SimApiError(40096, "invalid external userid");
    const msgtype = requireString(b, "msgtype");
    if (!KF_SEND_MSGTYPES.has(msgtype)) throw new SimApiError(40008, "invalid message type");
    checkKfMessageBody(b, msgtype, this.#mediaExists);
    const given = this.#kf.checkMsgId(openKfId, b.msgid, this.#errcodes);
    const now = this.#now();
    const session = this.#kf.checkCanSend(openKfId, touser, now, this.#errcodes);
    const msgid = given ?? this.#ids.kfSendMsgId();
    this.#kf.useMsgId(openKfId, msgid);
    session.sentSinceCustomer++;
    this.sent.push({ api: "kf/send_msg", body: b, at: now });
    return { json: { errcode: 0, errmsg: "ok", msgid } };
  }

  #kfSendMsgOnEvent({ url, body }: Ctx): Answer {
    this.#authKf(url);
    const b = jsonBody(body);
    const code = requireString(b, "code");
    const msgtype = requireString(b, "msgtype");
    if (msgtype !== "text" && msgtype !== "msgmenu") throw new SimApiError(40008, "invalid message type, send_msg_on_event sends text or msgmenu");
    const now = this.#now();
    const c = this.#kf.takeCode(code, msgtype, now, this.#errcodes);
    checkKfMessageBody(b, msgtype, this.#mediaExists);
    const given = this.#kf.checkMsgId(c.openKfId, b.msgid, this.#errcodes);
    const msgid = given ?? this.#ids.kfSendMsgId();
    c.used = true;
    this.#kf.useMsgId(c.openKfId, msgid);
    this.sent.push({ api: "kf/send_msg_on_event", body: b, at: now });
    return { json: { errcode: 0, errmsg: "ok", msgid } };
  }

  #kfServiceState({ url, body }: Ctx): Answer {
    this.#authKf(url);
    const b = jsonBody(body);
    const openKfId = requireString(b, "open_kfid");
    const user = requireString(b, "external_userid");
    if (!this.#kf.hasAccount(openKfId)) throw new SimApiError(95000, "invalid open_kfid");
    if (!this.#kf.knowsCustomer(openKfId, user)) throw new SimApiError(40096, "invalid external userid");
    const s = this.#kf.session(openKfId, user);
    const json: Record<string, unknown> = { errcode: 0, errmsg: "ok", service_state: s.serviceState };
    if (s.serviceState === 3 && s.servicerUserId !== undefined) json.servicer_userid = s.servicerUserId;
    return { json };
  }

  #kfAccountList({ url, body }: Ctx): Answer {
    this.#authKf(url);
    const b = body.length === 0 ? {} : jsonBody(body);
    const offset = typeof b.offset === "number" && b.offset >= 0 ? Math.floor(b.offset) : 0;
    const limit = typeof b.limit === "number" && b.limit >= 1 && b.limit <= 100 ? Math.floor(b.limit) : 100;
    const list = this.#kf.accounts().slice(offset, offset + limit).map((a) => ({ ...a, avatar: "", manage_privilege: true }));
    return { json: { errcode: 0, errmsg: "ok", account_list: list } };
  }

  #messageSend({ url, body }: Ctx): Answer {
    const app = this.#auth(url);
    const b = jsonBody(body);
    if (b.agentid === undefined || b.agentid === null || b.agentid === "") throw new SimApiError(41011, "agentid missing");
    const agentId = Number(b.agentid);
    if (!Number.isInteger(agentId) || ![...this.#apps.keys()].includes(agentId)) throw new SimApiError(40056, "invalid agentid");
    if (agentId !== app.cfg.agentId) throw new SimApiError(301002, "not allow to operate another agent");
    const msgtype = requireString(b, "msgtype");
    if (!APP_MSGTYPES.has(msgtype)) throw new SimApiError(40008, "invalid message type");
    const str = (k: string) => (typeof b[k] === "string" ? (b[k] as string) : "");
    if (str("touser") === "" && str("toparty") === "" && str("totag") === "") {
      throw new SimApiError(40058, "invalid Request Parameter, touser, toparty and totag cannot all be empty");
    }
    const content = b[msgtype];
    if (typeof content !== "object" || content === null) throw new SimApiError(40058, `invalid Request Parameter, ${msgtype} is required`);
    const c = content as Record<string, unknown>;
    if (msgtype === "text" || msgtype === "markdown") {
      const text = c.content;
      if (typeof text !== "string" || text === "") throw new SimApiError(44004, "empty content");
      if (utf8Length(text) > APP_TEXT_REPLY_MAX_BYTES) throw new SimApiError(45002, `content size out of limit, ${utf8Length(text)} bytes > ${APP_TEXT_REPLY_MAX_BYTES}`);
    }
    if (msgtype === "image" || msgtype === "voice" || msgtype === "video" || msgtype === "file") {
      const id = c.media_id;
      if (typeof id !== "string" || !this.#mediaExists(id)) throw new SimApiError(40007, "invalid media_id");
    }
    let invalid: string[] = [];
    const members = app.cfg.members;
    if (members !== undefined && str("touser") !== "@all") {
      const users = str("touser").split("|").filter((u) => u !== "");
      invalid = users.filter((u) => !members.includes(u));
      if (users.length > 0 && invalid.length === users.length && str("toparty") === "" && str("totag") === "") {
        throw new SimApiError(81013, "user & party & tag all invalid");
      }
    }
    const now = this.#now();
    this.sent.push({ api: "message/send", body: b, at: now });
    return { json: { errcode: 0, errmsg: "ok", invaliduser: invalid.join("|"), msgid: this.#ids.appSendMsgId() } };
  }

  #mediaUpload({ req, url, body }: Ctx): Answer {
    this.#auth(url);
    const type = url.searchParams.get("type") ?? "";
    const limit = UPLOAD_LIMITS[type];
    if (limit === undefined) throw new SimApiError(40005, "invalid media type");
    const boundary = multipartBoundary(req.headers["content-type"]);
    const parts = boundary === undefined ? undefined : parseMultipart(body, boundary);
    const part = parts?.find((p) => p.name === "media");
    if (part === undefined || part.data.length === 0) throw new SimApiError(44001, "empty media data");
    if (part.data.length <= 5) throw new SimApiError(40006, "invalid file size, a file must be larger than 5 bytes");
    if (part.data.length > limit.max) throw new SimApiError(limit.errcode, `invalid ${type} size, ${part.data.length} bytes > ${limit.max}`);
    if (type === "image" && !isJpgOrPng(part.data)) throw new SimApiError(40123, "invalid image format, JPG or PNG only");
    if (type === "voice" && !part.data.subarray(0, 6).equals(Buffer.from("#!AMR\n"))) throw new SimApiError(301017, "invalid voice format, AMR only");
    const now = this.#now();
    const filename = part.filename ?? "media";
    const contentType = part.contentType ?? "application/octet-stream";
    const mediaId = this.#ids.mediaId();
    this.#media.set(mediaId, { bytes: Buffer.from(part.data), contentType, filename, type, createdAt: now });
    this.sent.push({ api: "media/upload", body: { type, media_id: mediaId, filename, content_type: contentType, size: part.data.length }, at: now });
    return { json: { errcode: 0, errmsg: "", type, media_id: mediaId, created_at: String(Math.floor(now / 1000)) } };
  }

  #mediaGet({ req, url }: Ctx): Answer {
    this.#auth(url);
    const id = url.searchParams.get("media_id");
    if (id === null || id === "") throw new SimApiError(41006, "media_id missing");
    const m = this.#media.get(id);
    if (m === undefined || !this.#mediaExists(id)) throw new SimApiError(40007, "invalid media_id");
    const headers: Record<string, string | number> = {
      "Content-Type": m.contentType,
      "Content-Disposition":
        m.disposition === "rfc5987"
          ? `attachment; filename="${m.filename.replace(/[^\x20-\x7e]|["\\]/g, "_")}"; filename*=UTF-8''${encodeURIComponent(m.filename)}`
          : `attachment; filename="${rawUtf8Header(m.filename)}"`,
      "Accept-Ranges": "bytes",
      "Cache-Control": "no-cache, must-revalidate",
    };
    const range = req.headers.range;
    if (range !== undefined) {
      const r = /^bytes=(\d*)-(\d*)$/.exec(range.trim());
      const size = m.bytes.length;
      let start = r?.[1] ? Number(r[1]) : undefined;
      let end = r?.[2] ? Number(r[2]) : undefined;
      if (start === undefined && end !== undefined) {
        start = Math.max(0, size - end);
        end = size - 1;
      }
      start ??= 0;
      end = Math.min(end ?? size - 1, size - 1);
      if (r === null || start > end || start >= size) {
        return { status: 416, headers: { "Content-Range": `bytes */${size}` }, body: Buffer.alloc(0) };
      }
      return { status: 206, headers: { ...headers, "Content-Range": `bytes ${start}-${end}/${size}` }, body: m.bytes.subarray(start, end + 1) };
    }
    return { status: 200, headers, body: m.bytes };
  }

  #aibotResponse({ url, body }: Ctx): Answer {
    const code = url.searchParams.get("response_code") ?? "";
    const entry = this.#responseCodes.get(code);
    const now = this.#now();
    if (entry === undefined || now > entry.expiresAt) throw new SimApiError(40058, "invalid Request Parameter, response_code invalid or expired");
    if (entry.used) throw new SimApiError(40058, "invalid Request Parameter, response_code already used");
    const b = jsonBody(body);
    const msgtype = requireString(b, "msgtype");
    if (msgtype !== "markdown" && msgtype !== "template_card") throw new SimApiError(40008, "invalid message type, markdown or template_card");
    if (msgtype === "markdown") {
      const m = b.markdown;
      const content = typeof m === "object" && m !== null ? (m as Record<string, unknown>).content : undefined;
      if (typeof content !== "string" || content === "") throw new SimApiError(44004, "empty content");
      if (utf8Length(content) > BOT_STREAM_MAX_BYTES) throw new SimApiError(45002, "content size out of limit");
    }
    entry.used = true;
    this.sent.push({ api: "aibot/response", body: { response_code: code, bot_id: entry.botId, ...b }, at: now });
    return { json: { errcode: 0, errmsg: "ok" } };
  }

  #serveBotMedia(key: string): Answer {
    const m = this.#botMedia.get(key);
    if (m === undefined) {
      return { status: 404, headers: { "Content-Type": "application/xml" }, body: Buffer.from('<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>') };
    }
    if (this.#now() > m.expiresAt) {
      return { status: 403, headers: { "Content-Type": "application/xml" }, body: Buffer.from('<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>') };
    }
    return { status: 200, headers: { "Content-Type": "application/octet-stream" }, body: m.bytes };
  }
}
