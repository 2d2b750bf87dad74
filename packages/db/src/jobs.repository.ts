import { DomainError } from '@finetune/core';
import type { Db } from './client.ts';
import type { Checkpoint, EpochMetric, Job, Model, Prisma } from './generated/client.ts';
import { pageArgs, toPage, type Page, type PageRequest } from './pagination.ts';

export type JobWithModel = Job & { model: Pick<Model, 'id'> | null };

export interface EpochMetricInput {
  epoch: number;
  trainLoss: number;
  trainAcc: number;
  valLoss: number | null;
  valAcc: number | null;
  learningRate: number;
  durationMs: number;
  stage: number | null;
}

export type CancelOutcome = 'canceled' | 'cancel_requested';

export class JobsRepository {
  constructor(private readonly db: Db) {}

  /**
   * Inserts a job for a dataset that must be `ready`. Locks the dataset row so a concurrent
   * DELETE cannot remove the data between the check and the insert.
   */
  async create(data: Omit<Prisma.JobUncheckedCreateInput, 'datasetId'> & { datasetId: string }): Promise<Job> {
    return this.db.$transaction(async (tx) => {
      const rows = await tx.$queryRaw<{ status: string }[]>`
        SELECT status::text AS status FROM datasets WHERE id = ${data.datasetId}::uuid FOR SHARE`;
      if (rows[0]?.status !== 'ready') {
        throw new DomainError('unknown_dataset', `dataset ${data.datasetId} does not exist`, 422);
      }
      return tx.job.create({ data });
    });
  }

  findByIdempotencyKey(key: string): Promise<Job | null> {
    return this.db.job.findUnique({ where: { idempotencyKey: key } });
  }

  get(id: string): Promise<JobWithModel | null> {
    return this.db.job.findUnique({ where: { id }, include: { model: { select: { id: true } } } });
  }

  async list(page: PageRequest, status?: Job['status']): Promise<Page<JobWithModel>> {
    const rows = await this.db.job.findMany({
      where: status ? { status } : {},
      include: { model: { select: { id: true } } },
      ...pageArgs(page),
    });
    return toPage(rows, page.limit);
  }

  metrics(jobId: string): Promise<EpochMetric[]> {
    return this.db.epochMetric.findMany({ where: { jobId }, orderBy: { epoch: 'asc' } });
  }

  checkpoints(jobId: string): Promise<Checkpoint[]> {
    return this.db.checkpoint.findMany({ where: { jobId }, orderBy: { epoch: 'asc' } });
  }

  /**
   * queued → canceled at once (the worker skips it); running → flagged, and the worker stops
   * after its current batch. Finished jobs cannot be canceled.
   */
  async requestCancel(id: string): Promise<CancelOutcome | null> {
    const now = new Date();
    const queued = await this.db.job.updateMany({
      where: { id, status: 'queued' },
      data: { status: 'canceled', cancelRequested: true, finishedAt: now },
    });
    if (queued.count === 1) return 'canceled';
    const running = await this.db.job.updateMany({ where: { id, status: 'running' }, data: { cancelRequested: true } });
    if (running.count === 1) return 'cancel_requested';
    const job = await this.db.job.findUnique({ where: { id }, select: { status: true } });
    if (!job) return null;
    throw new DomainError('job_not_cancelable', `job ${id} is already ${job.status}`, 409);
  }

  async isCancelRequested(id: string): Promise<boolean> {
    const job = await this.db.job.findUnique({ where: { id }, select: { cancelRequested: true } });
    return job?.cancelRequested ?? true;
  }

  /** Claims a job for a run (first attempt or a retry). False when it was canceled meanwhile. */
  async markRunning(id: string, backend: string, attempt: number): Promise<boolean> {
    const result = await this.db.job.updateMany({
      where: { id, status: { in: ['queued', 'running'] }, cancelRequested: false },
      data: { status: 'running', backend, attempts: attempt, startedAt: new Date(), errorCode: null, errorMessage: null },
    });
    return result.count === 1;
  }

  async recordSkippedImages(id: string, skippedImages: number): Promise<void> {
    await this.db.job.update({ where: { id }, data: { skippedImages } });
  }

  async recordTrainingFacts(id: string, facts: { embeddingCacheHit: boolean | null; stoppedEarly: boolean }): Promise<void> {
    await this.db.job.update({ where: { id }, data: facts });
  }

  /** Upsert: a retried job re-runs epochs and overwrites what the failed attempt wrote. */
  async recordEpoch(jobId: string, metric: EpochMetricInput, checkpointKey: string): Promise<void> {
    await this.db.$transaction([
      this.db.epochMetric.upsert({
        where: { jobId_epoch: { jobId, epoch: metric.epoch } },
        create: { jobId, ...metric },
        update: metric,
      }),
      this.db.checkpoint.upsert({
        where: { jobId_epoch: { jobId, epoch: metric.epoch } },
        create: { jobId, epoch: metric.epoch, storageKey: checkpointKey, valAcc: metric.valAcc },
        update: { storageKey: checkpointKey, valAcc: metric.valAcc },
      }),
      this.db.job.update({ where: { id: jobId }, data: { epoch: metric.epoch } }),
    ]);
  }

  async succeed(
    id: string,
    model: Omit<Prisma.ModelUncheckedCreateInput, 'jobId'>,
  ): Promise<void> {
    await this.db.$transaction([
      this.db.model.upsert({ where: { jobId: id }, create: { ...model, jobId: id }, update: {} }),
      this.db.job.update({ where: { id }, data: { status: 'succeeded', finishedAt: new Date() } }),
    ]);
  }

  async finish(id: string, status: 'failed' | 'canceled', error?: { code: string; message: string }): Promise<void> {
    await this.db.job.updateMany({
      where: { id, status: { in: ['queued', 'running'] } },
      data: {
        status,
        finishedAt: new Date(),
        errorCode: error?.code ?? null,
        errorMessage: error?.message ?? null,
      },
    });
  }
}
