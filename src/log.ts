/**
 * A small structured logger: one JSON object per line (or a readable line for the sandbox), with
 * secrets redacted by key name so that tokens, keys and secrets never reach a log.
 * @module
 */

/** Log levels, lowest first. */
export type LogLevel = "debug" | "info" | "warn" | "error";

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** A logger. `fields` are merged into the line; `msg` is the readable part. */
export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  /** A logger that adds these fields to every line. */
  child(fields: Record<string, unknown>): Logger;
}

const SECRET_KEY = /secret|token|aeskey|encodingaeskey|password|signature|authorization|access_token/i;

/** Replace the values of secret-looking keys (recursively) with "[redacted]". */
export function redact(value: unknown, depth = 0): unknown {
  if (depth > 6 || value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = SECRET_KEY.test(k) ? "[redacted]" : redact(v, depth + 1);
  return out;
}

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  level?: LogLevel;
  /** `json` (default): one JSON object per line; `pretty`: a readable line; `silent`: nothing. */
  format?: "json" | "pretty" | "silent";
  /** Where lines go. Default: process.stdout. */
  write?: (line: string) => void;
  /** Fields added to every line. */
  base?: Record<string, unknown>;
}

/** Create a logger. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const min = LEVELS[options.level ?? "info"];
  const format = options.format ?? "json";
  const write = options.write ?? ((line: string) => process.stdout.write(line));
  const make = (base: Record<string, unknown>): Logger => {
    const emit = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => {
      if (format === "silent" || LEVELS[level] < min) return;
      const all = redact({ ...base, ...fields }) as Record<string, unknown>;
      if (format === "pretty") {
        const time = new Date().toISOString().slice(11, 23);
        const extra = Object.entries(all)
          .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
          .join(" ");
        write(`${time} ${level.padEnd(5)} ${msg}${extra ? `  ${extra}` : ""}\n`);
      } else {
        write(`${JSON.stringify({ time: Date.now(), level, msg, ...all })}\n`);
      }
    };
    return {
      debug: (m, f) => emit("debug", m, f),
      info: (m, f) => emit("info", m, f),
      warn: (m, f) => emit("warn", m, f),
      error: (m, f) => emit("error", m, f),
      child: (f) => make({ ...base, ...f }),
    };
  };
  return make(options.base ?? {});
}

/** A logger that drops everything. */
export const silentLogger: Logger = createLogger({ format: "silent" });
