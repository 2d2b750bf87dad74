import { randomUUID } from 'node:crypto';
import { ACTIVE_STATUSES, checkJobQuotas, DomainError, TERMINAL_STATUSES, type QuotaLimits } from '@finetune/core';
import type { Db } from './client.ts';
import type { EpochMetric, Job, Prisma, Sweep } from './generated/client.ts';
import { pageArgs, toPage, type Page, type PageRequest } from './pagination.ts';
import { lockTenantQuotas, tenantUsage } from './usage.ts';

export type SweepStatusName = Sweep['status'];

/** A trial as sweeps show it: the job's state, its sampled spec and its model. */
export type SweepTrial = Pick<
  Job,
  'id' | 'tenantId' | 'sweepId' | 'trialNumber' | 'status' | 'epoch' | 'epochs' | 'spec' | 'ashaStopped' | 'cancelRequested' | 'stopReason' | 'createdAt' | 'finishedAt'
> & { model: { id: string } | null };

export interface SweepFilters {
  status?: SweepStatusName | undefined;
  createdAfter?: Date | undefined;
}

/** ASHA's records: rung epoch → the trials recorded there, in the order they were recorded. */
export type RungRecords = Record<string, Array<{ jobId: string; value: number | null; continued: boolean }>>;

const ACTIVE_SWEEP: SweepStatusName[] = ['queued', 'running'];
const FINISHED_SWEEP: SweepStatusName[] = ['succeeded', 'failed', 'canceled'];

const trialSelect = {
  id: true,
  tenantId: true,
  sweepId: true,
  trialNumber: true,
  status: true,
  epoch: true,
  epochs: true,
  spec: true,
  ashaStopped: true,
  cancelRequested: true,
  stopReason: true,
  createdAt: true,
  finishedAt: true,
  model: { select: { id: true } },
} satisfies Prisma.JobSelect;

export type TrialCreation =
  | { created: true; job: Job }
  /** The sweep moved on (canceled, finished) or another controller took it over: nothing created. */
  | { created: false };

/**
 * Sweep rows. The API creates, reads, cancels and deletes them; the workers' sweep controller
 * acts on an active sweep only while it holds the sweep's lease (`claim`), and every write it
 * makes is guarded by that lease, so two workers never act on one sweep at once and a worker
 * presumed dead (its lease expired) can change nothing afterwards.
 */
export class SweepsRepository {
  constructor(private readonly db: Db) {}

  create(data: Pick<Prisma.SweepUncheckedCreateInput, 'id' | 'tenantId' | 'datasetId' | 'spec' | 'searcher' | 'metric' | 'maxTrials' | 'maxConcurrentTrials' | 'warnings'>): Promise<Sweep> {
    return this.db.sweep.create({ data });
  }

  /** One sweep; another tenant's is null, exactly like a missing one. Without a tenant: the controller's read. */
  get(id: string, tenantId?: string): Promise<Sweep | null> {
    return this.db.sweep.findFirst({ where: tenantId ? { id, tenantId } : { id } });
  }

  async list(tenantId: string, page: PageRequest, filters: SweepFilters = {}): Promise<Page<Sweep>> {
    const rows = await this.db.sweep.findMany({
      where: {
        tenantId,
        ...(filters.status ? { status: filters.status } : {}),
        ...(filters.createdAfter ? { createdAt: { gt: filters.createdAfter } } : {}),
      },
      ...pageArgs(page),
    });
    return toPage(rows, page.limit);
  }

  /** The trials of some sweeps, by trial number. */
  trials(sweepIds: string[]): Promise<SweepTrial[]> {
    if (sweepIds.length === 0) return Promise.resolve([]);
    return this.db.job.findMany({ where: { sweepId: { in: sweepIds } }, select: trialSelect, orderBy: { trialNumber: 'asc' } });
  }

  /**
   * Each job's best epoch by the rule training keeps weights by (`bestEpoch`: higher accuracy —
   * validation when measured, else training — then lower loss, then earlier), in one query.
   */
  bestEpochs(jobIds: string[]): Promise<EpochMetric[]> {
    if (jobIds.length === 0) return Promise.resolve([]);
    return this.db.$queryRaw<EpochMetric[]>`
      SELECT DISTINCT ON ("jobId") * FROM epoch_metrics
       WHERE "jobId" = ANY(${jobIds}::uuid[])
       ORDER BY "jobId", coalesce("valAcc", "trainAcc") DESC, coalesce("valLoss", "trainLoss") ASC, epoch ASC`;
  }

