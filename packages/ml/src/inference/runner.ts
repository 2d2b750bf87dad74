// The one way to run a model over images: batches through ONNX Runtime when the model (or its
// bottom up to a cut) converts, through tfjs otherwise. Every caller that only needs outputs —
// frozen features, embeddings, predictions — goes through forwardImages, so the engine choice
// and its fallback live here.
import { createHash } from 'node:crypto';
import { activeBackend, tf } from '../backend.ts';
import { yieldToEventLoop } from '../event-loop.ts';
import { convertToOnnx } from '../onnx/convert.ts';
import { openSession, runSession, type OrtSession } from './onnxruntime.ts';
import { InferenceWorkerLost, type InferencePool, type PooledModel } from './pool.ts';

/** Which engine produced a result: 'onnxruntime' or 'tfjs-<backend>' (tfjs-wasm, tfjs-tensorflow, …). */
export type EngineName = 'onnxruntime' | `tfjs-${string}`;

/** 'auto': ONNX Runtime when the model converts, else tfjs. 'tfjs': always tfjs. */
export type EngineChoice = 'auto' | 'tfjs';

/** Decoded images: float32 in [0, 1], or RGB bytes (divided by 255 on the way in). */
export type ImageBatch = readonly Float32Array[] | readonly Uint8Array[];

export interface ForwardOptions {
  /** Return this layer's output instead of the model's (the frozen bottom up to a cut). */
  cut?: string;
  /** Images per batch (default 32); ONNX Runtime on the CPU splits it further (ort.ts `runInPieces`). */
  batchSize?: number;
  /** Default: ML_INFERENCE_ENGINE ('auto' unless set to 'tfjs'). */
  engine?: EngineChoice;
  /** After each batch; awaited. */
  onBatch?: (done: number, total: number) => void | Promise<void>;
  /**
   * Run ONNX Runtime's batches on this pool's worker threads rather than in this thread (where
   * each batch holds the event loop). The model is converted here, once per model and weights.
   * tfjs, for a model that does not convert, still runs here.
   */
  pool?: InferencePool;
}

export interface ForwardResult {
  /** Outputs row-major, images.length × product(shape). */
  output: Float32Array;
  /** One image's output shape (Keras order: NHWC for images). */
  shape: number[];
  engine: EngineName;
  /** Why ONNX Runtime did not run, when it did not (null when it ran, or tfjs was asked for). */
  fallback: string | null;
}

/**
 * Runs `model` (up to `cut`) over `images` in batches and returns the outputs. Yields to the
 * event loop between batches so lock renewal, heartbeats and progress get a turn. A model
 * ONNX Runtime cannot take runs on tfjs; if ONNX Runtime fails during the run, the whole run is
 * redone on tfjs, so one result never mixes engines.
 */
export async function forwardImages(model: tf.LayersModel, images: ImageBatch, options: ForwardOptions = {}): Promise<ForwardResult> {
  const cut = normaliseCut(model, options.cut);
  const batchSize = Math.max(1, Math.floor(options.batchSize ?? 32));
  const choice = options.engine ?? engineChoice();
  let fallback: string | null = null;
  if (choice === 'auto') {
    const { pool } = options;
    const target = pool ? pooledModel(model, cut) : await ortSession(model, cut);
    if ('reason' in target) {
      fallback = target.reason;
    } else {
      const step = pool
        ? (batch: Float32Array, count: number) => pool.run(target as PooledModel, batch, count)
        : (batch: Float32Array, count: number) => runSession(target as OrtSession, batch, count);
      try {
        // In-process runs are done with a batch's buffer when they return; the pool takes it.
        const buffers = pool ? 'fresh' : 'reused';
        const result = await run(images, target.inputShape, target.outputShape, batchSize, options.onBatch, 'onnxruntime', step, buffers);
        return { ...result, fallback: null };
      } catch (error) {
        // Only the engine's own failures fall back: a wrong image size, an error thrown by onBatch
        // (a cancellation) or a pool worker that died (InferenceWorkerLost) propagates.
        if (!(error instanceof EngineFailure)) throw error;
        fallback = `onnxruntime failed: ${error.message.split('\n')[0]}`;
        if (pool) forgetPooled(model, cut, fallback);
        else forget(model, cut, fallback);
      }
    }
  }
  const net = tfjsModel(model, cut);
  const inputShape = net.inputs[0]!.shape.slice(1) as number[];
  const outputShape = net.outputs[0]!.shape.slice(1) as number[];
  const step = async (batch: Float32Array, count: number) => {
    const y = tf.tidy(() => net.predict(tf.tensor(batch, [count, ...inputShape])) as tf.Tensor);
    try {
      return (await y.data()) as Float32Array;
    } finally {
      y.dispose();
    }
  };
  try {
    // Fresh buffers: some tfjs backends (cpu) keep the array a tensor was made from.
    return { ...(await run(images, inputShape, outputShape, batchSize, options.onBatch, tfjsEngine(), step, 'fresh')), fallback };
  } catch (error) {
    // tfjs is the last resort: its error goes to the caller as tfjs threw it.
    throw error instanceof EngineFailure && error.cause instanceof Error ? error.cause : error;
  }
}

