// Learning-rate schedules (per epoch, one_cycle per step) and the stage plan of progressive unfreezing.
import type { Hyperparameters, Stage } from '@finetune/core';

/**
 * The learning rate of a 1-based `epoch` (pure). With `warmupEpochs` W, epochs 1..W ramp
 * linearly: baseLr × e / (W + 1), so the ramp never starts at 0 and the first scheduled epoch
 * is at the full rate. The schedule then runs over the remaining T = epochs − W epochs, with
 * t = epoch − W (1-based):
 *   constant     baseLr
 *   step         baseLr × gamma^floor((t − 1) / stepSize)   (PyTorch StepLR: step 7 → epochs 1–7, 8–14, …)
 *   exponential  baseLr × gamma^(t − 1)                      (PyTorch ExponentialLR)
 *   cosine       min + (baseLr − min) × (1 + cos(π (t − 1) / T)) / 2   (PyTorch CosineAnnealingLR, T_max = T)
 * Warmup is capped at epochs − 1 so at least one epoch follows it.
 */
export function learningRateForEpoch(hp: Pick<Hyperparameters, 'epochs' | 'lrSchedule' | 'warmupEpochs'>, epoch: number, baseLr: number): number {
  if (!Number.isInteger(epoch) || epoch < 1) throw new Error(`epoch must be a positive integer, got ${epoch}`);
  const warmup = Math.max(0, Math.min(hp.warmupEpochs, hp.epochs - 1));
  if (epoch <= warmup) return (baseLr * epoch) / (warmup + 1);
  const t = epoch - warmup;
  const total = Math.max(1, hp.epochs - warmup);
  const s = hp.lrSchedule ?? { type: 'constant' };
  switch (s.type) {
    case 'constant':
      return baseLr;
    case 'step':
      return baseLr * s.gamma ** Math.floor((t - 1) / s.stepSize);
    case 'exponential':
      return baseLr * s.gamma ** (t - 1);
    case 'cosine': {
      const min = Math.min(s.minLearningRate ?? 0, baseLr);
      const progress = Math.min(1, (t - 1) / total);
      return min + ((baseLr - min) * (1 + Math.cos(Math.PI * progress))) / 2;
    }
    case 'one_cycle':
      // Per step (oneCycleAt); this is only the constant the step schedule scales.
      return baseLr;
    default:
      throw new Error(`unknown lrSchedule ${(s as { type: string }).type}`);
  }
}

/**
 * Default epochs per stage when progressive unfreezing gets no `stages`: up to three stages
 * (head only → top block → deeper), `epochs` split as evenly as possible, earlier stages
 * getting the remainder. Fewer stages when there are fewer epochs.
 */
export function defaultStageEpochs(epochs: number, maxStages = 3): number[] {
  const n = Math.max(1, Math.min(maxStages, epochs));
  const base = Math.floor(epochs / n);
  return Array.from({ length: n }, (_, i) => base + (i < epochs % n ? 1 : 0));
}

/** Fractions of the base's layers (counted from the top) that the default stages 2 and 3 unfreeze. */
export const DEFAULT_STAGE_FRACTIONS = [0, 0.1, 0.35] as const;

export type { Stage };

/** fastai's fit_one_cycle defaults: warm-up share, lr_max / start rate, start rate / final rate. */
export const ONE_CYCLE_DEFAULTS = { pctStart: 0.25, div: 25, divFinal: 1e5 } as const;
/** fastai's moms=(0.95, 0.85, 0.95): momentum falls while the rate rises, and back. */
export const ONE_CYCLE_MOMENTUM = { high: 0.95, low: 0.85 } as const;

/** fastai's SchedCos: from `start` at pos 0 to `end` at pos 1 along half a cosine. */
function cosineBetween(start: number, end: number, pos: number): number {
  return start + ((1 + Math.cos(Math.PI * (1 - pos))) * (end - start)) / 2;
}

/** fastai's combined_cos: cosine from a to b over [0, pct), then b to c over [pct, 1]. */
function combinedCos(pct: number, a: number, b: number, c: number, pos: number): number {
  if (pos < pct) return cosineBetween(a, b, pos / pct);
  return cosineBetween(b, c, pct >= 1 ? 1 : (pos - pct) / (1 - pct));
}

/**
 * The one-cycle rate and (SGD) momentum at 0-based `step` of `totalSteps`, as fastai computes
 * them: the position is step / totalSteps (taken before the step), the rate goes
 * lr/div → lr over the first pctStart of the steps and lr → lr/div/divFinal over the rest, both
 * halves cosine; momentum goes 0.95 → 0.85 → 0.95 on the same two halves.
 */
export function oneCycleAt(
  schedule: { pctStart?: number; div?: number; divFinal?: number },
  maxLr: number,
  step: number,
  totalSteps: number,
): { learningRate: number; momentum: number } {
  if (!Number.isInteger(step) || step < 0 || step >= totalSteps) throw new Error(`step ${step} is outside 0..${totalSteps - 1}`);
  const pct = schedule.pctStart ?? ONE_CYCLE_DEFAULTS.pctStart;
  const div = schedule.div ?? ONE_CYCLE_DEFAULTS.div;
  const divFinal = schedule.divFinal ?? ONE_CYCLE_DEFAULTS.divFinal;
  const pos = step / totalSteps;
  const start = maxLr / div;
  return {
    learningRate: combinedCos(pct, start, maxLr, start / divFinal, pos),
    momentum: combinedCos(pct, ONE_CYCLE_MOMENTUM.high, ONE_CYCLE_MOMENTUM.low, ONE_CYCLE_MOMENTUM.high, pos),
  };
}

/**
 * The factor a stage that newly unfreezes base layers applies to its rate over its first epoch
 * (`stepsInWarmup` steps): (step + 1) / (stepsInWarmup + 1), then 1. Freshly unfrozen layers
 * meet gradients shaped for the head alone; a short ramp keeps the first steps from undoing
 * what the previous stage learned.
 */
export function stageWarmupFactor(step: number, stepsInWarmup: number): number {
  return step < stepsInWarmup ? (step + 1) / (stepsInWarmup + 1) : 1;
}
