// Entry point of one training child process: `node --import tsx child.ts <jobId> <attempt>`.
// It runs exactly one job attempt, reports over IPC, and exits.
import pino from 'pino';
import { isDomainError, loadConfig } from '@finetune/core';
import { createDb, JobsRepository } from '@finetune/db';
import { initBackend } from '@finetune/ml';
import { S3ObjectStore } from '@finetune/storage';
import type { ChildMessage } from './messages.ts';
import { runTrainingJob } from './train-job.ts';

const [jobId, attemptArg] = process.argv.slice(2);
const config = loadConfig();
const log = pino({ level: config.logLevel, base: { jobId, pid: process.pid } });

function send(message: ChildMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) return resolve();
    process.send(message, undefined, {}, () => resolve());
  });
}

async function main(): Promise<number> {
  if (!jobId || !config.databaseUrl || !config.s3.endpoint) {
    await send({ type: 'failed', error: { code: 'worker_misconfigured', message: 'job id, DATABASE_URL and S3_ENDPOINT are required', unrecoverable: false } });
    return 2;
  }
  const db = createDb(config.databaseUrl);
  try {
    const backend = await initBackend(config.mlBackend);
    log.info({ backend }, 'training process started');
    const outcome = await runTrainingJob(jobId, {
      config,
      db,
      jobs: new JobsRepository(db),
      store: new S3ObjectStore({ ...config.s3, endpoint: config.s3.endpoint }),
      backend,
      attempt: Number(attemptArg ?? '1'),
      report: (progress) => void send({ type: 'progress', progress }),
      log: (message, fields) => log.info(fields ?? {}, message),
    });
    await send({ type: 'done', outcome });
    return 0;
  } catch (error) {
    const err = error as Error;
    log.error({ err }, 'training failed');
    // Domain errors (bad data, impossible spec) will fail the same way on every retry.
    await send({
      type: 'failed',
      error: isDomainError(err)
        ? { code: err.code, message: err.message, unrecoverable: true }
        : { code: 'training_error', message: err.message, unrecoverable: false },
    });
    return 1;
  } finally {
    await db.$disconnect();
  }
}

process.exit(await main());
