/**
 * The config doctor (`wecom-bridge doctor --config FILE [--json]`): checks a configuration against
 * the world it names (WeCom's API, the 全媒体, the public URL, the store, the media folder, the
 * clock) and says, per check, what is wrong and how to fix it.
 *
 * Every check is one {@link DoctorRow} with a stable `check` id:
 * `config`, `app.{name}.gettoken`, `app.{name}.trusted_ip`, `app.{name}.aes_key`, `app.{name}.token`,
 * `kf.account_list`, `bot.{name}.aes_key`, `bot.{name}.token`, `bot.{name}.secret`,
 * `omni.reachable`, `omni.credentials` (a corp's own 全媒体: `corp.{corpId}.omni.…`), `public_url`,
 * `store.writable`, `media_dir.writable`, `clock`.
 *
 * No row ever carries a secret: the rows are built from errcodes, field paths and WeCom's errmsg,
 * and, as a last guard, every secret of the configuration is masked in every field.
 * @module
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { type Config, ConfigError, corpsOf, loadConfig, omniCredentialKey, type OmniConfig } from "../config.js";
import { HttpClient, HttpClientError, type HttpResponse } from "../clients/http.js";
import { omniMessagePath, omniSignedQuery, OmniErrcode } from "../omni/index.js";
import { openStore } from "../store/index.js";
import { parseEncodingAESKey } from "../wecom/crypto.js";
import { CONFIGURATION_HINTS } from "../wecom/errcodes.js";

/** One check's result. */
export interface DoctorRow {
  /** The stable id of the check, e.g. `app.support.gettoken`. */
  check: string;
  /** `ok` when the check passed. */
  status: "ok" | "fail";
  /** WeCom's or the 全媒体's errcode, when one came. */
  errcode?: number;
  /** What was found, one line, never a secret. */
  detail: string;
  /** How to fix it (failures only). */
  fix?: string;
}

/** Options of {@link runDoctor}. */
export interface DoctorOptions {
  /** Environment overrides of secrets (as `serve` reads them); default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** The local clock, ms (tests skew it); default `Date.now`. */
  now?: () => number;
  /** Deadline of each network check, ms; default 5000. */
  timeoutMs?: number;
}

/** Largest clock difference with WeCom that passes, ms. */
export const CLOCK_TOLERANCE_MS = 60_000;

const FIX = {
  40013: "set wecom.corpId to the CorpID shown in WeCom's admin console (我的企业 → 企业信息 → 企业ID)",
  40001: "copy the app's Secret again from WeCom's admin console (应用管理 → the app → Secret) into wecom.apps[].secret (or WECOM_BRIDGE_APP_<NAME>_SECRET)",
  60020: "add the address WeCom saw to the app's trusted IPs (应用管理 → the app → 企业可信IP); behind NAT or a proxy, that is its public egress address",
  48002: "authorise the app for the KF API in WeCom's admin console: 微信客服 → API → 可调用接口的应用, add this app",
} as const;

/** The address WeCom saw, from an errmsg such as `…, from ip: 203.0.113.10, more info at …`. */
export function ipFromErrmsg(errmsg: string): string | undefined {
  return /from ip:\s*([0-9a-fA-F.:]+)/.exec(errmsg)?.[1];
}

/** WeCom's answer to one call, as the checks need it. */
interface WeComAnswer {
  errcode: number;
  errmsg: string;
  body: Record<string, unknown>;
  date: string | undefined;
}

/** A network failure, in words that carry no URL query. */
function networkWords(e: unknown): string {
  if (e instanceof HttpClientError) return e.code === "http_timeout" ? "no answer in time" : `no answer (${e.code.replace(/^http_/, "")})`;
  return "no answer";
}

