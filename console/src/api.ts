/**
 * The console's fetch wrapper: JSON both ways, the session cookie sent along
 * (`credentials: "same-origin"`; the cookie is HttpOnly, this code never sees it), the session's
 * CSRF token in `X-CSRF-Token` on every POST, and a 401 anywhere sends the app back to the login
 * form (through {@link onUnauthorized}).
 * @module
 */

/** The CSRF token of the current session, kept in memory only (a reload asks `/session` again). */
let csrf: string | null = null;

const unauthorizedListeners = new Set<() => void>();

/** An answer other than 2xx: its status and the server's `errcode` / `errmsg` when it sent them. */
export class ApiError extends Error {
  /** HTTP status (0 when the server could not be reached). */
  readonly status: number;
  /** The server's `errcode`, or a made-up one (`http_{status}`, `network`). */
  readonly errcode: string;

  /**
   * @param status HTTP status, 0 for a network failure
   * @param errcode the server's errcode
   * @param message the server's errmsg, or a description
   */
  constructor(status: number, errcode: string, message: string) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.errcode = errcode;
  }
}

/**
 * Remember the session's CSRF token (from `/login` or `/session`), or forget it (null).
 * @param token the token, or null after a logout or a 401
 */
export function setCsrf(token: string | null): void {
  csrf = token;
}

/**
 * Be told when any request is answered 401 (the session ended or never was).
 * @param listener called once per such answer
 * @returns a function that removes the listener
 */
export function onUnauthorized(listener: () => void): () => void {
  unauthorizedListeners.add(listener);
  return () => {
    unauthorizedListeners.delete(listener);
  };
}

/** Tell the app that the session is gone (a 401, or a closed event stream whose session check said so). */
function unauthorized(): void {
  csrf = null;
  for (const l of [...unauthorizedListeners]) l();
}

/** Options of a request. */
export interface RequestOptions {
  /** Do not send the app to the login form on a 401 (the login and session calls handle it). */
  quiet401?: boolean;
  /** Abort the request. */
  signal?: AbortSignal;
}

/** Query parameters: undefined, null and empty strings are left out. */
export type Query = Record<string, string | number | boolean | null | undefined>;

/**
 * Build a URL path with its query string.
 * @param path an absolute path (`/console/api/...`)
 * @param query parameters; undefined, null and "" are left out
 * @returns the path with `?query` when there is any
 */
export function withQuery(path: string, query?: Query): string {
  if (query === undefined) return path;
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v === undefined || v === null || v === "") continue;
    p.set(k, String(v));
  }
  const s = p.toString();
  return s === "" ? path : `${path}?${s}`;
}

async function request<T>(method: "GET" | "POST", path: string, body: unknown, opts: RequestOptions): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  const init: RequestInit = { method, credentials: "same-origin", headers, cache: "no-store" };
  if (opts.signal !== undefined) init.signal = opts.signal;
  if (method === "POST") {
    headers["Content-Type"] = "application/json";
    if (csrf !== null) headers["X-CSRF-Token"] = csrf;
    init.body = JSON.stringify(body ?? {});
  }
  let res: Response;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e instanceof DOMException && e.name === "AbortError") throw e;
    throw new ApiError(0, "network", "the gateway cannot be reached");
  }
  const text = await res.text();
  let json: unknown;
  try {
    json = text === "" ? {} : JSON.parse(text);
  } catch {
    json = undefined;
  }
  if (res.status === 401 && opts.quiet401 !== true) unauthorized();
  if (!res.ok) {
    const err = json as { errcode?: unknown; errmsg?: unknown } | undefined;
    const errcode = typeof err?.errcode === "string" || typeof err?.errcode === "number" ? String(err.errcode) : `http_${res.status}`;
    const errmsg = typeof err?.errmsg === "string" && err.errmsg !== "" ? err.errmsg : `${res.status} ${res.statusText}`.trim();
    throw new ApiError(res.status, errcode, errmsg);
  }
  if (json === undefined) throw new ApiError(res.status, "bad_json", "the answer is not JSON");
  return json as T;
}

/**
 * GET a JSON answer.
 * @param path an absolute path (`/console/api/...`)
 * @param query parameters
 * @param opts options
 * @returns the parsed answer
 * @throws {ApiError} on a non-2xx answer or a network failure
 */
export function get<T>(path: string, query?: Query, opts: RequestOptions = {}): Promise<T> {
  return request<T>("GET", withQuery(path, query), undefined, opts);
}

/**
 * POST a JSON body (with the CSRF token) and read the JSON answer.
 * @param path an absolute path
 * @param body the body, `{}` when undefined
 * @param opts options
 * @returns the parsed answer
 * @throws {ApiError} on a non-2xx answer or a network failure
 */
export function post<T>(path: string, body?: unknown, opts: RequestOptions = {}): Promise<T> {
  return request<T>("POST", path, body, opts);
}

/**
 * Check whether the session still holds (after the live stream closed): a 401 sends the app to
 * the login form like any other request.
 * @returns true when the session is valid
 */
export async function sessionAlive(): Promise<boolean> {
  try {
    await get("/console/api/session");
    return true;
  } catch (e) {
    return !(e instanceof ApiError && e.status === 401);
  }
}

/**
 * A readable message for an error thrown by a request.
 * @param e what was thrown
 * @returns the server's errmsg, or the error's message
 */
export function errorText(e: unknown): string {
  if (e instanceof ApiError) return e.errcode.startsWith("http_") || e.errcode === "network" ? e.message : `${e.message} (${e.errcode})`;
  if (e instanceof Error) return e.message;
  return String(e);
}

/** True when the error is an aborted request (a page left while it ran). */
export function isAbort(e: unknown): boolean {
  return e instanceof DOMException && e.name === "AbortError";
}
