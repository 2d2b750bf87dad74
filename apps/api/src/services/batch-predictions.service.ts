import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import { DomainError, NotFoundError } from '@finetune/core';
import type { BatchPrediction, BatchPredictionsRepository } from '@finetune/db';
import type { BatchPredictQueue } from '@finetune/queue';
import { keys } from '@finetune/storage';
import type { AppDeps } from '../deps.ts';

/** What batch predictions need beyond the app's dependencies: their rows and their queue. */
export interface BatchDeps {
  batches: BatchPredictionsRepository;
  queue: BatchPredictQueue;
}

export function presentBatchPrediction(row: BatchPrediction) {
  return {
    id: row.id,
    modelId: row.modelId,
    datasetId: row.datasetId,
    status: row.status,
    counts: { total: row.total, done: row.done, failed: row.failed },
    error: row.errorCode ? { code: row.errorCode, message: row.errorMessage ?? '' } : null,
    createdAt: row.createdAt.toISOString(),
    startedAt: row.startedAt?.toISOString() ?? null,
    finishedAt: row.finishedAt?.toISOString() ?? null,
  };
}

/**
 * Row first, then the queue (as jobs do): if Redis refuses the enqueue the row is removed again
 * and the caller gets a 503. The model must be the tenant's (404); the dataset the tenant's and
 * ready (422 unknown_dataset, checked under a lock on its row).
 */
export async function createBatchPrediction(deps: AppDeps, bp: BatchDeps, tenantId: string, modelId: string, datasetId: string): Promise<BatchPrediction> {
  if (!(await deps.models.get(tenantId, modelId))) throw new NotFoundError('model', modelId);
  const row = await bp.batches.create({ id: randomUUID(), tenantId, modelId, datasetId });
  try {
    await bp.queue.enqueue(row.id);
  } catch (error) {
    await bp.batches.discardUnstarted(row.id);
    throw new DomainError('queue_unavailable', `the batch-prediction queue is unavailable: ${(error as Error).message}`, 503);
  }
  return row;
}

export async function getBatchPrediction(bp: BatchDeps, tenantId: string, id: string): Promise<BatchPrediction> {
  const row = await bp.batches.get(id, tenantId);
  if (!row) throw new NotFoundError('batch_prediction', id);
  return row;
}

/** The results as stored (JSON Lines), streamed from S3; only once the run has succeeded. */
export async function batchPredictionResults(deps: AppDeps, bp: BatchDeps, tenantId: string, id: string): Promise<Readable> {
  const row = await getBatchPrediction(bp, tenantId, id);
  if (row.status === 'failed') {
    throw new DomainError('batch_prediction_failed', `batch prediction ${id} failed (${row.errorCode}): it has no results`, 409);
  }
  if (row.status !== 'succeeded') {
    throw new DomainError('batch_prediction_not_finished', `batch prediction ${id} is ${row.status}; results are available once it succeeded`, 409);
  }
  return deps.store.getStream(keys.batchPredictionResults(id));
}

/**
 * Deletes a batch prediction in any state: the row first (it stops being listed or served at
 * once), then its queue entry if no worker took it, then its objects. A run in progress finds its
 * row gone at its next progress write and stops; one that uploads anyway removes what it wrote.
 */
export async function deleteBatchPrediction(deps: AppDeps, bp: BatchDeps, tenantId: string, id: string): Promise<void> {
  const row = await bp.batches.delete(tenantId, id);
  if (!row) throw new NotFoundError('batch_prediction', id);
  await bp.queue.removeWaiting(id).catch(() => undefined);
  await deps.store.deletePrefix(keys.batchPredictionPrefix(id));
}
