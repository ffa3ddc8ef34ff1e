/**
 * An agent's media for WeCom: the 全媒体 sends a URL (`Content` of an image, voice, video or file
 * message); WeCom wants a `media_id` from `media/upload`. This module downloads the URL under the
 * SSRF policy of {@link fetchAgentMedia} (the host of `omni.baseUrl` and `omni.mediaHosts` may be
 * private, nothing else), decides by the file's bytes which type WeCom will take, uploads it, and
 * remembers the media_id by content so that the same file is uploaded once while WeCom keeps it.
 *
 * - **Type by the bytes** (magic numbers, never the URL or the Content-Type): an image must be JPG or
 *   PNG and at most 10 MB, a voice AMR (`#!AMR\n`) and at most 2 MB, a video MP4 (an ISO base media
 *   file: a `ftyp` box first) and at most 10 MB. Anything WeCom would not take as the type the agent
 *   chose goes as a `file` (at most 20 MB): a GIF, WebP or BMP image, an MP3 voice, a 15 MB video.
 * - **Refusals** are final ({@link MediaRefusedError}, `retryable = false`): a file of 5 bytes or
 *   less, or over 20 MB (WeCom takes neither as any type). A URL the policy refuses is final too
 *   (`AgentMediaError` `media_url_refused`); network failures are transient (its `retryable`).
 * - **Cache**: by (corp, type, SHA-256) in the store's shared state (`upload:{type}:{sha256}`; a
 *   `file` also by its name, which WeCom shows), reused until 3 days minus an hour after WeCom's
 *   `created_at` (a media_id lives 3 days). The download is not saved: the hash is only known once
 *   the bytes came.
 * - **File names** come from the agent's server (`Content-Disposition`), else the URL's last path
 *   segment, else `file`; control characters, quotes and folders are removed, long names shortened
 *   (the extension kept); an image, voice or video gets the extension of its real format, a file
 *   without extension the one its bytes show (when they show one).
 * - The download goes to `{mediaDir}/outbound-tmp` and is removed in every case.
 * @module
 */
import { open, rm } from "node:fs/promises";
import { join } from "node:path";
import { AgentMediaError, fetchAgentMedia } from "../../clients/agent-media.js";
import type { WeComCredentials } from "../../clients/wecom.js";
import { BridgeError } from "../../errors.js";
import { keyHash, type OutboundContext } from "./types.js";

/** The media types of `media/upload` (and of the message types that carry a media_id). */
export type WeComMediaType = "image" | "voice" | "video" | "file";

/** An agent's media, uploaded: what a message needs to carry it. */
export interface PreparedMedia {
  /** The type WeCom took it as: the agent's, or `file` when WeCom would not take it as that. */
  type: WeComMediaType;
  /** WeCom's media_id (valid 3 days from its upload). */
  mediaId: string;
  /** The file name it was uploaded with. */
  fileName: string;
}

const MB = 1024 * 1024;

/** WeCom's upload limits per type, bytes: image 10 MB, voice 2 MB, video 10 MB, file 20 MB. */
export const WECOM_MEDIA_MAX_BYTES: Readonly<Record<WeComMediaType, number>> = { image: 10 * MB, voice: 2 * MB, video: 10 * MB, file: 20 * MB };

/** Every uploaded file must be larger than this many bytes. */
export const WECOM_MEDIA_MIN_BYTES_EXCLUSIVE = 5;

/** How long WeCom keeps a temporary media_id, ms (3 days). */
export const MEDIA_ID_TTL_MS = 3 * 24 * 3600_000;

/** A cached media_id is reused until this long before it expires, ms (1 hour: a send may be retried, and clocks differ). */
export const MEDIA_ID_SAFETY_MS = 3600_000;

/** The longest file name kept, characters (the extension included). */
export const MAX_FILE_NAME_CHARS = 100;

/** An agent's file WeCom cannot take as any type (too small, too large): final, reported to the agent. */
export class MediaRefusedError extends BridgeError {
  /** Always false: the same file will be refused again. */
  readonly retryable = false;

  /** @param message one readable line, without the URL's query or credentials */
  constructor(message: string) {
    super("media_refused", message);
  }
}

