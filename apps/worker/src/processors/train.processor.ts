import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { JobsRepository } from '@finetune/db';
import { UnrecoverableError, type TrainingJob } from '@finetune/queue';
import type { ChildMessage, TrainingOutcome } from '../training/messages.ts';

const CHILD_ENTRY = fileURLToPath(new URL('../training/child.ts', import.meta.url));
// Absolute, so the child finds tsx wherever it is started from.
const TSX_LOADER = import.meta.resolve('tsx');

class TrainingFailure extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly unrecoverable: boolean,
  ) {
    super(message);
  }
}

/**
 * Runs one attempt of a training job in a fresh child process. The child does the tensor work,
 * so this process's event loop stays free to renew the BullMQ lock, and a crash (or a wasm
 * abort, which poisons a process for good) costs one attempt, never the worker.
 */
export interface ProcessorState {
  /** Training children currently running, so shutdown can stop them. */
  active: Set<ChildProcess>;
  /** Set on shutdown: a killed attempt is then redelivered, not recorded as a failure. */
  closing: boolean;
}

export function createTrainProcessor(jobs: JobsRepository, log: Logger, state: ProcessorState) {
  return async function processTrainJob(job: TrainingJob): Promise<TrainingOutcome> {
    const jobId = job.data.jobId;
    const attempt = job.attemptsMade + 1;
    try {
      const outcome = await runChild(jobId, attempt, job, state.active);
      log.info({ jobId, attempt, outcome }, 'training attempt finished');
      return outcome;
    } catch (error) {
      const failure =
        error instanceof TrainingFailure ? error : new TrainingFailure('training_error', (error as Error).message, false);
      const lastAttempt = attempt >= (job.opts.attempts ?? 1);
      log.warn({ jobId, attempt, lastAttempt, code: failure.code, err: failure }, 'training attempt failed');
      if (state.closing) throw failure;
      if (failure.unrecoverable || lastAttempt) {
        await jobs.finish(jobId, 'failed', { code: failure.code, message: failure.message });
      }
      throw failure.unrecoverable ? new UnrecoverableError(`${failure.code}: ${failure.message}`) : failure;
    }
  };
}

function runChild(jobId: string, attempt: number, job: TrainingJob, active: Set<ChildProcess>): Promise<TrainingOutcome> {
  return new Promise((resolve, reject) => {
    const child = fork(CHILD_ENTRY, [jobId, String(attempt)], {
      execArgv: ['--import', TSX_LOADER],
      env: process.env,
      stdio: 'inherit',
    });
    active.add(child);
    let settled: { outcome?: TrainingOutcome; failure?: TrainingFailure } | undefined;
    child.on('message', (message: ChildMessage) => {
      if (message.type === 'progress') {
        job.updateProgress({ ...message.progress }).catch(() => undefined);
      } else if (message.type === 'done') {
        settled = { outcome: message.outcome };
      } else if (message.type === 'failed') {
        const { code, message: text, unrecoverable } = message.error;
        settled = { failure: new TrainingFailure(code, text, unrecoverable) };
      }
    });
    child.on('error', (error) => {
      settled ??= { failure: new TrainingFailure('training_process_error', error.message, false) };
    });
    child.on('exit', (code, signal) => {
      active.delete(child);
      if (settled?.outcome) return resolve(settled.outcome);
      if (settled?.failure) return reject(settled.failure);
      reject(new TrainingFailure('training_process_died', `training process exited (code ${code}, signal ${signal})`, false));
    });
  });
}
