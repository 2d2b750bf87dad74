import { Queue, QueueEvents, Worker, type Job, type Processor } from 'bullmq';
import type { Redis } from 'ioredis';
import { createQueueWorker, createWorkerConnection, untilConnected, type DeliverySettings, type QueueSettings, type WorkerSettings } from './index.ts';

// Batch prediction has a queue of its own: a long training run never holds up a batch (and the
// other way round), and each gets its own concurrency. Postgres keeps the state users read.
export const BATCH_PREDICT_QUEUE = 'batch-predict';

export interface BatchPredictPayload {
  batchPredictionId: string;
}

export type BatchPredictJob = Job<BatchPredictPayload, unknown, 'batch-predict'>;

/** The API's producer. The BullMQ job id is the row's id: enqueueing twice delivers once. */
export class BatchPredictQueue {
  readonly queue: Queue<BatchPredictPayload, unknown, 'batch-predict'>;

  constructor(
    readonly connection: Redis,
    prefix: string,
    private readonly delivery: DeliverySettings,
  ) {
    this.queue = new Queue(BATCH_PREDICT_QUEUE, { connection, prefix });
    // The connection's owner reports outages (/readyz, 503s); unhandled events would only flood stderr.
    this.queue.on('error', () => undefined);
  }

  /** Fails within a few seconds while Redis is away (BullMQ itself would wait indefinitely). */
  private connected(): Promise<void> {
    return untilConnected(this.connection);
  }

  async enqueue(batchPredictionId: string): Promise<void> {
    await this.connected();
    await this.queue.add(
      'batch-predict',
      { batchPredictionId },
      {
        jobId: batchPredictionId,
        attempts: this.delivery.attempts,
        backoff: { type: 'exponential', delay: this.delivery.backoffMs },
        removeOnComplete: { age: 24 * 3600, count: 1000 },
        removeOnFail: { age: 7 * 24 * 3600 },
      },
    );
  }

  /** Best effort: removes an entry no worker has taken; a running one finds its row gone. */
  async removeWaiting(batchPredictionId: string): Promise<void> {
    await this.connected();
    const job = await this.queue.getJob(batchPredictionId);
    if (!job || (await job.isActive())) return;
    await job.remove().catch(() => undefined);
  }

  async close(): Promise<void> {
    await this.queue.close();
  }
}

export function createBatchPredictWorker(processor: Processor<BatchPredictPayload, unknown, 'batch-predict'>, settings: WorkerSettings): Worker<BatchPredictPayload, unknown, 'batch-predict'> {
  return createQueueWorker(BATCH_PREDICT_QUEUE, processor, settings);
}

/** The queue's global events: a run BullMQ gave up on (stalled too often) must still end failed. */
export function createBatchPredictEvents(settings: QueueSettings): { events: QueueEvents; close(): Promise<void> } {
  const connection = createWorkerConnection(settings.redisUrl);
  const events = new QueueEvents(BATCH_PREDICT_QUEUE, { connection, prefix: settings.prefix });
  return {
    events,
    async close() {
      await events.close();
      connection.disconnect();
    },
  };
}
