/**
 * The operator console's JSON API, as the browser sees it: one type per answer of
 * `/console/api/*`. The console's front end (`console/`) imports these types only (no code), so the
 * two halves cannot drift apart.
 *
 * Endpoints (all behind the console's session cookie; every POST also needs the session's CSRF
 * token in `X-CSRF-Token` and a JSON body):
 * - `POST /console/api/login` `{"token"}` → {@link SessionInfo} and the session cookie; 401 on a wrong token
 * - `POST /console/api/logout` → `{}`
 * - `GET /console/api/session` → {@link SessionInfo}, or 401 when not logged in
 * - `GET /console/api/live` → Server-Sent Events, each `event: live` with one {@link LiveEvent} as `data`
 * - `GET /console/api/conversations?channel=&tenant=&q=&before=&limit=` → {@link Paged}<{@link ConsoleConversation}>
 * - `GET /console/api/transcript?conversation=&tenant=` → {@link Transcript}
 * - `GET /console/api/outbox?state=&before=&limit=` → {@link OutboxPage}
 * - `POST /admin/outbox/replay` `{"ids": [...]}` or `{"all": true}` → {@link ReplayResult}
 * - `GET /console/api/audit?before=&limit=` → {@link Paged}<{@link AuditItem}>
 * - `GET /console/api/accounts` → {@link Accounts}
 * - `GET /console/api/health` → {@link Health}
 * - `POST /console/api/doctor` `{}` → {@link DoctorResult}
 * - `GET /console/api/playground` → {@link PlaygroundInfo}
 * - `GET /console/api/playground/log?channel=` → {@link PlaygroundLog}
 * - `POST /console/api/playground/customer` and `/agent` `{"channel", "text"}` → `{}`
 *
 * Errors are `{"errcode": string, "errmsg": string}` with a 4xx status.
 * @module
 */

/** The channels of the model, as the console names them. */
export type ConsoleChannel = "app" | "kf" | "bot" | "archive";

/** A logged-in session. */
export interface SessionInfo {
  /** The CSRF token: send it as `X-CSRF-Token` with every POST. */
  csrf: string;
  /** True in the sandbox (`npm start` without a configuration): the Playground is there. */
  sandbox: boolean;
}

/** One message crossing the bridge, as the Live page shows it (one row per `key`, updated in place). */
export interface LiveEvent {
  /** Stable id of the row: `in:{tenant}:{seq}` for a customer's message, `out:{outboxId}` for an agent's. */
  key: string;
  /** When this state was reached, ms. */
  time: number;
  channel: ConsoleChannel;
  /** `in`: from WeCom to the 全媒体; `out`: an agent's answer to WeCom. */
  direction: "in" | "out";
  tenant: string;
  conversationId: string;
  /**
   * in: `stored` → `delivered` (or `retrying`, `dead`); out: `queued` → `sent` (or `retrying`,
   * `refused`, `dead`).
   */
  state: "stored" | "queued" | "delivered" | "sent" | "retrying" | "refused" | "dead";
  /** From the message's arrival to this state, ms (null while not delivered or sent). */
  latencyMs: number | null;
  /** A one-line summary of the content (text cut to 200 characters, else its type). */
  summary: string;
  /** The last error, when retrying, refused or dead. */
  error?: string;
}

/** A page of a listing: newest first; `next` is the `before` of the next page, null at the end. */
export interface Paged<T> {
  items: T[];
  next: number | null;
}

/** A conversation in the Conversations list. */
export interface ConsoleConversation {
  tenant: string;
  conversationId: string;
  channel: ConsoleChannel;
  /** Messages from WeCom stored for it. */
  messages: number;
  lastTime: number;
  /** Paging key. */
  lastSeq: number;
  /** Who the customer is (the last part of the conversation id). */
  customer: string;
}

/** A media item of a transcript line. */
export interface TranscriptMedia {
  /** `image` is shown inline; anything else is a link. */
  kind: "image" | "voice" | "video" | "file" | "other";
  /** A link the console can open (same origin), or null when the file is not (yet) stored. */
  url: string | null;
  name: string;
}

/** One line of a conversation's transcript. */
export interface TranscriptLine {
  /** `in:{seq}` or `out:{outboxId}`. */
  key: string;
  direction: "in" | "out";
  time: number;
  /** Who: the customer's id, or the agent's WorkerName/WorkerNum. */
  from: string;
  /** The text, or a one-line description of what it is. */
  text: string;
  media: TranscriptMedia[];
  /** Outbound: the outbox state (`pending`, `inflight`, `done`, `refused`, `dead`). */
  state?: string;
  /** WeCom refused it: its errcode and reason. */
  refusal?: { errcode: number | null; error: string };
  /** The customer asked for a human (a handoff keyword or event). */
  handoff?: boolean;
  /** An event (enter_session, …) rather than a message. */
  event?: boolean;
}

/** A conversation's transcript, oldest first. */
export interface Transcript {
  tenant: string;
  conversationId: string;
  channel: ConsoleChannel;
  items: TranscriptLine[];
}

/** An outbox entry on the Outbox page. */
export interface ConsoleOutboxEntry {
  id: number;
  tenant: string;
  kind: string;
  conversationId: string | null;
  state: "pending" | "inflight" | "done" | "refused" | "dead";
  attempts: number;
  nextAttemptAt: number;
  lastError: string | null;
  errcode: number | null;
  createdAt: number;
  updatedAt: number;
  /** What it carries, one line. */
  summary: string;
}

