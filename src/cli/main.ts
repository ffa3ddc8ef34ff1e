/**
 * The `wecom-bridge` command line. Commands are public contracts: keep their flags stable.
 *
 * - `crypto decrypt --token T --aes-key K [--receive-id R] --timestamp TS --nonce N --signature S (--encrypt E | --body FILE)`
 * - `crypto encrypt --token T --aes-key K [--receive-id R] --timestamp TS --nonce N [--random 16CHARS] --message M`
 * - `decode app|kf|bot|archive|omni [FILE]`
 * - `doctor --config FILE [--json]`: check a configuration against WeCom, the 全媒体 and this host (exit 0 only when all pass)
 *
 * Errors print one line on stderr (`wecom-bridge: ...`) and exit non-zero: 1 for bad input,
 * 2 for bad usage. No stack traces.
 * @module
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { hostname } from "node:os";
import { parseArgs } from "node:util";
import { ConfigError, loadConfig } from "../config.js";
import { BridgeError } from "../errors.js";
import { runGateway } from "../gateway/index.js";
import { removeMediaFile } from "../gateway/media.js";
import { createLogger } from "../log.js";
import { openStore, type Store } from "../store/index.js";
import { DECODE_FORMATS, type DecodeFormat, decodeAny } from "../decode.js";
import { WeComCrypto } from "../wecom/crypto.js";
import { parseCallbackEnvelope } from "../wecom/envelope.js";

/** Where the CLI writes; injectable for tests. */
export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Reads all of stdin. */
  readStdin: () => string;
}

/** A usage error: exit code 2. */
class UsageError extends Error {}

const HELP = `wecom-bridge: gateway between WeCom and a 全媒体 contact center

Usage:
  wecom-bridge crypto decrypt --token T --aes-key K [--receive-id R] --timestamp TS --nonce N
                              --signature S (--encrypt E | --body FILE)
  wecom-bridge crypto encrypt --token T --aes-key K [--receive-id R] --timestamp TS --nonce N
                              [--random SIXTEEN_CHARS] --message M
  wecom-bridge decode app|kf|bot|archive|omni [FILE]     (stdin when no FILE)
  wecom-bridge start [--config FILE]                     serve with a config, else run the sandbox
  wecom-bridge serve --config FILE                       (or WECOM_BRIDGE_CONFIG)
  wecom-bridge sandbox [--once] [--port N]               gateway + simulators + a scripted conversation;
                                                         then the console's Playground (unless --once)
  wecom-bridge sim [--wecom-port N] [--omni-port N]      run the WeCom and 全媒体 simulators alone
  wecom-bridge replay --config FILE (--all | --id N ...) put dead letters back in the outbox
  wecom-bridge purge --dead [--before ISO-DATE] --config FILE   remove dead letters
  wecom-bridge erase --conversation ADDRESS --config FILE       erase a conversation (PIPL)
  wecom-bridge doctor --config FILE [--json]             check the config against WeCom, the 全媒体 and
                                                         this host; ✓/✗ and a fix per check, exit 0 when all pass
  wecom-bridge --help | --version
`;

const CRYPTO_OPTIONS = {
  token: { type: "string" },
  "aes-key": { type: "string" },
  "receive-id": { type: "string" },
  timestamp: { type: "string" },
  nonce: { type: "string" },
  signature: { type: "string" },
  encrypt: { type: "string" },
  body: { type: "string" },
  random: { type: "string" },
  message: { type: "string" },
} as const;

function required(values: Record<string, string | boolean | undefined>, names: string[]): void {
  const missing = names.filter((n) => typeof values[n] !== "string");
  if (missing.length > 0) throw new UsageError(`missing ${missing.map((n) => `--${n}`).join(", ")}`);
}

