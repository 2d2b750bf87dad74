import { Queue, QueueEvents as QueueEventsClass, Worker, type Job, type Processor, type QueueEvents as QueueEventsType } from 'bullmq';
import { Redis } from 'ioredis';

// The job catalogue: every queue name and the payload each job name carries. BullMQ only
// delivers work; the job's state that users see lives in Postgres.
export const TRAINING_QUEUE = 'training';

export interface JobPayloads {
  train: { jobId: string };
}
export type JobName = keyof JobPayloads;

export type TrainingJob = Job<JobPayloads['train'], unknown, 'train'>;

export interface QueueSettings {
  redisUrl: string;
  prefix: string;
}

/**
 * API-side connection: fail fast while Redis is down instead of queueing commands in memory
 * (bullmq going-to-production.md), so a request gets a clear 503 rather than hanging.
 */
export function createProducerConnection(redisUrl: string): Redis {
  return new Redis(redisUrl, { maxRetriesPerRequest: 1, enableOfflineQueue: false, lazyConnect: false });
}

/** Worker-side connection: BullMQ requires maxRetriesPerRequest null for blocking commands. */
/**
 * BullMQ waits for its connection indefinitely; a request must not. Gives a (re)connecting Redis
 * a moment, then fails so the caller can answer 503.
 */
export async function untilConnected(connection: Redis, timeoutMs = 3_000): Promise<void> {
  if (connection.status === 'ready') return;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      connection.off('ready', onReady);
      reject(new Error(`Redis is not reachable (connection ${connection.status})`));
    }, timeoutMs);
    const onReady = () => {
      clearTimeout(timer);
      resolve();
    };
    connection.once('ready', onReady);
  });
}

export function createWorkerConnection(redisUrl: string): Redis {
  return new Redis(redisUrl, { maxRetriesPerRequest: null });
}

export interface DeliverySettings {
  /** BullMQ attempts per job (failed attempts + 1). */
  attempts: number;
  /** First retry delay; doubles per attempt. */
  backoffMs: number;
}

/** Where BullMQ has a job: its state, or `missing` when Redis holds no entry for it. */
export interface Delivery {
  state: 'waiting' | 'delayed' | 'prioritized' | 'waiting-children' | 'active' | 'completed' | 'failed' | 'missing';
  failedReason?: string;
}

export class TrainingQueue {
  readonly queue: Queue<JobPayloads['train'], unknown, 'train'>;

  constructor(
    readonly connection: Redis,
    prefix: string,
    private readonly delivery: DeliverySettings,
  ) {
    this.queue = new Queue(TRAINING_QUEUE, { connection, prefix });
    // While Redis is down ioredis emits an error per reconnect attempt. The API reports the
    // outage through /readyz and 503s; unhandled 'error' events would only flood stderr.
    const remember = (error: Error) => (this.lastError = error);
    connection.on('error', remember);
    this.queue.on('error', remember);
  }

  /** The most recent connection error: readiness reports it. */
  lastError: Error | undefined;

  private connected(): Promise<void> {
    return untilConnected(this.connection);
  }

  /** The BullMQ job id is the Postgres job id: enqueueing twice delivers once. */
  async enqueue(jobId: string): Promise<void> {
    await this.connected();
    await this.queue.add(
      'train',
      { jobId },
      {
        jobId,
        attempts: this.delivery.attempts,
        backoff: { type: 'exponential', delay: this.delivery.backoffMs },
        removeOnComplete: { age: 24 * 3600, count: 1000 },
        removeOnFail: { age: 7 * 24 * 3600 },
      },
    );
  }

  /** Removes a job that has not started. False when it is running (or already gone). */
  async removeWaiting(jobId: string): Promise<boolean> {
    await this.connected();
    const job = await this.queue.getJob(jobId);
    if (!job) return false;
    if (await job.isActive()) return false;
    try {
      await job.remove();
      return true;
    } catch {
      // Locked: a worker picked it up between the check and the remove. The worker sees the
      // canceled row in Postgres and skips it.
      return false;
    }
  }

  /** Delivers a job that waits out a retry backoff now. */
  async promote(jobId: string): Promise<void> {
    await this.connected();
    const job = await this.queue.getJob(jobId);
    if (job && (await job.isDelayed())) await job.promote();
  }

