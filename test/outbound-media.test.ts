/**
 * prepareAgentMedia against the WeCom simulator and a loopback file server standing for the
 * agent's: what WeCom stored equals what the agent's server served, byte for byte; the type is
 * decided by the bytes (PNG/JPG as image, GIF/WebP/BMP as file, MP3 as file, AMR as voice, MP4 as
 * video); the same file is uploaded once while its media_id lives; tiny and oversized files and
 * refused URLs are final, network failures retryable; the download never stays on disk.
 */
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import type { ServerResponse } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { AgentMediaError } from "../src/clients/agent-media.js";
import { HttpClient } from "../src/clients/http.js";
import { WeComClient, type WeComCredentials } from "../src/clients/wecom.js";
import { parseConfig } from "../src/config.js";
import {
  cleanFileName,
  MEDIA_ID_SAFETY_MS,
  MEDIA_ID_TTL_MS,
  MediaRefusedError,
  prepareAgentMedia,
  sniffFormat,
  uploadFileName,
  WECOM_MEDIA_MAX_BYTES,
} from "../src/gateway/outbound/media.js";
import type { OutboundContext } from "../src/gateway/outbound/types.js";
import { silentLogger } from "../src/log.js";
import { SimClock, WeComSimulator } from "../src/sim/wecom.js";
import type { SqliteStore } from "../src/store/sqlite/index.js";
import { failureOf } from "./helpers.js";
import { CORP, OTHER_APP, START } from "./sim-wecom-helpers.js";
import { closeAll, openStore } from "./store-helpers.js";
import { closeTestServers, serve, type TestServer } from "./test-server.js";

const MB = 1024 * 1024;
const CREDS: WeComCredentials = { corpId: CORP, secret: OTHER_APP.secret };

/** Sample files: the right magic numbers, random bodies (so that no two tests share a hash). */
const files = {
  png: (n = 4000) => Buffer.concat([Buffer.from("89504e470d0a1a0a", "hex"), randomBytes(n)]),
  jpg: (n = 4000) => Buffer.concat([Buffer.from("ffd8ffe000104a464946", "hex"), randomBytes(n)]),
  gif: () => Buffer.concat([Buffer.from("GIF89a"), randomBytes(3000)]),
  webp: () => Buffer.concat([Buffer.from("RIFF"), Buffer.from([0x10, 0, 0, 0]), Buffer.from("WEBPVP8 "), randomBytes(3000)]),
  bmp: () => Buffer.concat([Buffer.from("BM"), randomBytes(3000)]),
  mp3: () => Buffer.concat([Buffer.from("ID3"), Buffer.from([4, 0, 0]), randomBytes(3000)]),
  amr: () => Buffer.concat([Buffer.from("#!AMR\n"), randomBytes(3000)]),
  mp4: (n = 5000) => Buffer.concat([Buffer.from([0, 0, 0, 0x18]), Buffer.from("ftypisom"), randomBytes(n)]),
  bin: () => randomBytes(2000),
};

/** What the agent's server serves, by path. */
interface Served {
  body: Buffer;
  headers?: Record<string, string>;
}

let clock: SimClock;
let sim: WeComSimulator;
let store: SqliteStore;
let http: HttpClient;
let wecom: WeComClient;
let agent: TestServer;
let routes: Map<string, Served>;
let dir: string;

beforeAll(async () => {
  clock = new SimClock(START);
  sim = await WeComSimulator.start({ corpId: CORP, apps: [OTHER_APP], clock, tokenTtlSec: 30 * 24 * 3600 });
  store = await openStore(undefined, true);
  http = new HttpClient({ timeoutMs: 5000 });
  wecom = new WeComClient({ apiBase: sim.url, store, now: clock.now, http });
});

afterAll(async () => {
  wecom.close();
  http.close();
  await sim.close();
  await closeAll();
});

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "outbound-media-"));
  routes = new Map();
  agent = await serve((req, res: ServerResponse) => {
    const r = routes.get(new URL(req.url ?? "/", "http://x").pathname);
    if (r === undefined) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": "application/octet-stream", ...r.headers }).end(r.body);
  });
});

afterEach(async () => {
  await closeTestServers();
  rmSync(dir, { recursive: true, force: true });
});

