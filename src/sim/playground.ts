/**
 * The operator console's Playground over the sandbox's simulators: a person plays a customer (a
 * WeChat customer of the KF account, a member writing to the self-built app, a user of the AI bot)
 * and the 全媒体 agent who answers. Nothing shortcuts the gateway: the customer's messages are the
 * WeCom simulator's callbacks (KF: the item in sync_msg plus kf_msg_or_event; app: the encrypted
 * XML callback; bot: the encrypted JSON callback, whose stream the simulator then polls by itself),
 * and the agent's answers are the 全媒体 simulator's signed staffService requests to the gateway.
 * What each side shows is read back from the simulators: what WeCom delivered to the customer, and
 * what the 全媒体 received from them.
 *
 * Bounds: each side of each channel keeps its last {@link PLAYGROUND_MAX_LINES} lines; the
 * simulators' ever-growing records (`wecom.sent`, `omni.received`) are read from where the last
 * look stopped, so a {@link PlaygroundHooks.log} call costs what arrived since the previous one
 * plus the lines it returns, never a scan of the sandbox's whole history.
 * @module
 */
import { randomBytes } from "node:crypto";
import type { PlaygroundChannel, PlaygroundHooks, PlaygroundInfo, PlaygroundLine, PlaygroundLog } from "../gateway/console/types.js";
import { parseConversationAddress } from "../wecom/address.js";
import type { OmniReceived, OmniSimulator } from "./omni.js";
import type { WeComSimSent, WeComSimStream, WeComSimulator } from "./wecom.js";

/** Lines kept per side (customer, agent) of each channel's chat: older ones are forgotten. */
export const PLAYGROUND_MAX_LINES = 200;

/** The longest message either side may write, in characters (Unicode code points). */
export const PLAYGROUND_MAX_TEXT = 2000;

/** The Playground's channels, as the console lists them. */
export const PLAYGROUND_CHANNELS: readonly { id: PlaygroundChannel; label: string }[] = [
  { id: "kf", label: "微信客服 KF" },
  { id: "app", label: "自建应用 app" },
  { id: "bot", label: "智能机器人 bot" },
];

/** Who the Playground's customers are, and where they write (accounts of the WeCom simulator the gateway is configured with). */
export interface PlaygroundIds {
  /** The KF account (open_kfid) the KF customer writes to. */
  openKfId: string;
  /** The KF customer's external_userid; default `wmPLAYGROUND0001`. */
  kfUserId?: string;
  /** The self-built app (agentId) the member writes to. */
  agentId: number;
  /** The app member's userid; default `playground`. */
  appUserId?: string;
  /** The webhook-mode AI bot (botId) the user writes to. */
  botId: string;
  /** The bot user's userid; default `playground`. */
  botUserId?: string;
  /** The agent's WorkerNum; default `8001`. */
  workerNum?: string;
  /** The agent's WorkerName; default `小王`. */
  workerName?: string;
}

/** One line and where it sorts; a streamed bot answer reads its text from the simulator's stream. */
interface Entry {
  line: PlaygroundLine;
  seq: number;
  stream?: WeComSimStream;
}

/** One side of a chat: lines in (time, arrival) order, at most {@link PLAYGROUND_MAX_LINES}. */
class Side {
  readonly #entries: Entry[] = [];
  readonly #nextSeq: () => number;

  constructor(nextSeq: () => number) {
    this.#nextSeq = nextSeq;
  }

  /** Add a line at its place by time (lines mostly come in order: the search starts at the end). */
  add(line: PlaygroundLine, stream?: WeComSimStream): Entry {
    const entry: Entry = stream === undefined ? { line, seq: this.#nextSeq() } : { line, seq: this.#nextSeq(), stream };
    const list = this.#entries;
    let i = list.length;
    while (i > 0 && (list[i - 1] as Entry).line.time > line.time) i--;
    list.splice(i, 0, entry);
    if (list.length > PLAYGROUND_MAX_LINES) list.splice(0, list.length - PLAYGROUND_MAX_LINES);
    return entry;
  }

  /** Copies of the lines as they are now (a stream's latest content, and whether it still streams). */
  lines(): PlaygroundLine[] {
    return this.#entries.map(({ line, stream }) => {
      if (stream === undefined) return { ...line };
      const out: PlaygroundLine = { ...line, text: stream.shown === "" ? "…" : stream.shown };
      if (stream.status === "open") out.streaming = true;
      return out;
    });
  }
}

/** A bounded insertion-ordered map: the oldest keys go first. */
class Recent<V> {
  readonly #map = new Map<string, V>();
  readonly #max: number;

