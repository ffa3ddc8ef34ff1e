/**
 * Prometheus metrics of one gateway (its own registry, so several gateways can live in one
 * process, as in tests). Served at `GET /metrics`.
 *
 * Every label of every metric takes its value from a small fixed list; anything else is counted
 * under `other`. The combinations of the fixed lists are created at construction, so `/metrics`
 * shows them (at 0) from the start and no request, good or bad, ever adds a series.
 *
 * A new label value (a new callback outcome, outbox kind or WeCom API) must be added to its list
 * here, or it is counted as `other`.
 * @module
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { OutboxState, Store } from "../store/types.js";
import { CONFIGURATION_ERRCODES, errcodeLabel, KNOWN_ERRCODES } from "../wecom/errcodes.js";

/** The value a label takes when the given one is not in its list. */
export const OTHER = "other";

/** Values of the `channel` label. */
export const CHANNEL_LABELS = ["app", "kf", "bot", "archive", OTHER] as const;

/** Values of `wecom_bridge_callbacks_total{outcome}`. */
export const CALLBACK_OUTCOMES = ["verified", "stored", "duplicate", "kf_wakeup", "stream_refresh", "bad_signature", "malformed", "bad_secret", "ip_refused", "too_large", "aborted", OTHER] as const;

/** Values of `wecom_bridge_omni_requests_total{outcome}`: the 全媒体's staffService requests. */
export const OMNI_REQUEST_OUTCOMES = ["queued", "duplicate", "30001", "30003", "30004", "30005", "30006", "30007", "30008", "30009", OTHER] as const;

/** Values of `wecom_bridge_kf_pages_total{outcome}`. */
export const KF_PAGE_OUTCOMES = ["messages", "empty", "error", OTHER] as const;

/** Values of the outbox `kind` label. */
export const OUTBOX_KINDS = ["omni", "media", "kf_send", "app_send", "bot_reply", OTHER] as const;

/** Values of `wecom_bridge_delivery_attempts_total{outcome}`. */
export const DELIVERY_OUTCOMES = ["done", "retry", "dead", "unavailable", "refused", "paced", OTHER] as const;

/** Values of `wecom_bridge_kf_pull_errors_total{class}` (the classes of `wecom/errcodes.ts`). */
export const ERROR_CLASSES = ["transient", "token", "configuration", "final", OTHER] as const;

/** Values of `wecom_bridge_retention_deleted_total{what}`. */
export const RETENTION_WHAT = ["messages", "outbox", "ledger", "archive", "state", "audit", "media", "partial_files", OTHER] as const;

/** Values of `wecom_bridge_outbox_depth{state}`. */
export const OUTBOX_STATES: readonly OutboxState[] = ["pending", "inflight", "done", "dead", "refused"];

/** Values of the `api` label: the WeCom APIs the gateway calls (paths under `/cgi-bin/`, and `bot/media`). */
export const WECOM_APIS = [
  "gettoken",
  "aibot_respond_msg",
  "aibot_respond_welcome_msg",
  "aibot_send_msg",
  "kf/sync_msg",
  "media/get",
  "bot/media",
  "kf/send_msg",
  "kf/send_msg_on_event",
  "message/send",
  "kf/service_state/get",
  "kf/service_state/trans",
  "kf/account/list",
  "media/upload",
  "aibot/response",
  OTHER,
] as const;

/**
 * The errcode the WeCom client reports for a call that got no answer (network error, timeout).
 * Not one of WeCom's codes, but kept as a label value of its own so that "WeCom unreachable" is
 * not lost among undocumented codes.
 */
export const NO_ANSWER_ERRCODE = -2;

/** Values of `wecom_bridge_wecom_errcodes_total{errcode}`: the documented codes, no answer, other. */
export const ERRCODE_LABELS: readonly string[] = [...KNOWN_ERRCODES.map(String), String(NO_ANSWER_ERRCODE), OTHER];

