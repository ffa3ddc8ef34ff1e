/**
 * The gateway's configuration: a JSON file (a public contract), validated at start with one clear
 * error per wrong field; secrets can be overridden by environment variables so they need not sit in
 * the file.
 *
 * Environment overrides (names use the app/bot `name` upper-cased, non-alphanumerics as `_`):
 * `WECOM_BRIDGE_ADMIN_TOKEN`, `WECOM_BRIDGE_APP_<NAME>_SECRET`, `WECOM_BRIDGE_APP_<NAME>_TOKEN`,
 * `WECOM_BRIDGE_APP_<NAME>_AES_KEY`, `WECOM_BRIDGE_BOT_<NAME>_TOKEN`, `WECOM_BRIDGE_BOT_<NAME>_AES_KEY`,
 * `WECOM_BRIDGE_ARCHIVE_SECRET`, `WECOM_BRIDGE_OMNI_SECRET`, `WECOM_BRIDGE_OMNI_REPLY_SECRET`,
 * `WECOM_BRIDGE_MEDIA_SECRET`; with `wecom.corps`, each corp's `WECOM_BRIDGE_CORP_<CORPID>_ARCHIVE_SECRET`,
 * `WECOM_BRIDGE_CORP_<CORPID>_OMNI_SECRET` and `WECOM_BRIDGE_CORP_<CORPID>_OMNI_REPLY_SECRET`.
 *
 * Many corps: `wecom.corps` (a list of `{corpId, apps, bots, archive?, omni?}`) replaces
 * `wecom.corpId`, `wecom.apps`, `wecom.bots` and the top-level `archive`; the top-level `omni`
 * stays required and is the 全媒体 of every corp without its own. {@link corpsOf} reads both forms
 * as one list of corps.
 * @module
 */
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { dirname, isAbsolute, resolve } from "node:path";
import { z } from "zod";
import { BridgeError } from "./errors.js";
import { jsonSyntaxError } from "./json-error.js";
import { parseEncodingAESKey } from "./wecom/crypto.js";

/** An invalid configuration: `problems` lists one line per wrong field. */
export class ConfigError extends BridgeError {
  /** One readable line per problem, `path: what is wrong`. */
  readonly problems: string[];

  /** @param problems one line per wrong field */
  constructor(problems: string[]) {
    super("config_invalid", `invalid configuration:\n  ${problems.join("\n  ")}`);
    this.problems = problems;
  }
}

const aesKey = z.string().refine(
  (k) => {
    try {
      parseEncodingAESKey(k);
      return true;
    } catch {
      return false;
    }
  },
  { message: "must be 43 characters of base64 decoding to 32 bytes (the EncodingAESKey)" },
);

const name = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "must be 1-64 characters of [A-Za-z0-9_-] (it is part of the callback URL)");
const url = z.url({ protocol: /^https?$/, error: "must be an http(s) URL" }).transform((u) => u.replace(/\/+$/, ""));

const appSchema = z.strictObject({
  name,
  agentId: z.number().int().positive(),
  secret: z.string().min(1),
  token: z.string().min(1).max(32),
  encodingAESKey: aesKey,
  /** This app receives kf_msg_or_event and is authorised to call the KF APIs. */
  kf: z.boolean().default(false),
});

/** Default of `wecom.bots[].placeholder`. */
export const DEFAULT_BOT_PLACEHOLDER = "正在为您转接人工客服…";
/** Default of `wecom.bots[].timeoutText`. */
export const DEFAULT_BOT_TIMEOUT_TEXT = "人工客服正在处理，稍后回复您";

const addressOrCidr = z.string().refine(isAddressOrCidr, { message: "must be an IPv4/IPv6 address or CIDR" });

/** Default of `wecom.bots[].wsUrl`: WeCom's long-connection endpoint. */
export const DEFAULT_BOT_WS_URL = "wss://openws.work.weixin.qq.com";

