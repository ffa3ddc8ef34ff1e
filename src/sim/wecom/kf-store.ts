/**
 * The WeChat Customer Service (微信客服, KF) side of the WeCom simulator: accounts, the message log
 * that `kf/sync_msg` pages through with opaque cursors, the per-customer sending rules of
 * `kf/send_msg` (48-hour window, 5 messages per customer message, service state), and the
 * one-use codes of `kf/send_msg_on_event`. No I/O: the HTTP layer calls in.
 * @module
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { utf8Length } from "../../wecom/fields.js";
import { type KfErrcodes, SimApiError, objectField, requireString } from "./errors.js";
import { WECOM_RULES } from "./rules.js";

/** sync_msg serves the last 3 days only. */
export const KF_READABLE_MS = WECOM_RULES.kf.readableMs;
/** sync_msg limit: default and maximum. */
export const KF_SYNC_LIMIT_MAX = WECOM_RULES.kf.syncLimitMax;
/** Byte limit of sync_msg's cursor parameter. */
export const KF_CURSOR_MAX_BYTES = WECOM_RULES.kf.cursorMaxBytes;
/** Byte limit of sync_msg's token parameter. */
export const KF_TOKEN_MAX_BYTES = WECOM_RULES.kf.tokenMaxBytes;

/** msgtypes kf/send_msg accepts. */
export const KF_SEND_MSGTYPES = new Set(["text", "image", "voice", "video", "file", "link", "miniprogram", "msgmenu", "location", "ca_link"]);
const MENU_ITEM_TYPES = new Set(["click", "view", "miniprogram", "text"]);
const MEDIA_TYPES = new Set(["image", "voice", "video", "file"]);

/** One entry of the KF message log. */
export interface KfLogEntry {
  /** Position in the log, 1-based, strictly increasing. */
  seq: number;
  /** The account the item belongs to. */
  openKfId: string;
  /** send_time of the item, seconds. */
  sendTime: number;
  /** The item exactly as sync_msg returns it. */
  item: Record<string, unknown>;
}

/** A customer's conversation with one account, as the sending rules see it. */
export interface KfSession {
  /** When the customer last wrote, ms (undefined when never). */
  lastCustomerAt?: number;
  /** Messages sent by send_msg since then. */
  sentSinceCustomer: number;
  /** service_state: 0 unhandled, 1 smart assistant, 2 waiting pool, 3 human servicer, 4 ended. */
  serviceState: number;
  /** The servicer handling the session (state 3). */
  servicerUserId?: string;
  /** Set while the customer's side refuses deliveries: each accepted send_msg is followed by msg_send_fail. */
  rejecting?: { failType: number; delayMs: number };
}

/** A code of send_msg_on_event. */
export interface KfCode {
  /** The account of the event that carried it. */
  openKfId: string;
  /** When it stops being valid, ms. */
  expiresAt: number;
  /** True once a message was sent with it. */
  used: boolean;
  /** msgtypes allowed with it. */
  msgtypes: readonly string[];
  /**
   * The session it belongs to and the service_state that produced it: the code works only while the
   * session is still in that state (every code but enter_session's welcome_code).
   */
  session?: { externalUserId: string; state: number };
}

/** A sync_msg page. */
export interface KfPage {
  /** The items, oldest first. */
  items: Record<string, unknown>[];
  /** Cursor of the position after the page. */
  nextCursor: string;
  /** True when more items wait (also true on an injected empty page). */
  hasMore: boolean;
}

interface Account {
  name: string;
  emptyPages: number;
  msgIds: Set<string>;
  /** Servicers (接待人员) of the account: userid → on duty ("正在接待"). */
  servicers: Map<string, boolean>;
}

/** The scope of a cursor: an account, or every account when sync_msg has no open_kfid. */
const ALL = "\u0000all";

/** The KF state of one simulated corp. */
export class KfStore {
  readonly #accounts = new Map<string, Account>();
  readonly #log: KfLogEntry[] = [];
  readonly #sessions = new Map<string, KfSession>();
  readonly #codes = new Map<string, KfCode>();
  readonly #tokens = new Map<string, number>();
  readonly #cursorKey = randomBytes(32);
  #cursorCounter = 0;

