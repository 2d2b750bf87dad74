// Reconciliation: Postgres is the record, BullMQ only delivers. When the two disagree — Redis
// restarted with nothing on disk, a job was created while Redis was down, a final failure
// event was missed — Postgres wins: every unfinished job gets a live queue entry again, and a
// job BullMQ has given up on ends `failed` with a reason. Safe to run anywhere, any number of
// times, concurrently: enqueueing uses the Postgres id as the BullMQ id, and every state change
// is a guarded transition.
import type { Delivery, TrainingQueue } from './index.ts';

type UnfinishedStatus = 'queued' | 'running' | 'retrying';

/** The slice of the jobs repository reconciliation needs. */
export interface ReconcilableJobs {
  unfinished(updatedBefore: Date): Promise<Array<{ id: string; status: string; heartbeatAt: Date | null }>>;
  requeue(id: string, guard: { heartbeatBefore: Date; from: readonly UnfinishedStatus[] }): Promise<boolean>;
  fail(id: string, error: { code: string; message: string }): Promise<boolean>;
}

export interface ReconcileOptions {
  /** Rows changed more recently than this are left alone (a job being created right now). */
  graceMs: number;
  /** A running job whose heartbeat is older than this has lost its worker. */
  staleAfterMs: number;
  now?: Date;
}

export interface ReconcileReport {
  checked: number;
  requeued: string[];
  failed: string[];
}

/**
 * Lease timings derived from the BullMQ lock, so one setting (WORKER_LOCK_DURATION_MS) tunes how
 * fast a dead worker is noticed: a run renews its heartbeat every half lock period, and is
 * presumed dead after three missed beats.
 */
export function leaseTimings(lockDurationMs: number): { heartbeatMs: number; staleAfterMs: number } {
  const heartbeatMs = Math.max(250, Math.floor(lockDurationMs / 2));
  return { heartbeatMs, staleAfterMs: 3 * heartbeatMs };
}

const PENDING: ReadonlySet<Delivery['state']> = new Set(['waiting', 'delayed', 'prioritized', 'waiting-children', 'active']);

export async function reconcile(jobs: ReconcilableJobs, queue: TrainingQueue, options: ReconcileOptions): Promise<ReconcileReport> {
  const now = options.now ?? new Date();
  const report: ReconcileReport = { checked: 0, requeued: [], failed: [] };
  const candidates = await jobs.unfinished(new Date(now.getTime() - options.graceMs));
  for (const job of candidates) {
    report.checked++;
    const delivery = await queue.deliveryOf(job.id);
    // Waiting or delayed: it will be delivered. Active: its worker holds the lock, or BullMQ's
    // stall detection will hand it to another worker once the lock lapses.
    if (PENDING.has(delivery.state)) continue;
    if (delivery.state === 'failed') {
      // BullMQ gave up (attempts or stalls exhausted) and the event that should have said so
      // was missed.
      const reason = delivery.failedReason ?? 'the queue gave up on this job';
      if (await jobs.fail(job.id, { code: failureCode(reason), message: failureMessage(reason) })) report.failed.push(job.id);
      continue;
    }
    // Missing (Redis lost it) or completed while Postgres still owes work. A running job is
    // taken back only when its heartbeat has stopped: a live run keeps its job even when Redis
    // forgot the queue entry, and records its own result.
    const heartbeatBefore = new Date(now.getTime() - options.staleAfterMs);
    if (job.status !== 'queued') {
      const requeued = await jobs.requeue(job.id, { heartbeatBefore, from: ['running', 'retrying'] });
      if (!requeued) continue;
    }
    await queue.redeliver(job.id);
    report.requeued.push(job.id);
  }
  return report;
}

const STALLED = 'job stalled more than allowable limit';

/** The stable error code for a BullMQ failure reason. */
export function failureCode(reason: string): string {
  if (reason.includes(STALLED)) return 'worker_lost';
  const coded = /^([a-z_]+): /.exec(reason);
  return coded ? coded[1]! : 'attempts_exhausted';
}

export function failureMessage(reason: string): string {
  if (reason.includes(STALLED)) {
    return 'the workers running this job stopped responding too many times (killed, out of memory, or blocked); see the worker logs';
  }
  return reason.replace(/^[a-z_]+: /, '');
}
