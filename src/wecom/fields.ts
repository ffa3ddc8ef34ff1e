/**
 * Small readers shared by the decoders: typed access to loosely typed JSON and XML values, with
 * one readable DecodeError when a required field is missing.
 * @module
 */
import { DecodeError } from "../errors.js";

/** A JSON object as decoded by JSON.parse. */
export type JsonObject = { [key: string]: unknown };

/** True for a non-null, non-array object. */
export function isObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A string field, or undefined when absent/null; numbers are turned into their decimal text. */
export function optString(obj: JsonObject, key: string): string | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v === "string") return v;
  if (typeof v === "number" || typeof v === "bigint" || typeof v === "boolean") return String(v);
  return undefined;
}

/** A string field that must be present. */
export function reqString(format: string, obj: JsonObject, key: string): string {
  const v = optString(obj, key);
  if (v === undefined) throw new DecodeError(format, `missing field "${key}"`);
  return v;
}

/** A number from a number or a numeric string; undefined when absent, null, empty or not numeric. */
export function optNumber(obj: JsonObject, key: string): number | undefined {
  return toNumber(obj[key]);
}

/** Convert a number or numeric string to a number; undefined otherwise. */
export function toNumber(v: unknown): number | undefined {
  if (typeof v === "number") return Number.isFinite(v) ? v : undefined;
  if (typeof v === "string") {
    const t = v.trim();
    if (t === "") return undefined;
    const n = Number(t);
    return Number.isFinite(n) ? n : undefined;
  }
  return undefined;
}

/** A number field that must be present. */
export function reqNumber(format: string, obj: JsonObject, key: string): number {
  const v = optNumber(obj, key);
  if (v === undefined) throw new DecodeError(format, `missing or non-numeric field "${key}"`);
  return v;
}

/** An object field, or undefined. */
export function optObject(obj: JsonObject, key: string): JsonObject | undefined {
  const v = obj[key];
  return isObject(v) ? v : undefined;
}

/** An array field, or [] when absent. */
export function optArray(obj: JsonObject, key: string): unknown[] {
  const v = obj[key];
  return Array.isArray(v) ? v : [];
}

/** Seconds since the epoch to milliseconds. */
export function secondsToMs(seconds: number): number {
  return seconds * 1000;
}

/** Drop keys whose value is undefined (so decoded objects compare and serialize cleanly). */
export function compact<T extends object>(obj: T): T {
  for (const k of Object.keys(obj)) {
    if ((obj as Record<string, unknown>)[k] === undefined) delete (obj as Record<string, unknown>)[k];
  }
  return obj;
}

/**
 * Parse JSON text into an object, with one readable DecodeError for bad JSON or a non-object.
 * @param format named in the error
 */
export function parseJsonObject(format: string, text: string): JsonObject {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new DecodeError(format, `not valid JSON (${(e as Error).message.split("\n")[0]})`);
  }
  if (!isObject(v)) throw new DecodeError(format, "expected a JSON object");
  return v;
}

/** UTF-8 byte length of a string. */
export function utf8Length(s: string): number {
  return Buffer.byteLength(s, "utf8");
}
