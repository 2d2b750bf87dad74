// Crash and resume: a run that dies after epoch k and is resumed from the state() taken at k
// ends with the same model, history and best epoch as a run that never stopped (cpu backend,
// like strategies.test.ts). And a blob from other options, or a damaged one, is refused.
import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../../src/backend.ts';
import { trainClassifier, TrainingStateError, type EpochEvent, type TrainClassifierOptions, type TrainClassifierResult } from '../../src/training/index.ts';
import { colourData, hp, layerValues, maxAbsDiff, tinyResidualBase } from './helpers.ts';

const SIZE = 12;
const TOLERANCE = 1e-5;
let base: ReturnType<typeof tinyResidualBase>;
// Three classes, 9/8/8 images: balanced class weights are not all 1.
const train = colourData(25, SIZE, 1, 3);
const val = colourData(9, SIZE, 2, 3);
const labels = ['red', 'green', 'blue'];

beforeAll(async () => {
  await tf.setBackend('cpu');
  base = tinyResidualBase(SIZE);
});

type Hp = Parameters<typeof hp>[0];
const options = (strategy: TrainClassifierOptions['strategy'], h: Hp): TrainClassifierOptions => ({
  strategy,
  base,
  inputSize: SIZE,
  train,
  val,
  labels,
  hyperparameters: hp(h),
});

class SimulatedCrash extends Error {}

/** Trains until epoch k, takes state() there, then dies (throws out of onEpochEnd) or stops gracefully (shouldStop). */
async function stateAt(o: TrainClassifierOptions, k: number, how: 'crash' | 'stop' = 'crash'): Promise<Uint8Array> {
  let blob: Uint8Array | undefined;
  let stop = false;
  const run = trainClassifier({
    ...o,
    onEpochEnd: async (e) => {
      if (e.epoch !== k) return;
      blob = await e.state();
      if (how === 'crash') throw new SimulatedCrash(`killed after epoch ${k}`);
      stop = true;
    },
    shouldStop: () => stop,
  });
  if (how === 'crash') await expect(run).rejects.toBeInstanceOf(SimulatedCrash);
  else (await run).model.dispose();
  expect(blob, `no state taken at epoch ${k}`).toBeDefined();
  return blob!;
}

async function resume(o: TrainClassifierOptions, blob: Uint8Array): Promise<{ result: TrainClassifierResult; seen: number[] }> {
  const seen: number[] = [];
  const result = await trainClassifier({ ...o, resumeFrom: blob, onEpochEnd: async (e) => void seen.push(e.epoch) });
  return { result, seen };
}

const withoutTimes = (r: TrainClassifierResult) => r.history.map(({ durationMs: _, ...rest }) => rest);

/** The worst per-weight difference between two models, checking they have the same layers and shapes. */
function weightDiff(a: tf.LayersModel, b: tf.LayersModel): number {
  const [va, vb] = [layerValues(a), layerValues(b)];
  expect([...vb.keys()]).toEqual([...va.keys()]);
  let worst = 0;
  for (const [name, ws] of va) {
    ws.forEach((w, i) => {
      const other = vb.get(name)![i]!;
      expect(other.length, `${name}[${i}]`).toBe(w.length);
      worst = Math.max(worst, maxAbsDiff(w, other));
    });
  }
  return worst;
}

function expectSameRun(resumed: TrainClassifierResult, reference: TrainClassifierResult) {
  expect(withoutTimes(resumed)).toEqual(withoutTimes(reference));
  expect([resumed.bestEpoch, resumed.epochsRun, resumed.stoppedEarly, resumed.stopped, resumed.trainableLayers]).toEqual([
    reference.bestEpoch,
    reference.epochsRun,
    reference.stoppedEarly,
    reference.stopped,
    reference.trainableLayers,
  ]);
  expect(weightDiff(resumed.model, reference.model)).toBeLessThanOrEqual(TOLERANCE);
}

/** Runs `o` uninterrupted, then crashed at each k and resumed; everything must match, nothing may leak. */
async function crashResumeMatches(o: TrainClassifierOptions, ks: number[], expectRun?: (r: TrainClassifierResult) => void, how: 'crash' | 'stop' = 'crash') {
  const start = tf.memory().numTensors;
  const reference = await trainClassifier(o);
  expectRun?.(reference);
  const n = reference.epochsRun;
  for (const k of ks) {
    expect(k).toBeLessThanOrEqual(n);
    const blob = await stateAt(o, k, how);
    const { result, seen } = await resume(o, blob);
    expect(seen, `crash after ${k}: onEpochEnd of the resumed run`).toEqual(Array.from({ length: n - k }, (_, i) => k + 1 + i));
    expectSameRun(result, reference);
    result.model.dispose();
  }
  reference.model.dispose();
  expect(tf.memory().numTensors).toBe(start);
}