const botSchema = z.strictObject({
  name,
  botId: z.string().min(1),
  /**
   * `webhook` (WeCom POSTs callbacks to `/wecom/bot/{name}`; needs `token` and `encodingAESKey`) or
   * `websocket` (the gateway opens WeCom's long connection; needs `secret`).
   */
  mode: z.enum(["webhook", "websocket"]).default("webhook"),
  /** The callback Token (webhook mode). */
  token: z.string().min(1).optional(),
  /** The callback EncodingAESKey (webhook mode); also the key of the bot's media in that mode. */
  encodingAESKey: aesKey.optional(),
  /** The long-connection Secret (websocket mode). */
  secret: z.string().min(1).optional(),
  /** WeCom's long-connection endpoint (websocket mode). */
  wsUrl: z
    .string()
    .url()
    .refine((u) => /^wss:\/\//.test(u) || /^ws:\/\/(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?(\/|$)/.test(u), {
      message: "must be a wss:// URL (ws:// only to a loopback address: the secret is sent in the first frame)",
    })
    .default(DEFAULT_BOT_WS_URL),
  /**
   * After another connection took the bot over (`disconnected_event`), wait this long before
   * connecting again, seconds: two deployments sharing one bot would otherwise kick each other.
   */
  kickedQuietSec: z.number().int().min(1).max(3600).default(60),
  /** Answered to a user's `enter_chat` (websocket mode: within WeCom's 5 s); none when absent. */
  welcomeText: z.string().min(1).max(2000).optional(),
  /** What the stream shows until an agent answers; "" (the old default) means the default: an empty bubble is a defect. */
  placeholder: z
    .string()
    .max(20480)
    .default(DEFAULT_BOT_PLACEHOLDER)
    .transform((p) => (p === "" ? DEFAULT_BOT_PLACEHOLDER : p)),
  /** The stream finishes this long after the last agent message, seconds. */
  streamIdleSec: z.number().int().min(1).max(330).default(15),
  /** The stream finishes at the latest this long after the user's message, seconds (WeCom stops polling at 360). */
  streamMaxSec: z.number().int().min(5).max(350).default(330),
  /** What a stream finishes with when no agent answered in time. */
  timeoutText: z.string().min(1).max(2000).default(DEFAULT_BOT_TIMEOUT_TEXT),
}).superRefine((b, ctx) => {
  const need = (key: "token" | "encodingAESKey" | "secret") => {
    if (b[key] === undefined) ctx.addIssue({ code: "custom", path: [key], message: `required when mode is ${b.mode}` });
  };
  if (b.mode === "webhook") {
    need("token");
    need("encodingAESKey");
  } else need("secret");
});

const retentionDays = z.number().positive();

const archiveSchema = z.strictObject({
  secret: z.string().min(16, "must be at least 16 characters"),
  /** IP addresses allowed to push; empty means any. */
  allowIps: z.array(z.string()).default([]),
});

const omniSchema = z.strictObject({
  baseUrl: url,
  version: z.string().min(1).default("v1"),
  appId: z.string().min(1),
  secret: z.string().min(1),
  /** Secret of the 全媒体 → APP direction when it differs (one vendor build). */
  replySecret: z.string().min(1).optional(),
  pathPrefix: z.string().regex(/^\/[A-Za-z0-9_\-/]*$/, 'must start with "/"').default("/qmtapi"),
  /** Addresses or CIDRs that may call the staffService endpoint; empty: any. */
  allowIps: z.array(addressOrCidr).default([]),
  /** Accepted clock difference of a request's timestamp, seconds. */
  timestampWindowSec: z.number().int().min(1).max(86_400).default(300),
  /** Without Tag.msgid, the same (ToUserId, ServiceId, MsgType, Content) within this many seconds is a retry. */
  dedupWindowSec: z.number().int().min(0).max(86_400).default(60),
  /** Non-public hosts agents' media may be fetched from, besides the host of baseUrl (names, host:port, addresses, CIDRs). */
  mediaHosts: z.array(z.string().min(1)).default([]),
});

/** One corp of `wecom.corps` (a deployment serving several corps). */
const corpSchema = z.strictObject({
  /** The CorpID: the receiveId of its apps' callbacks and the tenant of its records (it is part of conversation addresses). */
  corpId: z.string().regex(/^[A-Za-z0-9_\-.@]{1,64}$/, "must be 1-64 characters of [A-Za-z0-9_-.@] (it is part of conversation addresses)"),
  apps: z.array(appSchema).default([]),
  bots: z.array(botSchema).default([]),
  /** Its session-archive push; pushes are routed to the corp by this secret. */
  archive: archiveSchema.optional(),
  /** Its 全媒体; the top-level `omni` when absent. */
  omni: omniSchema.optional(),
});

