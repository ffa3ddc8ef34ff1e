/**
 * `npm run bench:codec`: the full inbound path of one app callback (parse the envelope, verify
 * the signature, decrypt, decode the inner XML into the model) on WeCom's official vector, side
 * by side with the crypto-only floor and three peer stacks. Last line is JSON:
 * `{"bench":"codec","ours":OPS,"floor":OPS,"peers":{"NAME":OPS,...}}`.
 */
import { createDecipheriv, createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { decrypt as wecomDecrypt, getSignature as wecomSignature } from "@wecom/crypto";
import { XMLParser } from "fast-xml-parser";
import xml2js from "xml2js";
import { decodeAppXml, parseCallbackEnvelope, WeComCrypto } from "../src/index.js";
import { compare } from "./harness.js";

const require = createRequire(import.meta.url);
const WechatCrypto = require("wechat-crypto") as new (
  token: string,
  key: string,
  id: string,
) => { getSignature(ts: string, nonce: string, enc: string): string; decrypt(enc: string): { message: string; id: string } };
const EasyWorkEncryptor = require("node-easywechat/dist/Work/Encryptor") as new (
  corpId: string,
  token: string,
  aesKey: string,
) => { decrypt(text: string, sig: string, nonce: string, ts: number): string };
const { parseXml: easyParseXml } = require("node-easywechat/dist/Core/Support/Utils") as {
  parseXml: (xml: string) => Promise<Record<string, unknown>>;
};

const vectors = JSON.parse(readFileSync(new URL("../test/fixtures/crypto/vectors.json", import.meta.url), "utf8"));
const v = vectors.official_decrypt_msg as {
  token: string;
  encodingAESKey: string;
  receiveId: string;
  msg_signature: string;
  timestamp: string;
  nonce: string;
  body: string;
  plaintext: string;
};
const query = { msg_signature: v.msg_signature, timestamp: v.timestamp, nonce: v.nonce };

// ours
const crypto = new WeComCrypto({ token: v.token, encodingAESKey: v.encodingAESKey, receiveId: v.receiveId });
const ours = () => decodeAppXml(crypto.decryptCallback(query, parseCallbackEnvelope(v.body).encrypt));

// floor: node:crypto SHA1 + AES only, the Encrypt string already in hand, no parsing
const key = Buffer.from(`${v.encodingAESKey}=`, "base64");
const iv = key.subarray(0, 16);
const encrypt = parseCallbackEnvelope(v.body).encrypt;
const floor = () => {
  const sig = createHash("sha1").update([v.token, v.timestamp, v.nonce, encrypt].sort().join("")).digest("hex");
  if (sig !== v.msg_signature) throw new Error("floor: signature");
  const d = createDecipheriv("aes-256-cbc", key, iv).setAutoPadding(false);
  const plain = Buffer.concat([d.update(Buffer.from(encrypt, "base64")), d.final()]);
  const len = plain.readUInt32BE(16);
  return plain.toString("utf8", 20, 20 + len);
};

// (b) @wecom/crypto + fast-xml-parser
const fxp = new XMLParser({ parseTagValue: false });
const wecomFxp = () => {
  const env = fxp.parse(v.body).xml as { Encrypt: string };
  if (wecomSignature(v.token, v.timestamp, v.nonce, env.Encrypt) !== v.msg_signature) throw new Error("b: signature");
  const { message } = wecomDecrypt(v.encodingAESKey, env.Encrypt);
  return fxp.parse(message).xml;
};

// (c) wechat-crypto + xml2js (xml2js calls back synchronously)
const wc = new WechatCrypto(v.token, v.encodingAESKey, v.receiveId);
const x2j = new xml2js.Parser({ explicitArray: false });
const parseSync = (xml: string): Record<string, unknown> => {
  let out: Record<string, unknown> | undefined;
  x2j.parseString(xml, (err: Error | null, res: Record<string, unknown>) => {
    if (err) throw err;
    out = res;
  });
  if (out === undefined) throw new Error("xml2js did not answer synchronously");
  return out;
};
const wechatCryptoXml2js = () => {
  const env = (parseSync(v.body) as { xml: { Encrypt: string } }).xml;
  if (wc.getSignature(v.timestamp, v.nonce, env.Encrypt) !== v.msg_signature) throw new Error("c: signature");
  return parseSync(wc.decrypt(env.Encrypt).message);
};

// (d) node-easywechat's Encryptor and XML parser (async by design)
const easy = new EasyWorkEncryptor(v.receiveId, v.token, v.encodingAESKey);
const easywechat = async () => {
  const env = (await easyParseXml(v.body)) as { Encrypt: string };
  const message = easy.decrypt(env.Encrypt, v.msg_signature, v.nonce, Number(v.timestamp));
  return easyParseXml(message);
};

// sanity: every candidate reads the same message
const check = ours();
if (check.content.type !== "text" || check.content.text !== "你好" || check.msgId !== "1456453720") throw new Error("ours: wrong decode");
if (floor() !== v.plaintext) throw new Error("floor: wrong plaintext");
if ((wecomFxp() as { Content: string }).Content !== "你好") throw new Error("b: wrong decode");
if (((wechatCryptoXml2js() as { xml: { Content: string } }).xml.Content as string) !== "你好") throw new Error("c: wrong decode");
if (((await easywechat()) as { Content: string }).Content !== "你好") throw new Error("d: wrong decode");

const rounds = Number(process.env.BENCH_ROUNDS ?? 7);
const ms = Number(process.env.BENCH_MS ?? 400);
const results = await compare(
  [
    { name: "ours", op: ours },
    { name: "floor", op: floor },
    { name: "@wecom/crypto+fast-xml-parser", op: wecomFxp },
    { name: "wechat-crypto+xml2js", op: wechatCryptoXml2js },
    { name: "node-easywechat", op: easywechat },
  ],
  rounds,
  ms,
);

const round = (n: number) => Math.round(n);
const o = results.get("ours") as number;
const fl = results.get("floor") as number;
const peers = Object.fromEntries([...results].filter(([k]) => k !== "ours" && k !== "floor").map(([k, n]) => [k, round(n)]));
const fastestPeer = Math.max(...Object.values(peers));

console.log(`codec: full inbound path of one app callback, median of ${rounds} rounds x ${ms} ms (node ${process.version})`);
console.log("| candidate | ops/s | vs ours |");
console.log("|---|---:|---:|");
for (const [name, n] of [...results].sort((a, b) => b[1] - a[1])) console.log(`| ${name} | ${round(n)} | ${(n / o).toFixed(2)}x |`);
console.log(`ours / fastest peer = ${(o / fastestPeer).toFixed(2)}x (target >= 3.5x); ours / floor = ${(o / fl).toFixed(2)}x (target >= 0.6x)`);
console.log(JSON.stringify({ bench: "codec", ours: round(o), floor: round(fl), peers }));