/** An outbound context on the simulator; `mediaHosts` defaults to the agent's file server. */
function context(omni: { baseUrl?: string; mediaHosts?: string[] } = {}): OutboundContext {
  const config = parseConfig({
    publicUrl: "http://127.0.0.1:1",
    adminToken: "admin-token-0123456789",
    mediaDir: join(dir, "media"),
    wecom: { apiBase: sim.url, corpId: CORP, apps: [{ name: "ops", agentId: OTHER_APP.agentId, secret: OTHER_APP.secret, token: OTHER_APP.token, encodingAESKey: OTHER_APP.encodingAESKey }] },
    omni: { baseUrl: omni.baseUrl ?? "https://qmt.example.com", appId: "1001", secret: "omni-secret", mediaHosts: omni.mediaHosts ?? [`127.0.0.1:${agent.port}`] },
    delivery: { timeoutMs: 2000 },
  });
  return { config, store, wecom, http, log: silentLogger, tenant: CORP, now: clock.now, credentials: (app) => (app === OTHER_APP.agentId ? CREDS : undefined) };
}

/** Serve a file at a path of the agent's server; returns its URL. */
function host(path: string, body: Buffer, headers?: Record<string, string>): string {
  routes.set(path, headers === undefined ? { body } : { body, headers });
  return `${agent.url}${path}`;
}

const uploads = () => sim.sent.filter((s) => s.api === "media/upload");
const leftovers = () => (existsSync(join(dir, "media", "outbound-tmp")) ? readdirSync(join(dir, "media", "outbound-tmp")) : []);

/** What WeCom stored for a media_id. */
function stored(mediaId: string) {
  const m = sim.getMedia(mediaId);
  if (m === undefined) throw new Error(`the simulator has no ${mediaId}`);
  return m;
}

describe("the type WeCom takes, by the bytes", () => {
  it.each([
    ["a PNG image", "image", "image", "png", "/img/photo.png", "photo.png", "image/png"],
    ["a JPG image named .jpeg", "image", "image", "jpg", "/img/photo.jpeg", "photo.jpeg", "image/jpeg"],
    ["a PNG image behind a wrong extension", "image", "image", "png", "/img/photo.gif", "photo.png", "image/png"],
    ["a GIF image", "file", "image", "gif", "/img/anim.gif", "anim.gif", "image/gif"],
    ["a WebP image", "file", "image", "webp", "/img/pic.webp", "pic.webp", "image/webp"],
    ["a BMP image without extension", "file", "image", "bmp", "/img/scan", "scan.bmp", "image/bmp"],
    ["an MP3 voice", "file", "voice", "mp3", "/voice/hello.mp3", "hello.mp3", "audio/mpeg"],
    ["an AMR voice", "voice", "voice", "amr", "/voice/hello.amr", "hello.amr", "audio/amr"],
    ["an MP4 video", "video", "video", "mp4", "/video/clip.mp4", "clip.mp4", "video/mp4"],
    ["a video that is not MP4", "file", "video", "gif", "/video/clip.gif", "clip.gif", "image/gif"],
    ["a PNG sent as a file", "file", "file", "png", "/doc/chart.png", "chart.png", "image/png"],
    ["an unknown file", "file", "file", "bin", "/doc/data.bin", "data.bin", "application/octet-stream"],
  ] as const)("%s goes as %s", async (_what, type, wanted, kind, path, name, contentType) => {
    const bytes = files[kind]();
    const got = await prepareAgentMedia(context(), wanted, host(path, bytes), CREDS);
    expect(got).toMatchObject({ type, fileName: name });
    const m = stored(got.mediaId);
    expect(m.bytes.equals(bytes)).toBe(true); // byte for byte what the agent's server served
    expect(m).toMatchObject({ type, filename: name, contentType });
    expect(uploads().at(-1)?.body).toMatchObject({ type, media_id: got.mediaId, size: bytes.length });
    expect(leftovers()).toEqual([]);
  });

  it("sends an image over 10 MB as a file, and an AMR over 2 MB as a file", async () => {
    const big = files.png(WECOM_MEDIA_MAX_BYTES.image);
    const image = await prepareAgentMedia(context(), "image", host("/img/huge.png", big), CREDS);
    expect(image.type).toBe("file");
    expect(stored(image.mediaId).bytes.equals(big)).toBe(true);
    const longVoice = Buffer.concat([Buffer.from("#!AMR\n"), randomBytes(WECOM_MEDIA_MAX_BYTES.voice)]);
    const voice = await prepareAgentMedia(context(), "voice", host("/voice/long.amr", longVoice), CREDS);
    expect(voice.type).toBe("file");
    expect(stored(voice.mediaId).bytes.equals(longVoice)).toBe(true);
  });

  it("takes the name from Content-Disposition first, then the URL, else `file`", async () => {
    const fromHeader = await prepareAgentMedia(
      context(),
      "file",
      host("/download", files.bin(), { "content-disposition": "attachment; filename*=UTF-8''%E5%90%88%E5%90%8C%20%E2%80%9Cv2%E2%80%9D.docx" }),
      CREDS,
    );
    expect(fromHeader.fileName).toBe("合同 “v2”.docx");
    expect(stored(fromHeader.mediaId).filename).toBe("合同 “v2”.docx");
    const fromUrl = await prepareAgentMedia(context(), "file", host("/files/%E6%8A%A5%E5%91%8A.pdf", Buffer.concat([Buffer.from("%PDF-1.7\n"), randomBytes(100)])), CREDS);
    expect(fromUrl.fileName).toBe("报告.pdf");
    const none = await prepareAgentMedia(context(), "image", host("/", files.png()), CREDS);
    expect(none.fileName).toBe("file.png");
  });
});

