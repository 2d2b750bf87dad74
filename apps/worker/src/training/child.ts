// Entry point of a training child process, forked by the worker ahead of need as a warm
// child: `--warm <base hint> <title room>`. It loads what every run needs (the modules, tfjs and
// its backend), tells the parent it is ready, and then — off any job's critical path — makes the
// first of everything a run does cost nothing to the run: a database query, the zoo base its
// parent expects next with its inference session, a throwaway training run. Idle, it holds no
// lease (a pooled database connection at most), and it exits when its parent goes (a closed IPC
// channel, kill -9 included), asks it to stop, or signals it.
// Given a job ({type: 'run', jobId, lease}) it runs one run of it, under the lease its parent's
// claim took, and reports over IPC. Then it exits — unless the run trained a head only and ended
// cleanly (child-reuse.ts): such a child says it is ready again and may take the next job, up to
// TRAINING_CHILD_MAX_RUNS runs, as long as the run left no tensor behind.
import pino from 'pino';
import { findBaseModel, loadConfig, retryTransient } from '@finetune/core';
import { BaseModelsRepository, createDb, DatasetsRepository, JobsRepository, LeaseLostError, ModelsRepository } from '@finetune/db';
import { frozenEngine, initBackend, loadBaseModel, tf, warmUpTraining, zooTensorCount } from '@finetune/ml';
import { S3ObjectStore, withRetries } from '@finetune/storage';
import { headOnlyRun } from './child-reuse.ts';
import { classifyFailure } from './failure.ts';
import type { ChildMessage, ParentMessage } from './messages.ts';
import { runTrainingJob } from './train-job.ts';

// Listening before anything else happens: the parent sends a job whenever this child is ready.
let running = false;
// A stop that arrives with the run, before the run listens for it, still counts.
let stopRequested = false;
let stopRun: (() => void) | null = null;
let assign: ((run: { jobId: string; lease: string }) => void) | null = null;
const stop = () => {
  // Asked to stop while idle (worker shutdown): nothing to hand over.
  if (!running) process.exit(0);
  stopRequested = true;
  stopRun?.();
};
process.on('message', (message: ParentMessage) => {
  if (message.type === 'run') assign?.(message);
  else if (message.type === 'stop') stop();
});
// A signal to the whole process group (Ctrl-C, systemd's default KillMode) reaches this process
// too: treated like the parent's request, a run stops at a batch boundary.
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
const orphaned = () => process.exit(0);
process.on('disconnect', orphaned);

const [, baseHint] = process.argv.slice(2);
const config = loadConfig();
// Started now, awaited by the run: a failure here is the run's failure, reported as before.
const backendReady = initBackend(config.mlBackend);
backendReady.catch(() => undefined);
const db = config.databaseUrl ? createDb(config.databaseUrl) : null;
// Live tensors besides the zoo bases' weights (which stay loaded by design): a run that leaves
// more behind than there were before it leaked, and its child does not take another job.
const runTensors = () => tf.memory().numTensors - zooTensorCount();
const warming = warmUp(baseHint);
await send({ type: 'ready' });
for (let runs = 1; ; runs++) {
  const { jobId, lease } = await new Promise<{ jobId: string; lease: string }>((resolve) => (assign = resolve));
  assign = null;
  running = true;
  stopRequested = false;
  // The warm-up ends at its current step once a run has begun; what it holds then is the baseline.
  await warming;
  const tensorsBefore = runTensors();
  // From here the run decides when to end: a parent gone mid-run loses the lease, not the epoch.
  process.off('disconnect', orphaned);
  // Named after its job, as `ps` and `pgrep -f "training/child.ts <jobId>"` show it (the argv
  // the parent gave this child reserves the room the title needs).
  process.title = `${process.argv0} ${process.argv[1]} ${jobId} ${lease}`;
  const { code, headOnly } = await main(jobId, lease);
  running = false;
  stopRun = null;
  const clean = code === 0 && headOnly && !stopRequested && runTensors() === tensorsBefore;
  if (!clean || runs >= config.trainingChildMaxRuns || !process.connected) process.exit(code);
  process.title = `${process.argv0} ${process.argv[1]} --warm idle`;
  process.on('disconnect', orphaned);
  await send({ type: 'ready' });
}

/**
 * Does once what a run's first steps would otherwise pay for on the job's time: the first
 * Prisma query (its query compiler loads then, 0.2–0.5 s measured), loading the zoo base the
 * parent expects the next job to use and opening its inference session, and a first training
 * run (warmUpTraining). Best effort, in the order a run needs them: the run does whatever is
 * not done yet itself, and reports any failure.
 */
async function warmUp(hint: string | undefined): Promise<void> {
  try {
    await backendReady;
    // A job id that names no job: the answer is null, the query compiled.
    if (db) await new JobsRepository(db).get('00000000-0000-0000-0000-000000000000');
    // Each later step only while no run has begun: the run waits for the step in progress.
    if (running || !hint || !findBaseModel(hint)) return;
    const base = await loadBaseModel(hint);
    if (running) return;
    await frozenEngine(base.model);
    if (running) return;
    await warmUpTraining(base);
  } catch {
    // the run meets the same error, if it has it, and reports it
  }
}

function send(message: ChildMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) return resolve();
    process.send(message, undefined, {}, () => resolve());
  });
}

/** One run of a job: its exit code, and whether it was a head-only run (child-reuse.ts). */
async function main(jobId: string, lease: string): Promise<{ code: number; headOnly: boolean }> {
  if (!jobId || !lease || !db || !config.s3.endpoint) {
    await send({ type: 'failed', error: { code: 'worker_misconfigured', message: 'job id, lease, DATABASE_URL and S3_ENDPOINT are required', retry: false } });
    return { code: 2, headOnly: false };
  }
  const log = pino({ level: config.logLevel, base: { jobId, pid: process.pid } });
  const retry = { maxRetryTimeMs: config.dependencyRetryMs, onRetry: (err: unknown, attempt: number) => log.warn({ err, attempt }, 'dependency unavailable; retrying') };
  const jobs = new JobsRepository(db);
  let backend = config.mlBackend as string;
  let spec: { batchSize: number; strategy: string } = { batchSize: 0, strategy: 'unknown' };
  let headOnly = false;
  try {
    backend = await backendReady;
    log.info({ backend }, 'training process started');
    const job = await retryTransient(() => jobs.get(jobId), retry);
    const jobSpec = job?.spec as { strategy?: string; compareWithScratch?: boolean; hyperparameters?: { batchSize?: number } } | undefined;
    spec = { batchSize: jobSpec?.hyperparameters?.batchSize ?? 0, strategy: jobSpec?.strategy ?? 'unknown' };
    headOnly = headOnlyRun({ strategy: spec.strategy, compareWithScratch: jobSpec?.compareWithScratch });
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
        stopRun = handler;
        if (stopRequested) handler();
      },
    });
    await send({ type: 'done', outcome });
    // Only a run that trained and recorded its end leaves the child as it found it.
    return { code: 0, headOnly: headOnly && (outcome.status === 'succeeded' || outcome.status === 'canceled') };
  } catch (error) {
    if (error instanceof LeaseLostError) {
      log.warn('another run took this job over; stopping without recording anything');
      await send({ type: 'done', outcome: { status: 'lease_lost' } });
      return { code: 0, headOnly: false };
    }
    const failure = classifyFailure(error, { backend, ...spec });
    log.error({ err: error, code: failure.code, retry: failure.retry }, 'training failed');
    await send({ type: 'failed', error: failure });
    return { code: 1, headOnly: false };
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

