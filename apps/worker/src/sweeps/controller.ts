import type { Logger } from 'pino';
import type { Config } from '@finetune/core';
import type { SweepsRepository } from '@finetune/db';
import type { TrainingQueue } from '@finetune/queue';
import { stepSweep } from './step.ts';

/**
 * How long a controller holds a sweep per step. A step takes a few queries; a worker that dies
 * mid-step leaves the sweep to any other worker this much later.
 */
const LEASE_MS = 30_000;

export interface SweepController {
  /** One pass over the active sweeps now (it also runs every SWEEP_CONTROLLER_INTERVAL_MS). */
  tick(): Promise<void>;
  /** Stops the timer and waits for a pass in progress. */
  close(): Promise<void>;
}

/**
 * The sweep controller every worker process runs: every SWEEP_CONTROLLER_INTERVAL_MS it takes
 * each active sweep whose lease is free, steps it (stepSweep) and lets go. State lives in
 * Postgres only — the sweep row, its trials (jobs) and their epoch metrics — so sweeps go on
 * across API and worker restarts, and with several workers each sweep is stepped by one at a time.
 */
export function startSweepController(deps: { sweeps: SweepsRepository; queue: TrainingQueue; config: Config; log: Logger }): SweepController {
  const { sweeps, config, log } = deps;
  let pass: Promise<void> | null = null;
  let closing = false;

  const runPass = async () => {
    for (const id of await sweeps.claimable()) {
      if (closing) return;
      const claim = await sweeps.claim(id, LEASE_MS);
      if (!claim) continue; // another worker took it first
      try {
        await stepSweep(deps, claim.sweep, claim.lease);
      } catch (err) {
        log.warn({ err, sweepId: id }, 'sweep step failed; the next pass retries');
      } finally {
        await sweeps.release(id, claim.lease).catch(() => undefined);
      }
    }
  };
  const tick = () =>
    (pass ??= runPass()
      .catch((err: unknown) => log.warn({ err }, 'sweep controller pass failed'))
      .finally(() => (pass = null)));
  const timer = setInterval(() => void tick(), config.sweepControllerIntervalMs);

  return {
    tick,
    async close() {
      closing = true;
      clearInterval(timer);
      await pass;
    },
  };
}
