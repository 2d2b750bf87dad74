import { tf } from './backend.ts';
import type { BaseModel } from './zoo.ts';

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Runs the frozen base over decoded images (each size×size×3 floats in [0, 1], as from
 * decodeImage at base.info.inputSize) and returns the embeddings row-major, N × embeddingSize.
 * Yields to the event loop between batches so BullMQ lock renewal and progress events run.
 */
export async function computeEmbeddings(
  base: BaseModel,
  images: Float32Array[],
  batchSize: number,
  onBatch?: (done: number, total: number) => void | Promise<void>,
): Promise<Float32Array> {
  const size = base.info.inputSize;
  const pixels = size * size * 3;
  const dim = base.info.embeddingSize;
  const n = images.length;
  const out = new Float32Array(n * dim);
  const bs = Math.max(1, Math.floor(batchSize));
  for (const [i, img] of images.entries()) {
    if (img.length !== pixels) throw new Error(`image ${i} has ${img.length} values; expected ${size}×${size}×3 = ${pixels}`);
  }
  for (let start = 0; start < n; start += bs) {
    const count = Math.min(bs, n - start);
    const batch = new Float32Array(count * pixels);
    for (let j = 0; j < count; j++) batch.set(images[start + j]!, j * pixels);
    const y = tf.tidy(() => base.model.predict(tf.tensor4d(batch, [count, size, size, 3])) as tf.Tensor);
    try {
      if (y.shape[0] !== count || y.shape[1] !== dim) throw new Error(`base produced shape [${y.shape}], expected [${count}, ${dim}]`);
      out.set(await y.data<'float32'>(), start * dim);
    } finally {
      y.dispose();
    }
    await onBatch?.(start + count, n);
    await yieldToEventLoop();
  }
  return out;
}
