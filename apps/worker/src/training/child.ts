// Entry point of one training child process, forked by the worker ahead of need as a warm
// child: `--warm <base hint> <title room>`. It loads what every run needs (the modules, tfjs and
// its backend, and — cheaply, off any job's critical path — the zoo base its parent expects next),
// tells the parent it is ready, then waits. Idle, it holds no lease and no database connection,
// and it exits when its parent goes (a closed IPC channel, kill -9 included) or asks it to stop.
// Given a job ({type: 'run', jobId, lease}) it runs exactly one run of it, under the lease its
// parent's claim took, reports over IPC, and exits: a child never runs a second job.
import pino from 'pino';
import { findBaseModel, loadConfig, retryTransient } from '@finetune/core';
import { BaseModelsRepository, createDb, DatasetsRepository, JobsRepository, LeaseLostError, ModelsRepository } from '@finetune/db';
import { frozenEngine, initBackend, loadBaseModel } from '@finetune/ml';
import { S3ObjectStore, withRetries } from '@finetune/storage';
import { classifyFailure } from './failure.ts';
import type { ChildMessage, ParentMessage } from './messages.ts';
import { runTrainingJob } from './train-job.ts';

// Listening before anything else happens: the parent sends the job once this child is ready.
let running = false;
// A stop that arrives with the run, before the run listens for it, still counts.
let stopRequested = false;
const assigned = new Promise<{ jobId: string; lease: string }>((resolve) => {
  process.on('message', (message: ParentMessage) => {
    if (message.type === 'run') resolve(message);
    // Asked to stop while idle (worker shutdown): nothing to hand over.
    else if (message.type === 'stop' && !running) process.exit(0);
    else if (message.type === 'stop') stopRequested = true;
  });
});
const orphaned = () => process.exit(0);
process.on('disconnect', orphaned);

const [, baseHint] = process.argv.slice(2);
const config = loadConfig();
// Started now, awaited by the run: a failure here is the run's failure, reported as before.
const backendReady = initBackend(config.mlBackend);
backendReady.catch(() => undefined);
void warmUp(baseHint);
await send({ type: 'ready' });
const { jobId, lease } = await assigned;
running = true;
// From here the run decides when to end: a parent gone mid-run loses the lease, not the epoch.
process.off('disconnect', orphaned);
// Named after its job, as `ps` and `pgrep -f "training/child.ts <jobId>"` show it (the argv
// the parent gave this child reserves the room the title needs).
process.title = `${process.argv0} ${process.argv[1]} ${jobId} ${lease}`;
const log = pino({ level: config.logLevel, base: { jobId, pid: process.pid } });

/**
 * Loads the zoo base the parent expects the next job to use, and opens its inference session,
 * so that neither is on the job's critical path. Best effort: the run loads whatever it needs
 * and reports any failure itself.
 */
async function warmUp(hint: string | undefined): Promise<void> {
  try {
    await backendReady;
    if (!hint || !findBaseModel(hint)) return;
    const base = await loadBaseModel(hint);
    await frozenEngine(base.model);
  } catch {
    // the run meets the same error, if it needs this base, and reports it
  }
}

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
    backend = await backendReady;
    log.info({ backend }, 'training process started');
    const job = await retryTransient(() => jobs.get(jobId), retry);
    const jobSpec = job?.spec as { strategy?: string; hyperparameters?: { batchSize?: number } } | undefined;
    spec = { batchSize: jobSpec?.hyperparameters?.batchSize ?? 0, strategy: jobSpec?.strategy ?? 'unknown' };
    const outcome = await runTrainingJob(jobId, lease, {
      config,
      jobs: retryingJobs(jobs, retry),
      datasets: new DatasetsRepository(db),
      models: new ModelsRepository(db),
      baseModels: new BaseModelsRepository(db),
      store: withRetries(new S3ObjectStore({ ...config.s3, endpoint: config.s3.endpoint }), retry),
      backend,
      report: (progress) => void send({ type: 'progress', progress }),
      log: (message, fields) => log.info(fields ?? {}, message),
      onStopRequest: (handler) => {
        if (stopRequested) handler();
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
