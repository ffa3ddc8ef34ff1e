/**
 * The media store: WeCom media fetched when a message arrives (`media/get`, or an AI bot's
 * encrypted URL, decrypted), kept on disk, and served at `{publicUrl}/media/{tenant}/{id}` through
 * signed, expiring links (HMAC-SHA256 over tenant, id and expiry).
 *
 * Files are streamed both ways: a download is written to a temporary file chunk by chunk and
 * renamed when complete (never held whole in memory), and a served file is read from disk as a
 * stream. An AI bot's file is decrypted as it streams. Where the bytes live is a {@link MediaFiles}
 * (`media-files.ts`): by default {@link FolderMediaFiles} over `mediaDir`, a local folder or one
 * folder shared by every replica; this module keeps the rows (through the store) and the links.
 *
 * Served files never run script on the gateway's origin: every answer carries
 * `X-Content-Type-Options: nosniff` and a sandboxing `Content-Security-Policy`; only image, audio
 * and video types that browsers do not execute ({@link INLINE_TYPES}) are served inline, with their
 * type; anything else is served as `application/octet-stream` with `Content-Disposition: attachment`
 * and its file name (RFC 6266: an ASCII `filename` and a UTF-8 `filename*`).
 * @module
 */
import { createDecipheriv, createHmac } from "node:crypto";
import type { Readable } from "node:stream";
import { BridgeError, WeComCryptoErrcode as E, WeComCryptoError } from "../errors.js";
import type { MediaRow, Store } from "../store/types.js";
import { PKCS7_BLOCK_SIZE, parseEncodingAESKey, pkcs7Unpad, safeEqual } from "../wecom/crypto.js";
import { FolderMediaFiles, MEDIA_ID as ID, type MediaFiles } from "./media-files.js";

/** Options of {@link MediaStore}. */
export interface MediaStoreOptions {
  /** The media folder (`mediaDir`): where the default {@link FolderMediaFiles} keeps files; unused when `files` is given. */
  dir: string;
  /** Where the bytes live; default `new FolderMediaFiles(dir)`. */
  files?: MediaFiles;
  /** The gateway's public base URL, that links start with. */
  publicUrl: string;
  /** The key that signs links (HMAC-SHA256). */
  secret: string;
  /** How long a link stays valid, in seconds. */
  ttlSec: number;
  /** Where media rows are kept, and where messages are looked up (an erased message keeps no media). */
  store: Store;
  /** The clock (ms); default `Date.now`. */
  now?: () => number;
}

/** The id of the `index`-th media of a stored message. */
export function mediaId(messageSeq: number, index: number): string {
  return `m${messageSeq}-${index}`;
}

/**
 * Delete the file of a media row (retention, erasure) from the media folder `dir`
 * ({@link FolderMediaFiles.remove}).
 * @returns true when a file was removed; false when there was none (an unavailable media, or
 *   already gone)
 */
export async function removeMediaFile(dir: string, row: Pick<MediaRow, "tenant" | "id">): Promise<boolean> {
  return new FolderMediaFiles(dir).remove(row.tenant, row.id);
}

/**
 * Delete the partial downloads (`*.tmp`, and agents' files on their way to WeCom, `*.part` in
 * `outbound-tmp`) a killed process left in `dir`, when last written before `before` (ms): a
 * download in progress keeps writing its file, so it is never touched
 * ({@link FolderMediaFiles.sweepPartial}).
 * @returns how many were removed
 */
export async function sweepPartialFiles(dir: string, before: number): Promise<number> {
  return new FolderMediaFiles(dir).sweepPartial(before);
}

/**
 * Why a media is not available; kept in its media row, and shown to the 全媒体's agents in `Tag`.
 * - `refused`: WeCom gave a final answer (e.g. 40007, an expired media_id), or the file was larger
 *   than `limits.mediaBytes`, or could not be decrypted: retrying would not help;
 * - `deadline`: every try failed for a reason that may pass (an untrusted IP, a network error, …)
 *   until `delivery.mediaDeadlineSec` ran out;
 * - `none`: the message gives nothing the gateway can fetch (e.g. a session-archive sdkfileid).
 */
