/**
 * Prometheus metrics of one gateway (its own registry, so several gateways can live in one
 * process, as in tests). Served at `GET /metrics`.
 * @module
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { Store } from "../store/types.js";

/** The gateway's metrics. */
export class Metrics {
  readonly registry = new Registry();
  /** Callbacks by channel and outcome (stored, duplicate, bad_signature, malformed, too_large, ...). */
  readonly callbacks = new Counter({ name: "wecom_bridge_callbacks_total", help: "Inbound callbacks by channel and outcome", labelNames: ["channel", "outcome"], registers: [this.registry] });
  /** Items whose key was already in the ledger. */
  readonly dedupHits = new Counter({ name: "wecom_bridge_dedup_hits_total", help: "Inbound items already in the idempotency ledger", labelNames: ["channel"], registers: [this.registry] });
  /** Seconds between a KF message's send_time and its storage. */
  readonly kfPullLag = new Gauge({ name: "wecom_bridge_kf_pull_lag_seconds", help: "Age of the newest KF message at the time it was stored", labelNames: ["open_kfid"], registers: [this.registry] });
  /** KF pages pulled. */
  readonly kfPages = new Counter({ name: "wecom_bridge_kf_pages_total", help: "KF sync_msg pages pulled", labelNames: ["outcome"], registers: [this.registry] });
  /** Delivery attempts by kind and outcome (done, retry, dead). */
  readonly deliveryAttempts = new Counter({ name: "wecom_bridge_delivery_attempts_total", help: "Outbox attempts by kind and outcome", labelNames: ["kind", "outcome"], registers: [this.registry] });
  /** Failed delivery attempts by kind. */
  readonly deliveryFailures = new Counter({ name: "wecom_bridge_delivery_failures_total", help: "Failed outbox attempts by kind", labelNames: ["kind"], registers: [this.registry] });
  /** WeCom API answers by api and errcode. */
  readonly wecomErrcodes = new Counter({ name: "wecom_bridge_wecom_errcodes_total", help: "WeCom API answers by api and errcode", labelNames: ["api", "errcode"], registers: [this.registry] });
  /** WeCom answers of the configuration class (60020, 40013, …): an operator must act. */
  readonly wecomConfigErrors = new Counter({ name: "wecom_bridge_wecom_config_errors_total", help: "WeCom answers an operator must fix (untrusted IP, wrong corpId or secret, unknown open_kfid, API not authorised)", labelNames: ["api", "errcode"], registers: [this.registry] });
  /** Failed KF pulls by class of failure. */
  readonly kfPullErrors = new Counter({ name: "wecom_bridge_kf_pull_errors_total", help: "Failed KF pulls by class (transient, token, configuration, final)", labelNames: ["class"], registers: [this.registry] });
  /** Rows and files removed by retention and erasure. */
  readonly retentionDeleted = new Counter({ name: "wecom_bridge_retention_deleted_total", help: "Rows and files removed by retention, purge and erase", labelNames: ["what"], registers: [this.registry] });
  /** Callback handling time. */
  readonly callbackSeconds = new Histogram({
    name: "wecom_bridge_callback_duration_seconds",
    help: "Time to verify, decode and store a callback",
    labelNames: ["channel"],
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1],
    registers: [this.registry],
  });
  /** Delivery time. */
  readonly deliverySeconds = new Histogram({
    name: "wecom_bridge_delivery_duration_seconds",
    help: "Time of one outbox attempt",
    labelNames: ["kind"],
    buckets: [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
    registers: [this.registry],
  });

  /** @param store read on each scrape for the outbox depth */
  constructor(store: Store) {
    new Gauge({
      name: "wecom_bridge_outbox_depth",
      help: "Outbox entries by state",
      labelNames: ["state"],
      registers: [this.registry],
      async collect() {
        const counts = await store.outboxCounts();
        for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
      },
    });
  }
}
