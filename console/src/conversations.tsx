/**
 * The Conversations page: the stored conversations (filtered by channel, corp / tenant and a
 * text search, paged with "more"), and the chosen one's transcript as a chat: the customer on the
 * left, the agents on the right.
 * @module
 */
import type { ConsoleChannel, ConsoleConversation, Paged, Transcript, TranscriptLine, TranscriptMedia } from "../../src/gateway/console/types.ts";
import { useEffect, useState } from "preact/hooks";
import { errorText, get, isAbort } from "./api.ts";
import { Badge, Empty, ErrorLine, PageHeader, Short, Time } from "./ui.tsx";

const CHANNELS: { value: ConsoleChannel | ""; label: string }[] = [
  { value: "", label: "All channels" },
  { value: "kf", label: "KF (微信客服)" },
  { value: "app", label: "App" },
  { value: "bot", label: "Bot" },
  { value: "archive", label: "Archive" },
];

const PAGE_SIZE = 50;

interface Filters {
  channel: ConsoleChannel | "";
  tenant: string;
  q: string;
}

interface Selected {
  tenant: string;
  conversationId: string;
}

/** The Conversations page. */
export function Conversations() {
  const [filters, setFilters] = useState<Filters>({ channel: "", tenant: "", q: "" });
  const [items, setItems] = useState<ConsoleConversation[]>([]);
  const [next, setNext] = useState<number | null>(null);
  const [loading, setLoading] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [selected, setSelected] = useState<Selected | null>(null);

  const query = (before: number | null) => ({
    channel: filters.channel,
    tenant: filters.tenant.trim(),
    q: filters.q.trim(),
    before,
    limit: PAGE_SIZE,
  });

  // The first page again whenever the filters change (typing settles for 250 ms first).
  useEffect(() => {
    const ctl = new AbortController();
    const timer = window.setTimeout(async () => {
      setLoading(true);
      try {
        const page = await get<Paged<ConsoleConversation>>("/console/api/conversations", query(null), { signal: ctl.signal });
        setItems(page.items);
        setNext(page.next);
        setError(null);
      } catch (e) {
        if (!isAbort(e)) setError(errorText(e));
      } finally {
        if (!ctl.signal.aborted) setLoading(false);
      }
    }, 250);
    return () => {
      ctl.abort();
      window.clearTimeout(timer);
    };
  }, [filters]);

  const more = async () => {
    if (next === null) return;
    setLoading(true);
    try {
      const page = await get<Paged<ConsoleConversation>>("/console/api/conversations", query(next));
      setItems((old) => [...old, ...page.items.filter((c) => !old.some((o) => o.tenant === c.tenant && o.conversationId === c.conversationId))]);
      setNext(page.next);
      setError(null);
    } catch (e) {
      setError(errorText(e));
    } finally {
      setLoading(false);
    }
  };

  return (
    <section class="page page-conversations">
      <PageHeader title="Conversations">
        <form
          class="filters"
          onSubmit={(e) => {
            e.preventDefault();
            setFilters({ ...filters });
          }}
        >
          <select aria-label="Channel" value={filters.channel} onChange={(e) => setFilters({ ...filters, channel: e.currentTarget.value as ConsoleChannel | "" })}>
            {CHANNELS.map((c) => (
              <option key={c.value} value={c.value}>
                {c.label}
              </option>
            ))}
          </select>
          <input type="text" placeholder="corp / tenant" aria-label="Corp or tenant" value={filters.tenant} onInput={(e) => setFilters({ ...filters, tenant: e.currentTarget.value })} />
          <input type="search" placeholder="search text or customer" aria-label="Search" value={filters.q} onInput={(e) => setFilters({ ...filters, q: e.currentTarget.value })} />
          <button type="submit">Search</button>
        </form>
      </PageHeader>
      <ErrorLine error={error} />
      <div class="split">
        <div class="conv-list">
          {items.map((c) => {
            const active = selected !== null && selected.tenant === c.tenant && selected.conversationId === c.conversationId;
            return (
              <button
                type="button"
                key={`${c.tenant}\u0000${c.conversationId}`}
                class={`conv-item${active ? " active" : ""}`}
                onClick={() => setSelected({ tenant: c.tenant, conversationId: c.conversationId })}
                title={`${c.tenant} · ${c.conversationId}`}
              >
                <span class="conv-top">
                  <span class={`chip chip-${c.channel}`}>{c.channel}</span>
                  <span class="conv-customer">{c.customer}</span>
                  <Time ms={c.lastTime} />
                </span>
                <span class="conv-bottom muted small">
                  <span class="mono">{c.tenant}</span>
                  <span>
                    {c.messages} message{c.messages === 1 ? "" : "s"}
                  </span>
                </span>
              </button>
            );
          })}
          {items.length === 0 && !loading && <Empty>No conversation matches.</Empty>}
          {next !== null && (
            <button type="button" class="more" onClick={() => void more()} disabled={loading}>
              {loading ? "Loading…" : "More"}
            </button>
          )}
        </div>
        <div class="transcript-pane">
          {selected === null ? <Empty>Choose a conversation to read its transcript.</Empty> : <TranscriptView key={`${selected.tenant}\u0000${selected.conversationId}`} sel={selected} />}
        </div>
      </div>
    </section>
  );
}