/** True for an IPv4 or IPv6 address, optionally with a `/prefix`. */
export function isAddressOrCidr(s: string): boolean {
  const [addr, prefix, extra] = s.split("/");
  if (extra !== undefined || addr === undefined) return false;
  const v = isIP(addr);
  if (v === 0) return false;
  if (prefix === undefined) return true;
  if (!/^\d{1,3}$/.test(prefix)) return false;
  return Number(prefix) <= (v === 4 ? 32 : 128);
}

/** The configuration schema (defaults included). */
export const configSchema = z.strictObject({
  listen: z.strictObject({ host: z.string().default("127.0.0.1"), port: z.number().int().min(0).max(65535).default(8080) }).default({ host: "127.0.0.1", port: 8080 }),
  publicUrl: url,
  store: z.string().regex(/^(sqlite:.+|postgres(ql)?:\/\/.+)$/, 'must be "sqlite:PATH" or a postgres:// URL').default("sqlite:./data/bridge.db"),
  adminToken: z.string().min(16, "must be at least 16 characters"),
  mediaDir: z.string().default("./data/media"),
  /** Secret that signs media links; defaults to a value derived from adminToken. */
  mediaSecret: z.string().min(16).optional(),
  /** Lifetime of signed media links, seconds. */
  mediaLinkTtlSec: z.number().int().positive().default(7 * 24 * 3600),
  wecom: z.strictObject({
    apiBase: url.default("https://qyapi.weixin.qq.com"),
    /** The CorpID of a single-corp deployment (exclusive with `corps`). */
    corpId: z.string().min(1).optional(),
    /** The corps of a deployment serving several (exclusive with `corpId`, `apps`, `bots` and the top-level `archive`). */
    corps: z.array(corpSchema).min(1, "must list at least one corp").optional(),
    apps: z.array(appSchema).default([]),
    bots: z.array(botSchema).default([]),
    /** Refuse callbacks whose timestamp is further than this from our clock, seconds; 0 disables. */
    callbackWindowSec: z.number().int().min(0).default(300),
  }),
  archive: archiveSchema.optional(),
  /** The 全媒体; with `wecom.corps`, the 全媒体 of every corp without its own. */
  omni: omniSchema,
  handoff: z
    .strictObject({
      /** A customer message equal to one of these (after trimming) asks for a human agent. */
      keywords: z.array(z.string().min(1)).default([]),
      /** A KF menu click with this id asks for a human agent. */
      menuId: z.string().min(1).optional(),
      /** A WeCom servicer's userid: sessions that ask for a human go to that servicer (state 3) instead. */
      toWeComServicer: z.string().min(1).optional(),
    })
    .default({ keywords: [] }),
  kf: z
    .strictObject({
      /** Deliver the 3 days of history a first pull without cursor returns (default: skip it). */
      deliverHistory: z.boolean().default(false),
      /** Messages at most this many seconds older than the first callback still count as new. */
      firstPullGraceSec: z.number().int().min(0).default(60),
      /** sync_msg page size (limit), 1..1000. */
      pageSize: z.number().int().min(1).max(1000).default(1000),
      /** Pull every known account this often, seconds, in case a callback was lost; 0 disables. */
      pollIntervalSec: z.number().int().min(0).default(300),
      /** Move new sessions to state 1 (smart assistant) so that the API keeps the right to send. */
      claimSessions: z.boolean().default(true),
      /** Sent with enter_session's welcome_code (send_msg_on_event); none by default. */
      welcomeText: z.string().min(1).max(1000).optional(),
      /** Sent with the msg_code of a session that ended; none by default. */
      closingText: z.string().min(1).max(1000).optional(),
    })
    .default({ deliverHistory: false, firstPullGraceSec: 60, pageSize: 1000, pollIntervalSec: 300, claimSessions: true }),
  delivery: z
    .strictObject({
      maxAttempts: z.number().int().min(1).default(12),
      baseDelayMs: z.number().int().min(1).default(1000),
      maxDelayMs: z.number().int().min(1).default(5 * 60 * 1000),
      concurrency: z.number().int().min(1).max(256).default(8),
      timeoutMs: z.number().int().min(100).default(10_000),
      /** How long a media fetch that fails for a non-final reason is retried, seconds. */
      mediaDeadlineSec: z.number().int().min(0).default(600),
      /** How long a claimed outbox entry is held before another worker (replica) may take it, seconds; renewed while an attempt runs. */
      leaseSec: z.number().int().min(5).max(3600).default(30),
    })
    .default({ maxAttempts: 12, baseDelayMs: 1000, maxDelayMs: 300_000, concurrency: 8, timeoutMs: 10_000, mediaDeadlineSec: 600, leaseSec: 30 }),
  limits: z
    .strictObject({
      /** Largest callback body accepted, bytes. */
      bodyBytes: z.number().int().min(1024).default(256 * 1024),
      /** Largest media file downloaded from WeCom, bytes (WeCom's largest file is 20 MB). */
      mediaBytes: z.number().int().min(1024).default(20 * 1024 * 1024),
      /** Request headers must arrive within this, ms. */
      headersTimeoutMs: z.number().int().min(100).default(10_000),
      /** The whole request must arrive within this, ms. */
      requestTimeoutMs: z.number().int().min(100).default(30_000),
      /** Most sockets open at once. */
      maxConnections: z.number().int().min(1).default(10_000),
    })
    .default({ bodyBytes: 256 * 1024, mediaBytes: 20 * 1024 * 1024, headersTimeoutMs: 10_000, requestTimeoutMs: 30_000, maxConnections: 10_000 }),
  /** Addresses or CIDRs of the reverse proxies whose X-Forwarded-For is believed; empty: none. */
  trustProxy: z.array(addressOrCidr).default([]),
  retention: z
    .strictObject({
      /** Days messages and finished outbox entries are kept: a number, or per channel with a `default`. */
      days: z.union([retentionDays, z.strictObject({ default: retentionDays.default(30), app: retentionDays.optional(), kf: retentionDays.optional(), bot: retentionDays.optional(), archive: retentionDays.optional() })]).default(30),
      /** How often the pruner runs, seconds. */
      intervalSec: z.number().int().min(1).default(60),
      /** Rows deleted per transaction. */
      batchSize: z.number().int().min(1).max(10_000).default(500),
      /** Days the audit log is kept. */
      auditDays: z.number().positive().default(365),
    })
    .default({ days: 30, intervalSec: 60, batchSize: 500, auditDays: 365 }),
});

