/**
 * The seven KF events, decoded from their sync_msg JSON field names. The app XML decoder maps its
 * element names onto these, so both forms share one decoder.
 * @module
 */
import type { KfEvent } from "../../model.js";
import { compact, isObject, type JsonObject, optNumber, optString } from "../fields.js";

/**
 * Decode a KF event from its fields (sync_msg names: open_kfid, external_userid, ...).
 * Unknown event types give `{ name: "unknown", eventName, raw }`.
 */
export function decodeKfEventFields(eventType: string, e: JsonObject, raw: unknown): KfEvent {
  const openKfId = optString(e, "open_kfid") ?? "";
  const externalUserId = optString(e, "external_userid") ?? "";
  switch (eventType) {
    case "enter_session": {
      const ch = e.wechat_channels;
      return compact({
        name: "enter_session",
        openKfId,
        externalUserId,
        scene: optString(e, "scene"),
        sceneParam: optString(e, "scene_param"),
        welcomeCode: optString(e, "welcome_code"),
        wechatChannels: isObject(ch)
          ? compact({ nickname: optString(ch, "nickname"), shopNickname: optString(ch, "shop_nickname"), scene: optNumber(ch, "scene") })
          : undefined,
      });
    }
    case "msg_send_fail":
      return { name: "msg_send_fail", openKfId, externalUserId, failMsgId: optString(e, "fail_msgid") ?? "", failType: optNumber(e, "fail_type") ?? 0 };
    case "servicer_status_change":
      return compact({
        name: "servicer_status_change",
        openKfId: openKfId || undefined,
        servicerUserId: optString(e, "servicer_userid") ?? "",
        status: optNumber(e, "status") ?? 0,
        stopType: optNumber(e, "stop_type"),
      });
    case "session_status_change":
      return compact({
        name: "session_status_change",
        openKfId,
        externalUserId,
        changeType: optNumber(e, "change_type") ?? 0,
        oldServicerUserId: optString(e, "old_servicer_userid") || undefined,
        newServicerUserId: optString(e, "new_servicer_userid") || undefined,
        msgCode: optString(e, "msg_code") || undefined,
      });
    case "user_recall_msg":
      return { name: "user_recall_msg", openKfId, externalUserId, recallMsgId: optString(e, "recall_msgid") ?? "" };
    case "servicer_recall_msg":
      return {
        name: "servicer_recall_msg",
        openKfId,
        externalUserId,
        recallMsgId: optString(e, "recall_msgid") ?? "",
        servicerUserId: optString(e, "servicer_userid") ?? "",
      };
    case "reject_customer_msg_switch_change":
      return {
        name: "reject_customer_msg_switch_change",
        openKfId,
        externalUserId,
        servicerUserId: optString(e, "servicer_userid") ?? "",
        rejectSwitch: optNumber(e, "reject_switch") ?? 0,
      };
    default:
      return { name: "unknown", eventName: eventType, raw };
  }
}
