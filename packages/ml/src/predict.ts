import type { tf } from './backend.ts';
import { applyTemperature } from './calibration.ts';
import { forwardImages, type ForwardResult } from './inference/runner.ts';

/** The label a prediction gets when its top score is below the confidence threshold. */
export const UNKNOWN_LABEL = 'unknown';

export interface Scoring {
  /** Temperature fitted on the validation split: scores are softmax(logits / T). Default 1. */
  temperature?: number;
  /** Below this top score the prediction's label is UNKNOWN_LABEL (its `top` stays). */
  threshold?: number | null;
}

export interface Prediction {
  /** The top class, or UNKNOWN_LABEL when its score is below the threshold. */
  label: string;
  /** The top class's score (also when the label is UNKNOWN_LABEL). */
  score: number;
  /** The topK classes, highest score first (top[0] is label/score). */
  top: { label: string; score: number }[];
}

/**
 * Classifies decoded images (inputSize×inputSize×3 floats in [0, 1]) with a composed model
 * whose output is class probabilities in `labels` order. ONNX Runtime or tfjs runs it (see
 * inference/runner.ts). `scoring` calibrates the scores and applies a confidence threshold.
 */
export async function predictImages(
  model: tf.LayersModel,
  images: Float32Array[],
  inputSize: number,
  labels: string[],
  topK = 3,
  batchSize = 16,
  scoring: Scoring = {},
): Promise<Prediction[]> {
  const pixels = inputSize * inputSize * 3;
  images.forEach((img, i) => {
    if (img.length !== pixels) throw new Error(`image ${i} has ${img.length} values; expected ${pixels}`);
  });
  return scoreOutputs(await forwardImages(model, images, { batchSize }), labels, topK, scoring);
}

/**
 * Predictions from a forward pass's outputs (one row of class probabilities per image, in
 * `labels` order). Kept apart from the pass so that one pass over several requests' images (the
 * API's micro-batches) can be scored per request, each with its own threshold.
 */
export function scoreOutputs({ output, shape }: Pick<ForwardResult, 'output' | 'shape'>, labels: string[], topK = 3, scoring: Scoring = {}): Prediction[] {
  if (shape.length !== 1 || shape[0] !== labels.length) throw new Error(`model outputs shape [N, ${shape}] but ${labels.length} labels were given`);
  const k = Math.max(1, Math.min(topK, labels.length));
  const c = labels.length;
  const values = applyTemperature(output, c, scoring.temperature ?? 1);
  const threshold = scoring.threshold ?? null;
  return Array.from({ length: output.length / c }, (_, j) => {
    const row = Array.from(values.subarray(j * c, (j + 1) * c), (score, i) => ({ label: labels[i]!, score, i }));
    row.sort((a, b) => b.score - a.score || a.i - b.i);
    const top = row.slice(0, k).map(({ label, score }) => ({ label, score }));
    const { label, score } = top[0]!;
    return { label: threshold !== null && score < threshold ? UNKNOWN_LABEL : label, score, top };
  });
}

/**
 * Class probabilities (N × C, row-major) for RGB uint8 images, in batches: what the
 * evaluation report is computed from.
 */
export async function predictProbabilities(
  model: tf.LayersModel,
  images: Uint8Array[],
  inputSize: number,
  batchSize = 16,
): Promise<Float32Array> {
  const pixels = inputSize * inputSize * 3;
  images.forEach((img, i) => {
    if (img.length !== pixels) throw new Error(`image ${i} has ${img.length} bytes; expected ${pixels}`);
  });
  return (await forwardImages(model, images, { batchSize })).output;
}
