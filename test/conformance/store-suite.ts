/**
 * The store conformance suite: every behaviour of the `Store` interface the gateway relies on,
 * concurrency included, registered against one engine's harness. It uses the interface only;
 * its oracles are the store's own full listings and what each test wrote.
 */
import { afterEach, describe } from "vitest";
import { concurrencyTests } from "./concurrency.js";
import type { StoreHandle, StoreHarness, SuiteContext } from "./context.js";
import { ingestTests } from "./ingest.js";
import { listingTests } from "./listings.js";
import { outboundTests } from "./outbound.js";
import { outboxTests } from "./outbox.js";
import { retentionTests } from "./retention.js";

export type { StoreHandle, StoreHarness } from "./context.js";

/** Register the suite for one engine: each test gets fresh stores, disposed after it. */
export function storeConformance(h: StoreHarness): void {
  describe(`Store conformance: ${h.engine}`, () => {
    const handles: StoreHandle[] = [];
    afterEach(async () => {
      const errors: unknown[] = [];
      for (const handle of handles.splice(0)) await handle.dispose().catch((e: unknown) => errors.push(e));
      if (errors.length > 0) throw errors[0];
    });
    const ctx: SuiteContext = {
      engine: h.engine,
      open: async () => {
        const handle = await h.open();
        handles.push(handle);
        return handle;
      },
      fresh: async () => (await ctx.open()).store,
    };
    ingestTests(ctx);
    outboxTests(ctx);
    listingTests(ctx);
    outboundTests(ctx);
    retentionTests(ctx);
    concurrencyTests(ctx);
  });
}
