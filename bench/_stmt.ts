import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeAppXml } from "../src/index.js";
import { SqliteStore } from "../src/store/sqlite/index.js";
const s = await SqliteStore.open({ path: join(mkdtempSync(join(tmpdir(), "wbs-")), "b.db") });
const db = s.db;
const xml = `<xml><ToUserName><![CDATA[ww1436e0e65a779aee]]></ToUserName><FromUserName><![CDATA[user1]]></FromUserName><CreateTime>1718852013</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[你好 1]]></Content><MsgId>7300000000000000001</MsgId><AgentID>1000002</AgentID></xml>`;
const m = decodeAppXml(xml);
const N = 64000, B = 32;
function time(name: string, f: (i: number) => void) {
  const t0 = performance.now();
  const tx = db.transaction((start: number) => { for (let j = 0; j < B; j++) f(start + j); });
  for (let i = 0; i < N; i += B) tx(i);
  console.log(name.padEnd(30), ((performance.now() - t0) * 1000 / N).toFixed(1), "us/item");
}
const ledger = db.prepare("INSERT INTO ledger (tenant, channel, key, message_seq, skip_reason, first_seen) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING");
const msg = db.prepare("INSERT INTO messages (tenant, channel, key, conversation_id, time, received_at, content_type, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
const out = db.prepare(`INSERT INTO outbox (tenant, kind, conversation_id, message_seq, payload, state, ready, attempts, next_attempt_at, created_at, updated_at)
       VALUES (@tenant, @kind, @conv, @seq, @payload, 'pending',
         CASE WHEN @conv IS NULL THEN 1
              WHEN EXISTS (SELECT 1 FROM outbox WHERE tenant = @tenant AND kind = @kind AND conversation_id = @conv AND state IN ('pending', 'inflight')) THEN 0
              ELSE 1 END, 0, @due, @now, @now)`);
const body = JSON.stringify(m);
time("empty tx", () => {});
time("JSON.stringify", () => JSON.stringify(m));
time("ledger", (i) => ledger.run("ww1", "app", `k${i}`, i, null, Date.now()));
time("messages", (i) => msg.run("ww1", "app", `k${i}`, `c${i % 50}`, 1, 2, "text", body));
time("outbox", (i) => out.run({ tenant: "ww1", kind: "omni", conv: `c${i % 50}`, seq: i, payload: '{"mediaCount":0}', due: 1, now: 2 }));
