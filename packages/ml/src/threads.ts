// How many threads the ML engines may use in one process.
import os from 'node:os';

/**
 * ML_THREADS, or every core the process may use: ONNX Runtime's intra-op threads per session.
 * Sessions run one batch at a time, so this is the process's CPU use while one runs.
 */
export function mlThreads(env: Record<string, string | undefined> = process.env): number {
  const raw = env.ML_THREADS;
  if (raw === undefined || raw === '') return os.availableParallelism();
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 1024) throw new Error(`ML_THREADS must be a whole number from 1 to 1024 (got '${raw}')`);
  return n;
}

/**
 * WASM_THREADS [1]: the threads the tfjs wasm backend runs XNNPACK on; 1 is its single-threaded
 * build, more its threaded one (wasm-threads.ts, at most 8). Not all cores by default: a thread
 * pool speeds up the large operations of a step that trains base layers (a full MobileNetV2 step
 * at batch 8: 1.41 → 1.08 s on 2 threads) but slows down the many small ones of a head's training,
 * the common case (10 epochs of a 1,280 → 10 head: 0.40 s on one thread, 0.45–0.70 s on two).
 */
export function wasmThreads(env: Record<string, string | undefined> = process.env): number {
  const raw = env.WASM_THREADS;
  if (raw === undefined || raw === '') return 1;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 8) throw new Error(`WASM_THREADS must be a whole number from 1 to 8 (got '${raw}')`);
  return n;
}
