/**
 * WeChat Customer Service (微信客服, KF) in the WeCom simulator: the APIs (`kf/sync_msg`,
 * `kf/send_msg`, `kf/send_msg_on_event`, `kf/service_state/get`, `kf/account/list`) with WeCom's
 * rules, and what tests inject as the WeChat side (accounts, customer messages, events), each
 * followed by the kf_msg_or_event callback WeCom sends.
 * @module
 */
import { utf8Length } from "../../wecom/fields.js";
import type { CallbackResult } from "./callback-client.js";
import type { Callbacks } from "./callbacks.js";
import type { Handler, RequestCtx, SimContext } from "./context.js";
import { SimApiError, jsonBody, requireString } from "./errors.js";
import { KF_CURSOR_MAX_BYTES, KF_SEND_MSGTYPES, KF_SYNC_LIMIT_MAX, KF_TOKEN_MAX_BYTES, KfStore, checkKfMessageBody } from "./kf-store.js";
import { WECOM_RULES } from "./rules.js";
import type { TokenService } from "./tokens.js";

/** Who a kf/sync_msg call was for, and whether it carried a valid callback Token. */
export interface KfSyncCall {
  /** open_kfid of the call ("" when it had none). */
  openKfId: string;
  /** True when it carried a (valid) callback Token. */
  withToken: boolean;
  /** When, per the simulator's clock. */
  at: number;
}

/** The KF APIs and the WeChat side of KF. */
export class KfService {
  readonly #ctx: SimContext;
  readonly #tokens: TokenService;
  readonly #callbacks: Callbacks;
  readonly #mediaExists: (id: string) => boolean;
  /** The accounts, message log, sessions and codes. */
  readonly store = new KfStore();
  /** Every accepted kf/sync_msg call. */
  readonly syncCalls: KfSyncCall[] = [];

  /**
   * @param ctx the shared simulator context
   * @param tokens access-token checks
   * @param callbacks posts kf_msg_or_event
   * @param mediaExists whether a media_id is valid
   */
  constructor(ctx: SimContext, tokens: TokenService, callbacks: Callbacks, mediaExists: (id: string) => boolean) {
    this.#ctx = ctx;
    this.#tokens = tokens;
    this.#callbacks = callbacks;
    this.#mediaExists = mediaExists;
  }

  /** The routes of this family. */
  readonly routes: Record<string, Handler> = {
    "kf/sync_msg": (ctx) => this.#syncMsg(ctx),
    "kf/send_msg": (ctx) => this.#sendMsg(ctx),
    "kf/send_msg_on_event": (ctx) => this.#sendMsgOnEvent(ctx),
    "kf/service_state/get": (ctx) => this.#serviceStateGet(ctx),
    "kf/account/list": (ctx) => this.#accountList(ctx),
  };

