/**
 * The WeCom simulator's upload rules: every file larger than 5 bytes, each type's size cap (the cap
 * itself taken, one byte more refused with that type's errcode), the formats per type, and a
 * media_id's 3 days.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type UploadType, WECOM_RULES } from "../src/sim/wecom.js";
import { type Json, type SimHarness, startSim } from "./sim-wecom-helpers.js";

let h: SimHarness;
let token: string;

beforeAll(async () => {
  h = await startSim({ tokenTtlSec: 30 * 24 * 3600 });
  token = await h.token();
});

afterAll(async () => {
  await h.close();
});

/** A file of `size` bytes that starts like a valid file of the type (JPG, AMR, MP4, anything). */
function fileOf(type: UploadType, size: number): Buffer {
  const b = Buffer.alloc(size);
  const head = { image: Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10]), voice: Buffer.from("#!AMR\n"), video: Buffer.from("\x00\x00\x00\x18ftypmp42", "latin1"), file: Buffer.from("%PDF-1") }[type];
  head.copy(b, 0, 0, Math.min(head.length, size));
  return b;
}

/** media/upload of bytes as a type; the JSON answer. */
async function upload(type: string, bytes: Buffer, filename = "f.bin"): Promise<Json> {
  const form = new FormData();
  form.append("media", new Blob([bytes]), filename);
  const res = await fetch(`${h.sim.url}/cgi-bin/media/upload?access_token=${token}&type=${type}`, { method: "POST", body: form });
  return (await res.json()) as Json;
}

describe("media/upload limits", () => {
  it("refuses 5 bytes and takes 6 (every file must be larger than 5 bytes)", async () => {
    expect(WECOM_RULES.media.minBytesExclusive).toBe(5);
    for (const type of ["image", "voice", "file"] as const) {
      expect((await upload(type, fileOf(type, 5))).errcode, type).toBe(40006);
      expect((await upload(type, fileOf(type, 6))).errcode, type).toBe(0);
    }
    expect((await upload("file", Buffer.alloc(0))).errcode).toBe(44001);
  });

  it("takes each type up to its cap and refuses one byte more with the type's errcode", async () => {
    const errcodes: Record<UploadType, number> = { image: 40009, voice: 40006, video: 40011, file: 40006 };
    for (const type of Object.keys(WECOM_RULES.media.types) as UploadType[]) {
      const max = WECOM_RULES.media.types[type].maxBytes;
      const ok = await upload(type, fileOf(type, max));
      expect(ok.errcode, type).toBe(0);
      expect(h.sim.getMedia(ok.media_id as string)?.bytes.length).toBe(max);
      const over = await upload(type, fileOf(type, max + 1));
      expect(over.errcode, type).toBe(errcodes[type]);
      expect(over.errmsg).toMatch(new RegExp(`^invalid ${type} size, ${max + 1} bytes > ${max}`));
    }
    expect(WECOM_RULES.media.types).toMatchObject({ image: { maxBytes: 10 * 1024 * 1024 }, voice: { maxBytes: 2 * 1024 * 1024 }, video: { maxBytes: 10 * 1024 * 1024 }, file: { maxBytes: 20 * 1024 * 1024 } });
  });

  it("takes JPG and PNG images, AMR voice and MP4 video only; a file may be anything", async () => {
    const text = Buffer.from("just some text, not media");
    expect((await upload("image", text)).errcode).toBe(40123);
    expect((await upload("voice", text)).errcode).toBe(301017);
    expect((await upload("video", text)).errcode).toBe(40004);
    expect((await upload("file", text)).errcode).toBe(0);
    expect((await upload("sticker", text)).errcode).toBe(40005);
    const up = await upload("video", fileOf("video", 64), "演示.mp4");
    expect(up).toMatchObject({ errcode: 0, type: "video" });
    expect(h.sim.sent.at(-1)).toMatchObject({ api: "media/upload", delivered: true, body: { type: "video", media_id: up.media_id, filename: "演示.mp4", size: 64 } });
  });

  it("keeps a media_id 3 days", async () => {
    const up = await upload("file", Buffer.from("three days"));
    const get = async () => {
      const res = await fetch(`${h.sim.url}/cgi-bin/media/get?access_token=${token}&media_id=${up.media_id}`);
      if (res.headers.get("content-type")?.startsWith("application/json")) return ((await res.json()) as Json).errcode as number;
      await res.arrayBuffer();
      return res.status;
    };
    await h.sim.advance(WECOM_RULES.media.ttlMs - 1);
    expect(await get()).toBe(200);
    await h.sim.advance(1);
    expect(await get()).toBe(40007);
  });
});
