// learningRate "auto": fastai's learning-rate range test (lr_find) and its "valley" suggestion.
//
// The test trains the first stage's trainable part for up to 100 steps while the rate grows
// exponentially from 1e-7 to 10, records the smoothed loss at every rate, stops once that loss
// exceeds 4× the best so far, and suggests a rate from the longest descending stretch of the
// curve. What it trained is thrown away: the head's weights are put back, the top's are never
// handed back to the run, and its optimizers are its own.
import { tf } from '../backend.ts';
import { mulberry32 } from '../random.ts';
import { yieldToEventLoop } from '../event-loop.ts';
import { shuffled } from './batches.ts';
import { trainStep, type StepContext } from './epoch.ts';
import { disposeOptimizer } from './optimizers.ts';
import type { StageSession } from './stage.ts';
import { hashSeed } from './surgery.ts';

/** fastai's lr_find defaults. */
export const RANGE_TEST = { startLr: 1e-7, endLr: 10, steps: 100, divergence: 4, smoothing: 0.98 } as const;

export interface LearningRateFinderResult {
  /** The valley suggestion. */
  suggested: number;
  /** The rate the run trains with: the suggestion, within the spec's (0, 10]. */
  chosen: number;
  /** Every step of the test with a finite loss: its rate and the smoothed loss after it. */
  curve: { lr: number; loss: number }[];
}

/** The rate of 0-based `step` of `steps`: fastai's ExpSched, start × (end / start)^(step / steps). */
export function rangeTestRate(step: number, steps: number = RANGE_TEST.steps, startLr: number = RANGE_TEST.startLr, endLr: number = RANGE_TEST.endLr): number {
  return startLr * (endLr / startLr) ** (step / steps);
}

/**
 * fastai's AvgSmoothLoss: an exponential moving average of the batch losses, debiased by
 * 1 − beta^count so the first values are not pulled towards 0.
 */
export class SmoothedLoss {
  private avg = 0;
  private count = 0;
  constructor(private readonly beta: number = RANGE_TEST.smoothing) {}
  add(loss: number): number {
    this.count++;
    this.avg = this.beta * this.avg + (1 - this.beta) * loss;
    return this.avg / (1 - this.beta ** this.count);
  }
}

/**
 * Runs the test: `step(lr)` trains one batch at `lr` and returns its loss. Stops after `steps`
 * steps, or after the step whose smoothed loss is NaN or above `divergence` × the best (that
 * step is kept on the curve, as fastai's recorder keeps it).
 */
export async function rangeTest(step: (lr: number) => Promise<number>, steps: number = RANGE_TEST.steps): Promise<{ lr: number; loss: number }[]> {
  const smooth = new SmoothedLoss();
  const curve: { lr: number; loss: number }[] = [];
  let best = Infinity;
  for (let i = 0; i < steps; i++) {
    const lr = rangeTestRate(i, steps);
    const loss = smooth.add(await step(lr));
    curve.push({ lr, loss });
    if (loss < best) best = loss;
    if (Number.isNaN(loss) || loss > RANGE_TEST.divergence * best) break;
  }
  return curve;
}

/**
 * fastai's `valley`: the longest run of decreasing losses (longest decreasing subsequence
 * ending at each point), and the point 1/3 + 1/6 of the way along it — past the steep start,
 * well before the bottom where training turns unstable. Returns an index into `losses`.
 */
export function valleyIndex(losses: number[]): number {
  const n = losses.length;
  if (n === 0) throw new Error('valley of an empty curve');
  const lds = new Array<number>(n).fill(1);
  let maxStart = 0;
  let maxEnd = 0;
  for (let i = 1; i < n; i++) {
    for (let j = 0; j < i; j++) {
      if (losses[i]! < losses[j]! && lds[i]! < lds[j]! + 1) lds[i] = lds[j]! + 1;
      if (lds[maxEnd]! < lds[i]!) {
        maxEnd = i;
        maxStart = maxEnd - lds[maxEnd]!;
      }
    }
  }
  const sections = (maxEnd - maxStart) / 3;
  // fastai's start is one before the run, so a run of one or two points lands on −1 (Python's
  // last element); the first point is the sensible reading.
  return Math.max(0, maxStart + Math.trunc(sections) + Math.trunc(sections / 2));
}

/**
 * The suggestion from a curve, as fastai's lr_find makes it: without the first tenth of the
 * planned steps and the last 5 points (the noisy start, the divergence), cut before the first
 * NaN, then the valley. A test that stopped too early for that trim uses the whole curve.
 */
export function suggestLearningRate(curve: { lr: number; loss: number }[], steps: number = RANGE_TEST.steps): number {
  if (curve.length === 0) throw new Error('the range test recorded no step');
  let points = curve.slice(Math.floor(steps / 10), -5);
  if (points.length < 2) points = curve;
  const nan = points.findIndex((p) => Number.isNaN(p.loss));
  if (nan >= 0) points = points.slice(0, Math.max(1, nan));
  const finite = points.every((p) => Number.isFinite(p.loss)) ? points : points.filter((p) => Number.isFinite(p.loss));
  if (finite.length === 0) return curve[0]!.lr;
  return finite[valleyIndex(finite.map((p) => p.loss))]!.lr;
}

/**
 * The range test on a stage that `open` sets up with the given optimizers and `keepWeights`
 * false. Deterministic for a seed: its own shuffle and dropout streams (the run's are not
 * touched, so the run trains exactly as with the chosen rate given by hand). The head's
 * weights are restored afterwards.
 */
export async function findLearningRate(p: {
  open: (optimizers: { head: tf.Optimizer; base: (layer: string, vars: tf.Variable[]) => tf.Optimizer }) => Promise<StageSession>;
  head: tf.LayersModel;
  makeOptimizer: () => tf.Optimizer;
  step: Omit<StepContext, 'net' | 'features' | 'input' | 'dropSeed'>;
  batchSize: number;
  seed: number;
}): Promise<LearningRateFinderResult> {
  const saved = p.head.layers.map((l) => l.getWeights().map((w) => w.clone()));
  const optimizers: tf.Optimizer[] = [];
  const make = () => {
    const o = p.makeOptimizer();
    optimizers.push(o);
    return o;
  };
  try {
    const session = await p.open({ head: make(), base: () => make() });
    try {
      const shuffle = mulberry32(hashSeed(p.seed, 'lr_find'));
      const dropout = mulberry32(hashSeed(p.seed, 'lr_find_dropout'));
      const ctx: StepContext = { ...p.step, net: session, features: session.trainFeatures, input: session.input, dropSeed: () => Math.floor(dropout() * 2 ** 31) };
      const n = p.step.train.labels.length;
      let order = shuffled(n, shuffle);
      let at = 0;
      const curve = await rangeTest(async (lr) => {
        if (at >= n) {
          order = shuffled(n, shuffle);
          at = 0;
        }
        const idx = order.subarray(at, Math.min(n, at + p.batchSize));
        at += p.batchSize;
        const { loss } = await trainStep(ctx, idx, { learningRate: lr, momentum: null });
        await yieldToEventLoop();
        return loss;
      });
      const suggested = suggestLearningRate(curve);
      // A diverged step's NaN or infinite loss has no place in JSON; the suggestion never uses it.
      return { suggested, chosen: Math.min(suggested, 10), curve: curve.filter((c) => Number.isFinite(c.loss)) };
    } finally {
      session.close();
    }
  } finally {
    p.head.layers.forEach((l, i) => {
      if (saved[i]!.length > 0) l.setWeights(saved[i]!);
    });
    saved.flat().forEach((w) => w.dispose());
    optimizers.forEach(disposeOptimizer);
  }
}
