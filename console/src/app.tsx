/**
 * The console's shell: the session check on load, the login form while there is no session, then
 * the navigation and the page the URL's hash names (`#/live`, `#/conversations`, …).
 * @module
 */
import type { SessionInfo } from "../../src/gateway/console/types.ts";
import type { FunctionComponent } from "preact";
import { useCallback, useEffect, useState } from "preact/hooks";
import { ApiError, errorText, get, onUnauthorized, post, setCsrf } from "./api.ts";
import { Accounts } from "./accounts.tsx";
import { Conversations } from "./conversations.tsx";
import { Doctor } from "./doctor.tsx";
import { Health } from "./health.tsx";
import { Live } from "./live.tsx";
import { Login } from "./login.tsx";
import { Outbox } from "./outbox.tsx";
import { Playground } from "./playground.tsx";

/** The pages, in the navigation's order. */
const PAGES = [
  { id: "live", label: "Live", icon: "◉", component: Live },
  { id: "conversations", label: "Conversations", icon: "☰", component: Conversations },
  { id: "outbox", label: "Outbox", icon: "⇪", component: Outbox },
  { id: "accounts", label: "Accounts", icon: "◎", component: Accounts },
  { id: "health", label: "Health", icon: "∿", component: Health },
  { id: "playground", label: "Playground", icon: "✎", component: Playground },
  { id: "doctor", label: "Doctor", icon: "✓", component: Doctor },
] as const satisfies readonly { id: string; label: string; icon: string; component: FunctionComponent }[];

/** A page's id. */
export type PageId = (typeof PAGES)[number]["id"];

const DEFAULT_PAGE: PageId = "live";

/**
 * The page a hash names (`#/outbox` → `outbox`), or null when it names none.
 * @param hash `location.hash`
 * @returns the page id, or null
 */
export function pageOf(hash: string): PageId | null {
  const id = hash.replace(/^#\/?/, "").split(/[/?]/)[0] ?? "";
  return PAGES.some((p) => p.id === id) ? (id as PageId) : null;
}

/** Follow `location.hash`, falling back to the default page. */
function useHashPage(): PageId {
  const [page, setPage] = useState<PageId>(() => pageOf(location.hash) ?? DEFAULT_PAGE);
  useEffect(() => {
    const onChange = () => setPage(pageOf(location.hash) ?? DEFAULT_PAGE);
    window.addEventListener("hashchange", onChange);
    return () => window.removeEventListener("hashchange", onChange);
  }, []);
  return page;
}

type Phase = { kind: "checking" } | { kind: "login" } | { kind: "unreachable"; error: string } | { kind: "in"; session: SessionInfo };

/**
 * The whole app: asks `/console/api/session` on load (a 401 shows the login form), then shows
 * the navigation and the current page. Any 401 later brings the login form back.
 */
export function App() {
  const [phase, setPhase] = useState<Phase>({ kind: "checking" });
  const page = useHashPage();

  const check = useCallback(async () => {
    setPhase({ kind: "checking" });
    try {
      const session = await get<SessionInfo>("/console/api/session", undefined, { quiet401: true });
      setCsrf(session.csrf);
      setPhase({ kind: "in", session });
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) setPhase({ kind: "login" });
      else setPhase({ kind: "unreachable", error: errorText(e) });
    }
  }, []);

  useEffect(() => {
    void check();
    return onUnauthorized(() => setPhase({ kind: "login" }));
  }, [check]);

  const current = PAGES.find((p) => p.id === page) ?? PAGES[0];
  useEffect(() => {
    document.title = phase.kind === "in" ? `${current.label} · wecom-bridge console` : "wecom-bridge console";
  }, [phase.kind, current.label]);

  if (phase.kind === "checking") return <div class="splash muted">Loading…</div>;
  if (phase.kind === "unreachable") {
    return (
      <div class="splash">
        <p class="error-line">{phase.error}</p>
        <button type="button" onClick={() => void check()}>
          Try again
        </button>
      </div>
    );
  }
  if (phase.kind === "login") {
    return (
      <Login
        onLogin={(session) => {
          if (pageOf(location.hash) === null) history.replaceState(null, "", `#/${DEFAULT_PAGE}`);
          setPhase({ kind: "in", session });
        }}
      />
    );
  }

  const logout = async () => {
    try {
      await post("/console/api/logout", {}, { quiet401: true });
    } catch {
      // the session is dropped here whatever the server said
    }
    setCsrf(null);
    history.replaceState(null, "", `#/${DEFAULT_PAGE}`);
    setPhase({ kind: "login" });
  };

  const Page = current.component;
  return (
    <div class="shell">
      <nav class="sidebar" aria-label="Pages">
        <div class="brand">
          <span class="brand-mark">wb</span>
          <span>
            wecom-bridge
            <span class="brand-sub">operator console</span>
          </span>
        </div>
        <ul class="nav">
          {PAGES.map((p) => (
            <li key={p.id}>
              <a href={`#/${p.id}`} data-testid={`nav-${p.id}`} class={p.id === page ? "active" : undefined} aria-current={p.id === page ? "page" : undefined}>
                <span class="nav-icon" aria-hidden="true">
                  {p.icon}
                </span>
                {p.label}
              </a>
            </li>
          ))}
        </ul>
        <div class="sidebar-foot">
          {phase.session.sandbox && (
            <span class="badge tone-warn" title="npm start without a configuration: simulators stand in for WeCom and the 全媒体">
              sandbox
            </span>
          )}
          <button type="button" class="link-button" onClick={() => void logout()}>
            Log out
          </button>
        </div>
      </nav>
      <main class="content">
        <Page key={page} />
      </main>
    </div>
  );
}
