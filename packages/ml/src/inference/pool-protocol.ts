// Messages between the inference pool (pool.ts) and its worker threads (pool-worker.ts).

export interface PoolWorkerData {
  /** ONNX Runtime intra-op threads for each of the worker's sessions. */
  threads: number;
}

export type ToWorker =
  /** Open a session on these ONNX bytes under `key`; runs for the key wait for it. */
  | { type: 'load'; key: string; bytes: Uint8Array }
  /** Release the session (the pool's LRU evicted it). */
  | { type: 'drop'; key: string }
  /** One batch: `input` is NHWC float32 of `dims` (its buffer is transferred). */
  | { type: 'run'; id: number; key: string; input: Float32Array; dims: number[]; inputName: string; outputName: string; exit?: boolean };

export type FromWorker =
  | { type: 'ready' }
  | { type: 'result'; id: number; output: Float32Array }
  /** The engine refused the model or failed on the batch: the caller may fall back to tfjs. */
  | { type: 'failed'; id: number; message: string };
