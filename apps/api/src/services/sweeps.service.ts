import { randomUUID } from 'node:crypto';
import {
  DomainError,
  getPath,
  isBetterScore,
  metricDirection,
  NotFoundError,
  sweepProblems,
  sweepWithDefaults,
  trialScore,
  trialSpec,
  type SweepSpec,
  type SweepSpecInput,
} from '@finetune/core';
import type { EpochMetric, Sweep, SweepsRepository, SweepTrial } from '@finetune/db';
import { keys } from '@finetune/storage';
import type { AppDeps } from '../deps.ts';
import { cancelJob, checkSpec, dataWarnings, type JobWarning } from './jobs.service.ts';

export interface SweepDeps extends AppDeps {
  sweeps: SweepsRepository;
}

/**
 * Validates a sweep completely before anything exists — the space (every path a hyperparameter,
 * every value it can produce valid, the trials the seed draws valid job specs: 422
 * `invalid_space` naming the path) and, on its first trial, everything a job is checked for
 * (dataset, base model, data checks) — then stores it `queued`. The workers' sweep controller
 * starts the trials.
 */
export async function createSweep(deps: SweepDeps, tenantId: string, input: SweepSpecInput): Promise<Sweep> {
  const spec: SweepSpec = sweepWithDefaults(input);
  const limit = deps.config.maxJobRuntimeSeconds;
  if (spec.maxRuntimeSeconds !== null && spec.maxRuntimeSeconds > limit) {
    throw new DomainError('max_runtime_too_long', `maxRuntimeSeconds ${spec.maxRuntimeSeconds} exceeds this server's limit of ${limit} (MAX_JOB_RUNTIME_SECONDS)`, 422);
  }
  spec.maxRuntimeSeconds ??= limit;

  const [problem, ...more] = sweepProblems(spec);
  if (problem) {
    throw new DomainError('invalid_space', `${problem.path}: ${problem.message}`, 422, { path: problem.path, problems: [problem, ...more].slice(0, 20) });
  }
  const first = trialSpec(spec, 0).spec;
  const dataset = await checkSpec(deps, tenantId, first);
  if (spec.metric.startsWith('val_') && dataset.layout !== 'split' && first.hyperparameters.validationSplit === 0) {
    throw new DomainError('no_validation_data', `metric ${spec.metric} needs validation data; validationSplit is 0 and the dataset has no val/ split`, 422);
  }
  const warnings = dataWarnings(dataset, first);
  return deps.sweeps.create({
    id: randomUUID(),
    tenantId,
    datasetId: spec.datasetId,
    spec: spec as object,
    searcher: spec.searcher,
    metric: spec.metric,
    maxTrials: spec.maxTrials,
    maxConcurrentTrials: spec.maxConcurrentTrials,
    warnings: warnings as object[],
  });
}

export async function getSweep(deps: SweepDeps, tenantId: string, id: string): Promise<Sweep> {
  const sweep = await deps.sweeps.get(id, tenantId);
  if (!sweep) throw new NotFoundError('sweep', id);
  return sweep;
}

/**
 * Cancels the sweep (no more trials start) and then each unfinished trial, as POST
 * /v1/jobs/:id/cancel would: a queued one at once, a running one after its current batch,
 * keeping its best epoch as its model.
 */
export async function cancelSweep(deps: SweepDeps, tenantId: string, id: string): Promise<Sweep> {
  const sweep = await deps.sweeps.cancel(tenantId, id);
  if (!sweep) throw new NotFoundError('sweep', id);
  for (const trial of await deps.sweeps.trials([id])) {
    if (!['queued', 'running', 'retrying'].includes(trial.status)) continue;
    try {
      await cancelJob(deps, tenantId, trial.id);
    } catch (error) {
      // It finished meanwhile: nothing left to cancel.
      if (!(error instanceof DomainError && error.code === 'job_not_cancelable')) throw error;
    }
  }
  return sweep;
}

/** Deletes a finished sweep with its trials: their rows, checkpoints and models, in S3 too. */
export async function deleteSweep(deps: SweepDeps, tenantId: string, id: string): Promise<void> {
  const deleted = await deps.sweeps.deleteFinished(tenantId, id);
  if (!deleted) throw new NotFoundError('sweep', id);
  // Rows first: nothing points at the objects any more; a failure leaves only unreachable objects.
  for (const jobId of deleted.jobIds) await deps.store.deletePrefix(keys.jobPrefix(jobId));
  for (const modelId of deleted.modelIds) await deps.store.deletePrefix(keys.modelPrefix(modelId));
}

