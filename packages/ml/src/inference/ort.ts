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
 * pieces (`runInPieces`), in-process and on the /predict pool alike. Small runs keep their
 * activations in the CPU's caches: MobileNetV2 (224) embedded 10 % faster at 2–4 images per run
 * than at 16 and 15 % faster than at 32 (2 threads, passes interleaved, in both orders);
 * InceptionV3 (299) ran at the same speed at 1–32. A GPU wants large batches: CUDA hosts run the
 * caller's batch whole.
 */
export function ortMaxBatch(env: Record<string, string | undefined> = process.env): number {
  return env.ML_BACKEND === 'tensorflow-gpu' ? Number.POSITIVE_INFINITY : 4;
}

/**
 * One batch through `session`: NHWC float32 `input` of `dims` ([count, ...image]) in, the
 * outputs out, as one session run of at most `maxBatch` images after another.
 */
export async function runInPieces(
  ort: Ort,
  session: Pick<InferenceSession, 'run'>,
  names: { input: string; output: string },
  input: Float32Array,
  dims: number[],
  maxBatch = ortMaxBatch(),
): Promise<Float32Array> {
  const count = dims[0]!;
  const perImage = input.length / count;
  let output: Float32Array | null = null;
  for (let start = 0; start < count; start += maxBatch) {
    const n = Math.min(maxBatch, count - start);
    const piece = new ort.Tensor('float32', input.subarray(start * perImage, (start + n) * perImage), [n, ...dims.slice(1)]);
    let y: Awaited<ReturnType<InferenceSession['run']>>[string] | undefined;
    try {
      y = (await session.run({ [names.input]: piece }))[names.output]!;
      const values = y.data as Float32Array;
      const width = values.length / n;
      output ??= new Float32Array(count * width);
      output.set(values, start * width);
    } finally {
      y?.dispose();
      piece.dispose();
    }
  }
  return output ?? new Float32Array(0);
}

/**
 * GPU hosts (ML_BACKEND=tensorflow-gpu) run frozen layers on ONNX Runtime's CUDA execution
 * provider, installed by Dockerfile.gpu (ONNXRUNTIME_NODE_INSTALL=cuda12), falling back to the
 * CPU for any operator CUDA lacks. Elsewhere the CPU provider that ships in the npm package.
 */
function executionProviders(env: Record<string, string | undefined>): string[] {
  return env.ML_BACKEND === 'tensorflow-gpu' ? ['cuda', 'cpu'] : ['cpu'];
}
