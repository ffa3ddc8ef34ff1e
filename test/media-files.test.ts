/**
 * Media files: the {@link MediaFiles} interface and {@link FolderMediaFiles} (the local folder, and
 * the folder replicas share) — round trip and layout, atomic visibility, failing sources,
 * concurrent writers of one id, ids that would escape the folder, the sweep of partial files; and a
 * {@link MediaStore} over an in-memory MediaFiles, which proves the interface is its only file access.
 */
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { FolderMediaFiles, type MediaFiles, type OpenedMedia, type WrittenMedia } from "../src/gateway/media-files.js";
import { MediaGoneError, MediaStore } from "../src/gateway/media.js";
import type { MediaRow, Store } from "../src/store/types.js";
import { failureOf } from "./helpers.js";

const T = "wwCORP";
const PNG = Buffer.from("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489", "hex");

const tempDir = () => mkdtempSync(join(tmpdir(), "wb-media-files-"));
const read = async (m: OpenedMedia | undefined): Promise<Buffer> => {
  if (m === undefined) throw new Error("no file");
  return Buffer.concat(await m.stream.toArray());
};

/** `check()`'s first truthy value, looked at every 20 ms (a deadline, not a sleep). */
async function until<V>(check: () => V | undefined | false, what: string, ms = 5000): Promise<V> {
  const end = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A promise and its resolve, to hold a source until the test lets it go on. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open = () => {};
  const wait = new Promise<void>((r) => {
    open = r;
  });
  return { wait, open };
}

/** A source that yields `first`, waits for `g`, then yields `rest`. */
async function* held(first: Buffer, g: Promise<void>, rest: Buffer): AsyncGenerator<Uint8Array> {
  yield first;
  await g;
  yield rest;
}

const tmpFiles = (folder: string) => (existsSync(folder) ? readdirSync(folder).filter((n) => n.endsWith(".tmp")) : []);

