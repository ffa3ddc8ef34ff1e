/**
 * Decoder of self-built app callbacks (seed 001): decrypted plaintext XML into {@link AppMessage}.
 * Every MsgType, Event and ChangeType of the seed is modelled; others decode to `unknown`
 * variants that keep the raw XML.
 * @module
 */
import { DecodeError } from "../../errors.js";
import type {
  AppContent,
  AppEvent,
  AppMessage,
  ApprovalInfo,
  ApprovalRecord,
  ContactChange,
  ContactUser,
  ExternalContactChange,
  Identity,
  KfEvent,
  MenuEvent,
} from "../../model.js";
import { KF_EVENT_TYPES } from "../../model.js";
import { compact, toNumber } from "../fields.js";
import { decodeKfEventFields } from "../kf/events.js";
import { parseXml, type XmlNode, type XmlObject, xmlChild, xmlList, xmlText, xmlToPlain } from "../xml.js";

const F = "app";

/** Context the XML itself does not carry. */
export interface AppDecodeContext {
  /** CorpID, when known from configuration (else ToUserName is used). */
  corpId?: string;
}

function num(obj: XmlObject | undefined, name: string): number | undefined {
  return obj === undefined ? undefined : toNumber(xmlText(obj, name));
}

function plain(obj: XmlObject): Record<string, unknown> {
  return xmlToPlain(obj) as Record<string, unknown>;
}

/** Fields that tell distinct events apart; appended to an event's id after FromUserName, CreateTime, Event. */
const EVENT_KEY_FIELDS = [
  "ChangeType",
  "UserID",
  "ExternalUserID",
  "ChatId",
  "UpdateDetail",
  "OpenKfId",
  "OpenKfid",
  "EventKey",
  "FailMsgId",
  "RecallMsgId",
  "Token",
] as const;

/**
 * The idempotency key of an event callback: `FromUserName:CreateTime:Event` followed by the
 * fields that tell distinct events of the same second apart (ChangeType, UserID, ChatId, SpNo...).
 * WeCom's retries repeat all of them, so a retry gets the same key.
 */
export function appEventKey(x: XmlObject): string {
  const parts = [xmlText(x, "FromUserName") ?? "", xmlText(x, "CreateTime") ?? "", xmlText(x, "Event") ?? ""];
  for (const f of EVENT_KEY_FIELDS) {
    const v = xmlText(x, f);
    if (v !== undefined && v !== "") parts.push(v);
  }
  const approval = xmlChild(x, "ApprovalInfo");
  if (approval !== undefined) {
    parts.push(xmlText(approval, "SpNo") ?? "", xmlText(approval, "SpStatus") ?? "", xmlText(approval, "StatuChangeEvent") ?? "");
  }
  return parts.join(":");
}

/**
 * Decode the plaintext XML of an app callback.
 * @throws DecodeError when the XML is malformed or lacks MsgType / CreateTime
 * @example decodeAppXml(crypto.decryptCallback(query, encrypt)).content
 */
export function decodeAppXml(xml: string, context: AppDecodeContext = {}): AppMessage {
  const doc = parseXml(xml);
  if (doc.root !== "xml") throw new DecodeError(F, `root element must be <xml>, found <${doc.root}>`);
  return decodeAppObject(doc.value, xml, context);
}