/**
 * The engine forwardImages will use for `model` up to `cut` with the current settings — what
 * a cache of its outputs must be keyed by. For the whole model the session it opens is kept
 * for the run that follows; for a cut only the verdict is kept (the run itself goes through a
 * rebuilt bottom model, see training/stage.ts), so a base does not hold a session per cut.
 */
export async function frozenEngine(model: tf.LayersModel, cut?: string, choice: EngineChoice = engineChoice()): Promise<EngineName> {
  if (choice === 'tfjs') return tfjsEngine();
  const key = normaliseCut(model, cut);
  const open = key === undefined || sessions.get(model)?.has(key) ? await ortSession(model, key) : await cutVerdict(model, key);
  return 'reason' in open ? tfjsEngine() : 'onnxruntime';
}

export function tfjsEngine(): EngineName {
  return `tfjs-${activeBackend() ?? tf.getBackend()}`;
}

/** ML_INFERENCE_ENGINE: 'auto' (default) or 'tfjs' (never ONNX Runtime). */
export function engineChoice(env: Record<string, string | undefined> = process.env): EngineChoice {
  const raw = env.ML_INFERENCE_ENGINE || 'auto';
  if (raw !== 'auto' && raw !== 'tfjs') throw new Error(`ML_INFERENCE_ENGINE must be 'auto' or 'tfjs' (got '${raw}')`);
  return raw;
}

/** The engine itself failed on a batch (not the caller's input, not onBatch). */
class EngineFailure extends Error {}

async function run(
  images: ImageBatch,
  inputShape: number[],
  outputShape: number[],
  batchSize: number,
  onBatch: ForwardOptions['onBatch'],
  engine: EngineName,
  step: (batch: Float32Array, count: number) => Promise<Float32Array>,
  /**
   * 'reused': every batch is packed into one buffer, for a step that is done with it when it
   * returns. A fresh buffer per batch costs its page faults each time: at batch 16 on MobileNetV2
   * (9.6 MB a batch), 7 % of an ONNX Runtime embedding pass. 'fresh': for a step that keeps it.
   */
  buffers: 'fresh' | 'reused',
): Promise<Omit<ForwardResult, 'fallback'>> {
  const pixels = product(inputShape);
  const width = product(outputShape);
  images.forEach((img, i) => {
    if (img.length !== pixels) throw new Error(`image ${i} has ${img.length} values; expected ${inputShape.join('×')} = ${pixels}`);
  });
  const n = images.length;
  const output = new Float32Array(n * width);
  const reused = buffers === 'reused' ? new Float32Array(Math.min(batchSize, n) * pixels) : null;
  for (let start = 0; start < n; start += batchSize) {
    const count = Math.min(batchSize, n - start);
    const batch = reused ? reused.subarray(0, count * pixels) : new Float32Array(count * pixels);
    for (let j = 0; j < count; j++) {
      const img = images[start + j]!;
      if (img instanceof Float32Array) batch.set(img, j * pixels);
      else for (let p = 0, o = j * pixels; p < pixels; p++) batch[o + p] = img[p]! / 255;
    }
    let y: Float32Array;
    try {
      y = await step(batch, count);
    } catch (error) {
      if (error instanceof InferenceWorkerLost) throw error;
      throw new EngineFailure((error as Error).message, { cause: error });
    }
    if (y.length !== count * width) throw new EngineFailure(`${engine}: model produced ${y.length} values for ${count} images, expected ${count} × ${width}`);
    output.set(y, start * width);
    await onBatch?.(start + count, n);
    await yieldToEventLoop();
  }
  return { output, shape: outputShape, engine };
}

// ---- caches, per model object and cut

interface SessionEntry {
  /** The weight tensors the session was converted from; a training step replaces them. */
  weights: object[];
  session: Promise<OrtSession | { reason: string }>;
}

const sessions = new WeakMap<tf.LayersModel, Map<string, SessionEntry>>();
const truncated = new WeakMap<tf.LayersModel, Map<string, tf.LayersModel>>();

