/**
 * The Health page's last hour: every {@link HEALTH_INTERVAL_SEC} seconds one sample of what
 * `/metrics` has (throughput in both directions, failures, outbox depth, dead letters, attempt
 * latency), kept in memory ({@link HEALTH_POINTS} samples), so an operator sees the bridge's
 * health without a Prometheus server. Each replica samples its own figures (the outbox depth is
 * the store's, shared).
 * @module
 */
import type { Registry } from "prom-client";
import type { OutboxState } from "../../store/types.js";
import type { LiveCounts } from "./live.js";
import type { HealthPoint } from "./types.js";

/** Seconds between samples. */
export const HEALTH_INTERVAL_SEC = 10;
/** Samples kept: one hour. */
export const HEALTH_POINTS = 360;

/** The callback outcomes counted as errors (a request refused at the door). */
const REFUSED = new Set(["bad_signature", "malformed", "bad_secret", "ip_refused", "too_large", "aborted"]);

interface Totals {
  stored: number;
  delivered: number;
  sent: number;
  errors: number;
  /** Cumulative counts of the attempt-duration histogram, by bucket bound (seconds), summed over kinds. */
  buckets: Map<number, number>;
}

/** What a sample reads. */
export interface HealthSources {
  registry: Registry;
  counts: LiveCounts;
  outboxCounts(): Promise<Record<OutboxState, number>>;
  now(): number;
}

type MetricValue = { value: number; labels: Record<string, string | number>; metricName?: string };

async function values(registry: Registry, name: string): Promise<MetricValue[]> {
  const m = registry.getSingleMetric(name);
  return m === undefined ? [] : ((await m.get()).values as MetricValue[]);
}

/** The value below which `p` of the observations fall: the bound of the first bucket reaching it, ms. */
export function percentileMs(deltas: [number, number][], p: number): number | null {
  const total = deltas.at(-1)?.[1] ?? 0;
  if (total <= 0) return null;
  for (const [bound, cumulative] of deltas) {
    if (cumulative >= p * total) return Number.isFinite(bound) ? Math.round(bound * 1000) : null;
  }
  return null;
}

/** Samples the metrics on a timer. */
export class HealthHistory {
  readonly #s: HealthSources;
  readonly #points: HealthPoint[] = [];
  #last: Totals | undefined;
  #lastAt = 0;
  #timer: NodeJS.Timeout | undefined;

  /** @param sources where the figures come from */
  constructor(sources: HealthSources) {
    this.#s = sources;
  }

  /** Sample now and every {@link HEALTH_INTERVAL_SEC} seconds. */
  start(): void {
    if (this.#timer !== undefined) return;
    void this.sample();
    this.#timer = setInterval(() => void this.sample(), HEALTH_INTERVAL_SEC * 1000);
    this.#timer.unref();
  }

  /** Stop sampling. */
  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  async #totals(): Promise<Totals> {
    const r = this.#s.registry;
    let errors = 0;
    for (const v of await values(r, "wecom_bridge_delivery_failures_total")) errors += v.value;
    for (const v of await values(r, "wecom_bridge_callbacks_total")) if (REFUSED.has(String(v.labels.outcome))) errors += v.value;
    const buckets = new Map<number, number>();
    for (const v of await values(r, "wecom_bridge_delivery_duration_seconds")) {
      if (!v.metricName?.endsWith("_bucket")) continue;
      const le = v.labels.le === "+Inf" ? Number.POSITIVE_INFINITY : Number(v.labels.le);
      buckets.set(le, (buckets.get(le) ?? 0) + v.value);
    }
    const c = this.#s.counts;
    return { stored: c.stored, delivered: c.delivered, sent: c.sent, errors, buckets };
  }

  /** Take one sample (the first only sets the baseline of the rates). */
  async sample(): Promise<void> {
    try {
      const now = this.#s.now();
      const totals = await this.#totals();
      const counts = await this.#s.outboxCounts();
      const last = this.#last;
      const seconds = last === undefined ? 0 : Math.max(0.001, (now - this.#lastAt) / 1000);
      this.#last = totals;
      this.#lastAt = now;
      if (last === undefined) return;
      const rate = (a: number, b: number) => Math.round(((a - b) / seconds) * 100) / 100;
      const deltas: [number, number][] = [...totals.buckets.entries()].sort((a, b) => a[0] - b[0]).map(([le, n]) => [le, n - (last.buckets.get(le) ?? 0)]);
      this.#points.push({
        time: now,
        inPerSec: rate(totals.stored, last.stored),
        deliveredPerSec: rate(totals.delivered, last.delivered),
        outPerSec: rate(totals.sent, last.sent),
        errors: totals.errors - last.errors,
        outboxDepth: (counts.pending ?? 0) + (counts.inflight ?? 0),
        dead: counts.dead ?? 0,
        p50Ms: percentileMs(deltas, 0.5),
        p95Ms: percentileMs(deltas, 0.95),
      });
      if (this.#points.length > HEALTH_POINTS) this.#points.splice(0, this.#points.length - HEALTH_POINTS);
    } catch {
      // the store did not answer: this interval has no point (the chart shows the gap)
    }
  }

  /** The samples, oldest first. */
  points(): HealthPoint[] {
    return [...this.#points];
  }
}