/** The schema's output: `wecom.corpId` is absent in the many-corps form. */
type ParsedConfig = z.output<typeof configSchema>;

/**
 * A validated configuration, defaults applied. Both forms read the same: `wecom.corpId`,
 * `wecom.apps`, `wecom.bots`, `archive` and `omni` are what a single-corp configuration says;
 * with `wecom.corps`, `wecom.corpId` is the first corp's, `wecom.apps` and `wecom.bots` are every
 * corp's (their names are unique across the deployment), and `archive` is absent. Code that acts
 * for a corp reads {@link corpsOf}.
 */
export type Config = Omit<ParsedConfig, "wecom"> & {
  wecom: Omit<ParsedConfig["wecom"], "corpId"> & {
    /** The CorpID of a single-corp configuration; with `wecom.corps`, the first corp's (see {@link corpsOf}). */
    corpId: string;
  };
};
/** A configuration as written in the file (defaults optional). */
export type ConfigInput = z.input<typeof configSchema>;
/** One configured self-built app. */
export type AppConfig = Config["wecom"]["apps"][number];
/** One configured AI bot. */
export type BotConfig = Config["wecom"]["bots"][number];
/** The settings of one 全媒体 (the top-level `omni`, or a corp's own). */
export type OmniConfig = Config["omni"];
/** The session-archive push of one corp (the top-level `archive`, or a corp's own). */
export type ArchiveConfig = z.output<typeof archiveSchema>;

/** One corp the deployment serves, as {@link corpsOf} resolves it. */
export interface CorpConfig {
  /** The CorpID: the receiveId of its apps' callbacks and the tenant of its records. */
  corpId: string;
  apps: AppConfig[];
  bots: BotConfig[];
  /** Its session-archive push (pushes are routed to it by `archive.secret`), when configured. */
  archive: ArchiveConfig | undefined;
  /** Its 全媒体: its own `omni`, else the top-level one. */
  omni: OmniConfig;
}

/** True when the configuration lists its corps in `wecom.corps` (many corps per deployment). */
export function isManyCorps(config: Pick<Config, "wecom">): boolean {
  return config.wecom.corps !== undefined;
}

/**
 * Every corp of a configuration, in the file's order, each with its resolved `omni` (its own,
 * else the top-level one) and `archive`: one shape for both forms (a single-corp configuration is
 * one corp).
 */