function ortSession(model: tf.LayersModel, cut: string | undefined): Promise<OrtSession | { reason: string }> {
  const key = cut ?? '';
  const byCut = sessions.get(model) ?? new Map<string, SessionEntry>();
  sessions.set(model, byCut);
  const weights = weightIds(model);
  const entry = byCut.get(key);
  if (entry && sameIds(entry.weights, weights)) return entry.session;
  if (entry) void release(entry);
  const session = openSession(model, cut);
  byCut.set(key, { weights, session });
  return session;
}

const verdicts = new WeakMap<tf.LayersModel, Map<string, { weights: object[]; verdict: Promise<{ ok: true } | { reason: string }> }>>();

/** Whether a session opens for `model` up to `cut`; the session is released at once. */
function cutVerdict(model: tf.LayersModel, cut: string): Promise<{ ok: true } | { reason: string }> {
  const byCut = verdicts.get(model) ?? new Map<string, { weights: object[]; verdict: Promise<{ ok: true } | { reason: string }> }>();
  verdicts.set(model, byCut);
  const weights = weightIds(model);
  const entry = byCut.get(cut);
  if (entry && sameIds(entry.weights, weights)) return entry.verdict;
  const verdict = openSession(model, cut).then(async (s) => {
    if ('reason' in s) return s;
    await s.session.release();
    return { ok: true as const };
  });
  byCut.set(cut, { weights, verdict });
  return verdict;
}

interface PooledEntry {
  weights: object[];
  model: PooledModel | { reason: string };
}

const pooled = new WeakMap<tf.LayersModel, Map<string, PooledEntry>>();

/**
 * The model (up to `cut`) converted for an inference pool, once per model and weights. Whether
 * ONNX Runtime takes it shows on its first run, in a worker; if not, forgetPooled keeps it on tfjs.
 */
function pooledModel(model: tf.LayersModel, cut: string | undefined): PooledModel | { reason: string } {
  const key = cut ?? '';
  const byCut = pooled.get(model) ?? new Map<string, PooledEntry>();
  pooled.set(model, byCut);
  const weights = weightIds(model);
  const entry = byCut.get(key);
  if (entry && sameIds(entry.weights, weights)) return entry.model;
  const conversion = convertToOnnx(model, cut === undefined ? {} : { cut });
  const converted = conversion.convertible
    ? {
        key: createHash('sha256').update(conversion.bytes).digest('hex'),
        bytes: conversion.bytes,
        inputName: conversion.inputName,
        outputName: conversion.outputName,
        inputShape: conversion.inputShape,
        outputShape: conversion.outputShape,
      }
    : { reason: conversion.reason };
  byCut.set(key, { weights, model: converted });
  return converted;
}

function forgetPooled(model: tf.LayersModel, cut: string | undefined, reason: string): void {
  const entry = pooled.get(model)?.get(cut ?? '');
  if (entry) entry.model = { reason };
}

/** After a failed run: this model and cut stay on tfjs. */
function forget(model: tf.LayersModel, cut: string | undefined, reason: string): void {
  const byCut = sessions.get(model);
  const entry = byCut?.get(cut ?? '');
  if (!byCut || !entry) return;
  void release(entry);
  byCut.set(cut ?? '', { weights: entry.weights, session: Promise.resolve({ reason }) });
}

async function release(entry: SessionEntry): Promise<void> {
  const s = await entry.session;
  if (!('reason' in s)) await s.session.release().catch(() => {});
}

/** The tfjs model for a cut: the same layers, outputs taken at the cut layer. Holds no weights of its own. */
function tfjsModel(model: tf.LayersModel, cut: string | undefined): tf.LayersModel {
  if (cut === undefined) return model;
  const byCut = truncated.get(model) ?? new Map<string, tf.LayersModel>();
  truncated.set(model, byCut);
  let net = byCut.get(cut);
  if (!net) {
    net = tf.model({ inputs: model.inputs, outputs: model.getLayer(cut).output as tf.SymbolicTensor, name: `${model.name}_to_${cut}` });
    byCut.set(cut, net);
  }
  return net;
}

/** The cut, or undefined when it is the model's own output layer. */
function normaliseCut(model: tf.LayersModel, cut: string | undefined): string | undefined {
  return cut === undefined || cut === model.outputs[0]?.sourceLayer.name ? undefined : cut;
}

/** tfjs replaces a variable's data id whenever it is assigned, so the ids say whether weights changed. */
function weightIds(model: tf.LayersModel): object[] {
  return model.weights.map((w) => w.read().dataId);
}

function sameIds(a: object[], b: object[]): boolean {
  return a.length === b.length && a.every((id, i) => id === b[i]);
}

function product(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