/** WeCom's JSON answer; throws what the network did. */
async function wecomCall(http: HttpClient, url: string, json?: unknown): Promise<WeComAnswer> {
  const res: HttpResponse = await http.request(
    json === undefined ? { method: "GET", url } : { method: "POST", url, headers: { "Content-Type": "application/json" }, body: JSON.stringify(json) },
  );
  const date = typeof res.headers.date === "string" ? res.headers.date : undefined;
  let body: Record<string, unknown> = {};
  try {
    const parsed: unknown = JSON.parse(res.body.toString("utf8"));
    if (typeof parsed === "object" && parsed !== null) body = parsed as Record<string, unknown>;
  } catch {
    return { errcode: -2, errmsg: `HTTP ${res.status} with a body that is not JSON`, body, date };
  }
  const errcode = Number(body.errcode ?? (res.status >= 400 ? -2 : 0));
  return { errcode, errmsg: String(body.errmsg ?? (res.status >= 400 ? `HTTP ${res.status}` : "")), body, date };
}

/** WeCom's errmsg without its hint and link: the words before the first comma. */
function errmsgHead(errmsg: string): string {
  return (errmsg.split(",")[0] ?? "").trim();
}

/** The rows of a configuration that does not load: one per problem, named by check where one fits. */
export function configProblemRows(problems: string[], raw: unknown): DoctorRow[] {
  const wecom = isObj(raw) && isObj(raw.wecom) ? raw.wecom : {};
  const nameAt = (corp: string | undefined, kind: string, index: number): string => {
    const holder = corp === undefined ? wecom : Array.isArray(wecom.corps) ? wecom.corps[Number(corp)] : undefined;
    const list = isObj(holder) ? holder[kind] : undefined;
    const item = Array.isArray(list) ? list[index] : undefined;
    return isObj(item) && typeof item.name === "string" && /^[A-Za-z0-9_-]{1,64}$/.test(item.name) ? item.name : `#${index}`;
  };
  const field: Record<string, string> = { encodingAESKey: "aes_key", token: "token", secret: "secret" };
  return problems.map((p) => {
    const m = /^wecom\.(?:corps\[(\d+)\]\.)?(apps|bots)\[(\d+)\]\.(encodingAESKey|token|secret):/.exec(p);
    if (m) {
      const [, corp, kind, index, key] = m as unknown as [string, string | undefined, string, string, string];
      const check = `${kind === "apps" ? "app" : "bot"}.${nameAt(corp, kind, Number(index))}.${field[key]}`;
      const fix =
        key === "encodingAESKey"
          ? "copy the EncodingAESKey again from WeCom (43 characters; 随机获取 makes a new one, then save it in WeCom too)"
          : `set ${p.split(":")[0]} (or its WECOM_BRIDGE_… environment variable)`;
      return { check, status: "fail", detail: p, fix };
    }
    return { check: "config", status: "fail", detail: p, fix: "correct the configuration file at the field named" };
  });
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

/** The shape rows of each app's and bot's AES key, token and secret (the configuration loaded). */
export function keyRows(config: Config): DoctorRow[] {
  const rows: DoctorRow[] = [];
  const aes = (check: string, key: string | undefined) => {
    try {
      parseEncodingAESKey(key ?? "");
      rows.push({ check, status: "ok", detail: "43 characters of base64, 32 bytes" });
    } catch {
      rows.push({ check, status: "fail", detail: "the EncodingAESKey is not 43 characters of base64 decoding to 32 bytes", fix: "copy the EncodingAESKey again from WeCom" });
    }
  };
  const present = (check: string, value: string | undefined, what: string) => {
    if (value !== undefined && value !== "") rows.push({ check, status: "ok", detail: `${what} present` });
    else rows.push({ check, status: "fail", detail: `${what} missing`, fix: `set the ${what} from WeCom's admin console` });
  };
  for (const app of config.wecom.apps) {
    aes(`app.${app.name}.aes_key`, app.encodingAESKey);
    present(`app.${app.name}.token`, app.token, "callback Token");
  }
  for (const bot of config.wecom.bots) {
    if (bot.mode === "websocket") present(`bot.${bot.name}.secret`, bot.secret, "long-connection Secret");
    else {
      aes(`bot.${bot.name}.aes_key`, bot.encodingAESKey);
      present(`bot.${bot.name}.token`, bot.token, "callback Token");
    }
  }
  return rows;
}

/** The clock row: local time against an HTTP `Date` header. */
export function clockRow(date: string | undefined, localMs: number): DoctorRow {
  const remote = date === undefined ? Number.NaN : Date.parse(date);
  if (Number.isNaN(remote)) return { check: "clock", status: "fail", detail: "not checked: no Date header from WeCom", fix: "make WeCom's API reachable (see the other rows), then run the doctor again" };
  const skew = Math.round((localMs - remote) / 1000);
  // a Date header has whole seconds: allow the rounding on top of the tolerance
  if (Math.abs(localMs - remote) <= CLOCK_TOLERANCE_MS + 1000) return { check: "clock", status: "ok", detail: `within ${Math.abs(skew)} s of WeCom's clock` };
  return {
    check: "clock",
    status: "fail",
    detail: `the local clock is ${Math.abs(skew)} s ${skew > 0 ? "ahead of" : "behind"} WeCom's (more than ${CLOCK_TOLERANCE_MS / 1000} s)`,
    fix: "synchronise the clock (NTP: timedatectl set-ntp true, or chrony): callbacks and 全媒体 signatures are refused outside their time windows",
  };
}

/** gettoken, trusted IP and KF rows of every app; returns the first WeCom `Date` header seen. */
async function wecomRows(config: Config, http: HttpClient, rows: DoctorRow[]): Promise<string | undefined> {
  const base = config.wecom.apiBase;
  let date: string | undefined;
  let kfChecked = false;
  for (const corp of corpsOf(config)) {
    for (const app of corp.apps) {
      const id = `app.${app.name}`;
      let token: string | undefined;
      let refusedIp: { errcode: number; ip: string | undefined } | undefined;
      try {
        const a = await wecomCall(http, `${base}/cgi-bin/gettoken?corpid=${encodeURIComponent(corp.corpId)}&corpsecret=${encodeURIComponent(app.secret)}`);
        date ??= a.date;
        if (a.errcode === 0 && typeof a.body.access_token === "string" && a.body.access_token !== "") {
          token = a.body.access_token;
          rows.push({ check: `${id}.gettoken`, status: "ok", detail: "WeCom issued an access token" });
        } else if (a.errcode === 60020) {
          refusedIp = { errcode: 60020, ip: ipFromErrmsg(a.errmsg) };
          rows.push({ check: `${id}.gettoken`, status: "fail", errcode: 60020, detail: `WeCom refused the call from ${refusedIp.ip ?? "this address"}: ${CONFIGURATION_HINTS[60020]}`, fix: FIX[60020] });
        } else {
          const hint = a.errcode === 40013 || a.errcode === 40001 ? CONFIGURATION_HINTS[a.errcode] : `WeCom answered: ${errmsgHead(a.errmsg) || "an error"}`;
          const fix = a.errcode === 40013 ? FIX[40013] : a.errcode === 40001 ? FIX[40001] : a.errcode === -2 ? "check wecom.apiBase: it must be WeCom's API (or a proxy that forwards to it)" : "look the errcode up at https://open.work.weixin.qq.com/devtool/query";
          rows.push({ check: `${id}.gettoken`, status: "fail", ...(a.errcode > 0 ? { errcode: a.errcode } : {}), detail: hint ?? "", fix });
        }
      } catch (e) {
        rows.push({ check: `${id}.gettoken`, status: "fail", detail: `wecom.apiBase: ${networkWords(e)}`, fix: "let the gateway reach WeCom's API (egress firewall, proxy, DNS); check wecom.apiBase" });
      }
      if (token !== undefined && app.kf && !kfChecked) {
        kfChecked = true;
        try {
          const a = await wecomCall(http, `${base}/cgi-bin/kf/account/list?access_token=${encodeURIComponent(token)}`, { offset: 0, limit: 100 });
          if (a.errcode === 0) {
            const n = Array.isArray(a.body.account_list) ? a.body.account_list.length : 0;
            rows.push({ check: "kf.account_list", status: "ok", detail: `app ${app.name} may call the KF API (${n} KF account${n === 1 ? "" : "s"})` });
          } else if (a.errcode === 60020) {
            refusedIp = { errcode: 60020, ip: ipFromErrmsg(a.errmsg) };
            rows.push({ check: "kf.account_list", status: "fail", errcode: 60020, detail: `not checked: WeCom refused the call from ${refusedIp.ip ?? "this address"}`, fix: FIX[60020] });
          } else {
            const authorisation = a.errcode === 48002;
            rows.push({
              check: "kf.account_list",
              status: "fail",
              ...(a.errcode > 0 ? { errcode: a.errcode } : {}),
              detail: authorisation ? `app ${app.name} is not authorised for the KF API` : `kf/account/list: ${errmsgHead(a.errmsg) || "refused"}`,
              fix: FIX[48002],
            });
          }
        } catch (e) {
          rows.push({ check: "kf.account_list", status: "fail", detail: `kf/account/list: ${networkWords(e)}`, fix: "let the gateway reach WeCom's API, then run the doctor again" });
        }
      }
      if (refusedIp !== undefined) {
        rows.push({ check: `${id}.trusted_ip`, status: "fail", errcode: refusedIp.errcode, detail: `WeCom saw the call from ${refusedIp.ip ?? "an address it did not name"}, which is not a trusted IP of the app`, fix: FIX[60020] });
      } else if (token !== undefined) {
        rows.push({ check: `${id}.trusted_ip`, status: "ok", detail: "WeCom accepted calls from this address" });
      } else {
        rows.push({ check: `${id}.trusted_ip`, status: "fail", detail: "not checked: gettoken failed", fix: "fix the gettoken row first" });
      }
    }
  }
  const kfApp = config.wecom.apps.find((a) => a.kf);
  if (kfApp !== undefined && !kfChecked && !rows.some((r) => r.check === "kf.account_list")) {
    rows.push({ check: "kf.account_list", status: "fail", detail: `not checked: app ${kfApp.name} has no access token`, fix: "fix the gettoken row first" });
  }
  if (date === undefined) {
    // no app (bots only), or no answer yet: any answer of WeCom's API carries its clock
    try {
      date = (await wecomCall(http, `${base}/cgi-bin/gettoken`)).date;
    } catch {
      // the clock row says it was not checked
    }
  }
  return date;
}

/** Reachability and credentials of one 全媒体: a signed request with an empty body (refused as 30005 after the signature passed). */
async function omniRows(omni: OmniConfig, prefix: string, http: HttpClient, now: number): Promise<DoctorRow[]> {
  const url = `${omni.baseUrl}${omniMessagePath(omni.version, omni.appId)}?${omniSignedQuery(omni.appId, omni.secret, now)}`;
  let status: number;
  let errcode: number | undefined;
  try {
    const res = await http.request({ method: "POST", url, headers: { "Content-Type": "application/json" }, body: "{}" });
    status = res.status;
    try {
      const body: unknown = JSON.parse(res.body.toString("utf8"));
      if (isObj(body) && typeof body.errcode === "number") errcode = body.errcode;
    } catch {
      errcode = undefined;
    }
  } catch (e) {
    return [
      { check: `${prefix}.reachable`, status: "fail", detail: `omni.baseUrl: ${networkWords(e)}`, fix: "check omni.baseUrl (host, port, context path), that the 全媒体 is running, and the firewall between them" },
      { check: `${prefix}.credentials`, status: "fail", detail: "not checked: the 全媒体 is not reachable", fix: "fix the reachable row first" },
    ];
  }
  const rows: DoctorRow[] = [{ check: `${prefix}.reachable`, status: "ok", detail: `the 全媒体 answered HTTP ${status}` }];
  const cred = `${prefix}.credentials`;
  if (errcode === OmniErrcode.BadJson || errcode === OmniErrcode.Ok) rows.push({ check: cred, status: "ok", detail: "the 全媒体 accepted the appId and the signature" });
  else if (errcode === OmniErrcode.UnknownAppId) rows.push({ check: cred, status: "fail", errcode, detail: "the 全媒体 does not know omni.appId", fix: "set omni.appId to the appid the 全媒体 was configured with" });
  else if (errcode === OmniErrcode.BadSignature || errcode === OmniErrcode.MissingSignature) {
    rows.push({ check: cred, status: "fail", errcode, detail: "the 全媒体 refused the signature", fix: "set omni.secret (or WECOM_BRIDGE_OMNI_SECRET) to the 全媒体's secret; check the clock row too" });
  } else if (status === 404) rows.push({ check: cred, status: "fail", detail: "the 全媒体 has no staffService API at this path (HTTP 404)", fix: "check omni.baseUrl (with the vendor's context path, e.g. /weChatAdapter) and omni.version" });
  else rows.push({ check: cred, status: "fail", ...(errcode !== undefined ? { errcode } : {}), detail: `the 全媒体 answered HTTP ${status}${errcode !== undefined ? ` errcode ${errcode}` : ""}`, fix: "look at the 全媒体's logs" });
  return rows;
}

/** `GET {publicUrl}/healthz` answers 200. */
async function publicUrlRow(config: Config, http: HttpClient): Promise<DoctorRow> {
  const fix = "make publicUrl lead to the gateway: the reverse proxy's route to listen.host:listen.port, the DNS name, the firewall (WeCom must reach it from the Internet)";
  try {
    const res = await http.request({ method: "GET", url: `${config.publicUrl}/healthz` });
    if (res.status === 200) return { check: "public_url", status: "ok", detail: "GET publicUrl/healthz answered 200" };
    return { check: "public_url", status: "fail", detail: `GET publicUrl/healthz answered HTTP ${res.status}`, fix };
  } catch (e) {
    return { check: "public_url", status: "fail", detail: `GET publicUrl/healthz: ${networkWords(e)}`, fix };
  }
}

/** openStore and one state write (then removed). */
async function storeRow(config: Config, now: number): Promise<DoctorRow> {
  try {
    const store = await openStore(config.store);
    try {
      const key = `doctor:${randomBytes(6).toString("hex")}`;
      await store.updateState("", key, null, now, () => ({ value: { at: now }, expiresAt: now + 60_000 }));
      await store.updateState("", key, null, now, () => null);
    } finally {
      await store.close();
    }
    return { check: "store.writable", status: "ok", detail: "opened the store and wrote to it" };
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return { check: "store.writable", status: "fail", detail: `the store cannot be opened or written${typeof code === "string" ? ` (${code})` : ""}`, fix: "check store: the folder of a sqlite: file must exist and be writable by the gateway's user; a postgres:// URL must reach a database the user may write" };
  }
}

/** The media folder exists (or can be made) and takes a file. */
function mediaDirRow(config: Config): DoctorRow {
  const probe = join(config.mediaDir, `.doctor-${randomBytes(6).toString("hex")}`);
  try {
    mkdirSync(config.mediaDir, { recursive: true });
    writeFileSync(probe, "doctor");
    rmSync(probe, { force: true });
    return { check: "media_dir.writable", status: "ok", detail: `wrote a file in ${config.mediaDir}` };
  } catch (e) {
    return {
      check: "media_dir.writable",
      status: "fail",
      detail: `cannot write in ${config.mediaDir} (${(e as NodeJS.ErrnoException).code ?? "error"})`,
      fix: "create mediaDir and give the gateway's user write access to it (or point mediaDir elsewhere)",
    };
  }
}

/** Every secret a configuration holds, longest first (what {@link maskSecrets} hides). */
function secretsOf(config: Config | undefined, raw: unknown): string[] {
  const out = new Set<string>();
  const walk = (v: unknown, key: string) => {
    if (typeof v === "string") {
      if (/secret|token|aeskey|password/i.test(key) && v.length >= 4) out.add(v);
      if (key === "store") {
        try {
          const pw = new URL(v).password;
          if (pw.length >= 4) out.add(decodeURIComponent(pw));
        } catch {
          // not a URL: no password in it
        }
      }
    } else if (Array.isArray(v)) {
      for (const x of v) walk(x, key);
    } else if (isObj(v)) {
      for (const [k, x] of Object.entries(v)) walk(x, k);
    }
  };
  walk(raw, "");
  walk(config, "");
  return [...out].sort((a, b) => b.length - a.length);
}

/** Rows with every occurrence of a secret replaced by `***`. */
export function maskSecrets(rows: DoctorRow[], secrets: string[]): DoctorRow[] {
  const mask = (s: string) => secrets.reduce((acc, secret) => acc.split(secret).join("***"), s);
  return rows.map((r) => ({ ...r, detail: mask(r.detail), ...(r.fix !== undefined ? { fix: mask(r.fix) } : {}) }));
}

function readRaw(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, "utf8").replace(/^\uFEFF/, ""));
  } catch {
    return undefined;
  }
}

