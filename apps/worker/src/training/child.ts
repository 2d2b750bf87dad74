// Entry point of one training child process: `node --import tsx child.ts <jobId> <lease>`.
// It runs exactly one run of a job, under the lease its parent's claim took, reports over IPC,
// and exits.
import pino from 'pino';
import { loadConfig, retryTransient } from '@finetune/core';
import { createDb, DatasetsRepository, JobsRepository, LeaseLostError, ModelsRepository } from '@finetune/db';
import { initBackend } from '@finetune/ml';
import { S3ObjectStore, withRetries } from '@finetune/storage';
import { classifyFailure } from './failure.ts';
import type { ChildMessage, ParentMessage } from './messages.ts';
import { runTrainingJob } from './train-job.ts';

const [jobId, lease] = process.argv.slice(2);
const config = loadConfig();
const log = pino({ level: config.logLevel, base: { jobId, pid: process.pid } });

function send(message: ChildMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) return resolve();
    process.send(message, undefined, {}, () => resolve());
  });
}

async function main(): Promise<number> {
  if (!jobId || !lease || !config.databaseUrl || !config.s3.endpoint) {
    await send({ type: 'failed', error: { code: 'worker_misconfigured', message: 'job id, lease, DATABASE_URL and S3_ENDPOINT are required', retry: false } });
    return 2;
  }
  const db = createDb(config.databaseUrl);
  const retry = { maxRetryTimeMs: config.dependencyRetryMs, onRetry: (err: unknown, attempt: number) => log.warn({ err, attempt }, 'dependency unavailable; retrying') };
  const jobs = new JobsRepository(db);
  let backend = config.mlBackend as string;
  let spec: { batchSize: number; strategy: string } = { batchSize: 0, strategy: 'unknown' };
  try {
    backend = await initBackend(config.mlBackend);
    log.info({ backend }, 'training process started');
    const job = await retryTransient(() => jobs.get(jobId), retry);
    const jobSpec = job?.spec as { strategy?: string; hyperparameters?: { batchSize?: number } } | undefined;
    spec = { batchSize: jobSpec?.hyperparameters?.batchSize ?? 0, strategy: jobSpec?.strategy ?? 'unknown' };
    const outcome = await runTrainingJob(jobId, lease, {
      config,
      jobs: retryingJobs(jobs, retry),
      datasets: new DatasetsRepository(db),
      models: new ModelsRepository(db),
      store: withRetries(new S3ObjectStore({ ...config.s3, endpoint: config.s3.endpoint }), retry),
      backend,
      report: (progress) => void send({ type: 'progress', progress }),
      log: (message, fields) => log.info(fields ?? {}, message),
      onStopRequest: (handler) => {
        process.on('message', (message: ParentMessage) => {
          if (message.type === 'stop') handler();
        });
        // A signal to the whole process group (Ctrl-C, systemd's default KillMode) reaches this
        // process too: treat it like the parent's request, stop at a batch boundary.
        process.on('SIGTERM', handler);
        process.on('SIGINT', handler);
      },
    });
    await send({ type: 'done', outcome });
    return 0;
  } catch (error) {
    if (error instanceof LeaseLostError) {
      log.warn('another run took this job over; stopping without recording anything');
      await send({ type: 'done', outcome: { status: 'lease_lost' } });
      return 0;
    }
    const failure = classifyFailure(error, { backend, ...spec });
    log.error({ err: error, code: failure.code, retry: failure.retry }, 'training failed');
    await send({ type: 'failed', error: failure });
    return 1;
  } finally {
    await db.$disconnect();
  }
}

/**
 * The repository with the writes a run makes between epochs retried while Postgres is
 * unavailable: an epoch's commit waits for the database instead of failing the attempt.
 */
function retryingJobs(jobs: JobsRepository, retry: Parameters<typeof retryTransient>[1]): JobsRepository {
  // runControl is polled every second: a failed poll is simply replaced by the next one.
  const unretried = new Set<PropertyKey>(['runControl']);
  return new Proxy(jobs, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver) as unknown;
      if (typeof value !== 'function' || unretried.has(property)) return value;
      return (...args: unknown[]) => retryTransient(() => (value as (...a: unknown[]) => Promise<unknown>).apply(target, args), retry);
    },
  });
}

process.exit(await main());