/** The Outbox page: entries and counts by state. */
export interface OutboxPage extends Paged<ConsoleOutboxEntry> {
  counts: Record<"pending" | "inflight" | "done" | "refused" | "dead", number>;
}

/** Answer of `POST /admin/outbox/replay`. */
export interface ReplayResult {
  /** Dead letters put back to pending. */
  replayed: number;
}

/** A state-changing action, as the audit log keeps it. */
export interface AuditItem {
  id: number;
  time: number;
  /** `replay`, `purge`, `erase`, `login`, `logout`. */
  action: string;
  /** What it touched, one line (ids, counts). */
  detail: string;
  /** Who: `console`, `admin-api` (the bearer token) or `cli`. */
  actor: string;
  /** From where: the client's address, or the host name for the CLI. */
  from: string;
}

/** The Accounts page. */
export interface Accounts {
  kf: {
    tenant: string;
    openKfId: string;
    /** The stored sync_msg cursor (shortened), null before the first page. */
    cursor: string | null;
    /** When the cursor last moved, ms. */
    updatedAt: number;
    /** Seconds since messages were last stored for it while a pull is due, else 0. */
    lagSec: number;
    lastError: string | null;
  }[];
  bots: {
    tenant: string;
    name: string;
    botId: string;
    mode: "webhook" | "websocket";
    /** websocket: `open`, `connecting`, `standby` (another replica holds it), …; webhook: `callback`. */
    state: string;
    /** websocket: this replica holds the connection. */
    holder: boolean;
    reconnects: number;
  }[];
  apps: {
    tenant: string;
    name: string;
    agentId: number;
    kf: boolean;
    /** `cached` (an access token is in the store), `none`, or `expired`. */
    token: "cached" | "none" | "expired";
    tokenExpiresAt: number | null;
    /** The last WeCom error of this app's calls, when any. */
    lastError: string | null;
  }[];
  omni: {
    /** `omni` or `corp.{corpId}.omni`. */
    name: string;
    baseUrl: string;
    /** The last delivery to it: when, and whether it was accepted. */
    last: { time: number; ok: boolean; error: string | null } | null;
  }[];
}

/** One sample of the Health page (every `intervalSec`). */
export interface HealthPoint {
  time: number;
  /** Messages from WeCom stored in the interval, per second. */
  inPerSec: number;
  /** Messages delivered to the 全媒体 in the interval, per second. */
  deliveredPerSec: number;
  /** Agents' answers sent to WeCom in the interval, per second. */
  outPerSec: number;
  /** Failed attempts and rejected callbacks in the interval. */
  errors: number;
  /** Outbox entries pending or in flight at the sample. */
  outboxDepth: number;
  /** Dead letters at the sample. */
  dead: number;
  /** Median and 95th percentile of outbox attempts in the interval, ms (null without attempts). */
  p50Ms: number | null;
  p95Ms: number | null;
}

/** The Health page: the last hour, oldest first. */
export interface Health {
  intervalSec: number;
  points: HealthPoint[];
}

/** One doctor check (the same rows as `wecom-bridge doctor --json`). */
export interface DoctorCheck {
  check: string;
  status: "ok" | "fail";
  errcode: number | null;
  detail: string;
  fix: string | null;
}

/** Answer of `POST /console/api/doctor`. */
export interface DoctorResult {
  rows: DoctorCheck[];
}

/** The Playground's channels. */
export type PlaygroundChannel = "kf" | "app" | "bot";

/** Answer of `GET /console/api/playground`. */
export interface PlaygroundInfo {
  /** False outside the sandbox (the page then says so). */
  enabled: boolean;
  channels: { id: PlaygroundChannel; label: string }[];
}

/** One message of a Playground chat. */
export interface PlaygroundLine {
  /** Stable id (a streamed bot answer keeps its id while its text grows). */
  id: string;
  /** `customer`: the person playing the customer wrote it; `agent`: it came from the agent desk. */
  from: "customer" | "agent";
  text: string;
  time: number;
  /** A bot answer still streaming. */
  streaming?: boolean;
  /** WeCom refused it (the agent's side shows the notice). */
  failed?: string;
}

/** Answer of `GET /console/api/playground/log`: both sides of one channel's chat. */
export interface PlaygroundLog {
  channel: PlaygroundChannel;
  /** What the customer's phone shows: their messages and the answers WeCom delivered. */
  customer: PlaygroundLine[];
  /** What the agent desk shows: what the 全媒体 received and what the agent sent. */
  agent: PlaygroundLine[];
}

/**
 * What the console's Playground drives (the sandbox provides it, over its simulators): the
 * gateway only relays. Every method works through the simulators, so each message really crosses
 * the bridge.
 */
export interface PlaygroundHooks {
  /** The channels offered. */
  info(): PlaygroundInfo;
  /** Both sides of a channel's chat, as they are now. */
  log(channel: PlaygroundChannel): PlaygroundLog;
  /** The customer writes `text` on `channel` (WeCom's simulator sends the callback). */
  customerSends(channel: PlaygroundChannel, text: string): Promise<void>;
  /**
   * The agent answers the channel's customer with `text` (the 全媒体 simulator signs a
   * staffService request to the gateway). Rejects with a readable message when there is nobody
   * to answer yet (the customer has not written).
   */
  agentSends(channel: PlaygroundChannel, text: string): Promise<void>;
}
