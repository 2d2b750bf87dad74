import { describe, expect, it } from 'vitest';
import {
  ashaContinues,
  ashaRungs,
  hyperparameterSchema,
  sampleTrial,
  sweepProblems,
  sweepWithDefaults,
  trialScore,
  trialSpec,
  uniformDraw,
  type SweepSpecInput,
} from '../src/index.ts';

const DATASET = '00000000-0000-4000-8000-000000000001';
const sweep = (over: Partial<SweepSpecInput> = {}) =>
  sweepWithDefaults({ datasetId: DATASET, baseModel: 'mobilenet_v2', space: { learningRate: { min: 1e-4, max: 1e-1, log: true } }, ...over });

describe('sampling', () => {
  it('is a pure function of (seed, trial, path): the same draw every time, different across trials, seeds and paths', () => {
    expect(uniformDraw(7, 3, 'learningRate')).toBe(uniformDraw(7, 3, 'learningRate'));
    const draws = new Set([uniformDraw(7, 3, 'learningRate'), uniformDraw(7, 4, 'learningRate'), uniformDraw(8, 3, 'learningRate'), uniformDraw(7, 3, 'l2')]);
    expect(draws.size).toBe(4);
    for (const u of draws) expect(u >= 0 && u < 1).toBe(true);
  });

  it('draws log ranges log-uniformly: each decade of 1e-4..1e-1 gets about a third of 3,000 draws', () => {
    const space = { learningRate: { min: 1e-4, max: 1e-1, log: true } };
    const decades = [0, 0, 0];
    for (let trial = 0; trial < 3000; trial++) {
      const lr = sampleTrial(space, 1, trial).learningRate as number;
      expect(lr).toBeGreaterThanOrEqual(1e-4);
      expect(lr).toBeLessThanOrEqual(1e-1);
      decades[Math.min(2, Math.floor(Math.log10(lr / 1e-4)))]! += 1;
    }
    for (const count of decades) expect(count).toBeGreaterThan(850);
    for (const count of decades) expect(count).toBeLessThan(1150);
  });

  it('draws integers for integer hyperparameters, every value of the range, ends included', () => {
    const seen = new Set<unknown>();
    for (let trial = 0; trial < 400; trial++) seen.add(sampleTrial({ epochs: { min: 2, max: 6 } }, 3, trial).epochs);
    expect([...seen].sort()).toEqual([2, 3, 4, 5, 6]);
    const logInts = new Set<unknown>();
    for (let trial = 0; trial < 400; trial++) logInts.add(sampleTrial({ batchSize: { min: 4, max: 64, log: true } }, 3, trial).batchSize);
    for (const value of logInts) expect(Number.isInteger(value)).toBe(true);
    expect(logInts.has(4)).toBe(true);
    expect(logInts.has(64)).toBe(true);
  });

  it('picks any JSON value from choices, at nested paths too, and writes it into the trial spec', () => {
    const hidden = [[], [64], [128, 32]];
    const spec = sweep({ space: { 'head.hiddenUnits': { choices: hidden }, 'head.dropout': { min: 0, max: 0.5 }, optimizer: { choices: ['adam', 'sgd'] } } });
    const picked = new Set<string>();
    for (let trial = 0; trial < 60; trial++) {
      const { params, spec: job } = trialSpec(spec, trial);
      expect(job.hyperparameters.head.hiddenUnits).toEqual(params['head.hiddenUnits']);
      expect(job.hyperparameters.head.dropout).toBe(params['head.dropout']);
      expect(job.hyperparameters.head.activation).toBe('relu'); // the rest of head keeps its defaults
      expect(job.hyperparameters.optimizer).toBe(params.optimizer);
      picked.add(JSON.stringify(params['head.hiddenUnits']));
    }
    expect(picked.size).toBe(3);
  });

  it('fills the defaults of a nested object the space brings in', () => {
    const { spec } = trialSpec(sweep({ space: { 'earlyStopping.patience': { min: 1, max: 3 } } }), 0);
    expect(spec.hyperparameters.earlyStopping).toMatchObject({ monitor: 'val_loss', minDelta: 0 });
  });
});