function readInput(io: CliIo, file: string | undefined): string {
  if (file === undefined || file === "-") return io.readStdin();
  try {
    return readFileSync(file, "utf8");
  } catch (e) {
    throw new UsageError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? "error"}`);
  }
}

function cryptoCommand(args: string[], io: CliIo): void {
  const [sub, ...rest] = args;
  const { values, positionals } = parseArgs({ args: rest, options: CRYPTO_OPTIONS, strict: true, allowPositionals: true });
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  if (sub === "decrypt") {
    required(values, ["token", "aes-key", "timestamp", "nonce", "signature"]);
    if ((values.encrypt === undefined) === (values.body === undefined)) throw new UsageError("give exactly one of --encrypt or --body");
    const crypto = new WeComCrypto({ token: values.token!, encodingAESKey: values["aes-key"]!, receiveId: values["receive-id"] ?? "" });
    const encrypt = values.encrypt ?? parseCallbackEnvelope(readInput(io, values.body)).encrypt;
    const plain = crypto.decryptCallback({ msg_signature: values.signature!, timestamp: values.timestamp!, nonce: values.nonce! }, encrypt);
    io.stdout(`${plain}\n`);
    return;
  }
  if (sub === "encrypt") {
    required(values, ["token", "aes-key", "timestamp", "nonce", "message"]);
    if (values.random !== undefined && Buffer.byteLength(values.random, "latin1") !== 16) throw new UsageError("--random must be 16 characters");
    const crypto = new WeComCrypto({ token: values.token!, encodingAESKey: values["aes-key"]!, receiveId: values["receive-id"] ?? "" });
    const reply = crypto.encryptReply(values.message!, values.timestamp!, values.nonce!, values.random);
    io.stdout(`${JSON.stringify(reply)}\n`);
    return;
  }
  throw new UsageError("crypto needs a subcommand: decrypt or encrypt");
}

function decodeCommand(args: string[], io: CliIo): void {
  const { positionals, values } = parseArgs({ args, options: { "corp-id": { type: "string" } }, strict: true, allowPositionals: true });
  const [format, file, extra] = positionals;
  if (format === undefined || !(DECODE_FORMATS as readonly string[]).includes(format)) {
    throw new UsageError(`decode needs a format: ${DECODE_FORMATS.join("|")}`);
  }
  if (extra !== undefined) throw new UsageError(`unexpected argument ${JSON.stringify(extra)}`);
  const text = readInput(io, file);
  const decoded = decodeAny(format as DecodeFormat, text, values["corp-id"] ? { corpId: values["corp-id"] } : {});
  io.stdout(`${JSON.stringify(decoded, null, 2)}\n`);
}

function configPath(values: { config?: string | undefined }): string {
  const path = values.config ?? process.env.WECOM_BRIDGE_CONFIG;
  if (!path) throw new UsageError("give --config FILE or set WECOM_BRIDGE_CONFIG");
  return path;
}

async function serveCommand(args: string[], io: CliIo): Promise<void> {
  const { values } = parseArgs({ args, options: { config: { type: "string" }, "log-format": { type: "string" } }, strict: true });
  const config = loadConfig(configPath(values));
  const format = values["log-format"] === "pretty" ? "pretty" : "json";
  const log = createLogger({ format, write: (l) => io.stdout(l) });
  const running = await runGateway(config, { log });
  log.info("wecom-bridge serving", {
    url: running.url,
    store: storeForLog(config.store),
    mediaDir: config.mediaDir,
    apps: config.wecom.apps.map((a) => a.name),
    bots: config.wecom.bots.map((b) => b.name),
  });
  await untilSignal();
  log.info("wecom-bridge stopping");
  await running.stop();
}

/** The store setting as it may be logged: a database URL loses its user and password. */
export function storeForLog(store: string): string {
  if (store.startsWith("sqlite:")) return store;
  try {
    const u = new URL(store);
    u.username = "";
    u.password = "";
    return u.toString();
  } catch {
    return "(unparsable store URL)";
  }
}

function untilSignal(): Promise<void> {
  return new Promise<void>((resolve) => {
    process.once("SIGINT", () => resolve());
    process.once("SIGTERM", () => resolve());
  });
}

async function sandboxCommand(args: string[], io: CliIo): Promise<void> {
  const { values } = parseArgs({ args, options: { once: { type: "boolean" }, port: { type: "string" } }, strict: true });
  const port = values.port === undefined ? undefined : Number(values.port);
  if (port !== undefined && (!Number.isInteger(port) || port < 0 || port > 65535)) throw new UsageError("--port takes a port number");
  const { runSandbox } = await import("../sim/sandbox.js");
  // a signal at any time stops the sandbox (during the script too)
  const signalled = untilSignal();
  const sandbox = await runSandbox(port === undefined ? { write: io.stdout } : { write: io.stdout, port });
  try {
    const scripted = sandbox.script();
    scripted.catch(() => undefined); // after a signal, what the stopped sandbox throws is moot
    await Promise.race([scripted, signalled]);
    // it keeps serving the console and its Playground (a server, like `serve`); --once for scripts
    if (!values.once) {
      io.stdout("\nThe sandbox keeps running: open the console above, log in with the admin token and try the Playground (or the admin API). Ctrl-C stops it.\n");
      await signalled;
    }
  } finally {
    await sandbox.stop();
  }
}

async function simCommand(args: string[], io: CliIo): Promise<void> {
  const { values } = parseArgs({ args, options: { "wecom-port": { type: "string" }, "omni-port": { type: "string" }, "app-url": { type: "string" } }, strict: true });
  const { SANDBOX } = await import("../sim/sandbox.js");
  const { WeComSimulator } = await import("../sim/wecom.js");
  const { OmniSimulator } = await import("../sim/omni.js");
  const log = (line: string) => io.stdout(`${line}\n`);
  const wecom = await WeComSimulator.start({
    corpId: SANDBOX.corpId,
    port: Number(values["wecom-port"] ?? 0),
    apps: [{ name: "support", agentId: SANDBOX.agentId, secret: SANDBOX.appSecret, token: SANDBOX.appToken, encodingAESKey: SANDBOX.appAESKey, kf: true }],
    bots: [
      { name: "helper", botId: SANDBOX.botId, token: SANDBOX.botToken, encodingAESKey: SANDBOX.botAESKey },
      { name: "live", botId: SANDBOX.liveBotId, token: SANDBOX.botToken, encodingAESKey: SANDBOX.botAESKey, secret: SANDBOX.liveBotSecret },
    ],
    timers: "realtime", // poll bot streams, report refused KF deliveries on the real clock
    log,
  });
  wecom.addKfAccount(SANDBOX.openKfId);
  const omni = await OmniSimulator.start({ appId: SANDBOX.omniAppId, secret: SANDBOX.omniSecret, port: Number(values["omni-port"] ?? 0), log, ...(values["app-url"] ? { appUrl: values["app-url"] } : {}) });
  if (values["app-url"]) {
    wecom.setCallbackUrl("app", "support", `${values["app-url"]}/wecom/app/support`);
    wecom.setCallbackUrl("bot", "helper", `${values["app-url"]}/wecom/bot/helper`);
  }
  io.stdout(`WeCom simulator   ${wecom.url}   (corpId ${SANDBOX.corpId}, app "support" ${SANDBOX.agentId}, bot "helper" ${SANDBOX.botId}, KF ${SANDBOX.openKfId})\n`);
  io.stdout(`WeCom long conn.  ${wecom.botWsUrl}   (bot "live" ${SANDBOX.liveBotId}, secret ${SANDBOX.liveBotSecret}: wecom.bots[].mode "websocket", wsUrl)\n`);
  io.stdout(`全媒体 simulator   ${omni.url}   (appId ${SANDBOX.omniAppId})\n`);
  io.stdout("Point a gateway config at them: wecom.apiBase and omni.baseUrl. Ctrl-C stops.\n");
  await untilSignal();
  await wecom.close();
  await omni.close();
}

async function replayCommand(args: string[], io: CliIo): Promise<void> {
  const { values } = parseArgs({ args, options: { config: { type: "string" }, all: { type: "boolean" }, id: { type: "string", multiple: true } }, strict: true });
  const config = loadConfig(configPath(values));
  if (!values.all && (values.id === undefined || values.id.length === 0)) throw new UsageError("give --all or one or more --id N");
  const ids = (values.id ?? []).map((v) => {
    if (!/^\d+$/.test(v)) throw new UsageError(`--id takes a number, not ${JSON.stringify(v)}`);
    return Number(v);
  });
  const store = await openStore(config.store, { mustExist: true });
  try {
    const n = await store.replayDead(values.all ? "all" : ids, Date.now());
    io.stdout(`${n} dead letter${n === 1 ? "" : "s"} put back in the outbox\n`);
    const asked = [...new Set(ids)];
    const detail = values.all
      ? `all: ${n} replayed`
      : `${n === asked.length ? deadLetters(n) : `${n} of ${deadLetters(asked.length)}`} replayed (ids ${asked.join(", ")})`;
    await audit(store, "replay", detail);
  } finally {
    await store.close();
  }
}

async function purgeCommand(args: string[], io: CliIo): Promise<void> {
  const { values } = parseArgs({ args, options: { config: { type: "string" }, dead: { type: "boolean" }, before: { type: "string" } }, strict: true });
  if (!values.dead) throw new UsageError("purge needs --dead (dead letters are the only thing kept until removed by hand)");
  let before: number | undefined;
  if (values.before !== undefined) {
    // a date, or a date and time with a zone: never a bare local time that means different things on different machines
    before = parseIsoDate(values.before);
    if (before === undefined) throw new UsageError("--before takes an ISO date (2026-11-30) or date-time with zone (2026-11-30T08:00:00Z)");
  }
  const config = loadConfig(configPath(values));
  const store = await openStore(config.store, { mustExist: true });
  try {
    const n = await store.purgeDead(before);
    io.stdout(`${n} dead letter${n === 1 ? "" : "s"} removed\n`);
    await audit(store, "purge", `${deadLetters(n)} removed (${before === undefined ? "all" : `before ${new Date(before).toISOString().replace(".000Z", "Z")}`})`);
  } finally {
    await store.close();
  }
}

async function eraseCommand(args: string[], io: CliIo): Promise<void> {
  const { values } = parseArgs({ args, options: { config: { type: "string" }, conversation: { type: "string" } }, strict: true });
  const conversation = values.conversation;
  if (conversation === undefined || conversation === "") throw new UsageError("give --conversation ADDRESS (as /admin/conversations lists it)");
  const config = loadConfig(configPath(values));
  const store = await openStore(config.store, { mustExist: true });
  try {
    const r = await store.eraseConversation(conversation);
    let files = 0;
    for (const row of r.media) if (await removeMediaFile(config.mediaDir, row)) files++;
    const nothing = r.messages + r.outbox + r.media.length === 0;
    await audit(store, "erase", `conversation ${conversation} erased: ${r.messages} messages, ${r.outbox} outbox entries, ${r.media.length} media${nothing ? " (nothing stored)" : ""}`);
    if (nothing) {
      // a mistyped address must not read as a fulfilled request
      throw new NothingFound(`nothing stored for ${conversation}: check the address (as /admin/conversations lists it); nothing was erased`);
    }
    io.stdout(`erased ${conversation}: ${r.messages} messages, ${r.outbox} outbox entries, ${files} media files (ledger keys kept, so WeCom's retries are still recognised)\n`);
  } finally {
    await store.close();
  }
}

