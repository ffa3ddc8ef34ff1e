/**
 * WAL checkpoints off the event loop. A checkpoint copies the WAL back into the database file and
 * syncs it: done by the writing connection it stalls every request for tens of milliseconds. Here
 * a worker thread with its own connection runs a PASSIVE checkpoint (which never blocks the
 * writer) every `intervalMs`, and TRUNCATEs the WAL when it has grown past `truncateBytes`.
 * @module
 */
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";

const WORKER = `
const { workerData, parentPort } = require("node:worker_threads");
const Database = require(workerData.lib);
const db = new Database(workerData.path);
db.pragma("busy_timeout = 1000");
let timer;
const tick = () => {
  try {
    const [r] = db.pragma("wal_checkpoint(PASSIVE)");
    // WAL pages all copied and no reader in the way: start the WAL over so it stops growing
    if (r && r.busy === 0 && r.log > 0 && r.log === r.checkpointed && r.log * workerData.pageSize > workerData.truncateBytes) {
      db.pragma("wal_checkpoint(TRUNCATE)");
    }
  } catch (e) {
    parentPort.postMessage({ error: String(e && e.message || e) });
  }
  timer = setTimeout(tick, workerData.intervalMs);
};
timer = setTimeout(tick, workerData.intervalMs);
parentPort.on("message", (m) => {
  if (m === "stop") {
    clearTimeout(timer);
    try { db.pragma("wal_checkpoint(PASSIVE)"); } catch {}
    db.close();
    parentPort.postMessage("stopped");
  }
});
`;

/** Options of {@link startCheckpointer}. */
export interface CheckpointerOptions {
  path: string;
  pageSize: number;
  /** Default 1000 ms. */
  intervalMs?: number;
  /** Default 64 MiB. */
  truncateBytes?: number;
  onError?: (message: string) => void;
}

/** A running checkpointer. */
export interface Checkpointer {
  stop(): Promise<void>;
}

/** Start checkpointing a WAL database from a worker thread. */
export function startCheckpointer(options: CheckpointerOptions): Checkpointer {
  const lib = createRequire(import.meta.url).resolve("better-sqlite3");
  const worker = new Worker(WORKER, {
    eval: true,
    workerData: { lib, path: options.path, pageSize: options.pageSize, intervalMs: options.intervalMs ?? 1000, truncateBytes: options.truncateBytes ?? 64 * 1024 * 1024 },
  });
  worker.unref();
  worker.on("message", (m: unknown) => {
    if (typeof m === "object" && m !== null && "error" in m) options.onError?.(String((m as { error: unknown }).error));
  });
  worker.on("error", (e) => options.onError?.(e.message));
  return {
    stop: () =>
      new Promise<void>((resolve) => {
        const done = () => resolve();
        worker.once("exit", done);
        worker.once("message", (m) => {
          if (m === "stopped") void worker.terminate().then(done, done);
        });
        worker.postMessage("stop");
        setTimeout(() => void worker.terminate().then(done, done), 2000).unref();
      }),
  };
}
