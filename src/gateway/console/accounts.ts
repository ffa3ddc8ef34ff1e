/**
 * The console's Accounts page: each KF account's cursor, lag and last error, each bot's mode and
 * connection, each app's access-token state and last error, and each 全媒体's last delivery.
 * Errors and the last deliveries are what this replica saw.
 * @module
 */
import type { CorpConfig } from "../../config.js";
import type { Store } from "../../store/types.js";
import type { BotWsStatus } from "../bot-ws.js";
import type { KfPuller } from "../kf-puller.js";
import type { Accounts } from "./types.js";

/** A corp as the Accounts page reads it. */
export interface AccountsCorp {
  readonly tenant: string;
  readonly corp: CorpConfig;
  readonly puller: KfPuller | undefined;
}

/** What the Accounts page reads. */
export interface AccountsSource {
  store: Store;
  corps: readonly AccountsCorp[];
  /** The top-level 全媒体's base URL (a corp with its own is `corp.{corpId}.omni`). */
  topOmniBaseUrl: string;
  botWsStatus(): BotWsStatus[];
  tokenState(corpId: string, secret: string): Promise<{ state: "cached" | "expired" | "none"; expiresAt: number | null }>;
  /** The last WeCom failure of an app's calls (its name), when any. */
  appError(name: string): string | undefined;
  /** The last delivery to a corp's 全媒体 (by the corp's tenant). */
  omniLast(tenant: string): Accounts["omni"][number]["last"];
  now(): number;
}

/** Most KF accounts listed. */
const KF_ROWS = 500;

/** The name of a corp's 全媒体 on the page (and in the doctor's checks). */
export function omniName(corp: CorpConfig, topBaseUrl: string, topAppId: string): string {
  return corp.omni.baseUrl === topBaseUrl && corp.omni.appId === topAppId ? "omni" : `corp.${corp.corpId}.omni`;
}

/** Build the page. */
export async function accounts(s: AccountsSource, topAppId: string): Promise<Accounts> {
  const now = s.now();
  const cursors = await s.store.listKfCursors({ limit: KF_ROWS });
  const pullers = new Map(s.corps.map((c) => [c.tenant, c.puller]));
  const kf: Accounts["kf"] = cursors.map((c) => {
    const problem = pullers.get(c.tenant)?.problem(c.openKfId);
    return {
      tenant: c.tenant,
      openKfId: c.openKfId,
      cursor: c.cursor === undefined ? null : c.cursor.length > 16 ? `${c.cursor.slice(0, 16)}…` : c.cursor,
      updatedAt: c.updatedAt,
      lagSec: problem === undefined ? 0 : Math.max(0, Math.round((now - problem.since) / 1000)),
      lastError: problem === undefined ? null : `${problem.problem} (${problem.failedPulls} failed pulls)`,
    };
  });
  const ws = new Map(s.botWsStatus().map((b) => [b.bot, b]));
  const bots: Accounts["bots"] = [];
  const apps: Accounts["apps"] = [];
  const omni = new Map<string, Accounts["omni"][number]>();
  for (const c of s.corps) {
    for (const b of c.corp.bots) {
      const st = ws.get(b.name);
      bots.push({ tenant: c.tenant, name: b.name, botId: b.botId, mode: b.mode, state: b.mode === "websocket" ? (st?.state ?? "standby") : "callback", holder: st?.holder ?? false, reconnects: st?.reconnects ?? 0 });
    }
    for (const a of c.corp.apps) {
      const token = await s.tokenState(c.tenant, a.secret);
      apps.push({ tenant: c.tenant, name: a.name, agentId: a.agentId, kf: a.kf, token: token.state, tokenExpiresAt: token.expiresAt, lastError: s.appError(a.name) ?? null });
    }
    const name = omniName(c.corp, s.topOmniBaseUrl, topAppId);
    if (!omni.has(name)) omni.set(name, { name, baseUrl: c.corp.omni.baseUrl, last: s.omniLast(c.tenant) });
  }
  return { kf, bots, apps, omni: [...omni.values()] };
}
