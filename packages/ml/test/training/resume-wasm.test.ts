// One crash-and-resume case on the wasm backend (the service's default), with conv layers
// training through the gradient kernels of src/wasm-gradients.ts. Its own file: a process
// initialises one backend (backend.ts).
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../../src/index.ts';
import { trainClassifier, type TrainClassifierOptions } from '../../src/training/index.ts';
import { colourData, hp, layerValues, maxAbsDiff, tinyResidualBase } from './helpers.ts';

const SIZE = 12;

beforeAll(async () => {
  await initBackend('wasm');
});

describe('resume on wasm', () => {
  it('fine_tune with adam, dropout and augmentation: crashed after epoch 2 of 4 and resumed equals the uninterrupted run (1e-5)', async () => {
    expect(tf.getBackend()).toBe('wasm');
    const base = tinyResidualBase(SIZE);
    const o: TrainClassifierOptions = {
      strategy: 'fine_tune',
      base,
      inputSize: SIZE,
      train: colourData(25, SIZE, 1, 3),
      val: colourData(9, SIZE, 2, 3),
      labels: ['red', 'green', 'blue'],
      hyperparameters: hp({
        epochs: 4,
        optimizer: 'adam',
        unfreeze: { topLayers: 4 },
        head: { hiddenUnits: [6], activation: 'relu', dropout: 0.3 },
        augmentation: { flipHorizontal: true, rotationDegrees: 10, zoom: 0, brightness: 0.1, randomCrop: 0 },
        lrSchedule: { type: 'cosine' },
      }),
    };
    const start = tf.memory().numTensors;
    const reference = await trainClassifier(o);

    let blob: Uint8Array | undefined;
    await expect(
      trainClassifier({
        ...o,
        onEpochEnd: async (e) => {
          if (e.epoch < 2) return;
          blob = await e.state();
          throw new Error('killed');
        },
      }),
    ).rejects.toThrow('killed');
    const seen: number[] = [];
    const resumed = await trainClassifier({ ...o, resumeFrom: blob!, onEpochEnd: async (e) => void seen.push(e.epoch) });

    expect(seen).toEqual([3, 4]);
    const strip = (h: typeof reference.history) => h.map(({ durationMs: _, ...r }) => r);
    expect(strip(resumed.history)).toEqual(strip(reference.history));
    expect(resumed.bestEpoch).toBe(reference.bestEpoch);
    const [a, b] = [layerValues(reference.model), layerValues(resumed.model)];
    expect([...b.keys()]).toEqual([...a.keys()]);
    for (const [name, ws] of a) ws.forEach((w, i) => expect(maxAbsDiff(w, b.get(name)![i]!), name).toBeLessThanOrEqual(1e-5));
    reference.model.dispose();
    resumed.model.dispose();
    expect(tf.memory().numTensors).toBe(start);
  });
});
