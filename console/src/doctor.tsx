/**
 * The Doctor page: runs the gateway's checks (`wecom-bridge doctor`, server side) on demand and
 * shows one row per check with its fix.
 * @module
 */
import type { DoctorResult } from "../../src/gateway/console/types.ts";
import { useEffect, useRef, useState } from "preact/hooks";
import { errorText, post } from "./api.ts";
import { ErrorLine, Empty, PageHeader, Time } from "./ui.tsx";

/** The Doctor page. */
export function Doctor() {
  const [result, setResult] = useState<DoctorResult | null>(null);
  const [ranAt, setRanAt] = useState<number | null>(null);
  const [running, setRunning] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const mounted = useRef(true);
  useEffect(
    () => () => {
      mounted.current = false;
    },
    [],
  );

  const run = async () => {
    setRunning(true);
    setError(null);
    try {
      const r = await post<DoctorResult>("/console/api/doctor", {});
      if (!mounted.current) return;
      setResult(r);
      setRanAt(Date.now());
    } catch (e) {
      if (mounted.current) setError(errorText(e));
    } finally {
      if (mounted.current) setRunning(false);
    }
  };

  const failed = result?.rows.filter((r) => r.status !== "ok").length ?? 0;

  return (
    <section class="page page-doctor">
      <PageHeader title="Doctor">
        {result !== null && !running && (
          <span class={failed === 0 ? "notice" : "notice notice-error"}>
            {failed === 0 ? `all ${result.rows.length} checks pass` : `${failed} of ${result.rows.length} checks fail`}
            {ranAt !== null && (
              <>
                {" "}
                · <Time ms={ranAt} />
              </>
            )}
          </span>
        )}
        <button type="button" class="primary" onClick={() => void run()} disabled={running} aria-busy={running}>
          {running ? "Running…" : "Run checks"}
        </button>
      </PageHeader>
      <p class="muted">
        The same checks as <code>wecom-bridge doctor</code>: each app's access token, the KF authorisation, keys and secrets, the 全媒体's reachability and
        credentials, the public URL, the store, the media folder and the clock.
      </p>
      <ErrorLine error={error} />
      {running && (
        <div class="running" role="status">
          <span class="spinner" aria-hidden="true" /> Running checks: this can take several seconds…
        </div>
      )}
      {result !== null && (
        <div class={`table-wrap${running ? " stale" : ""}`}>
          <table class="grid doctor-table">
            <thead>
              <tr>
                <th class="col-mark" />
                <th>Check</th>
                <th>errcode</th>
                <th>Detail</th>
                <th>Fix</th>
              </tr>
            </thead>
            <tbody>
              {result.rows.map((r, i) => (
                // checks may repeat (one per app): the position tells them apart
                <tr key={`${r.check}-${i}`} data-testid="doctor-row" data-check={r.check} data-status={r.status} class={`status-${r.status}`}>
                  <td class="col-mark">
                    <span class={r.status === "ok" ? "mark-ok" : "mark-fail"} title={r.status}>
                      {r.status === "ok" ? "✓" : "✗"}
                    </span>
                  </td>
                  <td class="mono">{r.check}</td>
                  <td class="mono">{r.errcode ?? <span class="muted">—</span>}</td>
                  <td class="detail">{r.detail}</td>
                  <td class="fix">{r.fix ?? <span class="muted">—</span>}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {result.rows.length === 0 && <Empty>No check ran.</Empty>}
        </div>
      )}
      {result === null && !running && <Empty>Press “Run checks” to test the configuration against WeCom and the 全媒体.</Empty>}
    </section>
  );
}
