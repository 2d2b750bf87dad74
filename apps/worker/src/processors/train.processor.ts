import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { JobsRepository } from '@finetune/db';
import { UnrecoverableError, WaitingError, type TrainingJob } from '@finetune/queue';
import { keys, type ObjectStore } from '@finetune/storage';
import type { ChildMessage, ParentMessage, TrainingOutcome, TrainingProgress } from '../training/messages.ts';
import type { FinalStatus, WorkerMetrics } from '../metrics/index.ts';
import { headOnlyRun } from '../training/child-reuse.ts';
import { WarmChildren, type TrainingChild } from './warm-children.ts';

// Compiled (`npm run build`, dist/*.js) the child is plain JavaScript, forked with no loader; from
// the sources it is TypeScript, run as the worker itself is in development: through tsx (resolved
// absolutely, so the child finds it wherever it is started from), with workspace packages resolved
// to their sources.
const COMPILED = import.meta.url.endsWith('.js');
const CHILD_ENTRY = fileURLToPath(new URL(`../training/child.${COMPILED ? 'js' : 'ts'}`, import.meta.url));
const CHILD_EXEC_ARGV = COMPILED ? [] : ['--conditions=development', '--import', import.meta.resolve('tsx')];

/** A run that ended without an outcome of its own. */
class RunFailure extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly retry: boolean,
  ) {
    super(message);
  }
}

export interface ProcessorState {
  /** Training children currently running or warm (idle), so shutdown can ask them to stop. */
  active: Set<ChildProcess>;
  /** Set on shutdown: runs hand their jobs back to the queue instead of failing them. */
  closing: boolean;
}

export interface ProcessorDeps {
  jobs: JobsRepository;
  store: ObjectStore;
  log: Logger;
  state: ProcessorState;
  /** The run's heartbeat period; a run whose heartbeat stops is presumed dead. */
  heartbeatMs: number;
  metrics: WorkerMetrics;
  /** TRAINING_CHILD_MAX_RUNS (see warm-children.ts). */
  childMaxRuns: number;
}

/**
 * The owner of a job's state while it runs. Claims the job (a guarded transition that also takes
 * a fresh lease), keeps the lease alive with heartbeats, runs the training in a child process of
 * its own — so this event loop stays free to renew BullMQ's lock, and a crash or a wasm abort
 * costs one run, never the worker — and turns the run's outcome into exactly one transition.
 * The child is a warm one (warm-children.ts), started before the job was claimed.
 */
export function createTrainProcessor({ jobs, store, log, state, heartbeatMs, metrics, childMaxRuns }: ProcessorDeps) {
  const children = new WarmChildren(forkChild, state.active, () => state.closing, childMaxRuns);
  children.prestart(null);
  return async function processTrainJob(job: TrainingJob, token?: string): Promise<TrainingOutcome> {
    const jobId = job.data.jobId;
    const attempt = job.attemptsMade + 1;
    const claim = await jobs.claim(jobId, { attempt });
    if (!claim) return { status: 'skipped', reason: 'the job is finished, canceled or deleted' };
    const { lease } = claim;
    const runLog = log.child({ jobId, attempt, run: claim.job.runs, lease: lease.slice(0, 8) });
    const { strategy } = claim.job;
    // Counted only when this run's transition is the one recorded: once per job.
    const finished = (status: FinalStatus) => metrics.jobsTotal.inc({ strategy, status });

    let child: ChildProcess | undefined;
    const heartbeat = setInterval(() => {
      jobs.heartbeat(jobId, lease).then(
        (owned) => {
          if (owned) return;
          runLog.warn('lost the job to another run; stopping this one');
          child?.kill('SIGKILL');
        },
        (err: unknown) => runLog.warn({ err }, 'heartbeat failed'),
      );
    }, heartbeatMs);

    let outcome: TrainingOutcome;
    try {
      const base = claim.job.baseModel;
      const taken = children.take(base, headOnlyRun(claim.job.spec as { strategy: string; compareWithScratch?: boolean }));
      child = taken.child;
      const ended = () => children.reclaim(taken.child, base);
      outcome = await runChild(jobId, lease, job, state, taken, ended, (seconds) => metrics.epochSeconds.observe({ strategy }, seconds));
    } catch (error) {
      const failure = error instanceof RunFailure ? error : new RunFailure('training_error', (error as Error).message, false);
      if (state.closing && failure.code === 'training_process_died') {
        // Stopped with the worker: the committed checkpoints are intact, so hand over.
        outcome = { status: 'handover' };
      } else {
        return await recordFailure(jobs, runLog, job, lease, failure, finished);
      }
    } finally {
      clearInterval(heartbeat);
    }
    return recordOutcome({ jobs, store, log: runLog, finished }, job, token, lease, outcome);
  };
}

