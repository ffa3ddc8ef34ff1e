/**
 * The Accounts page: the KF accounts, AI bots, self-built apps and 全媒体 instances the gateway
 * serves, with their live state, refreshed every {@link REFRESH_MS} ms.
 * @module
 */
import type { Accounts as AccountsAnswer } from "../../src/gateway/console/types.ts";
import type { ComponentChildren } from "preact";
import { useState } from "preact/hooks";
import { errorText, get } from "./api.ts";
import { Badge, Empty, ErrorLine, PageHeader, Short, Time, usePoll } from "./ui.tsx";

/** How often the page is read again, ms. */
export const REFRESH_MS = 5000;

/** A section: a title, a count and a table (or an empty line). */
function Section(props: { title: string; count: number; empty: string; children: ComponentChildren }) {
  return (
    <section class="card">
      <h2 class="card-title">
        {props.title} <span class="muted small">{props.count}</span>
      </h2>
      {props.count === 0 ? <Empty>{props.empty}</Empty> : <div class="table-wrap">{props.children}</div>}
    </section>
  );
}

/** A last-error cell: the error, or a muted dash. */
function Err(props: { error: string | null }) {
  return props.error === null || props.error === "" ? (
    <span class="muted">—</span>
  ) : (
    <span class="error-text" title={props.error}>
      {props.error}
    </span>
  );
}

/** The Accounts page. */
export function Accounts() {
  const [a, setA] = useState<AccountsAnswer | null>(null);
  const [error, setError] = useState<string | null>(null);

  usePoll(
    async (signal) => {
      try {
        const answer = await get<AccountsAnswer>("/console/api/accounts", undefined, { signal });
        if (signal.aborted) return;
        setA(answer);
        setError(null);
      } catch (e) {
        if (!signal.aborted) setError(errorText(e));
      }
    },
    REFRESH_MS,
    [],
  );

  return (
    <section class="page page-accounts">
      <PageHeader title="Accounts">
        <span class="muted small">refreshed every {REFRESH_MS / 1000} s</span>
      </PageHeader>
      <ErrorLine error={error} />
      {a === null ? (
        error === null && <Empty>Loading…</Empty>
      ) : (
        <div class="cards">
          <Section title="KF accounts (微信客服)" count={a.kf.length} empty="No KF account seen yet: an account appears with its first kf_msg_or_event callback (the app marked kf: true pulls it).">
            <table class="grid">
              <thead>
                <tr>
                  <th>Corp</th>
                  <th>open_kfid</th>
                  <th>Cursor</th>
                  <th>Cursor moved</th>
                  <th class="col-num">Lag</th>
                  <th>Last error</th>
                </tr>
              </thead>
              <tbody>
                {a.kf.map((k) => (
                  <tr key={`${k.tenant}\u0000${k.openKfId}`}>
                    <td class="mono">{k.tenant}</td>
                    <td>
                      <Short value={k.openKfId} max={22} />
                    </td>
                    <td>{k.cursor === null ? <span class="muted">before the first page</span> : <Short value={k.cursor} max={16} />}</td>
                    <td>
                      <Time ms={k.updatedAt} />
                    </td>
                    <td class="col-num">{k.lagSec > 0 ? <Badge state={k.lagSec > 60 ? "dead" : "retrying"}>{k.lagSec} s</Badge> : <span class="muted">0 s</span>}</td>
                    <td>
                      <Err error={k.lastError} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </Section>

          <Section title="AI bots (智能机器人)" count={a.bots.length} empty="No AI bot configured.">
            <table class="grid">
              <thead>
                <tr>
                  <th>Corp</th>
                  <th>Name</th>
                  <th>botId</th>
                  <th>Mode</th>
                  <th>State</th>
                  <th>Holder</th>
                  <th class="col-num">Reconnects</th>
                </tr>
              </thead>
              <tbody>
                {a.bots.map((b) => (
                  <tr key={`${b.tenant}\u0000${b.botId}`}>
                    <td class="mono">{b.tenant}</td>
                    <td>{b.name}</td>
                    <td>
                      <Short value={b.botId} max={22} />
                    </td>
                    <td>{b.mode}</td>
                    <td>
                      <Badge state={b.state} />
                    </td>
                    <td>{b.mode === "websocket" ? b.holder ? <Badge state="ok">this replica</Badge> : <span class="muted">another replica</span> : <span class="muted">—</span>}</td>
                    <td class="col-num">{b.mode === "websocket" ? b.reconnects : <span class="muted">—</span>}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </Section>

          <Section title="Apps (自建应用)" count={a.apps.length} empty="No self-built app configured.">
            <table class="grid">
              <thead>
                <tr>
                  <th>Corp</th>
                  <th>Name</th>
                  <th class="col-num">agentId</th>
                  <th>KF?</th>
                  <th>Token</th>
                  <th>Expires</th>
                  <th>Last error</th>
                </tr>
              </thead>
              <tbody>
                {a.apps.map((p) => (
                  <tr key={`${p.tenant}\u0000${p.agentId}\u0000${p.name}`}>
                    <td class="mono">{p.tenant}</td>
                    <td>{p.name}</td>
                    <td class="col-num mono">{p.agentId}</td>
                    <td>{p.kf ? <Badge state="kf">KF</Badge> : <span class="muted">—</span>}</td>
                    <td>
                      <Badge state={p.token} />
                    </td>
                    <td>
                      <Time ms={p.tokenExpiresAt} />
                    </td>
                    <td>
                      <Err error={p.lastError} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </Section>

          <Section title="全媒体" count={a.omni.length} empty="No 全媒体 configured.">
            <table class="grid">
              <thead>
                <tr>
                  <th>Name</th>
                  <th>Base URL</th>
                  <th>Last delivery</th>
                  <th>When</th>
                  <th>Error</th>
                </tr>
              </thead>
              <tbody>
                {a.omni.map((o) => (
                  <tr key={o.name}>
                    <td class="mono">{o.name}</td>
                    <td class="mono">{o.baseUrl}</td>
                    <td>{o.last === null ? <span class="muted">none yet</span> : <Badge state={o.last.ok ? "ok" : "failed"}>{o.last.ok ? "ok" : "failed"}</Badge>}</td>
                    <td>
                      <Time ms={o.last?.time ?? null} />
                    </td>
                    <td>
                      <Err error={o.last?.error ?? null} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </Section>
        </div>
      )}
    </section>
  );
}
