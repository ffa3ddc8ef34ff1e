/**
 * The unified message model that every channel decodes into.
 *
 * A message is `{ channel, id, conversationId, from, to, time, content, raw, ... }` where
 * `channel` (app | kf | bot | archive | omni) and `content.type` are discriminators. Every
 * discriminator has an `unknown` variant that keeps the raw payload: WeCom adds types every year,
 * and a new one is data, never an error.
 *
 * @example
 * if (msg.content.type === "text") console.log(msg.content.text);
 * if (msg.channel === "kf" && msg.content.type === "event" && msg.content.event.name === "enter_session")
 *   console.log(msg.content.event.welcomeCode);
 * @module
 */

/** The channels a message can come from or go to. */
export type Channel = "app" | "kf" | "bot" | "archive" | "omni";

/** All channels, in a stable order. */
export const CHANNELS: readonly Channel[] = ["app", "kf", "bot", "archive", "omni"];

/** What kind of party an identity is. */
export type IdentityKind =
  | "member" // a WeCom member (UserID)
  | "external" // a WeChat customer / external contact (external_userid)
  | "servicer" // a KF servicer (接待人员)
  | "kf_account" // a KF account (open_kfid)
  | "corp" // the company (CorpID)
  | "app" // a self-built app (AgentID)
  | "bot" // an AI bot (aibotid)
  | "group" // a group chat (chatid / roomid)
  | "system" // WeCom itself (FromUserName "sys", KF events)
  | "agent" // a 全媒体 agent (WorkerNum)
  | "customer"; // a 全媒体 customer address (FromUserId / ToUserId)

/** A sender or recipient. */
export interface Identity {
  /** What the id names. */
  kind: IdentityKind;
  /** The id, as the channel spells it. */
  id: string;
  /** A display name, when the channel gives one. */
  name?: string;
}

/** Where a media file can be fetched; which fields are set depends on the channel. */
export interface MediaRef {
  /** WeCom media_id (app, KF): fetch with `media/get`, valid 3 days. */
  mediaId?: string;
  /** A URL: the app's PicUrl, a bot's encrypted URL, a 全媒体 download URL. */
  url?: string;
  /** True when `url` serves bytes encrypted with the bot's EncodingAESKey (AI bots). */
  encrypted?: boolean;
  /**
   * The file's own key (base64 of 32 bytes) when an AI bot in long-connection mode sent it: `url`
   * serves bytes encrypted with this key instead of the EncodingAESKey. Never sent to the 全媒体.
   */
  aesKey?: string;
  /** Session-archive sdkfileid (fetch with the archive SDK). */
  sdkFileId?: string;
  /** MD5 of the file, when given. */
  md5?: string;
  /** Size in bytes, when given. */
  size?: number;
  /** File name, when given. */
  fileName?: string;
  /** File extension, when given. */
  fileExt?: string;
}

/** Plain or markdown text. */
export interface TextContent {
  type: "text";
  /** The text. */
  text: string;
  /** `markdown` when the text is markdown (archive markdown, bot stream); default plain. */
  format?: "plain" | "markdown";
  /** KF: the id of the menu item the customer clicked to send this text. */
  menuId?: string;
}

/** An image. */
export interface ImageContent {
  type: "image";
  media: MediaRef;
}

/** A voice message. */
export interface VoiceContent {
  type: "voice";
  /** Absent for AI bots, which deliver the transcription only. */
  media?: MediaRef;
  /** Audio format (amr, speex, silk), when given. */
  format?: string;
  /** Speech-to-text, when WeCom provides it (AI bots always do). */
  transcript?: string;
  /** Duration in seconds, when given. */
  durationSec?: number;
}

/** A video. */
export interface VideoContent {
  type: "video";
  media: MediaRef;
  /** media_id of the thumbnail (app callbacks). */
  thumbMediaId?: string;
  /** Duration in seconds, when given. */
  durationSec?: number;
}

/** A file. */
export interface FileContent {
  type: "file";
  media: MediaRef;
}

/** A location. */
export interface LocationContent {
  type: "location";
  latitude: number;
  longitude: number;
  /** Place name / title. */
  name?: string;
  /** Address. */
  address?: string;
  /** Map zoom (app Scale, archive zoom). */
  scale?: number;
}

/** A link (article card). */
export interface LinkContent {
  type: "link";
  title: string;
  url: string;
  description?: string;
  picUrl?: string;
}