export interface MediaUnavailable {
  reason: "refused" | "deadline" | "none";
  /** WeCom's errcode, when WeCom answered one. */
  errcode?: number;
  /** The last error, one readable line without secrets. */
  error?: string;
}

/** An unavailable media's row keeps its reason in `contentType` (`x-unavailable/REASON[; errcode=N]`) and its error in `fileName`. */
const UNAVAILABLE = /^x-unavailable\/(refused|deadline|none)(?:; errcode=(-?\d+))?$/;

/** The reason recorded in an unavailable media's row; undefined for a stored file. */
export function unavailableOf(row: MediaRow): MediaUnavailable | undefined {
  if (row.size >= 0) return undefined;
  const m = UNAVAILABLE.exec(row.contentType);
  if (!m) return { reason: "refused" }; // rows written before reasons were recorded
  const out: MediaUnavailable = { reason: m[1] as MediaUnavailable["reason"] };
  if (m[2] !== undefined) out.errcode = Number(m[2]);
  if (row.fileName !== "") out.error = row.fileName;
  return out;
}

/** What a download gives {@link MediaStore.saveStream}. */
export interface MediaMeta {
  /** The type the source declared; `application/octet-stream` (or empty) is sniffed from the first bytes. */
  contentType: string;
  fileName: string;
}

/** Media types served inline: images, audio and video that browsers show but never execute. */
export const INLINE_TYPES: ReadonlySet<string> = new Set([
  "image/png",
  "image/jpeg",
  "image/gif",
  "image/webp",
  "image/bmp",
  "image/avif",
  "image/x-icon",
  "image/vnd.microsoft.icon",
  "audio/amr",
  "audio/mpeg",
  "audio/mp3",
  "audio/mp4",
  "audio/aac",
  "audio/ogg",
  "audio/opus",
  "audio/wav",
  "audio/x-wav",
  "audio/wave",
  "audio/webm",
  "audio/silk",
  "video/mp4",
  "video/webm",
  "video/ogg",
  "video/quicktime",
  "video/3gpp",
]);