/** Decode an already parsed app callback (`raw` is kept as the message's raw payload). */
export function decodeAppObject(x: XmlObject, raw: string, context: AppDecodeContext = {}): AppMessage {
  const msgType = xmlText(x, "MsgType");
  if (msgType === undefined || msgType === "") throw new DecodeError(F, "missing <MsgType>");
  const createTime = toNumber(xmlText(x, "CreateTime"));
  if (createTime === undefined) throw new DecodeError(F, "missing or non-numeric <CreateTime>");
  const corpId = context.corpId ?? xmlText(x, "ToUserName");
  const fromUser = xmlText(x, "FromUserName");
  const agentId = xmlText(x, "AgentID");
  const msgId = xmlText(x, "MsgId");
  const content = decodeContent(msgType, x, raw);
  const isEvent = content.type === "event";
  const from: Identity | undefined =
    fromUser === undefined || fromUser === ""
      ? isEvent
        ? { kind: "system", id: "sys" }
        : undefined
      : { kind: fromUser === "sys" ? "system" : "member", id: fromUser };
  const to: Identity[] = [];
  if (agentId !== undefined && agentId !== "") to.push({ kind: "app", id: agentId });
  else if (corpId !== undefined) to.push({ kind: "corp", id: corpId });
  const id = msgId !== undefined && msgId !== "" ? msgId : appEventKey(x);
  const subject =
    content.type === "event" && content.event.name === "kf_msg_or_event" ? `kf:${content.event.openKfId}` : (fromUser ?? "sys");
  return compact({
    channel: "app",
    id,
    corpId,
    conversationId: `app:${corpId ?? ""}:${agentId ?? ""}:${subject}`,
    from,
    to,
    time: createTime * 1000,
    content,
    raw,
    agentId,
    msgId: msgId === "" ? undefined : msgId,
  });
}

function decodeContent(msgType: string, x: XmlObject, raw: string): AppContent {
  switch (msgType) {
    case "text":
      return { type: "text", text: xmlText(x, "Content") ?? "" };
    case "image":
      return { type: "image", media: compact({ mediaId: xmlText(x, "MediaId"), url: xmlText(x, "PicUrl") }) };
    case "voice":
      return compact({ type: "voice", media: compact({ mediaId: xmlText(x, "MediaId") }), format: xmlText(x, "Format") });
    case "video":
      return compact({ type: "video", media: compact({ mediaId: xmlText(x, "MediaId") }), thumbMediaId: xmlText(x, "ThumbMediaId") });
    case "location":
      return compact({
        type: "location",
        latitude: num(x, "Location_X") ?? 0,
        longitude: num(x, "Location_Y") ?? 0,
        scale: num(x, "Scale"),
        name: xmlText(x, "Label"),
      });
    case "link":
      return compact({
        type: "link",
        title: xmlText(x, "Title") ?? "",
        description: xmlText(x, "Description"),
        url: xmlText(x, "Url") ?? "",
        picUrl: xmlText(x, "PicUrl"),
      });
    case "event":
      return { type: "event", event: decodeEvent(x, raw) };
    default:
      return { type: "unknown", msgType, raw };
  }
}

const MENU_EVENTS = new Set<string>([
  "click",
  "view",
  "scancode_push",
  "scancode_waitmsg",
  "pic_sysphoto",
  "pic_photo_or_album",
  "pic_weixin",
  "location_select",
]);

const KF_EVENTS = new Set<string>(KF_EVENT_TYPES);

/** XML element names of KF event fields, mapped to the sync_msg JSON names. */
const KF_XML_FIELDS: Record<string, string> = {
  OpenKfId: "open_kfid",
  OpenKfid: "open_kfid",
  ExternalUserID: "external_userid",
  Scene: "scene",
  SceneParam: "scene_param",
  WelcomeCode: "welcome_code",
  FailMsgId: "fail_msgid",
  FailType: "fail_type",
  ServicerUserID: "servicer_userid",
  Status: "status",
  StopType: "stop_type",
  ChangeType: "change_type",
  OldServicerUserID: "old_servicer_userid",
  NewServicerUserID: "new_servicer_userid",
  MsgCode: "msg_code",
  RecallMsgId: "recall_msgid",
  RejectSwitch: "reject_switch",
};

function kfEventFromXml(name: string, x: XmlObject, raw: string): KfEvent {
  const fields: Record<string, unknown> = { event_type: name };
  for (const [xmlName, jsonName] of Object.entries(KF_XML_FIELDS)) {
    const v = xmlText(x, xmlName);
    if (v !== undefined) fields[jsonName] = v;
  }
  const channels = xmlChild(x, "WechatChannels");
  if (channels !== undefined) {
    fields.wechat_channels = compact({
      nickname: xmlText(channels, "Nickname"),
      shop_nickname: xmlText(channels, "ShopNickname"),
      scene: xmlText(channels, "Scene"),
    });
  }
  return decodeKfEventFields(name, fields, raw);
}

