import { forwardImages } from './inference/runner.ts';
import type { BaseModel } from './zoo.ts';

/**
 * Runs the frozen base over decoded images (each size×size×3 floats in [0, 1], as from
 * decodeImage at base.info.inputSize) and returns the embeddings row-major, N × embeddingSize.
 * ONNX Runtime or tfjs runs it (see inference/runner.ts); the event loop gets a turn between
 * batches so BullMQ lock renewal and progress events run.
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
  for (const [i, img] of images.entries()) {
    if (img.length !== pixels) throw new Error(`image ${i} has ${img.length} values; expected ${size}×${size}×3 = ${pixels}`);
  }
  const result = await forwardImages(base.model, images, { batchSize, ...(onBatch ? { onBatch } : {}) });
  if (result.shape.length !== 1 || result.shape[0] !== dim) throw new Error(`base produced shape [N, ${result.shape}], expected [N, ${dim}]`);
  return result.output;
}