/** "1 dead letter", "3 dead letters". */
function deadLetters(n: number): string {
  return `${n} dead letter${n === 1 ? "" : "s"}`;
}

/**
 * Record what a maintenance command did in the store's audit log (actor `cli`, from this host),
 * once it acted. The commands act on the whole store, so the row names no corp.
 */
async function audit(store: Store, action: "replay" | "purge" | "erase", detail: string): Promise<void> {
  await store.appendAudit({ time: Date.now(), tenant: null, actor: "cli", from: `cli@${hostname()}`, action, detail: detail.replace(/[\r\n]+/g, " ") });
}

async function doctorCommand(args: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({ args, options: { config: { type: "string" }, json: { type: "boolean" } }, strict: true });
  const { runDoctor, formatDoctorTable, doctorJson } = await import("../gateway/doctor.js");
  const rows = await runDoctor(configPath(values));
  io.stdout(values.json ? doctorJson(rows) : formatDoctorTable(rows));
  return rows.every((r) => r.status === "ok") ? 0 : 1;
}

/** A maintenance command found nothing to act on: exit code 1. */
class NothingFound extends BridgeError {
  /** @param message one readable line */
  constructor(message: string) {
    super("nothing_found", message);
  }
}

/** An ISO date (`2026-11-30`, midnight UTC) or date-time with a zone, as ms; undefined when not a real one. */
export function parseIsoDate(text: string): number | undefined {
  const m = /^(\d{4})-(\d{2})-(\d{2})(T(\d{2}):(\d{2})(:(\d{2})(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2}))?$/.exec(text);
  if (m === null) return undefined;
  const [y, mo, d, hh, mm, ss] = [m[1], m[2], m[3], m[5] ?? "0", m[6] ?? "0", m[8] ?? "0"].map(Number) as [number, number, number, number, number, number];
  // Date.parse rolls 2026-02-31 over to March: refuse what does not exist
  const day = new Date(Date.UTC(y, mo - 1, d));
  if (day.getUTCFullYear() !== y || day.getUTCMonth() !== mo - 1 || day.getUTCDate() !== d || hh > 23 || mm > 59 || ss > 59) return undefined;
  const t = Date.parse(text);
  return Number.isNaN(t) ? undefined : t;
}

