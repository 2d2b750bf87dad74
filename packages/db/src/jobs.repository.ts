import { randomUUID } from 'node:crypto';
import {
  ACTIVE_STATUSES,
  checkJobQuotas,
  DomainError,
  type QuotaLimits,
  transitionSources,
  type JobStatusName,
  type StopReason,
} from '@finetune/core';
import { poolOf, type Db } from './client.ts';
import type { Checkpoint, EpochMetric, Job, Model, Prisma } from './generated/client.ts';
import { readJobWithMetrics } from './job-with-metrics.ts';
import { pageArgs, toPage, type Page, type PageRequest } from './pagination.ts';
import { lockTenantQuotas, tenantUsage } from './usage.ts';

export type JobWithModel = Job & { model: Pick<Model, 'id'> | null };

export interface JobFilters {
  status?: Job['status'] | undefined;
  datasetId?: string | undefined;
  createdAfter?: Date | undefined;
  /** A sweep's trials. */
  sweepId?: string | undefined;
}

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

export interface CheckpointInput {
  storagePrefix: string;
  sizeBytes: number;
  elapsedMs: number;
}

/** The model row's tenant is always its job's. */
export type ModelInput = Omit<Prisma.ModelUncheckedCreateInput, 'jobId' | 'tenantId'>;

export interface JobError {
  code: string;
  message: string;
}

/** What a running attempt needs to know between batches. */
export interface RunControl {
  /** False once another run took the job over (or it left `running`): stop, write nothing. */
  ownsJob: boolean;
  cancelRequested: boolean;
}

export type CancelOutcome = 'canceled' | 'cancel_requested';

/** Thrown by a run's writes once its lease is gone: another run owns the job now. */
export class LeaseLostError extends Error {
  constructor(jobId: string) {
    super(`job ${jobId} is no longer owned by this run`);
    this.name = 'LeaseLostError';
  }
}

type Client = Db | Prisma.TransactionClient;

// A run's per-epoch writes as single statements on the pg pool under Prisma (see `poolOf`): the
// lease check (the job row locked FOR UPDATE) and every write in one round trip, atomic as one
// statement is. A write of a run that lost its lease finds no `owned` row and changes nothing.
const OWNED = `owned AS (SELECT id FROM jobs WHERE id = $1::uuid AND "leaseToken" = $2::uuid AND status = 'running' FOR UPDATE)`;

const RECORD_EPOCH = {
  name: 'finetune_record_epoch',
  text: `WITH ${OWNED},
    metric AS (
      INSERT INTO epoch_metrics ("jobId", epoch, "trainLoss", "trainAcc", "valLoss", "valAcc", "learningRate", "durationMs", stage)
      SELECT id, $3::int, $4::float8, $5::float8, $6::float8, $7::float8, $8::float8, $9::int, $10::int FROM owned
      ON CONFLICT ("jobId", epoch) DO UPDATE SET "trainLoss" = EXCLUDED."trainLoss", "trainAcc" = EXCLUDED."trainAcc", "valLoss" = EXCLUDED."valLoss",
        "valAcc" = EXCLUDED."valAcc", "learningRate" = EXCLUDED."learningRate", "durationMs" = EXCLUDED."durationMs", stage = EXCLUDED.stage),
    checkpoint AS (
      INSERT INTO checkpoints ("jobId", epoch, "storagePrefix", "sizeBytes", "trainLoss", "trainAcc", "valLoss", "valAcc", "elapsedMs")
      SELECT id, $3::int, $12::text, $13::bigint, $4::float8, $5::float8, $6::float8, $7::float8, $14::int FROM owned WHERE $12::text IS NOT NULL
      ON CONFLICT ("jobId", epoch) DO UPDATE SET "storagePrefix" = EXCLUDED."storagePrefix", "sizeBytes" = EXCLUDED."sizeBytes", "trainLoss" = EXCLUDED."trainLoss",
        "trainAcc" = EXCLUDED."trainAcc", "valLoss" = EXCLUDED."valLoss", "valAcc" = EXCLUDED."valAcc", "elapsedMs" = EXCLUDED."elapsedMs"),
    progressed AS (UPDATE jobs SET epoch = $3::int, "heartbeatAt" = $11::timestamp(3), "updatedAt" = $11::timestamp(3) FROM owned WHERE jobs.id = owned.id)
    SELECT count(*)::int AS owned FROM owned`,
};

