// The training-state blob on its own: round trip, refusal of damaged or foreign blobs, the
// fingerprint. No tfjs.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  checkRun,
  decodeTrainingState,
  encodeTrainingState,
  packBlob,
  runFingerprint,
  TRAINING_STATE_FORMAT,
  TrainingStateError,
  unpackBlob,
  type TensorData,
  type TrainingState,
} from '../../src/training/training-state.ts';
import { hp } from './helpers.ts';

const f32 = (shape: number[], values: number[]): TensorData => ({ dtype: 'float32', shape, data: Float32Array.from(values) });

function sampleState(): TrainingState {
  const report = (epoch: number, trainLoss: number) => ({
    epoch,
    stage: 1,
    trainLoss,
    trainAcc: 0.5,
    valLoss: null,
    valAcc: null,
    learningRate: 0.01,
    baseLearningRate: 0.001,
    durationMs: 12.5,
    isBest: epoch === 1,
    trainableLayers: ['top_conv', 'top_bn'],
  });
  return {
    run: { base: 'tiny', strategy: 'progressive_unfreezing', hyperparameters: hp({ epochs: 3 }), labels: ['a', 'b'], train: 10, val: 0 },
    epoch: 2,
    stage: 0,
    stageEpoch: 2,
    stageDone: false,
    stoppedEarly: false,
    earlyStopping: { best: NaN, wait: 1 },
    random: { shuffle: 0xffffffff, augment: 0, dropout: 123456789 },
    everTrained: ['top_conv', 'top_bn'],
    best: { epoch: 1, acc: 0.5, loss: 0.6931471805599453 },
    history: [report(1, 0.7), report(2, Infinity)],
    head: new Map([['head_logits', [f32([2, 2], [1, -2, 3.5, 1e-30]), f32([2], [0, -0])]]]),
    trained: new Map([
      ['top/conv', [f32([1, 1, 1, 2], [0.25, -0.125])]],
      ['top_bn', [f32([2], [1, 1]), f32([2], [0, 0]), f32([0], []), f32([], [7])]],
    ]),
    bestWeights: new Map([['head_logits', [f32([2, 2], [9, 8, 7, 6]), f32([2], [1, 2])]]]),
    optimizers: { head: [{ dtype: 'int32', shape: [], data: Int32Array.of(6) }, f32([2, 2], [0.1, 0.2, 0.3, 0.4])], base: new Map([['top/conv', [{ dtype: 'int32', shape: [], data: Int32Array.of(6) }, f32([2], [0.5, 0.6])]]]) },
    learningRateFinder: { suggested: 0.003, chosen: 0.003, curve: [{ lr: 1e-7, loss: 2.3 }, { lr: 1.2e-7, loss: 2.25 }] },
  };
}

