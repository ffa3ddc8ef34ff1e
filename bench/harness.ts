/**
 * A small side-by-side benchmark harness: every candidate runs in the same process, in
 * interleaved rounds, and the median ops/s over the rounds is reported.
 * @module
 */
import { performance } from "node:perf_hooks";

/** One candidate: a sync or async operation. */
export interface Candidate {
  name: string;
  op: () => unknown;
}

/** Median of a list of numbers. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

async function runFor(op: () => unknown, ms: number): Promise<number> {
  const isAsync = op() instanceof Promise;
  let n = 0;
  const start = performance.now();
  let now = start;
  const batch = 64;
  while (now - start < ms) {
    if (isAsync) for (let i = 0; i < batch; i++) await op();
    else for (let i = 0; i < batch; i++) op();
    n += batch;
    now = performance.now();
  }
  return (n * 1000) / (now - start);
}

/**
 * Run candidates in `rounds` interleaved rounds of `ms` milliseconds each (after a warm-up) and
 * return the median ops/s of each.
 */
export async function compare(candidates: Candidate[], rounds = 7, ms = 400): Promise<Map<string, number>> {
  for (const c of candidates) await runFor(c.op, Math.min(ms, 300)); // warm-up / JIT
  const samples = new Map<string, number[]>(candidates.map((c) => [c.name, []]));
  for (let r = 0; r < rounds; r++) {
    // rotate the order each round so no candidate always runs first
    for (let i = 0; i < candidates.length; i++) {
      const c = candidates[(i + r) % candidates.length] as Candidate;
      samples.get(c.name)?.push(await runFor(c.op, ms));
    }
  }
  return new Map([...samples].map(([k, v]) => [k, median(v)]));
}
