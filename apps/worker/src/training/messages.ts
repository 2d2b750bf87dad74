// What a training child process tells its parent over IPC. One run, one process: a wasm abort
// (which leaves a process unusable) can only ever take one job attempt down with it.

export interface TrainingProgress {
  phase: 'preparing' | 'training' | 'evaluating' | 'comparing' | 'exporting';
  epoch: number;
  epochs: number;
  percent: number;
}

export type TrainingOutcome =
  | { status: 'succeeded'; modelId: string }
  | { status: 'canceled' }
  | { status: 'skipped'; reason: string };

export type ChildMessage =
  | { type: 'progress'; progress: TrainingProgress }
  | { type: 'done'; outcome: TrainingOutcome }
  | { type: 'failed'; error: { code: string; message: string; unrecoverable: boolean } };
