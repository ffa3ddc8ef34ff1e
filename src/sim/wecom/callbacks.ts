/**
 * WeCom's side of callbacks: sign and encrypt a plaintext in the app envelope (XML, receiveId =
 * CorpID) or the bot envelope (JSON, receiveId ""), POST it with WeCom's timeout and retries,
 * verify and decrypt the passive reply; and the URL-verification GET.
 * @module
 */
import { parseXml, xmlText, cdata } from "../../wecom/xml.js";
import { CallbackClient, type CallbackTry, withQuery } from "./callback-client.js";
import { type SimApp, type SimBot, type SimContext, seconds } from "./context.js";
import { randomDigits } from "./ids.js";
import { WECOM_RULES } from "./rules.js";
import type { CallbackWithReply } from "./types.js";

/** WeCom's callback policy: how long a try may take, the wait between tries, tries in all. */
export interface CallbackPolicy {
  /** How long WeCom waits for an answer, ms. */
  timeoutMs: number;
  /** Wait between tries, ms. */
  retryIntervalMs: number;
  /** Tries in all. */
  maxTries: number;
}

/** Signs, encrypts and posts callbacks for one simulator. */
export class Callbacks {
  readonly #ctx: SimContext;
  readonly #policy: CallbackPolicy;
  /** The HTTP client (closed with the simulator). */
  readonly client = new CallbackClient();

  /**
   * @param ctx the shared simulator context
   * @param policy WeCom's timeout and retries
   */
  constructor(ctx: SimContext, policy: CallbackPolicy) {
    this.#ctx = ctx;
    this.#policy = policy;
  }

  /** Cancel everything in flight. */
  close(): void {
    this.client.close();
  }

