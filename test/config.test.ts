import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig, parseConfig } from "../src/config.js";

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
    expect(c.delivery).toEqual({ maxAttempts: 12, baseDelayMs: 1000, maxDelayMs: 300000, concurrency: 8, timeoutMs: 10000 });
    expect(c.kf).toEqual({ deliverHistory: false, firstPullGraceSec: 60, pageSize: 1000 });
    expect(c.wecom.callbackWindowSec).toBe(300);
    expect(c.wecom.bots[0]?.placeholder).toBe("");
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
    expect(problems(raw)).toEqual(['wecom.apps[1].name: "support" is used twice']);
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
});