/** Values of `wecom_bridge_wecom_config_errors_total{errcode}`: the configuration class's codes. */
export const CONFIG_ERRCODE_LABELS: readonly string[] = [...new Set([...CONFIGURATION_ERRCODES, 40001])].map(String).concat(OTHER);


/** The `api` label of a WeCom API path: itself when in {@link WECOM_APIS}, else `other`. */
export function apiLabel(api: string): string {
  return (WECOM_APIS as readonly string[]).includes(api) ? api : OTHER;
}

/** The `errcode` label of a WeCom answer: a documented code, `-2` (no answer), or `other`. */
export function wecomErrcodeLabel(errcode: number): string {
  return errcode === NO_ANSWER_ERRCODE ? String(NO_ANSWER_ERRCODE) : errcodeLabel(errcode);
}

/** The `channel` label of a channel name: itself when in {@link CHANNEL_LABELS}, else `other`. */
export function channelLabel(channel: string | undefined): string {
  return channel !== undefined && (CHANNEL_LABELS as readonly string[]).includes(channel) ? channel : OTHER;
}

/** The allowed values of one label: a fixed list (with `other`). */
type Allowed = readonly string[];

/** Label values as callers give them. */
type LabelInput<L extends string> = { readonly [K in L]?: string | number };

/** Maps given label values onto the allowed ones. */
class LabelRules<L extends string> {
  readonly #rules: { name: L; fixed: ReadonlySet<string> }[];

  constructor(spec: Record<L, Allowed>) {
    this.#rules = (Object.keys(spec) as L[]).map((name) => ({ name, fixed: new Set(spec[name]) }));
  }

  /** Every label given an allowed value; a missing or unknown one becomes `other`. */
  normalize(labels: LabelInput<L>): Record<L, string> {
    const out = {} as Record<L, string>;
    for (const r of this.#rules) {
      const given = labels[r.name];
      const v = given === undefined ? OTHER : String(given);
      out[r.name] = r.fixed.has(v) ? v : OTHER;
    }
    return out;
  }

  /** Every combination of the fixed lists. */
  combinations(): Record<L, string>[] {
    let out: Record<string, string>[] = [{}];
    for (const r of this.#rules) {
      const values = [...r.fixed];
      out = out.flatMap((o) => values.map((v) => ({ ...o, [r.name]: v })));
    }
    return out as Record<L, string>[];
  }
}

/** Name, help and allowed label values of a metric. */
interface BoundedConfig<L extends string> {
  name: string;
  help: string;
  labels: Record<L, Allowed>;
  registry: Registry;
}

/** A counter whose labels come from fixed lists (see the module comment). */
export class BoundedCounter<L extends string> {
  readonly #metric: Counter<L>;
  readonly #rules: LabelRules<L>;

  /** @param c name, help, allowed label values and registry */
  constructor(c: BoundedConfig<L>) {
    this.#rules = new LabelRules(c.labels);
    this.#metric = new Counter({ name: c.name, help: c.help, labelNames: Object.keys(c.labels) as L[], registers: [c.registry] });
    for (const combo of this.#rules.combinations()) this.#metric.inc(combo, 0);
  }

  /** Add `value` (default 1) to the series of these labels. */
  inc(labels: LabelInput<L>, value = 1): void {
    this.#metric.inc(this.#rules.normalize(labels), value);
  }

  /** The series of these labels, resolved once (for a hot path). */
  labels(labels: LabelInput<L>): { inc(value?: number): void } {
    const l = this.#rules.normalize(labels);
    return { inc: (value = 1) => this.#metric.inc(l, value) };
  }
}

/** A gauge whose labels come from fixed lists, or from the first few values seen. */
export class BoundedGauge<L extends string> {
  readonly #metric: Gauge<L>;
  readonly #rules: LabelRules<L>;

  /** @param c name, help, allowed label values and registry; `collect` runs on each scrape */
  constructor(c: BoundedConfig<L> & { collect?: (set: (labels: LabelInput<L>, value: number) => void) => Promise<void> | void }) {
    this.#rules = new LabelRules(c.labels);
    const set = (labels: LabelInput<L>, value: number) => this.set(labels, value);
    const collect = c.collect;
    this.#metric = new Gauge({
      name: c.name,
      help: c.help,
      labelNames: Object.keys(c.labels) as L[],
      registers: [c.registry],
      ...(collect ? { collect: () => collect(set) } : {}),
    });
    for (const combo of this.#rules.combinations()) this.#metric.set(combo, 0);
  }

  /** Set the series of these labels. */
  set(labels: LabelInput<L>, value: number): void {
    this.#metric.set(this.#rules.normalize(labels), value);
  }
}

/** A histogram whose labels come from fixed lists. */
export class BoundedHistogram<L extends string> {
  readonly #metric: Histogram<L>;
  readonly #rules: LabelRules<L>;