const RECORD_CHECKPOINTS = {
  name: 'finetune_record_checkpoints',
  text: `WITH ${OWNED},
    given AS (SELECT * FROM unnest($3::int[], $4::text[], $5::bigint[], $6::int[]) AS g(epoch, "storagePrefix", "sizeBytes", "elapsedMs")),
    recorded AS (
      INSERT INTO checkpoints ("jobId", epoch, "storagePrefix", "sizeBytes", "trainLoss", "trainAcc", "valLoss", "valAcc", "elapsedMs")
      SELECT owned.id, g.epoch, g."storagePrefix", g."sizeBytes", m."trainLoss", m."trainAcc", m."valLoss", m."valAcc", g."elapsedMs"
      FROM owned CROSS JOIN given g JOIN epoch_metrics m ON m."jobId" = owned.id AND m.epoch = g.epoch
      ON CONFLICT ("jobId", epoch) DO UPDATE SET "storagePrefix" = EXCLUDED."storagePrefix", "sizeBytes" = EXCLUDED."sizeBytes", "elapsedMs" = EXCLUDED."elapsedMs"
      RETURNING epoch)
    SELECT (SELECT count(*) FROM owned)::int AS owned, (SELECT count(*) FROM recorded)::int AS recorded`,
};

const FORGET_EPOCHS_AFTER = {
  name: 'finetune_forget_epochs_after',
  text: `WITH ${OWNED},
    dropped AS (DELETE FROM checkpoints c USING owned WHERE c."jobId" = owned.id AND c.epoch > $3::int RETURNING c."storagePrefix"),
    forgotten AS (DELETE FROM epoch_metrics e USING owned WHERE e."jobId" = owned.id AND e.epoch > $3::int),
    rewound AS (UPDATE jobs SET epoch = $3::int, "updatedAt" = $4::timestamp(3) FROM owned WHERE jobs.id = owned.id)
    SELECT (SELECT count(*) FROM owned)::int AS owned, COALESCE((SELECT array_agg("storagePrefix") FROM dropped), '{}') AS dropped`,
};

/** A timestamp as Prisma stores DateTime columns (`timestamp without time zone`, in UTC). */
const utcText = (d: Date) => d.toISOString().replace('T', ' ').replace('Z', '');

interface TransitionGuard {
  /** Only the run holding this lease may make the change. */
  lease?: string;
  /** Narrows the allowed sources further than the state machine does. */
  from?: readonly JobStatusName[];
  /** Only when the owner's heartbeat is older than this (or absent): its run is presumed dead. */
  heartbeatBefore?: Date;
  /** Only while no epoch has been trained. */
  untrained?: boolean;
}

/**
 * The one owner of job rows. Every status change goes through `transition`, a single guarded
 * UPDATE … WHERE status IN (the sources the state machine allows) [AND lease_token = the
 * caller's]; a change that lost a race simply matches no row and reports false.
 */
export class JobsRepository {
  constructor(private readonly db: Db) {}

  private async transition(
    client: Client,
    id: string,
    to: JobStatusName,
    guard: TransitionGuard,
    data: Prisma.JobUpdateManyMutationInput = {},
  ): Promise<boolean> {
    const sources = transitionSources(to).filter((s) => !guard.from || guard.from.includes(s));
    const where: Prisma.JobWhereInput = { id, status: { in: [...sources] } };
    if (guard.lease) where.leaseToken = guard.lease;
    if (guard.heartbeatBefore) where.OR = [{ heartbeatAt: null }, { heartbeatAt: { lt: guard.heartbeatBefore } }];
    if (guard.untrained) where.epoch = 0;
    const result = await client.job.updateMany({ where, data: { ...data, status: to } });
    return result.count === 1;
  }

  private async tenantOf(client: Client, id: string): Promise<string> {
    return (await client.job.findUniqueOrThrow({ where: { id }, select: { tenantId: true } })).tenantId;
  }

  // ------------------------------------------------------------------------------------------
  // Reads

  /** Idempotency keys are scoped per tenant. */
  findByIdempotencyKey(tenantId: string, key: string): Promise<Job | null> {
    return this.db.job.findUnique({ where: { tenantId_idempotencyKey: { tenantId, idempotencyKey: key } } });
  }