  /** The epoch rows of some jobs up to an epoch: what ASHA's rung decisions read. */
  epochsUpTo(jobIds: string[], maxEpoch: number): Promise<EpochMetric[]> {
    if (jobIds.length === 0) return Promise.resolve([]);
    return this.db.epochMetric.findMany({ where: { jobId: { in: jobIds }, epoch: { lte: maxEpoch } }, orderBy: [{ jobId: 'asc' }, { epoch: 'asc' }] });
  }

  /**
   * queued | running → canceled. The update waits for a controller's trial creation in progress
   * (it holds the row), so every trial that will ever exist is visible once this returns. Null for
   * a missing sweep; 409 for a finished one.
   */
  async cancel(tenantId: string, id: string): Promise<Sweep | null> {
    const done = await this.db.sweep.updateMany({
      where: { id, tenantId, status: { in: ACTIVE_SWEEP } },
      data: { status: 'canceled', finishedAt: new Date(), leaseToken: null, leaseUntil: null },
    });
    const sweep = await this.get(id, tenantId);
    if (!sweep) return null;
    if (done.count === 0) throw new DomainError('sweep_not_cancelable', `sweep ${id} is already ${sweep.status}`, 409);
    return sweep;
  }

  /**
   * Deletes a finished sweep whose trials have all ended, with its trials' rows (their metrics,
   * checkpoints and models cascade). Returns the trials' job and model ids, whose objects the
   * caller deletes; null when the sweep does not exist.
   */
  async deleteFinished(tenantId: string, id: string): Promise<{ jobIds: string[]; modelIds: string[] } | null> {
    return this.db.$transaction(async (tx) => {
      const rows = await tx.$queryRaw<{ status: SweepStatusName }[]>`
        SELECT status::text AS status FROM sweeps WHERE id = ${id}::uuid AND "tenantId" = ${tenantId}::uuid FOR UPDATE`;
      const sweep = rows[0];
      if (!sweep) return null;
      if (!FINISHED_SWEEP.includes(sweep.status)) throw new DomainError('sweep_not_finished', `sweep ${id} is ${sweep.status}; cancel it first`, 409);
      const trials = await tx.job.findMany({ where: { sweepId: id }, select: { id: true, status: true, model: { select: { id: true } } } });
      const unfinished = trials.filter((trial) => !TERMINAL_STATUSES.includes(trial.status));
      if (unfinished.length > 0) {
        throw new DomainError('sweep_not_finished', `${unfinished.length} of sweep ${id}'s trials are still stopping; try again in a moment`, 409);
      }
      await tx.job.deleteMany({ where: { sweepId: id, status: { in: [...TERMINAL_STATUSES] } } });
      await tx.sweep.delete({ where: { id } });
      return { jobIds: trials.map((t) => t.id), modelIds: trials.flatMap((t) => (t.model ? [t.model.id] : [])) };
    });
  }

  // ------------------------------------------------------------------------------------------
  // The sweep controller's part

  /** Active sweeps no live controller holds: candidates for this one. */
  async claimable(limit = 50): Promise<string[]> {
    const rows = await this.db.sweep.findMany({
      where: { status: { in: ACTIVE_SWEEP }, OR: [{ leaseUntil: null }, { leaseUntil: { lt: new Date() } }] },
      select: { id: true },
      orderBy: { createdAt: 'asc' },
      take: limit,
    });
    return rows.map((r) => r.id);
  }

  /** Takes the sweep's lease when it is free or expired; the token guards every later write. */
  async claim(id: string, leaseMs: number): Promise<{ sweep: Sweep; lease: string } | null> {
    const lease = randomUUID();
    const now = new Date();
    const taken = await this.db.sweep.updateMany({
      where: { id, status: { in: ACTIVE_SWEEP }, OR: [{ leaseUntil: null }, { leaseUntil: { lt: now } }] },
      data: { leaseToken: lease, leaseUntil: new Date(now.getTime() + leaseMs) },
    });
    if (taken.count === 0) return null;
    const sweep = await this.db.sweep.findUnique({ where: { id } });
    return sweep ? { sweep, lease } : null;
  }