export function corpsOf(config: Pick<Config, "wecom" | "archive" | "omni">): CorpConfig[] {
  const corps = config.wecom.corps;
  if (corps === undefined) {
    return [{ corpId: config.wecom.corpId, apps: config.wecom.apps, bots: config.wecom.bots, archive: config.archive, omni: config.omni }];
  }
  return corps.map((c) => ({ corpId: c.corpId, apps: c.apps, bots: c.bots, archive: c.archive, omni: c.omni ?? config.omni }));
}

/**
 * The configuration as one corp sees it: `wecom.corpId`, `wecom.apps`, `wecom.bots`, `archive`
 * and `omni` are that corp's, everything else is the deployment's. Code written for one corp runs
 * for each with its view.
 */
export function corpView(config: Config, corp: CorpConfig): Config {
  const { archive: _, ...rest } = config;
  const view: Config = { ...rest, wecom: { ...config.wecom, corpId: corp.corpId, apps: corp.apps, bots: corp.bots }, omni: corp.omni };
  if (corp.archive !== undefined) view.archive = corp.archive;
  return view;
}

/** The key of the credential a 全媒体 signs its staffService requests with: path, appId and secret. */
export function omniCredentialKey(omni: OmniConfig): string {
  return JSON.stringify([omni.pathPrefix.replace(/\/+$/, ""), omni.appId, omni.replySecret ?? omni.secret]);
}

