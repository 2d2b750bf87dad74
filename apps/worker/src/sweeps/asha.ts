import type { Logger } from 'pino';
import { ACTIVE_STATUSES, ashaContinues, ashaRungs, metricDirection, trialScore, type SweepSpec } from '@finetune/core';
import type { RungRecords, Sweep, SweepsRepository, SweepTrial } from '@finetune/db';
import type { TrainingQueue } from '@finetune/queue';

export interface AshaDeps {
  sweeps: SweepsRepository;
  queue: TrainingQueue;
  log: Logger;
}

/** A trial that reached a rung ASHA has not yet recorded it at. */
interface Arrival {
  trial: SweepTrial;
  rung: number;
  value: number | null;
  reachedAt: number;
}

/**
 * ASHA's part of a controller step: records every trial that reached a rung since the last step
 * — in the order the trials reached it (when their rung epoch was committed) — and stops those
 * ranked out. Records are saved before any trial is stopped, and every step stops again any
 * trial a record ranked out that still runs, so a controller that dies in between loses nothing.
 * A trial keeps running from a rung while its decision is pending (at most a step), as
 * asynchronous successive halving allows.
 */
export async function ashaStep({ sweeps, queue, log }: AshaDeps, sweep: Sweep, lease: string, trials: SweepTrial[]): Promise<void> {
  const spec = sweep.spec as unknown as SweepSpec;
  const { minEpochs, reductionFactor } = spec.asha;
  const direction = metricDirection(spec.metric);
  const rungs = structuredClone(sweep.rungs ?? {}) as RungRecords;
  const rankedOut = (jobId: string) => Object.values(rungs).some((records) => records.some((r) => r.jobId === jobId && !r.continued));
  const recordedAt = (jobId: string, rung: number) => (rungs[rung] ?? []).some((r) => r.jobId === jobId);

  const waiting = trials.flatMap((trial) => {
    if (trial.status === 'failed' || rankedOut(trial.id)) return [];
    const due = ashaRungs(minEpochs, reductionFactor, trial.epochs).filter((rung) => rung <= trial.epoch && !recordedAt(trial.id, rung));
    return due.map((rung) => ({ trial, rung }));
  });
  if (waiting.length > 0) {
    const epochs = await sweeps.epochsUpTo([...new Set(waiting.map((w) => w.trial.id))], Math.max(...waiting.map((w) => w.rung)));
    const arrivals: Arrival[] = waiting.map(({ trial, rung }) => {
      const own = epochs.filter((e) => e.jobId === trial.id);
      const atRung = own.find((e) => e.epoch === rung);
      return { trial, rung, value: trialScore(own, spec.metric, rung), reachedAt: atRung?.createdAt.getTime() ?? Number.MAX_SAFE_INTEGER };
    });
    arrivals.sort((a, b) => a.reachedAt - b.reachedAt || a.rung - b.rung);
    for (const { trial, rung, value } of arrivals) {
      // A trial ranked out at a lower rung in this same pass never reaches the next.
      if (rankedOut(trial.id)) continue;
      const records = (rungs[rung] ??= []);
      const others = records.flatMap((r) => (r.value === null ? [] : [r.value]));
      // A metric that was not measured (no validation data) cannot be ranked: the trial goes on.
      const continued = value === null || ashaContinues(others, value, reductionFactor, direction);
      records.push({ jobId: trial.id, value, continued });
      log.info({ sweepId: sweep.id, jobId: trial.id, trial: trial.trialNumber, rung, value, continued }, 'ASHA rung decision');
    }
    if (!(await sweeps.recordRungs(sweep.id, lease, rungs))) return;
  }

  for (const trial of trials) {
    if (!ACTIVE_STATUSES.includes(trial.status) || !rankedOut(trial.id) || trial.ashaStopped) continue;
    if (await sweeps.stopTrial(trial.id)) {
      // A trial waiting out a retry backoff is resumed now, only to stop and keep its best epoch.
      await queue.promote(trial.id).catch(() => undefined);
      log.info({ sweepId: sweep.id, jobId: trial.id, trial: trial.trialNumber }, 'ASHA stopped a trial');
    }
  }
}
