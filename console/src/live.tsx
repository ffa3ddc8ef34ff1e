/**
 * The Live page: every message crossing the bridge as it happens, from the server-sent events of
 * `/console/api/live` (one row per `key`, updated in place, newest on top, at most
 * {@link MAX_ROWS}).
 * @module
 */
import type { ConsoleChannel, LiveEvent } from "../../src/gateway/console/types.ts";
import { useEffect, useState } from "preact/hooks";
import { sessionAlive } from "./api.ts";
import { Badge, Empty, PageHeader, Short, Time } from "./ui.tsx";

/** Rows kept on the page. */
export const MAX_ROWS = 500;

const CHANNEL_LABELS: Record<ConsoleChannel, string> = { app: "App", kf: "KF", bot: "Bot", archive: "Archive" };

/** Connection state of the event stream. */
type Conn = "connecting" | "connected" | "reconnecting";

/**
 * Put an event into the rows: replace the row with its key where it stands, or add it on top
 * (dropping the oldest past {@link MAX_ROWS}).
 * @param rows the rows, newest first
 * @param ev the event
 * @returns the new rows
 */
export function upsert(rows: readonly LiveEvent[], ev: LiveEvent): LiveEvent[] {
  const i = rows.findIndex((r) => r.key === ev.key);
  if (i >= 0) {
    const next = rows.slice();
    next[i] = ev;
    return next;
  }
  const next = [ev, ...rows];
  if (next.length > MAX_ROWS) next.length = MAX_ROWS;
  return next;
}

function isLiveEvent(v: unknown): v is LiveEvent {
  const o = v as Partial<LiveEvent> | null;
  return typeof o === "object" && o !== null && typeof o.key === "string" && typeof o.time === "number";
}

/** The Live page. */
export function Live() {
  const [rows, setRows] = useState<LiveEvent[]>([]);
  const [conn, setConn] = useState<Conn>("connecting");
  /** While paused: the rows as they were when paused (new events still arrive underneath). */
  const [frozen, setFrozen] = useState<LiveEvent[] | null>(null);

  useEffect(() => {
    let es: EventSource | null = null;
    let retry: number | undefined;
    let closed = false;

    const open = () => {
      es = new EventSource("/console/api/live");
      es.onopen = () => setConn("connected");
      es.addEventListener("live", (m) => {
        let ev: unknown;
        try {
          ev = JSON.parse((m as MessageEvent<string>).data);
        } catch {
          return;
        }
        if (isLiveEvent(ev)) setRows((r) => upsert(r, ev));
      });
      es.onerror = () => {
        if (closed) return;
        setConn("reconnecting");
        // CONNECTING: the browser retries by itself. CLOSED: the server refused the stream (a 401,
        // an error): check the session (a 401 shows the login form), else open it again later.
        if (es?.readyState === EventSource.CLOSED) {
          es.close();
          void sessionAlive().then((alive) => {
            if (alive && !closed) retry = window.setTimeout(open, 3000);
          });
        }
      };
    };
    open();
    return () => {
      closed = true;
      if (retry !== undefined) window.clearTimeout(retry);
      es?.close();
    };
  }, []);

  const shown = frozen ?? rows;

  return (
    <section class="page page-live">
      <PageHeader title="Live">
        <span class={`conn conn-${conn}`} title="The event stream from the gateway">
          <span class="dot" aria-hidden="true" />
          {conn === "connected" ? "connected" : conn === "connecting" ? "connecting…" : "reconnecting…"}
        </span>
        <span class="muted small">{rows.length === MAX_ROWS ? `last ${MAX_ROWS} messages` : `${rows.length} messages`}</span>
        <button type="button" onClick={() => setFrozen(frozen === null ? rows : null)} aria-pressed={frozen !== null}>
          {frozen === null ? "Pause" : "Resume"}
        </button>
        <button
          type="button"
          onClick={() => {
            setRows([]);
            setFrozen(null);
          }}
        >
          Clear
        </button>
      </PageHeader>
      <div class="table-wrap">
        <table class="grid live-table">
          <thead>
            <tr>
              <th class="col-time">Time</th>
              <th class="col-channel">Channel</th>
              <th class="col-dir">Dir</th>
              <th class="col-conv">Conversation</th>
              <th>Summary</th>
              <th class="col-state">State</th>
              <th class="col-num">Latency</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((r) => (
              <tr key={r.key} data-testid="live-row" data-direction={r.direction} data-channel={r.channel} data-state={r.state} class={`dir-${r.direction}`}>
                <td class="col-time">
                  <Time ms={r.time} />
                </td>
                <td class="col-channel">
                  <span class={`chip chip-${r.channel}`}>{CHANNEL_LABELS[r.channel] ?? r.channel}</span>
                </td>
                <td class="col-dir">
                  <span class={`arrow arrow-${r.direction}`} title={r.direction === "in" ? "in: WeCom → 全媒体" : "out: 全媒体 agent → WeCom"}>
                    {r.direction === "in" ? "→" : "←"}
                  </span>
                </td>
                <td class="col-conv">
                  <Short value={r.conversationId} max={34} context={r.tenant} />
                </td>
                <td class="summary">
                  {r.summary}
                  {r.error !== undefined && r.error !== "" && <div class="row-error small">{r.error}</div>}
                </td>
                <td class="col-state">
                  <Badge state={r.state} title={r.error} />
                </td>
                <td class="col-num mono">{r.latencyMs === null ? "—" : `${r.latencyMs} ms`}</td>
              </tr>
            ))}
          </tbody>
        </table>
        {shown.length === 0 && <Empty>Waiting for messages… each one appears here as it crosses the bridge.</Empty>}
      </div>
    </section>
  );
}
