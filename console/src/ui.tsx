/**
 * Small pieces shared by the console's pages: time formatting, shortened ids, state badges, a
 * polling hook and an error line.
 * @module
 */
import type { ComponentChildren } from "preact";
import { useEffect, useRef } from "preact/hooks";

const pad = (n: number, w = 2): string => String(n).padStart(w, "0");

/**
 * A time as the console shows it: local `HH:mm:ss`, preceded by the date (`YYYY-MM-DD`) when it
 * is not today.
 * @param ms epoch milliseconds
 * @param now the current time, ms (for tests)
 * @returns the formatted time, or "—" for a missing or invalid time
 */
export function formatTime(ms: number | null | undefined, now: number = Date.now()): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms) || ms <= 0) return "—";
  const d = new Date(ms);
  const t = new Date(now);
  const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const today = d.getFullYear() === t.getFullYear() && d.getMonth() === t.getMonth() && d.getDate() === t.getDate();
  return today ? hms : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}`;
}

/**
 * The full local date and time, for a `title`.
 * @param ms epoch milliseconds
 * @returns `YYYY-MM-DD HH:mm:ss.SSS`
 */
export function fullTime(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms) || ms <= 0) return "";
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

/**
 * A time cell: `HH:mm:ss` (with the date when not today), the full time in `title`.
 * @param props.ms epoch milliseconds
 */
export function Time(props: { ms: number | null | undefined }) {
  return (
    <time class="ts" title={fullTime(props.ms)}>
      {formatTime(props.ms)}
    </time>
  );
}

/**
 * Shorten a long id in the middle.
 * @param value the id
 * @param max the longest length kept whole
 * @returns the id, or its head and tail joined by an ellipsis
 */
export function shorten(value: string, max = 24): string {
  if (value.length <= max) return value;
  const head = Math.ceil((max - 1) * 0.45);
  const tail = max - 1 - head;
  return `${value.slice(0, head)}…${value.slice(value.length - tail)}`;
}

/**
 * A long id shortened, with the full value in `title`.
 * @param props.value the id (null or empty shows "—")
 * @param props.max the longest length kept whole
 * @param props.context said before the full value in `title` (the tenant, …)
 */
export function Short(props: { value: string | null | undefined; max?: number; context?: string }) {
  const v = props.value;
  if (v === null || v === undefined || v === "") return <span class="muted">—</span>;
  const s = shorten(v, props.max);
  return (
    <span class="mono short" title={props.context === undefined ? v : `${props.context} · ${v}`}>
      {s}
    </span>
  );
}

const TONES: Record<string, string> = {
  delivered: "good",
  sent: "good",
  done: "good",
  ok: "good",
  open: "good",
  cached: "good",
  callback: "good",
  connected: "good",
  stored: "info",
  queued: "info",
  pending: "info",
  inflight: "info",
  connecting: "info",
  kf: "info",
  retrying: "warn",
  standby: "warn",
  expired: "warn",
  reconnecting: "warn",
  refused: "bad",
  dead: "bad",
  fail: "bad",
  failed: "bad",
  closed: "bad",
};

/**
 * The colour family of a state: `good`, `info`, `warn`, `bad` or `neutral`.
 * @param state a state name
 * @returns the tone
 */
export function tone(state: string): string {
  return TONES[state] ?? "neutral";
}

/**
 * A state badge, coloured by {@link tone}.
 * @param props.state the state
 * @param props.title a tooltip (the error, …)
 * @param props.children the label, the state itself when none
 */
export function Badge(props: { state: string; title?: string | undefined; children?: ComponentChildren }) {
  return (
    <span class={`badge tone-${tone(props.state)}`} title={props.title}>
      {props.children ?? props.state}
    </span>
  );
}

/**
 * Call `task` now and then again `everyMs` after each run ends, while the component is mounted
 * and `deps` are unchanged; runs never overlap. Hidden tabs keep polling (slowly: browsers
 * throttle timers).
 * @param task the work; its signal aborts when the component unmounts or deps change
 * @param everyMs the pause between runs
 * @param deps restart when these change
 */
export function usePoll(task: (signal: AbortSignal) => Promise<void>, everyMs: number, deps: readonly unknown[]): void {
  const taskRef = useRef(task);
  taskRef.current = task;
  useEffect(() => {
    const ctl = new AbortController();
    let timer: number | undefined;
    const run = async () => {
      try {
        await taskRef.current(ctl.signal);
      } catch {
        // the task shows its own errors
      }
      if (!ctl.signal.aborted) timer = window.setTimeout(run, everyMs);
    };
    void run();
    return () => {
      ctl.abort();
      if (timer !== undefined) window.clearTimeout(timer);
    };
  }, [everyMs, ...deps]);
}

/**
 * An error line (nothing when there is no error).
 * @param props.error the message, or null
 */
export function ErrorLine(props: { error: string | null | undefined }) {
  if (props.error === null || props.error === undefined || props.error === "") return null;
  return (
    <p class="error-line" role="alert">
      {props.error}
    </p>
  );
}

/**
 * A page's heading with optional controls on the right.
 * @param props.title the heading
 * @param props.children controls, status
 */
export function PageHeader(props: { title: string; children?: ComponentChildren }) {
  return (
    <header class="page-header">
      <h1>{props.title}</h1>
      <div class="page-tools">{props.children}</div>
    </header>
  );
}

/**
 * An empty state: a muted centred line.
 * @param props.children the text
 */
export function Empty(props: { children: ComponentChildren }) {
  return <div class="empty">{props.children}</div>;
}

/**
 * A number with thousands separators, or "—".
 * @param n the number
 * @returns the formatted number
 */
export function num(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return "—";
  return n.toLocaleString("en-US", { maximumFractionDigits: 2 });
}
