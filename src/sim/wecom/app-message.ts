/**
 * Self-built apps' `message/send` in the WeCom simulator, with WeCom's rules: recipients checked
 * against the app's visible members (`invaliduser`, 81013 when nobody valid), text and markdown cut
 * at 2048 bytes, `enable_duplicate_check` dropping a repeat of the same request within
 * `duplicate_check_interval` (answered ok), and more than 30 messages a minute or 1000 an hour to
 * one member dropped silently. Every accepted call is recorded with what reached whom.
 * @module
 */
import type { Handler, RequestCtx, SimApp, SimContext } from "./context.js";
import { SimApiError, jsonBody, requireString } from "./errors.js";
import { WECOM_RULES } from "./rules.js";
import type { TokenService } from "./tokens.js";
import type { SimDropReason, WeComSimRecipient } from "./types.js";

const APP_MSGTYPES = new Set(["text", "image", "voice", "video", "file", "textcard", "news", "mpnews", "markdown", "miniprogram_notice", "template_card"]);
const MEDIA_MSGTYPES = new Set(["image", "voice", "video", "file"]);
const MINUTE = 60_000;
const HOUR = 3600_000;

/** JSON with object keys sorted at every level: two requests with the same content give the same text. */
function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (typeof v === "object" && v !== null) {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(v) ?? "null";
}

/** The longest prefix of `text` of at most `max` UTF-8 bytes that ends on a whole character. */
function cutUtf8(text: string, max: number): string {
  const bytes = Buffer.from(text, "utf8");
  if (bytes.length <= max) return text;
  let end = max;
  while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end--; // never inside a character
  return bytes.toString("utf8", 0, end);
}

/** message/send and its per-member bookkeeping. */
export class AppMessageService {
  readonly #ctx: SimContext;
  readonly #tokens: TokenService;
  readonly #mediaExists: (id: string) => boolean;
  /** (agentId, member) → times of the messages delivered to the member within the last hour. */
  readonly #deliveries = new Map<string, number[]>();
  /** (agentId, canonical request JSON) → when WeCom first took it, its window and msgid. */
  readonly #duplicates = new Map<string, { at: number; until: number; msgid: string }>();

  /**
   * @param ctx the shared simulator context
   * @param tokens access-token checks
   * @param mediaExists whether a media_id is valid
   */
  constructor(ctx: SimContext, tokens: TokenService, mediaExists: (id: string) => boolean) {
    this.#ctx = ctx;
    this.#tokens = tokens;
    this.#mediaExists = mediaExists;
  }

  /** The routes of this family. */
  readonly routes: Record<string, Handler> = {
    "message/send": (ctx) => this.#send(ctx),
  };

