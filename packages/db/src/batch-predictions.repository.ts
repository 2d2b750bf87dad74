import { randomUUID } from 'node:crypto';
import { DomainError } from '@finetune/core';
import type { Db } from './client.ts';
import type { BatchPrediction } from './generated/client.ts';
import type { BatchPredictionStatus } from './generated/enums.ts';
import { pageArgs, toPage, type Page, type PageRequest } from './pagination.ts';

/** Where each status may be reached from. `running` from `running`: BullMQ redelivers a run
 * whose worker died while the row still says running; the new lease fences the old run out. */
const SOURCES: Record<BatchPredictionStatus, readonly BatchPredictionStatus[]> = {
  queued: ['running'],
  running: ['queued', 'running'],
  succeeded: ['running'],
  failed: ['queued', 'running'],
};

export interface BatchCounts {
  total: number;
  done: number;
  failed: number;
}

/**
 * The one owner of batch-prediction rows. Every status change is one guarded UPDATE … WHERE
 * status IN (allowed sources) [AND leaseToken = the run's]: a change that lost a race matches no
 * row and reports false. Reads by the API carry the tenant: another tenant's row is null.
 */
export class BatchPredictionsRepository {
  constructor(private readonly db: Db) {}

  private async transition(id: string, to: BatchPredictionStatus, lease: string | undefined, data: Partial<BatchPrediction>): Promise<boolean> {
    const result = await this.db.batchPrediction.updateMany({
      where: { id, status: { in: [...SOURCES[to]] }, ...(lease ? { leaseToken: lease } : {}) },
      data: { ...data, status: to },
    });
    return result.count === 1;
  }

  // ------------------------------------------------------------------------------------------
  // The API's part

  /**
   * Inserts a queued batch prediction. The dataset must be the tenant's and `ready`; its row is
   * locked (FOR SHARE, as job creation does) so a concurrent delete cannot slip in between.
   */
  async create(data: { id: string; tenantId: string; modelId: string; datasetId: string }): Promise<BatchPrediction> {
    return this.db.$transaction(async (tx) => {
      const rows = await tx.$queryRaw<{ status: string }[]>`
        SELECT status::text AS status FROM datasets
         WHERE id = ${data.datasetId}::uuid AND "tenantId" = ${data.tenantId}::uuid FOR SHARE`;
      if (rows[0]?.status !== 'ready') throw new DomainError('unknown_dataset', `dataset ${data.datasetId} does not exist`, 422);
      return tx.batchPrediction.create({ data: { ...data, status: 'queued' } });
    });
  }

  /** Undoes `create` when the queue refused it: only a row no worker has touched. */
  async discardUnstarted(id: string): Promise<void> {
    await this.db.batchPrediction.deleteMany({ where: { id, status: 'queued', runs: 0 } });
  }

  /** With a tenant (every API read) another tenant's row is null; the worker reads by id alone. */
  get(id: string, tenantId?: string): Promise<BatchPrediction | null> {
    return this.db.batchPrediction.findFirst({ where: tenantId ? { id, tenantId } : { id } });
  }

  async list(tenantId: string, page: PageRequest): Promise<Page<BatchPrediction>> {
    return toPage(await this.db.batchPrediction.findMany({ where: { tenantId }, ...pageArgs(page) }), page.limit);
  }

  /** Deletes the tenant's row whatever its status; returns it (its objects are the caller's), or null. */
  async delete(tenantId: string, id: string): Promise<BatchPrediction | null> {
    const row = await this.get(id, tenantId);
    if (!row) return null;
    // A concurrent delete may have won between the read and here.
    const deleted = await this.db.batchPrediction.deleteMany({ where: { id, tenantId } });
    return deleted.count === 1 ? row : null;
  }

  // ------------------------------------------------------------------------------------------
  // The worker's part: claim (a fresh lease), progress and one final transition under it.

  /** queued | running → running with a fresh lease and counts reset: a run always starts over. */
  async claim(id: string): Promise<{ row: BatchPrediction; lease: string } | null> {
    const lease = randomUUID();
    const now = new Date();
    const result = await this.db.batchPrediction.updateMany({
      where: { id, status: { in: [...SOURCES.running] } },
      data: { status: 'running', leaseToken: lease, runs: { increment: 1 }, total: 0, done: 0, failed: 0, errorCode: null, errorMessage: null },
    });
    if (result.count !== 1) return null;
    await this.db.batchPrediction.updateMany({ where: { id, leaseToken: lease, startedAt: null }, data: { startedAt: now } });
    const row = await this.db.batchPrediction.findUnique({ where: { id } });
    return row ? { row, lease } : null;
  }

  /** Records progress; false once the run no longer owns the row (taken over, or deleted). */
  async progress(id: string, lease: string, counts: Partial<BatchCounts>): Promise<boolean> {
    const result = await this.db.batchPrediction.updateMany({ where: { id, leaseToken: lease, status: 'running' }, data: counts });
    return result.count === 1;
  }

  /** running → succeeded; called only once the results object is in S3. */
  succeed(id: string, lease: string, counts: BatchCounts): Promise<boolean> {
    return this.transition(id, 'succeeded', lease, { ...counts, leaseToken: null, finishedAt: new Date() });
  }

  /** → failed. With a lease only that run may; without (the queue gave up) any unfinished row. */
  fail(id: string, error: { code: string; message: string }, lease?: string): Promise<boolean> {
    return this.transition(id, 'failed', lease, { errorCode: error.code, errorMessage: error.message, leaseToken: null, finishedAt: new Date() });
  }

  /** running → queued: handed back (shutdown) or waiting for a retry; the next run starts over. */
  requeue(id: string, lease: string, error?: { code: string; message: string }): Promise<boolean> {
    return this.transition(id, 'queued', lease, { leaseToken: null, errorCode: error?.code ?? null, errorMessage: error?.message ?? null });
  }
}