/** A business card (名片). */
export interface BusinessCardContent {
  type: "business_card";
  /** userid (same corp) or external_userid. */
  userId: string;
  /** The card owner's company, when given. */
  corpName?: string;
}

/** A mini program card. */
export interface MiniProgramContent {
  type: "miniprogram";
  title?: string;
  appId?: string;
  pagePath?: string;
  thumbMediaId?: string;
  /** Archive: the mini program's user name and display name, and the description. */
  userName?: string;
  displayName?: string;
  description?: string;
}

/** One item of a KF menu message. */
export type MenuItem =
  | { type: "click"; id: string; content: string }
  | { type: "view"; url: string; content: string }
  | { type: "miniprogram"; appId: string; pagePath: string; content: string }
  | { type: "text"; content: string; noNewline?: boolean }
  | { type: "unknown"; raw: unknown };

/** A KF menu message (msgmenu). */
export interface MenuContent {
  type: "menu";
  head?: string;
  items: MenuItem[];
  tail?: string;
}

/** Several parts in one message (bot mixed, archive mixed). */
export interface MixedContent {
  type: "mixed";
  items: Content[];
}

/** An article list (archive news). */
export interface NewsContent {
  type: "news";
  articles: { title: string; description?: string; url?: string; picUrl?: string }[];
}

/** A sticker (archive emotion). */
export interface EmotionContent {
  type: "emotion";
  media: MediaRef;
  /** 1 gif, 2 png. */
  emotionType?: number;
  width?: number;
  height?: number;
}

/** A forwarded chat record (KF merged_msg, archive chatrecord). */
export interface ChatRecordContent {
  type: "chat_record";
  title?: string;
  items: { type: string; time?: number; sender?: string; content: unknown }[];
}

/** A recall of an earlier message (archive revoke). */
export interface RecallContent {
  type: "recall";
  /** id of the recalled message. */
  recalledId: string;
}

/** Consent to (or refusal of) archiving (archive agree / disagree). */
export interface ConsentContent {
  type: "consent";
  agreed: boolean;
  userId: string;
  /** Time of the decision, ms. */
  time?: number;
}

/** Structured kinds that have no common shape: kept as their fields, with a readable title. */
export type StructuredKind =
  | "channels_shop_product"
  | "channels_shop_order"
  | "channels"
  | "meeting"
  | "schedule"
  | "note"
  | "todo"
  | "vote"
  | "collect"
  | "redpacket"
  | "external_redpacket"
  | "calendar"
  | "docmsg"
  | "meeting_voice_call"
  | "voip_doc_share"
  | "sphfeed"
  | "switch";

/** A structured message of one of {@link StructuredKind}: title plus the channel's fields. */
export interface StructuredContent {
  type: "structured";
  kind: StructuredKind;
  /** A readable one-line title (the meeting topic, the product title, ...). */
  title: string;
  /** The channel's fields, normalized (numbers are numbers). */
  fields: Record<string, unknown>;
}

/** A message type this version does not know. `raw` is the whole original item. */
export interface UnknownContent {
  type: "unknown";
  /** The original type name (MsgType, msgtype, ...). */
  msgType: string;
  /** The raw payload: an XML string for app callbacks, the JSON object otherwise. */
  raw: unknown;
}

/** An event, with a channel-specific event union. */
export interface EventContent<E> {
  type: "event";
  event: E;
}

/** Every non-event content. */
export type MessageContent =
  | TextContent
  | ImageContent
  | VoiceContent
  | VideoContent
  | FileContent
  | LocationContent
  | LinkContent
  | BusinessCardContent
  | MiniProgramContent
  | MenuContent
  | MixedContent
  | NewsContent
  | EmotionContent
  | ChatRecordContent
  | RecallContent
  | ConsentContent
  | StructuredContent
  | UnknownContent;

/** Any content, including any channel's events. */
export type Content = MessageContent | EventContent<AnyEvent>;

/** An event name this version does not know; `raw` keeps the payload. */
export interface UnknownEvent {
  name: "unknown";
  /** The original event name. */
  eventName: string;
  /** The raw payload (XML string or JSON object). */
  raw: unknown;
}

// ---------------------------------------------------------------- KF events (sync_msg and XML)