/**
 * Run every check of the configuration file at `path`. A configuration that does not load gives
 * one row per problem and nothing else.
 */
export async function runDoctor(path: string, options: DoctorOptions = {}): Promise<DoctorRow[]> {
  const env = options.env ?? process.env;
  const raw = readRaw(path);
  let config: Config;
  try {
    config = loadConfig(path, env);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    return maskSecrets(configProblemRows(e.problems, raw), secretsOf(undefined, raw));
  }
  return checkConfig(config, options, raw);
}

/**
 * Run every check of a loaded configuration (the console's Doctor page runs them on the
 * gateway's own). `raw` is the file as read, when there is one (its secrets are masked too).
 */
export async function checkConfig(config: Config, options: DoctorOptions = {}, raw?: unknown): Promise<DoctorRow[]> {
  const now = options.now ?? Date.now;
  const rows: DoctorRow[] = [{ check: "config", status: "ok", detail: "the configuration is valid" }];
  rows.push(...keyRows(config));
  const http = new HttpClient({ timeoutMs: options.timeoutMs ?? 5000, agentOptions: { keepAlive: false } });
  try {
    const date = await wecomRows(config, http, rows);
    const seen = new Set<string>();
    for (const corp of corpsOf(config)) {
      const key = omniCredentialKey(corp.omni) + corp.omni.baseUrl;
      if (seen.has(key)) continue;
      seen.add(key);
      rows.push(...(await omniRows(corp.omni, corp.omni === config.omni ? "omni" : `corp.${corp.corpId}.omni`, http, now())));
    }
    rows.push(await publicUrlRow(config, http));
    rows.push(await storeRow(config, now()));
    rows.push(mediaDirRow(config));
    rows.push(clockRow(date, now()));
  } finally {
    http.close();
  }
  return maskSecrets(rows, secretsOf(config, raw));
}

