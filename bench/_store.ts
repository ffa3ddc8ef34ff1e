import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeAppXml } from "../src/index.js";
import { messageItem } from "../src/gateway/pipeline.js";
import { SqliteStore } from "../src/store/sqlite/index.js";
const s = await SqliteStore.open({ path: join(mkdtempSync(join(tmpdir(), "wbs-")), "b.db") });
const xml = `<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName><FromUserName><![CDATA[user1]]></FromUserName><CreateTime>1718852013</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好 1]]></Content><MsgId>7300000000000000001</MsgId><AgentID>1000002</AgentID></xml>`;
const base = decodeAppXml(xml);
let n = 0;
const batch = Number(process.env.B ?? 32);
const N = 100000;
const t0 = performance.now();
for (let i = 0; i < N / batch; i++) {
  const items = [];
  for (let j = 0; j < batch; j++) { n++; items.push(messageItem("ww1", { ...base, id: String(n), conversationId: `c${n % 50}` }, { kind: "wecom", app: "a" })); }
  s.ingestSync(items);
}
const ms = performance.now() - t0;
console.log(`batch ${batch}: ${(N / ms * 1000).toFixed(0)} items/s, ${(ms * 1000 / N).toFixed(1)} us/item`);
