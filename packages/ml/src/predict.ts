import type { tf } from './backend.ts';
import { forwardImages } from './inference/runner.ts';

export interface Prediction {
  label: string;
  score: number;
  /** The topK classes, highest score first (top[0] is label/score). */
  top: { label: string; score: number }[];
}

/**
 * Classifies decoded images (inputSize×inputSize×3 floats in [0, 1]) with a composed model
 * whose output is class probabilities in `labels` order. ONNX Runtime or tfjs runs it (see
 * inference/runner.ts).
 */
export async function predictImages(
  model: tf.LayersModel,
  images: Float32Array[],
  inputSize: number,
  labels: string[],
  topK = 3,
  batchSize = 16,
): Promise<Prediction[]> {
  const pixels = inputSize * inputSize * 3;
  images.forEach((img, i) => {
    if (img.length !== pixels) throw new Error(`image ${i} has ${img.length} values; expected ${pixels}`);
  });
  const { output: values, shape } = await forwardImages(model, images, { batchSize });
  if (shape.length !== 1 || shape[0] !== labels.length) throw new Error(`model outputs shape [N, ${shape}] but ${labels.length} labels were given`);
  const k = Math.max(1, Math.min(topK, labels.length));
  const c = labels.length;
  return images.map((_, j) => {
    const row = Array.from(values.subarray(j * c, (j + 1) * c), (score, i) => ({ label: labels[i]!, score, i }));
    row.sort((a, b) => b.score - a.score || a.i - b.i);
    const top = row.slice(0, k).map(({ label, score }) => ({ label, score }));
    return { label: top[0]!.label, score: top[0]!.score, top };
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