  /**
   * POST a plaintext callback XML to an app, signed and encrypted in the app envelope
   * (`<xml><ToUserName/><Encrypt/><AgentID/></xml>`), with WeCom's retries; `reuse` sends the same
   * body, timestamp and nonce on every try. `reply` is the decrypted passive reply.
   */
  async toApp(app: SimApp, plaintext: string, reuse: boolean, label: string): Promise<CallbackWithReply<string>> {
    const url = app.callbackUrl;
    if (url === undefined) throw new Error(`app ${app.cfg.agentId} has no callback URL`);
    const corpId = this.#ctx.corpId;
    const build = (): CallbackTry => {
      const r = app.crypto.encryptReply(plaintext, seconds(this.#ctx), this.#ctx.ids.nonce());
      return {
        query: { msg_signature: r.msgsignature, timestamp: r.timestamp, nonce: r.nonce },
        body: `<xml><ToUserName>${cdata(corpId)}</ToUserName><Encrypt><![CDATA[${r.encrypt}]]></Encrypt><AgentID>${cdata(String(app.cfg.agentId))}</AgentID></xml>`,
      };
    };
    const result: CallbackWithReply<string> = await this.client.deliver({ label, url, contentType: "text/xml", build, reuse, ...this.#plan() }, (l) => this.#ctx.log(l));
    const body = result.body.trim();
    if (result.delivered && body !== "" && body !== "success") {
      try {
        const x = parseXml(body).value;
        const encrypt = xmlText(x, "Encrypt") ?? "";
        const q = { msg_signature: xmlText(x, "MsgSignature") ?? "", timestamp: xmlText(x, "TimeStamp") ?? "", nonce: xmlText(x, "Nonce") ?? "" };
        result.reply = app.crypto.decryptCallback(q, encrypt);
      } catch (e) {
        result.replyError = (e as Error).message;
      }
    }
    return result;
  }

  /**
   * POST a bot callback `{"encrypt": …}` (receiveId ""), with WeCom's retries (`tries` overrides
   * them: a stream poll is tried once); `reply` is the bot's answer verified, decrypted and parsed.
   */
  async toBot(bot: SimBot, plaintext: string, reuse: boolean, opts: { tries?: number } = {}): Promise<CallbackWithReply<unknown>> {
    const url = bot.callbackUrl;
    if (url === undefined) throw new Error(`bot ${bot.cfg.botId} has no callback URL`);
    const build = (): CallbackTry => {
      const r = bot.crypto.encryptReply(plaintext, seconds(this.#ctx), this.#ctx.ids.nonce());
      return { query: { msg_signature: r.msgsignature, timestamp: r.timestamp, nonce: r.nonce }, body: JSON.stringify({ encrypt: r.encrypt }) };
    };
    const plan = this.#plan();
    if (opts.tries !== undefined) plan.maxTries = opts.tries;
    const result: CallbackWithReply<unknown> = await this.client.deliver(
      { label: `bot ${bot.cfg.name ?? bot.cfg.botId}`, url, contentType: "application/json", build, reuse, ...plan },
      (l) => this.#ctx.log(l),
    );
    if (result.delivered && result.body.trim() !== "") {
      try {
        const r = JSON.parse(result.body) as Record<string, unknown>;
        const str = (k: string) => (typeof r[k] === "string" ? (r[k] as string) : "");
        const text = bot.crypto.decryptCallback({ msg_signature: str("msgsignature"), timestamp: str("timestamp"), nonce: str("nonce") }, str("encrypt"));
        try {
          result.reply = JSON.parse(text);
        } catch {
          result.reply = text;
        }
      } catch (e) {
        result.replyError = (e as Error).message;
      }
    }
    return result;
  }

  /** A member's text message to an app as a callback (MsgId a 64-bit decimal string above 2^53). */
  async appUserText(app: SimApp, fromUser: string, text: string, reuse: boolean): Promise<CallbackWithReply<string> & { msgId: string }> {
    const msgId = this.#ctx.ids.uint64();
    const xml =
      `<xml><ToUserName>${cdata(this.#ctx.corpId)}</ToUserName><FromUserName>${cdata(fromUser)}</FromUserName>` +
      `<CreateTime>${seconds(this.#ctx)}</CreateTime><MsgType><![CDATA[text]]></MsgType>` +
      `<Content>${cdata(text)}</Content><MsgId>${msgId}</MsgId><AgentID>${app.cfg.agentId}</AgentID></xml>`;
    const r = await this.toApp(app, xml, reuse, `app ${app.cfg.agentId}`);
    return { ...r, msgId };
  }

  /** The kf_msg_or_event callback (a fresh Token and OpenKfId) to an app, with WeCom's retries. */
  kfMsgOrEvent(app: SimApp, openKfId: string, token: string): Promise<CallbackWithReply<string>> {
    const xml =
      `<xml><ToUserName>${cdata(this.#ctx.corpId)}</ToUserName><CreateTime>${seconds(this.#ctx)}</CreateTime>` +
      `<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[kf_msg_or_event]]></Event>` +
      `<Token>${cdata(token)}</Token><OpenKfId>${cdata(openKfId)}</OpenKfId></xml>`;
    return this.toApp(app, xml, false, `app ${app.cfg.agentId} kf_msg_or_event`);
  }

  /**
   * The URL verification GET (`msg_signature, timestamp, nonce, echostr`) against a callback URL;
   * returns the body answered and the plaintext expected. Bots must answer within 1 s.
   */
  async verifyUrl(kind: "app" | "bot", target: SimApp | SimBot, name: string): Promise<{ status: number; body: string; expected: string }> {
    if (target.callbackUrl === undefined) throw new Error(`${kind} ${name} has no callback URL`);
    const expected = randomDigits(19);
    const r = target.crypto.encryptReply(expected, seconds(this.#ctx), this.#ctx.ids.nonce());
    const url = withQuery(target.callbackUrl, { msg_signature: r.msgsignature, timestamp: r.timestamp, nonce: r.nonce, echostr: r.encrypt });
    const timeout = kind === "bot" ? Math.min(WECOM_RULES.callback.botVerifyTimeoutMs, this.#policy.timeoutMs) : this.#policy.timeoutMs;
    const x = await this.client.exchange("GET", url, undefined, undefined, timeout);
    this.#ctx.log(`verify ${kind} ${name}: ${x.status === 0 ? (x.error ?? "no answer") : x.status}${x.status === 200 && x.body === expected ? " ok" : ""} (${x.ms} ms)`);
    return { status: x.status, body: x.body, expected };
  }

  #plan(): CallbackPolicy {
    return { timeoutMs: this.#policy.timeoutMs, retryIntervalMs: this.#policy.retryIntervalMs, maxTries: this.#policy.maxTries };
  }
}
