/**
 * What WeCom does later on its own — poll an AI bot's stream every second, report a refused KF
 * delivery — runs through this scheduler, on the simulator's clock. In `manual` mode nothing runs
 * until a test calls {@link SimScheduler.runDue} (after moving its clock); in `realtime` mode a
 * timer runs due tasks by itself, for the sandbox and for tests on the real clock.
 * @module
 */

/** How the simulator runs what WeCom does later on its own. */
export type SimTimers = "manual" | "realtime";

interface Task {
  seq: number;
  at: number;
  label: string;
  run: () => void | Promise<void>;
}

/** How often the realtime timer looks for due tasks, ms. */
const REALTIME_RESOLUTION_MS = 50;

/** Tasks due at a time of the simulator's clock, run in time order (then in order of scheduling). */
export class SimScheduler {
  readonly #now: () => number;
  readonly #log: (line: string) => void;
  readonly #tasks: Task[] = [];
  #seq = 0;
  #running: Promise<number> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  /**
   * @param now the simulator's clock, ms
   * @param mode `manual` (tasks run on {@link runDue}) or `realtime` (a timer runs them)
   * @param log where a failing task is reported
   */
  constructor(now: () => number, mode: SimTimers, log: (line: string) => void) {
    this.#now = now;
    this.#log = log;
    if (mode === "realtime") {
      this.#timer = setInterval(() => {
        if (this.#tasks.length > 0) void this.runDue();
      }, REALTIME_RESOLUTION_MS);
      this.#timer.unref();
    }
  }

  /** Run `run` when the clock reaches `at`; returns a function that cancels it. */
  at(at: number, label: string, run: () => void | Promise<void>): () => void {
    if (this.#closed) return () => {};
    const task: Task = { seq: ++this.#seq, at, label, run };
    this.#tasks.push(task);
    return () => {
      const i = this.#tasks.indexOf(task);
      if (i >= 0) this.#tasks.splice(i, 1);
    };
  }

  /** When the next task is due (undefined when none waits). */
  get nextAt(): number | undefined {
    let next: number | undefined;
    for (const t of this.#tasks) if (next === undefined || t.at < next) next = t.at;
    return next;
  }

  /** The waiting tasks (time and label), earliest first. */
  pending(): { at: number; label: string }[] {
    return [...this.#tasks].sort((a, b) => a.at - b.at || a.seq - b.seq).map((t) => ({ at: t.at, label: t.label }));
  }

  /**
   * Run every task due by now, one at a time in time order, each to its end (tasks it schedules for
   * now or earlier run too); resolves with how many ran. A call while a run is under way joins it.
   */
  runDue(): Promise<number> {
    if (this.#running !== undefined) return this.#running;
    this.#running = this.#drain().finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  async #drain(): Promise<number> {
    let ran = 0;
    for (;;) {
      if (this.#closed) return ran;
      const now = this.#now();
      let due: Task | undefined;
      for (const t of this.#tasks) if (t.at <= now && (due === undefined || t.at < due.at || (t.at === due.at && t.seq < due.seq))) due = t;
      if (due === undefined) return ran;
      this.#tasks.splice(this.#tasks.indexOf(due), 1);
      ran++;
      try {
        await due.run();
      } catch (e) {
        this.#log(`scheduled ${due.label} failed: ${(e as Error).message}`);
      }
    }
  }

  /** Drop every task and stop the realtime timer. */
  close(): void {
    this.#closed = true;
    this.#tasks.length = 0;
    if (this.#timer !== undefined) clearInterval(this.#timer);
  }
}

/**
 * A clock tests move by hand. Give it to the simulator (`clock` option) and `sim.advance(ms)` moves
 * it through every scheduled task on the way (each runs at its own time), or share `now` with a
 * gateway under test.
 */
export class SimClock {
  #t: number;

  /** @param startMs the start, ms since the epoch */
  constructor(startMs: number) {
    this.#t = startMs;
  }

  /** The current time, ms (a bound function: pass it as a `now` option). */
  readonly now = (): number => this.#t;

  /** Set the time (it may go back: tests of clocks that jump). */
  set(ms: number): void {
    this.#t = ms;
  }
}