/** A format recognised by its first bytes. */
export interface SniffedFormat {
  /** Short name, also the file extension: `jpg`, `png`, `gif`, `webp`, `bmp`, `amr`, `mp4`, `mp3`, `pdf`, `zip`. */
  ext: string;
  /** Its Content-Type. */
  contentType: string;
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** How many leading bytes {@link sniffFormat} needs at most. */
export const SNIFF_BYTES = 16;

/**
 * The format of a file by its first bytes (magic numbers), for the formats WeCom's rules name and a
 * few common others (to give a file without extension one); undefined when unknown.
 * @param head at least the first {@link SNIFF_BYTES} bytes (fewer when the file is shorter)
 */
export function sniffFormat(head: Uint8Array): SniffedFormat | undefined {
  const b = head;
  const ascii = (from: number, to: number) => String.fromCharCode(...b.subarray(from, to));
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return { ext: "jpg", contentType: "image/jpeg" };
  if (b.length >= 8 && PNG_SIGNATURE.every((v, i) => b[i] === v)) return { ext: "png", contentType: "image/png" };
  if (b.length >= 6 && (ascii(0, 6) === "GIF87a" || ascii(0, 6) === "GIF89a")) return { ext: "gif", contentType: "image/gif" };
  if (b.length >= 12 && ascii(0, 4) === "RIFF" && ascii(8, 12) === "WEBP") return { ext: "webp", contentType: "image/webp" };
  if (b.length >= 6 && ascii(0, 6) === "#!AMR\n") return { ext: "amr", contentType: "audio/amr" };
  if (b.length >= 12 && ascii(4, 8) === "ftyp") return { ext: "mp4", contentType: "video/mp4" };
  if (b.length >= 5 && ascii(0, 5) === "%PDF-") return { ext: "pdf", contentType: "application/pdf" };
  if (b.length >= 4 && b[0] === 0x50 && b[1] === 0x4b && b[2] === 0x03 && b[3] === 0x04) return { ext: "zip", contentType: "application/zip" };
  if (b.length >= 3 && ascii(0, 3) === "ID3") return { ext: "mp3", contentType: "audio/mpeg" };
  if (b.length >= 2 && b[0] === 0xff && ((b[1] ?? 0) & 0xe0) === 0xe0 && ((b[1] ?? 0) & 0x06) !== 0) return { ext: "mp3", contentType: "audio/mpeg" };
  if (b.length >= 6 && ascii(0, 2) === "BM") return { ext: "bmp", contentType: "image/bmp" };
  return undefined;
}

/** The formats WeCom takes for each typed media. */
const WECOM_FORMATS: Readonly<Record<Exclude<WeComMediaType, "file">, readonly string[]>> = { image: ["jpg", "png"], voice: ["amr"], video: ["mp4"] };

/**
 * The type WeCom will take a file as, when the agent sent it as `wanted`: `wanted` when the format
 * and size fit WeCom's rules for it, else `file`.
 * @throws MediaRefusedError when no type fits (5 bytes or less, more than 20 MB)
 */
export function wecomMediaType(wanted: WeComMediaType, format: SniffedFormat | undefined, size: number): WeComMediaType {
  if (size <= WECOM_MEDIA_MIN_BYTES_EXCLUSIVE) throw new MediaRefusedError(`the file has ${size} bytes: WeCom takes only files larger than ${WECOM_MEDIA_MIN_BYTES_EXCLUSIVE} bytes`);
  if (size > WECOM_MEDIA_MAX_BYTES.file) throw new MediaRefusedError(`the file has ${size} bytes: WeCom takes at most 20 MB (${WECOM_MEDIA_MAX_BYTES.file} bytes)`);
  if (wanted === "file") return "file";
  const fits = format !== undefined && WECOM_FORMATS[wanted].includes(format.ext) && size <= WECOM_MEDIA_MAX_BYTES[wanted];
  return fits ? wanted : "file";
}

const graphemes = new Intl.Segmenter(undefined, { granularity: "grapheme" });

/** The extension of a name (lower case, without the dot), or "" when it has none. */
function extensionOf(name: string): string {
  const dot = name.lastIndexOf(".");
  return dot > 0 && dot < name.length - 1 ? name.slice(dot + 1).toLowerCase() : "";
}

/**
 * A file name fit for WeCom: no control characters, quotes, backslashes or folders, trimmed, at
 * most {@link MAX_FILE_NAME_CHARS} characters (grapheme clusters; cut in the stem, never inside a
 * character or an emoji sequence, the extension kept); undefined when nothing is left.
 */
export function cleanFileName(name: string | undefined): string | undefined {
  if (name === undefined) return undefined;
  let base = name
    .replace(/[\u0000-\u001f\u007f-\u009f"\u2028\u2029]/g, "")
    .split(/[/\\]/)
    .pop()
    ?.trim()
    .replace(/^\.+/, "");
  if (base === undefined || base === "") return undefined;
  const chars = Array.from(graphemes.segment(base), (s) => s.segment);
  if (chars.length > MAX_FILE_NAME_CHARS) {
    const ext = extensionOf(base);
    const keep = ext !== "" && ext.length <= 10 ? base.slice(base.length - ext.length - 1) : "";
    base = `${chars.slice(0, MAX_FILE_NAME_CHARS - keep.length).join("").trimEnd()}${keep}`;
  }
  return base;
}

/** A JPEG is `.jpg` or `.jpeg`; other formats have one extension. */
function hasExtensionOf(name: string, format: SniffedFormat): boolean {
  const ext = extensionOf(name);
  return ext === format.ext || (format.ext === "jpg" && ext === "jpeg");
}

/**
 * The name a file is uploaded with: the agent server's name (cleaned), else `file`; an image,
 * voice or video named with the extension of its real format (added, or replacing a wrong one), a
 * file without extension given the one its bytes show.
 */
export function uploadFileName(name: string | undefined, type: WeComMediaType, format: SniffedFormat | undefined): string {
  const clean = cleanFileName(name) ?? "file";
  if (format === undefined || hasExtensionOf(clean, format)) return clean;
  if (type !== "file") {
    const ext = extensionOf(clean);
    const stem = ext !== "" ? clean.slice(0, clean.length - ext.length - 1) : clean;
    return cleanFileName(`${stem}.${format.ext}`) ?? `file.${format.ext}`;
  }
  return extensionOf(clean) === "" ? (cleanFileName(`${clean}.${format.ext}`) ?? clean) : clean;
}

/** A Content-Type fit for a multipart header: `type/subtype` of token characters, else octet-stream. */
function uploadContentType(format: SniffedFormat | undefined, served: string): string {
  if (format !== undefined) return format.contentType;
  const bare = served.split(";")[0]?.trim().toLowerCase() ?? "";
  return /^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+-]+$/.test(bare) ? bare : "application/octet-stream";
}

/** A cached upload, as kept in the shared state. */
interface CachedUpload {
  mediaId: string;
  /** When WeCom made it, ms. */
  createdAt: number;
  /** Reused until then, ms. */
  validUntil: number;
}

function isCachedUpload(v: unknown): v is CachedUpload {
  const o = v as Partial<CachedUpload> | undefined;
  return typeof o === "object" && o !== null && typeof o.mediaId === "string" && o.mediaId !== "" && typeof o.validUntil === "number";
}

/**
 * The shared state key of an uploaded file: `upload:{type}:{sha256}`, and for a `file` also a hash
 * of its name (WeCom shows the name it was uploaded with).
 */
export function uploadCacheKey(type: WeComMediaType, sha256: string, fileName: string): string {
  return type === "file" ? `upload:file:${sha256}:${keyHash(fileName).slice(0, 16)}` : `upload:${type}:${sha256}`;
}

/** The first bytes of a file. */
async function readHead(path: string): Promise<Uint8Array> {
  const fh = await open(path, "r");
  try {
    const buf = Buffer.alloc(SNIFF_BYTES);
    const { bytesRead } = await fh.read(buf, 0, SNIFF_BYTES, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** The hosts `fetchAgentMedia` may reach although they are not public: the host of `omni.baseUrl` and `omni.mediaHosts`. */
export function agentMediaAllowHosts(ctx: Pick<OutboundContext, "config">): string[] {
  const hosts: string[] = [];
  try {
    const base = new URL(ctx.config.omni.baseUrl);
    hosts.push(base.hostname.startsWith("[") ? base.hostname.slice(1, -1) : base.hostname);
  } catch {
    // config validation makes baseUrl a URL; nothing to add otherwise
  }
  hosts.push(...ctx.config.omni.mediaHosts);
  return hosts;
}

/**
 * The deadline of a whole agent's file download, ms: three times `delivery.timeoutMs` (30 s by
 * default: 20 MB at 700 KB/s), so a server that trickles bytes cannot hold a sender for ever.
 */
export function agentMediaDeadlineMs(timeoutMs: number): number {
  return 3 * timeoutMs;
}

/**
 * Download an agent's media URL, decide the type WeCom will take it as, and upload it (or reuse the
 * media_id of the same content uploaded within the last 3 days minus an hour).
 * @param ctx the outbound context (config, store, WeCom client, clock, log)
 * @param msgType the type the agent sent it as
 * @param url the agent's URL (`Content`)
 * @param credentials the app to upload as (a media_id serves every app of the corp)
 * @returns the type WeCom took it as (`msgType`, or `file`), its media_id and file name
 * @throws MediaRefusedError (final) for a file of 5 bytes or less or over 20 MB
 * @throws AgentMediaError `media_url_refused` (final), `media_fetch_failed` (see its `retryable`)
 * @throws WeComApiError from `media/upload`, of its class
 */
export function prepareAgentMedia(ctx: OutboundContext, msgType: WeComMediaType, url: string, credentials: WeComCredentials): Promise<PreparedMedia> {
  return prepareAgentMediaWith(ctx, msgType, url, { tenant: credentials.corpId, cachePrefix: "", upload: (file) => ctx.wecom.uploadMedia(credentials, file) });
}

/** Where an agent's file is uploaded: `media/upload` of an app, or an AI bot's long connection. */
export interface MediaUploader {
  /** The corp (the cache's tenant). */
  tenant: string;
  /** Prefix of the cache key (a bot's media_ids are its own: `aibot:{botId}:`). */
  cachePrefix: string;
  /** Upload the downloaded file; WeCom's media_id and created_at (seconds). */
  upload(file: { type: WeComMediaType; fileName: string; contentType: string; path: string; size: number }): Promise<{ mediaId: string; createdAt?: number }>;
}

/**
 * {@link prepareAgentMedia} with any uploader (an AI bot's long connection uploads in chunks).
 * @throws as {@link prepareAgentMedia}, and what `upload` throws
 */
export async function prepareAgentMediaWith(ctx: OutboundContext, msgType: WeComMediaType, url: string, uploader: MediaUploader): Promise<PreparedMedia> {
  let media: Awaited<ReturnType<typeof fetchAgentMedia>>;
  try {
    media = await fetchAgentMedia(url, {
      allowHosts: agentMediaAllowHosts(ctx),
      maxBytes: WECOM_MEDIA_MAX_BYTES.file,
      timeoutMs: ctx.config.delivery.timeoutMs,
      destDir: join(ctx.config.mediaDir, "outbound-tmp"),
      // the whole download, not only each gap between chunks, has a deadline (a trickling server)
      signal: AbortSignal.timeout(agentMediaDeadlineMs(ctx.config.delivery.timeoutMs)),
    });
  } catch (e) {
    if (e instanceof AgentMediaError && e.code === "media_too_large") {
      throw new MediaRefusedError(`the file is larger than 20 MB (${WECOM_MEDIA_MAX_BYTES.file} bytes), the most WeCom takes`);
    }
    throw e;
  }
  try {
    const format = sniffFormat(await readHead(media.path));
    const type = wecomMediaType(msgType, format, media.size);
    const fileName = uploadFileName(media.fileName, type, format);
    const tenant = uploader.tenant;
    const key = `${uploader.cachePrefix}${uploadCacheKey(type, media.sha256, fileName)}`;
    const cached = await ctx.store.getState(tenant, key, ctx.now());
    if (isCachedUpload(cached) && cached.validUntil > ctx.now()) {
      ctx.log.debug("agent media: media_id reused", { type, bytes: media.size, sha256: media.sha256.slice(0, 12) });
      return { type, mediaId: cached.mediaId, fileName };
    }
    const startedAt = ctx.now();
    const uploaded = await uploader.upload({ type, fileName, contentType: uploadContentType(format, media.contentType), path: media.path, size: media.size });
    // WeCom's created_at (seconds) when it gives one, but never later than our own start: a clock
    // ahead of ours must not make us keep a media_id longer than WeCom does
    const createdAt = uploaded.createdAt !== undefined ? Math.min(uploaded.createdAt * 1000, startedAt) : startedAt;
    const validUntil = createdAt + MEDIA_ID_TTL_MS - MEDIA_ID_SAFETY_MS;
    await ctx.store.updateState(tenant, key, null, ctx.now(), () => ({ value: { mediaId: uploaded.mediaId, createdAt, validUntil } satisfies CachedUpload, expiresAt: validUntil }));
    ctx.log.debug("agent media uploaded", { type, wanted: msgType, bytes: media.size, sha256: media.sha256.slice(0, 12) });
    return { type, mediaId: uploaded.mediaId, fileName };
  } finally {
    await rm(media.path, { force: true });
  }
}
