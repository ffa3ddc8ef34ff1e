/**
 * The sandbox behind `npm start` with no configuration: the gateway on SQLite plus the WeCom and
 * 全媒体 simulators, a short scripted conversation through every channel, and a live log of each
 * message crossing the bridge.
 * @module
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig } from "../config.js";
import { type RunningGateway, runGateway } from "../gateway/index.js";
import { createLogger } from "../log.js";
import type { UnifiedMessage } from "../model.js";
import type { PlaygroundHooks } from "../gateway/console/types.js";
import { OmniSimulator } from "./omni.js";
import { createPlayground } from "./playground.js";
import { WeComSimulator } from "./wecom.js";

/** Demo credentials of the sandbox (not secrets: they only exist inside it). */
export const SANDBOX = {
  corpId: "wwSANDBOX000000001",
  agentId: 1000002,
  appSecret: "sandbox-app-secret",
  appToken: "sandboxtoken",
  appAESKey: "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt",
  botId: "aibSANDBOX",
  botToken: "sandboxbottoken",
  botAESKey: "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR",
  /** The bot in long-connection mode (websocket): its botId and Secret. */
  liveBotId: "aibSANDBOXLIVE",
  liveBotSecret: "sandbox-live-bot-secret",
  openKfId: "wkSANDBOXKF0000000000000000001",
  omniAppId: "1001",
  omniSecret: "sandbox-omni-secret",
  adminToken: "sandbox-admin-token",
  archiveSecret: "sandbox-archive-secret",
} as const;

/** Options of {@link runSandbox}. */
export interface SandboxOptions {
  /** Where lines go. */
  write: (line: string) => void;
  /** Data folder (SQLite file and media). Default: a new temporary folder. */
  dataDir?: string;
  /** Gateway port; default 8080 (0: any). */
  port?: number;
}

/** A running sandbox. */
export interface Sandbox {
  gateway: RunningGateway;
  wecom: WeComSimulator;
  omni: OmniSimulator;
  /**
   * The console's Playground over these simulators (the gateway's console serves it at
   * `/console`): its own customers on the KF account, the app and the webhook bot, and the agent
   * answering them, each message crossing the bridge.
   */
  playground: PlaygroundHooks;
  /**
   * Run the scripted conversation: customers' messages to the 全媒体 on every channel, then agents'
   * answers back to each channel (the bot's streamed), a refusal reported to the agent and a
   * handoff. Resolves when everything arrived.
   */
  script(): Promise<{ delivered: number; answered: number }>;
  stop(): Promise<void>;
}

const label = (m: UnifiedMessage): string => {
  const c = m.content;
  const what = c.type === "text" ? JSON.stringify(c.text.length > 40 ? `${c.text.slice(0, 40)}…` : c.text) : c.type === "event" ? `event ${"eventName" in c.event ? c.event.eventName : c.event.name}` : c.type;
  return `${m.channel.padEnd(7)} ${(m.from?.id ?? "-").padEnd(14)} ${what}`;
};

/** `preferred` when it is free, else any free port. */
async function portOr(preferred: number): Promise<number> {
  const { createServer } = await import("node:net");
  const tryPort = (p: number) =>
    new Promise<number | undefined>((resolve) => {
      const s = createServer();
      s.once("error", () => resolve(undefined));
      s.listen(p, "127.0.0.1", () => {
        const got = (s.address() as { port: number }).port;
        s.close(() => resolve(got));
      });
    });
  return (await tryPort(preferred)) ?? ((await tryPort(0)) as number);
}

