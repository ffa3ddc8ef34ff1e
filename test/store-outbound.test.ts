/**
 * SQLite's group commit: the outbox and shared-state writes asked for in one event-loop turn
 * share one transaction, in the order asked (a failing one runs again alone). The engine-neutral
 * outbound behaviours are in the conformance suite (test/conformance/).
 */
import { afterEach, describe, expect, it } from "vitest";
import type { OutboundAccept } from "../src/store/types.js";
import { kfEntry } from "./conformance/outbox.js";
import { closeAll, openStore, TENANT } from "./store-helpers.js";

afterEach(closeAll);

const T = 1_790_000_000_000;
const accept = (key: string, rule?: OutboundAccept["rule"]): OutboundAccept => ({ tenant: TENANT, keys: [{ key, expiresAt: T + 1000 }], entries: [kfEntry(key)], now: T, ...(rule ? { rule } : {}) });

describe("group commit", () => {
  it("writes asked for in one turn commit in the order asked; a failing one fails alone", async () => {
    const s = await openStore(undefined, true);
    const ok = s.acceptOutbound(accept("a"));
    const bad = s.acceptOutbound(
      accept("b", {
        key: "r",
        conversationId: "c",
        decide: () => {
          throw new Error("a rule that breaks");
        },
      }),
    );
    const again = s.acceptOutbound(accept("a"));
    expect(await ok).toMatchObject({ outcome: "queued" });
    await expect(bad).rejects.toThrow("a rule that breaks");
    expect(await again).toEqual({ outcome: "duplicate" }); // it saw the first one's key
  });
});
