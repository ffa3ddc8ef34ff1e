/**
 * The media store: WeCom media fetched when a message arrives (`media/get`, or an AI bot's
 * encrypted URL, decrypted), kept on disk, and served at `{publicUrl}/media/{tenant}/{id}` through
 * signed, expiring links (HMAC-SHA256 over tenant, id and expiry).
 * @module
 */
import { createHmac } from "node:crypto";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { safeEqual } from "../wecom/crypto.js";
import type { MediaRow, Store } from "../store/types.js";

/** Options of {@link MediaStore}. */
export interface MediaStoreOptions {
  dir: string;
  publicUrl: string;
  secret: string;
  ttlSec: number;
  store: Store;
  now?: () => number;
}

const ID = /^[A-Za-z0-9_-]{1,128}$/;

/** The id of the `index`-th media of a stored message. */
export function mediaId(messageSeq: number, index: number): string {
  return `m${messageSeq}-${index}`;
}

/** Media files on disk, their records, and signed links. */
export class MediaStore {
  readonly #o: MediaStoreOptions;

  /** @param options where files go and how links are signed */
  constructor(options: MediaStoreOptions) {
    this.#o = options;
  }

  #path(tenant: string, id: string): string {
    return join(this.#o.dir, encodeURIComponent(tenant), id);
  }

  #sign(tenant: string, id: string, expires: number): string {
    return createHmac("sha256", this.#o.secret).update(`${tenant}\n${id}\n${expires}`).digest("hex").slice(0, 32);
  }

  /** Save a file and its record (idempotent: the same id overwrites the same bytes). */
  async save(tenant: string, id: string, messageSeq: number | null, bytes: Uint8Array, contentType: string, fileName: string): Promise<MediaRow> {
    if (!ID.test(id)) throw new Error(`invalid media id ${JSON.stringify(id)}`);
    const dir = join(this.#o.dir, encodeURIComponent(tenant));
    await mkdir(dir, { recursive: true });
    const path = this.#path(tenant, id);
    await writeFile(`${path}.tmp`, bytes);
    await rename(`${path}.tmp`, path);
    const row: MediaRow = { tenant, id, messageSeq, contentType, fileName, size: bytes.length, createdAt: (this.#o.now ?? Date.now)() };
    await this.#o.store.putMedia(row);
    return row;
  }

  /** Record that a media could not be fetched (size -1), so delivery goes on without it. */
  async markUnavailable(tenant: string, id: string, messageSeq: number | null): Promise<void> {
    await this.#o.store.putMedia({ tenant, id, messageSeq, contentType: "", fileName: "", size: -1, createdAt: (this.#o.now ?? Date.now)() });
  }

  /** A signed, expiring download link. */
  link(tenant: string, id: string): string {
    const expires = Math.floor((this.#o.now ?? Date.now)() / 1000) + this.#o.ttlSec;
    return `${this.#o.publicUrl}/media/${encodeURIComponent(tenant)}/${id}?e=${expires}&s=${this.#sign(tenant, id, expires)}`;
  }

  /**
   * Check a link and read the file.
   * @returns the record and bytes, or a reason: `expired`, `bad_signature`, `not_found`
   */
  async open(tenant: string, id: string, e: string | null, s: string | null): Promise<{ row: MediaRow; bytes: Buffer } | { error: "expired" | "bad_signature" | "not_found" }> {
    if (!ID.test(id) || e === null || s === null || !/^\d{1,12}$/.test(e)) return { error: "bad_signature" };
    if (!safeEqual(this.#sign(tenant, id, Number(e)), s)) return { error: "bad_signature" };
    if (Number(e) * 1000 < (this.#o.now ?? Date.now)()) return { error: "expired" };
    const row = await this.#o.store.getMedia(tenant, id);
    if (row === undefined || row.size < 0) return { error: "not_found" };
    try {
      return { row, bytes: await readFile(this.#path(tenant, id)) };
    } catch {
      return { error: "not_found" };
    }
  }
}
