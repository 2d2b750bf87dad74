export { createWorkerMetrics, type FinalStatus, type WorkerMetrics } from './metrics.ts';
export { startMetricsServer, type MetricsServer, type MetricsServerOptions } from './server.ts';
