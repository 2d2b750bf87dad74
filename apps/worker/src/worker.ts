import type { Logger } from 'pino';
import type { Config } from '@finetune/core';
import { createDb, JobsRepository } from '@finetune/db';
import { createTrainingWorker } from '@finetune/queue';
import { createTrainProcessor, type ProcessorState } from './processors/train.processor.ts';

export interface RunningWorker {
  /** Stops taking jobs; running attempts are killed and redelivered to another worker. */
  close(): Promise<void>;
}

export function startWorker(config: Config, log: Logger): RunningWorker {
  if (!config.databaseUrl) throw new Error('DATABASE_URL is required');
  const db = createDb(config.databaseUrl);
  const state: ProcessorState = { active: new Set(), closing: false };
  const worker = createTrainingWorker(createTrainProcessor(new JobsRepository(db), log, state), {
    redisUrl: config.redisUrl,
    prefix: config.queuePrefix,
    concurrency: config.workerConcurrency,
    lockDurationMs: config.workerLockDurationMs,
  });
  worker.on('error', (err) => log.error({ err }, 'worker error'));
  worker.on('failed', (job, err) => log.warn({ jobId: job?.id, err: err.message }, 'job attempt failed'));
  log.info({ concurrency: config.workerConcurrency, backend: config.mlBackend }, 'worker started');

  return {
    async close() {
      state.closing = true;
      for (const child of state.active) child.kill('SIGTERM');
      await worker.close(true);
      await db.$disconnect();
    },
  };
}