  /** Add an account (idempotent; renames when it exists). */
  addAccount(openKfId: string, name: string): void {
    const a = this.#accounts.get(openKfId);
    if (a !== undefined) a.name = name;
    else this.#accounts.set(openKfId, { name, emptyPages: 0, msgIds: new Set(), servicers: new Map() });
  }

  /** True when the account exists. */
  hasAccount(openKfId: string): boolean {
    return this.#accounts.has(openKfId);
  }

  /** Every account as `kf/account/list` lists them. */
  accounts(): { open_kfid: string; name: string }[] {
    return [...this.#accounts].map(([id, a]) => ({ open_kfid: id, name: a.name }));
  }

  /** Make the next `n` sync_msg answers of the account empty pages with has_more 1. */
  injectEmptyPages(openKfId: string, n: number): void {
    const a = this.#account(openKfId);
    a.emptyPages += Math.max(0, Math.floor(n));
  }

  #account(openKfId: string): Account {
    const a = this.#accounts.get(openKfId);
    if (a === undefined) throw new Error(`unknown KF account ${openKfId}`);
    return a;
  }

  /** Append an item to the log. */
  append(openKfId: string, sendTime: number, item: Record<string, unknown>): KfLogEntry {
    this.#account(openKfId);
    const entry: KfLogEntry = { seq: this.#log.length + 1, openKfId, sendTime, item };
    this.#log.push(entry);
    return entry;
  }

  /** The whole log (read-only view), oldest first. */
  get log(): readonly KfLogEntry[] {
    return this.#log;
  }

  /** The session of a customer with an account, created on first use. */
  session(openKfId: string, externalUserId: string): KfSession {
    const key = `${openKfId}\u0000${externalUserId}`;
    let s = this.#sessions.get(key);
    if (s === undefined) {
      // before the customer's first message the session is "ended or not started" (4)
      s = { sentSinceCustomer: 0, serviceState: WECOM_RULES.kf.initialState };
      this.#sessions.set(key, s);
    }
    return s;
  }

  /** True when the customer has a session with the account (wrote to it or entered it). */
  knowsCustomer(openKfId: string, externalUserId: string): boolean {
    return this.#sessions.has(`${openKfId}\u0000${externalUserId}`);
  }

  /** The servicer of a customer's session when a human servicer handles it (state 3). */
  servicerOf(openKfId: string, externalUserId: string): string | undefined {
    const s = this.#sessions.get(`${openKfId}\u0000${externalUserId}`);
    return s?.serviceState === 3 ? s.servicerUserId : undefined;
  }

  /** The customer wrote: the 48-hour window and the 5-message allowance start again. */
  customerWrote(openKfId: string, externalUserId: string, atMs: number): void {
    const s = this.session(openKfId, externalUserId);
    s.lastCustomerAt = atMs;
    s.sentSinceCustomer = 0;
  }

  /** Register a send_msg_on_event code. */
  addCode(code: string, c: KfCode): void {
    this.#codes.set(code, c);
  }

  /** Issue a kf_msg_or_event Token valid 10 minutes from `nowMs`. */
  addCallbackToken(token: string, nowMs: number): void {
    this.#tokens.set(token, nowMs + WECOM_RULES.kf.callbackTokenMs);
    if (this.#tokens.size > 10_000) {
      for (const [t, exp] of this.#tokens) if (exp < nowMs) this.#tokens.delete(t);
    }
  }

  /** True when the Token was issued and has not expired. */
  callbackTokenValid(token: string, nowMs: number): boolean {
    const exp = this.#tokens.get(token);
    return exp !== undefined && nowMs <= exp;
  }

  // --- cursors ---------------------------------------------------------------------------

  /**
   * An opaque cursor for a position: 6 bytes of position, 2 of a counter (so that each answer
   * carries a new string, as WeCom's do) and 8 of an HMAC over the scope, in URL-safe base64.
   */
  cursor(scope: string | undefined, seq: number): string {
    this.#cursorCounter = (this.#cursorCounter + 1) & 0xffff;
    const body = Buffer.alloc(8);
    body.writeUIntBE(seq, 0, 6);
    body.writeUInt16BE(this.#cursorCounter, 6);
    return Buffer.concat([body, this.#cursorMac(scope ?? ALL, body)]).toString("base64url");
  }

  #cursorMac(scope: string, body: Buffer): Buffer {
    return createHmac("sha256", this.#cursorKey).update(scope).update("\u0000").update(body).digest().subarray(0, 8);
  }

  /** The position of a cursor, or undefined when it is malformed or of another scope. */
  parseCursor(scope: string | undefined, cursor: string): number | undefined {
    if (!/^[A-Za-z0-9_-]{22}$/.test(cursor)) return undefined;
    const raw = Buffer.from(cursor, "base64url");
    if (raw.length !== 16 || raw.toString("base64url") !== cursor) return undefined; // canonical form only
    const body = raw.subarray(0, 8);
    if (!timingSafeEqual(raw.subarray(8), this.#cursorMac(scope ?? ALL, body))) return undefined;
    const seq = body.readUIntBE(0, 6);
    return seq <= this.#log.length ? seq : undefined;
  }

  /**
   * One sync_msg page after position `after`, for one account or all (`scope` undefined): at
   * most `limit` items still readable (sent within the last 3 days of `nowMs`). Computed in one
   * synchronous step, so a page is a consistent snapshot whatever is appended meanwhile.
   */
  page(scope: string | undefined, after: number, limit: number, nowMs: number): KfPage {
    if (scope !== undefined) {
      const a = this.#account(scope);
      if (a.emptyPages > 0) {
        a.emptyPages--;
        return { items: [], nextCursor: this.cursor(scope, after), hasMore: true };
      }
    }
    const oldest = Math.floor((nowMs - KF_READABLE_MS) / 1000);
    const items: Record<string, unknown>[] = [];
    let last = after;
    let hasMore = false;
    for (let i = after; i < this.#log.length; i++) {
      const e = this.#log[i] as KfLogEntry;
      if ((scope !== undefined && e.openKfId !== scope) || e.sendTime < oldest) {
        if (items.length < limit) last = e.seq;
        continue;
      }
      if (items.length === limit) {
        hasMore = true;
        break;
      }
      items.push(e.item);
      last = e.seq;
    }
    return { items, nextCursor: this.cursor(scope, last), hasMore };
  }

  // --- sending rules ---------------------------------------------------------------------

  /** Check a msgid (format, and unused on the account); undefined msgid is fine. */
  checkMsgId(openKfId: string, msgid: unknown, errcodes: KfErrcodes): string | undefined {
    if (msgid === undefined || msgid === null || msgid === "") return undefined;
    if (typeof msgid !== "string" || !WECOM_RULES.kf.msgidPattern.test(msgid)) throw new SimApiError(40058, "invalid msgid, must be 1 to 32 bytes of [0-9a-zA-Z_-]");
    if (this.#account(openKfId).msgIds.has(msgid)) throw new SimApiError(errcodes.duplicateMsgId, "msgid duplicated");
    return msgid;
  }

  /** Record a msgid as used on the account. */
  useMsgId(openKfId: string, msgid: string): void {
    this.#account(openKfId).msgIds.add(msgid);
  }

  /**
   * The session rules of kf/send_msg, in WeCom's order: service state, 48-hour window, 5 messages.
   * @throws SimApiError 95018, `windowClosed` (95002) or 95001
   */
  checkCanSend(openKfId: string, externalUserId: string, nowMs: number, errcodes: KfErrcodes): KfSession {
    const s = this.session(openKfId, externalUserId);
    if (s.serviceState !== 0 && s.serviceState !== 1) throw new SimApiError(95018, "send msg session status invalid");
    if (s.lastCustomerAt === undefined || nowMs - s.lastCustomerAt > WECOM_RULES.kf.sendWindowMs) {
      throw new SimApiError(errcodes.windowClosed, "send msg time limit, the customer has not written within 48 hours");
    }
    if (s.sentSinceCustomer >= WECOM_RULES.kf.messagesPerCustomerMessage) throw new SimApiError(95001, "send msg count limit");
    return s;
  }

  /**
   * Take a send_msg_on_event code for a msgtype.
   * @throws SimApiError `codeInvalid`, `codeUsed` or 40008
   */
  takeCode(code: string, msgtype: string, nowMs: number, errcodes: KfErrcodes): KfCode {
    const c = this.#codes.get(code);
    if (c === undefined || nowMs > c.expiresAt) throw new SimApiError(errcodes.codeInvalid, "invalid code, expired or unknown");
    if (c.used) throw new SimApiError(errcodes.codeUsed, "code has been used");
    if (!c.msgtypes.includes(msgtype)) throw new SimApiError(40008, `invalid message type ${msgtype} for this code`);
    if (c.session !== undefined && this.session(c.openKfId, c.session.externalUserId).serviceState !== c.session.state) {
      throw new SimApiError(errcodes.codeStateMismatch, "send msg session status invalid, the session left the state of this code");
    }
    return c;
  }

  // --- servicers -------------------------------------------------------------------------

  /** Add a servicer (接待人员) to an account, on duty unless said otherwise. */
  setServicer(openKfId: string, userId: string, onDuty: boolean): void {
    this.#account(openKfId).servicers.set(userId, onDuty);
  }

  /** True when the user is a servicer of the account and on duty ("正在接待"). */
  servicerOnDuty(openKfId: string, userId: string): boolean {
    return this.#account(openKfId).servicers.get(userId) === true;
  }
}

/**
 * Validate the message body of kf/send_msg or send_msg_on_event the way WeCom does: text
 * non-empty (44004) and ≤ 2048 bytes (`textTooLong`, 45002), media ids known (40007), menus ≤ 10 items (95008) of
 * known types (95009), location in range.
 */
export function checkKfMessageBody(body: Record<string, unknown>, msgtype: string, mediaExists: (id: string) => boolean, errcodes: KfErrcodes): void {
  const content = objectField(body, msgtype);
  switch (msgtype) {
    case "text": {
      const text = content.content;
      if (typeof text !== "string" || text === "") throw new SimApiError(44004, "empty content");
      if (utf8Length(text) > WECOM_RULES.kf.textMaxBytes) throw new SimApiError(errcodes.textTooLong, `content size out of limit, ${utf8Length(text)} bytes > ${WECOM_RULES.kf.textMaxBytes}`);
      return;
    }
    case "link": {
      requireString(content, "title");
      requireString(content, "url");
      const thumb = requireString(content, "thumb_media_id");
      if (!mediaExists(thumb)) throw new SimApiError(40007, "invalid media_id");
      return;
    }
    case "miniprogram": {
      requireString(content, "appid");
      requireString(content, "pagepath");
      const thumb = requireString(content, "thumb_media_id");
      if (!mediaExists(thumb)) throw new SimApiError(40007, "invalid media_id");
      return;
    }
    case "msgmenu": {
      const list = content.list;
      if (list !== undefined && !Array.isArray(list)) throw new SimApiError(40058, "invalid Request Parameter, msgmenu.list must be an array");
      const items = (list ?? []) as unknown[];
      if (items.length > WECOM_RULES.kf.menuMaxItems) throw new SimApiError(95008, `menu item count out of limit, ${items.length} > ${WECOM_RULES.kf.menuMaxItems}`);
      for (const it of items) {
        const type = typeof it === "object" && it !== null ? (it as Record<string, unknown>).type : undefined;
        if (typeof type !== "string" || !MENU_ITEM_TYPES.has(type)) throw new SimApiError(95009, "invalid menu item type");
      }
      return;
    }
    case "location": {
      const lat = content.latitude;
      const lng = content.longitude;
      if (typeof lat !== "number" || typeof lng !== "number" || Math.abs(lat) > 90 || Math.abs(lng) > 180) {
        throw new SimApiError(40058, "invalid Request Parameter, latitude/longitude");
      }
      return;
    }
    default:
      if (MEDIA_TYPES.has(msgtype)) {
        const id = requireString(content, "media_id");
        if (!mediaExists(id)) throw new SimApiError(40007, "invalid media_id");
      }
  }
}