describe("the media_id cache", () => {
  it("uploads the same file once while its media_id lives, and again 3 days minus an hour after", async () => {
    const bytes = files.png();
    const ctx = context();
    const before = uploads().length;
    const first = await prepareAgentMedia(ctx, "image", host("/a.png", bytes), CREDS);
    // another URL, the same bytes: the same media_id, no upload
    const again = await prepareAgentMedia(ctx, "image", host("/copy-of-a.png", bytes), CREDS);
    expect(again.mediaId).toBe(first.mediaId);
    expect(uploads().length).toBe(before + 1);
    expect(agent.requests()).toBe(2); // both downloaded: the hash is known only from the bytes
    await sim.advance(MEDIA_ID_TTL_MS - MEDIA_ID_SAFETY_MS - 1000);
    expect((await prepareAgentMedia(ctx, "image", host("/a.png", bytes), CREDS)).mediaId).toBe(first.mediaId);
    await sim.advance(1000);
    const renewed = await prepareAgentMedia(ctx, "image", host("/a.png", bytes), CREDS);
    expect(renewed.mediaId).not.toBe(first.mediaId);
    expect(uploads().length).toBe(before + 2);
    expect(stored(renewed.mediaId).bytes.equals(bytes)).toBe(true);
  });

  it("keeps types apart, and a file's name (WeCom shows it)", async () => {
    const bytes = files.png();
    const ctx = context();
    const before = uploads().length;
    const image = await prepareAgentMedia(ctx, "image", host("/p.png", bytes), CREDS);
    const asFile = await prepareAgentMedia(ctx, "file", host("/p.png", bytes), CREDS);
    const renamed = await prepareAgentMedia(ctx, "file", host("/other-name.png", bytes), CREDS);
    const sameName = await prepareAgentMedia(ctx, "file", host("/x/p.png", bytes), CREDS);
    expect(new Set([image.mediaId, asFile.mediaId, renamed.mediaId]).size).toBe(3);
    expect(sameName.mediaId).toBe(asFile.mediaId);
    expect(uploads().length).toBe(before + 3);
  });
});