  async deliveryOf(jobId: string): Promise<Delivery> {
    await this.connected();
    const job = await this.queue.getJob(jobId);
    if (!job) return { state: 'missing' };
    const state = await job.getState();
    if (state === 'unknown') return { state: 'missing' };
    return { state, failedReason: job.failedReason };
  }

  /** The progress the job's running worker last reported (BullMQ keeps it on the entry), or null. */
  async progressOf(jobId: string): Promise<Record<string, unknown> | null> {
    await this.connected();
    const job = await this.queue.getJob(jobId);
    const progress = job?.progress;
    return progress !== null && typeof progress === 'object' ? (progress as Record<string, unknown>) : null;
  }

  /**
   * Puts a job whose queue entry is gone or finished back in the queue. A finished entry is
   * removed first: BullMQ ignores an add whose id already exists.
   */
  async redeliver(jobId: string): Promise<void> {
    await this.connected();
    const job = await this.queue.getJob(jobId);
    if (job && ((await job.isCompleted()) || (await job.isFailed()))) await job.remove();
    await this.enqueue(jobId);
  }

  /** Entries per BullMQ state (waiting, active, delayed, failed, completed, …), for the API's metrics. */
  async counts(): Promise<Record<string, number>> {
    await this.connected();
    return this.queue.getJobCounts();
  }

  async ping(): Promise<void> {
    try {
      await this.connection.ping();
    } catch (error) {
      // "Stream isn't writeable" says little; the last connection error says why.
      throw this.lastError ? new Error(`${(error as Error).message} (${this.lastError.message})`) : error;
    }
  }

  async close(): Promise<void> {
    await this.queue.close();
  }
}

export type WorkerSettings = QueueSettings & { concurrency: number; lockDurationMs: number };

/**
 * A BullMQ worker of one of our queues, on a connection of its own. Every consumer keeps its
 * event loop free while it works (training runs in a child process; inference and downloads
 * yield between batches), so the lock is renewed every half `lockDurationMs` and only has to
 * outlast a short pause; a worker that dies loses it, and the job is redelivered (twice at most).
 */
export function createQueueWorker<Data, Name extends string>(queue: string, processor: Processor<Data, unknown, Name>, settings: WorkerSettings): Worker<Data, unknown, Name> {
  const connection = createWorkerConnection(settings.redisUrl);
  const worker = new Worker<Data, unknown, Name>(queue, processor, {
    connection,
    prefix: settings.prefix,
    concurrency: settings.concurrency,
    lockDuration: settings.lockDurationMs,
    stalledInterval: settings.lockDurationMs,
    maxStalledCount: 2,
  });
  // BullMQ does not close a connection it was handed; this one is ours alone.
  worker.on('closed', () => connection.disconnect());
  return worker;
}

export function createTrainingWorker(processor: Processor<JobPayloads['train'], unknown, 'train'>, settings: WorkerSettings): Worker<JobPayloads['train'], unknown, 'train'> {
  return createQueueWorker(TRAINING_QUEUE, processor, settings);
}

export { UnrecoverableError } from 'bullmq';
export type { Worker, Job } from 'bullmq';
export { reconcile, leaseTimings, failureCode, failureMessage, type ReconcilableJobs, type ReconcileOptions, type ReconcileReport } from './reconcile.ts';
export { WaitingError, QueueEvents } from 'bullmq';

/** A listener for the queue's global events (any worker's failures and stalls). */
export function createTrainingEvents(settings: QueueSettings): { events: QueueEventsType; close(): Promise<void> } {
  const connection = createWorkerConnection(settings.redisUrl);
  const events = new QueueEventsClass(TRAINING_QUEUE, { connection, prefix: settings.prefix });
  return {
    events,
    async close() {
      await events.close();
      connection.disconnect();
    },
  };
}
export {
  BATCH_PREDICT_QUEUE,
  BatchPredictQueue,
  createBatchPredictWorker,
  createBatchPredictEvents,
  type BatchPredictJob,
  type BatchPredictPayload,
} from './batch-predict.ts';
export {
  BASE_MODEL_FETCH_QUEUE,
  BaseModelFetchQueue,
  createBaseModelFetchWorker,
  type BaseModelFetchJob,
  type BaseModelFetchPayload,
} from './base-model-fetch.ts';
export { deleteKeysWithPrefix } from './key-cleanup.ts';