/** One conversation's transcript, loaded when shown (and on "Refresh"). */
function TranscriptView(props: { sel: Selected }) {
  const [t, setT] = useState<Transcript | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  const [generation, setGeneration] = useState(0);
  const { tenant, conversationId } = props.sel;

  useEffect(() => {
    const ctl = new AbortController();
    setLoading(true);
    get<Transcript>("/console/api/transcript", { conversation: conversationId, tenant }, { signal: ctl.signal })
      .then((answer) => {
        setT(answer);
        setError(null);
      })
      .catch((e: unknown) => {
        if (!isAbort(e)) setError(errorText(e));
      })
      .finally(() => {
        if (!ctl.signal.aborted) setLoading(false);
      });
    return () => ctl.abort();
  }, [tenant, conversationId, generation]);

  return (
    <div class="transcript">
      <div class="transcript-head">
        <div>
          <div class="transcript-title">
            <Short value={conversationId} max={48} />
          </div>
          <div class="muted small">
            {tenant}
            {t !== null && ` · ${t.channel} · ${t.items.length} lines`}
          </div>
        </div>
        <button type="button" onClick={() => setGeneration((g) => g + 1)} disabled={loading}>
          {loading ? "Loading…" : "Refresh"}
        </button>
      </div>
      <ErrorLine error={error} />
      <div class="chat">
        {t?.items.map((line) => (
          <Line key={line.key} line={line} />
        ))}
        {t !== null && t.items.length === 0 && <Empty>Nothing stored for this conversation.</Empty>}
      </div>
    </div>
  );
}

/** A transcript line: a bubble (in on the left, out on the right), or a small event line. */
function Line(props: { line: TranscriptLine }) {
  const l = props.line;
  if (l.event === true) {
    return (
      <div class={`chat-event${l.handoff === true ? " handoff" : ""}`}>
        <Time ms={l.time} /> {l.from !== "" && <span class="muted">{l.from}: </span>}
        {l.text}
        {l.handoff === true && <span class="badge tone-warn">handoff</span>}
      </div>
    );
  }
  const classes = ["msg", `msg-${l.direction}`];
  if (l.refusal !== undefined) classes.push("refused");
  if (l.handoff === true) classes.push("handoff");
  return (
    <div class={classes.join(" ")}>
      <div class="msg-meta small">
        <span class="msg-from">{l.from}</span>
        <Time ms={l.time} />
        {l.state !== undefined && <Badge state={l.state} />}
        {l.handoff === true && (
          <span class="badge tone-warn" title="The customer asked for a human">
            handoff
          </span>
        )}
      </div>
      <div class="msg-bubble">
        {l.text !== "" && <div class="msg-text">{l.text}</div>}
        {l.media.map((m) => (
          <Media key={`${m.kind}\u0000${m.name}\u0000${m.url ?? ""}`} m={m} />
        ))}
      </div>
      {l.refusal !== undefined && (
        <div class="refusal small">
          ✗ refused by WeCom{l.refusal.errcode !== null ? ` (errcode ${l.refusal.errcode})` : ""}: {l.refusal.error}
        </div>
      )}
    </div>
  );
}

/** A media item: images inline, anything else a link (or its name when not stored). */
function Media(props: { m: TranscriptMedia }) {
  const { m } = props;
  if (m.url === null) {
    return (
      <div class="media missing small" title="not stored (yet)">
        <span class="media-kind">{m.kind}</span> {m.name} (not stored)
      </div>
    );
  }
  if (m.kind === "image") {
    return (
      <a href={m.url} target="_blank" rel="noopener noreferrer" class="media-image">
        <img src={m.url} alt={m.name} loading="lazy" />
      </a>
    );
  }
  return (
    <div class="media">
      <a href={m.url} target="_blank" rel="noopener noreferrer">
        <span class="media-kind">{m.kind}</span> {m.name}
      </a>
    </div>
  );
}
