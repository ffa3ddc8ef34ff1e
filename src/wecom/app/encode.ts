/**
 * Passive reply encoders of self-built app callbacks (seed 001, 被动回复): the plaintext XML of
 * text, image, voice, video, news, update_button and update_template_card replies. Encrypt the
 * result with {@link WeComCrypto.encryptXmlReply} to get the reply envelope.
 * @module
 */
import { EncodeError } from "../../errors.js";
import { utf8Length } from "../fields.js";
import { xmlElement, type XmlWritable } from "../xml.js";

const F = "app";

/** Maximum UTF-8 bytes of a text reply's Content. */
export const APP_TEXT_REPLY_MAX_BYTES = 2048;
/** Maximum number of articles in a news reply. */
export const APP_NEWS_MAX_ARTICLES = 8;

/** One article of a news reply. */
export interface NewsArticle {
  title: string;
  description?: string;
  url?: string;
  picUrl?: string;
}

/** A passive reply to an app callback. */
export type AppReply =
  | { type: "text"; content: string }
  | { type: "image"; mediaId: string }
  | { type: "voice"; mediaId: string }
  | { type: "video"; mediaId: string; title?: string; description?: string }
  | { type: "news"; articles: NewsArticle[] }
  /** Replace the clicked button's text on a button_interaction template card. */
  | { type: "update_button"; replaceName: string }
  /**
   * Replace the template card: `templateCard` holds the TemplateCard children with WeCom's
   * element names (CardType, Source, MainTitle, ..., ReplaceText).
   */
  | { type: "update_template_card"; templateCard: { readonly [name: string]: XmlWritable } };

/** Who the reply goes to and from. */
export interface AppReplyAddress {
  /** The member's UserID (FromUserName of the callback). */
  toUser: string;
  /** The CorpID (ToUserName of the callback). */
  fromUser: string;
  /** Seconds since the epoch. Default: now. */
  createTime?: number;
}

function body(reply: AppReply): { [name: string]: XmlWritable } {
  switch (reply.type) {
    case "text":
      if (utf8Length(reply.content) > APP_TEXT_REPLY_MAX_BYTES) {
        throw new EncodeError(F, `text reply is ${utf8Length(reply.content)} bytes, the limit is ${APP_TEXT_REPLY_MAX_BYTES}`);
      }
      return { Content: reply.content };
    case "image":
      return { Image: { MediaId: reply.mediaId } };
    case "voice":
      return { Voice: { MediaId: reply.mediaId } };
    case "video":
      return { Video: { MediaId: reply.mediaId, Title: reply.title, Description: reply.description } };
    case "news":
      if (reply.articles.length < 1 || reply.articles.length > APP_NEWS_MAX_ARTICLES) {
        throw new EncodeError(F, `news reply needs 1 to ${APP_NEWS_MAX_ARTICLES} articles, got ${reply.articles.length}`);
      }
      return {
        ArticleCount: reply.articles.length,
        Articles: { item: reply.articles.map((a) => ({ Title: a.title, Description: a.description, PicUrl: a.picUrl, Url: a.url })) },
      };
    case "update_button":
      return { Button: { ReplaceName: reply.replaceName } };
    case "update_template_card":
      if (typeof reply.templateCard !== "object" || reply.templateCard === null) {
        throw new EncodeError(F, "update_template_card needs a TemplateCard object");
      }
      return { TemplateCard: reply.templateCard };
    default:
      throw new EncodeError(F, `unknown reply type ${JSON.stringify((reply as { type: unknown }).type)}`);
  }
}

/**
 * Encode a passive reply as plaintext XML.
 * @throws EncodeError when a limit is broken (text > 2048 bytes, news outside 1..8 articles)
 * @example encodeAppReply({ type: "text", content: "收到" }, { toUser: "zhangsan", fromUser: corpId })
 */
export function encodeAppReply(reply: AppReply, address: AppReplyAddress): string {
  const createTime = address.createTime ?? Math.floor(Date.now() / 1000);
  const inner = body(reply);
  let xml = `<xml>${xmlElement("ToUserName", address.toUser)}${xmlElement("FromUserName", address.fromUser)}`;
  xml += `<CreateTime>${createTime}</CreateTime>${xmlElement("MsgType", reply.type)}`;
  for (const [k, v] of Object.entries(inner)) xml += xmlElement(k, v);
  return `${xml}</xml>`;
}
