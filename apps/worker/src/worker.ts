import type { Logger } from 'pino';
import type { Config } from '@finetune/core';
import { createDb, JobsRepository, SweepsRepository } from '@finetune/db';
import {
  createProducerConnection,
  createTrainingEvents,
  createTrainingWorker,
  failureCode,
  failureMessage,
  leaseTimings,
  reconcile,
  TrainingQueue,
  type ReconcileReport,
} from '@finetune/queue';
import { S3ObjectStore, withRetries } from '@finetune/storage';
import type { ParentMessage } from './training/messages.ts';
import { createTrainProcessor, type ProcessorState } from './processors/train.processor.ts';
import { startBatchPredictConsumer } from './processors/batch-predict.processor.ts';
import { startBaseModelFetchConsumer } from './processors/base-model-fetch.processor.ts';
import { createWorkerMetrics, type WorkerMetrics } from './metrics/index.ts';
import { startSweepController } from './sweeps/controller.ts';

export interface RunningWorker {
  /**
   * Graceful stop: running jobs stop at their next batch boundary and go back to the queue
   * (their last epoch's checkpoint is committed) without counting as a failed attempt.
   */
  close(): Promise<void>;
  /** One reconciliation sweep now (it also runs at start-up and every RECONCILE_INTERVAL_MS). */
  reconcileNow(): Promise<ReconcileReport>;
  /** This worker's Prometheus metrics (main.ts serves them). */
  metrics: WorkerMetrics;
  /** Liveness: taking jobs, not shutting down. */
  isRunning(): boolean;
}

/** A job created this recently may not be enqueued yet: reconciliation leaves it alone. */
const RECONCILE_GRACE_MS = 5_000;

export function startWorker(config: Config, log: Logger): RunningWorker {
  if (!config.databaseUrl) throw new Error('DATABASE_URL is required');
  if (!config.s3.endpoint) throw new Error('S3_ENDPOINT is required');
  const db = createDb(config.databaseUrl);
  const jobs = new JobsRepository(db);
  const s3 = new S3ObjectStore({ ...config.s3, endpoint: config.s3.endpoint });
  const store = withRetries(s3, { maxRetryTimeMs: config.dependencyRetryMs });
  const queue = new TrainingQueue(createProducerConnection(config.redisUrl), config.queuePrefix, {
    attempts: config.jobAttempts,
    backoffMs: config.jobRetryBackoffMs,
  });
  const { heartbeatMs, staleAfterMs } = leaseTimings(config.workerLockDurationMs);
  const state: ProcessorState = { active: new Set(), closing: false };
  const settings = { redisUrl: config.redisUrl, prefix: config.queuePrefix };
  const metrics = createWorkerMetrics();
  // Failures recorded here rather than by a run (the queue gave up, reconciliation) count too.
  const countFailed = (jobId: string) =>
    void jobs.get(jobId).then((job) => job && metrics.jobsTotal.inc({ strategy: job.strategy, status: 'failed' }), () => undefined);

  const worker = createTrainingWorker(createTrainProcessor({ jobs, store, log, state, heartbeatMs, metrics, childMaxRuns: config.trainingChildMaxRuns }), {
    ...settings,
    concurrency: config.workerConcurrency,
    lockDurationMs: config.workerLockDurationMs,
  });
  worker.on('error', (err) => log.error({ err }, 'worker error'));
  // The second queue: batch predictions, in this process (see the processor for why).
  const batchPredict = startBatchPredictConsumer({ config, db, store, log, settings });
  // The third: custom base models given by URL, fetched and validated here.
  const baseModelFetch = startBaseModelFetchConsumer({ config, db, store, log, settings });

  // BullMQ's own verdicts reach Postgres here, whichever worker they happened on: a job that
  // stalled (its worker died) waits for redelivery as `retrying`; one that BullMQ failed for
  // good — attempts used up, or stalled too often, which never reaches a processor — is `failed`.
  const { events, close: closeEvents } = createTrainingEvents(settings);
  events.on('error', (err) => log.warn({ err }, 'queue events error'));
  events.on('stalled', ({ jobId }) => {
    jobs.runLost(jobId, new Date(Date.now() - staleAfterMs)).then(
      (marked) => log.warn({ jobId, marked }, 'job stalled: its worker stopped renewing the lock'),
      (err: unknown) => log.error({ err, jobId }, 'recording a stall failed'),
    );
  });
  events.on('failed', ({ jobId, failedReason }) => {
    queue
      .deliveryOf(jobId)
      .then(async (delivery) => {
        if (delivery.state !== 'failed') return; // an attempt failed; BullMQ retries it
        const failed = await jobs.fail(jobId, { code: failureCode(failedReason), message: failureMessage(failedReason) });
        if (failed) log.warn({ jobId, failedReason }, 'job failed by the queue');
        if (failed) countFailed(jobId);
      })
      .catch((err: unknown) => log.error({ err, jobId }, 'recording a queue failure failed'));
  });

  const reconcileNow = async () => {
    const report = await reconcile(jobs, queue, { graceMs: RECONCILE_GRACE_MS, staleAfterMs });
    report.failed.forEach(countFailed);
    if (report.requeued.length + report.failed.length > 0) log.warn(report, 'reconciliation fixed jobs');
    return report;
  };
  const sweep = () => void reconcileNow().catch((err: unknown) => log.warn({ err }, 'reconciliation sweep failed'));
  const sweeper = setInterval(sweep, config.reconcileIntervalMs);
  sweep();
  // Redis back after an outage may have come back empty: look at once, not a period later.
  let wasDown = false;
  queue.connection.on('close', () => (wasDown = true));
  queue.connection.on('ready', () => {
    if (wasDown) sweep();
    wasDown = false;
  });

  // Sweeps: starting trials and ASHA's decisions, for any sweep no other worker is stepping.
  const sweepController = startSweepController({ sweeps: new SweepsRepository(db), queue, config, log });

  log.info({ concurrency: config.workerConcurrency, backend: config.mlBackend, heartbeatMs }, 'worker started');

  return {
    reconcileNow,
    metrics,
    isRunning: () => !state.closing && worker.isRunning(),
    async close() {
      state.closing = true;
      clearInterval(sweeper);
      for (const child of state.active) child.send({ type: 'stop' } satisfies ParentMessage);
      // A run gets the grace period to reach a batch boundary; after that it is killed, which
      // loses only its unfinished epoch (and is handed over the same way).
      const killer = setTimeout(() => {
        for (const child of state.active) child.kill('SIGKILL');
      }, config.workerShutdownGraceMs);
      try {
        await Promise.all([worker.close(), batchPredict.close(), baseModelFetch.close(), sweepController.close()]);
      } finally {
        clearTimeout(killer);
        await closeEvents().catch(() => undefined);
        await queue.close().catch(() => undefined);
        queue.connection.disconnect();
        s3.destroy();
        await db.$disconnect();
      }
    },
  };
}
