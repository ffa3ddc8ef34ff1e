/**
 * Where the bytes of media live: the {@link MediaFiles} interface, keyed by (tenant, id), and
 * {@link FolderMediaFiles}, its implementation over a folder. The media rows (size, type, file
 * name) are the store's; signed links and serving are `MediaStore`'s (`media.ts`); this module
 * holds only the files.
 *
 * `FolderMediaFiles` is both the default and the way several gateway replicas share media:
 * - a local folder (`mediaDir`) for one gateway process;
 * - one shared folder that every replica mounts at its `mediaDir` (e.g. NFS), so that a file one
 *   replica fetched is served by any of them. Its guarantees hold there too:
 *   - a file is written under a temporary name of its own (random, per writer), then renamed into
 *     place in the same folder once complete and closed: a rename within one folder is atomic on a
 *     shared file system as on a local one, so a reader on any replica sees either no file or the
 *     whole file, and two replicas fetching one media never write into one temporary file (the
 *     last rename wins; both wrote the same bytes);
 *   - partial files (`*.tmp`, a crashed download; `*.part`, an agent's file on its way to WeCom in
 *     `outbound-tmp`) are swept by age (last written more than an hour ago by the caller's
 *     measure), never by who wrote them: a download in progress keeps writing its file, so no
 *     replica ever removes another's. This needs the replicas' clocks and the file server's
 *     (which sets the times) to agree within minutes.
 *
 * The layout is `mediaDir/encodeURIComponent(tenant)/id`, as it has always been, so existing
 * folders keep working. Ids are checked (`[A-Za-z0-9_-]{1,128}`) and the tenants `.` and `..` are
 * refused, so no (tenant, id) ever names a path outside the folder.
 * @module
 */
import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, open, readdir, rename, rm, stat, unlink } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";

/** A valid media id: what {@link MediaFiles} accepts as a key (and so as a file name). */
export const MEDIA_ID = /^[A-Za-z0-9_-]{1,128}$/;

/** How many first bytes {@link MediaFiles.write} gives back for type sniffing. */
export const MEDIA_HEAD_BYTES = 16;

/** What {@link MediaFiles.write} stored. */
export interface WrittenMedia {
  /** The file's size in bytes. */
  size: number;
  /** Its first {@link MEDIA_HEAD_BYTES} bytes (fewer for a smaller file), to sniff its type. */
  head: Buffer;
}

/** A stored media file opened for reading. */
export interface OpenedMedia {
  /** The file's size in bytes. */
  size: number;
  /** Its bytes; the caller reads it to the end or destroys it. */
  stream: Readable;
}

/**
 * Where media bytes live, keyed by (tenant, id). The gateway reaches media files only through this
 * interface (`MediaStore` for downloads and links; retention and the CLI through
 * `removeMediaFile` / `sweepPartialFiles`).
 *
 * An implementation must keep these promises:
 * - a file is visible (to {@link MediaFiles.open}, from any process sharing the storage) only once
 *   it is complete: never a partial file;
 * - two writers of one (tenant, id) never disturb each other: each completes, and the file is one of
 *   the two whole contents;
 * - an invalid id (see {@link MEDIA_ID}) never reaches the storage: `open` gives undefined, `remove`
 *   false, `write` throws.
 */
export interface MediaFiles {
  /**
   * Store a file as it arrives: the chunks go to a temporary name of this write's own, made visible
   * atomically once complete. When `source` fails (too large, a network error, bad decryption) the
   * temporary file is removed and the source's error is thrown as it came.
   * @returns the size and the first bytes
   * @throws Error on an invalid id; the source's error; a storage error
   */
  write(tenant: string, id: string, source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<WrittenMedia>;

  /**
   * Open a stored file for reading.
   * @returns its size and a stream of its bytes; undefined when there is no such file (or the id is
   *   invalid)
   */
  open(tenant: string, id: string): Promise<OpenedMedia | undefined>;

  /**
   * Delete a stored file (retention, erasure, a message erased while its media came in).
   * @returns true when a file was removed; false when there was none, or the id is invalid
   */
  remove(tenant: string, id: string): Promise<boolean>;

  /**
   * Delete the partial writes that a killed process left, when last written before `before` (ms
   * since the epoch): a write in progress keeps writing, so it is never touched.
   * @returns how many were removed
   */
  sweepPartial(before: number): Promise<number>;
}

/**
 * Where a (tenant, id) lives under `dir`: its tenant's folder and its path; undefined when the id is
 * invalid or the tenant would name a place outside `dir` (`encodeURIComponent` leaves `.` and `..`).
 */
function placeOf(dir: string, tenant: string, id: string): { folder: string; path: string } | undefined {
  const name = encodeURIComponent(tenant);
  if (name === "." || name === ".." || !MEDIA_ID.test(id)) return undefined;
  const folder = join(dir, name);
  return { folder, path: join(folder, id) };
}

const errno = (e: unknown): string | undefined => (e as NodeJS.ErrnoException).code;

/**
 * {@link MediaFiles} over a folder: `dir/encodeURIComponent(tenant)/id`. The default (a local
 * folder) and the shared-folder store of replicas (see the module comment for what that needs).
 */
export class FolderMediaFiles implements MediaFiles {
  /** The media folder (`mediaDir`). */
  readonly dir: string;

