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
import { type KfServiceState, WECOM_RULES, kfTransitionAllowed } from "./rules.js";
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

/** A customer's KF session as WeCom's sending rules see it. */
export interface KfSessionView {
  /** service_state: 0 unhandled, 1 smart assistant, 2 waiting pool, 3 human servicer, 4 ended or not started. */
  serviceState: number;
  /** The servicer, in state 3. */
  servicerUserId?: string;
  /** When the customer last wrote, ms. */
  lastCustomerAt?: number;
  /** kf/send_msg messages accepted since then (at most 5). */
  sentSinceCustomer: number;
  /** When the 48-hour window closes, ms (the last moment a send is still taken). */
  windowEndsAt?: number;
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
    "kf/service_state/trans": (ctx) => this.#serviceStateTrans(ctx),
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
    if (event_type === "session_status_change" && user !== undefined) {
      const change = Number(ev.change_type);
      const s = this.store.session(openKfId, user);
      if (change === 1 || change === 2 || change === 4) {
        s.serviceState = 3;
        if (typeof ev.new_servicer_userid === "string" && ev.new_servicer_userid !== "") s.servicerUserId = ev.new_servicer_userid;
      } else if (change === 3) s.serviceState = 4;
      if (typeof ev.msg_code === "string" && ev.msg_code !== "") {
        const rule = change === 3 ? codes.end : codes.servicer;
        const session = { externalUserId: user, state: s.serviceState };
        this.store.addCode(ev.msg_code, { openKfId, expiresAt: at + rule.ttlMs, used: false, msgtypes: rule.msgtypes, session });
      }
    }
    if (event_type === "servicer_status_change" && typeof ev.servicer_userid === "string") {
      // status 1: on duty ("接待中"), 2: off duty ("停止接待")
      this.store.setServicer(openKfId, ev.servicer_userid, Number(ev.status) === 1);
    }
    const callback = opts.callback === false ? undefined : await this.notify(openKfId);
    return callback === undefined ? { msgid } : { msgid, callback };
  }

  /** Add a servicer (接待人员) to an account, on duty ("正在接待") unless `onDuty` is false. */
  addServicer(openKfId: string, userId: string, onDuty = true): void {
    this.#requireAccount(openKfId);
    this.store.setServicer(openKfId, userId, onDuty);
  }

  /**
   * A servicer acts in the WeCom client, and WeCom reports it with a session_status_change event
   * (then kf_msg_or_event): `accept` takes the session from the waiting pool (2 → 3, change_type 1,
   * with a msg_code valid 48 h for one text), `transfer` hands it to another servicer (3 → 3,
   * change_type 2), `end` ends it (3 → 4, change_type 3, with a msg_code valid 20 s for one text or
   * menu), `reopen` writes in an ended session (4 → 3, change_type 4).
   * @throws Error when the session is not in a state the action starts from
   */
  async servicerChangesSession(
    openKfId: string,
    externalUserId: string,
    action: "accept" | "transfer" | "end" | "reopen",
    servicerUserId: string,
    opts: { callback?: boolean } = {},
  ): Promise<{ msgid: string; msgCode?: string; callback?: CallbackResult }> {
    this.#requireAccount(openKfId);
    const s = this.store.session(openKfId, externalUserId);
    const from: Record<typeof action, number> = { accept: 2, transfer: 3, end: 3, reopen: 4 };
    if (s.serviceState !== from[action]) throw new Error(`cannot ${action} a session in service_state ${s.serviceState} (needs ${from[action]})`);
    const types = WECOM_RULES.kf.changeTypes;
    const ev: Record<string, unknown> & { event_type: string } = { event_type: "session_status_change", open_kfid: openKfId, external_userid: externalUserId };
    let msgCode: string | undefined;
    if (action === "accept") {
      Object.assign(ev, { change_type: types.fromPool, new_servicer_userid: servicerUserId });
      msgCode = this.#ctx.ids.kfCode();
    } else if (action === "transfer") {
      Object.assign(ev, { change_type: types.transfer, old_servicer_userid: s.servicerUserId ?? "", new_servicer_userid: servicerUserId });
    } else if (action === "end") {
      Object.assign(ev, { change_type: types.end, old_servicer_userid: servicerUserId });
      msgCode = this.#ctx.ids.kfCode();
    } else {
      Object.assign(ev, { change_type: types.reopen, new_servicer_userid: servicerUserId });
    }
    if (msgCode !== undefined) ev.msg_code = msgCode;
    const r = await this.event(openKfId, ev, opts);
    return msgCode === undefined ? r : { ...r, msgCode };
  }

  /**
   * From now on the customer's side refuses what the company sends: kf/send_msg still answers ok
   * (WeCom accepts the call), and a msg_send_fail event (`fail_msgid`, `fail_type`, default 10:
   * the user refuses) follows in sync_msg with a kf_msg_or_event callback, at once or `delayMs`
   * later by the simulator's clock (then through the scheduler).
   */
  rejectCustomer(openKfId: string, externalUserId: string, opts: { failType?: number; delayMs?: number } = {}): void {
    this.#requireAccount(openKfId);
    this.store.session(openKfId, externalUserId).rejecting = { failType: opts.failType ?? WECOM_RULES.kf.failTypes.customerRejected, delayMs: Math.max(0, opts.delayMs ?? 0) };
  }

  /** The customer's side accepts deliveries again (undoes {@link rejectCustomer}). */
  acceptCustomer(openKfId: string, externalUserId: string): void {
    this.#requireAccount(openKfId);
    delete this.store.session(openKfId, externalUserId).rejecting;
  }

  /** Report a delivery the customer's side refused: msg_send_fail in the log, then kf_msg_or_event. */
  async #reportFailure(openKfId: string, externalUserId: string, failMsgId: string, failType: number): Promise<void> {
    const ev = { event_type: "msg_send_fail", open_kfid: openKfId, external_userid: externalUserId, fail_msgid: failMsgId, fail_type: failType };
    await this.event(openKfId, ev);
  }

  /** A customer's session as the sending rules see it; undefined when the customer never entered or wrote. */
  sessionView(openKfId: string, externalUserId: string): KfSessionView | undefined {
    if (!this.store.knowsCustomer(openKfId, externalUserId)) return undefined;
    const s = this.store.session(openKfId, externalUserId);
    const view: KfSessionView = { serviceState: s.serviceState, sentSinceCustomer: s.sentSinceCustomer };
    if (s.servicerUserId !== undefined) view.servicerUserId = s.servicerUserId;
    if (s.lastCustomerAt !== undefined) {
      view.lastCustomerAt = s.lastCustomerAt;
      view.windowEndsAt = s.lastCustomerAt + WECOM_RULES.kf.sendWindowMs;
    }
    return view;
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
    checkKfMessageBody(b, msgtype, this.#mediaExists, this.#ctx.errcodes);
    const errcodes = this.#ctx.errcodes;
    const given = this.store.checkMsgId(openKfId, b.msgid, errcodes);
    const now = this.#ctx.now();
    const session = this.store.checkCanSend(openKfId, touser, now, errcodes);
    const msgid = given ?? this.#ctx.ids.kfSendMsgId();
    this.store.useMsgId(openKfId, msgid);
    session.sentSinceCustomer++;
    const rejecting = session.rejecting;
    if (rejecting === undefined) {
      this.#ctx.record({ api: "kf/send_msg", body: b, at: now, msgid, delivered: true });
    } else {
      this.#ctx.record({ api: "kf/send_msg", body: b, at: now, msgid, delivered: false, dropped: "rejected" });
      const report = () => this.#reportFailure(openKfId, touser, msgid, rejecting.failType);
      if (rejecting.delayMs > 0) this.#ctx.scheduler.at(now + rejecting.delayMs, `msg_send_fail ${msgid}`, report);
      else {
        // the event is in the log before the answer; its callback follows on its own
        const done = report();
        done.catch((e: unknown) => this.#ctx.log(`msg_send_fail ${msgid}: ${(e as Error).message}`));
      }
    }
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
    checkKfMessageBody(b, msgtype, this.#mediaExists, this.#ctx.errcodes);
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

  #serviceStateTrans({ url, body }: RequestCtx) {
    this.#tokens.authKf(url);
    const b = jsonBody(body);
    const openKfId = requireString(b, "open_kfid");
    const user = requireString(b, "external_userid");
    if (!this.store.hasAccount(openKfId)) throw new SimApiError(95000, "invalid open_kfid");
    if (!this.store.knowsCustomer(openKfId, user)) throw new SimApiError(40096, "invalid external userid");
    const to = b.service_state;
    if (typeof to !== "number" || !(WECOM_RULES.kf.serviceStates as readonly number[]).includes(to)) {
      throw new SimApiError(40058, "invalid Request Parameter, service_state must be 0..4");
    }
    const s = this.store.session(openKfId, user);
    const errcodes = this.#ctx.errcodes;
    if (!kfTransitionAllowed(s.serviceState as KfServiceState, to)) {
      throw new SimApiError(errcodes.invalidTransition, `invalid service_state transition ${s.serviceState} -> ${to}`);
    }
    let servicer: string | undefined;
    if (to === 3) {
      servicer = requireString(b, "servicer_userid");
      if (!this.store.servicerOnDuty(openKfId, servicer)) throw new SimApiError(errcodes.notServicer, "invalid servicer_userid, not a servicer on duty");
    }
    s.serviceState = to;
    if (servicer !== undefined) s.servicerUserId = servicer;
    else delete s.servicerUserId;
    const json: Record<string, unknown> = { errcode: 0, errmsg: "ok" };
    const codes = WECOM_RULES.kf.codes;
    const rule = to === 2 ? codes.pool : to === 3 ? codes.servicer : to === 4 ? codes.end : undefined;
    if (rule !== undefined) {
      const code = this.#ctx.ids.kfCode();
      const now = this.#ctx.now();
      this.store.addCode(code, { openKfId, expiresAt: now + rule.ttlMs, used: false, msgtypes: rule.msgtypes, session: { externalUserId: user, state: to } });
      json.msg_code = code;
    }
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
