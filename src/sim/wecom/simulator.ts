/**
 * The WeCom simulator: a stand-in for `qyapi.weixin.qq.com` and for WeCom's callbacks, speaking
 * the published protocol byte for byte and enforcing WeCom's rules (see rules.ts), so that the
 * gateway can be tested end to end where WeCom is unreachable.
 *
 * This is the composition root: it builds the shared context and one object per simulated API
 * family (tokens, KF, media, app messages, AI bots, callbacks), routes the HTTP server to them,
 * and keeps the public API tests and the sandbox use. Log lines never carry secrets, tokens or
 * signed queries.
 * @module
 */
import { WeComCrypto } from "../../wecom/crypto.js";
import { AppMessageService } from "./app-message.js";
import { BotWebhookService } from "./bot-webhook.js";
import { BotWsService } from "./bot-ws.js";
import { WS_MEDIA_PREFIX } from "./bot-ws-callbacks.js";
import type { CallbackResult } from "./callback-client.js";
import { Callbacks } from "./callbacks.js";
import type { SimApp, SimBot, SimContext } from "./context.js";
import { DEFAULT_KF_ERRCODES } from "./errors.js";
import { SimIds } from "./ids.js";
import { type KfSessionView, KfService, type KfSyncCall } from "./kf.js";
import { MediaService } from "./media.js";
import { WECOM_RULES } from "./rules.js";
import { type SimClock, SimScheduler } from "./scheduler.js";
import { SimServer } from "./server.js";
import { TokenService } from "./tokens.js";
import type {
  CallbackWithReply,
  WeComSimMedia,
  WeComSimOptions,
  WeComSimRequest,
  WeComSimSent,
  WeComSimStream,
  WeComSimWsConnection,
  WeComSimWsEvent,
  WeComSimWsEventReply,
  WeComSimWsFrame,
  WeComSimWsMedia,
  WeComSimWsPushed,
  WeComSimWsSend,
  WeComSimWsStream,
  WeComSimWsUpload,
  WeComSimWsUserMessage,
} from "./types.js";

/**
 * A running WeCom simulator.
 * @example
 * const sim = await WeComSimulator.start({ corpId, apps: [{ agentId: 1000002, secret, token, encodingAESKey, kf: true, callbackUrl }] });
 * sim.addKfAccount("wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q");
 * await sim.kfCustomerSends("wkAJ2…", "wmAJ2…", { msgtype: "text", text: { content: "你好" } });
 * await sim.close();
 */
export class WeComSimulator {
  readonly #ctx: SimContext;
  readonly #tokens: TokenService;
  readonly #callbacks: Callbacks;
  readonly #media: MediaService;
  readonly #kf: KfService;
  readonly #app: AppMessageService;
  readonly #bot: BotWebhookService;
  readonly #botWs: BotWsService;
  readonly #server: SimServer;
  readonly #scheduler: SimScheduler;
  readonly #clock: SimClock | undefined;
  #url = "";

  /** What the gateway sent: every accepted kf/send_msg, kf/send_msg_on_event, message/send, media/upload and aibot/response. */
  readonly sent: WeComSimSent[] = [];