/** KF 用户进入会话 enter_session. */
export interface KfEnterSessionEvent {
  name: "enter_session";
  openKfId: string;
  externalUserId: string;
  scene?: string;
  sceneParam?: string;
  /** Valid 20 s: pass to `kf/send_msg_on_event`. */
  welcomeCode?: string;
  wechatChannels?: { nickname?: string; shopNickname?: string; scene?: number };
}

/** KF 消息发送失败 msg_send_fail. */
export interface KfMsgSendFailEvent {
  name: "msg_send_fail";
  openKfId: string;
  externalUserId: string;
  failMsgId: string;
  /** 0 unknown, 1 account deleted, 2 app closed, 4 session expired (48 h), 5 session closed, 6 over 5 messages, ... */
  failType: number;
}

/** KF 接待人员接待状态变更 servicer_status_change. */
export interface KfServicerStatusChangeEvent {
  name: "servicer_status_change";
  openKfId?: string;
  servicerUserId: string;
  /** 1 receiving, 2 stopped. */
  status: number;
  /** When stopped: 0 stopped, 1 suspended. */
  stopType?: number;
}

/** KF 会话状态变更 session_status_change. */
export interface KfSessionStatusChangeEvent {
  name: "session_status_change";
  openKfId: string;
  externalUserId: string;
  /** 1 taken from the pool, 2 transferred, 3 ended, 4 reopened. */
  changeType: number;
  oldServicerUserId?: string;
  newServicerUserId?: string;
  /** For change_type 1 and 3: pass to `kf/send_msg_on_event`. */
  msgCode?: string;
}

/** KF 用户撤回消息 user_recall_msg. */
export interface KfUserRecallMsgEvent {
  name: "user_recall_msg";
  openKfId: string;
  externalUserId: string;
  recallMsgId: string;
}

/** KF 接待人员撤回消息 servicer_recall_msg. */
export interface KfServicerRecallMsgEvent {
  name: "servicer_recall_msg";
  openKfId: string;
  externalUserId: string;
  recallMsgId: string;
  servicerUserId: string;
}

/** KF 拒收客户消息变更 reject_customer_msg_switch_change. */
export interface KfRejectCustomerMsgSwitchChangeEvent {
  name: "reject_customer_msg_switch_change";
  openKfId: string;
  externalUserId: string;
  servicerUserId: string;
  /** 1 the servicer rejects the customer's messages, 0 no longer. */
  rejectSwitch: number;
}

/** The seven KF events, plus unknown ones. */
export type KfEvent =
  | KfEnterSessionEvent
  | KfMsgSendFailEvent
  | KfServicerStatusChangeEvent
  | KfSessionStatusChangeEvent
  | KfUserRecallMsgEvent
  | KfServicerRecallMsgEvent
  | KfRejectCustomerMsgSwitchChangeEvent
  | UnknownEvent;

/** The seven KF event type names. */
export const KF_EVENT_TYPES = [
  "enter_session",
  "msg_send_fail",
  "servicer_status_change",
  "session_status_change",
  "user_recall_msg",
  "servicer_recall_msg",
  "reject_customer_msg_switch_change",
] as const;

// ---------------------------------------------------------------- app events (XML)

/** Change types of `change_external_contact` (企业客户事件). */
export type ExternalContactChange =
  | { changeType: "add_external_contact"; userId: string; externalUserId: string; state?: string; welcomeCode?: string }
  | { changeType: "edit_external_contact"; userId: string; externalUserId: string; state?: string }
  | { changeType: "add_half_external_contact"; userId: string; externalUserId: string; state?: string; welcomeCode?: string }
  | { changeType: "del_external_contact"; userId: string; externalUserId: string; source?: string }
  | { changeType: "del_follow_user"; userId: string; externalUserId: string }
  | { changeType: "transfer_fail"; userId: string; externalUserId: string; failReason: string }
  | { changeType: "unknown"; value: string; fields: Record<string, unknown> };

/** `change_external_contact`. */
export interface ChangeExternalContactEvent {
  name: "change_external_contact";
  change: ExternalContactChange;
}

/** `change_external_chat` (客户群变更). */
export interface ChangeExternalChatEvent {
  name: "change_external_chat";
  chatId: string;
  /** create, update, dismiss, ... */
  changeType: string;
  /** For update: add_member, del_member, change_owner, change_name, change_notice, ... */
  updateDetail?: string;
  failReason?: string;
  fields: Record<string, unknown>;
}

