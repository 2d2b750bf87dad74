import { randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { DomainError, findBaseModel, NotFoundError, withDefaults, type JobSpec, type JobSpecInput } from '@finetune/core';
import type { EpochMetric, Job, JobWithModel } from '@finetune/db';
import type { AppDeps } from '../deps.ts';

/** Base models whose weights are random: feature extraction on them would learn nothing. */
const NEEDS_PRETRAINED = new Set(['feature_extraction']);

function checkSpec(spec: JobSpec): void {
  const base = findBaseModel(spec.baseModel);
  if (!base) throw new DomainError('unknown_base_model', `base model "${spec.baseModel}" is not in the zoo (GET /v1/base-models)`, 422);
  if (!base.available) throw new DomainError('base_model_unavailable', `base model "${spec.baseModel}" is not available on this deployment`, 422);
  if (NEEDS_PRETRAINED.has(spec.strategy) && base.source.startsWith('built-in')) {
    throw new DomainError(
      'strategy_not_supported',
      `"${spec.baseModel}" has no pretrained weights, so strategy "${spec.strategy}" would train a head on random features`,
      422,
    );
  }
}

export interface CreatedJob {
  job: Job;
  /** True when an Idempotency-Key matched an earlier submission and nothing new was created. */
  replayed: boolean;
}

/**
 * Row first, then the queue: Postgres is the record, BullMQ the delivery. If Redis refuses the
 * enqueue, the row is removed again so no job sits "queued" forever.
 */
export async function createJob(deps: AppDeps, input: JobSpecInput, idempotencyKey?: string): Promise<CreatedJob> {
  const spec = withDefaults(input);
  if (idempotencyKey) {
    const earlier = await deps.jobs.findByIdempotencyKey(idempotencyKey);
    if (earlier) {
      if (!isDeepStrictEqual(earlier.spec, spec)) {
        throw new DomainError('idempotency_key_reused', 'this Idempotency-Key was used for a different job spec', 422);
      }
      return { job: earlier, replayed: true };
    }
  }
  checkSpec(spec);

  const job = await deps.jobs.create({
    id: randomUUID(),
    datasetId: spec.datasetId,
    baseModel: spec.baseModel,
    strategy: spec.strategy,
    spec: spec as object,
    epochs: spec.hyperparameters.epochs,
    idempotencyKey: idempotencyKey ?? null,
  });
  try {
    await deps.queue.enqueue(job.id);
  } catch (error) {
    await deps.db.job.delete({ where: { id: job.id } });
    throw new DomainError('queue_unavailable', `the job queue is unavailable: ${(error as Error).message}`, 503);
  }
  return { job, replayed: false };
}

export async function getJob(deps: AppDeps, id: string): Promise<JobWithModel> {
  const job = await deps.jobs.get(id);
  if (!job) throw new NotFoundError('job', id);
  return job;
}

export async function cancelJob(deps: AppDeps, id: string): Promise<JobWithModel> {
  const outcome = await deps.jobs.requestCancel(id);
  if (!outcome) throw new NotFoundError('job', id);
  if (outcome === 'canceled') await deps.queue.removeWaiting(id);
  return getJob(deps, id);
}

export function presentMetric(m: EpochMetric) {
  return {
    epoch: m.epoch,
    trainLoss: m.trainLoss,
    trainAccuracy: m.trainAcc,
    valLoss: m.valLoss,
    valAccuracy: m.valAcc,
    learningRate: m.learningRate,
    durationMs: m.durationMs,
  };
}

/** Best = highest validation accuracy (train accuracy when there is no validation set). */
export function bestMetric(metrics: EpochMetric[]): EpochMetric | null {
  let best: EpochMetric | null = null;
  const score = (m: EpochMetric) => m.valAcc ?? m.trainAcc;
  for (const m of metrics) if (!best || score(m) > score(best)) best = m;
  return best;
}

export function presentJob(job: JobWithModel, metrics: EpochMetric[]) {
  const last = metrics[metrics.length - 1] ?? null;
  const best = bestMetric(metrics);
  const percent = job.status === 'succeeded' ? 100 : Math.round((100 * job.epoch) / Math.max(job.epochs, 1));
  return {
    id: job.id,
    status: job.status,
    datasetId: job.datasetId,
    baseModel: job.baseModel,
    strategy: job.strategy,
    spec: job.spec,
    progress: { epoch: job.epoch, epochs: job.epochs, percent },
    metrics: { best: best && presentMetric(best), last: last && presentMetric(last) },
    backend: job.backend,
    modelId: job.model?.id ?? null,
    skippedImages: job.skippedImages,
    attempts: job.attempts,
    cancelRequested: job.cancelRequested,
    error: job.errorCode ? { code: job.errorCode, message: job.errorMessage ?? '' } : null,
    createdAt: job.createdAt.toISOString(),
    startedAt: job.startedAt?.toISOString() ?? null,
    finishedAt: job.finishedAt?.toISOString() ?? null,
  };
}
