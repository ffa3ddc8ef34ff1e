/**
 * The Health page: the gateway's last hour (a sample every `intervalSec`), one small SVG line
 * chart per figure with its current value and the hour's maximum, refreshed every
 * {@link REFRESH_MS} ms.
 * @module
 */
import type { Health as HealthAnswer, HealthPoint } from "../../src/gateway/console/types.ts";
import { useState } from "preact/hooks";
import { errorText, get } from "./api.ts";
import { Empty, ErrorLine, PageHeader, num, usePoll } from "./ui.tsx";

/** How often the page is read again, ms. */
export const REFRESH_MS = 10_000;

/** The chart's drawing box (the SVG stretches it to the card's width). */
const W = 300;
const H = 80;
const HOUR_MS = 3600_000;

type Figure = keyof Omit<HealthPoint, "time">;

/** One series of a chart. */
interface Series {
  figure: Figure;
  label: string;
  /** Class of its line and area (its colour). */
  cls: string;
}

/** The charts: title, unit and series. */
const CHARTS: { title: string; unit: string; series: Series[] }[] = [
  { title: "In (from WeCom)", unit: "/s", series: [{ figure: "inPerSec", label: "in/s", cls: "s1" }] },
  { title: "Delivered to the 全媒体", unit: "/s", series: [{ figure: "deliveredPerSec", label: "delivered/s", cls: "s2" }] },
  { title: "Out (to WeCom)", unit: "/s", series: [{ figure: "outPerSec", label: "out/s", cls: "s3" }] },
  { title: "Errors", unit: "", series: [{ figure: "errors", label: "errors", cls: "s-bad" }] },
  { title: "Outbox depth", unit: "", series: [{ figure: "outboxDepth", label: "pending + in flight", cls: "s4" }] },
  { title: "Dead letters", unit: "", series: [{ figure: "dead", label: "dead", cls: "s-bad" }] },
  {
    title: "Latency",
    unit: " ms",
    series: [
      { figure: "p50Ms", label: "p50", cls: "s1" },
      { figure: "p95Ms", label: "p95", cls: "s5" },
    ],
  },
];

/** A maximum rounded up to 1, 2 or 5 times a power of ten (the chart's top). */
function niceMax(max: number): number {
  if (!(max > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(max));
  for (const m of [1, 2, 5, 10]) if (max <= m * p) return m * p;
  return 10 * p;
}

/**
 * The polylines of a series: one per run of samples without a gap (a null value, or more than
 * 2.5 intervals between two samples).
 * @param points the samples, oldest first
 * @param figure which value
 * @param x0 the time at the chart's left edge, ms
 * @param top the value at the chart's top edge
 * @param gapMs a longer pause between two samples breaks the line
 * @returns the runs, each a list of `[x, y]` in the drawing box
 */
export function segments(points: readonly HealthPoint[], figure: Figure, x0: number, top: number, gapMs: number): [number, number][][] {
  const out: [number, number][][] = [];
  let run: [number, number][] = [];
  let lastTime = Number.NEGATIVE_INFINITY;
  for (const p of points) {
    const v = p[figure];
    if (v === null || p.time < x0 || p.time - lastTime > gapMs) {
      if (run.length > 0) out.push(run);
      run = [];
    }
    lastTime = p.time;
    if (v === null || p.time < x0) continue;
    const x = ((p.time - x0) / HOUR_MS) * W;
    const y = H - (Math.min(v, top) / top) * (H - 4);
    run.push([x, y]);
  }
  if (run.length > 0) out.push(run);
  return out;
}

/** One chart: title, current values, the hour's maximum, the lines. */
function Chart(props: { title: string; unit: string; series: Series[]; points: HealthPoint[]; intervalSec: number }) {
  const { points } = props;
  const last = points.at(-1);
  const end = last?.time ?? Date.now();
  const x0 = end - HOUR_MS;
  let max = 0;
  for (const p of points) for (const s of props.series) max = Math.max(max, p[s.figure] ?? 0);
  const top = niceMax(max);
  const gapMs = props.intervalSec * 1000 * 2.5;
  const fmt = (v: number | null | undefined) => (v === null || v === undefined ? "—" : `${num(v)}${props.unit}`);
  const label = `${props.title}: ${props.series.map((s) => `${s.label} ${fmt(last?.[s.figure])}`).join(", ")}; max ${fmt(max)}`;
  return (
    <figure class="chart card">
      <figcaption class="chart-head">
        <span class="chart-title">{props.title}</span>
        <span class="chart-values">
          {props.series.map((s) => (
            <span key={s.figure} class={`chart-now ${s.cls}`}>
              {props.series.length > 1 && <span class="chart-label">{s.label}</span>}
              {fmt(last?.[s.figure])}
            </span>
          ))}
        </span>
      </figcaption>
      <svg class="chart-svg" viewBox={`0 0 ${W} ${H}`} preserveAspectRatio="none" role="img" aria-label={label}>
        <line class="grid-line" x1="0" x2={W} y1={H / 2} y2={H / 2} vector-effect="non-scaling-stroke" />
        <line class="grid-line" x1="0" x2={W} y1="4" y2="4" vector-effect="non-scaling-stroke" />
        <line class="axis-line" x1="0" x2={W} y1={H - 0.5} y2={H - 0.5} vector-effect="non-scaling-stroke" />
        {props.series.map((s) =>
          segments(points, s.figure, x0, top, gapMs).map((run) => {
            // a lone sample is drawn as a short dash ending at it
            const pts: [number, number][] = run.length === 1 && run[0] !== undefined ? [[Math.max(0, run[0][0] - 1.5), run[0][1]], run[0]] : run;
            const line = pts.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
            const firstX = (pts[0]?.[0] ?? 0).toFixed(1);
            const lastX = (pts.at(-1)?.[0] ?? 0).toFixed(1);
            return (
              <g key={`${s.figure}-${firstX}`} class={s.cls}>
                {props.series.length === 1 && <polygon class="chart-area" points={`${firstX},${H} ${line} ${lastX},${H}`} />}
                <polyline class="chart-line" points={line} vector-effect="non-scaling-stroke" />
              </g>
            );
          }),
        )}
      </svg>
      <div class="chart-foot muted small">
        <span>−60 min</span>
        <span title={`the chart's top: ${num(top)}${props.unit}`}>the hour's max {fmt(max)}</span>
        <span>now</span>
      </div>
    </figure>
  );
}

/** The Health page. */
export function Health() {
  const [h, setH] = useState<HealthAnswer | null>(null);
  const [error, setError] = useState<string | null>(null);

  usePoll(
    async (signal) => {
      try {
        const answer = await get<HealthAnswer>("/console/api/health", undefined, { signal });
        if (signal.aborted) return;
        setH(answer);
        setError(null);
      } catch (e) {
        if (!signal.aborted) setError(errorText(e));
      }
    },
    REFRESH_MS,
    [],
  );

  return (
    <section class="page page-health">
      <PageHeader title="Health">
        {h !== null && (
          <span class="muted small">
            last hour · a sample every {h.intervalSec} s · {h.points.length} samples
          </span>
        )}
      </PageHeader>
      <ErrorLine error={error} />
      {h === null ? (
        error === null && <Empty>Loading…</Empty>
      ) : h.points.length === 0 ? (
        <Empty>collecting: the first sample comes within {h.intervalSec} s</Empty>
      ) : (
        <div class="charts">
          {CHARTS.map((c) => (
            <Chart key={c.title} title={c.title} unit={c.unit} series={c.series} points={h.points} intervalSec={h.intervalSec} />
          ))}
        </div>
      )}
    </section>
  );
}