/** An approval record inside {@link ApprovalInfo}. */
export interface ApprovalRecord {
  spStatus?: number;
  approverAttr?: number;
  details: { approver?: string; speech?: string; spStatus?: number; spTime?: number }[];
}

/** The ApprovalInfo of `sys_approval_change`. */
export interface ApprovalInfo {
  spNo: string;
  spName?: string;
  /** 1 pending, 2 approved, 3 rejected, 4 revoked, 6 passed then revoked, 7 deleted, 10 paid. */
  spStatus?: number;
  templateId?: string;
  applyTime?: number;
  applyer?: { userId?: string; party?: string };
  spRecords: ApprovalRecord[];
  notifyers: string[];
  statusChangeEvent?: number;
  /** Everything as sent, for fields not modelled here. */
  fields: Record<string, unknown>;
}

/** `sys_approval_change` (审批申请状态变化). */
export interface SysApprovalChangeEvent {
  name: "sys_approval_change";
  approval: ApprovalInfo;
}

/** Member data of `change_contact` create_user / update_user. */
export interface ContactUser {
  userId: string;
  newUserId?: string;
  name?: string;
  departments?: string[];
  isLeaderInDept?: string[];
  mobile?: string;
  position?: string;
  gender?: number;
  email?: string;
  status?: number;
  avatar?: string;
  alias?: string;
  telephone?: string;
  address?: string;
  extAttr?: { name?: string; type: number; text?: string; web?: { title?: string; url?: string } }[];
}

/** Change types of `change_contact` (通讯录变更). */
export type ContactChange =
  | ({ changeType: "create_user" } & ContactUser)
  | ({ changeType: "update_user" } & ContactUser)
  | { changeType: "unknown"; value: string; fields: Record<string, unknown> };

/** `change_contact`. */
export interface ChangeContactEvent {
  name: "change_contact";
  change: ContactChange;
}

/** Menu events: click and view carry EventKey; scancode and pic events carry their info. */
export interface MenuEvent {
  name:
    | "click"
    | "view"
    | "scancode_push"
    | "scancode_waitmsg"
    | "pic_sysphoto"
    | "pic_photo_or_album"
    | "pic_weixin"
    | "location_select";
  eventKey: string;
  /** scancode_*: the scan result. */
  scanCode?: { scanType?: string; scanResult?: string };
  /** pic_*: the pictures sent. */
  pictures?: { count: number; md5s: string[] };
  /** location_select: the location chosen. */
  location?: { latitude?: number; longitude?: number; scale?: number; label?: string; poiName?: string };
}

/** `subscribe` / `unsubscribe` of an app. */
export interface SubscribeEvent {
  name: "subscribe" | "unsubscribe";
  eventKey?: string;
}

/** `kf_msg_or_event`: new KF messages wait in `sync_msg`. */
export interface KfMsgOrEvent {
  name: "kf_msg_or_event";
  /** Pass to sync_msg as `token`; valid 10 minutes. */
  token: string;
  openKfId: string;
}

/** Every app callback event. KF events may also arrive in XML and decode to {@link KfEvent}. */
export type AppEvent =
  | ChangeExternalContactEvent
  | ChangeExternalChatEvent
  | SysApprovalChangeEvent
  | ChangeContactEvent
  | MenuEvent
  | SubscribeEvent
  | KfMsgOrEvent
  | Exclude<KfEvent, UnknownEvent>
  | UnknownEvent;

// ---------------------------------------------------------------- bot events (JSON)

/** AI bot: the user opened the chat with the bot. Only this event may be answered with text. */
export interface BotEnterChatEvent {
  name: "enter_chat";
}

/** AI bot: the user acted on a template card. */
export interface BotTemplateCardEvent {
  name: "template_card_event";
  cardType: string;
  eventKey: string;
  taskId: string;
  selectedItems: { questionKey: string; optionIds: string[] }[];
}

/** AI bot: the user gave feedback on an answer. */
export interface BotFeedbackEvent {
  name: "feedback_event";
  /** The stream id the feedback is about. */
  id: string;
  /** 1 accurate, 2 inaccurate, 3 cancelled. */
  feedbackType: number;
  content?: string;
  inaccurateReasons: number[];
}