describe("FolderMediaFiles", () => {
  it("round trip: written as it comes, in today's layout, opened, removed", async () => {
    const dir = tempDir();
    const files = new FolderMediaFiles(dir);
    const chunks = [PNG.subarray(0, 5), PNG.subarray(5, 9), PNG.subarray(9)];
    async function* source() {
      yield* chunks;
    }
    const w: WrittenMedia = await files.write(T, "m1-0", source());
    expect(w).toEqual({ size: PNG.length, head: PNG.subarray(0, 16) });
    // dir/encodeURIComponent(tenant)/id: folders written before the interface keep working
    expect(readFileSync(join(dir, T, "m1-0"))).toEqual(PNG);
    expect(await files.write("corp/with space", "m2-0", [Buffer.from("abc")])).toEqual({ size: 3, head: Buffer.from("abc") });
    expect(readFileSync(join(dir, encodeURIComponent("corp/with space"), "m2-0"), "utf8")).toBe("abc");
    writeFileSync(join(dir, T, "old-file"), "written by an older gateway");
    expect((await read(await files.open(T, "old-file"))).toString()).toBe("written by an older gateway");

    const opened = await files.open(T, "m1-0");
    expect(opened?.size).toBe(PNG.length);
    expect(await read(opened)).toEqual(PNG);
    expect(await files.write(T, "empty", [])).toEqual({ size: 0, head: Buffer.alloc(0) });
    expect(await files.open(T, "empty").then(read)).toEqual(Buffer.alloc(0));

    expect(await files.remove(T, "m1-0")).toBe(true);
    expect(await files.remove(T, "m1-0")).toBe(false);
    expect(await files.open(T, "m1-0")).toBeUndefined();
    expect(await files.open("no-such-tenant", "m1-0")).toBeUndefined();
    expect(await new FolderMediaFiles(join(dir, "missing")).remove(T, "m1-0")).toBe(false);
    mkdirSync(join(dir, T, "a-folder"));
    expect(await files.open(T, "a-folder")).toBeUndefined();
    expect(tmpFiles(join(dir, T))).toEqual([]);
  });

  it("a file being written is not visible until it is complete", async () => {
    const dir = tempDir();
    const files = new FolderMediaFiles(dir);
    const g = gate();
    const writing = files.write(T, "m1-0", held(Buffer.alloc(1000, 1), g.wait, Buffer.alloc(500, 2)));
    // the first chunk is on disk, under a temporary name
    const [tmp] = await until(() => {
      const t = tmpFiles(join(dir, T));
      return t.length === 1 && statSync(join(dir, T, t[0] as string)).size === 1000 && t;
    }, "the first chunk in a temporary file");
    expect(tmp).toMatch(/^m1-0\.[0-9a-f]{12}\.tmp$/);
    expect(await files.open(T, "m1-0")).toBeUndefined();
    expect(readdirSync(join(dir, T))).toEqual([tmp]);
    g.open();
    expect(await writing).toMatchObject({ size: 1500 });
    expect(await files.open(T, "m1-0").then(read)).toEqual(Buffer.concat([Buffer.alloc(1000, 1), Buffer.alloc(500, 2)]));
    expect(readdirSync(join(dir, T))).toEqual(["m1-0"]);
  });

  it("a failing source leaves no file and no temporary file, and its error is thrown as it came", async () => {
    const dir = tempDir();
    const files = new FolderMediaFiles(dir);
    class SourceError extends Error {}
    const boom = new SourceError("too large");
    async function* failing(): AsyncGenerator<Uint8Array> {
      yield Buffer.alloc(2048, 3);
      throw boom;
    }
    expect(await failureOf(files.write(T, "m1-0", failing()), SourceError)).toBe(boom);
    expect(readdirSync(join(dir, T))).toEqual([]);
    // a failure does not touch a complete file already there
    await files.write(T, "m2-0", [Buffer.from("kept")]);
    const again = async function* (): AsyncGenerator<Uint8Array> {
      yield Buffer.from("half");
      throw boom;
    };
    expect(await failureOf(files.write(T, "m2-0", again()), SourceError)).toBe(boom);
    expect(readdirSync(join(dir, T))).toEqual(["m2-0"]);
    expect(readFileSync(join(dir, T, "m2-0"), "utf8")).toBe("kept");
  });

  it("two writers of one id (two replicas, an expired lease) both complete; the file is one whole content", async () => {
    const dir = tempDir();
    const files = new FolderMediaFiles(dir);
    const a = { first: Buffer.alloc(3000, 0xa), rest: Buffer.alloc(3000, 0xa), g: gate() };
    const b = { first: Buffer.alloc(1000, 0xb), rest: Buffer.alloc(7000, 0xb), g: gate() };
    const writes = [a, b].map((w) => files.write(T, "m1-0", held(w.first, w.g.wait, w.rest)));
    // both are in progress at once, each in a temporary file of its own
    await until(() => tmpFiles(join(dir, T)).length === 2, "two temporary files");
    b.g.open();
    a.g.open();
    expect((await Promise.all(writes)).map((w) => w.size)).toEqual([6000, 8000]);
    const got = readFileSync(join(dir, T, "m1-0"));
    expect([Buffer.concat([a.first, a.rest]), Buffer.concat([b.first, b.rest])]).toContainEqual(got);
    expect(readdirSync(join(dir, T))).toEqual(["m1-0"]);
  });

  it("ids and tenants that would leave the folder are refused without touching the file system", async () => {
    const parent = tempDir();
    const dir = join(parent, "media");
    mkdirSync(dir);
    // what the bad keys would name if they were joined as they are
    for (const f of [join(parent, "x"), join(dir, "x"), join(dir, "m1-0")]) writeFileSync(f, "sentinel");
    const files = new FolderMediaFiles(dir);
    const listing = () => [readdirSync(parent).sort(), readdirSync(dir).sort()];
    const snapshot = listing();
    const bad: [string, string][] = [
      [T, "../x"],
      [T, ""],
      [T, "a".repeat(129)],
      [T, "a/b"],
      [T, "m1-0.tmp"],
      ["..", "x"],
      [".", "x"],
      ["..", "m1-0"],
    ];
    for (const [tenant, id] of bad) {
      const what = `${tenant} ${id}`;
      expect(await files.remove(tenant, id), what).toBe(false);
      expect(await files.open(tenant, id), what).toBeUndefined();
      await expect(files.write(tenant, id, [Buffer.from("evil")]), what).rejects.toThrow(/invalid media id/);
    }
    expect(listing()).toEqual(snapshot);
    for (const f of [join(parent, "x"), join(dir, "x"), join(dir, "m1-0")]) expect(readFileSync(f, "utf8")).toBe("sentinel");
    // the longest valid id is fine
    expect(await files.write(T, "a".repeat(128), [Buffer.from("ok")])).toMatchObject({ size: 2 });
  });

  it("sweepPartial removes only partial files last written before the cut: *.tmp per tenant, *.part in outbound-tmp", async () => {
    const dir = tempDir();
    mkdirSync(join(dir, T));
    mkdirSync(join(dir, "outbound-tmp"));
    const oldTmp = join(dir, T, "m1-0.abc123abc123.tmp");
    const freshTmp = join(dir, T, "m2-0.def456def456.tmp");
    const oldDone = join(dir, T, "m3-0");
    const oldPart = join(dir, "outbound-tmp", "agent-media-0123456789abcdef01234567.part");
    const freshPart = join(dir, "outbound-tmp", "agent-media-76543210fedcba9876543210.part");
    const oldOther = join(dir, "outbound-tmp", "notes.txt");
    for (const f of [oldTmp, freshTmp, oldDone, oldPart, freshPart, oldOther]) writeFileSync(f, "x");
    const twoHoursAgo = (Date.now() - 2 * 3_600_000) / 1000;
    for (const f of [oldTmp, oldDone, oldPart, oldOther]) utimesSync(f, twoHoursAgo, twoHoursAgo);
    writeFileSync(join(dir, "stray.tmp"), "not in a tenant folder");
    utimesSync(join(dir, "stray.tmp"), twoHoursAgo, twoHoursAgo);

    const files = new FolderMediaFiles(dir);
    expect(await files.sweepPartial(Date.now() - 3_600_000)).toBe(2);
    expect([oldTmp, freshTmp, oldDone, oldPart, freshPart, oldOther].map(existsSync)).toEqual([false, true, true, false, true, true]);
    expect(existsSync(join(dir, "stray.tmp"))).toBe(true);
    expect(await files.sweepPartial(Date.now() - 3_600_000)).toBe(0);
    expect(await new FolderMediaFiles(join(dir, "missing")).sweepPartial(Date.now())).toBe(0);
  });
});

