import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { ConfigError, type CorpConfig, corpView, corpsOf, isManyCorps, loadConfig, parseConfig } from "../src/config.js";
import { jsonSyntaxError } from "../src/json-error.js";

const AES = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";

/** The example of the issue, completed. */
export function exampleConfig(): Record<string, any> {
  return {
    listen: { host: "127.0.0.1", port: 8080 },
    publicUrl: "http://127.0.0.1:8080",
    store: "sqlite:./data/bridge.db",
    adminToken: "admin-token-0123456789",
    wecom: {
      apiBase: "https://qyapi.weixin.qq.com",
      corpId: "ww1436e0e65a779aee",
      apps: [{ name: "support", agentId: 1000002, secret: "app-secret", token: "apptoken", encodingAESKey: AES, kf: true }],
      bots: [{ name: "helper", botId: "aib123", token: "bottoken", encodingAESKey: AES }],
    },
    archive: { secret: "archive-secret-0123" },
    omni: { baseUrl: "http://127.0.0.1:9000/", version: "v1", appId: "1001", secret: "omni-secret", pathPrefix: "/qmtapi" },
  };
}

function problems(raw: unknown, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    parseConfig(raw, env);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).problems;
  }
  return [];
}

describe("config", () => {
  it("accepts the documented example and applies defaults", () => {
    const c = parseConfig(exampleConfig());
    expect(c.omni.baseUrl).toBe("http://127.0.0.1:9000");
    expect(c.wecom.apps[0]?.kf).toBe(true);
    expect(c.delivery).toEqual({ maxAttempts: 12, baseDelayMs: 1000, maxDelayMs: 300000, concurrency: 8, timeoutMs: 10000, mediaDeadlineSec: 600, leaseSec: 30 });
    expect(c.kf).toEqual({ deliverHistory: false, firstPullGraceSec: 60, pageSize: 1000, pollIntervalSec: 300, claimSessions: true });
    expect(c.wecom.callbackWindowSec).toBe(300);
    expect(c.wecom.bots[0]).toMatchObject({ placeholder: "正在为您转接人工客服…", streamIdleSec: 15, streamMaxSec: 330, timeoutText: "人工客服正在处理，稍后回复您" });
  });

  it("keeps old bot configs working: the old empty placeholder means the new default", () => {
    const raw = exampleConfig();
    raw.wecom.bots[0].placeholder = "";
    expect(parseConfig(raw).wecom.bots[0]?.placeholder).toBe("正在为您转接人工客服…");
    raw.wecom.bots[0].placeholder = "稍等";
    expect(parseConfig(raw).wecom.bots[0]?.placeholder).toBe("稍等");
  });

  it("outbound keys: omni.allowIps must be addresses or CIDRs; handoff and kf texts are optional", () => {
    const raw = exampleConfig();
    raw.omni.allowIps = ["10.0.0.0/8", "not-an-ip"];
    expect(problems(raw)).toEqual(["omni.allowIps[1]: must be an IPv4/IPv6 address or CIDR"]);
    const c = parseConfig(exampleConfig());
    expect(c.omni).toMatchObject({ allowIps: [], timestampWindowSec: 300, dedupWindowSec: 60, mediaHosts: [] });
    expect(c.handoff).toEqual({ keywords: [] });
  });

  it("reports one line per wrong field, without echoing secrets", () => {
    const raw = exampleConfig();
    raw.publicUrl = "not a url";
    raw.adminToken = "short";
    raw.wecom.apps[0].encodingAESKey = "SECRETKEYVALUE";
    raw.wecom.apps[0].agentId = "1000002";
    raw.omni.pathPrefix = "qmtapi";
    raw.unknownKey = 1;
    const p = problems(raw);
    expect(p).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^publicUrl: /),
        expect.stringMatching(/^adminToken: must be at least 16 characters/),
        expect.stringMatching(/^wecom\.apps\[0\]\.encodingAESKey: must be 43 characters/),
        expect.stringMatching(/^wecom\.apps\[0\]\.agentId: /),
        expect.stringMatching(/^omni\.pathPrefix: must start with/),
        expect.stringMatching(/unknownKey/),
      ]),
    );
    expect(p.join("\n")).not.toContain("SECRETKEYVALUE");
  });

  it("refuses duplicate app names", () => {
    const raw = exampleConfig();
    raw.wecom.apps.push({ ...raw.wecom.apps[0] });
    expect(problems(raw)).toEqual(["wecom.apps[1].name: the same as wecom.apps[0].name (names must be unique)"]);
  });

  it("takes secrets from the environment", () => {
    const raw = exampleConfig();
    delete raw.wecom.apps[0].secret;
    delete raw.omni.secret;
    const c = parseConfig(raw, {
      WECOM_BRIDGE_APP_SUPPORT_SECRET: "from-env",
      WECOM_BRIDGE_OMNI_SECRET: "omni-env",
      WECOM_BRIDGE_ADMIN_TOKEN: "env-admin-token-0123456789",
      WECOM_BRIDGE_BOT_HELPER_TOKEN: "bot-env",
      WECOM_BRIDGE_STORE: "postgres://wb:pw@db:5432/bridge?schema=wb",
    });
    expect(c.store).toBe("postgres://wb:pw@db:5432/bridge?schema=wb");
    expect(c.wecom.apps[0]?.secret).toBe("from-env");
    expect(c.omni.secret).toBe("omni-env");
    expect(c.adminToken).toBe("env-admin-token-0123456789");
    expect(c.wecom.bots[0]?.token).toBe("bot-env");
    expect(problems(raw)).toEqual(expect.arrayContaining([expect.stringMatching(/^wecom\.apps\[0\]\.secret: /), expect.stringMatching(/^omni\.secret: /)]));
  });

  it("wecom.bots[].mode: webhook by default (token and encodingAESKey); websocket needs a secret, not the callback keys", () => {
    const c = parseConfig(exampleConfig());
    expect(c.wecom.bots[0]).toMatchObject({ mode: "webhook", wsUrl: "wss://openws.work.weixin.qq.com", kickedQuietSec: 60 });
    expect(c.wecom.bots[0]?.welcomeText).toBeUndefined();
    const ws = exampleConfig();
    ws.wecom.bots = [{ name: "live", botId: "aibLIVE", mode: "websocket", secret: "s3cret", welcomeText: "您好", kickedQuietSec: 5 }];
    expect(parseConfig(ws).wecom.bots[0]).toMatchObject({ mode: "websocket", secret: "s3cret", welcomeText: "您好", kickedQuietSec: 5 });
    // the secret may come from the environment, like the other secrets
    delete ws.wecom.bots[0].secret;
    expect(problems(ws)).toEqual([expect.stringMatching(/^wecom\.bots\[0\]\.secret: required when mode is websocket/)]);
    expect(parseConfig(ws, { WECOM_BRIDGE_BOT_LIVE_SECRET: "from-env" }).wecom.bots[0]?.secret).toBe("from-env");
    const hook = exampleConfig();
    delete hook.wecom.bots[0].token;
    delete hook.wecom.bots[0].encodingAESKey;
    expect(problems(hook)).toEqual([
      expect.stringMatching(/^wecom\.bots\[0\]\.token: required when mode is webhook/),
      expect.stringMatching(/^wecom\.bots\[0\]\.encodingAESKey: required when mode is webhook/),
    ]);
    const bad = exampleConfig();
    bad.wecom.bots = [{ name: "live", botId: "aibLIVE", mode: "websocket", secret: "s", wsUrl: "https://openws.work.weixin.qq.com", kickedQuietSec: 0 }];
    expect(problems(bad)).toEqual(expect.arrayContaining([expect.stringMatching(/^wecom\.bots\[0\]\.wsUrl: must be a wss:\/\/ URL/), expect.stringMatching(/^wecom\.bots\[0\]\.kickedQuietSec: /)]));
    // the secret never crosses a network in clear: ws:// only to this machine
    bad.wecom.bots[0].kickedQuietSec = 60;
    bad.wecom.bots[0].wsUrl = "ws://openws.work.weixin.qq.com";
    expect(problems(bad)).toEqual([expect.stringMatching(/^wecom\.bots\[0\]\.wsUrl: must be a wss:\/\/ URL \(ws:\/\/ only to a loopback address/)]);
    for (const u of ["ws://127.0.0.1:9000/aibot/ws", "ws://localhost:9000", "ws://[::1]:9000/x"]) {
      bad.wecom.bots[0].wsUrl = u;
      expect(problems(bad)).toEqual([]);
    }
    // one entry per websocket bot (WeCom sends its messages to one connection)
    const twice = exampleConfig();
    twice.wecom.bots.push({ name: "live", botId: "aib123", mode: "websocket", secret: "s" });
    expect(problems(twice)).toEqual([expect.stringMatching(/^wecom\.bots\[1\]\.botId: the same as wecom\.bots\[0\]\.botId \(a bot in websocket mode is configured once/)]);
    bad.wecom.bots[0].mode = "longpoll";
    expect(problems(bad)).toEqual(expect.arrayContaining([expect.stringMatching(/^wecom\.bots\[0\]\.mode: /)]));
  });

  it("delivery.leaseSec: 30 by default, 5 to 3600 seconds", () => {
    expect(parseConfig({ ...exampleConfig(), delivery: { leaseSec: 90 } }).delivery.leaseSec).toBe(90);
    expect(problems({ ...exampleConfig(), delivery: { leaseSec: 2 } })).toEqual([expect.stringMatching(/^delivery\.leaseSec: /)]);
  });

  it("loadConfig reads a file and names unreadable or non-JSON files", () => {
    const dir = mkdtempSync(join(tmpdir(), "wb-config-"));
    const good = join(dir, "good.json");
    writeFileSync(good, JSON.stringify(exampleConfig()));
    expect(loadConfig(good, {}).wecom.corpId).toBe("ww1436e0e65a779aee");
    const bad = join(dir, "bad.json");
    writeFileSync(bad, "{ nope");
    expect(() => loadConfig(bad, {})).toThrow(/not valid JSON/);
    expect(() => loadConfig(join(dir, "missing.json"), {})).toThrow(/cannot read \(ENOENT\)/);
  });

  it("a file that is not JSON is named by line and column, and its text is never quoted", () => {
    const dir = mkdtempSync(join(tmpdir(), "wb-config-"));
    const file = join(dir, "bridge.json");
    // the kind of typo that made V8 quote the secret: a value without quotes
    const text = JSON.stringify(exampleConfig(), null, 2).replace('"secret": "omni-secret"', '"secret": omnisecret');
    writeFileSync(file, text);
    const line = text.split("\n").findIndex((l) => l.includes("omnisecret")) + 1;
    const column = (text.split("\n")[line - 1] as string).indexOf("omnisecret") + 1;
    let message = "";
    try {
      loadConfig(file, {});
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      message = (e as Error).message;
    }
    expect(message).toContain(`not valid JSON at line ${line}, column ${column}: expected a value`);
    expect(message).not.toMatch(/omnisecret|omni-secret|app-secret|apptoken/);
  });

  it.each([
    ["{", 1, 2, "unexpected end of the file"],
    ['{"a": 1,}', 1, 9, "expected a double-quoted property name"],
    ['{"a" 1}', 1, 6, "expected ':' after a property name"],
    ['{"a": "x\u0001"}', 1, 9, "control character in a string"],
    ['{\n  "a": [1, 2\n}', 3, 1, "expected ',' or ']'"],
    ['{"a": 1} x', 1, 10, "unexpected text after the end"],
    ['{"a": 01}', 1, 8, "expected ',' or '}'"],
  ])("jsonSyntaxError(%j) is line %i, column %i", (text, line, column, reason) => {
    expect(() => JSON.parse(text)).toThrow();
    expect(jsonSyntaxError(text)).toEqual({ line, column, reason });
  });

  it("jsonSyntaxError finds nothing wrong in valid JSON", () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.boolean(), (v, pretty) => {
        expect(jsonSyntaxError(JSON.stringify(v, null, pretty ? 2 : undefined))).toBeUndefined();
      }),
    );
  });

  it("no configuration error prints the value of any field", () => {
    const marker = "Zq9sEcReTvAlUe";
    // a wrong value in every field, each carrying the marker where it can (an unknown key's name
    // is named in its error: names are not values)
    const wrong: unknown[] = [marker, `${marker}:`, 12, -1, true, [marker], { default: marker, app: [marker] }, null];
    const paths: (string | number)[][] = [
      ["adminToken"],
      ["publicUrl"],
      ["store"],
      ["mediaSecret"],
      ["mediaDir"],
      ["listen", "port"],
      ["trustProxy"],
      ["retention", "days"],
      ["wecom", "corpId"],
      ["wecom", "apps", 0, "secret"],
      ["wecom", "apps", 0, "token"],
      ["wecom", "apps", 0, "encodingAESKey"],
      ["wecom", "apps", 0, "name"],
      ["wecom", "bots", 0, "encodingAESKey"],
      ["archive", "secret"],
      ["archive", "allowIps"],
      ["omni", "secret"],
      ["omni", "baseUrl"],
      ["omni", "pathPrefix"],
      ["kf", "pollIntervalSec"],
      ["limits", "mediaBytes"],
    ];
    for (const path of paths) {
      for (const value of wrong) {
        const raw = exampleConfig();
        let o: any = raw;
        for (const k of path.slice(0, -1)) o = o[k] ??= {};
        o[path[path.length - 1] as string] = value;
        const p = problems(raw).join("\n");
        expect(p, `${path.join(".")} = ${JSON.stringify(value)}`).not.toContain(marker.slice(0, 8));
      }
    }
  });

  it("loadConfig resolves relative paths against the file's folder, not the working directory", () => {
    const dir = mkdtempSync(join(tmpdir(), "wb-config-"));
    const file = join(dir, "bridge.json");
    writeFileSync(file, JSON.stringify({ ...exampleConfig(), store: "sqlite:./data/bridge.db", mediaDir: "media" }));
    const c = loadConfig(file, {});
    expect(c.store).toBe(`sqlite:${join(dir, "data", "bridge.db")}`);
    expect(c.mediaDir).toBe(join(dir, "media"));
    writeFileSync(file, JSON.stringify({ ...exampleConfig(), store: "sqlite:/var/lib/wb/bridge.db", mediaDir: "/var/lib/wb/media" }));
    expect(loadConfig(file, {})).toMatchObject({ store: "sqlite:/var/lib/wb/bridge.db", mediaDir: "/var/lib/wb/media" });
  });

  it("the new limits, proxy and retention settings have their documented defaults and checks", () => {
    const c = parseConfig(exampleConfig());
    expect(c.limits).toEqual({ bodyBytes: 262144, mediaBytes: 20971520, headersTimeoutMs: 10000, requestTimeoutMs: 30000, maxConnections: 10000 });
    expect(c.trustProxy).toEqual([]);
    expect(c.retention).toEqual({ days: 30, intervalSec: 60, batchSize: 500, auditDays: 365 });
    expect(c.kf.pollIntervalSec).toBe(300);
    expect(c.delivery.mediaDeadlineSec).toBe(600);
    expect(parseConfig({ ...exampleConfig(), retention: { days: { archive: 365, default: 30 } } }).retention.days).toEqual({ archive: 365, default: 30 });
    expect(parseConfig({ ...exampleConfig(), trustProxy: ["10.0.0.0/8", "127.0.0.1", "::1", "fd00::/8"] }).trustProxy).toHaveLength(4);
    expect(problems({ ...exampleConfig(), trustProxy: ["10.0.0.0/33"] })).toEqual([expect.stringMatching(/^trustProxy\[0\]: must be an IPv4\/IPv6 address or CIDR/)]);
    expect(problems({ ...exampleConfig(), retention: { days: { archive: 365, other: 1 } } })).not.toEqual([]);
  });
});

