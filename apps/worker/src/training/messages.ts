// What a training child process and its parent tell each other over IPC. The process is started
// before its job exists (a warm child, see child.ts): it says when it is ready, and the parent
// then gives it a run. After a clean head-only run it says it is ready again and may be given the
// next; after any other run it exits, so a wasm abort (which leaves a process unusable) can only
// ever take one run down with it.
// The child trains and writes data (metrics, checkpoints, model files) under the run's lease;
// the parent alone changes the job's state, from the outcome the child reports.
import type { StopReason } from '@finetune/core';
import type { ModelInput } from '@finetune/db';

export interface TrainingProgress {
  phase: 'preparing' | 'adapting' | 'training' | 'evaluating' | 'comparing' | 'exporting';
  epoch: number;
  epochs: number;
  percent: number;
  /** On the report of a completed epoch: its duration as the trainer measured it (the parent's metrics). */
  epochSeconds?: number;
  /** Within an epoch (batch-progress.ts): the batch just trained, of how many. */
  batch?: number;
  batches?: number;
  /** Running mean training loss and accuracy of the epoch so far. */
  loss?: number;
  accuracy?: number;
  /** Null until the pace is known. */
  imagesPerSecond?: number | null;
  etaSeconds?: number | null;
}

export type TrainingOutcome =
  /** Trained (all epochs, early stopping, or the runtime budget spent): a model to record. */
  | { status: 'succeeded'; model: ModelInput; stopReason: StopReason }
  /** Cancel requested: the best epoch so far as a model, or none when no epoch completed. */
  | { status: 'canceled'; model: ModelInput | null }
  /** Asked to stop (worker shutdown): the last completed epoch's checkpoint is committed. */
  | { status: 'handover' }
  /** Another run owns the job now (this one was presumed dead): nothing was recorded. */
  | { status: 'lease_lost' }
  /** The job was finished or deleted before this run could start. */
  | { status: 'skipped'; reason: string };

export type ChildMessage =
  /** Listening, with its modules loaded (or its last run over, and clean): it can take a run. */
  | { type: 'ready' }
  | { type: 'progress'; progress: TrainingProgress }
  | { type: 'done'; outcome: TrainingOutcome }
  | { type: 'failed'; error: { code: string; message: string; retry: boolean } };

/**
 * Parent → child: `run` gives a ready child a run (the job, under the lease the parent's claim
 * took); `stop` asks it to stop at the next batch boundary and hand the job back (worker
 * shutdown), or, idle, to exit.
 */
export type ParentMessage = { type: 'run'; jobId: string; lease: string } | { type: 'stop' };
