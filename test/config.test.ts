import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { ConfigError, loadConfig, parseConfig } from "../src/config.js";
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
    expect(c.delivery).toEqual({ maxAttempts: 12, baseDelayMs: 1000, maxDelayMs: 300000, concurrency: 8, timeoutMs: 10000, mediaDeadlineSec: 600 });
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
    });
    expect(c.wecom.apps[0]?.secret).toBe("from-env");
    expect(c.omni.secret).toBe("omni-env");
    expect(c.adminToken).toBe("env-admin-token-0123456789");
    expect(c.wecom.bots[0]?.token).toBe("bot-env");
    expect(problems(raw)).toEqual(expect.arrayContaining([expect.stringMatching(/^wecom\.apps\[0\]\.secret: /), expect.stringMatching(/^omni\.secret: /)]));
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
    expect(c.retention).toEqual({ days: 30, intervalSec: 60, batchSize: 500 });
    expect(c.kf.pollIntervalSec).toBe(300);
    expect(c.delivery.mediaDeadlineSec).toBe(600);
    expect(parseConfig({ ...exampleConfig(), retention: { days: { archive: 365, default: 30 } } }).retention.days).toEqual({ archive: 365, default: 30 });
    expect(parseConfig({ ...exampleConfig(), trustProxy: ["10.0.0.0/8", "127.0.0.1", "::1", "fd00::/8"] }).trustProxy).toHaveLength(4);
    expect(problems({ ...exampleConfig(), trustProxy: ["10.0.0.0/33"] })).toEqual([expect.stringMatching(/^trustProxy\[0\]: must be an IPv4\/IPv6 address or CIDR/)]);
    expect(problems({ ...exampleConfig(), retention: { days: { archive: 365, other: 1 } } })).not.toEqual([]);
  });
});