/** The rows as a table: ✓/✗, the check, what was found, and the fix under a failure. */
export function formatDoctorTable(rows: DoctorRow[]): string {
  const width = Math.max(5, ...rows.map((r) => r.check.length));
  const lines = rows.map((r) => {
    const head = `${r.status === "ok" ? "✓" : "✗"} ${r.check.padEnd(width)}  ${r.errcode !== undefined ? `[${r.errcode}] ` : ""}${r.detail}`;
    return r.status === "fail" && r.fix ? `${head}\n  ${" ".repeat(width)}  fix: ${r.fix}` : head;
  });
  const failed = rows.filter((r) => r.status === "fail").length;
  lines.push("", failed === 0 ? `all ${rows.length} checks passed` : `${failed} of ${rows.length} checks failed`);
  return `${lines.join("\n")}\n`;
}

/** The rows with every key present (`errcode` and `fix` null when none): `--json`'s and the console's. */
export function doctorRecords(rows: DoctorRow[]): { check: string; status: "ok" | "fail"; errcode: number | null; detail: string; fix: string | null }[] {
  return rows.map((r) => ({ check: r.check, status: r.status, errcode: r.errcode ?? null, detail: r.detail, fix: r.fix ?? null }));
}

/** The rows as `--json` prints them (see {@link doctorRecords}). */
export function doctorJson(rows: DoctorRow[]): string {
  return `${JSON.stringify(doctorRecords(rows), null, 2)}\n`;
}
