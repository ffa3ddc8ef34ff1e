/**
 * Conversation addresses: what inbound delivery gives the 全媒体 as `FromUserId`, and what the
 * 全媒体 sends back as `ToUserId` to reach the same customer on the same channel.
 *
 * | address | channel |
 * |---|---|
 * | `app:{corpId}:{agentId}:{userId}` | a member of a self-built app |
 * | `kf:{corpId}:{openKfId}:{externalUserId}` | a WeChat customer of a KF account |
 * | `kf:{corpId}:{openKfId}` | the KF account itself (account-level events; not answerable) |
 * | `bot:{botId}:user:{userId}` / `bot:{botId}:group:{chatId}` | an AI bot's single or group chat |
 * | `archive:{corpId}:room:{roomId}` / `archive:{corpId}:{peerA}\|{peerB}` / `archive:{corpId}:{peer}` | a session-archive record (not a channel; one peer for actions such as `switch`) |
 *
 * Pure: no I/O, importable alone.
 * @module
 */

/** A parsed conversation address. */
export type ConversationAddress =
  | { channel: "app"; corpId: string; agentId: number; userId: string }
  | { channel: "kf"; corpId: string; openKfId: string; externalUserId: string }
  | { channel: "kf_account"; corpId: string; openKfId: string }
  | { channel: "bot"; botId: string; chat: "user" | "group"; id: string }
  | { channel: "archive"; corpId: string; room?: string; peers?: string[] };

/** The characters WeCom uses in its ids (corp, agent, user, open_kfid, external_userid, bot, chat). */
const ID = /^[A-Za-z0-9_\-.@]{1,128}$/;

/**
 * Parse a conversation address; undefined for anything that is not one (the 全媒体 answers
 * 30006 for those). Strict: every part must look like the WeCom id it names.
 * @example parseConversationAddress("kf:ww1:wkAbc:wmXyz") // { channel: "kf", corpId: "ww1", openKfId: "wkAbc", externalUserId: "wmXyz" }
 */
export function parseConversationAddress(address: string): ConversationAddress | undefined {
  if (typeof address !== "string" || address.length > 512) return undefined;
  const parts = address.split(":");
  const ok = (...ids: (string | undefined)[]) => ids.every((s) => s !== undefined && ID.test(s));
  switch (parts[0]) {
    case "app": {
      const [, corpId, agent, userId] = parts;
      if (parts.length !== 4 || !ok(corpId, userId) || agent === undefined || !/^[1-9]\d{0,9}$/.test(agent)) return undefined;
      return { channel: "app", corpId: corpId as string, agentId: Number(agent), userId: userId as string };
    }
    case "kf": {
      const [, corpId, openKfId, externalUserId] = parts;
      if (parts.length === 3 && ok(corpId, openKfId)) return { channel: "kf_account", corpId: corpId as string, openKfId: openKfId as string };
      if (parts.length !== 4 || !ok(corpId, openKfId, externalUserId)) return undefined;
      return { channel: "kf", corpId: corpId as string, openKfId: openKfId as string, externalUserId: externalUserId as string };
    }
    case "bot": {
      const [, botId, chat, id] = parts;
      if (parts.length !== 4 || (chat !== "user" && chat !== "group") || !ok(botId, id)) return undefined;
      return { channel: "bot", botId: botId as string, chat, id: id as string };
    }
    case "archive": {
      const [, corpId, a, b] = parts;
      if (!ok(corpId)) return undefined;
      if (parts.length === 4 && a === "room" && ok(b)) return { channel: "archive", corpId: corpId as string, room: b as string };
      const peers = parts.length === 3 ? (a ?? "").split("|") : [];
      if ((peers.length === 1 || peers.length === 2) && ok(...peers)) return { channel: "archive", corpId: corpId as string, peers };
      return undefined;
    }
    default:
      return undefined;
  }
}

/** The address of a parsed conversation (the inverse of {@link parseConversationAddress}). */
export function formatConversationAddress(a: ConversationAddress): string {
  switch (a.channel) {
    case "app":
      return `app:${a.corpId}:${a.agentId}:${a.userId}`;
    case "kf":
      return `kf:${a.corpId}:${a.openKfId}:${a.externalUserId}`;
    case "kf_account":
      return `kf:${a.corpId}:${a.openKfId}`;
    case "bot":
      return `bot:${a.botId}:${a.chat}:${a.id}`;
    case "archive":
      return a.room !== undefined ? `archive:${a.corpId}:room:${a.room}` : `archive:${a.corpId}:${(a.peers ?? []).join("|")}`;
  }
}