/** A configuration of two corps: A on the top-level 全媒体, B with its own. */
function twoCorps(): Record<string, any> {
  const raw = exampleConfig();
  delete raw.wecom.corpId;
  delete raw.wecom.apps;
  delete raw.wecom.bots;
  delete raw.archive;
  raw.wecom.corps = [
    {
      corpId: "wwAAAA",
      apps: [{ name: "support", agentId: 1000002, secret: "app-secret", token: "apptoken", encodingAESKey: AES, kf: true }],
      bots: [{ name: "helper", botId: "aib123", token: "bottoken", encodingAESKey: AES }],
      archive: { secret: "archive-secret-AAAA" },
    },
    {
      corpId: "wwBBBB",
      apps: [{ name: "sales", agentId: 1000002, secret: "b-app-secret", token: "btoken", encodingAESKey: AES }],
      bots: [{ name: "bhelper", botId: "aib456", token: "bbottoken", encodingAESKey: AES }],
      archive: { secret: "archive-secret-BBBB", allowIps: ["10.0.0.9"] },
      omni: { baseUrl: "http://127.0.0.1:9100", appId: "2002", secret: "omni-b-secret" },
    },
  ];
  return raw;
}

describe("config: many corps (wecom.corps)", () => {
  it("parses, and corpsOf resolves each corp's 全媒体 (its own, else the top-level one) and archive push", () => {
    const c = parseConfig(twoCorps());
    const corps = corpsOf(c);
    expect(corps.map((x) => x.corpId)).toEqual(["wwAAAA", "wwBBBB"]);
    expect(corps[0]?.omni).toBe(c.omni);
    expect(corps[1]?.omni).toMatchObject({ baseUrl: "http://127.0.0.1:9100", appId: "2002", version: "v1", pathPrefix: "/qmtapi", dedupWindowSec: 60 });
    expect(corps[0]?.archive).toEqual({ secret: "archive-secret-AAAA", allowIps: [] });
    expect(corps[1]?.archive).toEqual({ secret: "archive-secret-BBBB", allowIps: ["10.0.0.9"] });
    expect(corps[1]?.apps.map((a) => a.name)).toEqual(["sales"]);
    expect(corps[1]?.bots[0]).toMatchObject({ botId: "aib456", placeholder: "正在为您转接人工客服…" });
    expect(isManyCorps(c)).toBe(true);
    // the single-corp fields read as documented: the first corp, every app and bot, no top-level archive
    expect(c.wecom.corpId).toBe("wwAAAA");
    expect(c.wecom.apps.map((a) => a.name)).toEqual(["support", "sales"]);
    expect(c.wecom.bots.map((b) => b.name)).toEqual(["helper", "bhelper"]);
    expect(c.archive).toBeUndefined();
    // a corp's view is the single-corp shape of that corp
    const b = corpView(c, corps[1] as CorpConfig);
    expect(b.wecom.corpId).toBe("wwBBBB");
    expect(b.wecom.apps.map((a) => a.name)).toEqual(["sales"]);
    expect(b.omni.appId).toBe("2002");
    expect(b.archive?.secret).toBe("archive-secret-BBBB");
    expect(corpView(c, corps[0] as CorpConfig).omni).toBe(c.omni);
  });

  it("reads a single-corp configuration as one corp, unchanged", () => {
    const c = parseConfig(exampleConfig());
    expect(isManyCorps(c)).toBe(false);
    expect(c.wecom.corps).toBeUndefined();
    expect(corpsOf(c)).toEqual([{ corpId: "ww1436e0e65a779aee", apps: c.wecom.apps, bots: c.wecom.bots, archive: c.archive, omni: c.omni }]);
  });

  it("takes either wecom.corpId or wecom.corps: both, or neither, is one clear line", () => {
    const both = twoCorps();
    both.wecom.corpId = "wwAAAA";
    expect(problems(both)).toEqual(["wecom: give either wecom.corpId (one corp) or wecom.corps (several corps), not both"]);
    const neither = exampleConfig();
    delete neither.wecom.corpId;
    expect(problems(neither)).toEqual(["wecom: wecom.corpId (one corp) or wecom.corps (several corps) is required"]);
    // reported with the schema's own problems, not after them
    neither.adminToken = "short";
    expect(problems(neither)).toEqual([expect.stringMatching(/^adminToken: /), "wecom: wecom.corpId (one corp) or wecom.corps (several corps) is required"]);
    const empty = twoCorps();
    empty.wecom.corps = [];
    expect(problems(empty)).toEqual(["wecom.corps: must list at least one corp"]);
  });

  it("with wecom.corps, apps, bots and the archive push belong to the corps", () => {
    const raw = twoCorps();
    raw.wecom.apps = [];
    raw.wecom.bots = [];
    raw.archive = { secret: "archive-secret-0123" };
    expect(problems(raw)).toEqual([
      "wecom.apps: with wecom.corps, each corp lists its apps in wecom.corps[].apps",
      "wecom.bots: with wecom.corps, each corp lists its bots in wecom.corps[].bots",
      "archive: with wecom.corps, each corp has its own archive push in wecom.corps[].archive",
    ]);
  });

  it("refuses a corpId twice, and a corpId that cannot be part of a conversation address", () => {
    const raw = twoCorps();
    raw.wecom.corps[1].corpId = "wwAAAA";
    expect(problems(raw)).toEqual(["wecom.corps[1].corpId: the same as wecom.corps[0].corpId (corpIds must be unique)"]);
    raw.wecom.corps[1].corpId = "ww:BBBB";
    expect(problems(raw)).toEqual([expect.stringMatching(/^wecom\.corps\[1\]\.corpId: must be 1-64 characters of/)]);
    raw.wecom.corps[1].corpId = "w".repeat(65);
    expect(problems(raw)).toEqual([expect.stringMatching(/^wecom\.corps\[1\]\.corpId: must be 1-64 characters of/)]);
  });

  it("app and bot names are unique across the deployment (they are the callback paths)", () => {
    const raw = twoCorps();
    raw.wecom.corps[1].apps[0].name = "support";
    raw.wecom.corps[1].bots[0].name = "helper";
    expect(problems(raw)).toEqual([
      "wecom.corps[1].apps[0].name: the same as wecom.corps[0].apps[0].name (app names must be unique across the deployment: they are the callback path /wecom/app/{name})",
      "wecom.corps[1].bots[0].name: the same as wecom.corps[0].bots[0].name (bot names must be unique across the deployment: they are the callback path /wecom/bot/{name})",
    ]);
    // within one corp too
    const one = twoCorps();
    one.wecom.corps[0].apps.push({ ...one.wecom.corps[0].apps[0], agentId: 1000003 });
    expect(problems(one)).toEqual([expect.stringMatching(/^wecom\.corps\[0\]\.apps\[1\]\.name: the same as wecom\.corps\[0\]\.apps\[0\]\.name/)]);
  });

  it("a botId belongs to one corp (bot addresses carry no corpId); the same agentId in two corps is fine", () => {
    const raw = twoCorps();
    raw.wecom.corps[1].bots[0].botId = "aib123";
    expect(problems(raw)).toEqual(["wecom.corps[1].bots[0].botId: the same as wecom.corps[0].bots[0].botId (a botId belongs to one corp: bot conversation addresses carry no corpId)"]);
    expect(corpsOf(parseConfig(twoCorps())).map((c) => c.apps[0]?.agentId)).toEqual([1000002, 1000002]);
  });

  it("archive secrets are unique across corps (they route the pushes)", () => {
    const raw = twoCorps();
    raw.wecom.corps[1].archive.secret = "archive-secret-AAAA";
    expect(problems(raw)).toEqual(["wecom.corps[1].archive.secret: the same as wecom.corps[0].archive.secret (archive pushes are routed to a corp by its secret: each corp needs its own)"]);
  });

  it("corps sharing a 全媒体 credential must agree on what is checked before the corp is known", () => {
    const raw = twoCorps();
    raw.wecom.corps[1].omni = { ...raw.omni, allowIps: ["10.0.0.0/8"] };
    expect(problems(raw)).toEqual([
      "wecom.corps[1].omni: the same 全媒体 credential (pathPrefix, appId and secret) as omni but other allowIps or timestampWindowSec (a credential is checked before the corp is known: give them the same)",
    ]);
    // the same credential with the same checks (another baseUrl, say) is fine, and so is another pathPrefix
    raw.wecom.corps[1].omni = { ...raw.omni, baseUrl: "http://127.0.0.1:9200" };
    expect(problems(raw)).toEqual([]);
    raw.wecom.corps[1].omni = { ...raw.omni, pathPrefix: "/other", allowIps: ["10.0.0.0/8"] };
    expect(problems(raw)).toEqual([]);
  });

  it("the top-level omni stays required: it is the 全媒体 of every corp without its own", () => {
    const raw = twoCorps();
    delete raw.omni;
    expect(problems(raw)).toEqual([expect.stringMatching(/^omni: /)]);
    raw.wecom.corps[1].omni.unknown = 1;
    expect(problems(raw)).toEqual(expect.arrayContaining([expect.stringMatching(/^wecom\.corps\[1\]\.omni: .*unknown/)]));
  });

  it("takes each corp's secrets from the environment; the single archive secret has no corp to go to", () => {
    const raw = twoCorps();
    delete raw.wecom.corps[1].omni.secret;
    delete raw.wecom.corps[1].apps[0].secret;
    delete raw.wecom.corps[0].archive;
    const c = parseConfig(raw, {
      WECOM_BRIDGE_CORP_WWBBBB_OMNI_SECRET: "omni-b-env",
      WECOM_BRIDGE_CORP_WWBBBB_OMNI_REPLY_SECRET: "omni-b-reply-env",
      WECOM_BRIDGE_CORP_WWAAAA_ARCHIVE_SECRET: "archive-secret-from-env",
      WECOM_BRIDGE_APP_SALES_SECRET: "sales-env",
      WECOM_BRIDGE_OMNI_SECRET: "omni-top-env",
    });
    const [a, b] = corpsOf(c);
    expect(b?.omni).toMatchObject({ secret: "omni-b-env", replySecret: "omni-b-reply-env" });
    expect(a?.omni.secret).toBe("omni-top-env");
    expect(a?.archive).toEqual({ secret: "archive-secret-from-env", allowIps: [] });
    expect(b?.apps[0]?.secret).toBe("sales-env");
    expect(problems(twoCorps(), { WECOM_BRIDGE_ARCHIVE_SECRET: "archive-secret-0123" })).toEqual([
      "WECOM_BRIDGE_ARCHIVE_SECRET: with wecom.corps, set each corp's WECOM_BRIDGE_CORP_<CORPID>_ARCHIVE_SECRET instead",
    ]);
  });

  it("no error about the corps prints a value", () => {
    const marker = "Zq9sEcReTvAlUe";
    const edits: ((raw: Record<string, any>) => void)[] = [
      (r) => (r.wecom.corps[1].corpId = [marker]),
      (r) => (r.wecom.corps[1].corpId = `${marker}:`),
      (r) => (r.wecom.corps[1].apps[0].name = `${marker}!`),
      (r) => (r.wecom.corps[1].archive.secret = marker.slice(0, 8)),
      (r) => {
        r.wecom.corps[0].archive.secret = `${marker}-0123456789`;
        r.wecom.corps[1].archive.secret = `${marker}-0123456789`;
      },
      (r) => {
        r.wecom.corps[0].apps[0].name = marker;
        r.wecom.corps[1].apps[0].name = marker;
      },
      (r) => (r.wecom.corps[1].omni = { ...r.omni, secret: marker, allowIps: [marker] }),
      (r) => (r.wecom.corpId = marker),
    ];
    for (const edit of edits) {
      const raw = twoCorps();
      edit(raw);
      const p = problems(raw);
      expect(p).not.toEqual([]);
      expect(p.join("\n")).not.toContain(marker.slice(0, 8));
    }
  });
});