  /**
   * One job. With a tenant (every API read), another tenant's job is null, exactly like a
   * missing one; the worker, which works from the job row itself, reads by id alone.
   */
  get(id: string, tenantId?: string): Promise<JobWithModel | null> {
    return this.db.job.findFirst({ where: tenantId ? { id, tenantId } : { id }, include: { model: { select: { id: true } } } });
  }

  /** A tenant's job with its epoch metrics, in one round trip (GET /v1/jobs/:id); null as `get`. */
  getWithMetrics(id: string, tenantId: string): Promise<{ job: JobWithModel; metrics: EpochMetric[] } | null> {
    return readJobWithMetrics(poolOf(this.db), id, tenantId);
  }

  async list(tenantId: string, page: PageRequest, filters: JobFilters = {}): Promise<Page<JobWithModel>> {
    const rows = await this.db.job.findMany({
      where: {
        tenantId,
        ...(filters.status ? { status: filters.status } : {}),
        ...(filters.datasetId ? { datasetId: filters.datasetId } : {}),
        ...(filters.sweepId ? { sweepId: filters.sweepId } : {}),
        ...(filters.createdAfter ? { createdAt: { gt: filters.createdAfter } } : {}),
      },
      include: { model: { select: { id: true } } },
      ...pageArgs(page),
    });
    return toPage(rows, page.limit);
  }

  /** A job's epoch metrics; with a tenant (the API), only if the job is that tenant's. */
  metrics(jobId: string, tenantId?: string): Promise<EpochMetric[]> {
    return this.db.epochMetric.findMany({ where: tenantId ? { jobId, job: { tenantId } } : { jobId }, orderBy: { epoch: 'asc' } });
  }

  /** A job's checkpoints; with a tenant (the API), only if the job is that tenant's. */
  checkpoints(jobId: string, tenantId?: string): Promise<Checkpoint[]> {
    return this.db.checkpoint.findMany({ where: tenantId ? { jobId, job: { tenantId } } : { jobId }, orderBy: { epoch: 'asc' } });
  }

  /** Jobs that still owe work and have not changed for a while: reconciliation's candidates. */
  unfinished(updatedBefore: Date, limit = 500): Promise<Job[]> {
    return this.db.job.findMany({
      where: { status: { in: [...ACTIVE_STATUSES] }, updatedAt: { lt: updatedBefore } },
      orderBy: { updatedAt: 'asc' },
      take: limit,
    });
  }

  // ------------------------------------------------------------------------------------------
  // The API's part: create, cancel, delete.

  /**
   * Inserts a queued job for a dataset that must be `ready`. Locks the dataset row so a
   * concurrent DELETE cannot remove the data between the check and the insert. With an
   * idempotency key already taken (two identical requests at the same moment), returns the
   * job that took it, `created: false`.
   */
  /**
   * Inserts a queued job, checking the tenant's quotas (when given) under the tenant's row lock so
   * concurrent submissions cannot overshoot them. An `idempotencyKey` already used by the tenant
   * returns that job (`created: false`) instead — also when the quotas are full by now.
   */
  async create(
    data: Omit<Prisma.JobUncheckedCreateInput, 'datasetId' | 'status'> & { datasetId: string },
    quotas?: QuotaLimits,
  ): Promise<{ job: Job; created: boolean }> {
    const key = data.idempotencyKey;
    try {
      return await this.db.$transaction(async (tx) => {
        if (quotas) {
          const limits = await lockTenantQuotas(tx, data.tenantId, quotas);
          if (!limits) throw new DomainError('unknown_tenant', `tenant ${data.tenantId} does not exist`, 422);
          const earlier = key ? await tx.job.findFirst({ where: { tenantId: data.tenantId, idempotencyKey: key } }) : null;
          if (earlier) return { job: earlier, created: false };
          checkJobQuotas(await tenantUsage(tx, data.tenantId), limits);
        }
        // Every dataset the job reads (a domain_adaptation job's target datasets too) must be the
        // same tenant's — another tenant's is as unknown as a missing one — and stays locked
        // against a concurrent delete until the job row exists.
        for (const [field, datasetId] of jobDatasets(data)) {
          const rows = await tx.$queryRaw<{ status: string }[]>`
            SELECT status::text AS status FROM datasets
             WHERE id = ${datasetId}::uuid AND "tenantId" = ${data.tenantId}::uuid FOR SHARE`;
          if (rows[0]?.status !== 'ready') {
            throw new DomainError('unknown_dataset', `dataset ${datasetId} (${field}) does not exist`, 422);
          }
        }
        return { job: await tx.job.create({ data: { ...data, status: 'queued' } }), created: true };
      });
    } catch (error) {
      if (key && (error as { code?: string }).code === 'P2002') {
        const winner = await this.findByIdempotencyKey(data.tenantId, key);
        if (winner) return { job: winner, created: false };
      }
      throw error;
    }
  }

