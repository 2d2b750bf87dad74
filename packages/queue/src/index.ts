import { Queue, Worker, type Job, type Processor } from 'bullmq';
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
export function createWorkerConnection(redisUrl: string): Redis {
  return new Redis(redisUrl, { maxRetriesPerRequest: null });
}

export class TrainingQueue {
  readonly queue: Queue<JobPayloads['train'], unknown, 'train'>;

  constructor(
    readonly connection: Redis,
    prefix: string,
    private readonly attempts: number,
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

  /**
   * BullMQ waits for its connection indefinitely; a request must not. Give a (re)connecting
   * Redis a moment, then fail so the caller can answer 503.
   */
  private async connected(timeoutMs = 3_000): Promise<void> {
    if (this.connection.status === 'ready') return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.connection.off('ready', onReady);
        reject(new Error(`Redis is not reachable (connection ${this.connection.status})`));
      }, timeoutMs);
      const onReady = () => {
        clearTimeout(timer);
        resolve();
      };
      this.connection.once('ready', onReady);
    });
  }

  /** The BullMQ job id is the Postgres job id: enqueueing twice delivers once. */
  async enqueue(jobId: string): Promise<void> {
    await this.connected();
    await this.queue.add(
      'train',
      { jobId },
      {
        jobId,
        attempts: this.attempts,
        backoff: { type: 'exponential', delay: 5_000 },
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

export function createTrainingWorker(
  processor: Processor<JobPayloads['train'], unknown, 'train'>,
  settings: QueueSettings & { concurrency: number; lockDurationMs: number },
): Worker<JobPayloads['train'], unknown, 'train'> {
  const connection = createWorkerConnection(settings.redisUrl);
  const worker = new Worker(TRAINING_QUEUE, processor, {
    connection,
    prefix: settings.prefix,
    concurrency: settings.concurrency,
    // Training runs in a child process, so this event loop stays free to renew locks (every
    // half lock duration); the lock only has to outlast a short pause, not a training run.
    lockDuration: settings.lockDurationMs,
    stalledInterval: settings.lockDurationMs,
    maxStalledCount: 2,
  });
  // BullMQ does not close a connection it was handed; this one is ours alone.
  worker.on('closed', () => connection.disconnect());
  return worker;
}

export { UnrecoverableError } from 'bullmq';
export type { Worker, Job } from 'bullmq';
