// Learning-rate schedules (per epoch) and the stage plan of progressive unfreezing.
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
export function learningRateForEpoch(hp: Pick<Hyperparameters, 'epochs' | 'learningRate' | 'lrSchedule' | 'warmupEpochs'>, epoch: number, baseLr = hp.learningRate): number {
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
