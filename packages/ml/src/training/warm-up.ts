// A warm training child (the worker's) trains once before it has a job, on nothing real.
import { DEFAULT_HYPERPARAMETERS } from '@finetune/core';
import { mulberry32 } from '../random.ts';
import type { BaseModel } from '../zoo.ts';
import { trainClassifier } from './train-classifier.ts';

const IMAGES = 16;

/**
 * A throwaway `feature_extraction` run of two epochs on random embeddings of `base`, through
 * the code a job's head training runs: the head, the optimizer, the epoch loop, evaluation. The
 * first use of each kernel costs extra (on wasm its code is compiled, then tiered up); a
 * process's first epoch would otherwise pay for it. The base itself never runs: the features are
 * given, and no image exists to decode.
 */
export async function warmUpTraining(base: BaseModel): Promise<void> {
  const random = mulberry32(1);
  const features = () => Float32Array.from({ length: IMAGES * base.info.embeddingSize }, () => random());
  const split = () => ({ images: [], labels: Int32Array.from({ length: IMAGES }, (_, i) => i % 2) });
  const result = await trainClassifier({
    strategy: 'feature_extraction',
    base,
    inputSize: base.info.inputSize,
    train: split(),
    val: split(),
    labels: ['a', 'b'],
    hyperparameters: { ...DEFAULT_HYPERPARAMETERS, epochs: 2, batchSize: 8 },
    frozenFeatures: async () => features(),
    loadImages: async () => {
      throw new Error('warmUpTraining has no images to decode');
    },
  });
  result.model.dispose();
}