  #send({ url, body }: RequestCtx) {
    const app = this.#tokens.auth(url);
    const b = jsonBody(body);
    if (b.agentid === undefined || b.agentid === null || b.agentid === "") throw new SimApiError(41011, "agentid missing");
    const agentId = Number(b.agentid);
    if (!Number.isInteger(agentId) || !this.#ctx.apps.has(agentId)) throw new SimApiError(40056, "invalid agentid");
    if (agentId !== app.cfg.agentId) throw new SimApiError(301002, "not allow to operate another agent");
    const msgtype = requireString(b, "msgtype");
    if (!APP_MSGTYPES.has(msgtype)) throw new SimApiError(40008, "invalid message type");
    const str = (k: string) => (typeof b[k] === "string" ? (b[k] as string) : "");
    const list = (k: string) => str(k).split("|").filter((u) => u !== "");
    if (str("touser") === "" && str("toparty") === "" && str("totag") === "") {
      throw new SimApiError(40058, "invalid Request Parameter, touser, toparty and totag cannot all be empty");
    }
    const rules = WECOM_RULES.app;
    if (list("touser").length > rules.maxUsers) throw new SimApiError(40058, `invalid Request Parameter, touser lists more than ${rules.maxUsers} members`);
    if (list("toparty").length > rules.maxParties || list("totag").length > rules.maxParties) {
      throw new SimApiError(40058, `invalid Request Parameter, toparty and totag list at most ${rules.maxParties} ids`);
    }
    const content = b[msgtype];
    if (typeof content !== "object" || content === null) throw new SimApiError(40058, `invalid Request Parameter, ${msgtype} is required`);
    const c = content as Record<string, unknown>;
    let shown: string | undefined;
    if (msgtype === "text" || msgtype === "markdown") {
      const text = c.content;
      if (typeof text !== "string" || text === "") throw new SimApiError(44004, "empty content");
      // longer texts are not refused: WeCom cuts them ("超过将截断")
      shown = cutUtf8(text, msgtype === "text" ? rules.textMaxBytes : rules.markdownMaxBytes);
    }
    if (MEDIA_MSGTYPES.has(msgtype)) {
      const id = c.media_id;
      if (typeof id !== "string" || !this.#mediaExists(id)) throw new SimApiError(40007, "invalid media_id");
    }
    const intervalMs = this.#duplicateInterval(b);
    // recipients: the app's visible members, compared without case; WeCom answers invalid ones in lower case
    const { valid, invalid } = this.#recipients(app, str("touser"));
    if (valid.length === 0 && invalid.length > 0 && str("toparty") === "" && str("totag") === "") {
      throw new SimApiError(81013, "user & party & tag all invalid");
    }
    const now = this.#ctx.now();
    const answer = (msgid: string) => ({ json: { errcode: 0, errmsg: "ok", invaliduser: invalid.join("|"), msgid } });
    const truncation = shown === undefined ? {} : { shown, ...(shown !== c.content ? { truncated: true } : {}) };
    if (intervalMs !== undefined) {
      const key = `${agentId}\u0000${canonicalJson(b)}`;
      const first = this.#duplicates.get(key);
      if (first !== undefined && now < first.until) {
        // the same request within the interval: answered ok, delivered to nobody
        const recipients = valid.map((userid) => ({ userid, delivered: false, dropped: "duplicate" as const }));
        this.#ctx.record({ api: "message/send", body: b, at: now, msgid: first.msgid, delivered: false, dropped: "duplicate", recipients, ...truncation });
        return answer(first.msgid);
      }
    }
    const msgid = this.#ctx.ids.appSendMsgId();
    const recipients: WeComSimRecipient[] = valid.map((userid) => this.#pace(agentId, userid, now));
    const reached = recipients.some((r) => r.delivered) || (valid.length === 0 && invalid.length === 0) || str("toparty") !== "" || str("totag") !== "";
    const record: Parameters<SimContext["record"]>[0] = { api: "message/send", body: b, at: now, msgid, delivered: reached, recipients, ...truncation };
    if (!reached) record.dropped = recipients[0]?.dropped as SimDropReason;
    this.#ctx.record(record);
    if (intervalMs !== undefined) {
      this.#duplicates.set(`${agentId}\u0000${canonicalJson(b)}`, { at: now, until: now + intervalMs, msgid });
    }
    return answer(msgid);
  }

  /** The duplicate-check window of a request, ms, or undefined when it does not ask for one. */
  #duplicateInterval(b: Record<string, unknown>): number | undefined {
    const enable = b.enable_duplicate_check;
    if (enable === undefined || enable === null || enable === 0) return undefined;
    if (enable !== 1) throw new SimApiError(40058, "invalid Request Parameter, enable_duplicate_check must be 0 or 1");
    const rule = WECOM_RULES.app.duplicateCheck;
    const interval = b.duplicate_check_interval;
    if (interval === undefined || interval === null) return rule.defaultIntervalMs;
    if (typeof interval !== "number" || !Number.isInteger(interval) || interval <= 0 || interval * 1000 > rule.maxIntervalMs) {
      throw new SimApiError(40058, `invalid Request Parameter, duplicate_check_interval must be 1..${rule.maxIntervalMs / 1000} seconds`);
    }
    return interval * 1000;
  }

  /** touser split into the members who can receive (as the app knows them) and the others (lower case). */
  #recipients(app: SimApp, touser: string): { valid: string[]; invalid: string[] } {
    const members = app.cfg.members;
    if (touser === "@all") return { valid: members === undefined ? [] : [...members], invalid: [] };
    const users = [...new Set(touser.split("|").filter((u) => u !== ""))];
    if (members === undefined) return { valid: users, invalid: [] };
    const byLower = new Map(members.map((m) => [m.toLowerCase(), m]));
    const valid: string[] = [];
    const invalid: string[] = [];
    for (const u of users) {
      const m = byLower.get(u.toLowerCase());
      if (m === undefined) invalid.push(u.toLowerCase());
      else valid.push(m);
    }
    return { valid, invalid };
  }

  /** Deliver to one member unless the member already got 30 in the last minute or 1000 in the last hour. */
  #pace(agentId: number, userid: string, now: number): WeComSimRecipient {
    const key = `${agentId}\u0000${userid}`;
    const times = (this.#deliveries.get(key) ?? []).filter((t) => t > now - HOUR);
    const rules = WECOM_RULES.app;
    let dropped: SimDropReason | undefined;
    if (times.filter((t) => t > now - MINUTE).length >= rules.perMemberPerMinute) dropped = "per_minute";
    else if (times.length >= rules.perMemberPerHour) dropped = "per_hour";
    if (dropped === undefined) times.push(now);
    this.#deliveries.set(key, times);
    return dropped === undefined ? { userid, delivered: true } : { userid, delivered: false, dropped };
  }
}
