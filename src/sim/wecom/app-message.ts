/**
 * Self-built apps' `message/send` in the WeCom simulator.
 * @module
 */
import { utf8Length } from "../../wecom/fields.js";
import type { Handler, SimContext } from "./context.js";
import { SimApiError, jsonBody, requireString } from "./errors.js";
import { WECOM_RULES } from "./rules.js";
import type { TokenService } from "./tokens.js";

const APP_MSGTYPES = new Set(["text", "image", "voice", "video", "file", "textcard", "news", "mpnews", "markdown", "miniprogram_notice", "template_card"]);

/** message/send. */
export class AppMessageService {
  readonly #ctx: SimContext;
  readonly #tokens: TokenService;
  readonly #mediaExists: (id: string) => boolean;

  /**
   * @param ctx the shared simulator context
   * @param tokens access-token checks
   * @param mediaExists whether a media_id is valid
   */
  constructor(ctx: SimContext, tokens: TokenService, mediaExists: (id: string) => boolean) {
    this.#ctx = ctx;
    this.#tokens = tokens;
    this.#mediaExists = mediaExists;
  }

  /** The routes of this family. */
  readonly routes: Record<string, Handler> = {
    "message/send": ({ url, body }) => {
      const app = this.#tokens.auth(url);
      const b = jsonBody(body);
      if (b.agentid === undefined || b.agentid === null || b.agentid === "") throw new SimApiError(41011, "agentid missing");
      const agentId = Number(b.agentid);
      if (!Number.isInteger(agentId) || !this.#ctx.apps.has(agentId)) throw new SimApiError(40056, "invalid agentid");
      if (agentId !== app.cfg.agentId) throw new SimApiError(301002, "not allow to operate another agent");
      const msgtype = requireString(b, "msgtype");
      if (!APP_MSGTYPES.has(msgtype)) throw new SimApiError(40008, "invalid message type");
      const str = (k: string) => (typeof b[k] === "string" ? (b[k] as string) : "");
      if (str("touser") === "" && str("toparty") === "" && str("totag") === "") {
        throw new SimApiError(40058, "invalid Request Parameter, touser, toparty and totag cannot all be empty");
      }
      const content = b[msgtype];
      if (typeof content !== "object" || content === null) throw new SimApiError(40058, `invalid Request Parameter, ${msgtype} is required`);
      const c = content as Record<string, unknown>;
      if (msgtype === "text" || msgtype === "markdown") {
        const text = c.content;
        if (typeof text !== "string" || text === "") throw new SimApiError(44004, "empty content");
        const max = WECOM_RULES.app.textMaxBytes;
        if (utf8Length(text) > max) throw new SimApiError(45002, `content size out of limit, ${utf8Length(text)} bytes > ${max}`);
      }
      if (msgtype === "image" || msgtype === "voice" || msgtype === "video" || msgtype === "file") {
        const id = c.media_id;
        if (typeof id !== "string" || !this.#mediaExists(id)) throw new SimApiError(40007, "invalid media_id");
      }
      let invalid: string[] = [];
      const members = app.cfg.members;
      if (members !== undefined && str("touser") !== "@all") {
        const users = str("touser").split("|").filter((u) => u !== "");
        invalid = users.filter((u) => !members.includes(u));
        if (users.length > 0 && invalid.length === users.length && str("toparty") === "" && str("totag") === "") {
          throw new SimApiError(81013, "user & party & tag all invalid");
        }
      }
      const msgid = this.#ctx.ids.appSendMsgId();
      this.#ctx.record({ api: "message/send", body: b, at: this.#ctx.now(), msgid, delivered: true });
      return { json: { errcode: 0, errmsg: "ok", invaliduser: invalid.join("|"), msgid } };
    },
  };
}