describe('training-state blob', () => {
  it('round-trips every field and tensor bit for bit (NaN, ±Infinity, -0, scalars, empty tensors, "/" in layer names)', () => {
    const s = sampleState();
    const blob = encodeTrainingState(s);
    const back = decodeTrainingState(blob);
    expect(back).toEqual(s);
    expect(Object.is(back.head.get('head_logits')![1]!.data[1], -0)).toBe(true);
    expect(back.earlyStopping.best).toBeNaN();
    expect(back.history[1]!.trainLoss).toBe(Infinity);
    // Decoded arrays own their memory: the blob can be dropped or reused.
    blob.fill(0);
    expect(Array.from(back.trained.get('top/conv')![0]!.data)).toEqual([0.25, -0.125]);
  });

  it('reads a blob held in a Node Buffer at an odd offset of a shared pool (as read from a file or S3)', () => {
    const blob = encodeTrainingState(sampleState());
    const pool = Buffer.alloc(blob.length + 3 + 64, 0xab);
    pool.set(blob, 3);
    const back = decodeTrainingState(pool.subarray(3, 3 + blob.length));
    expect(back).toEqual(sampleState());
  });

  it('writes little-endian tensor bytes after an 8-aligned JSON header', () => {
    const blob = packBlob({ note: 'x' }, [['t', f32([1], [1])]]);
    expect(String.fromCharCode(...blob.subarray(0, 4))).toBe('FTTS');
    const headerLength = new DataView(blob.buffer).getUint32(4, true);
    const header = JSON.parse(new TextDecoder().decode(blob.subarray(8, 8 + headerLength)));
    expect(header).toMatchObject({ format: TRAINING_STATE_FORMAT, note: 'x', tensors: [{ name: 't', dtype: 'float32', shape: [1], offset: 0, bytes: 4 }] });
    const dataStart = Math.ceil((8 + headerLength) / 8) * 8;
    expect(Array.from(blob.subarray(dataStart, dataStart + 4))).toEqual([0x00, 0x00, 0x80, 0x3f]); // 1.0f LE
    expect(blob.length).toBe(dataStart + 4 + 32);
  });

  it('refuses a truncated blob at every length, and any flipped byte (header, tensors or checksum)', () => {
    const blob = encodeTrainingState(sampleState());
    for (let len = 0; len < blob.length; len += Math.max(1, Math.floor(blob.length / 97))) {
      expect(() => decodeTrainingState(blob.subarray(0, len)), `length ${len}`).toThrow(TrainingStateError);
    }
    expect(() => decodeTrainingState(blob.subarray(0, blob.length - 1))).toThrow(/truncated or corrupted/);
    for (const at of [0, 5, 20, Math.floor(blob.length / 2), blob.length - 40, blob.length - 1]) {
      const bad = blob.slice();
      bad[at]! ^= 0x01;
      expect(() => decodeTrainingState(bad), `byte ${at}`).toThrow(TrainingStateError);
    }
    expect(() => decodeTrainingState(new Uint8Array(100))).toThrow(/not a training-state blob/);
  });

  it('refuses an intact blob whose content is inconsistent (another format, a bad manifest, a history that does not add up)', () => {
    const s = sampleState();
    const repack = (edit: (header: Record<string, unknown>, tensors: Map<string, TensorData>) => void) => {
      const { header, tensors } = unpackBlob(encodeTrainingState(s));
      edit(header, tensors);
      return packBlob(header, [...tensors]);
    };
    expect(() => decodeTrainingState(repack((h) => (h.epoch = 3)))).toThrow(/history has 2 epochs/);
    expect(() => decodeTrainingState(repack((h) => (h.run = { ...(h.run as object), train: 11 })))).toThrow(/fingerprint/);
    expect(() => decodeTrainingState(repack((h) => (h.random = { shuffle: -1, augment: 0, dropout: 0 })))).toThrow(/RNG/);
    expect(() => decodeTrainingState(repack((_, t) => t.set('mystery/x/0', f32([1], [1]))))).toThrow(/unexpected tensor/);
    expect(() => decodeTrainingState(repack((_, t) => t.delete('optimizer/head/1')))).toThrow(/optimizer tensor counts/);
    // packBlob stamps the current format; a future one is refused by version.
    const { header, tensors } = unpackBlob(encodeTrainingState(s));
    const future = packBlob(header, [...tensors]);
    const len = new DataView(future.buffer).getUint32(4, true);
    const json = new TextDecoder().decode(future.subarray(8, 8 + len)).replace(`"format":${TRAINING_STATE_FORMAT}`, `"format":${TRAINING_STATE_FORMAT + 1}`);
    const edited = new Uint8Array(future.length);
    edited.set(future);
    edited.set(new TextEncoder().encode(json), 8);
    edited.set(createHash('sha256').update(edited.subarray(0, edited.length - 32)).digest(), edited.length - 32);
    expect(() => decodeTrainingState(edited)).toThrow(new RegExp(`format ${TRAINING_STATE_FORMAT + 1}; this version reads format ${TRAINING_STATE_FORMAT}`));
    expect(() => decodeTrainingState(repack((_, t) => t.delete('optimizer/base/top/conv/1')))).toThrow(/optimizer tensor counts/);
    expect(() => decodeTrainingState(repack((h) => (h.learningRateFinder = { suggested: 'x', chosen: 1, curve: [] })))).toThrow(/learning-rate finder/);
  });

  it('fingerprints the run independently of key order, and names what differs', () => {
    const s = sampleState();
    const reordered = { val: 0, train: 10, labels: ['a', 'b'], hyperparameters: Object.fromEntries(Object.entries(hp({ epochs: 3 })).reverse()), strategy: 'progressive_unfreezing', base: 'tiny' };
    expect(runFingerprint(reordered)).toBe(runFingerprint(s.run));
    expect(() => checkRun(s, reordered)).not.toThrow();
    const other = { ...s.run, labels: ['a', 'c'], hyperparameters: hp({ epochs: 3, learningRate: 0.5 }) };
    expect(() => checkRun(s, other)).toThrow(TrainingStateError);
    expect(() => checkRun(s, other)).toThrow(/hyperparameters\.learningRate: 0\.01 in the state, 0\.5 here; labels: \["a","b"\] in the state, \["a","c"\] here/);
    expect(() => checkRun(s, { ...s.run, val: 4 })).toThrow(/val: 0 in the state, 4 here/);
  });
});
