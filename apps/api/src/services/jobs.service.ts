import { randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import {
  baseModelLabel,
  bestEpoch,
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
import { BaseModelsRepository, type Checkpoint, type Dataset, type EpochMetric, type Job, type JobWithModel } from '@finetune/db';
import type { DataReport } from '@finetune/ml';
import { keys } from '@finetune/storage';
import type { AppDeps } from '../deps.ts';

/** Strategies that start from learned weights: pointless on a randomly initialised base. */
const NEEDS_PRETRAINED = new Set<Strategy>(['feature_extraction', 'fine_tune', 'progressive_unfreezing', 'full', 'prototype', 'domain_adaptation']);

/**
 * Checks what the schema cannot: cross-field rules (400), and rules that depend on stored
 * state — the base model, the dataset's classes and validation data (422).
 */
export async function checkSpec(deps: AppDeps, tenantId: string, spec: JobSpec): Promise<Dataset> {
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
  } else if ('baseModelId' in spec.baseModel) {
    // A custom base: the tenant's own, and validated (a pending or failed one cannot train).
    const custom = await new BaseModelsRepository(deps.db).get(tenantId, spec.baseModel.baseModelId);
    if (!custom) throw new DomainError('unknown_base_model', `base model ${spec.baseModel.baseModelId} (baseModel.baseModelId) does not exist`, 422);
    if (custom.status !== 'ready') {
      throw new DomainError('base_model_not_ready', `base model ${custom.id} is ${custom.status}${custom.errorCode ? ` (${custom.errorCode})` : ''}; only a ready base can train`, 422);
    }
  } else if (!(await deps.models.get(tenantId, spec.baseModel.modelId))) {
    throw new DomainError('unknown_model', `model ${spec.baseModel.modelId} (baseModel.modelId) does not exist`, 422);
  }

  const dataset = await deps.datasets.get(tenantId, spec.datasetId);
  if (!dataset || dataset.status !== 'ready') throw new DomainError('unknown_dataset', `dataset ${spec.datasetId} does not exist`, 422);
  if (dataset.kind === 'unlabelled') {
    throw new DomainError('unlabelled_dataset', `dataset ${dataset.id} is unlabelled: a job trains on a labelled dataset (an unlabelled one can be a domain_adaptation job's targetDatasetId)`, 422);
  }
  if (spec.strategy === 'domain_adaptation') await checkTargetDatasets(deps, tenantId, spec, dataset);
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
  await deps.memoryFit.check(spec, dataset.classes.length, { tenantId, store: deps.store, baseModels: new BaseModelsRepository(deps.db), models: deps.models });
  return dataset;
}

/** domain_adaptation: the target domain's unlabelled images, and optionally its labelled test set. */
async function checkTargetDatasets(deps: AppDeps, tenantId: string, spec: JobSpec, source: Dataset): Promise<void> {
  const target = await deps.datasets.get(tenantId, spec.targetDatasetId!);
  if (!target || target.status !== 'ready') throw new DomainError('unknown_dataset', `dataset ${spec.targetDatasetId} (targetDatasetId) does not exist`, 422);
  if (target.kind !== 'unlabelled') {
    throw new DomainError('target_dataset_labelled', `targetDatasetId ${target.id} is a labelled dataset; upload the target domain's images with kind=unlabelled (a labelled one can be targetTestDatasetId)`, 422);
  }
  if (!spec.targetTestDatasetId) return;
  const test = await deps.datasets.get(tenantId, spec.targetTestDatasetId);
  if (!test || test.status !== 'ready') throw new DomainError('unknown_dataset', `dataset ${spec.targetTestDatasetId} (targetTestDatasetId) does not exist`, 422);
  if (test.kind !== 'labelled') throw new DomainError('unlabelled_dataset', `targetTestDatasetId ${test.id} is unlabelled; the target evaluation needs labels`, 422);
  const foreign = test.classes.filter((c) => !source.classes.includes(c));
  if (foreign.length > 0) {
    throw new DomainError('class_mismatch', `targetTestDatasetId has classes the training dataset lacks (${foreign.join(', ')}): the model cannot predict them`, 422);
  }
}

/**
 * The dataset's blocking data-check findings (label noise, leakage): warnings on the job, or —
 * with `strictDataChecks` — a 422 before anything is created.
 */
export function dataWarnings(dataset: Dataset, spec: JobSpec): JobWarning[] {
  const report = dataset.report as unknown as DataReport | null;
  const blocking = (report?.findings ?? []).filter((f) => f.severity === 'blocking');
  const warnings = blocking.map(({ check, severity, message, fileCount }) => ({ check, severity, message, fileCount }));
  if (spec.strictDataChecks && warnings.length > 0) {
    throw new DomainError(
      'data_checks_failed',
      `dataset ${dataset.id} has blocking data-check findings (${warnings.map((w) => w.check).join(', ')}); see GET /v1/datasets/${dataset.id}/report, or set strictDataChecks: false`,
      422,
      { findings: warnings },
    );
  }
  return warnings;
}

export interface JobWarning {
  check: string;
  severity: string;
  message: string;
  fileCount: number;
}

export interface CreatedJob {
  job: Job;
  /** True when an Idempotency-Key matched an earlier submission and nothing new was created. */
  replayed: boolean;
}

/** The spec as stored and run: the server's runtime budget filled in and capped. */
function effectiveSpec(deps: AppDeps, input: JobSpecInput): JobSpec {
  const spec = withDefaults(input);
  const limit = deps.config.maxJobRuntimeSeconds;
  if (spec.maxRuntimeSeconds !== null && spec.maxRuntimeSeconds > limit) {
    throw new DomainError('max_runtime_too_long', `maxRuntimeSeconds ${spec.maxRuntimeSeconds} exceeds this server's limit of ${limit} (MAX_JOB_RUNTIME_SECONDS)`, 422);
  }
  return { ...spec, maxRuntimeSeconds: spec.maxRuntimeSeconds ?? limit };
}

function replay(earlier: Job, spec: JobSpec): CreatedJob {
  // Compared as stored: through JSON, as Postgres keeps it (so -0 and 0 are the same number).
  if (!isDeepStrictEqual(earlier.spec, JSON.parse(JSON.stringify(spec)))) {
    throw new DomainError('idempotency_key_reused', 'this Idempotency-Key was used for a different job spec', 422);
  }
  return { job: earlier, replayed: true };
}

/**
 * Row first, then the queue: Postgres is the record, BullMQ the delivery. If Redis refuses the
 * enqueue, the row is removed again and the caller gets a 503; were the removal to fail too,
 * reconciliation enqueues the job once Redis is back, so it is never stranded.
 */
export async function createJob(deps: AppDeps, tenantId: string, input: JobSpecInput, idempotencyKey?: string): Promise<CreatedJob> {
  const spec = effectiveSpec(deps, input);
  if (idempotencyKey) {
    const earlier = await deps.jobs.findByIdempotencyKey(tenantId, idempotencyKey);
    if (earlier) return replay(earlier, spec);
  }
  const warnings = dataWarnings(await checkSpec(deps, tenantId, spec), spec);

  const { job, created } = await deps.jobs.create({
    id: randomUUID(),
    tenantId,
    datasetId: spec.datasetId,
    baseModel: baseModelLabel(spec.baseModel),
    strategy: spec.strategy,
    spec: spec as object,
    epochs: totalEpochs(spec),
    idempotencyKey: idempotencyKey ?? null,
    warnings: warnings as object[],
  }, deps.config.quotas);
  // A concurrent request with the same key inserted first.
  if (!created) return replay(job, spec);
  try {
    await deps.queue.enqueue(job.id);
  } catch (error) {
    await deps.jobs.discardUnstarted(job.id);
    throw new DomainError('queue_unavailable', `the job queue is unavailable: ${(error as Error).message}`, 503);
  }
  return { job, replayed: false };
}

export async function getJob(deps: AppDeps, tenantId: string, id: string): Promise<JobWithModel> {
  const job = await deps.jobs.get(id, tenantId);
  if (!job) throw new NotFoundError('job', id);
  return job;
}

/** GET /v1/jobs/:id: the job and its epoch metrics, read together. */
export async function getJobWithMetrics(deps: AppDeps, tenantId: string, id: string): Promise<{ job: JobWithModel; metrics: EpochMetric[] }> {
  const found = await deps.jobs.getWithMetrics(id, tenantId);
  if (!found) throw new NotFoundError('job', id);
  return found;
}

export async function cancelJob(deps: AppDeps, tenantId: string, id: string): Promise<JobWithModel> {
  const outcome = await deps.jobs.requestCancel(tenantId, id);
  if (!outcome) throw new NotFoundError('job', id);
  // Best effort: a worker that still receives it finds the job canceled and skips it.
  if (outcome === 'canceled') await deps.queue.removeWaiting(id).catch(() => false);
  // A job waiting out a retry backoff is resumed now, to turn its best epoch into the model.
  else await deps.queue.promote(id).catch(() => undefined);
  return getJob(deps, tenantId, id);
}

/** Deletes a finished job: its checkpoints, metrics, and its model with the model's files. */
export async function deleteJob(deps: AppDeps, tenantId: string, id: string): Promise<void> {
  const deleted = await deps.jobs.deleteFinished(tenantId, id);
  if (!deleted) throw new NotFoundError('job', id);
  // Rows first: nothing may point at objects being deleted. A failure here leaves only
  // unreachable objects under the job's and model's prefixes.
  await deps.store.deletePrefix(keys.jobPrefix(id));
  if (deleted.modelId) await deps.store.deletePrefix(keys.modelPrefix(deleted.modelId));
}

export async function listCheckpoints(deps: AppDeps, tenantId: string, id: string): Promise<Checkpoint[]> {
  await getJob(deps, tenantId, id);
  return deps.jobs.checkpoints(id, tenantId);
}

export function presentCheckpoint(c: Checkpoint) {
  return {
    epoch: c.epoch,
    trainLoss: c.trainLoss,
    trainAccuracy: c.trainAcc,
    valLoss: c.valLoss,
    valAccuracy: c.valAcc,
    sizeBytes: Number(c.sizeBytes),
    elapsedMs: c.elapsedMs,
    createdAt: c.createdAt.toISOString(),
  };
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

export function presentJob(job: JobWithModel, metrics: EpochMetric[]) {
  const last = metrics[metrics.length - 1] ?? null;
  const best = bestEpoch(metrics); // the rule training keeps weights by
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
    microBatchSize: job.microBatchSize,
    learningRateFinder: job.learningRateFinder,
    // Blocking data-check findings of the dataset when the job was created.
    warnings: (job.warnings as JobWarning[] | null) ?? [],
    // The latest run's phases, plus how long the job waited for its first run.
    timings: job.timings === null ? null : { queueWaitMs: job.startedAt ? job.startedAt.getTime() - job.createdAt.getTime() : null, ...(job.timings as object) },
    runtime: job.runtime,
    embeddingCache: job.embeddingCacheHit === null ? null : job.embeddingCacheHit ? 'reused' : 'computed',
    stoppedEarly: job.stoppedEarly,
    // A trial ASHA ranked out ends canceled; the reason says it was the sweep, not the user.
    stopReason: job.ashaStopped && job.status === 'canceled' ? 'asha_stopped' : job.stopReason,
    sweepId: job.sweepId,
    trialNumber: job.trialNumber,
    attempts: job.attempts,
    runs: job.runs,
    cancelRequested: job.cancelRequested,
    error: job.errorCode ? { code: job.errorCode, message: job.errorMessage ?? '' } : null,
    createdAt: job.createdAt.toISOString(),
    startedAt: job.startedAt?.toISOString() ?? null,
    finishedAt: job.finishedAt?.toISOString() ?? null,
  };
}