/** MediaFiles in a Map: no file system at all. */
class MemoryMediaFiles implements MediaFiles {
  readonly files = new Map<string, Buffer>();
  readonly calls: string[] = [];

  async write(tenant: string, id: string, source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): Promise<WrittenMedia> {
    this.calls.push(`write ${tenant} ${id}`);
    const parts: Uint8Array[] = [];
    for await (const c of source) parts.push(c);
    const bytes = Buffer.concat(parts);
    this.files.set(`${tenant}/${id}`, bytes);
    return { size: bytes.length, head: bytes.subarray(0, 16) };
  }

  async open(tenant: string, id: string): Promise<OpenedMedia | undefined> {
    this.calls.push(`open ${tenant} ${id}`);
    const bytes = this.files.get(`${tenant}/${id}`);
    return bytes === undefined ? undefined : { size: bytes.length, stream: Readable.from([bytes]) };
  }

  async remove(tenant: string, id: string): Promise<boolean> {
    this.calls.push(`remove ${tenant} ${id}`);
    return this.files.delete(`${tenant}/${id}`);
  }

  async sweepPartial(): Promise<number> {
    return 0;
  }
}

/** The parts of a Store that MediaStore uses, over arrays; `erased` seqs have no message. */
function memoryStore(erased: number[] = []): Store & { rows: MediaRow[] } {
  const rows: MediaRow[] = [];
  return {
    rows,
    putMedia: async (row: MediaRow) => void rows.push(row),
    getMedia: async (tenant: string, id: string) => rows.find((r) => r.tenant === tenant && r.id === id),
    getMessage: async (seq: number) => (erased.includes(seq) ? undefined : { seq }),
  } as unknown as Store & { rows: MediaRow[] };
}

