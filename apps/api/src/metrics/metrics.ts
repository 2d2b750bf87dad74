import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { TrainingQueue } from '@finetune/queue';

// The API's Prometheus metrics. Each app instance has a registry of its own (tests build several
// apps in one process; prom-client's global registry would refuse the second set of names).

let processMetrics: Registry | undefined;

/**
 * A fresh registry holding the process's default metrics (CPU, memory, event loop lag, GC).
 * Those describe the process, not an app, so they are collected once per process and shared:
 * collectDefaultMetrics per app would add a GC observer and an event-loop monitor per app.
 */
function createRegistry(): Registry {
  if (!processMetrics) {
    processMetrics = new Registry();
    collectDefaultMetrics({ register: processMetrics });
  }
  return Registry.merge([processMetrics]);
}

/** Where a request matched no route: one label value, never the raw URL (unbounded cardinality). */
export const UNMATCHED_ROUTE = 'unmatched';

export interface ApiMetrics {
  registry: Registry;
  httpDuration: Histogram<'method' | 'route' | 'status_code'>;
  queueJobs: Gauge<'state'>;
  predictSeconds: Histogram;
  predictBatchImages: Histogram;
  cacheHits: Counter;
  cacheMisses: Counter;
}

export function createApiMetrics(queue: TrainingQueue): ApiMetrics {
  const registry = createRegistry();
  const registers = [registry];
  return {
    registry,
    httpDuration: new Histogram({
      name: 'finetune_http_request_duration_seconds',
      help: 'HTTP requests by method, route pattern and status code: time from arrival to the response sent',
      labelNames: ['method', 'route', 'status_code'],
      // Uploads and first predictions on a large model take seconds to minutes.
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers,
    }),
    queueJobs: new Gauge({
      name: 'finetune_queue_jobs',
      help: 'Entries of the training queue by BullMQ state, read at scrape time (finished entries are kept for a while, not forever)',
      labelNames: ['state'],
      registers,
      async collect() {
        // Redis down: no samples rather than stale ones, and the rest of the scrape still answers
        // (/readyz says why).
        this.reset();
        let counts: Record<string, number>;
        try {
          counts = await queue.counts();
        } catch {
          return;
        }
        for (const [state, count] of Object.entries(counts)) this.set({ state }, count);
      },
    }),
    predictSeconds: new Histogram({
      name: 'finetune_predict_seconds',
      help: 'Successful /predict calls: decoding, the model load on a cache miss, and inference',
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    predictBatchImages: new Histogram({
      name: 'finetune_predict_batch_images',
      help: 'Images per /predict forward run: its count is the runs, its sum the images; with PREDICT_BATCH_WINDOW_MS above 0, concurrent requests for one model share a run',
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
      registers,
    }),
    cacheHits: new Counter({
      name: 'finetune_model_cache_hits_total',
      help: 'Model lookups for /predict answered by the models loaded in this API process (a load under way included)',
      registers,
    }),
    cacheMisses: new Counter({
      name: 'finetune_model_cache_misses_total',
      help: 'Model lookups for /predict that loaded the model from object storage',
      registers,
    }),
  };
}
