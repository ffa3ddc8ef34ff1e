/**
 * The Playground (sandbox only): play the customer on a WeChat-like phone and the agent on a
 * 全媒体 desk, side by side; each message really crosses the bridge (through the simulators).
 * Both logs are read every {@link POLL_MS} ms.
 * @module
 */
import type { PlaygroundChannel, PlaygroundInfo, PlaygroundLine, PlaygroundLog } from "../../src/gateway/console/types.ts";
import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import { errorText, get, post } from "./api.ts";
import { ErrorLine, Empty, PageHeader, formatTime, fullTime, usePoll } from "./ui.tsx";

/** How often the chat logs are read, ms. */
export const POLL_MS = 500;

const CHANNEL_NAMES: Record<PlaygroundChannel, string> = { kf: "微信客服", app: "企业微信应用", bot: "智能机器人" };

/** The Playground page. */
export function Playground() {
  const [info, setInfo] = useState<PlaygroundInfo | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [channel, setChannel] = useState<PlaygroundChannel>("kf");

  useEffect(() => {
    const ctl = new AbortController();
    get<PlaygroundInfo>("/console/api/playground", undefined, { signal: ctl.signal })
      .then((i) => {
        setInfo(i);
        const first = i.channels[0];
        if (first !== undefined && !i.channels.some((c) => c.id === "kf")) setChannel(first.id);
      })
      .catch((e: unknown) => {
        if (!ctl.signal.aborted) setError(errorText(e));
      });
    return () => ctl.abort();
  }, []);

  if (info === null) {
    return (
      <section class="page page-playground">
        <PageHeader title="Playground" />
        <ErrorLine error={error} />
        {error === null && <Empty>Loading…</Empty>}
      </section>
    );
  }
  if (!info.enabled) {
    return (
      <section class="page page-playground">
        <PageHeader title="Playground" />
        <Empty>The Playground runs in the sandbox (npm start without a configuration)</Empty>
      </section>
    );
  }
  const label = info.channels.find((c) => c.id === channel)?.label ?? channel;
  return (
    <section class="page page-playground">
      <PageHeader title="Playground">
        <label class="inline-field">
          <span>Channel</span>
          <select data-testid="playground-channel" value={channel} onChange={(e) => setChannel(e.currentTarget.value as PlaygroundChannel)}>
            {info.channels.map((c) => (
              <option key={c.id} value={c.id}>
                {c.label}
              </option>
            ))}
          </select>
        </label>
      </PageHeader>
      <Chats key={channel} channel={channel} label={label} />
      <p class="hint muted">
        Tip: open <a href="#/live" target="_blank" rel="noopener">Live</a> in another tab to watch each message cross the bridge.
      </p>
    </section>
  );
}

/** Both panes of one channel, polling its log. */
function Chats(props: { channel: PlaygroundChannel; label: string }) {
  const { channel } = props;
  const [log, setLog] = useState<PlaygroundLog | null>(null);
  const [pollError, setPollError] = useState<string | null>(null);
  const [kick, setKick] = useState(0);

  usePoll(
    async (signal) => {
      try {
        const l = await get<PlaygroundLog>("/console/api/playground/log", { channel }, { signal });
        if (signal.aborted) return;
        setLog(l);
        setPollError(null);
      } catch (e) {
        if (!signal.aborted) setPollError(errorText(e));
      }
    },
    POLL_MS,
    [channel, kick],
  );

  /** POST a line; resolves to the error text, or null when sent. */
  const send = async (side: "customer" | "agent", text: string): Promise<string | null> => {
    try {
      await post(`/console/api/playground/${side}`, { channel, text });
      setKick((k) => k + 1);
      return null;
    } catch (e) {
      return errorText(e);
    }
  };

  return (
    <>
      <ErrorLine error={pollError} />
      <div class="pg-panes">
        <div class="phone">
          <div class="phone-notch" aria-hidden="true" />
          <div class="phone-status" aria-hidden="true">
            <span>{formatTime(Date.now()).slice(0, 5)}</span>
            <span>5G ▮▮▮</span>
          </div>
          <div class="phone-title">
            <span class="phone-back" aria-hidden="true">
              ‹
            </span>
            <span>
              {CHANNEL_NAMES[channel]}
              <span class="phone-sub">{props.label}</span>
            </span>
            <span class="phone-more" aria-hidden="true">
              ···
            </span>
          </div>
          <ChatLog
            testid="playground-customer-log"
            cls="wx-log"
            lines={log?.customer ?? []}
            mine="customer"
            emptyText="Write as the customer: the message goes to WeCom's simulator, then through the bridge to the agent desk."
          />
          <Composer side="customer" placeholder="Message as the customer" cls="wx-composer" send={send} />
        </div>

        <div class="desk">
          <div class="desk-head">
            <span class="desk-logo">全媒体</span>
            <span class="desk-title">Agent desk</span>
            <span class="desk-sub muted small">{props.label}</span>
          </div>
          <ChatLog
            testid="playground-agent-log"
            cls="desk-log"
            lines={log?.agent ?? []}
            mine="agent"
            emptyText="The customer's messages arrive here; answer them below (after the customer wrote)."
          />
          <Composer side="agent" placeholder="Answer as the agent" cls="desk-composer" send={send} />
        </div>
      </div>
    </>
  );
}