  /** Undoes `create` when the job could not be enqueued: only a job no worker has touched. */
  async discardUnstarted(id: string): Promise<void> {
    await this.db.job.deleteMany({ where: { id, status: 'queued', runs: 0 } });
  }

  /**
   * A job with nothing trained yet (queued, or retrying before its first epoch) is canceled at
   * once and never runs. A job with trained epochs — running, or waiting to resume — is flagged:
   * its run stops after the current batch (a waiting one is resumed just for that) and ends
   * `canceled` with the best epoch so far as a model.
   */
  async requestCancel(tenantId: string, id: string): Promise<CancelOutcome | null> {
    // Only the tenant's own job: another tenant's is answered as a missing one.
    if (!(await this.db.job.findFirst({ where: { id, tenantId }, select: { id: true } }))) return null;
    const now = new Date();
    const data = { cancelRequested: true, finishedAt: now, stopReason: 'canceled', leaseToken: null };
    if (await this.transition(this.db, id, 'canceled', { from: ['queued', 'retrying'], untrained: true }, data)) return 'canceled';
    // Not a status change: the run that owns (or will own) the job ends it.
    const flagged = await this.db.job.updateMany({
      where: { id, status: { in: ['queued', 'running', 'retrying'] } },
      data: { cancelRequested: true },
    });
    if (flagged.count === 1) return 'cancel_requested';
    const job = await this.db.job.findUnique({ where: { id }, select: { status: true } });
    if (!job) return null;
    throw new DomainError('job_not_cancelable', `job ${id} is already ${job.status}`, 409);
  }

  /**
   * Deletes a finished job's rows (metrics, checkpoints and model cascade). Returns what its
   * objects were, or null when it does not exist; refuses a job that still owes work.
   */
  async deleteFinished(tenantId: string, id: string): Promise<{ modelId: string | null } | null> {
    return this.db.$transaction(async (tx) => {
      const job = await tx.job.findFirst({ where: { id, tenantId }, include: { model: { select: { id: true } } } });
      if (!job) return null;
      const removed = await tx.job.deleteMany({ where: { id, tenantId, status: { in: ['succeeded', 'failed', 'canceled'] } } });
      if (removed.count === 0) {
        // A concurrent delete removed it while this one waited: as if it never existed.
        const still = await tx.job.findUnique({ where: { id }, select: { status: true } });
        if (!still) return null;
        throw new DomainError('job_not_finished', `job ${id} is ${still.status}; cancel it first`, 409);
      }
      return { modelId: job.model?.id ?? null };
    });
  }

  // ------------------------------------------------------------------------------------------
  // The worker's part: a run claims the job (getting a lease), renews it, writes under it, and
  // ends it with exactly one transition.

  /**
   * queued | retrying | running → running with a fresh lease. `running` is a valid source
   * because BullMQ redelivers a job whose worker died (its lock lapsed) while the row still says
   * running; the new lease fences the old run out. Null when the job is finished or gone.
   */
  async claim(id: string, run: { attempt: number }): Promise<{ job: Job; lease: string } | null> {
    const lease = randomUUID();
    const now = new Date();
    const claimed = await this.transition(this.db, id, 'running', {}, {
      leaseToken: lease,
      heartbeatAt: now,
      attempts: run.attempt,
      runs: { increment: 1 },
      errorCode: null,
      errorMessage: null,
    });
    if (!claimed) return null;
    const job = await this.db.job.findUniqueOrThrow({ where: { id } });
    if (!job.startedAt) await this.db.job.updateMany({ where: { id, leaseToken: lease }, data: { startedAt: now } });
    return { job, lease };
  }

  /** Renews the run's heartbeat; false when the run no longer owns the job. */
  async heartbeat(id: string, lease: string): Promise<boolean> {
    const result = await this.db.job.updateMany({
      where: { id, leaseToken: lease, status: 'running' },
      data: { heartbeatAt: new Date() },
    });
    return result.count === 1;
  }

