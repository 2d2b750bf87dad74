import { tf } from './backend.ts';

export interface Prediction {
  label: string;
  score: number;
  /** The topK classes, highest score first (top[0] is label/score). */
  top: { label: string; score: number }[];
}

/**
 * Classifies decoded images (inputSize×inputSize×3 floats in [0, 1]) with a composed model
 * whose output is class probabilities in `labels` order.
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
  const k = Math.max(1, Math.min(topK, labels.length));
  const results: Prediction[] = [];
  for (let start = 0; start < images.length; start += batchSize) {
    const count = Math.min(batchSize, images.length - start);
    const batch = new Float32Array(count * pixels);
    for (let j = 0; j < count; j++) {
      const img = images[start + j]!;
      if (img.length !== pixels) throw new Error(`image ${start + j} has ${img.length} values; expected ${pixels}`);
      batch.set(img, j * pixels);
    }
    const probs = tf.tidy(() => model.predict(tf.tensor4d(batch, [count, inputSize, inputSize, 3])) as tf.Tensor);
    let values: Float32Array;
    try {
      if (probs.shape.length !== 2 || probs.shape[1] !== labels.length) {
        throw new Error(`model outputs shape [${probs.shape}] but ${labels.length} labels were given`);
      }
      values = (await probs.data()) as Float32Array;
    } finally {
      probs.dispose();
    }
    const c = labels.length;
    for (let j = 0; j < count; j++) {
      const row = Array.from(values.subarray(j * c, (j + 1) * c), (score, i) => ({ label: labels[i]!, score, i }));
      row.sort((a, b) => b.score - a.score || a.i - b.i);
      const top = row.slice(0, k).map(({ label, score }) => ({ label, score }));
      results.push({ label: top[0]!.label, score: top[0]!.score, top });
    }
  }
  return results;
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
  const chunks: Float32Array[] = [];
  for (let start = 0; start < images.length; start += batchSize) {
    const count = Math.min(batchSize, images.length - start);
    const batch = new Uint8Array(count * pixels);
    for (let j = 0; j < count; j++) batch.set(images[start + j]!, j * pixels);
    const probs = tf.tidy(
      () => model.predict(tf.tensor4d(batch, [count, inputSize, inputSize, 3], 'int32').toFloat().div(255)) as tf.Tensor,
    );
    try {
      chunks.push((await probs.data()) as Float32Array);
    } finally {
      probs.dispose();
    }
    await new Promise((resolve) => setImmediate(resolve)); // let IPC and timers through
  }
  const out = new Float32Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}
