// A job's lifecycle as a state machine. Postgres holds the state users read; every change goes
// through JobsRepository.transition, whose UPDATE is guarded by `status IN (sources of the
// target)`, so a late or duplicated event (a BullMQ retry, a reconciliation sweep, a second
// worker) can never move a job backwards or out of a final state.
//
//   queued ──► running ──► succeeded | failed | canceled
//     ▲  │       │  ▲ ▲
//     │  │       │  │ └─ running: a redelivered job (its worker died) is claimed again
//     │  │       ▼  │
//     │  │     retrying  (an attempt failed transiently; BullMQ retries it after a backoff)
//     │  └──────────────► canceled | failed
//     └── running/retrying: handed back to the queue (worker shutdown, reconciliation)

export const JOB_STATUSES = ['queued', 'running', 'retrying', 'succeeded', 'failed', 'canceled'] as const;
export type JobStatusName = (typeof JOB_STATUSES)[number];

export const TERMINAL_STATUSES: readonly JobStatusName[] = ['succeeded', 'failed', 'canceled'];
/** States in which a job still owes work: reconciliation looks for these. */
export const ACTIVE_STATUSES: readonly JobStatusName[] = ['queued', 'running', 'retrying'];

/** For each state, the states a job may enter it from. */
const SOURCES: Record<JobStatusName, readonly JobStatusName[]> = {
  queued: ['running', 'retrying'],
  running: ['queued', 'running', 'retrying'],
  retrying: ['running'],
  succeeded: ['running'],
  failed: ['queued', 'running', 'retrying'],
  canceled: ['queued', 'running', 'retrying'],
};

export function transitionSources(to: JobStatusName): readonly JobStatusName[] {
  return SOURCES[to];
}

export function canTransition(from: JobStatusName, to: JobStatusName): boolean {
  return SOURCES[to].includes(from);
}

export function isTerminal(status: JobStatusName): boolean {
  return TERMINAL_STATUSES.includes(status);
}

/** Why training ended, on a finished job. */
export type StopReason = 'completed' | 'early_stopping' | 'max_runtime' | 'canceled';
