/**
 * The Outbox page: what the gateway still has to send (or gave up on), counts by state, replay of
 * dead letters (one or all), refreshed every {@link REFRESH_MS} ms; the audit log below.
 * @module
 */
import type { AuditItem, ConsoleOutboxEntry, OutboxPage, Paged, ReplayResult } from "../../src/gateway/console/types.ts";
import { useState } from "preact/hooks";
import { errorText, get, post } from "./api.ts";
import { Badge, Empty, ErrorLine, PageHeader, Short, Time, usePoll } from "./ui.tsx";

/** How often the list is read again while the page is open, ms. */
export const REFRESH_MS = 3000;

type State = ConsoleOutboxEntry["state"];
const STATES: readonly State[] = ["pending", "inflight", "done", "refused", "dead"];
const DEFAULT_STATES: readonly State[] = ["pending", "inflight", "refused", "dead"];
const PAGE_SIZE = 100;
const AUDIT_SIZE = 50;

/** The Outbox page. */
export function Outbox() {
  const [states, setStates] = useState<readonly State[]>(DEFAULT_STATES);
  const [page, setPage] = useState<OutboxPage | null>(null);
  /** Entries of the pages after the first ("more"), kept until the filter changes. */
  const [older, setOlder] = useState<{ items: ConsoleOutboxEntry[]; next: number | null } | null>(null);
  const [error, setError] = useState<string | null>(null);
  /** The last replay's outcome: "N replayed", or why it failed. */
  const [notice, setNotice] = useState<{ ok: boolean; text: string } | null>(null);
  const [busy, setBusy] = useState(false);
  const [audit, setAudit] = useState<Paged<AuditItem> | null>(null);
  /** Audit items of the pages after the first ("more"). */
  const [auditOlder, setAuditOlder] = useState<Paged<AuditItem> | null>(null);
  const [tick, setTick] = useState(0);

  const stateParam = STATES.filter((s) => states.includes(s)).join(",");

  usePoll(
    async (signal) => {
      // the two are independent: one failing leaves the other shown
      const [p, a] = await Promise.allSettled([
        get<OutboxPage>("/console/api/outbox", { state: stateParam, limit: PAGE_SIZE }, { signal }),
        get<Paged<AuditItem>>("/console/api/audit", { limit: AUDIT_SIZE }, { signal }),
      ]);
      if (signal.aborted) return;
      if (p.status === "fulfilled") setPage(p.value);
      if (a.status === "fulfilled") setAudit(a.value);
      const failed = p.status === "rejected" ? p.reason : a.status === "rejected" ? a.reason : undefined;
      setError(failed === undefined ? null : errorText(failed));
    },
    REFRESH_MS,
    [stateParam, tick],
  );

  const toggle = (s: State) => {
    setOlder(null);
    // at least one state stays chosen
    setStates((cur) => (cur.includes(s) ? (cur.length > 1 ? cur.filter((x) => x !== s) : cur) : [...cur, s]));
  };

  const replay = async (body: { ids: number[] } | { all: true }) => {
    setBusy(true);
    setNotice(null);
    try {
      const r = await post<ReplayResult>("/admin/outbox/replay", body);
      setNotice({ ok: true, text: `${r.replayed} replayed` });
    } catch (e) {
      setNotice({ ok: false, text: `replay failed: ${errorText(e)}` });
    } finally {
      setBusy(false);
      setTick((t) => t + 1);
    }
  };

  const more = async () => {
    const before = older === null ? (page?.next ?? null) : older.next;
    if (before === null) return;
    try {
      const p = await get<OutboxPage>("/console/api/outbox", { state: stateParam, limit: PAGE_SIZE, before });
      setOlder((o) => ({ items: [...(o?.items ?? []), ...p.items], next: p.next }));
    } catch (e) {
      setError(errorText(e));
    }
  };

  const moreAudit = async () => {
    const before = auditOlder === null ? (audit?.next ?? null) : auditOlder.next;
    if (before === null) return;
    try {
      const p = await get<Paged<AuditItem>>("/console/api/audit", { limit: AUDIT_SIZE, before });
      setAuditOlder((o) => ({ items: [...(o?.items ?? []), ...p.items], next: p.next }));
    } catch (e) {
      setError(errorText(e));
    }
  };

  const first = page?.items ?? [];
  const firstIds = new Set(first.map((e) => e.id));
  const entries = [...first, ...(older?.items ?? []).filter((e) => !firstIds.has(e.id))];
  const hasMore = older === null ? (page?.next ?? null) !== null : older.next !== null;
  const deadCount = page?.counts.dead ?? 0;
  const auditFirst = audit?.items ?? [];
  const auditIds = new Set(auditFirst.map((a) => a.id));
  const auditItems = [...auditFirst, ...(auditOlder?.items ?? []).filter((a) => !auditIds.has(a.id))];
  const auditMore = auditOlder === null ? (audit?.next ?? null) !== null : auditOlder.next !== null;

  return (
    <section class="page page-outbox">
      <PageHeader title="Outbox">
        {notice !== null && (
          <span class={notice.ok ? "notice" : "notice notice-error"} role="status">
            {notice.text}
          </span>
        )}
        <button type="button" class="danger" data-testid="replay-all" disabled={busy} onClick={() => void replay({ all: true })} title="Put every dead letter back to pending">
          Replay all dead{deadCount > 0 ? ` (${deadCount})` : ""}
        </button>
      </PageHeader>
      <fieldset class="state-filter">
        <legend class="sr-only">States shown</legend>
        {STATES.map((s) => (
          <label key={s} class={`state-toggle${states.includes(s) ? " on" : ""}`}>
            <input type="checkbox" value={s} checked={states.includes(s)} onChange={() => toggle(s)} />
            <Badge state={s} />
            <span class="count">{page === null ? "…" : (page.counts[s] ?? 0)}</span>
          </label>
        ))}
      </fieldset>
      <ErrorLine error={error} />
      <div class="table-wrap">
        <table class="grid outbox-table">
          <thead>
            <tr>
              <th class="col-num col-id">Id</th>
              <th class="col-state">State</th>
              <th class="col-kind">Kind</th>
              <th class="col-conv">Conversation</th>
              <th>Summary</th>
              <th class="col-num col-attempts">Attempts</th>
              <th class="col-error">Last error</th>
              <th class="col-time">Updated</th>
              <th class="col-action" />
            </tr>
          </thead>
          <tbody>
            {entries.map((e) => (
              <tr key={e.id} data-testid="outbox-row" data-state={e.state}>
                <td class="col-num mono">{e.id}</td>
                <td>
                  <Badge state={e.state} />
                </td>
                <td class="mono clip" title={e.kind}>
                  {e.kind}
                </td>
                <td class="clip">{e.conversationId === null ? <span class="muted mono">{e.tenant}</span> : <Short value={e.conversationId} max={24} context={e.tenant} />}</td>
                <td class="summary clip" title={e.summary}>
                  {e.summary}
                </td>
                <td class="col-num" title={e.state === "pending" && e.attempts > 0 ? `next attempt ${new Date(e.nextAttemptAt).toLocaleTimeString()}` : undefined}>
                  {e.attempts}
                </td>
                <td class="error-cell">
                  {e.lastError === null ? (
                    <span class="muted">—</span>
                  ) : (
                    <span title={e.lastError}>
                      {e.errcode !== null && !e.lastError.includes(String(e.errcode)) && <span class="mono">{e.errcode} </span>}
                      {e.lastError}
                    </span>
                  )}
                </td>
                <td>
                  <Time ms={e.updatedAt} />
                </td>
                <td>
                  {e.state === "dead" && (
                    <button type="button" class="small-button" data-testid="outbox-replay" disabled={busy} onClick={() => void replay({ ids: [e.id] })}>
                      Replay
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        {page !== null && entries.length === 0 && <Empty>No entry in the chosen states.</Empty>}
        {hasMore && (
          <button type="button" class="more" onClick={() => void more()}>
            More
          </button>
        )}
      </div>

      <h2 class="section-title">Audit log</h2>
      <div class="table-wrap">
        <table class="grid">
          <thead>
            <tr>
              <th>When</th>
              <th>Action</th>
              <th>Detail</th>
              <th>Actor</th>
              <th>From</th>
            </tr>
          </thead>
          <tbody>
            {auditItems.map((a) => (
              <tr key={a.id}>
                <td>
                  <Time ms={a.time} />
                </td>
                <td>
                  <span class={`chip action-${a.action}`}>{a.action}</span>
                </td>
                <td class="summary">{a.detail}</td>
                <td>{a.actor}</td>
                <td class="mono">{a.from}</td>
              </tr>
            ))}
          </tbody>
        </table>
        {audit !== null && auditItems.length === 0 && <Empty>No action recorded yet.</Empty>}
        {auditMore && (
          <button type="button" class="more" onClick={() => void moreAudit()}>
            More
          </button>
        )}
      </div>
    </section>
  );
}
