import { collectDefaultMetrics, Counter, Histogram, Registry } from 'prom-client';

// The worker's Prometheus metrics, served by its own listener (server.ts). A registry per
// worker instance: tests start several workers in one process.

let processMetrics: Registry | undefined;

/**
 * A fresh registry holding the process's default metrics (CPU, memory, event loop lag, GC),
 * collected once per process and shared: they describe the process, not one worker instance.
 */
function createRegistry(): Registry {
  if (!processMetrics) {
    processMetrics = new Registry();
    collectDefaultMetrics({ register: processMetrics });
  }
  return Registry.merge([processMetrics]);
}

/** How a job ended, as the worker recorded it in Postgres. */
export type FinalStatus = 'succeeded' | 'failed' | 'canceled';

export interface WorkerMetrics {
  registry: Registry;
  jobsTotal: Counter<'strategy' | 'status'>;
  epochSeconds: Histogram<'strategy'>;
}

export function createWorkerMetrics(): WorkerMetrics {
  const registry = createRegistry();
  const registers = [registry];
  return {
    registry,
    jobsTotal: new Counter({
      name: 'finetune_jobs_total',
      help: 'Jobs this worker process finished, by strategy and final status (counted when the transition is recorded)',
      labelNames: ['strategy', 'status'],
      registers,
    }),
    epochSeconds: new Histogram({
      name: 'finetune_training_epoch_seconds',
      help: 'Completed training epochs by strategy: the training batches and the validation pass',
      labelNames: ['strategy'],
      // From milliseconds (a head on cached features) to most of an hour (a full fine-tune on CPU).
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600],
      registers,
    }),
  };
}