const TYPE = /^[a-z0-9][a-z0-9!#$&^_.+-]*\/[a-z0-9][a-z0-9!#$&^_.+-]*$/;

/** The essence (`type/subtype`, lower case, no parameters) of a Content-Type; octet-stream when malformed. */
export function typeEssence(contentType: string): string {
  const essence = (contentType.split(";")[0] ?? "").trim().toLowerCase();
  return TYPE.test(essence) ? essence : "application/octet-stream";
}

/** A sandbox for anything a browser might still render: no script, no plugins, no requests, a unique origin. */
export const MEDIA_CSP = "default-src 'none'; style-src 'unsafe-inline'; sandbox";

/** RFC 8187 (5987) `value-chars` of a UTF-8 string: everything but attr-char percent-encoded. */
function extValue(s: string): string {
  return encodeURIComponent(s).replace(/['()*]/g, (c) => `%${(c.charCodeAt(0) as number).toString(16).toUpperCase()}`);
}

/**
 * A `Content-Disposition` value per RFC 6266: an ASCII fallback `filename` (anything else, quotes,
 * backslashes and `%` replaced by `_`) for old clients, and the exact name as `filename*=UTF-8''…`.
 */
export function contentDisposition(type: "inline" | "attachment", fileName: string): string {
  const name = fileName === "" ? "file" : fileName;
  const fallback = name.replace(/[^\x20-\x7e]|["\\%]/g, "_");
  return `${type}; filename="${fallback}"; filename*=UTF-8''${extValue(name)}`;
}

/** The headers of a served media file (see the module comment). */
export function mediaHeaders(row: Pick<MediaRow, "contentType" | "fileName" | "id">, size: number): Record<string, string> {
  const essence = typeEssence(row.contentType);
  const inline = INLINE_TYPES.has(essence);
  return {
    "content-type": inline ? essence : "application/octet-stream",
    "content-length": String(size),
    "content-disposition": contentDisposition(inline ? "inline" : "attachment", row.fileName || row.id),
    "x-content-type-options": "nosniff",
    "content-security-policy": MEDIA_CSP,
    "cache-control": "private, max-age=3600",
  };
}

/** Guess an image type from its first bytes (AI-bot media comes as `application/octet-stream`). */
export function sniffType(head: Uint8Array): string {
  if (head[0] === 0x89 && head[1] === 0x50 && head[2] === 0x4e && head[3] === 0x47) return "image/png";
  if (head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff) return "image/jpeg";
  if (head[0] === 0x47 && head[1] === 0x49 && head[2] === 0x46) return "image/gif";
  return "application/octet-stream";
}

/**
 * Decrypt an AI bot's media as it streams: AES-256-CBC with the bot's EncodingAESKey (IV: its first
 * 16 bytes) and WeCom's 32-byte PKCS#7 padding, the same as `decryptBotMedia` but holding only the
 * last block back instead of the whole file.
 * @throws WeComCryptoError when the length is not a multiple of the AES block or the padding is wrong
 */
export async function* decryptBotMediaStream(encodingAESKey: string, source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): AsyncGenerator<Buffer> {
  const key = parseEncodingAESKey(encodingAESKey);
  const decipher = createDecipheriv("aes-256-cbc", key, key.subarray(0, 16)).setAutoPadding(false);
  let held: Buffer = Buffer.alloc(0);
  let total = 0;
  for await (const chunk of source) {
    total += chunk.length;
    const plain = decipher.update(chunk);
    const out = held.length > 0 ? Buffer.concat([held, plain]) : plain;
    // the padding is at most one 32-byte block: keep that much back until the end
    if (out.length > PKCS7_BLOCK_SIZE) {
      yield out.subarray(0, out.length - PKCS7_BLOCK_SIZE);
      held = out.subarray(out.length - PKCS7_BLOCK_SIZE);
    } else held = out;
  }
  if (total === 0 || total % 16 !== 0) throw new WeComCryptoError(E.Decrypt, "media length is not a multiple of the AES block");
  let last: Buffer;
  try {
    last = Buffer.concat([held, decipher.final()]);
  } catch {
    throw new WeComCryptoError(E.Decrypt, "AES decryption of media failed");
  }
  const tail = pkcs7Unpad(last);
  if (tail.length > 0) yield tail;
}

/** A media answer: a stored file as a stream, or the JSON error the gateway has always answered. */
export interface MediaResponse {
  status: number;
  headers: Record<string, string>;
  body: string | Readable;
}

const jsonError = (status: number, errcode: string, errmsg: string): MediaResponse => ({
  status,
  headers: { "content-type": "application/json; charset=utf-8", "x-content-type-options": "nosniff", "cache-control": "no-store" },
  body: JSON.stringify({ errcode, errmsg }),
});

/** The message of a media was erased while the media was being fetched: nothing was kept. */
export class MediaGoneError extends BridgeError {
  /** @param message one readable line */
  constructor(message: string) {
    super("media_gone", message);
  }
}

/** Media: the files (through a {@link MediaFiles}), their records, and signed links. */
export class MediaStore {
  readonly #o: MediaStoreOptions;
  /** Where the bytes live: `options.files`, or a {@link FolderMediaFiles} over `options.dir`. */
  readonly files: MediaFiles;

  /** @param options where files go and how links are signed */
  constructor(options: MediaStoreOptions) {
    this.#o = options;
    this.files = options.files ?? new FolderMediaFiles(options.dir);
  }

  #now(): number {
    return (this.#o.now ?? Date.now)();
  }

  #sign(tenant: string, id: string, expires: number): string {
    return createHmac("sha256", this.#o.secret).update(`${tenant}\n${id}\n${expires}`).digest("hex").slice(0, 32);
  }

  /**
   * Write a file as it arrives and record it: the chunks go to a temporary file, renamed into place
   * once complete ({@link MediaFiles.write}), then the row is stored. When the source fails (too
   * large, a network error, bad decryption) the temporary file is removed and the error is thrown
   * as it came. Idempotent: the same id overwrites the same bytes, and a second row for an id is
   * ignored.
   */
  async saveStream(tenant: string, id: string, messageSeq: number | null, source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, meta: MediaMeta): Promise<MediaRow> {
    if (!ID.test(id)) throw new Error(`invalid media id ${JSON.stringify(id)}`);
    // a temporary name of its own: two attempts of one entry (an expired lease) never write the same file
    const { size, head } = await this.files.write(tenant, id, source);
    const declared = typeEssence(meta.contentType);
    const contentType = declared === "application/octet-stream" ? sniffType(head) : meta.contentType;
    const row: MediaRow = { tenant, id, messageSeq, contentType, fileName: meta.fileName || id, size, createdAt: this.#now() };
    // the conversation may have been erased while the file came in: keep nothing of it
    if (messageSeq !== null && (await this.#o.store.getMessage(messageSeq)) === undefined) {
      await this.files.remove(tenant, id);
      throw new MediaGoneError(`message ${messageSeq} was erased while its media was being fetched`);
    }
    await this.#o.store.putMedia(row);
    return row;
  }

  /** Save a file held in memory (small files, tests) and its record. */
  async save(tenant: string, id: string, messageSeq: number | null, bytes: Uint8Array, contentType: string, fileName: string): Promise<MediaRow> {
    return this.saveStream(tenant, id, messageSeq, [bytes], { contentType, fileName });
  }

  /** Record that a media could not be fetched (size -1) and why, so delivery goes on without it. */
  async markUnavailable(tenant: string, id: string, messageSeq: number | null, why: MediaUnavailable = { reason: "refused" }): Promise<void> {
    const contentType = `x-unavailable/${why.reason}${why.errcode !== undefined ? `; errcode=${why.errcode}` : ""}`;
    const error = (why.error ?? "").replace(/[\r\n]+/g, " ").slice(0, 500);
    await this.#o.store.putMedia({ tenant, id, messageSeq, contentType, fileName: error, size: -1, createdAt: this.#now() });
  }

  /** A signed, expiring download link. */
  link(tenant: string, id: string): string {
    const expires = Math.floor(this.#now() / 1000) + this.#o.ttlSec;
    return `${this.#o.publicUrl}/media/${encodeURIComponent(tenant)}/${id}?e=${expires}&s=${this.#sign(tenant, id, expires)}`;
  }

  /**
   * Check a link and open the file as a stream.
   * @returns the record, the size and a stream of the bytes, or a reason: `expired`,
   *   `bad_signature`, `not_found`
   */
  async open(
    tenant: string,
    id: string,
    e: string | null,
    s: string | null,
  ): Promise<{ row: MediaRow; size: number; stream: Readable } | { error: "expired" | "bad_signature" | "not_found" }> {
    if (!ID.test(id) || e === null || s === null || !/^\d{1,12}$/.test(e)) return { error: "bad_signature" };
    if (!safeEqual(this.#sign(tenant, id, Number(e)), s)) return { error: "bad_signature" };
    if (Number(e) * 1000 < this.#now()) return { error: "expired" };
    const row = await this.#o.store.getMedia(tenant, id);
    if (row === undefined || row.size < 0) return { error: "not_found" };
    // as before the files were an interface: a file that cannot be read is not found
    const file = await this.files.open(tenant, id).catch(() => undefined);
    if (file === undefined) return { error: "not_found" };
    return { row, size: file.size, stream: file.stream };
  }

  /**
   * `GET /media/{tenant}/{id}?e&s`: the file behind a signed, expiring link, streamed, with the
   * headers of {@link mediaHeaders}; 403 (`bad_signature`, `expired`) or 404 (`not_found`) JSON.
   */
  async serve(tenant: string, id: string, e: string | null, s: string | null): Promise<MediaResponse> {
    const r = await this.open(tenant, id, e, s);
    if ("error" in r) {
      const status = r.error === "not_found" ? 404 : 403;
      return jsonError(status, r.error, r.error === "expired" ? "this media link has expired" : r.error === "not_found" ? "no such media" : "bad media link signature");
    }
    return { status: 200, headers: mediaHeaders(r.row, r.size), body: r.stream };
  }
}
