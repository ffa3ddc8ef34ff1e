/**
 * The config doctor against the real simulators on loopback, with each fault injected.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../src/cli/main.js";
import { clockRow, type DoctorRow, ipFromErrmsg, runDoctor } from "../src/gateway/doctor.js";
import { WeComSimulator } from "../src/sim/wecom.js";
import { OmniSimulator } from "../src/sim/omni.js";

const CORP = "wwDOCTOR0000000001";
const S = {
  appSecret: "doctor-app-secret-Zq81",
  appToken: "doctorAppTokenX7",
  appAESKey: "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt",
  botToken: "doctorBotTokenY9",
  botAESKey: "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR",
  wsSecret: "doctor-ws-secret-Kp42",
  omniSecret: "doctor-omni-secret-Wm55",
  adminToken: "doctor-admin-token-Qa77x",
};
const SECRETS = Object.values(S);

let wecom: WeComSimulator;
let omni: OmniSimulator;
let health: Server;
let healthUrl: string;
let closedUrl: string;
const tmp = mkdtempSync(join(tmpdir(), "wecom-bridge-doctor-"));
/** Everything any doctor run printed: no secret may be in it. */
const printed: string[] = [];

function listen(server: Server): Promise<string> {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)));
}

beforeAll(async () => {
  wecom = await WeComSimulator.start({
    corpId: CORP,
    apps: [{ name: "support", agentId: 1000002, secret: S.appSecret, token: S.appToken, encodingAESKey: S.appAESKey, kf: true }],
  });
  wecom.addKfAccount("wkDOCTOR00000000000000000000001");
  omni = await OmniSimulator.start({ appId: "1001", secret: S.omniSecret });
  health = createServer((req, res) => {
    res.writeHead(req.url === "/healthz" ? 200 : 404, { "Content-Type": "application/json" });
    res.end('{"status":"ok"}');
  });
  healthUrl = await listen(health);
  const closed = createServer();
  closedUrl = await listen(closed);
  await new Promise<void>((r) => closed.close(() => r()));
});

afterAll(async () => {
  await wecom.close();
  await omni.close();
  await new Promise<void>((r) => health.close(() => r()));
});

function config(over: { corpId?: string; appSecret?: string; appAESKey?: string; omniUrl?: string; omniSecret?: string; publicUrl?: string; mediaDir?: string } = {}) {
  return {
    publicUrl: over.publicUrl ?? healthUrl,
    adminToken: S.adminToken,
    store: `sqlite:${join(tmp, "bridge.db")}`,
    mediaDir: over.mediaDir ?? join(tmp, "media"),
    wecom: {
      apiBase: wecom.url,
      corpId: over.corpId ?? CORP,
      apps: [{ name: "support", agentId: 1000002, secret: over.appSecret ?? S.appSecret, token: S.appToken, encodingAESKey: over.appAESKey ?? S.appAESKey, kf: true }],
      bots: [
        { name: "helper", botId: "aibDOCTOR", token: S.botToken, encodingAESKey: S.botAESKey },
        { name: "live", botId: "aibDOCTORLIVE", mode: "websocket", secret: S.wsSecret, wsUrl: "ws://127.0.0.1:9/ws" },
      ],
    },
    omni: { baseUrl: over.omniUrl ?? omni.url, appId: "1001", secret: over.omniSecret ?? S.omniSecret },
  };
}

let n = 0;
function writeConfig(cfg: unknown): string {
  const file = join(tmp, `config-${++n}.json`);
  writeFileSync(file, JSON.stringify(cfg));
  return file;
}

/** Run `wecom-bridge doctor` in process; the rows from its --json output. */
async function doctor(cfg: unknown): Promise<{ code: number; rows: DoctorRow[]; table: string }> {
  const file = writeConfig(cfg);
  const out: string[] = [];
  const io = { stdout: (t: string) => out.push(t), stderr: (t: string) => out.push(t), readStdin: () => "" };
  const code = await runCli(["doctor", "--config", file, "--json"], io);
  const tableOut: string[] = [];
  const tableCode = await runCli(["doctor", "--config", file], { ...io, stdout: (t) => tableOut.push(t) });
  expect(tableCode).toBe(code);
  printed.push(...out, ...tableOut);
  return { code, rows: JSON.parse(out.join("")) as DoctorRow[], table: tableOut.join("") };
}

