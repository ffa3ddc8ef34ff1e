/**
 * The gateway's configuration: a JSON file (a public contract), validated at start with one clear
 * error per wrong field; secrets can be overridden by environment variables so they need not sit in
 * the file.
 *
 * Environment overrides (names use the app/bot `name` upper-cased, non-alphanumerics as `_`):
 * `WECOM_BRIDGE_ADMIN_TOKEN`, `WECOM_BRIDGE_APP_<NAME>_SECRET`, `WECOM_BRIDGE_APP_<NAME>_TOKEN`,
 * `WECOM_BRIDGE_APP_<NAME>_AES_KEY`, `WECOM_BRIDGE_BOT_<NAME>_TOKEN`, `WECOM_BRIDGE_BOT_<NAME>_AES_KEY`,
 * `WECOM_BRIDGE_ARCHIVE_SECRET`, `WECOM_BRIDGE_OMNI_SECRET`, `WECOM_BRIDGE_OMNI_REPLY_SECRET`,
 * `WECOM_BRIDGE_MEDIA_SECRET`.
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

const botSchema = z.strictObject({
  name,
  botId: z.string().min(1),
  token: z.string().min(1),
  encodingAESKey: aesKey,
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
});

const retentionDays = z.number().positive();



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
    corpId: z.string().min(1),
    apps: z.array(appSchema).default([]),
    bots: z.array(botSchema).default([]),
    /** Refuse callbacks whose timestamp is further than this from our clock, seconds; 0 disables. */
    callbackWindowSec: z.number().int().min(0).default(300),
  }),
  archive: z
    .strictObject({
      secret: z.string().min(16, "must be at least 16 characters"),
      /** IP addresses allowed to push; empty means any. */
      allowIps: z.array(z.string()).default([]),
    })
    .optional(),
  omni: z.strictObject({
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
  }),
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
    })
    .default({ maxAttempts: 12, baseDelayMs: 1000, maxDelayMs: 300_000, concurrency: 8, timeoutMs: 10_000, mediaDeadlineSec: 600 }),
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
    })
    .default({ days: 30, intervalSec: 60, batchSize: 500 }),
});

/** A validated configuration, defaults applied. */
export type Config = z.output<typeof configSchema>;
/** A configuration as written in the file (defaults optional). */
export type ConfigInput = z.input<typeof configSchema>;
/** One configured self-built app. */
export type AppConfig = Config["wecom"]["apps"][number];
/** One configured AI bot. */
export type BotConfig = Config["wecom"]["bots"][number];

function envName(s: string): string {
  return s.toUpperCase().replace(/[^A-Z0-9]/g, "_");
}

/** Apply the environment overrides of secrets to a raw (unvalidated) configuration object. */
export function applyEnvOverrides(raw: unknown, env: NodeJS.ProcessEnv): unknown {
  type Obj = Record<string, unknown>;
  const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
  if (!isObj(raw)) return raw;
  const cfg = structuredClone(raw);
  const set = (obj: unknown, key: string, v: string | undefined) => {
    if (isObj(obj) && v !== undefined && v !== "") obj[key] = v;
  };
  set(cfg, "adminToken", env.WECOM_BRIDGE_ADMIN_TOKEN);
  set(cfg, "mediaSecret", env.WECOM_BRIDGE_MEDIA_SECRET);
  const wecom = isObj(cfg.wecom) ? cfg.wecom : {};
  const named = (list: unknown) => (Array.isArray(list) ? list.filter((x): x is Obj & { name: string } => isObj(x) && typeof x.name === "string") : []);
  for (const app of named(wecom.apps)) {
    const p = `WECOM_BRIDGE_APP_${envName(app.name)}_`;
    set(app, "secret", env[`${p}SECRET`]);
    set(app, "token", env[`${p}TOKEN`]);
    set(app, "encodingAESKey", env[`${p}AES_KEY`]);
  }
  for (const bot of named(wecom.bots)) {
    const p = `WECOM_BRIDGE_BOT_${envName(bot.name)}_`;
    set(bot, "token", env[`${p}TOKEN`]);
    set(bot, "encodingAESKey", env[`${p}AES_KEY`]);
  }
  if (env.WECOM_BRIDGE_ARCHIVE_SECRET) cfg.archive = { ...(isObj(cfg.archive) ? cfg.archive : {}), secret: env.WECOM_BRIDGE_ARCHIVE_SECRET };
  set(cfg.omni, "secret", env.WECOM_BRIDGE_OMNI_SECRET);
  set(cfg.omni, "replySecret", env.WECOM_BRIDGE_OMNI_REPLY_SECRET);
  return cfg;
}

/**
 * Validate a configuration object.
 * @throws ConfigError with one line per wrong field (never echoing a secret value)
 */
export function parseConfig(raw: unknown, env: NodeJS.ProcessEnv = {}): Config {
  const result = configSchema.safeParse(applyEnvOverrides(raw, env));
  if (!result.success) {
    throw new ConfigError(
      result.error.issues.map((i) => {
        const path = i.path.length > 0 ? i.path.map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`)).join("").replace(/^\./, "") : "(root)";
        return `${path}: ${i.message}`;
      }),
    );
  }
  const cfg = result.data;
  const problems: string[] = [];
  const dup = (list: { name: string }[], what: string) => {
    const seen = new Map<string, number>();
    list.forEach((x, i) => {
      const first = seen.get(x.name);
      // named by position, never by value: no configuration error prints a field's value
      if (first !== undefined) problems.push(`wecom.${what}[${i}].name: the same as wecom.${what}[${first}].name (names must be unique)`);
      else seen.set(x.name, i);
    });
  };
  dup(cfg.wecom.apps, "apps");
  dup(cfg.wecom.bots, "bots");
  if (cfg.delivery.baseDelayMs > cfg.delivery.maxDelayMs) problems.push("delivery.baseDelayMs: must not exceed delivery.maxDelayMs");
  if (problems.length > 0) throw new ConfigError(problems);
  return cfg;
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
