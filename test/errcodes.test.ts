/**
 * The one classification of WeCom's answers (the table of the hardening issue and the README):
 * every caller (KF puller, media fetches, the outbox) acts on it, so each row is pinned here.
 */
import { describe, expect, it } from "vitest";
import { WeComApiError } from "../src/clients/wecom.js";
import { classifyWeComFailure, errcodeLabel, KNOWN_ERRCODES } from "../src/wecom/errcodes.js";

describe("classifyWeComFailure", () => {
  it.each([
    // transient: network errors and timeouts, HTTP 5xx, -1, 45009
    [{ api: "kf/sync_msg", network: true }, "transient"],
    [{ api: "media/get", httpStatus: 502 }, "transient"],
    [{ api: "media/get", httpStatus: 503 }, "transient"],
    [{ api: "media/get", httpStatus: 429 }, "transient"],
    [{ api: "kf/sync_msg", errcode: -1, httpStatus: 200 }, "transient"],
    [{ api: "kf/sync_msg", errcode: 45009, httpStatus: 200 }, "transient"],
    // token: refresh once
    [{ api: "kf/sync_msg", errcode: 40014, httpStatus: 200 }, "token"],
    [{ api: "media/get", errcode: 42001, httpStatus: 200 }, "token"],
    [{ api: "kf/sync_msg", errcode: 40001, httpStatus: 200 }, "token"],
    // configuration: an operator fixes these
    [{ api: "kf/sync_msg", errcode: 60020, httpStatus: 200 }, "configuration"],
    [{ api: "gettoken", errcode: 40013, httpStatus: 200 }, "configuration"],
    [{ api: "gettoken", errcode: 40001, httpStatus: 200 }, "configuration"],
    [{ api: "kf/sync_msg", errcode: 95000, httpStatus: 200 }, "configuration"],
    [{ api: "kf/sync_msg", errcode: 95004, httpStatus: 200 }, "configuration"],
    [{ api: "kf/send_msg", errcode: 48002, httpStatus: 200 }, "configuration"],
    [{ api: "media/get", httpStatus: 403 }, "configuration"],
    [{ api: "media/get", httpStatus: 404 }, "configuration"],
    // final: no retry
    [{ api: "media/get", errcode: 40007, httpStatus: 200 }, "final"],
    [{ api: "kf/send_msg", errcode: 45002, httpStatus: 200 }, "final"],
    [{ api: "kf/send_msg", errcode: 95001, httpStatus: 200 }, "final"],
    [{ api: "kf/send_msg", errcode: 95002, httpStatus: 200 }, "final"],
    [{ api: "kf/send_msg", errcode: 95013, httpStatus: 200 }, "final"],
    [{ api: "kf/send_msg", errcode: 95018, httpStatus: 200 }, "final"],
    [{ api: "message/send", errcode: 81013, httpStatus: 200 }, "final"],
  ] as const)("%j is %s", (failure, expected) => {
    expect(classifyWeComFailure(failure)).toBe(expected);
  });

  it("40001 on a token that never worked is configuration (a wrong secret), not a refresh", () => {
    expect(classifyWeComFailure({ api: "kf/sync_msg", errcode: 40001, httpStatus: 200 }, false)).toBe("configuration");
  });

  it("WeComApiError carries the class; only final is not retryable", () => {
    expect(new WeComApiError("kf/sync_msg", 60020, "not allow", 200)).toMatchObject({ kind: "configuration", retryable: true });
    expect(new WeComApiError("media/get", 40007, "invalid media_id", 200)).toMatchObject({ kind: "final", retryable: false });
    expect(new WeComApiError("media/get", 0, "request failed (timeout)", undefined)).toMatchObject({ kind: "transient", retryable: true });
    expect(new WeComApiError("media/get", 0, "too big", 200, "final")).toMatchObject({ kind: "final", retryable: false });
  });

  it("metrics keep documented errcodes and put the rest under other", () => {
    for (const code of KNOWN_ERRCODES) expect(errcodeLabel(code)).toBe(String(code));
    expect(errcodeLabel(12345)).toBe("other");
    expect(errcodeLabel(Number.NaN)).toBe("other");
  });
});
