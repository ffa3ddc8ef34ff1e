/**
 * The admin API: read-only JSON behind `Authorization: Bearer {adminToken}`. Every listing answers
 * `{"items": [...], "next": N|null}`, newest first, paged by key (`?before={next}`), and takes
 * `?tenant={corpId}` (only that corp's rows; an unknown corp lists nothing). Parameters are
 * checked strictly: a bad or unknown one is a 400 naming it, never a 500 and never ignored.
 * @module
 */
import { CHANNELS, type Channel } from "../../model.js";
import type { OutboxState, Page, Store } from "../../store/types.js";
import { bearerMatches } from "../../wecom/crypto.js";

/** An answer of the admin API (the gateway's response shape). */
export interface AdminResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** What the admin API needs of a request. */
export interface AdminRequest {
  method: string;
  query: URLSearchParams;
  /** The Authorization header. */
  authorization: string | undefined;
}

const json = (status: number, body: unknown): AdminResponse => ({ status, headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" }, body: JSON.stringify(body) });

/** A parameter the caller got wrong: answered 400 with errcode `bad_param`. */
export class BadParam extends Error {}

const OUTBOX_STATES: readonly OutboxState[] = ["pending", "inflight", "done", "dead", "refused"];
/** Largest time or key accepted: beyond it is a caller's mistake, not a page. */
const MAX_KEY = Number.MAX_SAFE_INTEGER;

/** The parameters each listing takes (the paging ones included). */
const PARAMS: Record<string, readonly string[]> = {
  conversations: ["limit", "before", "tenant", "channel"],
  messages: ["limit", "before", "tenant", "channel", "conversation", "since", "until"],
  archive: ["limit", "before", "tenant"],
  outbox: ["limit", "before", "tenant", "state"],
  cursors: ["limit", "before", "tenant"],
};

/** Longest `tenant` accepted (a CorpID is 18 characters). */
const MAX_TENANT = 64;

/** Reads the query of one listing, refusing anything it does not know or cannot parse. */
export class Params {
  readonly #q: URLSearchParams;

  /**
   * @param q the query
   * @param allowed the parameters this listing takes (anything else is a {@link BadParam})
   */
  constructor(q: URLSearchParams, allowed: readonly string[]) {
    this.#q = q;
    const seen = new Set<string>();
    for (const k of q.keys()) {
      if (!allowed.includes(k)) throw new BadParam(`unknown parameter (this listing takes ${allowed.join(", ")})`);
      if (seen.has(k)) throw new BadParam(`${k}: given more than once`);
      seen.add(k);
    }
  }

  /** An integer parameter in [min, max], or undefined when absent. */
  int(name: string, min: number, max: number, what: string): number | undefined {
    const v = this.#q.get(name);
    if (v === null) return undefined;
    if (!/^\d{1,16}$/.test(v) || Number(v) < min || Number(v) > max) throw new BadParam(`${name}: must be ${what}`);
    return Number(v);
  }

  /** The `channel` filter, one of the model's channels. */
  channel(): Channel | undefined {
    const v = this.#q.get("channel");
    if (v === null) return undefined;
    if (!(CHANNELS as readonly string[]).includes(v)) throw new BadParam(`channel: must be one of ${CHANNELS.join(", ")}`);
    return v as Channel;
  }

  /** The `state` filter: a comma list of outbox states (default pending, inflight, dead). */
  states(): OutboxState[] {
    const v = this.#q.get("state");
    if (v === null) return ["pending", "inflight", "dead"];
    const list = v.split(",");
    for (const s of list) if (!(OUTBOX_STATES as readonly string[]).includes(s)) throw new BadParam(`state: must be a comma list of ${OUTBOX_STATES.join(", ")}`);
    return [...new Set(list as OutboxState[])];
  }

  /** A text parameter of 1 to `maxLength` characters, or undefined when absent. */
  text(name: string, maxLength: number): string | undefined {
    const v = this.#q.get(name);
    if (v === null) return undefined;
    if (v === "" || v.length > maxLength) throw new BadParam(`${name}: must be 1 to ${maxLength} characters`);
    return v;
  }

  /** The `tenant` filter (a CorpID): 1 to 64 characters without control characters; any other value filters. */
  tenant(): { tenant?: string } {
    const v = this.#q.get("tenant");
    if (v === null) return {};
    if (v === "" || v.length > MAX_TENANT || /[\u0000-\u001f\u007f-\u009f]/.test(v)) throw new BadParam(`tenant: must be a corpId, 1 to ${MAX_TENANT} characters without control characters`);
    return { tenant: v };
  }

  /** `limit` (1–500, default 50) and `before` (the previous page's `next`). */
  page(): Page {
    const limit = this.int("limit", 1, 500, "an integer from 1 to 500") ?? 50;
    const before = this.int("before", 1, MAX_KEY, "the positive integer given as next by the previous page");
    return before === undefined ? { limit } : { limit, before };
  }
}

/**
 * Answer `GET /admin/{path}`.
 * @param store where the listings come from
 * @param adminToken the configured bearer token
 * @param path the path after `/admin/`, split on `/`
 */
export async function adminApi(store: Store, adminToken: string, path: string[], req: AdminRequest): Promise<AdminResponse> {
  if (!bearerMatches(req.authorization, adminToken)) {
    return { ...json(401, { errcode: "unauthorized", errmsg: "missing or wrong admin bearer token" }), headers: { "content-type": "application/json; charset=utf-8", "www-authenticate": 'Bearer realm="wecom-bridge admin"' } };
  }
  const resource = path.join("/");
  const allowed = PARAMS[resource];
  if (allowed === undefined || !Object.hasOwn(PARAMS, resource)) return json(404, { errcode: "not_found", errmsg: `no such admin resource; there are ${Object.keys(PARAMS).join(", ")}` });
  if (req.method !== "GET" && req.method !== "HEAD") return json(405, { errcode: "method_not_allowed", errmsg: "the admin API is read-only: use GET" });
  try {
    const p = new Params(req.query, allowed);
    const page = p.page();
    const tenant = p.tenant();
    const paged = <T>(items: T[], key: (t: T) => number) => json(200, { items, next: items.length === page.limit ? key(items[items.length - 1] as T) : null });
    switch (resource) {
      case "conversations": {
        const channel = p.channel();
        return paged(await store.listConversations({ ...page, ...tenant, ...(channel ? { channel } : {}) }), (c) => c.lastSeq);
      }
      case "messages": {
        const channel = p.channel();
        const conversationId = p.text("conversation", 512);
        const since = p.int("since", 0, MAX_KEY, "a time in milliseconds since 1970 (an integer)");
        const until = p.int("until", 0, MAX_KEY, "a time in milliseconds since 1970 (an integer)");
        if (since !== undefined && until !== undefined && since > until) throw new BadParam("since: must not be after until");
        const filter = { ...tenant, ...(channel ? { channel } : {}), ...(conversationId ? { conversationId } : {}), ...(since !== undefined ? { since } : {}), ...(until !== undefined ? { until } : {}) };
        return paged(await store.listMessages(filter, page), (m) => m.seq);
      }
      case "archive":
        return paged(await store.listArchive({ ...page, ...tenant }), (a) => a.id);
      case "outbox":
        return paged(await store.listOutbox(p.states(), { ...page, ...tenant }), (o) => o.id);
      default:
        return paged(await store.listKfCursors({ ...page, ...tenant }), (c) => c.id);
    }
  } catch (e) {
    if (e instanceof BadParam) return json(400, { errcode: "bad_param", errmsg: e.message });
    throw e;
  }
}

/** Who changed something, for the audit log. */
export interface Actor {
  /** `admin-api` (the bearer token) or `console` (a console session). */
  actor: string;
  /** The client's address. */
  from: string;
}

/** Most ids one replay names. */
export const REPLAY_MAX_IDS = 1000;

/**
 * Answer `POST /admin/outbox/replay`, the admin API's first write: `{"ids": [...]}` puts those
 * dead letters back to pending, `{"all": true}` every dead letter; the answer is
 * `{"replayed": N}` (ids that are not dead letters are not counted). The action is written to the
 * audit log. The caller was authenticated (the bearer token, or a console session and its CSRF
 * token).
 */
export async function adminReplay(store: Store, body: string, who: Actor, now: number): Promise<AdminResponse> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return json(400, { errcode: "bad_json", errmsg: 'the body must be JSON: {"ids": [1, 2]} or {"all": true}' });
  }
  const o = typeof parsed === "object" && parsed !== null && !Array.isArray(parsed) ? (parsed as Record<string, unknown>) : undefined;
  const keys = o === undefined ? [] : Object.keys(o);
  let ids: number[] | "all";
  if (o !== undefined && keys.length === 1 && o.all === true) ids = "all";
  else if (o !== undefined && keys.length === 1 && Array.isArray(o.ids) && o.ids.length > 0 && o.ids.length <= REPLAY_MAX_IDS && o.ids.every((x) => Number.isSafeInteger(x) && (x as number) > 0)) {
    ids = [...new Set(o.ids as number[])];
  } else {
    return json(400, { errcode: "bad_param", errmsg: `the body must be {"ids": [1 to ${REPLAY_MAX_IDS} positive integers]} or {"all": true}` });
  }
  const replayed = await store.replayDead(ids, now);
  const detail = ids === "all" ? `all dead letters: ${replayed} replayed` : `${replayed} of ${ids.length} replayed (ids ${ids.slice(0, 20).join(", ")}${ids.length > 20 ? ", …" : ""})`;
  await store.appendAudit({ time: now, tenant: null, actor: who.actor, from: who.from, action: "replay", detail });
  return json(200, { replayed });
}
