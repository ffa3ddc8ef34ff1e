/**
 * Media: retries by the class of WeCom's answer and the media deadline (order kept), non-ASCII
 * file names, streamed downloads under a size cap, and files served without running script on the
 * gateway's origin. End to end over the stack, plus focused tests of the pieces.
 */
import { existsSync, mkdtempSync, readdirSync, statSync } from "node:fs";
import { createServer, type Server, type ServerResponse } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { OmniClient } from "../src/clients/omni.js";
import { fileNameOf, type MediaDownload, WeComApiError, WeComClient } from "../src/clients/wecom.js";
import { DeliveryWorker } from "../src/gateway/delivery.js";
import { contentDisposition, decryptBotMediaStream, MediaStore, mediaHeaders, typeEssence } from "../src/gateway/media.js";
import { messageItem } from "../src/gateway/pipeline.js";
import { silentLogger } from "../src/log.js";
import { openStore } from "../src/store/index.js";
import type { MediaRow, Store } from "../src/store/types.js";
import { decodeAppXml } from "../src/wecom/app/decode.js";
import { decryptBotMedia, encryptBotMedia } from "../src/wecom/crypto.js";
import { AGENT, BOT_AES, CORP, eventually, KFID, type Stack, startStack } from "./stack.js";

let stack: Stack | undefined;
const servers: Server[] = [];
afterEach(async () => {
  await stack?.stop();
  stack = undefined;
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

const PNG = Buffer.from("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489", "hex");
const appConversation = (user: string) => `app:${CORP}:${AGENT}:${user}`;

function imageXml(user: string, mediaId: string, msgId: string): string {
  return `<xml><ToUserName><![CDATA[${CORP}]]></ToUserName><FromUserName><![CDATA[${user}]]></FromUserName><CreateTime>${Math.floor(Date.now() / 1000)}</CreateTime><MsgType><![CDATA[image]]></MsgType><PicUrl><![CDATA[https://wework.qpic.cn/x]]></PicUrl><MediaId><![CDATA[${mediaId}]]></MediaId><MsgId>${msgId}</MsgId><AgentID>${AGENT}</AgentID></xml>`;
}

/** `Tag.data` of a delivered body. */
const data = (got: { body: { Tag?: unknown } } | undefined): any => (got?.body.Tag as { data?: unknown } | undefined)?.data;

const mediaGets = (s: Stack) => s.wecom.requests.filter((r) => r.path.endsWith("/media/get")).length;

/** Count how often the outbox hands out `omni` entries (each claim is one look at the store). */
function countOmniClaims(s: Stack): { n: number } {
  const store = s.gw.store;
  const claim = store.claimOutbox.bind(store);
  const counter = { n: 0 };
  store.claimOutbox = async (...args) => {
    const got = await claim(...args);
    counter.n += got.filter((e) => e.kind === "omni").length;
    return got;
  };
  return counter;
}

/** Files under the stack's media folder (temporary ones included). */
function mediaFiles(dir: string): string[] {
  const tenantDir = join(dir, encodeURIComponent(CORP));
  return existsSync(tenantDir) ? readdirSync(tenantDir) : [];
}

describe("media fetches retry by the class of WeCom's answer", () => {
  it("60020 (IP not yet trusted) for more tries than maxAttempts, then success: the agent gets the link, and the waiting message is not re-polled", async () => {
    stack = await startStack();
    const omniClaims = countOmniClaims(stack);
    const mediaId = stack.wecom.putMedia(PNG, { contentType: "image/png", filename: "shot.png" });
    stack.wecom.failNext("media/get", 60020, 8); // maxAttempts is 6 in the stack's config
    await stack.wecom.appSends(AGENT, imageXml("lisi", mediaId, "7381973325934100001"));
    const [got] = await stack.omni.waitFor(1, 10_000);
    expect(got?.body.MsgType).toBe("image");
    expect(got?.body.Content).toMatch(new RegExp(`^${stack.config.publicUrl}/media/`));
    expect(data(got).file).toEqual({ name: "shot.png", contentType: "image/png", size: PNG.length });
    expect(mediaGets(stack)).toBe(9);
    const res = await fetch(got?.body.Content as string);
    expect(Buffer.from(await res.arrayBuffer())).toEqual(PNG);
    // the omni entry waited in memory and ran when its media settled: claimed once (twice if a
    // media attempt settled while it looked), not every 200 ms for the second the retries took
    expect(omniClaims.n).toBeGreaterThanOrEqual(1);
    expect(omniClaims.n).toBeLessThanOrEqual(2);
  });

  it("40007 (invalid media_id) is final: unavailable at once, no retry, the errcode in Tag", async () => {
    stack = await startStack();
    await stack.wecom.appSends(AGENT, imageXml("lisi", "no-such-media-id", "7381973325934100002"));
    const [got] = await stack.omni.waitFor(1);
    expect(got?.body).toMatchObject({ MsgType: "text", Content: "[图片: not available]" });
    expect(data(got).unavailable).toMatchObject({ reason: "refused", errcode: 40007 });
    expect(data(got).unavailable.error).toMatch(/40007/);
    expect(mediaGets(stack)).toBe(1);
  });

  it("past delivery.mediaDeadlineSec the message goes out without the file, saying so; the conversation's next message follows it", async () => {
    stack = await startStack({
      config: (raw) => {
        raw.delivery.mediaDeadlineSec = 1;
      },
    });
    stack.wecom.failNext("media/get", 60020, 1_000_000);
    const started = Date.now();
    await stack.wecom.appSends(AGENT, imageXml("wangwu", "any-media-id", "7381973325934100003"));
    await stack.wecom.appUserSendsText(AGENT, "wangwu", "看到图片了吗？");
    const got = await stack.omni.waitFor(2, 10_000);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
    expect(got.map((g) => g.body.FromUserId)).toEqual([appConversation("wangwu"), appConversation("wangwu")]);
    expect(got[0]?.body).toMatchObject({ MsgType: "text", Content: "[图片: could not be fetched in time]" });
    expect(data(got[0]).unavailable).toMatchObject({ reason: "deadline", errcode: 60020 });
    expect(got[1]?.body).toMatchObject({ MsgType: "text", Content: "看到图片了吗？" });
    expect(mediaGets(stack)).toBeGreaterThan(2); // retried until the deadline, not given up at once
  });
});

describe("delivery.timeoutMs", () => {
  it("applies to WeCom calls: a media/get slower than it fails as a timeout (transient), and is fetched once WeCom answers in time", async () => {
    stack = await startStack({
      config: (raw) => {
        raw.delivery.timeoutMs = 300;
      },
    });
    const mediaId = stack.wecom.putMedia(PNG, { contentType: "image/png", filename: "shot.png" });
    stack.wecom.setDelay("media/get", 1500);
    const client = stack.gw.gateway.wecom;
    const creds = { corpId: CORP, secret: "app-secret" };
    const err = await client.getMedia(creds, mediaId, { maxBytes: 4096 }, async () => "read").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WeComApiError);
    expect((err as WeComApiError).kind).toBe("transient");
    expect((err as Error).message).toMatch(/timeout/);
    stack.wecom.setDelay("media/get", 0);
    expect(await client.getMedia(creds, mediaId, { maxBytes: 4096 }, async () => "read")).toBe("read");
  });
});

describe("non-ASCII file names", () => {
  for (const disposition of ["raw", "rfc5987"] as const) {
    it(`发票.pdf sent ${disposition === "raw" ? "as raw UTF-8 bytes" : "as RFC 5987 filename*"} reaches the 全媒体 and the served link intact`, async () => {
      stack = await startStack();
      const pdf = Buffer.from("%PDF-1.4\n%âãÏÓ\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", "latin1");
      const mediaId = stack.wecom.putMedia(pdf, { contentType: "application/pdf", filename: "发票.pdf", type: "file", disposition });
      await stack.wecom.kfCustomerSends(KFID, "wmCUSTOMER0001", { msgtype: "file", file: { media_id: mediaId } });
      const [got] = await stack.omni.waitFor(1, 10_000);
      expect(got?.body.MsgType).toBe("file");
      expect(data(got).file).toEqual({ name: "发票.pdf", contentType: "application/pdf", size: pdf.length });
      const res = await fetch(got?.body.Content as string);
      expect(res.status).toBe(200);
      const cd = res.headers.get("content-disposition") ?? "";
      expect(cd).toMatch(/^attachment; /);
      expect(cd).toContain(`filename*=UTF-8''${encodeURIComponent("发票.pdf")}`);
      expect(fileNameOf(cd)).toBe("发票.pdf");
      expect(Buffer.from(await res.arrayBuffer())).toEqual(pdf);
    });
  }

  it("fileNameOf: raw UTF-8 read as latin1 is recovered, filename* wins, real latin1 stays, folders and controls go", () => {
    const asFetchReadsIt = (s: string) => Buffer.from(s, "utf8").toString("latin1");
    expect(asFetchReadsIt("发票.pdf")).toBe("\u00e5\u008f\u0091\u00e7\u00a5\u00a8.pdf"); // the garbling of the issue (åç¥¨.pdf with C1 controls)
    expect(fileNameOf(`attachment; filename="${asFetchReadsIt("发票.pdf")}"`)).toBe("发票.pdf");
    expect(fileNameOf(`attachment; filename="__.pdf"; filename*=UTF-8''%E5%8F%91%E7%A5%A8.pdf`)).toBe("发票.pdf");
    expect(fileNameOf(`attachment; filename*=utf-8'zh'%E5%8F%91%E7%A5%A8.pdf; filename="x.pdf"`)).toBe("发票.pdf");
    expect(fileNameOf(`attachment; filename*=ISO-8859-1''caf%E9.txt`)).toBe("café.txt");
    expect(fileNameOf(`attachment; filename="caf\u00e9.txt"`)).toBe("café.txt"); // latin1 bytes that are not UTF-8
    expect(fileNameOf(`attachment; filename=plain.txt`)).toBe("plain.txt");
    expect(fileNameOf(`attachment; filename="a \\"quoted\\" name.txt"`)).toBe('a "quoted" name.txt');
    expect(fileNameOf(`attachment; filename="a;b.txt"`)).toBe("a;b.txt");
    expect(fileNameOf(`attachment; filename="../../etc/passwd"`)).toBe("passwd");
    expect(fileNameOf(`attachment; filename="x\u0007y.txt"`)).toBe("xy.txt");
    expect(fileNameOf(`attachment; filename*=UTF-8''%E5%8F%91%GG.pdf; filename="fallback.pdf"`)).toBe("fallback.pdf");
    expect(fileNameOf("attachment")).toBeUndefined();
    expect(fileNameOf(null)).toBeUndefined();
  });
});

/** A server whose answers a test writes by hand. */
async function handServer(onRequest: (res: ServerResponse, closed: Promise<void>) => void): Promise<string> {
  const server = createServer((req, res) => onRequest(res, new Promise((r) => req.socket.once("close", () => r()))));
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return `http://127.0.0.1:${(server.address() as { port: number }).port}/file`;
}

function fakeStore(rows: MediaRow[] = []): Store {
  return { putMedia: async (row: MediaRow) => void rows.push(row) } as unknown as Store;
}

describe("downloads are streamed to disk under limits.mediaBytes", () => {
  it("a file over limits.mediaBytes is final: refused, not retried, no file left", async () => {
    stack = await startStack({
      config: (raw) => {
        raw.limits = { mediaBytes: 1024 };
      },
    });
    const mediaId = stack.wecom.putMedia(Buffer.alloc(4096, 7), { contentType: "application/zip", filename: "big.zip", type: "file" });
    await stack.wecom.kfCustomerSends(KFID, "wmCUSTOMER0002", { msgtype: "file", file: { media_id: mediaId } });
    const [got] = await stack.omni.waitFor(1, 10_000);
    expect(got?.body).toMatchObject({ MsgType: "text", Content: "[文件: not available]" });
    expect(data(got).unavailable).toMatchObject({ reason: "refused" });
    expect(data(got).unavailable.error).toMatch(/limits\.mediaBytes/);
    expect(mediaGets(stack)).toBe(1);
    expect(mediaFiles(stack.config.mediaDir)).toEqual([]);
  });

  it("a Content-Length over the cap is refused before the body is read", async () => {
    const url = await handServer((res) => {
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": 10_000 });
      res.end(Buffer.alloc(10_000));
    });
    const client = new WeComClient({ apiBase: "http://127.0.0.1:1", store: fakeStore(), timeoutMs: 5000 });
    let consumed = false;
    const err = await client
      .download(url, { maxBytes: 4096 }, async () => {
        consumed = true;
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WeComApiError);
    expect((err as WeComApiError).kind).toBe("final");
    expect(consumed).toBe(false);
  });

  it("a body that grows past the cap is written as it comes, then aborted, and its temporary file removed", async () => {
    let serverRes: ServerResponse | undefined;
    let closed: Promise<void> | undefined;
    const url = await handServer((res, c) => {
      res.writeHead(200, { "content-type": "application/octet-stream" }); // chunked: no length to check first
      res.write(Buffer.alloc(1024, 1));
      serverRes = res;
      closed = c;
    });
    const dir = mkdtempSync(join(tmpdir(), "wb-media-"));
    const rows: MediaRow[] = [];
    const media = new MediaStore({ dir, publicUrl: "http://gw", secret: "s".repeat(32), ttlSec: 60, store: fakeStore(rows) });
    const client = new WeComClient({ apiBase: "http://127.0.0.1:1", store: fakeStore(), timeoutMs: 5000 });
    const saving = client.download(url, { maxBytes: 4096 }, (d) => media.saveStream("t1", "m1-0", 1, d.body, { contentType: d.contentType, fileName: "x.bin" })).catch((e: unknown) => e);
    const tenantDir = join(dir, "t1");
    // the first chunk is on disk while the download goes on: a temporary file, not a buffer
    const tmp = await eventually(() => (existsSync(tenantDir) ? readdirSync(tenantDir).find((f) => f.endsWith(".tmp")) : undefined), 5000, "a temporary file");
    await eventually(() => statSync(join(tenantDir, tmp)).size === 1024, 5000, "the first chunk on disk");
    serverRes?.write(Buffer.alloc(4096, 2));
    const err = await saving;
    expect(err).toBeInstanceOf(WeComApiError);
    expect((err as WeComApiError).kind).toBe("final");
    expect(readdirSync(tenantDir)).toEqual([]);
    expect(rows).toEqual([]);
    await closed; // the connection was dropped: the rest was never read
  });

  it("the timeout is between bytes, not over the whole file: a slow steady body passes, a stalled one fails as transient", async () => {
    const url = await handServer((res) => {
      res.writeHead(200, { "content-type": "application/octet-stream" });
      let n = 0;
      const t = setInterval(() => {
        res.write(Buffer.alloc(100, n));
        if (++n === 9) {
          clearInterval(t);
          res.end();
        }
      }, 100); // 900 ms in all, more than the 600 ms timeout
      res.on("close", () => clearInterval(t));
    });
    const client = new WeComClient({ apiBase: "http://127.0.0.1:1", store: fakeStore(), timeoutMs: 600 });
    const read = async (d: { body: AsyncIterable<Uint8Array> }) => {
      let size = 0;
      for await (const c of d.body) size += c.length;
      return size;
    };
    expect(await client.download(url, { maxBytes: 4096 }, read)).toBe(900);

    const stalled = await handServer((res) => {
      res.writeHead(200, { "content-type": "application/octet-stream" });
      res.write(Buffer.alloc(100)); // and then nothing
    });
    const err = await client.download(stalled, { maxBytes: 4096 }, read).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WeComApiError);
    expect((err as WeComApiError).kind).toBe("transient");
    expect((err as Error).message).toMatch(/timeout/);
  });

  it("an AI bot's file is decrypted as it streams, byte for byte what decryptBotMedia gives", async () => {
    for (const size of [0, 1, 15, 16, 31, 32, 33, 100, 1000]) {
      const plain = Buffer.from(Array.from({ length: size }, (_, i) => (i * 7 + size) % 256));
      const enc = encryptBotMedia(BOT_AES, plain);
      for (const chunk of [1, 5, 16, 17, 32, 64, enc.length]) {
        const parts: Buffer[] = [];
        for (let i = 0; i < enc.length; i += chunk) parts.push(enc.subarray(i, i + chunk));
        const out: Buffer[] = [];
        for await (const b of decryptBotMediaStream(BOT_AES, parts)) out.push(b);
        expect(Buffer.concat(out)).toEqual(decryptBotMedia(BOT_AES, enc));
        expect(Buffer.concat(out)).toEqual(plain);
      }
    }
    const drain = async (src: Buffer[]) => {
      for await (const _ of decryptBotMediaStream(BOT_AES, src)) {
        /* read */
      }
    };
    await expect(drain([Buffer.alloc(40)])).rejects.toThrow(/multiple of the AES block/);
    await expect(drain([])).rejects.toThrow(/multiple of the AES block/);
    await expect(drain([Buffer.alloc(64, 3)])).rejects.toThrow(/padding|decryption/);
  });
});

describe("served media never runs script on the gateway's origin", () => {
  async function served(s: Stack, id: string, bytes: Buffer, contentType: string, fileName: string) {
    await s.gw.gateway.media.save(CORP, id, null, bytes, contentType, fileName);
    const res = await fetch(s.gw.gateway.media.link(CORP, id));
    return { res, body: Buffer.from(await res.arrayBuffer()) };
  }

  it(".html and .svg are attachments with nosniff; an image is inline with nosniff", async () => {
    stack = await startStack();
    const html = Buffer.from("<html><script>alert(document.domain)</script></html>");
    const h = await served(stack, "x-html", html, "text/html; charset=utf-8", "page.html");
    expect(h.res.status).toBe(200);
    expect(h.res.headers.get("x-content-type-options")).toBe("nosniff");
    expect(h.res.headers.get("content-type")).toBe("application/octet-stream");
    expect(h.res.headers.get("content-disposition")).toBe(`attachment; filename="page.html"; filename*=UTF-8''page.html`);
    expect(h.res.headers.get("content-security-policy")).toMatch(/sandbox/);
    expect(h.body).toEqual(html);

    const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>');
    const v = await served(stack, "x-svg", svg, "image/svg+xml", "图.svg");
    expect(v.res.headers.get("x-content-type-options")).toBe("nosniff");
    expect(v.res.headers.get("content-type")).toBe("application/octet-stream");
    expect(v.res.headers.get("content-disposition")).toBe(`attachment; filename="_.svg"; filename*=UTF-8''%E5%9B%BE.svg`);

    const p = await served(stack, "x-png", PNG, "image/png", "shot.png");
    expect(p.res.headers.get("x-content-type-options")).toBe("nosniff");
    expect(p.res.headers.get("content-type")).toBe("image/png");
    expect(p.res.headers.get("content-disposition")).toMatch(/^inline; filename="shot\.png"/);
    expect(p.res.headers.get("content-length")).toBe(String(PNG.length));
    expect(p.body).toEqual(PNG);

    // errors stay JSON
    const bad = await fetch(stack.gw.gateway.media.link(CORP, "x-png").replace(/s=[0-9a-f]+/, "s=00"));
    expect(bad.status).toBe(403);
    expect(await bad.json()).toMatchObject({ errcode: "bad_signature" });
  });

  it("only image, audio and video types browsers do not run are inline", () => {
    const disposition = (type: string) => mediaHeaders({ contentType: type, fileName: "f", id: "m1-0" }, 1)["content-disposition"]?.split(";")[0];
    for (const t of ["image/png", "image/jpeg", "image/gif", "image/webp", "audio/amr", "audio/mpeg", "video/mp4", "IMAGE/PNG; x=1"]) expect(disposition(t), t).toBe("inline");
    for (const t of ["image/svg+xml", "text/html", "application/xhtml+xml", "application/javascript", "text/xml", "application/pdf", "text/plain", "", "garbage", "image/png\r\nx: y", "multipart/x-mixed-replace"]) {
      expect(disposition(t), t).toBe("attachment");
    }
    expect(typeEssence("Image/JPEG; charset=x")).toBe("image/jpeg");
    expect(contentDisposition("attachment", `a"b\\c%20d's (1)*.txt`)).toBe(`attachment; filename="a_b_c_20d's (1)*.txt"; filename*=UTF-8''a%22b%5Cc%2520d%27s%20%281%29%2A.txt`);
  });
});

describe("the message waiting for its media", () => {
  /** A worker on a real SQLite store whose media/get fails with 60020 until `release()`. */
  async function worker(leaseMs: number) {
    const dir = mkdtempSync(join(tmpdir(), "wb-wait-"));
    const store = await openStore(`sqlite:${join(dir, "bridge.db")}`, { owner: true });
    let released = false;
    const sent: unknown[] = [];
    const claims: { kind: string; at: number }[] = [];
    const claim = store.claimOutbox.bind(store);
    store.claimOutbox = async (...args) => {
      const got = await claim(...args);
      for (const e of got) claims.push({ kind: e.kind, at: Date.now() });
      return got;
    };
    const wecom = {
      getMedia: async <T>(_c: unknown, _id: string, _o: unknown, consume: (d: MediaDownload) => Promise<T>): Promise<T> => {
        if (!released) throw new WeComApiError("media/get", 60020, "not allow to access from your ip", 200);
        return consume({ contentType: "image/png", body: [PNG] as unknown as AsyncIterable<Uint8Array> });
      },
    } as unknown as WeComClient;
    const w = new DeliveryWorker({
      store,
      omni: { send: async (body: unknown) => void sent.push(body) } as unknown as OmniClient,
      wecom,
      media: new MediaStore({ dir: join(dir, "media"), publicUrl: "http://gw", secret: "s".repeat(32), ttlSec: 60, store }),
      policy: { maxAttempts: 3, baseDelayMs: 10, maxDelayMs: 40, concurrency: 4 },
      appCredentials: () => ({ corpId: CORP, secret: "app-secret" }),
      botKey: () => undefined,
      log: silentLogger,
      leaseMs,
      wakeDelayMs: 1,
    });
    const msg = decodeAppXml(imageXml("lisi", "media-1", "7381973325934100009"), { corpId: CORP });
    await store.ingest([messageItem(CORP, msg, { kind: "wecom", app: "support" })]);
    w.start();
    const release = () => {
      released = true;
    };
    return { store, w, sent, claims, release };
  }

  it("is handed back to the store before half its lease, claimed and parked again, and delivered once when the media comes", async () => {
    const t = await worker(200);
    try {
      // three claims of the omni entry: it was parked, handed back (100 ms) and parked again, twice
      await eventually(() => t.claims.filter((c) => c.kind === "omni").length >= 3, 5000, "the omni entry handed back and claimed again");
      expect(t.sent).toEqual([]);
      t.release();
      await eventually(() => t.sent.length === 1, 5000, "the delivery");
      await eventually(() => t.w.waitingForMedia === 0, 5000, "nothing waiting");
      const done = await t.store.listOutbox(["done"], { limit: 10 });
      const omni = done.find((e) => e.kind === "omni");
      expect(omni?.attempts).toBe(1); // waiting is not an attempt
      expect(await t.store.listOutbox(["pending", "inflight", "dead"], { limit: 10 })).toEqual([]);
      expect(t.sent).toHaveLength(1);
    } finally {
      await t.w.stop();
      await t.store.close();
    }
  });

  it("stop() hands a waiting entry back, pending, so that the next process takes it at once", async () => {
    const t = await worker(60_000);
    try {
      await eventually(() => t.w.waitingForMedia === 1, 5000, "the omni entry parked");
      await t.w.stop();
      const pending = await t.store.listOutbox(["pending", "inflight"], { limit: 10 });
      expect(pending.find((e) => e.kind === "omni")).toMatchObject({ state: "pending", attempts: 0 });
    } finally {
      await t.store.close();
    }
  });
});

describe("media links and the admin token", () => {
  it("rotating adminToken (mediaSecret unset) leaves every media link valid: the key is generated once and kept in the store", async () => {
    stack = await startStack();
    const s = stack;
    expect(s.config.mediaSecret).toBeUndefined();
    await s.wecom.appSends(AGENT, imageXml("rot", s.wecom.putMedia(PNG, { contentType: "image/png", filename: "a.png" }), "7381973325934170777"));
    const [got] = await s.omni.waitFor(1);
    const link = got?.body.Content as string;
    expect((await fetch(link)).status).toBe(200);
    // the operator rotates the admin token and restarts
    await s.gw.stop();
    const { runGateway } = await import("../src/gateway/index.js");
    s.gw = await runGateway({ ...s.config, adminToken: "a-brand-new-admin-token-42" }, { log: silentLogger });
    expect((await fetch(link)).status).toBe(200);
    // a different store (another deployment) does not accept it
    await s.gw.stop();
    s.gw = await runGateway({ ...s.config, store: `sqlite:${join(s.dir, "other.db")}` }, { log: silentLogger });
    expect((await fetch(link)).status).toBe(403);
  });
});

describe("upgrading from a release that derived the media-link key from adminToken", () => {
  it("keeps the old key when the media folder already has files, so links already sent stay valid", async () => {
    const { firstMediaSecret } = await import("../src/gateway/index.js");
    const { createHmac } = await import("node:crypto");
    const { mkdirSync, writeFileSync } = await import("node:fs");
    const dir = mkdtempSync(join(tmpdir(), "wb-upgrade-"));
    const adminToken = "admin-token-0123456789";
    const fresh = firstMediaSecret({ mediaDir: join(dir, "media"), adminToken });
    expect(fresh).toMatch(/^[0-9a-f]{64}$/);
    expect(firstMediaSecret({ mediaDir: join(dir, "media"), adminToken })).not.toBe(fresh);
    mkdirSync(join(dir, "media", CORP), { recursive: true });
    writeFileSync(join(dir, "media", CORP, "m1-0"), "old file");
    const legacy = createHmac("sha256", adminToken).update("wecom-bridge media links").digest("hex");
    expect(firstMediaSecret({ mediaDir: join(dir, "media"), adminToken })).toBe(legacy);
  });
});
