import { randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import {
  baseModelLabel,
  DomainError,
  findBaseModel,
  NotFoundError,
  specProblems,
  totalEpochs,
  withDefaults,
  type JobSpec,
  type JobSpecInput,
  type Strategy,
} from '@finetune/core';
import type { EpochMetric, Job, JobWithModel } from '@finetune/db';
import type { AppDeps } from '../deps.ts';

/** Strategies that start from learned weights: pointless on a randomly initialised base. */
const NEEDS_PRETRAINED = new Set<Strategy>(['feature_extraction', 'fine_tune', 'progressive_unfreezing', 'full', 'prototype']);

/**
 * Checks what the schema cannot: cross-field rules (400), and rules that depend on stored
 * state — the base model, the dataset's classes and validation data (422).
 */
async function checkSpec(deps: AppDeps, spec: JobSpec): Promise<void> {
  const problems = specProblems(spec);
  if (problems.length > 0) throw new DomainError('invalid_spec', problems.join('; '), 400);

  if (typeof spec.baseModel === 'string') {
    const base = findBaseModel(spec.baseModel);
    if (!base) throw new DomainError('unknown_base_model', `base model "${spec.baseModel}" is not in the zoo (GET /v1/base-models)`, 422);
    if (!base.available) throw new DomainError('base_model_unavailable', `base model "${spec.baseModel}" is not available on this deployment`, 422);
    if (NEEDS_PRETRAINED.has(spec.strategy) && !base.pretrained) {
      throw new DomainError(
        'strategy_not_supported',
        `"${spec.baseModel}" has no pretrained weights, so strategy "${spec.strategy}" has nothing to transfer; use strategy "scratch"`,
        422,
      );
    }
  } else if (!(await deps.models.get(spec.baseModel.modelId))) {
    throw new DomainError('unknown_model', `model ${spec.baseModel.modelId} (baseModel.modelId) does not exist`, 422);
  }

  const dataset = await deps.datasets.get(spec.datasetId);
  if (!dataset || dataset.status !== 'ready') throw new DomainError('unknown_dataset', `dataset ${spec.datasetId} does not exist`, 422);
  const { classWeights, earlyStopping, validationSplit } = spec.hyperparameters;
  if (classWeights && classWeights !== 'balanced') {
    const unknown = Object.keys(classWeights).filter((label) => !dataset.classes.includes(label));
    if (unknown.length > 0) {
      throw new DomainError('invalid_class_weights', `classWeights names classes the dataset lacks: ${unknown.join(', ')}`, 422);
    }
  }
  if (earlyStopping?.monitor.startsWith('val_') && dataset.layout !== 'split' && validationSplit === 0) {
    throw new DomainError('no_validation_data', `earlyStopping.monitor ${earlyStopping.monitor} needs validation data`, 422);
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
  await checkSpec(deps, spec);

  const job = await deps.jobs.create({
    id: randomUUID(),
    datasetId: spec.datasetId,
    baseModel: baseModelLabel(spec.baseModel),
    strategy: spec.strategy,
    spec: spec as object,
    epochs: totalEpochs(spec),
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
    stage: m.stage,
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
    embeddingCache: job.embeddingCacheHit === null ? null : job.embeddingCacheHit ? 'reused' : 'computed',
    stoppedEarly: job.stoppedEarly,
    attempts: job.attempts,
    cancelRequested: job.cancelRequested,
    error: job.errorCode ? { code: job.errorCode, message: job.errorMessage ?? '' } : null,
    createdAt: job.createdAt.toISOString(),
    startedAt: job.startedAt?.toISOString() ?? null,
    finishedAt: job.finishedAt?.toISOString() ?? null,
  };
}