  async runControl(id: string, lease: string): Promise<RunControl> {
    const job = await this.db.job.findUnique({ where: { id }, select: { leaseToken: true, status: true, cancelRequested: true } });
    return { ownsJob: job?.leaseToken === lease && job.status === 'running', cancelRequested: job?.cancelRequested ?? true };
  }

  private async updateOwned(id: string, lease: string, data: Prisma.JobUpdateManyMutationInput): Promise<void> {
    const result = await this.db.job.updateMany({ where: { id, leaseToken: lease, status: 'running' }, data });
    if (result.count === 0) throw new LeaseLostError(id);
  }

  /** The engine the run trains on (known once its process has loaded a backend). */
  recordBackend(id: string, lease: string, backend: string): Promise<void> {
    return this.updateOwned(id, lease, { backend });
  }

  /** Where the run's time went and what ran it (shown on the job). */
  recordRun(id: string, lease: string, run: { timings: Record<string, number>; runtime: Record<string, string | null> }): Promise<void> {
    return this.updateOwned(id, lease, run);
  }

  /** The learning-rate range test of a job with learningRate "auto" (under the run's lease). */
  recordLearningRateFinder(id: string, lease: string, finder: { suggested: number; chosen: number; curve: { lr: number; loss: number }[] }): Promise<void> {
    return this.updateOwned(id, lease, { learningRateFinder: finder });
  }

  recordSkippedImages(id: string, lease: string, skippedImages: number): Promise<void> {
    return this.updateOwned(id, lease, { skippedImages });
  }

  recordTrainingFacts(
    id: string,
    lease: string,
    facts: { embeddingCacheHit: boolean | null; stoppedEarly: boolean; microBatchSize: number | null },
  ): Promise<void> {
    return this.updateOwned(id, lease, facts);
  }

  /**
   * Commits a completed epoch: its metrics row, its checkpoint row when it has one (whose objects
   * the caller has already written) and the job's epoch, atomically under the run's lease. A run
   * that lost its lease commits nothing (LeaseLostError), so a stale run cannot rewrite history.
   * One statement, one round trip: it runs after every epoch, and head-only epochs take
   * milliseconds.
   */
  async recordEpoch(jobId: string, lease: string, metric: EpochMetricInput, checkpoint: CheckpointInput | null): Promise<void> {
    const now = utcText(new Date());
    const result = await poolOf(this.db).query<{ owned: number }>({
      ...RECORD_EPOCH,
      values: [
        jobId,
        lease,
        metric.epoch,
        metric.trainLoss,
        metric.trainAcc,
        metric.valLoss,
        metric.valAcc,
        metric.learningRate,
        Math.round(metric.durationMs),
        metric.stage,
        now,
        checkpoint?.storagePrefix ?? null,
        checkpoint ? String(checkpoint.sizeBytes) : null,
        checkpoint ? Math.round(checkpoint.elapsedMs) : null,
      ],
    });
    if (result.rows[0]!.owned === 0) throw new LeaseLostError(jobId);
  }

  /**
   * Checkpoint rows for epochs whose metrics rows this run has already committed (a checkpoint
   * written after its epoch: see the worker's checkpoint cadence), under the run's lease. The
   * rows take their metrics from those rows.
   */
  async recordCheckpoints(jobId: string, lease: string, checkpoints: Array<CheckpointInput & { epoch: number }>): Promise<void> {
    if (checkpoints.length === 0) return;
    const result = await poolOf(this.db).query<{ owned: number; recorded: number }>({
      ...RECORD_CHECKPOINTS,
      values: [
        jobId,
        lease,
        checkpoints.map((c) => c.epoch),
        checkpoints.map((c) => c.storagePrefix),
        checkpoints.map((c) => String(c.sizeBytes)),
        checkpoints.map((c) => Math.round(c.elapsedMs)),
      ],
    });
    const { owned, recorded } = result.rows[0]!;
    if (owned === 0) throw new LeaseLostError(jobId);
    if (recorded !== checkpoints.length) throw new Error(`job ${jobId}: a checkpoint for an epoch without a metrics row (epochs ${checkpoints.map((c) => c.epoch).join(', ')})`);
  }