  /** @param dir the media folder (`mediaDir`); created, with each tenant's folder, on the first write */
  constructor(dir: string) {
    this.dir = dir;
  }

  /** {@inheritDoc MediaFiles.write} */
  async write(tenant: string, id: string, source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<WrittenMedia> {
    const place = placeOf(this.dir, tenant, id);
    if (place === undefined) throw new Error(`invalid media id ${JSON.stringify(id)} (tenant ${JSON.stringify(tenant)})`);
    const { folder, path } = place;
    await mkdir(folder, { recursive: true });
    // a name of its own: two writers of one id (two replicas, or an expired lease) never share it
    const tmp = `${path}.${randomBytes(6).toString("hex")}.tmp`;
    let size = 0;
    let head = Buffer.alloc(0);
    async function* counted(): AsyncGenerator<Uint8Array> {
      for await (const c of source) {
        size += c.length;
        if (head.length < MEDIA_HEAD_BYTES) head = Buffer.concat([head, c.subarray(0, MEDIA_HEAD_BYTES - head.length)]);
        yield c;
      }
    }
    try {
      await pipeline(counted(), createWriteStream(tmp, { flags: "wx" }));
      await rename(tmp, path);
    } catch (e) {
      await rm(tmp, { force: true }).catch(() => undefined);
      throw e;
    }
    return { size, head };
  }

  /** {@inheritDoc MediaFiles.open} */
  async open(tenant: string, id: string): Promise<OpenedMedia | undefined> {
    const path = placeOf(this.dir, tenant, id)?.path;
    if (path === undefined) return undefined;
    let handle: Awaited<ReturnType<typeof open>>;
    try {
      handle = await open(path, "r");
    } catch (e) {
      if (errno(e) === "ENOENT" || errno(e) === "ENOTDIR") return undefined;
      throw e;
    }
    try {
      const s = await handle.stat();
      if (!s.isFile()) {
        await handle.close();
        return undefined;
      }
      return { size: s.size, stream: handle.createReadStream() };
    } catch (e) {
      await handle.close().catch(() => undefined);
      throw e;
    }
  }

  /** {@inheritDoc MediaFiles.remove} */
  async remove(tenant: string, id: string): Promise<boolean> {
    const path = placeOf(this.dir, tenant, id)?.path;
    if (path === undefined) return false;
    try {
      await unlink(path);
      return true;
    } catch (e) {
      if (errno(e) === "ENOENT" || errno(e) === "ENOTDIR") return false;
      throw e;
    }
  }

  /**
   * {@inheritDoc MediaFiles.sweepPartial}
   * Looks at every folder of `dir` (each tenant's, and `outbound-tmp` where agents' files wait on
   * their way to WeCom) for `*.tmp` and `*.part` files.
   */
  async sweepPartial(before: number): Promise<number> {
    let removed = 0;
    let tenants: string[];
    try {
      tenants = await readdir(this.dir);
    } catch {
      return 0; // no media folder yet
    }
    for (const tenant of tenants) {
      let names: string[];
      try {
        names = await readdir(join(this.dir, tenant));
      } catch {
        continue; // a file, not a tenant folder
      }
      for (const name of names) {
        // .tmp: a WeCom media download; .part: an agent's file on its way to WeCom (outbound-tmp)
        if (!name.endsWith(".tmp") && !name.endsWith(".part")) continue;
        const path = join(this.dir, tenant, name);
        try {
          if ((await stat(path)).mtimeMs < before) {
            await unlink(path);
            removed++;
          }
        } catch {
          // gone meanwhile (its download finished or failed)
        }
      }
    }
    return removed;
  }
}