/** Start the sandbox (nothing is sent until {@link Sandbox.script}). */
export async function runSandbox(options: SandboxOptions): Promise<Sandbox> {
  const w = options.write;
  const dir = options.dataDir ?? mkdtempSync(join(tmpdir(), "wecom-bridge-sandbox-"));
  const omni = await OmniSimulator.start({ appId: SANDBOX.omniAppId, secret: SANDBOX.omniSecret });
  const wecom = await WeComSimulator.start({
    corpId: SANDBOX.corpId,
    apps: [{ name: "support", agentId: SANDBOX.agentId, secret: SANDBOX.appSecret, token: SANDBOX.appToken, encodingAESKey: SANDBOX.appAESKey, kf: true }],
    bots: [
      { name: "helper", botId: SANDBOX.botId, token: SANDBOX.botToken, encodingAESKey: SANDBOX.botAESKey },
      { name: "live", botId: SANDBOX.liveBotId, token: SANDBOX.botToken, encodingAESKey: SANDBOX.botAESKey, secret: SANDBOX.liveBotSecret },
    ],
    callbackTimeoutMs: 2000,
    retryIntervalMs: 200,
    timers: "realtime", // WeCom polls bot streams and reports refused KF deliveries by itself
  });
  wecom.addKfAccount(SANDBOX.openKfId, "售后客服");
  const port = options.port ?? (await portOr(8080));
  const config = parseConfig({
    listen: { host: "127.0.0.1", port },
    publicUrl: `http://127.0.0.1:${port}`,
    store: `sqlite:${join(dir, "bridge.db")}`,
    adminToken: SANDBOX.adminToken,
    mediaDir: join(dir, "media"),
    wecom: {
      apiBase: wecom.url,
      corpId: SANDBOX.corpId,
      apps: [{ name: "support", agentId: SANDBOX.agentId, secret: SANDBOX.appSecret, token: SANDBOX.appToken, encodingAESKey: SANDBOX.appAESKey, kf: true }],
      bots: [
        { name: "helper", botId: SANDBOX.botId, token: SANDBOX.botToken, encodingAESKey: SANDBOX.botAESKey, placeholder: "正在为您转接人工客服…" },
        // the same kind of bot over WeCom's long connection: no callback URL, the gateway connects
        { name: "live", botId: SANDBOX.liveBotId, mode: "websocket", secret: SANDBOX.liveBotSecret, wsUrl: wecom.botWsUrl, welcomeText: "您好，我是智能客服" },
      ],
    },
    archive: { secret: SANDBOX.archiveSecret },
    omni: { baseUrl: omni.url, appId: SANDBOX.omniAppId, secret: SANDBOX.omniSecret },
    handoff: { keywords: ["转人工"] },
    delivery: { maxAttempts: 10, baseDelayMs: 100, maxDelayMs: 1000, concurrency: 4, timeoutMs: 3000 },
  });
  const log = createLogger({ format: "silent" });
  const playground = createPlayground(wecom, omni, { openKfId: SANDBOX.openKfId, agentId: SANDBOX.agentId, botId: SANDBOX.botId });
  const gateway = await runGateway(config, { log, onStored: (m) => w(`  stored     ${label(m)}\n`), playground });
  wecom.setCallbackUrl("app", "support", `${gateway.url}/wecom/app/support`);
  wecom.setCallbackUrl("bot", "helper", `${gateway.url}/wecom/bot/helper`);
  omni.setAppUrl(gateway.url);
  // the long-connection bot subscribes as the gateway starts
  for (const end = Date.now() + 10_000; !wecom.botWsConnections("live").some((c) => c.subscribed); ) {
    if (Date.now() > end) throw new Error("sandbox: the gateway did not open the bot's long connection");
    await new Promise((r) => setTimeout(r, 25));
  }

  let shown = 0;
  let answered = 0;
  const watcher = setInterval(() => {
    for (; shown < omni.received.length; shown++) {
      const r = omni.received[shown];
      if (!r) continue;
      const failed = r.body.MsgType === "event" && (r.body.Content === "send_failed" || r.body.Content === "send_waiting") ? ` ${JSON.stringify(r.body.Tag)}` : "";
      w(`  全媒体 <=  ${r.body.FromUserId.padEnd(46)} ${r.body.MsgType.padEnd(8)} ${JSON.stringify(r.body.Content.length > 60 ? `${r.body.Content.slice(0, 60)}…` : r.body.Content)}${failed}\n`);
    }
    for (; answered < wecom.sent.length; answered++) {
      const x = wecom.sent[answered];
      if (x === undefined || x.api === "media/upload") continue;
      const b = x.body;
      const to = String(b.touser ?? b.code ?? "");
      const shown = x.api === "aibot/response" ? "(response_url)" : JSON.stringify(((b.text ?? b.markdown) as { content?: string } | undefined)?.content ?? b.msgtype);
      w(`  WeCom <=   ${x.api.padEnd(20)} ${to.padEnd(16)} ${shown}${x.delivered ? "" : ` (dropped: ${x.dropped})`}\n`);
    }
  }, 25);

  w(`wecom-bridge sandbox\n`);
  w(`  gateway    ${gateway.url}   (store ${config.store})\n`);
  w(`  console    ${gateway.url}/console   (admin token: ${SANDBOX.adminToken})\n`);
  w(`  WeCom sim  ${wecom.url}\n  全媒体 sim ${omni.url}\n`);
  w(`  admin API  curl -H 'Authorization: Bearer ${SANDBOX.adminToken}' ${gateway.url}/admin/messages\n\n`);

  const step = (title: string) => w(`\n${title}\n`);
  return {
    gateway,
    wecom,
    omni,
    playground,
    async script() {
      let expected = 0;
      const wait = async () => {
        await omni.waitFor(expected, 15_000);
        await new Promise((r) => setTimeout(r, 60));
      };
      step("1. A member writes to the self-built app (encrypted XML callback)");
      w(`  WeCom =>   app     zhangsan       "你好，我的报销单还没审批"\n`);
      await wecom.appUserSendsText(SANDBOX.agentId, "zhangsan", "你好，我的报销单还没审批");
      expected++;
      await wait();

      step("2. WeCom retries the same callback twice: stored once, delivered once");
      const xml = `<xml><ToUserName><![CDATA[${SANDBOX.corpId}]]></ToUserName><FromUserName><![CDATA[lisi]]></FromUserName><CreateTime>${Math.floor(Date.now() / 1000)}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[请帮我查一下发票]]></Content><MsgId>7381973325934178305</MsgId><AgentID>${SANDBOX.agentId}</AgentID></xml>`;
      for (let i = 0; i < 3; i++) {
        const r = await wecom.appSends(SANDBOX.agentId, xml);
        w(`  WeCom =>   app     lisi           try ${i + 1}: HTTP ${r.status}\n`);
      }
      expected++;
      await wait();

      step("3. A customer writes to the WeChat Customer Service account (KF: callback, then sync_msg)");
      await wecom.kfEvent(SANDBOX.openKfId, { event_type: "enter_session", external_userid: "wmCUSTOMER0001", scene: "website", welcome_code: wecom.newKfCode() }, { callback: false });
      w(`  WeCom =>   kf      wmCUSTOMER0001 enters the session\n`);
      const png = Buffer.from("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8cfc0f01f0005000201e2210bc70000000049454e44ae426082", "hex");
      const mediaId = wecom.putMedia(png, { contentType: "image/png", filename: "receipt.png" });
      await wecom.kfCustomerSends(SANDBOX.openKfId, "wmCUSTOMER0001", { msgtype: "text", text: { content: "我买的耳机有杂音，想换货" } }, { callback: false });
      w(`  WeCom =>   kf      wmCUSTOMER0001 "我买的耳机有杂音，想换货"\n`);
      await wecom.kfCustomerSends(SANDBOX.openKfId, "wmCUSTOMER0001", { msgtype: "image", image: { media_id: mediaId } });
      w(`  WeCom =>   kf      wmCUSTOMER0001 image (fetched with media/get, served by a signed link)\n`);
      expected += 3;
      await wait();

      step("4. A member asks the AI bot (encrypted JSON callback, answered at once with a stream)");
      const bot = await wecom.botUserSendsText(SANDBOX.botId, "wangwu", "今天的会议室还有空吗？");
      w(`  WeCom =>   bot     wangwu         "今天的会议室还有空吗？"\n`);
      w(`  bot reply  ${JSON.stringify(bot.reply)}\n`);
      expected++;
      await wait();

      step("4b. A member asks a bot in long-connection mode (no callback URL: the gateway holds WeCom's WebSocket)");
      const live = wecom.botUserSendsWs("live", { userid: "sunqi", msgtype: "text", text: "帮我查一下快递" });
      w(`  WeCom =>   ws bot  sunqi          "帮我查一下快递" (aibot_msg_callback, req_id ${live.reqId})\n`);
      expected++;
      await wait();

      step("5. The session archive pushes a record");
      const record = {
        msgid: `sandbox_${Date.now()}_external`,
        action: "send",
        from: "wmCUSTOMER0002",
        tolist: "zhangsan",
        roomid: "",
        msgtime: String(Date.now()),
        msgtype: "text",
        text: { content: "合同已经寄出，请查收" },
        seq: "1",
        corpid: SANDBOX.corpId,
        is_from_ext: "true",
      };
      const res = await fetch(`${gateway.url}/archive/push?secret=${SANDBOX.archiveSecret}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ message_id: "1531161872865219346", type: 101, content: JSON.stringify(record), gmt_create: Math.floor(Date.now() / 1000) }),
      });
      w(`  push =>    archive wmCUSTOMER0002 "合同已经寄出，请查收" (HTTP ${res.status})\n`);
      expected++;
      await wait();

      step("6. The 全媒体 goes down for a moment: the message waits in the outbox, then arrives once");
      omni.setFailure("http500");
      await wecom.appUserSendsText(SANDBOX.agentId, "zhaoliu", "系统是不是出问题了？");
      w(`  WeCom =>   app     zhaoliu        "系统是不是出问题了？" (全媒体 answers HTTP 500)\n`);
      await new Promise((r) => setTimeout(r, 400));
      w(`  全媒体 is back\n`);
      omni.setFailure(false);
      expected++;
      await wait();
      const delivered = omni.received.length;
      w(`\n${delivered} messages crossed the bridge, each once.\n`);

      const address = (prefix: string) => omni.received.find((r) => r.body.FromUserId.startsWith(prefix))?.body.FromUserId as string;
      const agent = async (to: string, content: string, tag?: Record<string, unknown>) => {
        const r = await omni.sendAgentReply({ ToUserId: to, WorkerNum: "8001", WorkerName: "小王", MsgType: "text", Content: content, ...(tag ? { Tag: tag } : {}) });
        w(`  全媒体 =>  ${to.padEnd(46)} text     ${JSON.stringify(content)} → ${JSON.stringify(r.reply)}\n`);
        return r.reply as { errcode: number; errmsg: string };
      };
      const sentCount = () => wecom.sent.filter((x) => x.api !== "media/upload" && x.delivered).length;
      const until = async (check: () => boolean, what: string) => {
        const end = Date.now() + 15_000;
        while (!check()) {
          if (Date.now() > end) throw new Error(`sandbox: timed out waiting for ${what}`);
          await new Promise((r) => setTimeout(r, 25));
        }
        await new Promise((r) => setTimeout(r, 60));
      };

      step("7. Agents answer in the 全媒体: each answer goes back on the customer's channel");
      await agent(address("app:"), "您的报销单已转财务审批，今天内完成");
      await agent(address("kf:"), "很抱歉给您带来不便，已为您登记换货");
      await until(() => sentCount() >= 2, "app and KF answers");

      step("8. The bot's answer is streamed: WeCom polls the stream and sees the agent's text replace the placeholder");
      const botTo = address("bot:");
      await agent(botTo, "10 楼的小会议室下午有空，");
      await agent(botTo, "需要我帮您预订吗？", { finish: true });
      const stream = () => wecom.botStreams({ botId: SANDBOX.botId }).at(-1);
      await until(() => stream()?.status === "finished", "the bot stream to finish");
      for (const f of stream()?.frames ?? []) if (f.finish || f.source === "reply") w(`  WeCom <=   stream ${f.source.padEnd(6)} finish=${f.finish} ${JSON.stringify(f.content)}\n`);

      step("8b. The long-connection bot's answer is pushed as aibot_respond_msg frames; a later one goes with aibot_send_msg");
      const liveTo = address(`bot:${SANDBOX.liveBotId}:`);
      await agent(liveTo, "您的快递已到驿站，", { finish: true });
      const liveStream = () => wecom.botWsStreams("live").at(-1);
      await until(() => liveStream()?.status === "finished", "the long-connection stream to finish");
      for (const f of liveStream()?.frames ?? []) w(`  WeCom <=   aibot_respond_msg finish=${f.finish} ${JSON.stringify(f.content)}\n`);
      await agent(liveTo, "取件码 3-2-1008");
      await until(() => wecom.botWsSends("live").some((x) => x.errcode === 0), "the aibot_send_msg");
      for (const x of wecom.botWsSends("live")) w(`  WeCom <=   aibot_send_msg   ${x.chatid.padEnd(16)} ${JSON.stringify((x.body.markdown as { content?: string } | undefined)?.content ?? x.msgtype)}\n`);

      step("9. WeCom's rules: a customer whose session a WeCom servicer took cannot be answered by the API");
      await wecom.kfCustomerSends(SANDBOX.openKfId, "wmCUSTOMER0003", { msgtype: "text", text: { content: "我要退款" } });
      await omni.waitFor(delivered + 1, 15_000);
      const third = omni.received.at(-1)?.body.FromUserId as string;
      wecom.setKfServiceState(SANDBOX.openKfId, "wmCUSTOMER0003", 3, "servicer01");
      w(`  WeCom      a servicer takes wmCUSTOMER0003's session in the WeCom client (service_state 3)\n`);
      await agent(third, "退款已受理");
      await until(() => omni.received.some((r) => r.body.Content === "send_failed"), "the refusal notice");
      await agent(third, "请问还有其他问题吗？");

      step("10. Handoff: a customer asks for a human; the 全媒体 gets event.CLICK.RG after the message");
      await wecom.kfCustomerSends(SANDBOX.openKfId, "wmCUSTOMER0001", { msgtype: "text", text: { content: "转人工" } });
      await until(() => omni.received.some((r) => r.body.MsgType === "event.CLICK.RG"), "the handoff event");
      const answered = sentCount();
      w(`\n${answered} agent answers reached WeCom; the refused one was reported to the agent.\n`);
      return { delivered, answered };
    },
    async stop() {
      clearInterval(watcher);
      await gateway.stop();
      await wecom.close();
      await omni.close();
    },
  };
}