  async release(id: string, lease: string): Promise<void> {
    await this.db.sweep.updateMany({ where: { id, leaseToken: lease }, data: { leaseToken: null, leaseUntil: null } });
  }

  /**
   * Creates trial `trialNumber` as a queued job, within the tenant's quotas (checked under the
   * tenant's row lock, as every job creation is: a sweep's trials count as the tenant's concurrent
   * jobs). Throws QuotaExceededError when a quota is full, and DomainError `unknown_dataset` when
   * the dataset is gone. Creates nothing when the sweep is no longer active, its lease is not
   * `lease`, or the trial exists already.
   */
  async createTrial(
    sweepId: string,
    lease: string,
    trialNumber: number,
    data: Pick<Prisma.JobUncheckedCreateInput, 'id' | 'tenantId' | 'baseModel' | 'strategy' | 'spec' | 'epochs' | 'warnings'> & { datasetId: string },
    quotas: QuotaLimits,
  ): Promise<TrialCreation> {
    return this.db.$transaction(async (tx) => {
      const limits = await lockTenantQuotas(tx, data.tenantId, quotas);
      if (!limits) throw new DomainError('unknown_tenant', `tenant ${data.tenantId} does not exist`, 422);
      checkJobQuotas(await tenantUsage(tx, data.tenantId), limits);
      const dataset = await tx.$queryRaw<{ status: string }[]>`
        SELECT status::text AS status FROM datasets WHERE id = ${data.datasetId}::uuid AND "tenantId" = ${data.tenantId}::uuid FOR SHARE`;
      if (dataset[0]?.status !== 'ready') throw new DomainError('unknown_dataset', `dataset ${data.datasetId} no longer exists`, 422);
      // The counter moves only from the number this trial expects, under the lease, while the
      // sweep is active: a duplicate, a stale controller or a canceled sweep creates nothing.
      const now = new Date();
      const advanced = await tx.sweep.updateMany({
        where: { id: sweepId, leaseToken: lease, status: { in: ACTIVE_SWEEP }, trialsCreated: trialNumber },
        data: { trialsCreated: { increment: 1 }, status: 'running' },
      });
      if (advanced.count === 0) return { created: false } as const;
      await tx.sweep.updateMany({ where: { id: sweepId, startedAt: null }, data: { startedAt: now } });
      const job = await tx.job.create({ data: { ...data, sweepId, trialNumber, status: 'queued' } });
      return { created: true, job } as const;
    });
  }

  /** Saves ASHA's rung records; false when the lease is gone. */
  async recordRungs(id: string, lease: string, rungs: RungRecords): Promise<boolean> {
    const saved = await this.db.sweep.updateMany({ where: { id, leaseToken: lease, status: { in: ACTIVE_SWEEP } }, data: { rungs } });
    return saved.count === 1;
  }

  /**
   * Stops a trial ASHA ranked out: its run stops after the current batch, exactly as on a cancel,
   * and ends `canceled` keeping its best epoch as its model; `ashaStopped` records why. False when
   * the trial had already ended.
   */
  async stopTrial(jobId: string): Promise<boolean> {
    const flagged = await this.db.job.updateMany({
      where: { id: jobId, status: { in: [...ACTIVE_STATUSES] } },
      data: { cancelRequested: true, ashaStopped: true },
    });
    return flagged.count === 1;
  }

  /** running/queued → a final state, under the lease. */
  async finish(id: string, lease: string, status: 'succeeded' | 'failed', error?: { code: string; message: string }): Promise<boolean> {
    const done = await this.db.sweep.updateMany({
      where: { id, leaseToken: lease, status: { in: ACTIVE_SWEEP } },
      data: { status, finishedAt: new Date(), errorCode: error?.code ?? null, errorMessage: error?.message ?? null, leaseToken: null, leaseUntil: null },
    });
    return done.count === 1;
  }

  /** Remembers why the sweep can start no more trials (a quota other than concurrent jobs, a deleted dataset). */
  async recordError(id: string, lease: string, error: { code: string; message: string }): Promise<void> {
    await this.db.sweep.updateMany({ where: { id, leaseToken: lease }, data: { errorCode: error.code, errorMessage: error.message } });
  }
}
