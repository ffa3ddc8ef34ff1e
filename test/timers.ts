/** Timers a test fires by hand (the KF puller's retries and polls). */
import { expect } from "vitest";
import type { KfPullerTimers } from "../src/gateway/kf-puller.js";

/** Timers that only record what was asked: the test fires them. */
export class ManualTimers implements KfPullerTimers {
  readonly armed: { fn: () => void; ms: number; cleared: boolean }[] = [];
  set(fn: () => void, ms: number): unknown {
    const t = { fn, ms, cleared: false };
    this.armed.push(t);
    return t;
  }
  clear(handle: unknown): void {
    (handle as { cleared: boolean }).cleared = true;
  }
  /** The timers armed and neither fired nor cleared. */
  pending() {
    return this.armed.filter((t) => !t.cleared);
  }
  /** Fire the one pending timer (of those `pick` selects). */
  fire(pick: (t: { ms: number }) => boolean = () => true): void {
    const p = this.pending().filter(pick);
    expect(p).toHaveLength(1);
    const t = p[0] as (typeof p)[number];
    t.cleared = true;
    t.fn();
  }
}