/** AI bot events. */
export type BotEvent = BotEnterChatEvent | BotTemplateCardEvent | BotFeedbackEvent | UnknownEvent;

// ---------------------------------------------------------------- omni events

/** 全媒体 events, e.g. `CLICK.RG` (the customer asks for a human agent). */
export interface OmniEvent {
  name: "omni_event";
  /** The event key as sent, e.g. `CLICK.RG`. */
  key: string;
}

/** Events of any channel. */
export type AnyEvent = AppEvent | KfEvent | BotEvent | OmniEvent;

// ---------------------------------------------------------------- messages

/** Content of app callbacks. */
export type AppContent = MessageContent | EventContent<AppEvent>;
/** Content of KF messages. */
export type KfContent = MessageContent | EventContent<KfEvent>;
/** Content of AI-bot callbacks; `stream_refresh` is WeCom polling an open stream. */
export type BotContent = MessageContent | EventContent<BotEvent> | StreamRefreshContent;
/** Content of archive records. */
export type ArchiveContent = MessageContent;
/** Content of 全媒体 messages. */
export type OmniContent = MessageContent | EventContent<OmniEvent>;

/** AI bot: WeCom polls for the next chunk of the stream `streamId`. */
export interface StreamRefreshContent {
  type: "stream_refresh";
  streamId: string;
}

/** Fields every message has. */
export interface MessageBase<Ch extends Channel, C> {
  /** Discriminator: the channel. */
  channel: Ch;
  /**
   * The channel's own id of the item, used as the idempotency key: app MsgId (or the event key
   * `FromUserName:CreateTime:Event[:ChangeType]`), KF msgid, bot msgid, archive msgid.
   */
  id: string;
  /** The tenant: the CorpID (租户id), when known. */
  corpId?: string;
  /**
   * The conversation this message belongs to, stable across messages, and the address that
   * outbound answers go back to (see each channel's decoder for its form).
   */
  conversationId: string;
  /** The sender, when there is one (events from WeCom itself have kind `system`). */
  from?: Identity;
  /** The recipients. */
  to: Identity[];
  /** When the message was sent, ms since the epoch. */
  time: number;
  /** What it says. */
  content: C;
  /** The raw payload: the XML text (app) or the JSON object (other channels). */
  raw: unknown;
}

/** A self-built app callback. */
export interface AppMessage extends MessageBase<"app", AppContent> {
  /** AgentID of the app, as sent. */
  agentId?: string;
  /** MsgId as an exact decimal string (64-bit; never a JS number). Absent for events. */
  msgId?: string;
}

/** Where a KF message came from. */
export type KfOrigin = "customer" | "system" | "servicer" | "unknown";

/** A KF (微信客服) message from `sync_msg`. */
export interface KfMessage extends MessageBase<"kf", KfContent> {
  openKfId: string;
  externalUserId?: string;
  servicerUserId?: string;
  /** 3 customer, 4 system event, 5 servicer in the WeCom client. */
  origin: KfOrigin;
  /** The numeric origin as sent. */
  originCode: number;
}

/** An AI-bot callback. */
export interface BotMessage extends MessageBase<"bot", BotContent> {
  botId: string;
  chatType: "single" | "group" | string;
  /** Group chat id (group only). */
  chatId?: string;
  /** URL to answer once within an hour, when given. */
  responseUrl?: string;
}

/** A session-archive record. */
export interface ArchiveMessage extends MessageBase<"archive", ArchiveContent> {
  /** Orders a corp's archive. */
  seq?: number;
  /** send | recall | switch, or another action as sent. */
  action: string;
  /** Group id, for group messages. */
  roomId?: string;
  isGroup?: boolean;
  isFromExternal?: boolean;
  /** The push envelope's message_id. */
  pushMessageId?: string;
}

/** A 全媒体 staffService message, either direction. */
export interface OmniMessage extends MessageBase<"omni", OmniContent> {
  /** `to_omni`: APP → 全媒体 (FromUserId); `from_omni`: 全媒体 → APP (ToUserId). */
  direction: "to_omni" | "from_omni";
  serviceId?: string;
  workerNum?: string;
  workerName?: string;
  /** The original MsgType. */
  msgType: string;
  /** The Tag, as sent. */
  tag?: unknown;
}

/** Any message of any channel. */
export type UnifiedMessage = AppMessage | KfMessage | BotMessage | ArchiveMessage | OmniMessage;
