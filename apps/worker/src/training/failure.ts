// How a failed training attempt is reported: a stable code, a message a user can act on, and
// whether another attempt could end differently. Only failures of a dependency (S3, Postgres,
// Redis, the network) or of the process (killed) are retried; the rest would fail the same way
// on every attempt, so the job fails at once instead of burning three identical runs.
import { isDomainError, isTransientError } from '@finetune/core';

export interface ClassifiedFailure {
  code: string;
  message: string;
  retry: boolean;
}

// What tfjs' wasm backend (emscripten) throws when a step needs more memory than its heap can
// grow to, or after such a failure has corrupted its state. The same spec aborts again.
const BACKEND_ABORT = [
  /memory access out of bounds/i,
  /table index is out of bounds/i,
  /Aborted\(/,
  /Cannot enlarge memory/i,
  /Out of memory/i,
  /Array buffer allocation failed/i,
  /RangeError: WebAssembly\.Memory/i,
];

export interface FailureContext {
  backend: string;
  batchSize: number;
  strategy: string;
}

export function classifyFailure(error: unknown, context: FailureContext): ClassifiedFailure {
  const err = error instanceof Error ? error : new Error(String(error));
  if (isDomainError(err)) return { code: err.code, message: err.message, retry: false };
  if (BACKEND_ABORT.some((pattern) => pattern.test(err.message))) {
    const smaller = Math.max(1, Math.floor(context.batchSize / 2));
    return {
      code: 'backend_out_of_memory',
      message:
        `the ${context.backend} backend ran out of memory training strategy ${context.strategy} at batchSize ${context.batchSize}; ` +
        `lower hyperparameters.batchSize (e.g. to ${smaller}), unfreeze fewer layers, or run on a backend with more memory ` +
        `(ML_BACKEND=tensorflow or tensorflow-gpu)`,
      retry: false,
    };
  }
  if (isTransientError(err)) {
    return { code: 'dependency_unavailable', message: `a service the worker needs was unavailable: ${err.message}`, retry: true };
  }
  return { code: 'training_error', message: err.message, retry: false };
}
