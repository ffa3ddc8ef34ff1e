/**
 * Temporary media of the WeCom simulator: `media/upload` (multipart field `media`, WeCom's size
 * and format limits per type), `media/get` (Content-Disposition as WeCom writes it, ranges), media
 * put by tests, and the AI bot's encrypted media URLs (valid 5 minutes).
 * @module
 */
import { encryptBotMedia } from "../../wecom/crypto.js";
import { type Answer, type Handler, type SimBot, type SimContext, seconds } from "./context.js";
import { SimApiError } from "./errors.js";
import { multipartBoundary, parseMultipart } from "./multipart.js";
import { type UploadType, WECOM_RULES } from "./rules.js";
import type { TokenService } from "./tokens.js";
import type { WeComSimMedia } from "./types.js";

/** The errcode of a file over its type's size limit. */
const SIZE_ERRCODES: Record<UploadType, number> = { image: 40009, voice: 40006, video: 40011, file: 40006 };

/** A header value carrying UTF-8 text as raw bytes (what WeCom sends for non-ASCII file names). */
function rawUtf8Header(text: string): string {
  return Buffer.from(text.replace(/["\r\n\\]/g, "_"), "utf8").toString("latin1");
}

/** Image formats WeCom accepts for uploads: JPG and PNG. */
function isJpgOrPng(b: Buffer): boolean {
  return (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) || b.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
}

/** Video WeCom accepts for uploads: MP4 (an ISO base media file: a `ftyp` box first). */
function isMp4(b: Buffer): boolean {
  return b.length >= 12 && b.toString("latin1", 4, 8) === "ftyp";
}

/** The temporary media store and its APIs. */
export class MediaService {
  readonly #ctx: SimContext;
  readonly #tokens: TokenService;
  readonly #media = new Map<string, WeComSimMedia>();
  readonly #botMedia = new Map<string, { bytes: Buffer; expiresAt: number }>();

  /**
   * @param ctx the shared simulator context
   * @param tokens access-token checks
   */
  constructor(ctx: SimContext, tokens: TokenService) {
    this.#ctx = ctx;
    this.#tokens = tokens;
  }

  /** True when a media_id exists and is within its 3 days. */
  exists = (id: string): boolean => {
    const m = this.#media.get(id);
    return m !== undefined && this.#ctx.now() - m.createdAt < WECOM_RULES.media.ttlMs;
  };

  /** Store a temporary media file (valid 3 days per the clock) and return its media_id. */
  put(bytes: Uint8Array, opts: { contentType: string; filename: string; type?: UploadType; disposition?: "raw" | "rfc5987" }): string {
    const id = this.#ctx.ids.mediaId();
    const type = opts.type ?? (opts.contentType.startsWith("image/") ? "image" : opts.contentType.startsWith("video/") ? "video" : opts.contentType.startsWith("audio/") ? "voice" : "file");
    const media: WeComSimMedia = { bytes: Buffer.from(bytes), contentType: opts.contentType, filename: opts.filename, type, createdAt: this.#ctx.now() };
    if (opts.disposition !== undefined) media.disposition = opts.disposition;
    this.#media.set(id, media);
    return id;
  }

  /** A stored media file, or undefined. */
  get(mediaId: string): WeComSimMedia | undefined {
    return this.#media.get(mediaId);
  }

  /** Serve bytes as WeCom serves an AI bot's media: encrypted with the bot's key, at a URL valid 5 minutes. */
  putBot(bot: SimBot, bytes: Uint8Array): string {
    const key = this.#ctx.ids.responseCode();
    this.#botMedia.set(key, { bytes: encryptBotMedia(bot.cfg.encodingAESKey, bytes), expiresAt: this.#ctx.now() + WECOM_RULES.bot.mediaTtlMs });
    return `${this.#ctx.baseUrl()}/aibot-media/${key}?sign=q-sign-algorithm%3Dsha1%26q-sign-time%3D${seconds(this.#ctx)}`;
  }

  /** The answer to `GET /aibot-media/{key}`: the encrypted bytes, 404 unknown, 403 expired (as the storage answers). */
  serveBot(key: string): Answer {
    const m = this.#botMedia.get(key);
    if (m === undefined) {
      return { status: 404, headers: { "Content-Type": "application/xml" }, body: Buffer.from('<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>') };
    }
    if (this.#ctx.now() > m.expiresAt) {
      return { status: 403, headers: { "Content-Type": "application/xml" }, body: Buffer.from('<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>') };
    }
    return { status: 200, headers: { "Content-Type": "application/octet-stream" }, body: m.bytes };
  }

  /** The routes of this family. */
  readonly routes: Record<string, Handler> = {
    "media/upload": (ctx) => this.#upload(ctx),
    "media/get": (ctx) => this.#get(ctx),
  };

  #upload({ req, url, body }: Parameters<Handler>[0]): Answer {
    this.#tokens.auth(url);
    const type = url.searchParams.get("type") ?? "";
    if (!Object.hasOwn(WECOM_RULES.media.types, type)) throw new SimApiError(40005, "invalid media type");
    const t = type as UploadType;
    const max = WECOM_RULES.media.types[t].maxBytes;
    const boundary = multipartBoundary(req.headers["content-type"]);
    const parts = boundary === undefined ? undefined : parseMultipart(body, boundary);
    const part = parts?.find((p) => p.name === "media");
    if (part === undefined || part.data.length === 0) throw new SimApiError(44001, "empty media data");
    if (part.data.length <= WECOM_RULES.media.minBytesExclusive) throw new SimApiError(40006, "invalid file size, a file must be larger than 5 bytes");
    if (part.data.length > max) throw new SimApiError(SIZE_ERRCODES[t], `invalid ${type} size, ${part.data.length} bytes > ${max}`);
    if (t === "image" && !isJpgOrPng(part.data)) throw new SimApiError(40123, "invalid image format, JPG or PNG only");
    if (t === "voice" && !part.data.subarray(0, 6).equals(Buffer.from("#!AMR\n"))) throw new SimApiError(301017, "invalid voice format, AMR only");
    if (t === "video" && !isMp4(part.data)) throw new SimApiError(40004, "invalid media type, video must be MP4");
    const now = this.#ctx.now();
    const filename = part.filename ?? "media";
    const contentType = part.contentType ?? "application/octet-stream";
    const mediaId = this.#ctx.ids.mediaId();
    this.#media.set(mediaId, { bytes: Buffer.from(part.data), contentType, filename, type, createdAt: now });
    this.#ctx.record({ api: "media/upload", body: { type, media_id: mediaId, filename, content_type: contentType, size: part.data.length }, at: now, delivered: true });
    return { json: { errcode: 0, errmsg: "", type, media_id: mediaId, created_at: String(Math.floor(now / 1000)) } };
  }

  #get({ req, url }: Parameters<Handler>[0]): Answer {
    this.#tokens.auth(url);
    const id = url.searchParams.get("media_id");
    if (id === null || id === "") throw new SimApiError(41006, "media_id missing");
    const m = this.#media.get(id);
    if (m === undefined || !this.exists(id)) throw new SimApiError(40007, "invalid media_id");
    const headers: Record<string, string | number> = {
      "Content-Type": m.contentType,
      "Content-Disposition":
        m.disposition === "rfc5987"
          ? `attachment; filename="${m.filename.replace(/[^\x20-\x7e]|["\\]/g, "_")}"; filename*=UTF-8''${encodeURIComponent(m.filename)}`
          : `attachment; filename="${rawUtf8Header(m.filename)}"`,
      "Accept-Ranges": "bytes",
      "Cache-Control": "no-cache, must-revalidate",
    };
    const range = req.headers.range;
    if (range !== undefined) {
      const r = /^bytes=(\d*)-(\d*)$/.exec(range.trim());
      const size = m.bytes.length;
      let start = r?.[1] ? Number(r[1]) : undefined;
      let end = r?.[2] ? Number(r[2]) : undefined;
      if (start === undefined && end !== undefined) {
        start = Math.max(0, size - end);
        end = size - 1;
      }
      start ??= 0;
      end = Math.min(end ?? size - 1, size - 1);
      if (r === null || start > end || start >= size) {
        return { status: 416, headers: { "Content-Range": `bytes */${size}` }, body: Buffer.alloc(0) };
      }
      return { status: 206, headers: { ...headers, "Content-Range": `bytes ${start}-${end}/${size}` }, body: m.bytes.subarray(start, end + 1) };
    }
    return { status: 200, headers, body: m.bytes };
  }
}
