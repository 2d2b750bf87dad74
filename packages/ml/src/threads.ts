// How many threads the ML engines may use in one process.
import os from 'node:os';

/**
 * ML_THREADS, or every core the process may use: ONNX Runtime's intra-op threads per session, and
 * the tfjs wasm backend's XNNPACK pool (1 means its single-threaded build). Sessions and training
 * steps run one batch at a time, so this is the process's CPU use while one runs.
 */
export function mlThreads(env: Record<string, string | undefined> = process.env): number {
  const raw = env.ML_THREADS;
  if (raw === undefined || raw === '') return os.availableParallelism();
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 1024) throw new Error(`ML_THREADS must be a whole number from 1 to 1024 (got '${raw}')`);
  return n;
}