  #requireAccount(openKfId: string): void {
    if (!this.store.hasAccount(openKfId)) throw new Error(`unknown KF account ${openKfId}`);
  }

  // --- the WeChat side ---------------------------------------------------------------------

  /** Set a customer's service_state directly (no event, no checks). */
  setServiceState(openKfId: string, externalUserId: string, state: 0 | 1 | 2 | 3 | 4, servicerUserId?: string): void {
    this.#requireAccount(openKfId);
    const s = this.store.session(openKfId, externalUserId);
    s.serviceState = state;
    if (servicerUserId !== undefined) s.servicerUserId = servicerUserId;
  }

  /** A customer (origin 3) or a servicer in the WeCom client (origin 5) writes; then kf_msg_or_event. */
  async customerSends(
    openKfId: string,
    externalUserId: string,
    msg: { msgtype: string; [body: string]: unknown },
    opts: { sendTime?: number; callback?: boolean; servicerUserId?: string; origin?: 3 | 5 } = {},
  ): Promise<{ msgid: string; callback?: CallbackResult }> {
    this.#requireAccount(openKfId);
    const sendTime = opts.sendTime ?? Math.floor(this.#ctx.now() / 1000);
    const msgid = this.#ctx.ids.kfMsgId();
    const origin = opts.origin ?? 3;
    const item: Record<string, unknown> = { msgid, open_kfid: openKfId, external_userid: externalUserId, send_time: sendTime, origin };
    // WeCom names the servicer of the session on customer items too (see the KF fixtures)
    const servicer = opts.servicerUserId ?? this.store.servicerOf(openKfId, externalUserId);
    if (servicer !== undefined) item.servicer_userid = servicer;
    Object.assign(item, msg);
    this.store.append(openKfId, sendTime, item);
    if (origin === 3) {
      const s = this.store.session(openKfId, externalUserId);
      if (s.serviceState === 4) s.serviceState = 0; // a new message opens a new session
      this.store.customerWrote(openKfId, externalUserId, sendTime * 1000);
    }
    const callback = opts.callback === false ? undefined : await this.notify(openKfId);
    return callback === undefined ? { msgid } : { msgid, callback };
  }

  /**
   * A KF event (origin 4, msgtype event), `open_kfid` added inside the event when missing; its
   * codes become usable with send_msg_on_event, and session_status_change moves the session.
   */
  async event(
    openKfId: string,
    event: Record<string, unknown> & { event_type: string },
    opts: { callback?: boolean; sendTime?: number } = {},
  ): Promise<{ msgid: string; callback?: CallbackResult }> {
    this.#requireAccount(openKfId);
    const sendTime = opts.sendTime ?? Math.floor(this.#ctx.now() / 1000);
    const msgid = this.#ctx.ids.kfMsgId();
    const { event_type, ...rest } = event;
    const ev: Record<string, unknown> = { event_type, open_kfid: openKfId, ...rest };
    this.store.append(openKfId, sendTime, { msgid, send_time: sendTime, origin: 4, msgtype: "event", event: ev });
    const user = typeof ev.external_userid === "string" ? ev.external_userid : undefined;
    const at = sendTime * 1000;
    if (user !== undefined) this.store.session(openKfId, user);
    const codes = WECOM_RULES.kf.codes;
    if (event_type === "enter_session" && typeof ev.welcome_code === "string") {
      this.store.addCode(ev.welcome_code, { openKfId, expiresAt: at + codes.welcome.ttlMs, used: false, msgtypes: codes.welcome.msgtypes });
    }
    if (event_type === "session_status_change") {
      const change = Number(ev.change_type);
      if (typeof ev.msg_code === "string" && ev.msg_code !== "") {
        const rule = change === 3 ? codes.end : codes.servicer;
        this.store.addCode(ev.msg_code, { openKfId, expiresAt: at + rule.ttlMs, used: false, msgtypes: rule.msgtypes });
      }
      if (user !== undefined) {
        const s = this.store.session(openKfId, user);
        if (change === 1 || change === 2 || change === 4) {
          s.serviceState = 3;
          if (typeof ev.new_servicer_userid === "string" && ev.new_servicer_userid !== "") s.servicerUserId = ev.new_servicer_userid;
        } else if (change === 3) s.serviceState = 4;
      }
    }
    const callback = opts.callback === false ? undefined : await this.notify(openKfId);
    return callback === undefined ? { msgid } : { msgid, callback };
  }

  /** The kf_msg_or_event callback to the KF app; undefined when there is none or it has no URL. */
  async notify(openKfId: string): Promise<CallbackResult | undefined> {
    const app = [...this.#ctx.apps.values()].find((a) => a.cfg.kf === true);
    if (app?.callbackUrl === undefined) {
      this.#ctx.log(`kf_msg_or_event for ${openKfId} not sent: no KF app with a callback URL`);
      return undefined;
    }
    const token = this.#ctx.ids.kfCallbackToken();
    this.store.addCallbackToken(token, this.#ctx.now());
    return this.#callbacks.kfMsgOrEvent(app, openKfId, token);
  }

  // --- the APIs ------------------------------------------------------------------------------

  #syncMsg({ url, body }: RequestCtx) {
    this.#tokens.authKf(url);
    const b = jsonBody(body);
    let scope: string | undefined;
    if (b.open_kfid !== undefined && b.open_kfid !== null && b.open_kfid !== "") {
      if (typeof b.open_kfid !== "string" || !this.store.hasAccount(b.open_kfid)) throw new SimApiError(95000, "invalid open_kfid");
      scope = b.open_kfid;
    }
    let limit: number = KF_SYNC_LIMIT_MAX;
    if (b.limit !== undefined && b.limit !== null && b.limit !== 0) {
      if (typeof b.limit !== "number" || !Number.isInteger(b.limit) || b.limit < 1 || b.limit > KF_SYNC_LIMIT_MAX) {
        throw new SimApiError(40058, `invalid Request Parameter, limit must be 1..${KF_SYNC_LIMIT_MAX}`);
      }
      limit = b.limit;
    }
    if (b.voice_format !== undefined && b.voice_format !== null && b.voice_format !== 0 && b.voice_format !== 1) {
      throw new SimApiError(40058, "invalid Request Parameter, voice_format must be 0 or 1");
    }
    const now = this.#ctx.now();
    const withToken = b.token !== undefined && b.token !== null && b.token !== "";
    if (withToken) {
      if (typeof b.token !== "string" || utf8Length(b.token) > KF_TOKEN_MAX_BYTES || !this.store.callbackTokenValid(b.token, now)) {
        throw new SimApiError(95007, "invalid msg token");
      }
    }
    this.syncCalls.push({ openKfId: scope ?? "", withToken, at: now });
    let after = 0;
    if (b.cursor !== undefined && b.cursor !== null && b.cursor !== "") {
      const seq = typeof b.cursor === "string" && utf8Length(b.cursor) <= KF_CURSOR_MAX_BYTES ? this.store.parseCursor(scope, b.cursor) : undefined;
      if (seq === undefined) throw new SimApiError(this.#ctx.errcodes.invalidCursor, "invalid cursor");
      after = seq;
    }
    const page = this.store.page(scope, after, limit, now);
    return { json: { errcode: 0, errmsg: "ok", next_cursor: page.nextCursor, has_more: page.hasMore ? 1 : 0, msg_list: page.items } };
  }

  #sendMsg({ url, body }: RequestCtx) {
    this.#tokens.authKf(url);
    const b = jsonBody(body);
    const touser = requireString(b, "touser");
    const openKfId = requireString(b, "open_kfid");
    if (!this.store.hasAccount(openKfId)) throw new SimApiError(95000, "invalid open_kfid");
    if (!this.store.knowsCustomer(openKfId, touser)) throw new SimApiError(40096, "invalid external userid");
    const msgtype = requireString(b, "msgtype");
    if (!KF_SEND_MSGTYPES.has(msgtype)) throw new SimApiError(40008, "invalid message type");
    checkKfMessageBody(b, msgtype, this.#mediaExists);
    const errcodes = this.#ctx.errcodes;
    const given = this.store.checkMsgId(openKfId, b.msgid, errcodes);
    const now = this.#ctx.now();
    const session = this.store.checkCanSend(openKfId, touser, now, errcodes);
    const msgid = given ?? this.#ctx.ids.kfSendMsgId();
    this.store.useMsgId(openKfId, msgid);
    session.sentSinceCustomer++;
    this.#ctx.record({ api: "kf/send_msg", body: b, at: now, msgid, delivered: true });
    return { json: { errcode: 0, errmsg: "ok", msgid } };
  }

  #sendMsgOnEvent({ url, body }: RequestCtx) {
    this.#tokens.authKf(url);
    const b = jsonBody(body);
    const code = requireString(b, "code");
    const msgtype = requireString(b, "msgtype");
    if (msgtype !== "text" && msgtype !== "msgmenu") throw new SimApiError(40008, "invalid message type, send_msg_on_event sends text or msgmenu");
    const now = this.#ctx.now();
    const errcodes = this.#ctx.errcodes;
    const c = this.store.takeCode(code, msgtype, now, errcodes);
    checkKfMessageBody(b, msgtype, this.#mediaExists);
    const given = this.store.checkMsgId(c.openKfId, b.msgid, errcodes);
    const msgid = given ?? this.#ctx.ids.kfSendMsgId();
    c.used = true;
    this.store.useMsgId(c.openKfId, msgid);
    this.#ctx.record({ api: "kf/send_msg_on_event", body: b, at: now, msgid, delivered: true });
    return { json: { errcode: 0, errmsg: "ok", msgid } };
  }

  #serviceStateGet({ url, body }: RequestCtx) {
    this.#tokens.authKf(url);
    const b = jsonBody(body);
    const openKfId = requireString(b, "open_kfid");
    const user = requireString(b, "external_userid");
    if (!this.store.hasAccount(openKfId)) throw new SimApiError(95000, "invalid open_kfid");
    if (!this.store.knowsCustomer(openKfId, user)) throw new SimApiError(40096, "invalid external userid");
    const s = this.store.session(openKfId, user);
    const json: Record<string, unknown> = { errcode: 0, errmsg: "ok", service_state: s.serviceState };
    if (s.serviceState === 3 && s.servicerUserId !== undefined) json.servicer_userid = s.servicerUserId;
    return { json };
  }

  #accountList({ url, body }: RequestCtx) {
    this.#tokens.authKf(url);
    const b = body.length === 0 ? {} : jsonBody(body);
    const offset = typeof b.offset === "number" && b.offset >= 0 ? Math.floor(b.offset) : 0;
    const limit = typeof b.limit === "number" && b.limit >= 1 && b.limit <= 100 ? Math.floor(b.limit) : 100;
    const list = this.store
      .accounts()
      .slice(offset, offset + limit)
      .map((a) => ({ ...a, avatar: "", manage_privilege: true }));
    return { json: { errcode: 0, errmsg: "ok", account_list: list } };
  }
}
