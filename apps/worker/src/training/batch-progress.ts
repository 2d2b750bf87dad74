import type { BatchEvent } from '@finetune/ml';
import type { TrainingProgress } from './messages.ts';

/** How often a run reports progress within an epoch: each report is an IPC message and a Redis write. */
const REPORT_EVERY_MS = 1000;

/**
 * Turns the trainer's per-batch events into at most one progress report a second (and one at
 * the end of each epoch): where the epoch is, its running loss and accuracy, the pace in images
 * per second, and the time left in the run at that pace (later epochs cost what this one does).
 * The pace is measured between batch ends within an epoch, so validation and checkpoints between
 * epochs do not count; until an epoch has two batches, the previous epoch's pace stands in.
 */
export function batchProgress(epochs: number, report: (progress: TrainingProgress) => void, now = () => performance.now()) {
  let epoch = 0;
  let first = { t: 0, images: 0, batch: 0 };
  let pace: { imagesPerSecond: number; secondsPerBatch: number } | null = null;
  let lastReport = -Infinity;
  return (e: BatchEvent & { epoch: number }) => {
    const t = now();
    if (e.epoch !== epoch) {
      epoch = e.epoch;
      first = { t, images: e.images, batch: e.batch };
    } else {
      const seconds = (t - first.t) / 1000;
      if (seconds > 0) pace = { imagesPerSecond: (e.images - first.images) / seconds, secondsPerBatch: seconds / (e.batch - first.batch) };
    }
    if (t - lastReport < REPORT_EVERY_MS && e.batch !== e.batches) return;
    lastReport = t;
    const batchesLeft = e.batches - e.batch + (epochs - e.epoch) * e.batches;
    report({
      phase: 'training',
      epoch: e.epoch,
      epochs,
      percent: Math.round(5 + (80 * (e.epoch - 1 + e.batch / e.batches)) / epochs),
      batch: e.batch,
      batches: e.batches,
      loss: e.trainLoss,
      accuracy: e.trainAcc,
      imagesPerSecond: pace?.imagesPerSecond ?? null,
      etaSeconds: pace ? Math.round(batchesLeft * pace.secondsPerBatch) : null,
    });
  };
}