describe('resume after a crash gives the uninterrupted result', () => {
  it('feature_extraction: adam, cosine schedule, a hidden layer with dropout 0.3', async () => {
    const o = options('feature_extraction', { epochs: 4, optimizer: 'adam', lrSchedule: { type: 'cosine' }, head: { hiddenUnits: [8], activation: 'relu', dropout: 0.3 } });
    await crashResumeMatches(o, [1, 2, 3]);
  });

  it('fine_tune: nesterov momentum, step schedule, augmentation, balanced class weights', async () => {
    const o = options('fine_tune', {
      epochs: 3,
      optimizer: 'sgd',
      momentum: 0.9,
      nesterov: true,
      unfreeze: { topLayers: 4 },
      lrSchedule: { type: 'step', stepSize: 1, gamma: 0.5 },
      augmentation: { flipHorizontal: true, rotationDegrees: 15, zoom: 0.1, brightness: 0.1, randomCrop: 0.1 },
      classWeights: 'balanced',
    });
    await crashResumeMatches(o, [1, 2], (r) => expect(r.trainableLayers).toEqual(['top_conv', 'top_bn']));
  });

  it('progressive_unfreezing, 3 explicit stages: crashes at both stage boundaries (2, 5) and inside stage 2 (4)', async () => {
    const o = options('progressive_unfreezing', {
      optimizer: 'adam',
      lrSchedule: { type: 'exponential', gamma: 0.7 },
      stages: [
        { unfreeze: { fromLayer: 'top_conv' }, epochs: 2, learningRate: 0.02 },
        { unfreeze: { fromLayer: 'b1_conv' }, epochs: 3 },
        { unfreeze: { topLayers: 100 }, epochs: 2, learningRate: 0.005 },
      ],
    });
    await crashResumeMatches(o, [2, 4, 5], (r) => expect(r.history.map((h) => h.stage)).toEqual([1, 1, 2, 2, 2, 3, 3]));
  });

  it('full: adamw with weight decay and a warmup epoch (crash during and after warmup)', async () => {
    const o = options('full', { epochs: 3, optimizer: 'adamw', weightDecay: 0.05, warmupEpochs: 1, l2: 0.001, labelSmoothing: 0.1 });
    await crashResumeMatches(o, [1, 2]);
  });

  it('scratch: rmsprop, BN in training mode', async () => {
    const o = options('scratch', { epochs: 3, optimizer: 'rmsprop', learningRate: 0.005 });
    await crashResumeMatches(o, [1, 2]);
  });

  it('a graceful stop (shouldStop) after epoch k resumes the same way as a crash', async () => {
    const o = options('fine_tune', { epochs: 3, optimizer: 'sgd', momentum: 0.9, unfreeze: { fromLayer: 'top_conv' }, head: { hiddenUnits: [4], activation: 'relu', dropout: 0.5 } });
    await crashResumeMatches(o, [1, 2], undefined, 'stop');
  });
});

describe('resume and early stopping', () => {
  // minDelta 5 on val_loss: nothing ever improves enough, so a stage stops at its epoch 1 + patience.
  const es = { monitor: 'val_loss' as const, patience: 2, minDelta: 5 };
  const staged = () =>
    options('progressive_unfreezing', {
      optimizer: 'sgd',
      momentum: 0.9,
      earlyStopping: es,
      stages: [
        { unfreeze: { fromLayer: 'top_conv' }, epochs: 5 },
        { unfreeze: { topLayers: 100 }, epochs: 4 },
      ],
    });
  const stagedRun = (r: TrainClassifierResult) => {
    expect(r.history.map((h) => h.stage)).toEqual([1, 1, 1, 2, 2, 2]);
    expect(r.stoppedEarly).toBe(true);
  };

  it('a stage that stopped early at the crash epoch is not continued; one that stops after the crash stops at the same epoch', async () => {
    // 2: stage 1 will stop after epoch 3 (the counters must survive); 3: the very epoch stage 1 stopped;
    // 4, 5: inside stage 2, after stage 1 stopped early; 6: stage 2 (the last) stopped early: nothing left to train.
    await crashResumeMatches(staged(), [2, 3, 4, 5, 6], stagedRun);
  });

  it('single stage: stopping after the crash point, and at it', async () => {
    const o = options('feature_extraction', { epochs: 10, earlyStopping: es });
    await crashResumeMatches(o, [1, 2, 3], (r) => expect([r.epochsRun, r.stoppedEarly]).toEqual([3, true]));
  });
});

