/**
 * The rule book of the WeCom simulator: every limit, window and count WeCom publishes for the APIs
 * the simulator serves, in one `as const` table. The simulator enforces these values and its tests
 * read them, so a rule is stated once. Values are WeCom's, not the gateway's: the gateway keeps its
 * own constants, and a test that compares the two notices when they drift apart.
 *
 * Sources: WeCom's developer documentation (developer.work.weixin.qq.com) as summarised in
 * docs/protocol.md and docs/seeds/; where a value is a decision of ours because the documents are
 * silent, the entry says so (see also docs/simulator.md).
 * @module
 */

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const MB = 1024 * 1024;

/** WeCom's limits, as the simulator enforces them. Durations in milliseconds, sizes in bytes. */
export const WECOM_RULES = {
  /** gettoken: an access_token lives 7200 s; within its life gettoken answers the same one. */
  token: { ttlMs: 7200 * SECOND },

  /** Callbacks: WeCom waits 5 s for an answer, then retries, 3 tries in all; bots answer URL checks within 1 s. */
  callback: { timeoutMs: 5 * SECOND, retryIntervalMs: 5 * SECOND, tries: 3, botVerifyTimeoutMs: 1 * SECOND },

  /** WeChat Customer Service (微信客服). */
  kf: {
    /** After a customer's message the company may send for 48 hours… */
    sendWindowMs: 48 * HOUR,
    /** …at most 5 messages; the customer's next message renews both. */
    messagesPerCustomerMessage: 5,
    /** kf/send_msg text content: at most 2048 bytes of UTF-8. */
    textMaxBytes: 2048,
    /** msgid: at most 32 bytes of [0-9a-zA-Z_-], unique per account. */
    msgidMaxBytes: 32,
    /** The msgid alphabet (and length). */
    msgidPattern: /^[0-9a-zA-Z_-]{1,32}$/,
    /** A msgmenu carries at most 10 items. */
    menuMaxItems: 10,
    /** sync_msg serves the last 3 days only. */
    readableMs: 3 * DAY,
    /** sync_msg limit: default and maximum. */
    syncLimitMax: 1000,
    /** Byte limit of sync_msg's cursor parameter. */
    cursorMaxBytes: 64,
    /** Byte limit of sync_msg's token parameter. */
    tokenMaxBytes: 128,
    /** The Token of a kf_msg_or_event callback is valid 10 minutes. */
    callbackTokenMs: 10 * MINUTE,
    /** service_state values: 0 unhandled, 1 smart assistant, 2 waiting pool, 3 human servicer, 4 ended or not started. */
    serviceStates: [0, 1, 2, 3, 4],
    /** kf/send_msg works only in these states (95018 otherwise). */
    sendableStates: [0, 1],
    /** A customer's session before their first message (they entered, wrote nothing): "ended or not started". */
    initialState: 4,
    /**
     * service_state/trans: the target states allowed from each state. From 4 the API may change
     * nothing (the customer's next message makes it 0). Ending a session (→ 4) through the API from 0,
     * 1 and 2 is our reading of the flow chart ("企业通过API结束会话").
     */
    transitions: { 0: [1, 2, 3, 4], 1: [2, 3, 4], 2: [3, 4], 3: [3, 4], 4: [] },
    /**
     * The one-use codes of kf/send_msg_on_event: how long each lives, which msgtypes it sends, and
     * where it comes from. Except for the welcome code, a code works only while the session is
     * still in the state that produced it.
     */
    codes: {
      /** enter_session's welcome_code: 20 s, text or menu. */
      welcome: { ttlMs: 20 * SECOND, msgtypes: ["text", "msgmenu"] },
      /** Into the waiting pool (trans to 2): 48 h, text. */
      pool: { ttlMs: 48 * HOUR, msgtypes: ["text"] },
      /** A servicer takes the session (event change_type 1, or trans to 3): 48 h, text. */
      servicer: { ttlMs: 48 * HOUR, msgtypes: ["text"] },
      /** The session ends (event change_type 3, or trans to 4): 20 s, text or menu. */
      end: { ttlMs: 20 * SECOND, msgtypes: ["text", "msgmenu"] },
    },
    /** session_status_change change_type values. */
    changeTypes: { fromPool: 1, transfer: 2, end: 3, reopen: 4 },
    /** msg_send_fail fail_type values (seed 000/001). */
    failTypes: {
      unknown: 0,
      accountDeleted: 1,
      appClosed: 2,
      sessionExpired: 4,
      sessionClosed: 5,
      overFiveMessages: 6,
      noChannelsBound: 7,
      subjectNotVerified: 8,
      noChannelsAndNotVerified: 9,
      customerRejected: 10,
    },
  },

  /** Temporary media (media/upload, media/get). */
  media: {
    /** Every file must be larger than 5 bytes. */
    minBytesExclusive: 5,
    /** A media_id is valid 3 days. */
    ttlMs: 3 * DAY,
    /** Per type: the largest file and the formats WeCom takes. */
    types: {
      image: { maxBytes: 10 * MB, formats: ["jpg", "png"] },
      voice: { maxBytes: 2 * MB, formats: ["amr"] },
      video: { maxBytes: 10 * MB, formats: ["mp4"] },
      file: { maxBytes: 20 * MB, formats: [] },
    },
  },

  /** Self-built apps' message/send. */
  app: {
    /** text content: longer ones are cut at 2048 bytes ("超过将截断"), not refused. */
    textMaxBytes: 2048,
    /** markdown content: at most 2048 bytes (cut like text: a decision, the documents are silent). */
    markdownMaxBytes: 2048,
    /** touser lists at most 1000 members; toparty and totag at most 100 each. */
    maxUsers: 1000,
    /** toparty / totag: at most 100 ids each. */
    maxParties: 100,
    /** Per app and member: more than 30 messages a minute are dropped silently… */
    perMemberPerMinute: 30,
    /** …and more than 1000 an hour. */
    perMemberPerHour: 1000,
    /** enable_duplicate_check: the same request JSON within the interval (default 1800 s, at most 4 h) is not delivered again. */
    duplicateCheck: { defaultIntervalMs: 1800 * SECOND, maxIntervalMs: 4 * HOUR },
  },

  /** AI bots (智能机器人), webhook mode. */
  bot: {
    /** stream.content: at most 20480 bytes of UTF-8 (replace semantics: each answer is the whole text so far). */
    streamMaxBytes: 20480,
    /** WeCom polls an unfinished stream about once a second… */
    pollIntervalMs: 1 * SECOND,
    /** …until 6 minutes after the user's message; later updates are refused with 846608. */
    pollWindowMs: 6 * MINUTE,
    /** The errcode of a stream update after the window ("stream message update expired"). */
    expiredErrcode: 846608,
    /** stream.msg_item: images only, only with finish=true, at most 10, each ≤ 10 MB, JPG or PNG. */
    msgItemMaxImages: 10,
    /** Largest image of a msg_item, before base64. */
    msgItemImageMaxBytes: 10 * MB,
    /** A template card may be sent once per message (first answer or a refresh). */
    templateCardsPerMessage: 1,
    /** response_url: one POST, within 1 hour. */
    responseUrl: { ttlMs: 1 * HOUR, uses: 1, maxBytes: 20480, msgtypes: ["markdown", "template_card"] },
    /** Media URLs in bot callbacks are valid 5 minutes. */
    mediaTtlMs: 5 * MINUTE,
    /** A user has at most 3 messages in flight with one bot (documented; not enforced by the simulator). */
    messagesInFlightPerUser: 3,
  },

  /**
   * AI bots in long-connection mode (智能机器人长连接, one WebSocket per bot). The errcodes marked
   * "ours" are decisions of the simulator where WeCom's documents are silent (docs/simulator.md).
   */
  botWs: {
    /** The simulator's path of the WebSocket endpoint (WeCom's is the bare host `wss://openws.work.weixin.qq.com`). */
    path: "/aibot/ws",
    /** stream.content of aibot_respond_msg: at most 20480 bytes of UTF-8 (replace semantics). */
    streamMaxBytes: 20480,
    /** markdown.content of aibot_send_msg / aibot_respond_msg: at most 20480 bytes (as response_url; no WS-specific number found). */
    markdownMaxBytes: 20480,
    /** A stream frame 6 minutes or more after the user's message is refused with 846608. */
    streamWindowMs: 6 * MINUTE,
    /** aibot_respond_welcome_msg / aibot_respond_update_msg: within 5 s of the event, once per event. */
    eventReplyWindowMs: 5 * SECOND,
    /** stream.feedback.id: at most 256 bytes of UTF-8. */
    feedbackIdMaxBytes: 256,
    /** A template card may be sent once per message. */
    templateCardsPerMessage: 1,
    /** msgtypes aibot_respond_msg takes (text is refused with 40008). */
    respondMsgtypes: ["stream", "markdown", "template_card", "stream_with_template_card", "image", "file", "voice", "video"],
    /** msgtypes aibot_send_msg takes (text is refused with 40008). */
    sendMsgtypes: ["markdown", "template_card", "image", "file", "voice", "video"],
    /** msgtypes aibot_respond_welcome_msg takes (text is allowed for welcomes only). */
    welcomeMsgtypes: ["text", "template_card"],
    /** Media replies carry a media_id only (an url or inline base64 is refused with 40058). */
    mediaMsgtypes: ["image", "file", "voice", "video"],
    /**
     * Uploads: each chunk at most 512 KiB before base64, at most 100 chunks, indexes from 0; the
     * sizes of media/upload (every file over 5 bytes; image 10 MB, voice 2 MB, video 10 MB, file
     * 20 MB) with its errcodes (40006 for 5 bytes or less); at most 16 unfinished uploads per
     * connection (ours). Formats are not checked.
     */
    upload: { chunkMaxBytes: 512 * 1024, maxChunks: 100, openPerConnection: 16, sizeErrcodes: { image: 40009, voice: 40006, video: 40011, file: 40006 }, invalidTypeErrcode: 40005 },
    /** A media_id from aibot_upload_media_finish is valid 3 days. */
    mediaTtlMs: 3 * DAY,
    /** Media URLs in callbacks are valid 5 minutes (each media object carries its own aeskey). */
    mediaUrlTtlMs: 5 * MINUTE,
    /** Ours: how long after a failed subscribe, or after a kick's disconnected_event, the server closes the socket (real time). */
    closeDelayMs: 100,
    /** The errcodes of the long connection (observed ones, and ours where marked). */
    errcodes: {
      /** aibot_subscribe with an unknown bot_id ("invalid bot_id"). */
      invalidBotId: 93019,
      /** aibot_subscribe with a wrong secret, or for a bot without one ("signature is incorrect…"). */
      badSecret: 853000,
      /** Any other frame before a successful subscribe ("aibot websocket not subscribed"). */
      notSubscribed: 846609,
      /** A reply whose req_id is not a callback of this connection, or the wrong kind ("invalid req_id"). */
      invalidReqId: 846605,
      /** A stream frame after the 6-minute window ("stream message update expired"). */
      streamExpired: 846608,
      /** msgtype text outside a welcome, or an unknown msgtype ("invalid message type"). */
      invalidMsgtype: 40008,
      /** An unknown or expired media_id, or one of another bot ("invalid media_id"). */
      invalidMediaId: 40007,
      /** aibot_send_msg without chatid. */
      missingChatId: 86201,
      /** A missing or malformed field; some of these come back without headers (schema errors, malformed JSON). */
      invalidParam: 40058,
      /** Ours: a frame for a stream that already finished. */
      streamFinished: 40058,
      /** Ours: stream or markdown content over 20480 bytes. */
      contentTooLong: 40058,
      /** Ours: a welcome or card update after the event's 5 s, or a second one for the same event. */
      eventReplyExpired: 846605,
      /** Ours: an unknown cmd ("invalid cmd"). */
      unknownCmd: 40058,
      /** Ours: an upload step that does not add up (unknown upload_id, bad chunk, missing chunks, size or md5 mismatch). */
      uploadInvalid: 40058,
    },
  },
} as const;

/** A KF service_state (0 unhandled, 1 smart assistant, 2 waiting pool, 3 human servicer, 4 ended). */
export type KfServiceState = (typeof WECOM_RULES.kf.serviceStates)[number];

/** True when `to` is a target service_state/trans allows from `from`. */
export function kfTransitionAllowed(from: KfServiceState, to: number): boolean {
  return (WECOM_RULES.kf.transitions[from] as readonly number[]).includes(to);
}

/** The media types media/upload takes. */
export type UploadType = keyof typeof WECOM_RULES.media.types;
