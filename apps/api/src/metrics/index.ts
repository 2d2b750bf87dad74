export { createApiMetrics, UNMATCHED_ROUTE, type ApiMetrics } from './metrics.ts';
export { registerMetrics, type MetricsOptions } from './plugin.ts';
