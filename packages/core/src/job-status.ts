export const JOB_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'canceled'] as const;
export type JobStatusName = (typeof JOB_STATUSES)[number];

export const TERMINAL_STATUSES: readonly JobStatusName[] = ['succeeded', 'failed', 'canceled'];

export function isTerminal(status: JobStatusName): boolean {
  return TERMINAL_STATUSES.includes(status);
}
