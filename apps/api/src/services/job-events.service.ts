import { setTimeout as sleep } from 'node:timers/promises';
import type { EpochMetric, JobWithModel } from '@finetune/db';
import { TERMINAL_STATUSES } from '@finetune/core';
import type { AppDeps } from '../deps.ts';
import { presentJob, presentMetric } from './jobs.service.ts';

// A job's live events, derived from the records every API replica shares: the job row and its
// epoch metrics in Postgres, and the progress the running worker last reported (kept by BullMQ
// in Redis). So any replica can stream any job, and a client that reconnects gets what it
// missed: each event's id is the cursor of everything sent up to it, and Last-Event-ID resumes
// from there (epochs after the last one sent, the status if it changed since).

export type JobEvent =
  | { event: 'status'; data: { status: string; job: ReturnType<typeof presentJob> } }
  | { event: 'epoch'; data: ReturnType<typeof presentMetric> }
  | { event: 'progress'; data: Progress }
  | { event: 'done'; data: ReturnType<typeof presentJob> };

export interface Progress {
  epoch: number;
  epochs: number;
  batch: number;
  batches: number;
  loss: number | null;
  accuracy: number | null;
  imagesPerSecond: number | null;
  etaSeconds: number | null;
}

/** What a client has been sent: the last status (with what makes it news), epoch and progress. */
interface Cursor {
  status: string;
  epoch: number;
  progress: string;
}

export function encodeCursor(cursor: Cursor): string {
  return Buffer.from(JSON.stringify([cursor.status, cursor.epoch, cursor.progress])).toString('base64url');
}

/** A Last-Event-ID we issued, or null (absent, or not ours: the stream starts from scratch). */
export function decodeCursor(id: string | undefined): Cursor | null {
  if (!id || id.length > 512) return null;
  try {
    const [status, epoch, progress] = JSON.parse(Buffer.from(id, 'base64url').toString('utf8')) as unknown[];
    if (typeof status !== 'string' || !Number.isInteger(epoch) || typeof progress !== 'string') return null;
    return { status, epoch: epoch as number, progress };
  } catch {
    return null;
  }
}

/** A status event is news when the status, the run, a cancel request or the error changed. */
const statusKey = (job: JobWithModel) => [job.status, job.runs, job.cancelRequested, job.errorCode ?? ''].join('/');

const num = (value: unknown): number | null => (typeof value === 'number' && Number.isFinite(value) ? value : null);

/** The worker's last report, when it is from inside an epoch (batch-progress.ts in the worker). */
function batchProgress(reported: Record<string, unknown> | null): Progress | null {
  if (!reported || num(reported.batch) === null || num(reported.batches) === null) return null;
  return {
    epoch: num(reported.epoch) ?? 0,
    epochs: num(reported.epochs) ?? 0,
    batch: num(reported.batch)!,
    batches: num(reported.batches)!,
    loss: num(reported.loss),
    accuracy: num(reported.accuracy),
    imagesPerSecond: num(reported.imagesPerSecond),
    etaSeconds: num(reported.etaSeconds),
  };
}

export interface JobEventsOptions {
  /** How often Postgres and Redis are read while the job runs. */
  pollMs: number;
  signal: AbortSignal;
}

/**
 * Yields the job's events with their ids until it is finished (then `done`) or deleted, or the
 * signal aborts. The first read sends the current status, and every epoch the cursor has not seen.
 */
export async function* jobEvents(
  deps: AppDeps,
  tenantId: string,
  jobId: string,
  from: Cursor | null,
  { pollMs, signal }: JobEventsOptions,
): AsyncGenerator<{ id: string; event: JobEvent }> {
  const cursor: Cursor = from ?? { status: '', epoch: 0, progress: '' };
  while (!signal.aborted) {
    const job = await deps.jobs.get(jobId, tenantId);
    if (!job) return; // deleted meanwhile: nothing more will happen
    const metrics: EpochMetric[] = await deps.jobs.metrics(jobId, tenantId);
    // A resumed run may have forgotten epochs after its checkpoint: they come again.
    cursor.epoch = Math.min(cursor.epoch, metrics.at(-1)?.epoch ?? 0);

    for (const metric of metrics.filter((m) => m.epoch > cursor.epoch)) {
      cursor.epoch = metric.epoch;
      yield { id: encodeCursor(cursor), event: { event: 'epoch', data: presentMetric(metric) } };
    }
    const key = statusKey(job);
    if (key !== cursor.status) {
      cursor.status = key;
      yield { id: encodeCursor(cursor), event: { event: 'status', data: { status: job.status, job: presentJob(job, metrics) } } };
    }
    if (TERMINAL_STATUSES.includes(job.status)) {
      yield { id: encodeCursor(cursor), event: { event: 'done', data: presentJob(job, metrics) } };
      return;
    }
    if (job.status === 'running') {
      const progress = batchProgress(await deps.queue.progressOf(jobId).catch(() => null));
      const progressKey = progress ? `${job.runs}/${progress.epoch}/${progress.batch}` : cursor.progress;
      if (progress && progressKey !== cursor.progress) {
        cursor.progress = progressKey;
        yield { id: encodeCursor(cursor), event: { event: 'progress', data: progress } };
      }
    }
    await sleep(pollMs, undefined, { signal }).catch(() => undefined);
  }
}