  /** @param c name, help, allowed label values, registry and buckets */
  constructor(c: BoundedConfig<L> & { buckets: number[] }) {
    this.#rules = new LabelRules(c.labels);
    this.#metric = new Histogram({ name: c.name, help: c.help, labelNames: Object.keys(c.labels) as L[], buckets: c.buckets, registers: [c.registry] });
    for (const combo of this.#rules.combinations()) this.#metric.zero(combo);
  }

  /** Observe `value` in the series of these labels. */
  observe(labels: LabelInput<L>, value: number): void {
    this.#metric.observe(this.#rules.normalize(labels), value);
  }
}

/** The gateway's metrics. */
export class Metrics {
  readonly registry = new Registry();
  /** Callbacks by channel and outcome (stored, duplicate, bad_signature, malformed, too_large, ...). */
  readonly callbacks = new BoundedCounter({
    name: "wecom_bridge_callbacks_total",
    help: "Inbound callbacks by channel and outcome",
    labels: { channel: CHANNEL_LABELS, outcome: CALLBACK_OUTCOMES },
    registry: this.registry,
  });
  /** The 全媒体's staffService requests (agents' answers) by outcome: queued, duplicate, or the errcode answered. */
  readonly omniRequests = new BoundedCounter({
    name: "wecom_bridge_omni_requests_total",
    help: "The 全媒体's staffService requests by outcome (queued, duplicate, or the errcode answered)",
    labels: { outcome: OMNI_REQUEST_OUTCOMES },
    registry: this.registry,
  });
  /** Items whose key was already in the ledger. */
  readonly dedupHits = new BoundedCounter({ name: "wecom_bridge_dedup_hits_total", help: "Inbound items already in the idempotency ledger", labels: { channel: CHANNEL_LABELS }, registry: this.registry });
  /**
   * Seconds between the newest KF message of a pull and its storage, whichever account it was:
   * no per-account label, so that no account (and no request) adds a series; each account's
   * cursor and last pull are in `/admin/cursors`.
   */
  readonly kfPullLag = new Gauge({ name: "wecom_bridge_kf_pull_lag_seconds", help: "Age of the newest KF message at the time it was stored", registers: [this.registry] });
  /** KF pages pulled. */
  readonly kfPages = new BoundedCounter({ name: "wecom_bridge_kf_pages_total", help: "KF sync_msg pages pulled", labels: { outcome: KF_PAGE_OUTCOMES }, registry: this.registry });
  /** Delivery attempts by kind and outcome (done, retry, dead). */
  readonly deliveryAttempts = new BoundedCounter({
    name: "wecom_bridge_delivery_attempts_total",
    help: "Outbox attempts by kind and outcome",
    labels: { kind: OUTBOX_KINDS, outcome: DELIVERY_OUTCOMES },
    registry: this.registry,
  });
  /** Failed delivery attempts by kind. */
  readonly deliveryFailures = new BoundedCounter({ name: "wecom_bridge_delivery_failures_total", help: "Failed outbox attempts by kind", labels: { kind: OUTBOX_KINDS }, registry: this.registry });
  /** WeCom API answers by api and errcode (label values: {@link apiLabel}, {@link wecomErrcodeLabel}). */
  readonly wecomErrcodes = new BoundedCounter({
    name: "wecom_bridge_wecom_errcodes_total",
    help: "WeCom API answers by api and errcode",
    labels: { api: WECOM_APIS, errcode: ERRCODE_LABELS },
    registry: this.registry,
  });
  /** WeCom answers of the configuration class (60020, 40013, …): an operator must act. */
  readonly wecomConfigErrors = new BoundedCounter({
    name: "wecom_bridge_wecom_config_errors_total",
    help: "WeCom answers an operator must fix (untrusted IP, wrong corpId or secret, unknown open_kfid, API not authorised)",
    labels: { api: WECOM_APIS, errcode: CONFIG_ERRCODE_LABELS },
    registry: this.registry,
  });
  /** Failed KF pulls by class of failure. */
  readonly kfPullErrors = new BoundedCounter({
    name: "wecom_bridge_kf_pull_errors_total",
    help: "Failed KF pulls by class (transient, token, configuration, final)",
    labels: { class: ERROR_CLASSES },
    registry: this.registry,
  });
  /** Rows and files removed by the retention pruner (purge and erase print their own counts). */
  readonly retentionDeleted = new BoundedCounter({
    name: "wecom_bridge_retention_deleted_total",
    help: "Rows and files removed by the retention pruner",
    labels: { what: RETENTION_WHAT },
    registry: this.registry,
  });
  /** Callback handling time. */
  readonly callbackSeconds = new BoundedHistogram({
    name: "wecom_bridge_callback_duration_seconds",
    help: "Time to verify, decode and store a callback",
    labels: { channel: CHANNEL_LABELS },
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1],
    registry: this.registry,
  });
  /** Delivery time. */
  readonly deliverySeconds = new BoundedHistogram({
    name: "wecom_bridge_delivery_duration_seconds",
    help: "Time of one outbox attempt",
    labels: { kind: OUTBOX_KINDS },
    buckets: [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
    registry: this.registry,
  });

  /** @param store read on each scrape for the outbox depth (`outboxCounts`) */
  constructor(store: Store) {
    new BoundedGauge({
      name: "wecom_bridge_outbox_depth",
      help: "Outbox entries by state",
      labels: { state: OUTBOX_STATES },
      registry: this.registry,
      async collect(set) {
        const counts = await store.outboxCounts();
        for (const state of OUTBOX_STATES) set({ state }, counts[state] ?? 0);
      },
    });
  }

  /**
   * Report the long-connection bots on each scrape: `wecom_bridge_bot_ws_connected{bot}` (1 when
   * this replica holds the bot and its connection is open), `wecom_bridge_bot_ws_holder{bot}`,
   * `wecom_bridge_bot_ws_reconnects{bot}` and `wecom_bridge_bot_ws_kicks{bot}` (times another
   * connection took the bot over: two deployments may share it). The bot label is a configured
   * name: bounded.
   */
  botWs(status: () => { bot: string; holder: boolean; state: string; reconnects: number; kicks: number }[]): void {
    const gauge = (name: string, help: string, value: (s: ReturnType<typeof status>[number]) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ["bot"],
        registers: [this.registry],
        collect() {
          for (const s of status()) this.set({ bot: s.bot }, value(s));
        },
      });
    gauge("wecom_bridge_bot_ws_connected", "1 when this replica holds the AI bot's long connection and it is open", (s) => (s.state === "open" ? 1 : 0));
    gauge("wecom_bridge_bot_ws_holder", "1 when this replica holds the AI bot's lease (only one replica connects)", (s) => (s.holder ? 1 : 0));
    gauge("wecom_bridge_bot_ws_reconnects", "Reconnects of the AI bot's long connection on this replica", (s) => s.reconnects);
    gauge("wecom_bridge_bot_ws_kicks", "Times another connection took the AI bot over (disconnected_event) on this replica", (s) => s.kicks);
  }
}
