// The real memory ceiling: on the wasm backend (4 GiB heap) a full MobileNetV2 step at batch 16
// used to abort ("memory access out of bounds"), scratch with "Aborted()". With micro-batching
// one step at batch 32 trains, the optimizer seeing the whole batch's mean gradient. One step
// each (32 images, batchSize 32, 1 epoch): ~40 s for full and ~60 s for scratch on one core.
// Its own file: a process initialises one backend (backend.ts).
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, loadBaseModel, tf } from '../../src/index.ts';
import { trainClassifier } from '../../src/training/index.ts';
import type { BaseModel } from '../../src/zoo.ts';
import { colourData, hp } from './helpers.ts';

let base: BaseModel;
const train = colourData(32, 224, 11);

beforeAll(async () => {
  await initBackend('wasm');
  base = await loadBaseModel('mobilenet_v2');
});

describe('micro-batching on wasm, mobilenet_v2 at batchSize 32', () => {
  for (const strategy of ['full', 'scratch'] as const) {
    it(`${strategy}: one step of 32 images trains in micro-batches that fit the heap`, { timeout: 600_000 }, async () => {
      expect(tf.getBackend()).toBe('wasm');
      const start = tf.memory().numTensors;
      const steps: number[] = [];
      const r = await trainClassifier({
        strategy,
        base,
        inputSize: 224,
        train,
        val: null,
        labels: ['red', 'green'],
        hyperparameters: hp({ epochs: 1, batchSize: 32 }),
        onEpochEnd: async (e) => void steps.push(e.epoch),
      });
      expect(steps).toEqual([1]);
      expect(r.microBatchSize).toBeGreaterThanOrEqual(1);
      expect(r.microBatchSize).toBeLessThan(32);
      expect(Number.isFinite(r.history[0]!.trainLoss)).toBe(true);
      r.model.dispose();
      expect(tf.memory().numTensors).toBe(start);
    });
  }
});
