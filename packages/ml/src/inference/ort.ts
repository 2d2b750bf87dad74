// onnxruntime-node itself: loading it, and the options every session is opened with. Kept free
// of tfjs so the inference pool's worker threads (pool-worker.ts) load ONNX Runtime and nothing else.
import type { InferenceSession } from 'onnxruntime-node';

export type Ort = typeof import('onnxruntime-node');

let ort: Promise<Ort | Error> | null = null;

/** The package, imported on first use; its absence (or a binding that will not load here) is an Error value, not a throw. */
export function loadOrt(): Promise<Ort | Error> {
  ort ??= import('onnxruntime-node').then(
    (m) => ((m as { default?: Ort }).default?.InferenceSession ? (m as { default: Ort }).default : m),
    (error: unknown) => new Error(`onnxruntime-node unavailable: ${(error as Error).message.split('\n')[0]}`),
  );
  return ort;
}

/** One batch at a time per session, spread over `threads` intra-op threads. */
export function sessionOptions(threads: number, env: Record<string, string | undefined> = process.env): InferenceSession.SessionOptions {
  return {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    logSeverityLevel: 3,
    executionProviders: executionProviders(env),
  };
}

/**
 * The most images one ONNX Runtime run takes on the CPU; a caller's larger batch is run in
 * pieces. Small runs keep their activations in the CPU's caches: MobileNetV2 (224) embedded
 * 10 % faster at 2–4 images per run than at 16 and 15 % faster than at 32 (2 threads, passes
 * interleaved, in both orders); InceptionV3 (299) ran at the same speed at 1–32. A GPU wants
 * large batches: CUDA hosts run the caller's batch whole.
 */
export function ortMaxBatch(env: Record<string, string | undefined> = process.env): number {
  return env.ML_BACKEND === 'tensorflow-gpu' ? Number.POSITIVE_INFINITY : 4;
}

/**
 * GPU hosts (ML_BACKEND=tensorflow-gpu) run frozen layers on ONNX Runtime's CUDA execution
 * provider, installed by Dockerfile.gpu (ONNXRUNTIME_NODE_INSTALL=cuda12), falling back to the
 * CPU for any operator CUDA lacks. Elsewhere the CPU provider that ships in the npm package.
 */
function executionProviders(env: Record<string, string | undefined>): string[] {
  return env.ML_BACKEND === 'tensorflow-gpu' ? ['cuda', 'cpu'] : ['cpu'];
}