describe('validation of a space', () => {
  const problem = (over: Partial<SweepSpecInput>) => sweepProblems(sweep(over))[0];

  it('accepts a valid space', () => {
    expect(sweepProblems(sweep({ space: { learningRate: { min: 1e-4, max: 1e-2, log: true }, 'head.dropout': { choices: [0, 0.2] }, epochs: { min: 2, max: 5 } } }))).toEqual([]);
  });

  it('refuses domain_adaptation, whose trials would have no target dataset', () => {
    expect(sweepProblems({ ...sweep(), strategy: 'domain_adaptation' })[0]).toMatchObject({ path: 'strategy' });
  });

  it('names the path of what is wrong', () => {
    expect(problem({ space: { learningRat: { min: 0.1, max: 0.2 } } })?.path).toBe('space.learningRat');
    expect(problem({ space: { 'head.nope': { choices: [1] } } })?.path).toBe('space.head.nope');
    expect(problem({ space: { learningRate: { min: 0.1, max: 20 } } })?.path).toBe('space.learningRate.max');
    expect(problem({ space: { learningRate: { min: 0.2, max: 0.1 } } })?.path).toBe('space.learningRate.min');
    expect(problem({ space: { learningRate: { min: 0, max: 0.1, log: true } } })?.path).toBe('space.learningRate.min');
    expect(problem({ space: { epochs: { min: 1.5, max: 4 } } })?.path).toBe('space.epochs.min');
    expect(problem({ space: { optimizer: { min: 1, max: 2 } } })?.path).toBe('space.optimizer');
    expect(problem({ space: { optimizer: { choices: ['adam', 'sgdx'] } } })?.path).toBe('space.optimizer.choices[1]');
    expect(problem({ space: { 'head.hiddenUnits': { choices: [[64], [0]] } } })?.path).toBe('space.head.hiddenUnits.choices[1]');
  });

  it('refuses a space that can produce an invalid job spec, cross-field rules included', () => {
    // warmupEpochs must stay below epochs: 5 warm-up epochs of 3 is impossible.
    const warmup = problem({ hyperparameters: { epochs: 3 } as never, space: { warmupEpochs: { min: 0, max: 5 } } });
    expect(warmup?.path).toBe('space.warmupEpochs');
    expect(warmup?.message).toMatch(/warmupEpochs/);
    // Only the combination is invalid: nesterov with a non-sgd optimizer.
    const combo = problem({ space: { optimizer: { choices: ['sgd', 'adam'] }, nesterov: { choices: [false, true] } } });
    expect(combo?.path).toBe('space.optimizer, space.nesterov');
    expect(combo?.message).toMatch(/nesterov needs optimizer sgd/);
  });

  it('knows which paths are hyperparameters', () => {
    expect(hyperparameterSchema('head.dropout')).not.toBeNull();
    expect(hyperparameterSchema('earlyStopping.patience')).not.toBeNull();
    expect(hyperparameterSchema('head')).not.toBeNull();
    expect(hyperparameterSchema('constructor')).toBeNull();
    expect(hyperparameterSchema('__proto__.x')).toBeNull();
    expect(hyperparameterSchema('head..dropout')).toBeNull();
  });
});

describe('ASHA', () => {
  it('puts rungs at r·η^k below the last epoch', () => {
    expect(ashaRungs(1, 3, 60)).toEqual([1, 3, 9, 27]);
    expect(ashaRungs(2, 2, 16)).toEqual([2, 4, 8]);
    expect(ashaRungs(1, 3, 1)).toEqual([]);
    expect(ashaRungs(5, 3, 5)).toEqual([]);
  });

  it('continues a trial only within the top 1/η of those recorded at the rung, the first always', () => {
    expect(ashaContinues([], 0.5, 3, 'max')).toBe(true); // first at the rung
    expect(ashaContinues([0.9], 0.5, 3, 'max')).toBe(false); // 2 recorded: 1 promoted, the better one
    expect(ashaContinues([0.4], 0.5, 3, 'max')).toBe(true);
    expect(ashaContinues([0.4], 0.5, 3, 'min')).toBe(false); // a loss: lower is better
    expect(ashaContinues([0.9, 0.8, 0.7, 0.6, 0.5], 0.85, 3, 'max')).toBe(true); // 6 recorded: top 2
    expect(ashaContinues([0.9, 0.8, 0.7, 0.6, 0.5], 0.75, 3, 'max')).toBe(false);
    expect(ashaContinues([0.5], 0.5, 3, 'max')).toBe(false); // a tie goes to the trial recorded first
  });

  it("scores a trial by the metric at its best epoch up to the rung (the epoch its model keeps)", () => {
    const epochs = [
      { epoch: 1, trainLoss: 1, trainAcc: 0.5, valLoss: 0.9, valAcc: 0.6 },
      { epoch: 2, trainLoss: 0.8, trainAcc: 0.7, valLoss: 0.7, valAcc: 0.8 },
      { epoch: 3, trainLoss: 0.6, trainAcc: 0.9, valLoss: 1.2, valAcc: 0.7 },
    ];
    expect(trialScore(epochs, 'val_accuracy')).toBe(0.8);
    expect(trialScore(epochs, 'val_loss')).toBe(0.7);
    expect(trialScore(epochs, 'val_accuracy', 1)).toBe(0.6);
    expect(trialScore([], 'val_accuracy')).toBeNull();
    expect(trialScore([{ ...epochs[0]!, valLoss: null, valAcc: null }], 'val_loss')).toBeNull();
    expect(trialScore([{ ...epochs[0]!, valLoss: null, valAcc: null }], 'loss')).toBe(1);
  });
});