  /**
   * Forgets epochs after `epoch` (their metrics and checkpoint rows): a resumed run that could not
   * use a later checkpoint re-trains them. Returns the forgotten checkpoints' prefixes. One
   * statement: every run starts with it.
   */
  async forgetEpochsAfter(jobId: string, lease: string, epoch: number): Promise<string[]> {
    const result = await poolOf(this.db).query<{ owned: number; dropped: string[] }>({ ...FORGET_EPOCHS_AFTER, values: [jobId, lease, epoch, utcText(new Date())] });
    const row = result.rows[0]!;
    if (row.owned === 0) throw new LeaseLostError(jobId);
    return row.dropped;
  }

  /** Removes checkpoint rows (retention). The caller deletes their objects afterwards. */
  async deleteCheckpoints(jobId: string, epochs: number[]): Promise<void> {
    if (epochs.length === 0) return;
    await this.db.checkpoint.deleteMany({ where: { jobId, epoch: { in: epochs } } });
  }

  /** running → succeeded and the model row, atomically. False when the run lost the job. */
  async succeed(id: string, lease: string, model: ModelInput, stopReason: StopReason): Promise<boolean> {
    return this.db.$transaction(async (tx) => {
      const done = await this.transition(tx, id, 'succeeded', { lease }, { finishedAt: new Date(), stopReason, leaseToken: null, heartbeatAt: null });
      if (done) await tx.model.create({ data: { ...model, jobId: id, tenantId: await this.tenantOf(tx, id) } });
      return done;
    });
  }

  /** running → canceled, keeping the best epoch as a model when one completed. */
  async finishCanceled(id: string, lease: string, model: ModelInput | null): Promise<boolean> {
    return this.db.$transaction(async (tx) => {
      const done = await this.transition(tx, id, 'canceled', { lease }, { finishedAt: new Date(), stopReason: 'canceled', leaseToken: null, heartbeatAt: null });
      if (done && model) await tx.model.create({ data: { ...model, jobId: id, tenantId: await this.tenantOf(tx, id) } });
      return done;
    });
  }

  /** running → retrying: the attempt failed transiently and BullMQ will deliver it again. */
  retrying(id: string, lease: string, error: JobError): Promise<boolean> {
    return this.transition(this.db, id, 'retrying', { lease }, { errorCode: error.code, errorMessage: error.message, leaseToken: null, heartbeatAt: null });
  }

  /**
   * running → retrying when BullMQ reports the run stalled (its worker stopped renewing the lock)
   * and the run's heartbeat has stopped too; BullMQ delivers the job again and the next run
   * resumes from the last checkpoint. A run that is alive keeps its job.
   */
  runLost(id: string, heartbeatBefore: Date): Promise<boolean> {
    return this.transition(this.db, id, 'retrying', { from: ['running'], heartbeatBefore }, {
      errorCode: 'worker_lost',
      errorMessage: 'the worker running this job stopped responding; the job resumes from its last checkpoint',
      leaseToken: null,
      heartbeatAt: null,
    });
  }

  /**
   * → failed with a reason. With a lease, only that run may fail the job; without one (a BullMQ
   * event, reconciliation), any unfinished job is failed.
   */
  fail(id: string, error: JobError, lease?: string): Promise<boolean> {
    return this.transition(this.db, id, 'failed', lease ? { lease } : {}, {
      errorCode: error.code,
      errorMessage: error.message,
      finishedAt: new Date(),
      leaseToken: null,
      heartbeatAt: null,
    });
  }

  /**
   * running | retrying → queued: the job goes back to the queue without counting as a failed
   * attempt (a worker shutting down hands it over; reconciliation re-queues a job whose run
   * died with its queue entry). Reconciliation passes `heartbeatBefore` so a live run is never
   * taken over.
   */
  requeue(id: string, guard: { lease: string } | { heartbeatBefore: Date; from: readonly JobStatusName[] }): Promise<boolean> {
    return this.transition(this.db, id, 'queued', guard, { leaseToken: null, heartbeatAt: null });
  }

}

/** The datasets a job reads, by the spec field that names them. */
function jobDatasets(data: { datasetId: string; spec: unknown }): [field: string, id: string][] {
  const spec = data.spec as { targetDatasetId?: string; targetTestDatasetId?: string } | null;
  const found: [string, string][] = [['datasetId', data.datasetId]];
  if (spec?.targetDatasetId) found.push(['targetDatasetId', spec.targetDatasetId]);
  if (spec?.targetTestDatasetId) found.push(['targetTestDatasetId', spec.targetTestDatasetId]);
  return found;
}