/**
 * A chat log: exactly one child element per line, keyed by the line's id (a streaming answer is
 * one element whose text grows). The empty text is shown by CSS (`:empty`), so the log holds
 * nothing but lines. Stays scrolled to the bottom unless the reader scrolled up.
 */
function ChatLog(props: { testid: string; cls: string; lines: PlaygroundLine[]; mine: PlaygroundLine["from"]; emptyText: string }) {
  const ref = useRef<HTMLDivElement>(null);
  const stick = useRef(true);
  const last = props.lines.at(-1);
  const signature = `${props.lines.length}:${last?.id ?? ""}:${last?.text.length ?? 0}`;

  useLayoutEffect(() => {
    const el = ref.current;
    if (el !== null && stick.current) el.scrollTop = el.scrollHeight;
  }, [signature]);

  return (
    <div
      ref={ref}
      class={`chat-log ${props.cls}`}
      data-testid={props.testid}
      data-empty={props.emptyText}
      onScroll={(e) => {
        const el = e.currentTarget;
        stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
      }}
    >
      {props.lines.map((l) => {
        const mine = l.from === props.mine;
        const classes = ["line", mine ? "line-mine" : "line-theirs", `from-${l.from}`];
        if (l.streaming === true) classes.push("streaming");
        if (l.failed !== undefined) classes.push("failed");
        return (
          <div key={l.id} class={classes.join(" ")} data-from={l.from} title={fullTime(l.time)}>
            <span class="avatar" aria-hidden="true">
              {l.from === "customer" ? "客" : "坐"}
            </span>
            <div class="line-body">
              <div class="bubble">
                {l.text}
                {l.streaming === true && <span class="caret" title="streaming" />}
              </div>
              {l.failed !== undefined && <div class="line-failed small">✗ WeCom refused it: {l.failed}</div>}
              <div class="line-time small">{formatTime(l.time)}</div>
            </div>
          </div>
        );
      })}
    </div>
  );
}

/** An input and its send button; Enter sends. Clears on send, shows the POST's error under it. */
function Composer(props: { side: "customer" | "agent"; placeholder: string; cls: string; send: (side: "customer" | "agent", text: string) => Promise<string | null> }) {
  const [text, setText] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: Event) => {
    e.preventDefault();
    const t = text.trim();
    if (t === "" || busy) return;
    setText("");
    setBusy(true);
    const err = await props.send(props.side, t);
    setBusy(false);
    setError(err);
  };

  return (
    <form class={`composer ${props.cls}`} onSubmit={submit}>
      <div class="composer-row">
        <input
          type="text"
          data-testid={`playground-${props.side}-input`}
          placeholder={props.placeholder}
          aria-label={props.placeholder}
          value={text}
          onInput={(e) => setText(e.currentTarget.value)}
          autocomplete="off"
        />
        <button type="submit" class="primary" data-testid={`playground-${props.side}-send`} disabled={busy}>
          Send
        </button>
      </div>
      {error !== null && (
        <p class="pg-error error-line small" role="alert">
          {error}
        </p>
      )}
    </form>
  );
}
