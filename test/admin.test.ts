/**
 * The admin API over a real server: authentication, strict parameters (a bad one is a 400 naming
 * it, never a 500 and never ignored), key paging of every listing, and account-level KF events.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN, AGENT, CORP, eventually, KFID, type Stack, startStack } from "./stack.js";

let stack: Stack;
beforeAll(async () => {
  stack = await startStack();
  for (const user of ["u1", "u2", "u3"]) await stack.wecom.appUserSendsText(AGENT, user, `hello from ${user}`);
  await stack.omni.waitFor(3);
});
afterAll(async () => {
  await stack?.stop();
});

async function get(path: string, auth: string | null = `Bearer ${ADMIN}`): Promise<{ status: number; body: any; headers: Headers }> {
  const res = await fetch(`${stack.gw.url}${path}`, auth === null ? {} : { headers: { authorization: auth } });
  return { status: res.status, body: await res.json(), headers: res.headers };
}

describe("admin API authentication", () => {
  it("takes the Bearer scheme in any case (RFC 7235), and nothing else", async () => {
    for (const scheme of ["Bearer", "bearer", "BEARER", "bEaReR"]) expect((await get("/admin/outbox", `${scheme} ${ADMIN}`)).status).toBe(200);
    for (const auth of [null, `Basic ${ADMIN}`, `Bearer ${ADMIN}x`, `Bearer ${ADMIN.slice(0, -1)}`, "Bearer", `Bearer${ADMIN}`, ADMIN]) {
      const r = await get("/admin/outbox", auth);
      expect(r.status, String(auth)).toBe(401);
      expect(r.body.errcode).toBe("unauthorized");
    }
  });

  it("is read-only", async () => {
    const res = await fetch(`${stack.gw.url}/admin/outbox`, { method: "DELETE", headers: { authorization: `Bearer ${ADMIN}` } });
    expect(res.status).toBe(405);
  });
});

describe("admin API parameters", () => {
  it.each([
    ["/admin/cursors?before=99999999999999999999", "before"],
    ["/admin/messages?before=99999999999999999999", "before"],
    ["/admin/outbox?before=-1", "before"],
    ["/admin/outbox?before=0", "before"],
    ["/admin/archive?before=1e3", "before"],
    ["/admin/messages?limit=abc", "limit"],
    ["/admin/messages?limit=0", "limit"],
    ["/admin/messages?limit=501", "limit"],
    ["/admin/messages?limit=", "limit"],
    ["/admin/messages?since=yesterday", "since"],
    ["/admin/messages?until=2026-11-30", "until"],
    ["/admin/messages?since=2000&until=1000", "since"],
    ["/admin/outbox?state=finished", "state"],
    ["/admin/outbox?state=pending,", "state"],
    ["/admin/conversations?channel=sms", "channel"],
    ["/admin/messages?channel=toString", "channel"],
    ["/admin/messages?conversation=", "conversation"],
    ["/admin/messages?limit=5&limit=6", "limit"],
    ["/admin/messages?channal=app", "unknown parameter"],
    ["/admin/cursors?state=dead", "unknown parameter"],
  ])("%s is a 400 naming %s", async (path, name) => {
    const r = await get(path);
    expect(r.status).toBe(400);
    expect(r.body.errcode).toBe("bad_param");
    expect(r.body.errmsg).toContain(name);
    expect(r.body.errmsg).not.toContain("\n");
  });

  it("unknown resources are a 404", async () => {
    for (const p of ["/admin/nothing", "/admin/constructor", "/admin/__proto__", "/admin/messages/1"]) expect((await get(p)).status).toBe(404);
  });

  it("good parameters still work, filters apply", async () => {
    const r = await get(`/admin/messages?channel=app&limit=2&since=0&until=${Date.now() + 60_000}`);
    expect(r.status).toBe(200);
    expect(r.body.items).toHaveLength(2);
    expect(r.body.items.every((m: { channel: string }) => m.channel === "app")).toBe(true);
    expect((await get("/admin/messages?channel=kf")).body.items).toEqual([]);
    expect((await get(`/admin/messages?until=1`)).body.items).toEqual([]);
    const conv = await get(`/admin/messages?conversation=${encodeURIComponent(`app:${CORP}:${AGENT}:u2`)}`);
    expect(conv.body.items.map((m: { message: { content: { text: string } } }) => m.message.content.text)).toEqual(["hello from u2"]);
  });
});

describe("admin API paging", () => {
  it.each(["messages", "conversations", "outbox?state=done"])("/admin/%s pages by key: every item once, newest first", async (resource) => {
    const sep = resource.includes("?") ? "&" : "?";
    const seen: unknown[] = [];
    let next: number | null = null;
    let pages = 0;
    do {
      const r: { status: number; body: any } = await get(`/admin/${resource}${sep}limit=1${next === null ? "" : `&before=${next}`}`);
      expect(r.status).toBe(200);
      seen.push(...r.body.items);
      next = r.body.next;
      pages++;
    } while (next !== null && pages < 20);
    const all = (await get(`/admin/${resource}`)).body.items;
    expect(all.length).toBeGreaterThanOrEqual(3);
    expect(seen).toEqual(all);
  });

  it("/admin/cursors pages by key like the others", async () => {
    for (const kf of ["wkACCOUNT2", "wkACCOUNT3"]) stack.wecom.addKfAccount(kf);
    for (const kf of [KFID, "wkACCOUNT2", "wkACCOUNT3"]) await stack.wecom.kfCustomerSends(kf, "wmPAGER", { msgtype: "text", text: { content: `to ${kf}` } });
    await eventually(async () => (await get("/admin/cursors")).body.items.length === 3, 5000, "three KF accounts");
    const first = await get("/admin/cursors?limit=2");
    expect(first.body.items).toHaveLength(2);
    expect(typeof first.body.next).toBe("number");
    const second = await get(`/admin/cursors?limit=2&before=${first.body.next}`);
    expect(second.body.items).toHaveLength(1);
    expect(second.body.next).toBeNull();
    const ids = [...first.body.items, ...second.body.items].map((c: { openKfId: string }) => c.openKfId);
    expect(new Set(ids)).toEqual(new Set([KFID, "wkACCOUNT2", "wkACCOUNT3"]));
  });
});

describe("account-level KF events", () => {
  it("servicer_status_change is stored under the account's address, shown, and not delivered", async () => {
    const before = stack.omni.received.length;
    await stack.wecom.kfEvent(KFID, { event_type: "servicer_status_change", servicer_userid: "zhangsan", status: 2, stop_type: 1 });
    const account = `kf:${CORP}:${KFID}`;
    const shown = await eventually(async () => {
      const r = await get(`/admin/messages?conversation=${encodeURIComponent(account)}`);
      return r.body.items.length > 0 ? r.body.items : undefined;
    });
    expect(shown[0].message.content).toMatchObject({ type: "event", event: { name: "servicer_status_change", servicerUserId: "zhangsan" } });
    // a customer message sent after it arrives; the account event never did
    await stack.wecom.kfCustomerSends(KFID, "wmAFTER", { msgtype: "text", text: { content: "after the event" } });
    await eventually(() => stack.omni.received.some((g) => g.body.Content === "after the event"));
    expect(stack.omni.received.slice(before).map((g) => g.body.FromUserId)).not.toContain(account);
    expect(stack.omni.received.slice(before).some((g) => g.body.Content === "servicer_status_change")).toBe(false);
  });
});
