import { Queue, Worker, type Job, type Processor } from 'bullmq';
import type { Redis } from 'ioredis';
import { createQueueWorker, untilConnected, type DeliverySettings, type WorkerSettings } from './index.ts';

// A custom base given by URL is fetched by a worker, not by the API: downloading a model of
// hundreds of megabytes from somebody else's server must not hold a request open or load the
// API's memory. A queue of its own keeps these short downloads out from behind training runs.
export const BASE_MODEL_FETCH_QUEUE = 'base-model-fetch';

export interface BaseModelFetchPayload {
  baseModelId: string;
}

export type BaseModelFetchJob = Job<BaseModelFetchPayload, unknown, 'fetch'>;

/** The API's producer. The BullMQ job id is the row's id: enqueueing twice delivers once. */
export class BaseModelFetchQueue {
  readonly queue: Queue<BaseModelFetchPayload, unknown, 'fetch'>;

  constructor(
    readonly connection: Redis,
    prefix: string,
    private readonly delivery: DeliverySettings,
  ) {
    this.queue = new Queue(BASE_MODEL_FETCH_QUEUE, { connection, prefix });
    // The connection's owner reports outages (/readyz, 503s); unhandled events would only flood stderr.
    this.queue.on('error', () => undefined);
  }

  async enqueue(baseModelId: string): Promise<void> {
    await untilConnected(this.connection);
    await this.queue.add(
      'fetch',
      { baseModelId },
      {
        jobId: baseModelId,
        attempts: this.delivery.attempts,
        backoff: { type: 'exponential', delay: this.delivery.backoffMs },
        removeOnComplete: { age: 24 * 3600, count: 1000 },
        removeOnFail: { age: 7 * 24 * 3600 },
      },
    );
  }

  /** Best effort: removes an entry no worker has taken; a running fetch finds its row gone. */
  async removeWaiting(baseModelId: string): Promise<void> {
    await untilConnected(this.connection);
    const job = await this.queue.getJob(baseModelId);
    if (!job || (await job.isActive())) return;
    await job.remove().catch(() => undefined);
  }

  async close(): Promise<void> {
    await this.queue.close();
  }
}

export function createBaseModelFetchWorker(processor: Processor<BaseModelFetchPayload, unknown, 'fetch'>, settings: WorkerSettings): Worker<BaseModelFetchPayload, unknown, 'fetch'> {
  return createQueueWorker(BASE_MODEL_FETCH_QUEUE, processor, settings);
}