describe("MediaStore over a MediaFiles", () => {
  it("stores, links and serves through the given MediaFiles only: no folder is ever made", async () => {
    const dir = join(tempDir(), "never-made");
    const files = new MemoryMediaFiles();
    const store = memoryStore();
    const media = new MediaStore({ dir, files, publicUrl: "http://gw", secret: "s".repeat(32), ttlSec: 60, store });
    expect(media.files).toBe(files);

    // a declared octet-stream is sniffed from the head the MediaFiles gave back
    const row = await media.saveStream(T, "m7-0", 7, [PNG.subarray(0, 3), PNG.subarray(3)], { contentType: "application/octet-stream", fileName: "" });
    expect(row).toMatchObject({ tenant: T, id: "m7-0", messageSeq: 7, contentType: "image/png", fileName: "m7-0", size: PNG.length });
    expect(files.files.get(`${T}/m7-0`)).toEqual(PNG);
    expect(store.rows).toEqual([row]);

    const url = new URL(media.link(T, "m7-0"));
    expect(url.pathname).toBe(`/media/${T}/m7-0`);
    const served = await media.serve(T, "m7-0", url.searchParams.get("e"), url.searchParams.get("s"));
    expect(served.status).toBe(200);
    expect(served.headers).toMatchObject({ "content-type": "image/png", "content-length": String(PNG.length) });
    expect(Buffer.concat(await (served.body as Readable).toArray())).toEqual(PNG);

    // a row whose bytes the MediaFiles lost: 404, asked of the MediaFiles
    await files.remove(T, "m7-0");
    const gone = await media.serve(T, "m7-0", url.searchParams.get("e"), url.searchParams.get("s"));
    expect(gone.status).toBe(404);
    expect(files.calls).toEqual([`write ${T} m7-0`, `open ${T} m7-0`, `remove ${T} m7-0`, `open ${T} m7-0`]);
    expect(existsSync(dir)).toBe(false);
  });

  it("a message erased while its media came in: the bytes are removed through the MediaFiles, no row kept", async () => {
    const dir = join(tempDir(), "never-made");
    const files = new MemoryMediaFiles();
    const store = memoryStore([9]);
    const media = new MediaStore({ dir, files, publicUrl: "http://gw", secret: "s".repeat(32), ttlSec: 60, store });
    await failureOf(media.save(T, "m9-0", 9, PNG, "image/png", "a.png"), MediaGoneError);
    expect(files.calls).toEqual([`write ${T} m9-0`, `remove ${T} m9-0`]);
    expect(files.files.size).toBe(0);
    expect(store.rows).toEqual([]);
    // an invalid id never reaches the MediaFiles
    await expect(media.save(T, "../x", null, PNG, "image/png", "a.png")).rejects.toThrow(/invalid media id/);
    expect(files.calls).toHaveLength(2);
    expect(existsSync(dir)).toBe(false);
  });

  it("without `files`, a FolderMediaFiles over `dir` keeps the files in today's layout", async () => {
    const dir = tempDir();
    const store = memoryStore();
    const media = new MediaStore({ dir, publicUrl: "http://gw", secret: "s".repeat(32), ttlSec: 60, store });
    expect(media.files).toBeInstanceOf(FolderMediaFiles);
    await media.save(T, "m1-0", null, PNG, "image/png", "a.png");
    expect(readFileSync(join(dir, T, "m1-0"))).toEqual(PNG);
    const url = new URL(media.link(T, "m1-0"));
    const served = await media.serve(T, "m1-0", url.searchParams.get("e"), url.searchParams.get("s"));
    expect(Buffer.concat(await (served.body as Readable).toArray())).toEqual(PNG);
  });
});
