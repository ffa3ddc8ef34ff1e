import autocannon from "autocannon";
import { WeComCrypto } from "../src/wecom/crypto.js";
const CORP = "ww1436e0e65a779aee";
const crypto = new WeComCrypto({ token: "benchtoken", encodingAESKey: "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt", receiveId: CORP });
let counter = 0n;
const pool: { path: string; body: string }[] = [];
for (let i = 0; i < 120000; i++) {
  counter++;
  const plain = `<xml><ToUserName><![CDATA[${CORP}]]></ToUserName><FromUserName><![CDATA[user${Number(counter % 50n)}]]></FromUserName><CreateTime>${Math.floor(Date.now() / 1000)}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好 ${counter}]]></Content><MsgId>${7300000000000000000n + counter}</MsgId><AgentID>1000002</AgentID></xml>`;
  const ts = String(Math.floor(Date.now() / 1000));
  const r = crypto.encryptReply(plain, ts, String(counter));
  pool.push({ path: `/wecom/app/bench?msg_signature=${r.msgsignature}&timestamp=${ts}&nonce=${counter}`, body: `<xml><ToUserName><![CDATA[${CORP}]]></ToUserName><Encrypt><![CDATA[${r.encrypt}]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>` });
}
let i = 0;
const r = await autocannon({ url: process.argv[2] as string, connections: Number(process.env.C ?? 32), duration: 5, method: "POST", requests: [{ setupRequest: (req) => { const cb = pool[i++ % pool.length]!; return { ...req, path: cb.path, body: cb.body }; } }] });
console.log("rps", r.requests.average, "p99", r.latency.p99, "non2xx", r.non2xx);
