// The pieces a resumed run rebuilds its state from, one at a time: the PRNG state, early
// stopping, the best-weights keeper, optimizer slots.
import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../../src/backend.ts';
import { mulberry32 } from '../../src/random.ts';
import { EarlyStopping } from '../../src/training/early-stopping.ts';
import { disposeOptimizer, makeOptimizer, optimizerState, restoreOptimizerState } from '../../src/training/optimizers.ts';
import { BestWeights } from '../../src/training/weights.ts';
import { hp } from './helpers.ts';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

describe('mulberry32 state', () => {
  it('mulberry32(r.state()) continues the stream exactly; mulberry32(seed) is unchanged', () => {
    const r = mulberry32(42);
    expect(r.state()).toBe(42);
    const head = Array.from({ length: 5 }, () => r());
    const resumed = mulberry32(r.state());
    const tail = Array.from({ length: 100 }, () => r());
    expect(Array.from({ length: 100 }, () => resumed())).toEqual(tail);
    // The first draws of seed 42 (what every existing split and shuffle depends on).
    expect(head[0]).toBeCloseTo(0.6011037519201636, 15);
    expect(mulberry32(42)()).toBe(head[0]);
  });
});

describe('EarlyStopping', () => {
  const m = (valLoss: number) => ({ trainLoss: 1, trainAcc: 0.5, valLoss, valAcc: 0.5 });
  it('stops after `patience` epochs without an improvement > minDelta, and a restored copy stops at the same epoch', () => {
    const cfg = { monitor: 'val_loss' as const, patience: 2, minDelta: 0.1 };
    const a = new EarlyStopping(cfg);
    expect([1.0, 0.95, 0.8, 0.75].map((v) => a.update(m(v)))).toEqual([false, false, false, false]);
    expect(a.state()).toEqual({ best: 0.8, wait: 1 });
    const b = new EarlyStopping(cfg, a.state());
    expect(a.update(m(0.79))).toBe(true);
    expect(b.update(m(0.79))).toBe(true);
    // Without the restored counters it would not.
    expect(new EarlyStopping(cfg).update(m(0.79))).toBe(false);
  });
  it('maximises accuracy monitors, falls back to training metrics without validation, and never stops without a config', () => {
    const acc = new EarlyStopping({ monitor: 'val_accuracy', patience: 1, minDelta: 0 });
    expect(acc.update({ trainLoss: 1, trainAcc: 0.1, valLoss: null, valAcc: null })).toBe(false);
    expect(acc.update({ trainLoss: 1, trainAcc: 0.2, valLoss: null, valAcc: null })).toBe(false);
    expect(acc.update({ trainLoss: 1, trainAcc: 0.2, valLoss: null, valAcc: null })).toBe(true);
    const none = new EarlyStopping(null);
    expect([1, 1, 1, 1].map(() => none.update(m(1)))).toEqual([false, false, false, false]);
  });
});

describe('BestWeights', () => {
  it('prefers higher accuracy, breaks ties by lower loss, and owns (disposes) what it keeps', () => {
    const start = tf.memory().numTensors;
    const best = new BestWeights();
    const snap = (v: number) => new Map([['l', [tf.scalar(v)]]]);
    expect(best.improves(0.5, 1)).toBe(true);
    best.set(1, 0.5, 1, snap(1));
    expect([best.improves(0.5, 1), best.improves(0.5, 0.9), best.improves(0.4, 0), best.improves(0.6, 9)]).toEqual([false, true, false, true]);
    best.set(2, 0.6, 9, snap(2));
    expect(best.score).toEqual({ epoch: 2, acc: 0.6, loss: 9 });
    expect(best.weights!.get('l')![0]!.dataSync()[0]).toBe(2);
    expect(tf.memory().numTensors).toBe(start + 1);
    best.dispose();
    expect(tf.memory().numTensors).toBe(start);
  });
});

describe('optimizer state', () => {
  // Two variables updated in a fixed order, as the training loop does.
  async function steps(opt: tf.Optimizer, vars: tf.Variable[], from: number, to: number) {
    for (let s = from; s < to; s++) {
      const grads = vars.map((v, i) => ({ name: v.name, tensor: tf.fill(v.shape, Math.sin(s + i) * (i + 1)) }));
      opt.applyGradients(grads);
      tf.dispose(grads.map((g) => g.tensor));
    }
  }
  let unique = 0;
  const variable = (t: tf.Tensor) => {
    const v = tf.variable(t, true, `v_${++unique}`);
    t.dispose();
    return v;
  };
  const variables = () => [variable(tf.tensor2d([[1, 2], [3, 4]])), variable(tf.tensor1d([0.5, -0.5, 1]))];

  for (const h of [hp({ optimizer: 'adam' }), hp({ optimizer: 'adamw' }), hp({ optimizer: 'sgd', momentum: 0.9, nesterov: true }), hp({ optimizer: 'sgd', momentum: 0 }), hp({ optimizer: 'rmsprop' })]) {
    it(`${h.optimizer}${h.optimizer === 'sgd' ? ` momentum ${h.momentum}` : ''}: saved after 5 steps and loaded into a fresh optimizer with other variables, it continues bit-identically`, async () => {
      const start = tf.memory().numTensors;
      const a = variables();
      const optA = makeOptimizer(h, 0.05);
      await steps(optA, a, 0, 5);
      const saved = await optimizerState(optA);
      // The process dies here; the next one has the weights and the optimizer state only.
      const b = a.map((v) => variable(v.clone()));
      const optB = makeOptimizer(h, 0.05);
      await restoreOptimizerState(optB, b, saved);
      await steps(optA, a, 5, 12);
      await steps(optB, b, 5, 12);
      a.forEach((v, i) => expect(Array.from(b[i]!.dataSync())).toEqual(Array.from(v.dataSync())));
      // And not because the state was irrelevant: a fresh optimizer diverges (SGD has no state).
      if (saved.length > 1) {
        const c = a.map((v) => variable(v.clone()));
        const optC = makeOptimizer(h, 0.05);
        await steps(optC, c, 12, 13);
        await steps(optA, a, 12, 13);
        expect(Array.from(c[0]!.dataSync())).not.toEqual(Array.from(a[0]!.dataSync()));
        disposeOptimizer(optC);
        tf.dispose(c);
      }
      for (const o of [optA, optB]) disposeOptimizer(o);
      tf.dispose([...a, ...b]);
      expect(tf.memory().numTensors).toBe(start);
    });
  }

  it('refuses a state for another number or shape of variables, without touching the optimizer', async () => {
    const a = variables();
    const opt = makeOptimizer(hp({ optimizer: 'adam' }), 0.05);
    await steps(opt, a, 0, 2);
    const saved = await optimizerState(opt);
    const fresh = makeOptimizer(hp({ optimizer: 'adam' }), 0.05);
    await expect(restoreOptimizerState(fresh, [a[0]!], saved)).rejects.toThrow(/over 1 variables; expected 5/);
    await expect(restoreOptimizerState(fresh, [a[1]!, a[0]!], saved)).rejects.toThrow(/optimizer tensor 1 is float32\[2,2\]; expected float32\[3\]/);
    expect(await fresh.getWeights().then((w) => (tf.dispose(w[0]!.tensor), w.length))).toBe(1);
    for (const o of [opt, fresh]) disposeOptimizer(o);
    tf.dispose(a);
  });
});
