// Which runs leave their training child fit to take another job (child.ts, warm-children.ts).

/** Strategies that train a head only, on features of a base that never trains. */
const HEAD_ONLY = new Set(['feature_extraction', 'prototype']);

/**
 * Whether a run of this spec trains a head only: no base layer trains, so no backward pass
 * through the base grows the backend's heap, and the run is short, so a process's start-up
 * (seconds) weighs on it. Such a run's child may take the next job once it ended cleanly; every
 * other run's child exits after its run, and a wasm abort never reaches another job.
 */
export function headOnlyRun(spec: { strategy: string; compareWithScratch?: boolean | null }): boolean {
  return HEAD_ONLY.has(spec.strategy) && !spec.compareWithScratch;
}