async function recordOutcome(
  { jobs, store, log, finished }: { jobs: JobsRepository; store: ObjectStore; log: Logger; finished: (status: FinalStatus) => void },
  job: TrainingJob,
  token: string | undefined,
  lease: string,
  outcome: TrainingOutcome,
): Promise<TrainingOutcome> {
  const jobId = job.data.jobId;
  switch (outcome.status) {
    case 'succeeded':
    case 'canceled': {
      const recorded =
        outcome.status === 'succeeded'
          ? await jobs.succeed(jobId, lease, outcome.model, outcome.stopReason)
          : await jobs.finishCanceled(jobId, lease, outcome.model);
      if (recorded) finished(outcome.status);
      if (!recorded && outcome.model) {
        // Another run owns the job now; this run's model files belong to nothing.
        await store.deletePrefix(keys.modelPrefix(outcome.model.id as string));
      }
      log.info({ status: outcome.status, recorded, modelId: outcome.model?.id ?? null }, 'run finished');
      return outcome;
    }
    case 'handover': {
      const requeued = await jobs.requeue(jobId, { lease });
      log.info({ requeued }, 'run stopped for shutdown; job handed back to the queue');
      if (requeued && token) {
        // Back to waiting without counting an attempt; BullMQ expects WaitingError after it.
        await job.moveToWait(token);
        throw new WaitingError();
      }
      return outcome;
    }
    case 'lease_lost':
    case 'skipped':
      log.info({ outcome }, 'run ended without recording anything');
      return outcome;
  }
}

async function recordFailure(
  jobs: JobsRepository,
  log: Logger,
  job: TrainingJob,
  lease: string,
  failure: RunFailure,
  finished: (status: FinalStatus) => void,
): Promise<never> {
  const jobId = job.data.jobId;
  const lastAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
  const error = { code: failure.code, message: failure.message };
  log.warn({ code: failure.code, retry: failure.retry, lastAttempt, err: failure.message }, 'run failed');
  if (failure.retry && !lastAttempt) {
    await jobs.retrying(jobId, lease, error);
    throw failure;
  }
  if (await jobs.fail(jobId, error, lease)) finished('failed');
  throw new UnrecoverableError(`${failure.code}: ${failure.message}`);
}

function forkChild(args: string[]): ChildProcess {
  return fork(CHILD_ENTRY, args, {
    execArgv: CHILD_EXEC_ARGV,
    env: process.env,
    stdio: 'inherit',
  });
}

/**
 * One run in `child`. `ended` is called once the run is over — synchronously on the child's
 * `done` (before any later message of the child is seen), or when the child exits without one.
 */
function runChild(
  jobId: string,
  lease: string,
  job: TrainingJob,
  state: ProcessorState,
  { child, ready }: TrainingChild,
  ended: () => void,
  epochDone: (seconds: number) => void,
): Promise<TrainingOutcome> {
  return new Promise((resolve, reject) => {
    state.active.add(child);
    void ready.then((listening) => {
      if (!listening) return; // exited first: the exit handler below reports it
      child.send({ type: 'run', jobId, lease } satisfies ParentMessage);
      // Shutdown began before this child had its run: it stops at once.
      if (state.closing) child.send({ type: 'stop' } satisfies ParentMessage);
    });
    let settled: { failure?: RunFailure } | undefined;
    // What the job's progress shows (BullMQ keeps it; the API streams it): the latest report,
    // over the last batch position reported, which an epoch's or phase's report does not erase.
    let shown: Omit<TrainingProgress, 'epochSeconds'> | undefined;
    // A child may take another job after this run: nothing of this run listens to it then.
    const detach = () => {
      child.off('message', onMessage);
      child.off('error', onError);
      child.off('exit', onExit);
      ended();
    };
    const onMessage = (message: ChildMessage) => {
      if (message.type === 'progress') {
        const { epochSeconds, ...progress } = message.progress;
        if (epochSeconds !== undefined) epochDone(epochSeconds);
        shown = { ...shown, ...progress };
        job.updateProgress(shown).catch(() => undefined);
      } else if (message.type === 'done') {
        // Every write of the run is committed: the outcome need not wait for the process to
        // close its connections and exit, or to say it can take another job.
        detach();
        resolve(message.outcome);
      } else if (message.type === 'failed') {
        const { code, message: text, retry } = message.error;
        settled = { failure: new RunFailure(code, text, retry) };
      }
    };
    const onError = (error: Error) => {
      settled ??= { failure: new RunFailure('training_process_error', error.message, true) };
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
      detach();
      if (settled?.failure) return reject(settled.failure);
      // Killed (OOM killer, kill -9) or crashed hard: transient, the next run resumes.
      reject(new RunFailure('training_process_died', `the training process exited (code ${code}, signal ${signal})`, true));
    };
    child.on('message', onMessage);
    child.on('error', onError);
    child.on('exit', onExit);
  });
}