describe("what cannot be sent", () => {
  it("refuses 5 bytes or less and more than 20 MB, finally, and leaves no file behind", async () => {
    for (const size of [0, 1, 5]) {
      const e = await failureOf(prepareAgentMedia(context(), "file", host(`/tiny${size}`, Buffer.from("#!AMR\n").subarray(0, size)), CREDS), MediaRefusedError);
      expect(e).toMatchObject({ code: "media_refused", retryable: false });
      expect(e.message).toMatch(/larger than 5 bytes/);
    }
    const six = await prepareAgentMedia(context(), "file", host("/six", Buffer.from("123456")), CREDS);
    expect(stored(six.mediaId).bytes.toString()).toBe("123456");
    const huge = await failureOf(prepareAgentMedia(context(), "file", host("/huge.zip", Buffer.alloc(20 * MB + 1, 1)), CREDS), MediaRefusedError);
    expect(huge).toMatchObject({ code: "media_refused", retryable: false });
    expect(huge.message).toMatch(/20 MB/);
    const exactly = await prepareAgentMedia(context(), "file", host("/max.bin", Buffer.alloc(20 * MB, 2)), CREDS);
    expect(stored(exactly.mediaId).bytes.length).toBe(20 * MB);
    expect(leftovers()).toEqual([]);
  });

  it("refuses a private address unless omni.mediaHosts (or omni.baseUrl's host) lists it", async () => {
    const url = host("/p.png", files.png());
    const before = agent.requests();
    const refused = await failureOf(prepareAgentMedia(context({ mediaHosts: [] }), "image", url, CREDS), AgentMediaError);
    expect(refused).toMatchObject({ code: "media_url_refused", retryable: false });
    expect(refused.message).not.toContain("?");
    expect(agent.requests()).toBe(before); // never fetched
    const otherPort = await failureOf(prepareAgentMedia(context({ mediaHosts: ["127.0.0.1:1"] }), "image", url, CREDS), AgentMediaError);
    expect(otherPort.code).toBe("media_url_refused");
    expect((await prepareAgentMedia(context({ mediaHosts: [`127.0.0.1:${agent.port}`] }), "image", url, CREDS)).type).toBe("image");
    expect((await prepareAgentMedia(context({ mediaHosts: ["127.0.0.0/8"] }), "image", url, CREDS)).type).toBe("image");
    expect((await prepareAgentMedia(context({ mediaHosts: [], baseUrl: `http://127.0.0.1:${agent.port}/qmt` }), "image", url, CREDS)).type).toBe("image");
    const metadata = await failureOf(prepareAgentMedia(context(), "image", "http://169.254.169.254/latest/meta-data", CREDS), AgentMediaError);
    expect(metadata).toMatchObject({ code: "media_url_refused", retryable: false });
  });

  it("lets network failures be retried, and a 404 be final", async () => {
    const down = await failureOf(prepareAgentMedia(context({ mediaHosts: ["127.0.0.1"] }), "image", "http://127.0.0.1:1/p.png", CREDS), AgentMediaError);
    expect(down).toMatchObject({ code: "media_fetch_failed", retryable: true });
    const missing = await failureOf(prepareAgentMedia(context(), "image", `${agent.url}/nothing-here.png`, CREDS), AgentMediaError);
    expect(missing.retryable).toBe(false);
    expect(leftovers()).toEqual([]);
  });
});

describe("pure parts", () => {
  it("sniffs formats by magic numbers only", () => {
    expect(sniffFormat(files.png().subarray(0, 16))?.ext).toBe("png");
    expect(sniffFormat(files.jpg().subarray(0, 16))?.ext).toBe("jpg");
    expect(sniffFormat(files.mp4().subarray(0, 16))?.ext).toBe("mp4");
    expect(sniffFormat(Buffer.from("#!AMR-WB\n123456"))?.ext).toBeUndefined(); // AMR-WB is not WeCom's AMR
    expect(sniffFormat(Buffer.from("hello, world"))).toBeUndefined();
    expect(sniffFormat(new Uint8Array())).toBeUndefined();
  });

  it("cleans file names: no controls, quotes or folders; long ones shortened on grapheme boundaries, extension kept", () => {
    expect(cleanFileName('..\\..\\etc/pa"ss\u0000wd\r\n.txt')).toBe("passwd.txt");
    expect(cleanFileName("   ")).toBeUndefined();
    expect(cleanFileName("..")).toBeUndefined();
    const family = "👨‍👩‍👧‍👦";
    const long = cleanFileName(`${family.repeat(120)}.pdf`) as string;
    expect(long.endsWith(".pdf")).toBe(true);
    expect([...new Intl.Segmenter().segment(long)].length).toBe(100);
    expect(long.replace(".pdf", "").replaceAll(family, "")).toBe("");
    expect(uploadFileName(undefined, "file", undefined)).toBe("file");
    expect(uploadFileName("报告", "file", sniffFormat(Buffer.from("%PDF-1.7")))).toBe("报告.pdf");
    expect(uploadFileName("photo.JPG", "image", sniffFormat(files.jpg().subarray(0, 16)))).toBe("photo.JPG");
  });
});