function envName(s: string): string {
  return s.toUpperCase().replace(/[^A-Z0-9]/g, "_");
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

/** Apply the environment overrides of secrets to a raw (unvalidated) configuration object. */
export function applyEnvOverrides(raw: unknown, env: NodeJS.ProcessEnv): unknown {
  if (!isObj(raw)) return raw;
  const cfg = structuredClone(raw);
  const set = (obj: unknown, key: string, v: string | undefined) => {
    if (isObj(obj) && v !== undefined && v !== "") obj[key] = v;
  };
  set(cfg, "adminToken", env.WECOM_BRIDGE_ADMIN_TOKEN);
  set(cfg, "mediaSecret", env.WECOM_BRIDGE_MEDIA_SECRET);
  // a database URL carries its password: it may come from the environment too
  set(cfg, "store", env.WECOM_BRIDGE_STORE);
  const wecom = isObj(cfg.wecom) ? cfg.wecom : {};
  const named = (list: unknown) => (Array.isArray(list) ? list.filter((x): x is Obj & { name: string } => isObj(x) && typeof x.name === "string") : []);
  const corps = Array.isArray(wecom.corps) ? wecom.corps.filter(isObj) : [];
  const appsAndBots = [wecom, ...corps];
  for (const app of appsAndBots.flatMap((c) => named(c.apps))) {
    const p = `WECOM_BRIDGE_APP_${envName(app.name)}_`;
    set(app, "secret", env[`${p}SECRET`]);
    set(app, "token", env[`${p}TOKEN`]);
    set(app, "encodingAESKey", env[`${p}AES_KEY`]);
  }
  for (const bot of appsAndBots.flatMap((c) => named(c.bots))) {
    const p = `WECOM_BRIDGE_BOT_${envName(bot.name)}_`;
    set(bot, "token", env[`${p}TOKEN`]);
    set(bot, "encodingAESKey", env[`${p}AES_KEY`]);
    set(bot, "secret", env[`${p}SECRET`]);
  }
  // with wecom.corps, each corp has its own archive secret: the single one has no corp to go to
  if (env.WECOM_BRIDGE_ARCHIVE_SECRET && wecom.corps === undefined) cfg.archive = { ...(isObj(cfg.archive) ? cfg.archive : {}), secret: env.WECOM_BRIDGE_ARCHIVE_SECRET };
  set(cfg.omni, "secret", env.WECOM_BRIDGE_OMNI_SECRET);
  set(cfg.omni, "replySecret", env.WECOM_BRIDGE_OMNI_REPLY_SECRET);
  for (const corp of corps) {
    if (typeof corp.corpId !== "string") continue;
    const p = `WECOM_BRIDGE_CORP_${envName(corp.corpId)}_`;
    const archiveSecret = env[`${p}ARCHIVE_SECRET`];
    if (archiveSecret) corp.archive = { ...(isObj(corp.archive) ? corp.archive : {}), secret: archiveSecret };
    set(corp.omni, "secret", env[`${p}OMNI_SECRET`]);
    set(corp.omni, "replySecret", env[`${p}OMNI_REPLY_SECRET`]);
  }
  return cfg;
}

/**
 * What is wrong with the form of `wecom` (one corp or many), read from the raw object so that it is
 * reported with the schema's problems. Names keys, never values.
 */
function formProblems(raw: unknown, env: NodeJS.ProcessEnv): string[] {
  if (!isObj(raw) || !isObj(raw.wecom)) return [];
  const wecom = raw.wecom;
  const has = (o: Obj, k: string) => Object.hasOwn(o, k) && o[k] !== undefined;
  const out: string[] = [];
  if (has(wecom, "corpId") && has(wecom, "corps")) out.push("wecom: give either wecom.corpId (one corp) or wecom.corps (several corps), not both");
  else if (!has(wecom, "corpId") && !has(wecom, "corps")) out.push("wecom: wecom.corpId (one corp) or wecom.corps (several corps) is required");
  if (has(wecom, "corps")) {
    if (has(wecom, "apps")) out.push("wecom.apps: with wecom.corps, each corp lists its apps in wecom.corps[].apps");
    if (has(wecom, "bots")) out.push("wecom.bots: with wecom.corps, each corp lists its bots in wecom.corps[].bots");
    if (has(raw, "archive")) out.push("archive: with wecom.corps, each corp has its own archive push in wecom.corps[].archive");
    if (env.WECOM_BRIDGE_ARCHIVE_SECRET) out.push("WECOM_BRIDGE_ARCHIVE_SECRET: with wecom.corps, set each corp's WECOM_BRIDGE_CORP_<CORPID>_ARCHIVE_SECRET instead");
  }
  return out;
}

/**
 * What is wrong with long-connection bots: a botId listed twice when one of them is in websocket
 * mode (the callbacks of a bot go to the URL or to the connection, and answers would take the
 * first entry's way).
 */
function botWsProblems(cfg: ParsedConfig): string[] {
  const out: string[] = [];
  const lists = cfg.wecom.corps !== undefined ? cfg.wecom.corps.map((c, i) => ({ at: `wecom.corps[${i}].bots`, bots: c.bots })) : [{ at: "wecom.bots", bots: cfg.wecom.bots }];
  const seen = new Map<string, { path: string; websocket: boolean }>();
  for (const { at, bots } of lists) {
    bots.forEach((b, j) => {
      const path = `${at}[${j}].botId`;
      const first = seen.get(b.botId);
      if (first === undefined) seen.set(b.botId, { path, websocket: b.mode === "websocket" });
      else if (first.websocket || b.mode === "websocket") out.push(`${path}: the same as ${first.path} (a bot in websocket mode is configured once: WeCom sends its messages to one connection)`);
    });
  }
  return out;
}

/** What is wrong across the corps of a many-corps configuration (names by position, never by value). */
function corpsProblems(cfg: ParsedConfig): string[] {
  const corps = cfg.wecom.corps ?? [];
  const problems: string[] = [];
  /** The first place each value was seen, and a problem for each later one. */
  const unique = (why: string) => {
    const seen = new Map<string, { path: string; corp: number }>();
    return (value: string, path: string, corp: number, sameCorpAllowed = false) => {
      const first = seen.get(value);
      if (first === undefined) seen.set(value, { path, corp });
      else if (!(sameCorpAllowed && first.corp === corp)) problems.push(`${path}: the same as ${first.path} (${why})`);
    };
  };
  const corpIds = unique("corpIds must be unique");
  const appNames = unique("app names must be unique across the deployment: they are the callback path /wecom/app/{name}");
  const botNames = unique("bot names must be unique across the deployment: they are the callback path /wecom/bot/{name}");
  const botIds = unique("a botId belongs to one corp: bot conversation addresses carry no corpId");
  const archiveSecrets = unique("archive pushes are routed to a corp by its secret: each corp needs its own");
  corps.forEach((c, i) => {
    const at = `wecom.corps[${i}]`;
    corpIds(c.corpId, `${at}.corpId`, i);
    c.apps.forEach((a, j) => {
      appNames(a.name, `${at}.apps[${j}].name`, i);
    });
    c.bots.forEach((b, j) => {
      botNames(b.name, `${at}.bots[${j}].name`, i);
      botIds(b.botId, `${at}.bots[${j}].botId`, i, true);
    });
    if (c.archive !== undefined) archiveSecrets(c.archive.secret, `${at}.archive.secret`, i);
  });
  // a staffService request is checked against a credential before its corp is known: the corps
  // that share one must agree on what is checked then
  const byCredential = new Map<string, { omni: OmniConfig; path: string }>();
  const checkedFirst = (o: OmniConfig) => JSON.stringify([o.allowIps, o.timestampWindowSec]);
  corps.forEach((c, i) => {
    const omni = c.omni ?? cfg.omni;
    const path = c.omni !== undefined ? `wecom.corps[${i}].omni` : "omni";
    const key = omniCredentialKey(omni);
    const first = byCredential.get(key);
    if (first === undefined) byCredential.set(key, { omni, path });
    else if (first.omni !== omni && checkedFirst(first.omni) !== checkedFirst(omni)) {
      problems.push(`${path}: the same 全媒体 credential (pathPrefix, appId and secret) as ${first.path} but other allowIps or timestampWindowSec (a credential is checked before the corp is known: give them the same)`);
    }
  });
  return problems;
}

/**
 * Validate a configuration object.
 * @throws ConfigError with one line per wrong field (never echoing a secret value)
 */
export function parseConfig(raw: unknown, env: NodeJS.ProcessEnv = {}): Config {
  const result = configSchema.safeParse(applyEnvOverrides(raw, env));
  const form = formProblems(raw, env);
  if (!result.success) {
    throw new ConfigError([
      ...result.error.issues.map((i) => {
        const path = i.path.length > 0 ? i.path.map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`)).join("").replace(/^\./, "") : "(root)";
        return `${path}: ${i.message}`;
      }),
      ...form,
    ]);
  }
  const parsed = result.data;
  const problems: string[] = [...form];
  const dup = (list: { name: string }[], what: string) => {
    const seen = new Map<string, number>();
    list.forEach((x, i) => {
      const first = seen.get(x.name);
      // named by position, never by value: no configuration error prints a field's value
      if (first !== undefined) problems.push(`wecom.${what}[${i}].name: the same as wecom.${what}[${first}].name (names must be unique)`);
      else seen.set(x.name, i);
    });
  };
  dup(parsed.wecom.apps, "apps");
  dup(parsed.wecom.bots, "bots");
  problems.push(...botWsProblems(parsed));
  problems.push(...corpsProblems(parsed));
  if (parsed.delivery.baseDelayMs > parsed.delivery.maxDelayMs) problems.push("delivery.baseDelayMs: must not exceed delivery.maxDelayMs");
  if (problems.length > 0) throw new ConfigError(problems);
  const corps = parsed.wecom.corps;
  if (corps === undefined) return parsed as Config;
  // the many-corps form read as the single-corp fields say (see Config): every app and bot, the first corp
  return { ...parsed, wecom: { ...parsed.wecom, corpId: (corps[0] as { corpId: string }).corpId, apps: corps.flatMap((c) => c.apps), bots: corps.flatMap((c) => c.bots) } };
}

/**
 * Resolve the relative paths of a configuration (`store` when `sqlite:PATH`, `mediaDir`) against
 * `base`, so that a service started from `/` finds the files next to its configuration.
 */
export function resolvePaths(cfg: Config, base: string): Config {
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(base, p));
  const out = { ...cfg, mediaDir: abs(cfg.mediaDir) };
  if (cfg.store.startsWith("sqlite:") && cfg.store !== "sqlite::memory:") out.store = `sqlite:${abs(cfg.store.slice("sqlite:".length))}`;
  return out;
}

/**
 * Read and validate a JSON configuration file, with environment overrides. Relative paths in it
 * are resolved against the file's folder. Errors name the file, the line and the column, never
 * the text: a configuration holds secrets.
 * @throws ConfigError when the file cannot be read, is not JSON, or has wrong fields
 */
export function loadConfig(path: string, env: NodeJS.ProcessEnv = process.env): Config {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new ConfigError([`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? "error"})`]);
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    const at = jsonSyntaxError(text);
    throw new ConfigError([`${path}: not valid JSON${at ? ` at line ${at.line}, column ${at.column}: ${at.reason}` : ""}`]);
  }
  return resolvePaths(parseConfig(raw, env), dirname(resolve(path)));
}
