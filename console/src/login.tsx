/**
 * The login form: the admin token buys a session (an HttpOnly cookie) and its CSRF token.
 * @module
 */
import type { SessionInfo } from "../../src/gateway/console/types.ts";
import { useState } from "preact/hooks";
import { ApiError, post, setCsrf } from "./api.ts";

/**
 * The login form, shown while there is no session.
 * @param props.onLogin called with the session once the server accepted the token
 */
export function Login(props: { onLogin: (session: SessionInfo) => void }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: Event) => {
    e.preventDefault();
    if (busy) return;
    setBusy(true);
    setError(null);
    try {
      const session = await post<SessionInfo>("/console/api/login", { token }, { quiet401: true });
      setCsrf(session.csrf);
      setToken("");
      props.onLogin(session);
    } catch (err) {
      setError(err instanceof ApiError || err instanceof Error ? err.message : String(err));
      setBusy(false);
    }
  };

  return (
    <div class="login-screen">
      <form class="login-card" onSubmit={submit}>
        <div class="brand brand-large">
          <span class="brand-mark">wb</span>
          <span>
            wecom-bridge <span class="muted">console</span>
          </span>
        </div>
        <label class="field">
          <span>Admin token</span>
          <input
            type="password"
            data-testid="login-token"
            autocomplete="current-password"
            value={token}
            onInput={(e) => setToken(e.currentTarget.value)}
            required
          />
        </label>
        <button type="submit" class="primary" data-testid="login-submit" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
        {error !== null && (
          <p class="error-line login-error" data-testid="login-error" role="alert">
            {error}
          </p>
        )}
        <p class="muted small">The admin token: adminToken in the configuration, or WECOM_BRIDGE_ADMIN_TOKEN.</p>
      </form>
    </div>
  );
}