function decodeEvent(x: XmlObject, raw: string): AppEvent {
  const eventName = xmlText(x, "Event") ?? "";
  const name = eventName.toLowerCase();
  if (MENU_EVENTS.has(name)) return decodeMenuEvent(name as MenuEvent["name"], x);
  if (KF_EVENTS.has(name)) return kfEventFromXml(name, x, raw) as AppEvent;
  switch (name) {
    case "subscribe":
    case "unsubscribe":
      return compact({ name, eventKey: xmlText(x, "EventKey") || undefined });
    case "kf_msg_or_event":
      return { name: "kf_msg_or_event", token: xmlText(x, "Token") ?? "", openKfId: xmlText(x, "OpenKfId") ?? xmlText(x, "OpenKfid") ?? "" };
    case "change_external_contact":
      return { name: "change_external_contact", change: decodeExternalContactChange(x) };
    case "change_external_chat":
      return compact({
        name: "change_external_chat",
        chatId: xmlText(x, "ChatId") ?? "",
        changeType: xmlText(x, "ChangeType") ?? "",
        updateDetail: xmlText(x, "UpdateDetail"),
        failReason: xmlText(x, "FailReason"),
        fields: plain(x),
      });
    case "sys_approval_change":
      return { name: "sys_approval_change", approval: decodeApproval(xmlChild(x, "ApprovalInfo")) };
    case "change_contact":
      return { name: "change_contact", change: decodeContactChange(x) };
    default:
      return { name: "unknown", eventName, raw };
  }
}

function decodeMenuEvent(name: MenuEvent["name"], x: XmlObject): MenuEvent {
  const ev: MenuEvent = { name, eventKey: xmlText(x, "EventKey") ?? "" };
  const scan = xmlChild(x, "ScanCodeInfo");
  if (scan !== undefined) ev.scanCode = compact({ scanType: xmlText(scan, "ScanType"), scanResult: xmlText(scan, "ScanResult") });
  const pics = xmlChild(x, "SendPicsInfo");
  if (pics !== undefined) {
    // WeCom sends one PicList with several items, or (seen in real captures) one PicList per picture
    const md5s = xmlList(pics, "PicList").flatMap((list) => {
      const l = asObject(list);
      return l === undefined ? [] : xmlList(l, "item").map((it) => { const o = asObject(it); return o === undefined ? "" : (xmlText(o, "PicMd5Sum") ?? ""); });
    });
    ev.pictures = { count: num(pics, "Count") ?? md5s.length, md5s };
  }
  const loc = xmlChild(x, "SendLocationInfo");
  if (loc !== undefined) {
    ev.location = compact({
      latitude: num(loc, "Location_X"),
      longitude: num(loc, "Location_Y"),
      scale: num(loc, "Scale"),
      label: xmlText(loc, "Label"),
      poiName: xmlText(loc, "Poiname"),
    });
  }
  return ev;
}

function decodeExternalContactChange(x: XmlObject): ExternalContactChange {
  const changeType = xmlText(x, "ChangeType") ?? "";
  const userId = xmlText(x, "UserID") ?? "";
  const externalUserId = xmlText(x, "ExternalUserID") ?? "";
  switch (changeType) {
    case "add_external_contact":
    case "add_half_external_contact":
      return compact({ changeType, userId, externalUserId, state: xmlText(x, "State"), welcomeCode: xmlText(x, "WelcomeCode") });
    case "edit_external_contact":
      return compact({ changeType, userId, externalUserId, state: xmlText(x, "State") });
    case "del_external_contact":
      return compact({ changeType, userId, externalUserId, source: xmlText(x, "Source") });
    case "del_follow_user":
      return { changeType, userId, externalUserId };
    case "transfer_fail":
      return { changeType, userId, externalUserId, failReason: xmlText(x, "FailReason") ?? "" };
    default:
      return { changeType: "unknown", value: changeType, fields: plain(x) };
  }
}