/**
 * Run the CLI with arguments (without `node` and the script) and return the exit code.
 * @example process.exitCode = await runCli(process.argv.slice(2), nodeIo)
 */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case "crypto":
        cryptoCommand(rest, io);
        return 0;
      case "decode":
        decodeCommand(rest, io);
        return 0;
      case "serve":
        await serveCommand(rest, io);
        return 0;
      case "start":
        if (rest.includes("--config") || process.env.WECOM_BRIDGE_CONFIG) await serveCommand(rest, io);
        else await sandboxCommand(rest, io);
        return 0;
      case "sandbox":
        await sandboxCommand(rest, io);
        return 0;
      case "sim":
        await simCommand(rest, io);
        return 0;
      case "replay":
        await replayCommand(rest, io);
        return 0;
      case "purge":
        await purgeCommand(rest, io);
        return 0;
      case "erase":
        await eraseCommand(rest, io);
        return 0;
      case "doctor":
        return await doctorCommand(rest, io);
      case "--version":
      case "-v":
        io.stdout(`${VERSION}\n`);
        return 0;
      case undefined:
      case "--help":
      case "-h":
      case "help":
        io.stdout(HELP);
        return command === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)}; see --help`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr(`wecom-bridge: ${e.message}\n`);
      return 2;
    }
    if (e instanceof ConfigError) {
      io.stderr(`wecom-bridge: ${e.message}\n`);
      return 78;
    }
    if (e instanceof BridgeError) {
      io.stderr(`wecom-bridge: error ${e.message} [${e.code}]\n`);
      return 1;
    }
    if (e instanceof TypeError && (e as NodeJS.ErrnoException).code?.startsWith("ERR_PARSE_ARGS")) {
      io.stderr(`wecom-bridge: ${e.message.split("\n")[0]}\n`);
      return 2;
    }
    io.stderr(`wecom-bridge: internal error: ${(e as Error).message?.split("\n")[0] ?? String(e)}\n`);
    return 70;
  }
}

/** The package version, read from package.json. */
export const VERSION: string = (createRequire(import.meta.url)("../../package.json") as { version: string }).version;

/** IO bound to the process. */
export const processIo: CliIo = {
  stdout: (t) => process.stdout.write(t),
  stderr: (t) => process.stderr.write(t),
  readStdin: () => readFileSync(0, "utf8"),
};
