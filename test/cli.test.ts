import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { FIXTURES, fixture, vectors } from "./helpers.js";
import { storeForLog } from "../src/cli/main.js";

const BIN = fileURLToPath(new URL("../bin/wecom-bridge", import.meta.url));
const v = vectors.official_decrypt_msg;
const u = vectors.official_verify_url;
const b = vectors.aibot_stream_reply;

/** Run the real executable, as a user would. */
function run(args: string[], input?: string) {
  const r = spawnSync(BIN, args, { input, encoding: "utf8" });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function expectOneLineError(r: ReturnType<typeof run>, code: number, fragment: string): void {
  expect(r.code).toBe(code);
  expect(r.stdout).toBe("");
  expect(r.stderr).toContain(fragment);
  expect(r.stderr.trim().split("\n")).toHaveLength(1);
  expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
}

const tmp = mkdtempSync(join(tmpdir(), "wecom-bridge-cli-"));
const bodyFile = join(tmp, "body.xml");
writeFileSync(bodyFile, v.body);
const common = ["--token", v.token, "--aes-key", v.encodingAESKey, "--timestamp", v.timestamp, "--nonce", v.nonce];

describe("crypto decrypt", () => {
  it("decrypts a whole XML callback body (--body) and prints the plaintext", () => {
    const r = run(["crypto", "decrypt", ...common, "--receive-id", v.receiveId, "--signature", v.msg_signature, "--body", bodyFile]);
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${v.plaintext}\n`);
  });

  it("decrypts a bare ciphertext (--encrypt): URL verification", () => {
    const r = run([
      "crypto",
      "decrypt",
      "--token",
      u.token,
      "--aes-key",
      u.encodingAESKey,
      "--receive-id",
      u.receiveId,
      "--timestamp",
      u.timestamp,
      "--nonce",
      u.nonce,
      "--signature",
      u.msg_signature,
      "--encrypt",
      u.echostr,
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${u.plaintext}\n`);
  });

  it("decrypts a JSON body (AI bot) with no receive id", () => {
    const jsonFile = join(tmp, "bot.json");
    writeFileSync(jsonFile, JSON.stringify({ encrypt: b.encrypt }));
    const r = run(["crypto", "decrypt", "--token", b.token, "--aes-key", b.encodingAESKey, "--timestamp", b.timestamp, "--nonce", b.nonce, "--signature", b.msgsignature, "--body", jsonFile]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${b.plaintext}\n`);
  });

  it("a bad signature exits 1 with one line naming -40001", () => {
    expectOneLineError(run(["crypto", "decrypt", ...common, "--signature", "0".repeat(40), "--body", bodyFile]), 1, "-40001");
  });

  it("a bad key exits 1 with -40004 and does not echo the key", () => {
    const r = run(["crypto", "decrypt", "--token", v.token, "--aes-key", "tooShortSecretKey", "--timestamp", "1", "--nonce", "n", "--signature", "s", "--encrypt", "abcd"]);
    expectOneLineError(r, 1, "-40004");
    expect(r.stderr).not.toContain("tooShortSecretKey");
  });

  it("a wrong receive id exits 1 with -40005", () => {
    expectOneLineError(run(["crypto", "decrypt", ...common, "--receive-id", "wwOTHER", "--signature", v.msg_signature, "--body", bodyFile]), 1, "-40005");
  });

  it("a body that is not an envelope exits 1 with -40002", () => {
    const bad = join(tmp, "bad.xml");
    writeFileSync(bad, "<xml><Nothing/></xml>");
    expectOneLineError(run(["crypto", "decrypt", ...common, "--signature", v.msg_signature, "--body", bad]), 1, "-40002");
  });

  it("usage errors exit 2", () => {
    expectOneLineError(run(["crypto", "decrypt", ...common, "--signature", v.msg_signature]), 2, "exactly one of --encrypt or --body");
    expectOneLineError(run(["crypto", "decrypt", "--token", "t"]), 2, "missing --aes-key");
    expectOneLineError(run(["crypto", "decrypt", ...common, "--signature", "s", "--encrypt", "x", "--bogus"]), 2, "--bogus");
    expectOneLineError(run(["crypto", "frobnicate"]), 2, "decrypt or encrypt");
    expectOneLineError(run(["nope"]), 2, "unknown command");
    expectOneLineError(run(["crypto", "decrypt", ...common, "--signature", "s", "--body", join(tmp, "missing.xml")]), 2, "cannot read");
  });
});

describe("crypto encrypt", () => {
  it("prints {encrypt, msgsignature, timestamp, nonce}, deterministic with --random", () => {
    const r = run(["crypto", "encrypt", "--token", b.token, "--aes-key", b.encodingAESKey, "--timestamp", b.timestamp, "--nonce", b.nonce, "--random", b.random, "--message", b.plaintext]);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out).toEqual({ encrypt: b.encrypt, msgsignature: b.msgsignature, timestamp: b.timestamp, nonce: b.nonce });
    expect(Object.keys(out)).toEqual(["encrypt", "msgsignature", "timestamp", "nonce"]);
  });

  it("round-trips through decrypt with a receive id", () => {
    const enc = JSON.parse(run(["crypto", "encrypt", ...common, "--receive-id", v.receiveId, "--message", "你好 <xml/>"]).stdout);
    const r = run(["crypto", "decrypt", ...common, "--receive-id", v.receiveId, "--signature", enc.msgsignature, "--encrypt", enc.encrypt]);
    expect(r.stdout).toBe("你好 <xml/>\n");
  });

  it("refuses a --random that is not 16 characters", () => {
    expectOneLineError(run(["crypto", "encrypt", ...common, "--random", "short", "--message", "m"]), 2, "--random must be 16 characters");
  });
});

describe("decode", () => {
  it("app from a file", () => {
    const r = run(["decode", "app", `${FIXTURES}app/msg-text.xml`]);
    expect(r.code).toBe(0);
    const m = JSON.parse(r.stdout);
    expect(m).toMatchObject({ channel: "app", msgId: "7381973325934178305", content: { type: "text" } });
  });

  it("kf: a whole sync_msg response from stdin, and one item", () => {
    const resp = JSON.parse(run(["decode", "kf"], fixture("kf", "sync_msg-response.json")).stdout);
    expect(resp.hasMore).toBe(true);
    expect(resp.messages.length).toBeGreaterThan(0);
    const one = JSON.parse(run(["decode", "kf", `${FIXTURES}kf/msg-text.json`]).stdout);
    expect(one).toMatchObject({ channel: "kf", content: { type: "text" } });
  });

  it("bot, archive and omni", () => {
    expect(JSON.parse(run(["decode", "bot", `${FIXTURES}bot/msg-text.json`]).stdout)).toMatchObject({ channel: "bot", content: { type: "text" } });
    expect(JSON.parse(run(["decode", "archive", `${FIXTURES}archive/seed-file.json`]).stdout)).toMatchObject({
      kind: "record",
      messageId: "1531161872865219346",
      message: { channel: "archive", content: { type: "file" } },
    });
    expect(JSON.parse(run(["decode", "omni", `${FIXTURES}omni/to-omni-text.json`]).stdout)).toMatchObject({ channel: "omni", direction: "to_omni" });
  });

  it("unknown types exit 0 with the unknown variant and the raw payload", () => {
    const r = run(["decode", "app", `${FIXTURES}app/unknown-msgtype.xml`]);
    expect(r.code).toBe(0);
    const m = JSON.parse(r.stdout);
    expect(m.content.type).toBe("unknown");
    expect(m.content.raw).toContain("<MsgType>");
    const k = JSON.parse(run(["decode", "kf", `${FIXTURES}kf/unknown-msgtype.json`]).stdout);
    expect(k.content).toMatchObject({ type: "unknown", raw: { msgid: expect.any(String) } });
  });

  it("malformed input exits 1 with one clear line", () => {
    expectOneLineError(run(["decode", "app"], "<xml><MsgType>text</xml>"), 1, "decode_malformed");
    expectOneLineError(run(["decode", "bot"], "{not json"), 1, "bot: not valid JSON");
    expectOneLineError(run(["decode", "kf"], "[]"), 1, "kf: expected a JSON object");
    expectOneLineError(run(["decode", "archive"], '{"message_id":"1"}'), 1, "type");
    expectOneLineError(run(["decode", "omni"], '{"MsgType":"text","Content":"x"}'), 1, "ToUserId or FromUserId");
  });

  it("a missing or wrong format is a usage error", () => {
    expectOneLineError(run(["decode"]), 2, "app|kf|bot|archive|omni");
    expectOneLineError(run(["decode", "xml"]), 2, "app|kf|bot|archive|omni");
  });
});

describe("help and version", () => {
  it("--help lists the commands, --version the version", () => {
    const h = run(["--help"]);
    expect(h.code).toBe(0);
    expect(h.stdout).toContain("crypto decrypt");
    expect(h.stdout).toContain("decode app|kf|bot|archive|omni");
    expect(run(["--version"]).stdout).toMatch(/^\d+\.\d+\.\d+\n$/);
  });
});

describe("serve and replay", () => {
  it("serve refuses a bad config with one line per wrong field, exit 78", () => {
    const bad = join(tmp, "bad-config.json");
    writeFileSync(bad, JSON.stringify({ publicUrl: "nope", adminToken: "short" }));
    const r = run(["serve", "--config", bad]);
    expect(r.code).toBe(78);
    expect(r.stderr).toContain("publicUrl:");
    expect(r.stderr).toContain("adminToken: must be at least 16 characters");
    expect(r.stderr).toContain("wecom:");
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it("serve without a config is a usage error", () => {
    const r = spawnSync(BIN, ["serve"], { encoding: "utf8", env: { ...process.env, WECOM_BRIDGE_CONFIG: "" } });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("--config FILE or set WECOM_BRIDGE_CONFIG");
  });

  it("replay puts dead letters back", async () => {
    const { SqliteStore } = await import("../src/store/sqlite/index.js");
    const dir = mkdtempSync(join(tmpdir(), "wb-replay-"));
    const db = join(dir, "bridge.db");
    const store = await SqliteStore.open({ path: db });
    await store.ingest([{ tenant: "ww1", channel: "app", key: "k1", outbox: [{ kind: "omni", conversationId: "c", payload: {} }] }]);
    const [e] = await store.claimOutbox(["omni"], Date.now(), 1, 1000);
    await store.finishOutbox(e?.id as number, { state: "dead", error: "x" }, Date.now());
    await store.close();
    const config = join(dir, "config.json");
    writeFileSync(
      config,
      JSON.stringify({
        publicUrl: "http://127.0.0.1:1",
        store: `sqlite:${db}`,
        adminToken: "admin-token-0123456789",
        wecom: { corpId: "ww1" },
        omni: { baseUrl: "http://127.0.0.1:1", appId: "1", secret: "s" },
      }),
    );
    expectOneLineError(run(["replay", "--config", config]), 2, "--all or one or more --id N");
    const r = run(["replay", "--config", config, "--all"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("1 dead letter put back in the outbox\n");
    expect(run(["replay", "--config", config, "--id", String(e?.id)]).stdout).toBe("0 dead letters put back in the outbox\n");
  });
});

describe("long-running commands", () => {
  /** Spawn, collect stdout, resolve when `ready` matches. */
  function spawnUntil(args: string[], ready: RegExp, env: NodeJS.ProcessEnv = process.env) {
    const child = spawn(BIN, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    const readyP = new Promise<string>((resolve, reject) => {
      child.stdout?.on("data", (d) => {
        out += String(d);
        if (ready.test(out)) resolve(out);
      });
      child.once("exit", (code) => reject(new Error(`exited ${code}: ${out}`)));
    });
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    return { child, readyP, exited };
  }

  it("sim runs both simulators until stopped", async () => {
    const { child, readyP, exited } = spawnUntil(["sim"], /全媒体 simulator\s+(http:\S+)/);
    const out = await readyP;
    const wecomUrl = /WeCom simulator\s+(http:\S+)/.exec(out)?.[1] as string;
    const token = await (await fetch(`${wecomUrl}/cgi-bin/gettoken?corpid=wwSANDBOX000000001&corpsecret=sandbox-app-secret`)).json();
    expect(token).toMatchObject({ errcode: 0, access_token: expect.any(String) });
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
  });

  it("start without a config runs the sandbox, prints the console and its token, and keeps serving it after the script", async () => {
    const env = { ...process.env };
    delete env.WECOM_BRIDGE_CONFIG;
    const { child, readyP, exited } = spawnUntil(["start", "--port", "0"], /agent answers reached WeCom/, env);
    const out = await readyP;
    const consoleUrl = /console\s+(http:\S+)\/console\s+\(admin token: (\S+)\)/.exec(out) ?? [];
    expect(consoleUrl[2]).toBe("sandbox-admin-token");
    const base = consoleUrl[1] as string;
    // the script is over; the console still answers, and its Playground takes a customer
    const login = await fetch(`${base}/console/api/login`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token: "sandbox-admin-token" }) });
    expect(login.status).toBe(200);
    const { csrf, sandbox } = (await login.json()) as { csrf: string; sandbox: boolean };
    expect(sandbox).toBe(true);
    const cookie = (login.headers.get("set-cookie") ?? "").split(";")[0] as string;
    const sent = await fetch(`${base}/console/api/playground/customer`, { method: "POST", headers: { cookie, "x-csrf-token": csrf, "content-type": "application/json" }, body: JSON.stringify({ channel: "app", text: "还在吗？" }) });
    expect(sent.status).toBe(200);
    expect(child.exitCode).toBeNull();
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
  }, 60_000);

  it("sandbox --once exits after the script", async () => {
    const { readyP, exited } = spawnUntil(["sandbox", "--once", "--port", "0"], /agent answers reached WeCom/);
    expect(await readyP).toContain("console    http://127.0.0.1:");
    expect(await exited).toBe(0);
  }, 60_000);

  it("start serves when WECOM_BRIDGE_CONFIG names a config", async () => {
    const dir = mkdtempSync(join(tmpdir(), "wb-start-"));
    const config = join(dir, "config.json");
    writeFileSync(
      config,
      JSON.stringify({
        listen: { port: 0 },
        publicUrl: "http://127.0.0.1:1",
        store: `sqlite:${join(dir, "bridge.db")}`,
        adminToken: "admin-token-0123456789",
        wecom: { corpId: "ww1" },
        omni: { baseUrl: "http://127.0.0.1:1", appId: "1", secret: "s" },
      }),
    );
    const { child, readyP, exited } = spawnUntil(["start"], /wecom-bridge serving/, { ...process.env, WECOM_BRIDGE_CONFIG: config });
    const line = (await readyP).split("\n").find((l) => l.includes("wecom-bridge serving")) as string;
    const { url, store, mediaDir } = JSON.parse(line) as { url: string; store: string; mediaDir: string };
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    // where the files are, resolved against the config's folder
    expect(store).toBe(`sqlite:${join(dir, "bridge.db")}`);
    expect(mediaDir).toBe(join(dir, "data", "media"));
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
  });

  it("never logs a database password", () => {
    expect(storeForLog("postgres://bridge:s3cr3t-pw@db.internal:5432/bridge")).toBe("postgres://db.internal:5432/bridge");
    expect(storeForLog("sqlite:/var/lib/wb/bridge.db")).toBe("sqlite:/var/lib/wb/bridge.db");
    expect(storeForLog("postgres://user:pw@[bad")).toBe("(unparsable store URL)");
  });
});