/** Trials and each trial's best epoch for some sweeps, in two queries. */
export async function loadTrials(deps: SweepDeps, sweepIds: string[]): Promise<{ trials: SweepTrial[]; best: Map<string, EpochMetric> }> {
  const trials = await deps.sweeps.trials(sweepIds);
  const rows = await deps.sweeps.bestEpochs(trials.map((t) => t.id));
  return { trials, best: new Map(rows.map((row) => [row.jobId, row])) };
}

function presentTrial(sweep: Sweep, trial: SweepTrial, best: EpochMetric | undefined) {
  const spec = sweep.spec as unknown as SweepSpec;
  const hyperparameters = (trial.spec as { hyperparameters?: unknown }).hyperparameters;
  const params = Object.fromEntries(Object.keys(spec.space).map((path) => [path, getPath(hyperparameters, path) ?? null]));
  return {
    trialNumber: trial.trialNumber ?? 0,
    jobId: trial.id,
    status: trial.status,
    params,
    metric: best ? trialScore([best], spec.metric) : null,
    epochsRun: trial.epoch,
    epochs: trial.epochs,
    stoppedByAsha: trial.ashaStopped && trial.status === 'canceled',
    modelId: trial.model?.id ?? null,
  };
}

type TrialEntry = ReturnType<typeof presentTrial>;

/** Best metric first (ties: the earlier trial), trials without a metric last by number. */
export function rankTrials(entries: TrialEntry[], metric: SweepSpec['metric']): TrialEntry[] {
  const direction = metricDirection(metric);
  return [...entries].sort((a, b) => {
    if (a.metric !== null && b.metric !== null && a.metric !== b.metric) return isBetterScore(a.metric, b.metric, direction) ? -1 : 1;
    if ((a.metric === null) !== (b.metric === null)) return a.metric === null ? 1 : -1;
    return a.trialNumber - b.trialNumber;
  });
}

/**
 * A sweep as the API shows it. The best trial is the best-ranked trial that has a model — a
 * finished one, an ASHA-stopped trial included when its metric really is the best — and its
 * model is the sweep's `modelId`. While the sweep runs, that is the leader so far.
 */
export function presentSweep(sweep: Sweep, trials: SweepTrial[], best: Map<string, EpochMetric>, withLeaderboard: boolean) {
  const spec = sweep.spec as unknown as SweepSpec;
  const own = trials.filter((t) => t.sweepId === sweep.id);
  const leaderboard = rankTrials(own.map((t) => presentTrial(sweep, t, best.get(t.id))), spec.metric);
  const bestTrial = leaderboard.find((entry) => entry.modelId !== null && entry.metric !== null) ?? null;
  const count = (...statuses: string[]) => own.filter((t) => statuses.includes(t.status)).length;
  return {
    id: sweep.id,
    status: sweep.status,
    datasetId: sweep.datasetId,
    searcher: spec.searcher,
    metric: sweep.metric,
    spec: sweep.spec,
    maxTrials: sweep.maxTrials,
    maxConcurrentTrials: sweep.maxConcurrentTrials,
    counts: {
      created: sweep.trialsCreated,
      queued: count('queued'),
      running: count('running', 'retrying'),
      succeeded: count('succeeded'),
      failed: count('failed'),
      canceled: count('canceled'),
      stoppedByAsha: leaderboard.filter((entry) => entry.stoppedByAsha).length,
    },
    bestTrial,
    modelId: bestTrial?.modelId ?? null,
    ...(withLeaderboard ? { leaderboard } : {}),
    warnings: (sweep.warnings as JobWarning[] | null) ?? [],
    error: sweep.errorCode ? { code: sweep.errorCode, message: sweep.errorMessage ?? '' } : null,
    createdAt: sweep.createdAt.toISOString(),
    startedAt: sweep.startedAt?.toISOString() ?? null,
    finishedAt: sweep.finishedAt?.toISOString() ?? null,
  };
}

