import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import {
  ACTIVE_STATUSES,
  baseModelLabel,
  DomainError,
  QuotaExceededError,
  totalEpochs,
  trialSpec,
  type Config,
  type SweepSpec,
} from '@finetune/core';
import type { Prisma, Sweep, SweepsRepository } from '@finetune/db';
import type { TrainingQueue } from '@finetune/queue';
import { ashaStep } from './asha.ts';

export interface StepDeps {
  sweeps: SweepsRepository;
  queue: TrainingQueue;
  config: Config;
  log: Logger;
}

/**
 * One step of a sweep, under its lease: ASHA's rung decisions (for an `asha` sweep), then new
 * trials up to maxConcurrentTrials, then — once every trial has ended and no more can start — the
 * sweep's outcome. Every step starts from Postgres, so any worker can take the next one.
 *
 * Trials are jobs of the sweep's tenant and count against its concurrent-jobs quota: when the
 * quota is full a trial waits for a free slot (the next step tries again) rather than failing.
 * A quota that does not free up by itself (models, storage) or a dataset deleted meanwhile stops
 * new trials for good: the sweep ends `failed` with that error once its running trials end.
 */
export async function stepSweep({ sweeps, queue, config, log }: StepDeps, sweep: Sweep, lease: string): Promise<void> {
  const spec = sweep.spec as unknown as SweepSpec;
  const trials = await sweeps.trials([sweep.id]);
  if (spec.searcher === 'asha') await ashaStep({ sweeps, queue, log }, sweep, lease, trials);

  let active = trials.filter((t) => ACTIVE_STATUSES.includes(t.status)).length;
  let created = sweep.trialsCreated;
  let stopped: { code: string; message: string } | null = sweep.errorCode ? { code: sweep.errorCode, message: sweep.errorMessage ?? '' } : null;
  while (!stopped && created < sweep.maxTrials && active < sweep.maxConcurrentTrials) {
    const job = trialSpec(spec, created).spec;
    try {
      const result = await sweeps.createTrial(
        sweep.id,
        lease,
        created,
        {
          id: randomUUID(),
          tenantId: sweep.tenantId,
          datasetId: spec.datasetId,
          baseModel: baseModelLabel(job.baseModel),
          strategy: job.strategy,
          spec: job as object,
          epochs: totalEpochs(job),
          ...(sweep.warnings === null ? {} : { warnings: sweep.warnings as Prisma.InputJsonValue }),
        },
        config.quotas,
      );
      // Canceled meanwhile, or another controller took over: this step is over.
      if (!result.created) return;
      log.info({ sweepId: sweep.id, jobId: result.job.id, trial: created }, 'sweep trial started');
      // Postgres is the record: a trial whose enqueue failed is enqueued by reconciliation.
      await queue.enqueue(result.job.id).catch((err: unknown) => log.warn({ err, jobId: result.job.id }, 'enqueueing a trial failed; reconciliation will'));
      created++;
      active++;
    } catch (error) {
      if (error instanceof QuotaExceededError && error.extensions.quota === 'concurrent_jobs') break;
      if (!(error instanceof DomainError)) throw error;
      stopped = { code: error.code, message: `no more trials can start: ${error.message}` };
      await sweeps.recordError(sweep.id, lease, stopped);
      log.warn({ sweepId: sweep.id, code: error.code }, 'sweep cannot start more trials');
    }
  }

  if (active > 0 || (created < sweep.maxTrials && !stopped)) return;
  if (stopped) {
    await sweeps.finish(sweep.id, lease, 'failed', stopped);
  } else if (trials.some((t) => t.model !== null)) {
    await sweeps.finish(sweep.id, lease, 'succeeded');
  } else {
    await sweeps.finish(sweep.id, lease, 'failed', {
      code: 'no_successful_trial',
      message: `none of the ${trials.length} trials produced a model; see their errors (GET /v1/jobs?sweepId=${sweep.id})`,
    });
  }
  log.info({ sweepId: sweep.id, trials: trials.length }, 'sweep finished');
}