  constructor(max: number) {
    this.#max = max;
  }

  set(key: string, value: V): void {
    this.#map.set(key, value);
    if (this.#map.size > this.#max) {
      const oldest = this.#map.keys().next().value;
      if (oldest !== undefined) this.#map.delete(oldest);
    }
  }

  get(key: string): V | undefined {
    return this.#map.get(key);
  }
}

/** What the Playground keeps of one channel. */
interface ChannelState {
  customer: Side;
  agent: Side;
  /** The conversation address the gateway gave this customer (FromUserId at the 全媒体): whom the agent answers. */
  address?: string;
  /** Messages the customer wrote (ids). */
  written: number;
  /** Answers the agent sent (ids). */
  answered: number;
  /** Tag.msgid of the agent's recent answers → their text (to name them in a send_failed notice). */
  answers: Recent<string>;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A string field of an object field (`body.text.content`), or undefined. */
function inner(body: Record<string, unknown>, field: string, key: string): string | undefined {
  const o = body[field];
  const v = isObject(o) ? o[key] : undefined;
  return typeof v === "string" ? v : undefined;
}

/** What a customer's phone shows of a message WeCom delivered: its text, else its type. */
function deliveredText(body: Record<string, unknown>): string {
  const msgtype = typeof body.msgtype === "string" ? body.msgtype : "message";
  if (msgtype === "text" || msgtype === "markdown") return inner(body, msgtype, "content") ?? `[${msgtype}]`;
  if (msgtype === "template_card") return "[template card]";
  return `[${msgtype}]`;
}

/** Check a message's text: 1 to {@link PLAYGROUND_MAX_TEXT} characters, not only blanks. */
function checkText(text: unknown): string {
  if (typeof text !== "string" || text.trim() === "") throw new Error("the message is empty: write 1 to 2000 characters");
  const length = [...text].length;
  if (length > PLAYGROUND_MAX_TEXT) throw new Error(`the message is too long: ${length} characters, at most ${PLAYGROUND_MAX_TEXT}`);
  return text;
}

/**
 * The Playground's hooks over the sandbox's simulators (give them to `runGateway(config, { playground })`).
 * The simulators must be the ones the gateway is configured with, WeCom's started with
 * `timers: "realtime"` (it then polls bot streams by itself), and the 全媒体's `setAppUrl` pointed at
 * the gateway before the agent answers.
 *
 * Decisions:
 * - KF: the customer enters the session (an `enter_session` event, with a welcome_code) once,
 *   before their first message, as a WeChat customer opening the chat does and as the sandbox's
 *   script does; its callback is left to the message's, so the gateway pulls both in one sync_msg.
 * - Every agent answer carries a fresh `Tag.msgid`: without one the gateway treats the same text to
 *   the same customer within `omni.dedupWindowSec` as a retry, and a person typing "ok" twice would
 *   see the second one vanish.
 * - Bot: every agent answer finishes its stream (`Tag.finish: true`); see the comment on agentSends below.
 * @param wecom the WeCom simulator (KF account `ids.openKfId` added, app and bot callback URLs set)
 * @param omni the 全媒体 simulator
 * @param ids the accounts the customers write to, and who the customers and the agent are
 */
export function createPlayground(wecom: WeComSimulator, omni: OmniSimulator, ids: PlaygroundIds): PlaygroundHooks {
  const kfUserId = ids.kfUserId ?? "wmPLAYGROUND0001";
  const appUserId = ids.appUserId ?? "playground";
  const botUserId = ids.botUserId ?? "playground";
  const workerNum = ids.workerNum ?? "8001";
  const workerName = ids.workerName ?? "小王";
  let seq = 0;
  const nextSeq = () => ++seq;
  const newChannel = (): ChannelState => ({ customer: new Side(nextSeq), agent: new Side(nextSeq), written: 0, answered: 0, answers: new Recent(PLAYGROUND_MAX_LINES) });
  const channels: Record<PlaygroundChannel, ChannelState> = { kf: newChannel(), app: newChannel(), bot: newChannel() };
  /** msgids of the bot user's messages → themselves (their response_url deliveries are theirs). */
  const botMessages = new Recent<true>(PLAYGROUND_MAX_LINES);
  /** welcome_codes of the KF customer's enter_session (a send_msg_on_event with one reaches them). */
  const welcomeCodes = new Recent<true>(16);
  let entered: Promise<void> | undefined;
  /** How far `wecom.sent` and `omni.received` were read. */
  let sentRead = 0;
  let receivedRead = 0;

  const channelOf = (c: unknown): ChannelState => {
    if (c !== "kf" && c !== "app" && c !== "bot") throw new Error(`unknown channel ${JSON.stringify(c)}: kf, app or bot`);
    return channels[c];
  };

  /** The channel whose customer a WeCom send reached, when it is one of ours and reached them. */
  const deliveredTo = (x: WeComSimSent): PlaygroundChannel | undefined => {
    if (!x.delivered) return undefined; // refused or dropped: the customer never sees it
    const b = x.body;
    switch (x.api) {
      case "kf/send_msg":
        return b.touser === kfUserId && b.open_kfid === ids.openKfId ? "kf" : undefined;
      case "kf/send_msg_on_event":
        return typeof b.code === "string" && welcomeCodes.get(b.code) ? "kf" : undefined;
      case "message/send": {
        if (Number(b.agentid) !== ids.agentId) return undefined;
        const me = x.recipients?.find((r) => r.userid.toLowerCase() === appUserId.toLowerCase());
        return me?.delivered === true ? "app" : undefined;
      }
      case "aibot/response":
        return b.bot_id === ids.botId && typeof b.msgid === "string" && botMessages.get(b.msgid) ? "bot" : undefined;
      default:
        return undefined;
    }
  };

  /** The channel of a 全媒体 address when it is one of the Playground's customers. */
  const customerOf = (address: string): PlaygroundChannel | undefined => {
    const a = parseConversationAddress(address);
    if (a === undefined) return undefined;
    if (a.channel === "kf") return a.corpId === wecom.corpId && a.openKfId === ids.openKfId && a.externalUserId === kfUserId ? "kf" : undefined;
    if (a.channel === "app") return a.corpId === wecom.corpId && a.agentId === ids.agentId && a.userId === appUserId ? "app" : undefined;
    if (a.channel === "bot") return a.botId === ids.botId && a.chat === "user" && a.id === botUserId ? "bot" : undefined;
    return undefined;
  };

  /** What the agent desk shows of a message the 全媒体 received. */
  const received = (ch: ChannelState, r: OmniReceived, index: number): void => {
    const { MsgType, Content, Tag } = r.body;
    const id = `omni:${index}`;
    if (MsgType === "event" && (Content === "send_failed" || Content === "send_waiting")) {
      // the gateway tells the agent that an answer did not reach the customer (or waits for their next message)
      const tag = isObject(Tag) ? Tag : {};
      const ref = typeof tag.ref === "string" ? tag.ref : "";
      const reason = typeof tag.reason === "string" && tag.reason !== "" ? tag.reason : typeof tag.errmsg === "string" && tag.errmsg !== "" ? tag.errmsg : Content;
      ch.agent.add({ id, from: "agent", text: ch.answers.get(ref) ?? (ref || Content), time: r.at, failed: reason });
      return;
    }
    const text = MsgType === "text" ? Content : MsgType.startsWith("event") ? `[${MsgType}${Content === "" ? "" : `: ${Content}`}]` : `[${MsgType}]`;
    ch.agent.add({ id, from: "customer", text, time: r.at });
  };

  /** Read what the simulators recorded since the last look (each record once). */
  const catchUp = (): void => {
    const sent = wecom.sent;
    for (; sentRead < sent.length; sentRead++) {
      const x = sent[sentRead];
      const c = x === undefined ? undefined : deliveredTo(x);
      if (x === undefined || c === undefined) continue;
      const text = x.api === "message/send" && x.shown !== undefined ? x.shown : deliveredText(x.body);
      channels[c].customer.add({ id: `wecom:${sentRead}`, from: "agent", text, time: x.at });
    }
    const got = omni.received;
    for (; receivedRead < got.length; receivedRead++) {
      const r = got[receivedRead];
      const c = r === undefined ? undefined : customerOf(r.body.FromUserId);
      if (r === undefined || c === undefined) continue;
      const ch = channels[c];
      ch.address ??= r.body.FromUserId;
      received(ch, r, receivedRead);
    }
  };

  /** The KF customer opens the chat: enter_session, once (the message's callback carries it to the gateway). */
  const enterKf = (): Promise<void> => {
    entered ??= (async () => {
      const code = wecom.newKfCode();
      welcomeCodes.set(code, true);
      await wecom.kfEvent(ids.openKfId, { event_type: "enter_session", external_userid: kfUserId, scene: "playground", welcome_code: code }, { callback: false });
    })().catch((e: unknown) => {
      entered = undefined; // try again with the next message
      throw e;
    });
    return entered;
  };

  return {
    info(): PlaygroundInfo {
      return { enabled: true, channels: PLAYGROUND_CHANNELS.map((c) => ({ ...c })) };
    },

    log(channel: PlaygroundChannel): PlaygroundLog {
      const ch = channelOf(channel);
      catchUp();
      return { channel, customer: ch.customer.lines(), agent: ch.agent.lines() };
    },

    async customerSends(channel: PlaygroundChannel, text: string): Promise<void> {
      const ch = channelOf(channel);
      checkText(text);
      const n = ++ch.written;
      if (channel === "kf") await enterKf();
      const mine = ch.customer.add({ id: `me:${n}`, from: "customer", text, time: Date.now() });
      const lost = (r: { delivered: boolean; status: number; error?: string }) => {
        // WeCom gave up on the callback: the gateway never got the message
        if (!r.delivered) mine.line.failed = `WeCom could not deliver the callback to the gateway (${r.error ?? `HTTP ${r.status}`})`;
      };
      if (channel === "kf") {
        // the item goes into sync_msg, then kf_msg_or_event: the gateway pulls it (a failed
        // callback loses nothing: the item waits in sync_msg for the gateway's next pull)
        await wecom.kfCustomerSends(ids.openKfId, kfUserId, { msgtype: "text", text: { content: text } });
      } else if (channel === "app") {
        lost(await wecom.appUserSendsText(ids.agentId, appUserId, text));
      } else {
        const r = await wecom.botUserSendsText(ids.botId, botUserId, text);
        botMessages.set(r.msgid, true);
        lost(r);
        if (r.stream !== undefined) {
          // the stream is the simulator's own record, updated at each refresh: one line that grows
          ch.customer.add({ id: `stream:${r.msgid}`, from: "agent", text: r.stream.shown, time: r.stream.startedAt }, r.stream);
        } else if (isObject(r.reply)) {
          const shown = deliveredText(r.reply);
          ch.customer.add({ id: `reply:${r.msgid}`, from: "agent", text: shown, time: Date.now() });
        }
      }
    },

    /**
     * Bot answers (`Tag.finish: true` on each): a webhook bot's answer goes into the stream of the
     * user's latest message (the placeholder first, then the agent's text). Without a finish the
     * gateway keeps the stream open until `streamIdleSec` after the agent's last text, and the
     * person would watch a bubble still "typing" for that long; with it each customer message gets
     * one finished streamed answer as soon as WeCom's next refresh (about a second) picks it up,
     * and WeCom stops polling. A second answer to the same message goes through its response_url
     * (a separate markdown message, shown on the customer's side as its own line); a third waits
     * for the customer's next message, whose stream it opens, and the agent desk shows the
     * gateway's `send_waiting` notice.
     */
    async agentSends(channel: PlaygroundChannel, text: string): Promise<void> {
      const ch = channelOf(channel);
      checkText(text);
      catchUp();
      const to = ch.address;
      if (to === undefined) throw new Error("nobody to answer yet: write as the customer first (and wait until the message reaches the agent desk)");
      const n = ++ch.answered;
      const msgid = `playground-${channel}-${n}-${randomBytes(4).toString("hex")}`;
      ch.answers.set(msgid, text);
      const mine = ch.agent.add({ id: `agent:${n}`, from: "agent", text, time: Date.now() });
      const tag: Record<string, unknown> = { msgid };
      if (channel === "bot") tag.finish = true;
      let result: Awaited<ReturnType<OmniSimulator["sendAgentReply"]>>;
      try {
        result = await omni.sendAgentReply({ ToUserId: to, WorkerNum: workerNum, WorkerName: workerName, MsgType: "text", Content: text, Tag: tag });
      } catch (e) {
        mine.line.failed = `the 全媒体 could not reach the gateway: ${(e as Error).message}`;
        throw new Error(mine.line.failed);
      }
      const reply = isObject(result.reply) ? result.reply : undefined;
      const errcode = reply?.errcode;
      if (typeof errcode !== "number") {
        mine.line.failed = `the gateway answered HTTP ${result.status} without an errcode`;
        throw new Error(mine.line.failed);
      }
      if (errcode !== 0) {
        const errmsg = typeof reply?.errmsg === "string" ? reply.errmsg : "";
        mine.line.failed = `the gateway refused it: errcode ${errcode}${errmsg === "" ? "" : ` ${errmsg}`}`;
        throw new Error(mine.line.failed);
      }
    },
  };
}