function asObject(node: XmlNode): XmlObject | undefined {
  return typeof node === "object" && !Array.isArray(node) ? node : undefined;
}

function decodeApproval(info: XmlObject | undefined): ApprovalInfo {
  if (info === undefined) throw new DecodeError(F, "sys_approval_change without <ApprovalInfo>");
  const applyer = xmlChild(info, "Applyer");
  const spRecords: ApprovalRecord[] = xmlList(info, "SpRecord").flatMap((node) => {
    const rec = asObject(node);
    if (rec === undefined) return [];
    const details = xmlList(rec, "Details").flatMap((d) => {
      const det = asObject(d);
      if (det === undefined) return [];
      const approver = xmlChild(det, "Approver");
      return [
        compact({
          approver: approver === undefined ? undefined : xmlText(approver, "UserId"),
          speech: xmlText(det, "Speech") || undefined,
          spStatus: num(det, "SpStatus"),
          spTime: num(det, "SpTime"),
        }),
      ];
    });
    return [compact({ spStatus: num(rec, "SpStatus"), approverAttr: num(rec, "ApproverAttr"), details })];
  });
  const notifyers = xmlList(info, "Notifyer").flatMap((n) => {
    const o = asObject(n);
    const id = o === undefined ? undefined : xmlText(o, "UserId");
    return id === undefined ? [] : [id];
  });
  return compact({
    spNo: xmlText(info, "SpNo") ?? "",
    spName: xmlText(info, "SpName"),
    spStatus: num(info, "SpStatus"),
    templateId: xmlText(info, "TemplateId"),
    applyTime: num(info, "ApplyTime"),
    applyer: applyer === undefined ? undefined : compact({ userId: xmlText(applyer, "UserId"), party: xmlText(applyer, "Party") }),
    spRecords,
    notifyers,
    statusChangeEvent: num(info, "StatuChangeEvent"),
    fields: plain(info),
  });
}

function splitList(v: string | undefined): string[] | undefined {
  return v === undefined || v === "" ? undefined : v.split(",").map((s) => s.trim());
}

function decodeContactChange(x: XmlObject): ContactChange {
  const changeType = xmlText(x, "ChangeType") ?? "";
  if (changeType !== "create_user" && changeType !== "update_user") {
    return { changeType: "unknown", value: changeType, fields: plain(x) };
  }
  const ext = xmlChild(x, "ExtAttr");
  const extAttr =
    ext === undefined
      ? undefined
      : xmlList(ext, "Item").flatMap((node) => {
          const it = asObject(node);
          if (it === undefined) return [];
          const text = xmlChild(it, "Text");
          const web = xmlChild(it, "Web");
          return [
            compact({
              name: xmlText(it, "Name"),
              type: num(it, "Type") ?? 0,
              text: text === undefined ? undefined : xmlText(text, "Value"),
              web: web === undefined ? undefined : compact({ title: xmlText(web, "Title"), url: xmlText(web, "Url") }),
            }),
          ];
        });
  const user: ContactUser = compact({
    userId: xmlText(x, "UserID") ?? "",
    newUserId: xmlText(x, "NewUserID"),
    name: xmlText(x, "Name"),
    departments: splitList(xmlText(x, "Department")),
    isLeaderInDept: splitList(xmlText(x, "IsLeaderInDept")),
    mobile: xmlText(x, "Mobile"),
    position: xmlText(x, "Position"),
    gender: num(x, "Gender"),
    email: xmlText(x, "Email"),
    status: num(x, "Status"),
    avatar: xmlText(x, "Avatar"),
    alias: xmlText(x, "Alias"),
    telephone: xmlText(x, "Telephone"),
    address: xmlText(x, "Address"),
    extAttr,
  });
  return { changeType, ...user };
}