describe('resume edge cases', () => {
  it('a state taken at the last epoch rebuilds the best model and returns without training', async () => {
    const o = options('fine_tune', { epochs: 2, unfreeze: { topLayers: 4 } });
    const start = tf.memory().numTensors;
    const reference = await trainClassifier(o);
    let blob: Uint8Array | undefined;
    const again = await trainClassifier({ ...o, onEpochEnd: async (e) => void (e.epoch === 2 && (blob = await e.state())) });
    let computed = 0;
    const { result, seen } = await resume({ ...o, frozenFeatures: async (_, compute) => (computed++, compute()), shouldStop: () => true }, blob!);
    expect(seen).toEqual([]);
    expect(computed).toBe(0);
    expectSameRun(result, reference);
    for (const r of [reference, again, result]) r.model.dispose();
    expect(tf.memory().numTensors).toBe(start);
  });

  it('prototype: state() says done; resuming recomputes the prototypes and calls no onEpochEnd', async () => {
    const o = options('prototype', {});
    const start = tf.memory().numTensors;
    let blob: Uint8Array | undefined;
    const reference = await trainClassifier({ ...o, onEpochEnd: async (e) => void (blob = await e.state()) });
    const { result, seen } = await resume(o, blob!);
    expect(seen).toEqual([]);
    expectSameRun(result, reference);
    // A prototype state does not resume another strategy.
    await expect(trainClassifier({ ...options('feature_extraction', {}), resumeFrom: blob! })).rejects.toThrow(/strategy: "prototype" in the state, "feature_extraction" here/);
    for (const r of [reference, result]) r.model.dispose();
    expect(tf.memory().numTensors).toBe(start);
  });

  it('state() is refused once its onEpochEnd has returned', async () => {
    let event: EpochEvent | undefined;
    const r = await trainClassifier({ ...options('feature_extraction', { epochs: 2 }), onEpochEnd: async (e) => void (event ??= e) });
    await expect(event!.state()).rejects.toThrow(/after its onEpochEnd returned/);
    r.model.dispose();
  });
});

describe('resume refuses blobs it cannot use, before training anything', () => {
  let o: TrainClassifierOptions;
  let blob: Uint8Array;
  beforeAll(async () => {
    o = options('fine_tune', { epochs: 3, optimizer: 'adam', unfreeze: { topLayers: 4 } });
    blob = await stateAt(o, 1);
  });

  async function refused(opts: TrainClassifierOptions, message: RegExp) {
    const start = tf.memory().numTensors;
    const events: number[] = [];
    const error = await trainClassifier({ ...opts, onEpochEnd: async (e) => void events.push(e.epoch) }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TrainingStateError);
    expect((error as Error).message).toMatch(message);
    expect(events).toEqual([]);
    expect(tf.memory().numTensors).toBe(start);
  }

  it('a blob from a run with other hyperparameters, labels, split sizes or strategy', async () => {
    await refused({ ...o, hyperparameters: { ...o.hyperparameters, learningRate: 0.02 }, resumeFrom: blob }, /other options.*hyperparameters\.learningRate: 0\.01 in the state, 0\.02 here/);
    await refused({ ...o, hyperparameters: { ...o.hyperparameters, seed: 7 }, resumeFrom: blob }, /hyperparameters\.seed/);
    await refused({ ...o, labels: ['red', 'green', 'cyan'], resumeFrom: blob }, /labels/);
    const fewer = { images: train.images.slice(0, 24), labels: train.labels.slice(0, 24) };
    await refused({ ...o, train: fewer, resumeFrom: blob }, /train: 25 in the state, 24 here/);
    await refused({ ...o, val: null, resumeFrom: blob }, /val: 9 in the state, 0 here/);
    await refused({ ...o, strategy: 'full', resumeFrom: blob }, /strategy/);
    // Same architecture, another base: its weights are not the ones the state continued.
    await refused({ ...o, base: { ...o.base, info: { ...o.base.info, id: 'other_base' } }, resumeFrom: blob }, /base: "tiny" in the state, "other_base" here/);
  });

  it('a corrupted, truncated or foreign blob', async () => {
    const flipped = blob.slice();
    flipped[Math.floor(blob.length * 0.6)]! ^= 0x40; // inside the tensor bytes
    await refused({ ...o, resumeFrom: flipped }, /checksum mismatch/);
    await refused({ ...o, resumeFrom: blob.subarray(0, blob.length - 100) }, /truncated or corrupted/);
    await refused({ ...o, resumeFrom: blob.subarray(0, 10) }, /invalid training state/);
    await refused({ ...o, resumeFrom: new Uint8Array(0) }, /not a training-state blob/);
    await refused({ ...o, resumeFrom: new TextEncoder().encode('{"epoch": 1}'.padEnd(64)) }, /not a training-state blob/);
    // The intact blob still works after all that.
    const { result, seen } = await resume(o, blob);
    expect(seen).toEqual([2, 3]);
    result.model.dispose();
  });
});