function row(rows: DoctorRow[], check: string): DoctorRow {
  const r = rows.find((x) => x.check === check);
  expect(r, `row ${check}`).toBeDefined();
  return r as DoctorRow;
}

function failedChecks(rows: DoctorRow[]): string[] {
  return rows.filter((r) => r.status === "fail").map((r) => r.check);
}

describe("wecom-bridge doctor", () => {
  it("an all-good configuration: every row ok, exit 0, a ✓ table", async () => {
    const { code, rows, table } = await doctor(config());
    expect(failedChecks(rows)).toEqual([]);
    expect(code).toBe(0);
    expect(rows.map((r) => r.check)).toEqual([
      "config",
      "app.support.aes_key",
      "app.support.token",
      "bot.helper.aes_key",
      "bot.helper.token",
      "bot.live.secret",
      "app.support.gettoken",
      "kf.account_list",
      "app.support.trusted_ip",
      "omni.reachable",
      "omni.credentials",
      "public_url",
      "store.writable",
      "media_dir.writable",
      "clock",
    ]);
    expect(table).toContain("✓ app.support.gettoken");
    expect(table).not.toContain("✗");
    expect(table).toContain("all 15 checks passed");
  });

  it("--json prints [{check, status, errcode, detail, fix}] with every key", async () => {
    const { rows } = await doctor(config({ corpId: "wwWRONG" }));
    for (const r of rows) {
      expect(Object.keys(r)).toEqual(["check", "status", "errcode", "detail", "fix"]);
      expect(["ok", "fail"]).toContain(r.status);
      expect(typeof r.detail).toBe("string");
      if (r.status === "ok") expect(r.fix).toBeNull();
    }
    expect(row(rows, "config").errcode).toBeNull();
  });

  it("a wrong corpId: 40013, wecom.corpId is wrong", async () => {
    const { code, rows, table } = await doctor(config({ corpId: "wwWRONG" }));
    expect(code).toBe(1);
    const r = row(rows, "app.support.gettoken");
    expect(r).toMatchObject({ status: "fail", errcode: 40013 });
    expect(r.detail).toContain("wecom.corpId is wrong");
    expect(r.fix).toContain("企业ID");
    expect(row(rows, "kf.account_list").status).toBe("fail");
    expect(table).toContain("✗ app.support.gettoken");
    expect(table).toContain("fix: set wecom.corpId");
  });

  it("a wrong secret: 40001, the app's secret is wrong", async () => {
    const { code, rows } = await doctor(config({ appSecret: "not-the-secret-at-all" }));
    expect(code).toBe(1);
    const r = row(rows, "app.support.gettoken");
    expect(r).toMatchObject({ status: "fail", errcode: 40001 });
    expect(r.detail).toContain("the app's secret is wrong");
    expect(printed.join("")).not.toContain("not-the-secret-at-all");
  });

  it("60020: the trusted-IP row shows the address WeCom saw and how to fix it", async () => {
    wecom.failNext("gettoken", 60020, 2); // the --json run and the table run
    const { code, rows } = await doctor(config());
    expect(code).toBe(1);
    expect(row(rows, "app.support.gettoken")).toMatchObject({ status: "fail", errcode: 60020 });
    const r = row(rows, "app.support.trusted_ip");
    expect(r).toMatchObject({ status: "fail", errcode: 60020 });
    expect(r.detail).toContain("127.0.0.1");
    expect(r.fix).toContain("企业可信IP");
  });

  it("KF not authorised: kf/account/list refused with 48002, fix in 微信客服 → API", async () => {
    wecom.failNext("kf/account/list", 48002, 2);
    const { code, rows } = await doctor(config());
    expect(code).toBe(1);
    expect(failedChecks(rows)).toEqual(["kf.account_list"]);
    const r = row(rows, "kf.account_list");
    expect(r).toMatchObject({ status: "fail", errcode: 48002 });
    expect(r.fix).toContain("微信客服 → API");
  });

  it("a bad AES key shape: an aes_key row for that app (the configuration rows only)", async () => {
    const { code, rows } = await doctor(config({ appAESKey: "tooShortAESKey" }));
    expect(code).toBe(1);
    const r = row(rows, "app.support.aes_key");
    expect(r.status).toBe("fail");
    expect(r.detail).toContain("43 characters");
    expect(rows.every((x) => x.status === "fail")).toBe(true);
    expect(rows.some((x) => x.check === "app.support.gettoken")).toBe(false);
    expect(printed.join("")).not.toContain("tooShortAESKey");
  });

  it("other configuration errors are rows too, one per problem", async () => {
    const cfg = config() as Record<string, unknown>;
    delete cfg.publicUrl;
    cfg.adminToken = "short";
    const { code, rows } = await doctor(cfg);
    expect(code).toBe(1);
    expect(rows.filter((r) => r.check === "config").map((r) => r.detail.split(":")[0])).toEqual(expect.arrayContaining(["publicUrl", "adminToken"]));
  });

  it("the 全媒体 down (a closed port): omni.reachable fails", async () => {
    const { code, rows } = await doctor(config({ omniUrl: closedUrl }));
    expect(code).toBe(1);
    expect(row(rows, "omni.reachable").status).toBe("fail");
    expect(row(rows, "omni.reachable").fix).toContain("omni.baseUrl");
    expect(failedChecks(rows)).toEqual(["omni.reachable", "omni.credentials"]);
  });

  it("the 全媒体's secret wrong: reachable, credentials refused (30003)", async () => {
    const { rows } = await doctor(config({ omniSecret: "wrong-omni-secret-000" }));
    expect(row(rows, "omni.reachable").status).toBe("ok");
    expect(row(rows, "omni.credentials")).toMatchObject({ status: "fail", errcode: 30003 });
    expect(omni.received).toHaveLength(0);
  });

  it("publicUrl unreachable: public_url fails with the reverse proxy / DNS / firewall fix", async () => {
    const { code, rows } = await doctor(config({ publicUrl: closedUrl }));
    expect(code).toBe(1);
    expect(failedChecks(rows)).toEqual(["public_url"]);
    expect(row(rows, "public_url").fix).toMatch(/reverse proxy.*DNS.*firewall/);
  });

  it("an unwritable media folder: media_dir.writable fails", async () => {
    const file = join(tmp, "a-file");
    writeFileSync(file, "x");
    const { code, rows } = await doctor(config({ mediaDir: join(file, "media") }));
    expect(code).toBe(1);
    expect(failedChecks(rows)).toEqual(["media_dir.writable"]);
    expect(row(rows, "media_dir.writable").detail).toContain("ENOTDIR");
  });

  it("an unwritable store: store.writable fails", async () => {
    const file = join(tmp, "another-file");
    writeFileSync(file, "x");
    const cfg = { ...config(), store: `sqlite:${join(file, "bridge.db")}` };
    const { rows } = await doctor(cfg);
    expect(failedChecks(rows)).toEqual(["store.writable"]);
  });

  it("the clock: a local clock 2 minutes off WeCom's Date header fails", async () => {
    const file = writeConfig(config());
    const rows = await runDoctor(file, { now: () => Date.now() + 120_000 });
    expect(row(rows, "clock")).toMatchObject({ status: "fail" });
    expect(row(rows, "clock").detail).toContain("ahead of");
    const date = new Date().toUTCString();
    expect(clockRow(date, Date.parse(date) + 30_000).status).toBe("ok");
    expect(clockRow(date, Date.parse(date) - 90_000).detail).toContain("behind");
    expect(clockRow(undefined, Date.now()).status).toBe("fail");
  });

  it("ipFromErrmsg reads WeCom's errmsg", () => {
    expect(ipFromErrmsg("not allow to access from your ip, hint: [1], from ip: 203.0.113.10, more info at https://x")).toBe("203.0.113.10");
    expect(ipFromErrmsg("invalid corpid")).toBeUndefined();
  });

  it("usage: no --config is a usage error (exit 2)", async () => {
    const err: string[] = [];
    const saved = process.env.WECOM_BRIDGE_CONFIG;
    delete process.env.WECOM_BRIDGE_CONFIG;
    try {
      const code = await runCli(["doctor"], { stdout: () => {}, stderr: (t) => err.push(t), readStdin: () => "" });
      expect(code).toBe(2);
      expect(err.join("")).toContain("--config");
    } finally {
      if (saved !== undefined) process.env.WECOM_BRIDGE_CONFIG = saved;
    }
  });

  it("no secret of the configurations appears in any output", () => {
    const all = printed.join("");
    expect(all.length).toBeGreaterThan(1000);
    for (const s of SECRETS) expect(all).not.toContain(s);
  });
});