  private constructor(opts: WeComSimOptions) {
    if (!opts.corpId) throw new Error("corpId is required");
    if (opts.clock !== undefined && opts.now !== undefined) throw new Error("give either clock or now, not both");
    this.#clock = opts.clock;
    const now = opts.clock?.now ?? opts.now ?? Date.now;
    const log = opts.log;
    const logLine = log === undefined ? () => {} : (line: string) => log(`[wecom-sim] ${line}`);
    this.#scheduler = new SimScheduler(now, opts.timers ?? "manual", logLine);
    const apps = new Map<number, SimApp>();
    const bots = new Map<string, SimBot>();
    this.#ctx = {
      corpId: opts.corpId,
      now,
      log: logLine,
      ids: new SimIds(),
      errcodes: { ...DEFAULT_KF_ERRCODES, ...opts.errcodes },
      baseUrl: () => this.#url,
      apps,
      bots,
      scheduler: this.#scheduler,
      record: (s) => {
        this.sent.push(s);
      },
    };
    for (const app of opts.apps) {
      if (!Number.isInteger(app.agentId)) throw new Error("app agentId must be an integer");
      if (apps.has(app.agentId)) throw new Error(`duplicate app ${app.agentId}`);
      const state: SimApp = { cfg: app, crypto: new WeComCrypto({ token: app.token, encodingAESKey: app.encodingAESKey, receiveId: opts.corpId }) };
      if (app.callbackUrl !== undefined) state.callbackUrl = app.callbackUrl;
      apps.set(app.agentId, state);
    }
    for (const bot of opts.bots ?? []) {
      if (bots.has(bot.botId)) throw new Error(`duplicate bot ${bot.botId}`);
      const state: SimBot = { cfg: bot, crypto: new WeComCrypto({ token: bot.token, encodingAESKey: bot.encodingAESKey, receiveId: "" }) };
      if (bot.callbackUrl !== undefined) state.callbackUrl = bot.callbackUrl;
      bots.set(bot.botId, state);
    }
    this.#tokens = new TokenService(this.#ctx, (opts.tokenTtlSec ?? WECOM_RULES.token.ttlMs / 1000) * 1000);
    this.#callbacks = new Callbacks(this.#ctx, {
      timeoutMs: opts.callbackTimeoutMs ?? WECOM_RULES.callback.timeoutMs,
      retryIntervalMs: opts.retryIntervalMs ?? WECOM_RULES.callback.retryIntervalMs,
      maxTries: Math.max(1, opts.maxTries ?? WECOM_RULES.callback.tries),
    });
    this.#media = new MediaService(this.#ctx, this.#tokens);
    this.#kf = new KfService(this.#ctx, this.#tokens, this.#callbacks, this.#media.exists);
    this.#app = new AppMessageService(this.#ctx, this.#tokens, this.#media.exists);
    this.#bot = new BotWebhookService(this.#ctx, this.#callbacks, opts.botPollIntervalMs ?? WECOM_RULES.bot.pollIntervalMs);
    this.#botWs = new BotWsService(this.#ctx, (nameOrId) => this.#bot.bot(nameOrId));
    this.#server = new SimServer(
      this.#ctx,
      {
        api: { ...this.#tokens.routes, ...this.#kf.routes, ...this.#media.routes, ...this.#app.routes, ...this.#bot.routes },
        raw: { "/aibot-media/": (key) => this.#media.serveBot(key), [WS_MEDIA_PREFIX]: (key) => this.#botWs.serveMedia(key) },
        upgrade: { [WECOM_RULES.botWs.path]: this.#botWs },
      },
      this.#callbacks.client,
      opts.maxBodyBytes ?? 32 * 1024 * 1024,
    );
  }

  /** Start a simulator listening on `host:port` (default 127.0.0.1, any free port). */
  static async start(opts: WeComSimOptions): Promise<WeComSimulator> {
    const sim = new WeComSimulator(opts);
    sim.#url = await sim.#server.listen(opts.port ?? 0, opts.host ?? "127.0.0.1");
    sim.#ctx.log(`listening on ${sim.#url} (corp ${sim.#ctx.corpId}, ${sim.#ctx.apps.size} app(s), ${sim.#ctx.bots.size} bot(s))`);
    return sim;
  }

  /** The API base, e.g. `http://127.0.0.1:PORT`: the gateway calls `${url}/cgi-bin/...`. */
  get url(): string {
    return this.#url;
  }

  /** The simulated corp's CorpID. */
  get corpId(): string {
    return this.#ctx.corpId;
  }

  /** Every request served (path without query), in order of completion. */
  get requests(): WeComSimRequest[] {
    return this.#server.requests;
  }

  /** Every access token issued, in order (tests check that none leaks). */
  get issuedTokens(): string[] {
    return this.#tokens.issued;
  }

  /** Every accepted kf/sync_msg call: whether it carried a (valid) callback Token. */
  get syncCalls(): KfSyncCall[] {
    return this.#kf.syncCalls;
  }

  /** Stop listening, cancel callbacks in flight and scheduled work, and drop open connections (long connections too). */
  async close(): Promise<void> {
    this.#scheduler.close();
    this.#callbacks.close();
    await this.#server.close();
  }

  /** Point an app (by agentId or name) or a bot (by botId or name) at a callback URL. */
  setCallbackUrl(kind: "app" | "bot", nameOrId: string | number, url: string): void {
    new URL(url); // throws on a malformed URL
    const target = kind === "app" ? this.#findApp(nameOrId) : this.#bot.bot(nameOrId);
    target.callbackUrl = url;
  }

  #findApp(nameOrId: string | number): SimApp {
    for (const a of this.#ctx.apps.values()) {
      if (a.cfg.agentId === Number(nameOrId) || (a.cfg.name !== undefined && a.cfg.name === nameOrId)) return a;
    }
    throw new Error(`unknown app ${String(nameOrId)}`);
  }

  // --- time ------------------------------------------------------------------------------------

  /**
   * Run what WeCom does on its own that is due by the simulator's clock (bot stream polls,
   * msg_send_fail reports), one after another, each to its end; resolves with how many ran. In
   * `manual` mode (the default) nothing else runs them: move your clock, then call this.
   */
  runDue(): Promise<number> {
    return this.#scheduler.runDue();
  }

  /**
   * Move the simulator's {@link SimClock} (the `clock` option) forward by `ms`, stopping at each
   * scheduled task on the way to run it at its own time (a stream poll each second, a delayed
   * msg_send_fail); resolves with how many ran.
   * @throws Error when the simulator was not given a SimClock
   */
  async advance(ms: number): Promise<number> {
    const clock = this.#clock;
    if (clock === undefined) throw new Error("advance needs the simulator to be started with a SimClock (option clock)");
    const target = clock.now() + Math.max(0, ms);
    let ran = 0;
    for (;;) {
      const next = this.#scheduler.nextAt;
      if (next === undefined || next > target) break;
      if (next > clock.now()) clock.set(next);
      ran += await this.#scheduler.runDue();
    }
    clock.set(target);
    return ran + (await this.#scheduler.runDue());
  }

  /** When the next scheduled work is due, per the simulator's clock (undefined when none waits). */
  get nextDueAt(): number | undefined {
    return this.#scheduler.nextAt;
  }

  // --- faults ------------------------------------------------------------------------------

  /** Answer the next `times` (default 1) calls of `api` (e.g. `kf/sync_msg`, `gettoken`) with `errcode`. */
  failNext(api: string, errcode: number, times = 1): void {
    this.#server.failNext(api, errcode, times);
  }

  /**
   * Delay every answer of `api` by `ms` (0 removes the delay): before the call takes effect
   * (default), or `after` it (the call took effect; its answer is late).
   */
  setDelay(api: string, ms: number, when: "before" | "after" = "before"): void {
    this.#server.setDelay(api, ms, when);
  }

  /** Answer the next `times` (default 1) calls of `api` with HTTP `status` (e.g. 502) and an HTML body. */
  setHttpFailure(api: string, status: number, times = 1): void {
    this.#server.setHttpFailure(api, status, times);
  }

  /** Every token issued so far becomes invalid: its next use answers 42001, and gettoken issues a new one. */
  expireTokens(): void {
    this.#tokens.expireAll();
  }

  // --- KF ------------------------------------------------------------------------------------

  /** Add a KF account (open_kfid like `wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q`). */
  addKfAccount(openKfId: string, name?: string): void {
    this.#kf.store.addAccount(openKfId, name ?? openKfId);
  }

  /** Make the next `n` sync_msg answers for the account empty pages with has_more 1 (a real WeCom behaviour). */
  injectEmptyPages(openKfId: string, n: number): void {
    this.#kf.store.injectEmptyPages(openKfId, n);
  }

  /**
   * Set a customer's service_state (0 unhandled, 1 smart assistant, 2 waiting pool, 3 human
   * servicer, 4 ended) directly, without an event: kf/send_msg answers 95018 outside 0 and 1.
   */
  setKfServiceState(openKfId: string, externalUserId: string, state: 0 | 1 | 2 | 3 | 4, servicerUserId?: string): void {
    this.#kf.setServiceState(openKfId, externalUserId, state, servicerUserId);
  }

  /**
   * A customer writes to a KF account: the item is appended to the account's sync_msg log and a
   * kf_msg_or_event callback (with a fresh Token valid 10 min and OpenKfId) is POSTed, signed and
   * encrypted, to the app that has kf: true (unless `callback: false`, or no URL is set).
   * `origin: 5` with `servicerUserId` records a servicer's message from the WeCom client instead.
   */
  kfCustomerSends(
    openKfId: string,
    externalUserId: string,
    msg: { msgtype: string; [body: string]: unknown },
    opts: { sendTime?: number; callback?: boolean; servicerUserId?: string; origin?: 3 | 5 } = {},
  ): Promise<{ msgid: string; callback?: CallbackResult }> {
    return this.#kf.customerSends(openKfId, externalUserId, msg, opts);
  }

  /**
   * A KF event (origin 4, msgtype event): `open_kfid` is added inside the event when missing. An
   * enter_session `welcome_code` becomes usable with send_msg_on_event for 20 s (text|msgmenu); a
   * session_status_change `msg_code` for 20 s when the session ends (change_type 3, text|msgmenu),
   * else 48 h (text). session_status_change also moves the customer's service_state.
   */
  kfEvent(openKfId: string, event: Record<string, unknown> & { event_type: string }, opts: { callback?: boolean; sendTime?: number } = {}): Promise<{ msgid: string; callback?: CallbackResult }> {
    return this.#kf.event(openKfId, event, opts);
  }

  /** Add a servicer (接待人员) to a KF account, on duty ("正在接待") unless `onDuty` is false: service_state/trans to 3 needs one. */
  addKfServicer(openKfId: string, userId: string, onDuty = true): void {
    this.#kf.addServicer(openKfId, userId, onDuty);
  }

  /**
   * A servicer acts in the WeCom client and WeCom reports it with a session_status_change event
   * (then kf_msg_or_event): `accept` from the waiting pool (2 → 3, change_type 1, msg_code for one
   * text within 48 h), `transfer` to another servicer (3 → 3, change_type 2), `end` (3 → 4,
   * change_type 3, msg_code for one text or menu within 20 s), `reopen` an ended session (4 → 3,
   * change_type 4). Throws when the session is not in the state the action starts from.
   */
  kfServicerActs(
    openKfId: string,
    externalUserId: string,
    action: "accept" | "transfer" | "end" | "reopen",
    servicerUserId: string,
    opts: { callback?: boolean } = {},
  ): Promise<{ msgid: string; msgCode?: string; callback?: CallbackResult }> {
    return this.#kf.servicerChangesSession(openKfId, externalUserId, action, servicerUserId, opts);
  }

  /**
   * From now on the customer's side refuses deliveries: kf/send_msg still answers ok and records the
   * message as not delivered (`dropped: "rejected"`), and a msg_send_fail event (`fail_msgid`,
   * `fail_type`, default 10: the user refuses) follows in sync_msg with a kf_msg_or_event callback,
   * at once, or `delayMs` later by the simulator's clock (then run by {@link runDue} or the realtime timer).
   */
  kfRejectCustomer(openKfId: string, externalUserId: string, opts: { failType?: number; delayMs?: number } = {}): void {
    this.#kf.rejectCustomer(openKfId, externalUserId, opts);
  }

  /** The customer's side accepts deliveries again. */
  kfAcceptCustomer(openKfId: string, externalUserId: string): void {
    this.#kf.acceptCustomer(openKfId, externalUserId);
  }

  /**
   * A customer's KF session as WeCom's rules see it: service_state (and servicer in state 3), when
   * the customer last wrote, how many messages were sent since, and when the 48-hour window closes.
   */
  kfSession(openKfId: string, externalUserId: string): KfSessionView | undefined {
    return this.#kf.sessionView(openKfId, externalUserId);
  }

  /** A new welcome_code / msg_code in WeCom's shape, for events built by hand. */
  newKfCode(): string {
    return this.#ctx.ids.kfCode();
  }

  // --- app callbacks ---------------------------------------------------------------------------

  /**
   * POST a plaintext callback XML to an app, signed and encrypted in the app envelope
   * (`<xml><ToUserName/><Encrypt/><AgentID/></xml>`, receiveId = CorpID), with WeCom's retries.
   * `reply` is the decrypted passive reply, when the app answered one.
   */
  appSends(agentId: number, plaintextXml: string, opts: { sameTimestampOnRetry?: boolean } = {}): Promise<CallbackWithReply<string>> {
    const app = this.#findApp(agentId);
    return this.#callbacks.toApp(app, plaintextXml, opts.sameTimestampOnRetry ?? false, `app ${app.cfg.agentId}`);
  }

  /** A member's text message to an app (MsgId a 64-bit decimal string above 2^53), sent as a callback. */
  appUserSendsText(agentId: number, fromUser: string, text: string, opts: { sameTimestampOnRetry?: boolean } = {}): Promise<CallbackWithReply<string> & { msgId: string }> {
    return this.#callbacks.appUserText(this.#findApp(agentId), fromUser, text, opts.sameTimestampOnRetry ?? false);
  }

  // --- AI bot callbacks --------------------------------------------------------------------------

  /**
   * POST a bot callback `{"encrypt": …}` (receiveId ""), with WeCom's retries; `reply` is the bot's
   * answer `{encrypt, msgsignature, timestamp, nonce}` verified, decrypted and parsed.
   */
  botSends(botId: string, message: Record<string, unknown>, opts: { sameTimestampOnRetry?: boolean } = {}): Promise<CallbackWithReply<unknown>> {
    return this.#bot.sends(botId, message, opts);
  }

  /**
   * A member's text message to a bot (single chat, or a group with `chatId`), with a response_url on
   * the simulator (one POST within an hour). When the bot answers with a stream, `stream` is its
   * record, and WeCom polls it by itself about once a second (`runDue`/`advance`, or the realtime
   * timer) until an answer finishes it or 6 minutes after this message.
   */
  botUserSendsText(botId: string, userId: string, text: string, opts: { chatId?: string } = {}): Promise<CallbackWithReply<unknown> & { msgid: string; stream?: WeComSimStream }> {
    return this.#bot.userSendsText(botId, userId, text, opts);
  }

  /**
   * A refresh poll of a stream, sent now by hand (WeCom's own polls run by themselves); returns the
   * decrypted answer, recorded as a `manual` frame when the stream is known.
   */
  botPollStream(botId: string, streamId: string, userId: string, opts: { chatId?: string } = {}): Promise<CallbackWithReply<unknown>> {
    return this.#bot.pollStream(botId, streamId, userId, opts);
  }

  /** A bot's stream as WeCom saw it: every answer (frame) received, what the user sees, whether it finished or expired. */
  botStream(botId: string, streamId: string): WeComSimStream | undefined {
    return this.#bot.stream(botId, streamId);
  }

  /** Every stream the bots opened, oldest first, optionally of one bot, one user message (msgid) or one user. */
  botStreams(filter: { botId?: string; msgid?: string; userId?: string } = {}): WeComSimStream[] {
    return this.#bot.streams(filter);
  }

  // --- AI bot long connection ------------------------------------------------------------------------

  /** The long-connection endpoint, `ws://HOST:PORT/aibot/ws` (WeCom's is `wss://openws.work.weixin.qq.com`). */
  get botWsUrl(): string {
    return `${this.#url.replace(/^http/, "ws")}${WECOM_RULES.botWs.path}`;
  }

  /**
   * A user's message to a bot over its subscribed long connection: an `aibot_msg_callback` frame
   * with a fresh req_id and the webhook's JSON (`msgid, aibotid, chatid (group), chattype, from,
   * create_time, msgtype, <msgtype>`). Image, file and video bytes (also images of `mixed`) are
   * served at a URL on the simulator, valid 5 minutes, AES-256-CBC encrypted with a key of their own
   * (`aeskey`, base64 of 32 bytes; IV its first 16 bytes; PKCS#7 to 32 bytes). On a silent
   * connection the frame is lost (`delivered: false`). Replies must carry the returned `reqId`.
   * @throws Error when the bot has no subscribed connection
   */
  botUserSendsWs(bot: string, msg: WeComSimWsUserMessage): WeComSimWsPushed {
    return this.#botWs.userSends(bot, msg);
  }

  /**
   * An event to a bot over its subscribed long connection: an `aibot_event_callback` frame with
   * `msgtype: "event"` and `event: {eventtype, …details}`. An `enter_chat` takes one
   * `aibot_respond_welcome_msg`, a `template_card_event` one `aibot_respond_update_msg`, each
   * within 5 s by the simulator's clock.
   * @throws Error when the bot has no subscribed connection
   */
  botEventWs(bot: string, event: WeComSimWsEvent): WeComSimWsPushed {
    return this.#botWs.event(bot, event);
  }

  /**
   * WeCom delivers a callback again: the same body (same msgid, same message time) with a new
   * req_id, on the bot's subscribed connection now (which may be a newer one).
   * @throws Error when `reqId` is not a recent callback, or the bot has no subscribed connection
   */
  botWsRepeat(reqId: string): WeComSimWsPushed {
    return this.#botWs.repeat(reqId);
  }

  /**
   * Make the bot's subscribed connection half-dead (`silent` true, the default): it stays open but
   * answers nothing (no acks, no WS pongs), ignores what it receives and loses the callbacks pushed
   * on it; a newer subscribe drops it without a close frame. `false` makes it answer again.
   * @throws Error when the bot has no subscribed connection
   */
  botWsSilence(bot: string, silent = true): void {
    this.#botWs.silence(bot, silent);
  }

  /** Terminate the bot's subscribed connection abruptly (no close frame: the client sees 1006). @throws Error when it has none */
  botWsDrop(bot: string): void {
    this.#botWs.drop(bot);
  }

  /** Answer the next `times` (default 1) `cmd` frames (e.g. `aibot_send_msg`, `ping`) of the bot's connections with `errcode`, doing nothing else. */
  botWsFailNext(bot: string, cmd: string, errcode: number, times = 1): void {
    this.#botWs.failNext(bot, cmd, errcode, times);
  }

  /** Every long connection, oldest first; of one bot: those that subscribed it. */
  botWsConnections(bot?: string): WeComSimWsConnection[] {
    return this.#botWs.connections(bot);
  }

  /** Every stream answered over long connections (aibot_respond_msg stream frames), each frame with its errcode; what the user sees. */
  botWsStreams(bot?: string): WeComSimWsStream[] {
    return this.#botWs.streams(bot);
  }

  /** Every aibot_send_msg and one-off (not stream) aibot_respond_msg, taken or refused, with its errcode. */
  botWsSends(bot?: string): WeComSimWsSend[] {
    return this.#botWs.sends(bot);
  }

  /** Every aibot_respond_welcome_msg, taken or refused, with its errcode. */
  botWsWelcomes(bot?: string): WeComSimWsEventReply[] {
    return this.#botWs.eventReplies("aibot_respond_welcome_msg", bot);
  }

  /** Every aibot_respond_update_msg (template card updates), taken or refused, with its errcode. */
  botWsCardUpdates(bot?: string): WeComSimWsEventReply[] {
    return this.#botWs.eventReplies("aibot_respond_update_msg", bot);
  }

  /** Every chunked upload (init, chunks, finish) over long connections, with finish's errcode and media_id. */
  botWsUploads(bot?: string): WeComSimWsUpload[] {
    return this.#botWs.uploads(bot);
  }

  /** A file uploaded over a long connection, by media_id (bytes, type, filename, bot). */
  botWsMedia(mediaId: string): WeComSimWsMedia | undefined {
    return this.#botWs.media(mediaId);
  }

  /** The last 2000 frames on long connections, either way (subscribe secrets and chunk data elided). */
  botWsFrames(bot?: string): WeComSimWsFrame[] {
    return this.#botWs.frames(bot);
  }

  // --- URL verification ----------------------------------------------------------------------------

  /**
   * The URL verification GET (`msg_signature, timestamp, nonce, echostr`) against a callback URL;
   * returns the body answered and the plaintext expected (the answer must be exactly it). Bots
   * must answer within 1 s.
   */
  verifyUrl(kind: "app" | "bot", nameOrId: string | number): Promise<{ status: number; body: string; expected: string }> {
    const target = kind === "app" ? this.#findApp(nameOrId) : this.#bot.bot(nameOrId);
    return this.#callbacks.verifyUrl(kind, target, String(nameOrId));
  }

  // --- media ---------------------------------------------------------------------------------------

  /** Store a temporary media file (valid 3 days per `now`) and return its media_id for media/get. */
  putMedia(bytes: Uint8Array, opts: { contentType: string; filename: string; type?: "image" | "voice" | "video" | "file"; disposition?: "raw" | "rfc5987" }): string {
    return this.#media.put(bytes, opts);
  }

  /** A stored media file (uploaded by the gateway or put by a test), or undefined. */
  getMedia(mediaId: string): WeComSimMedia | undefined {
    return this.#media.get(mediaId);
  }

  /**
   * Serve bytes the way WeCom serves an AI bot's image/file/video: an URL on the simulator whose
   * body is the bytes AES-encrypted with the bot's EncodingAESKey, valid 5 minutes per `now`.
   */
  putBotMedia(botId: string, bytes: Uint8Array): string {
    return this.#media.putBot(this.#bot.bot(botId), bytes);
  }
}
