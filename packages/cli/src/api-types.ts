// The fields of the API's answers that the human output reads (README "API overview"). Not a
// full description: `--json` prints the bodies whole, whatever else they carry.

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export interface Dataset {
  id: string;
  name: string | null;
  status: string;
  /** Absent from servers that predate unlabelled datasets. */
  kind?: 'labelled' | 'unlabelled';
  layout: string;
  classes: string[];
  counts: {
    train: Record<string, number>;
    val: Record<string, number>;
    images: number;
    skipped: number;
    ignored?: number;
    skippedFiles?: { path: string; reason: string }[];
  };
  sizeBytes: number;
  sha256: string;
  createdAt: string;
}

export interface MetricRow {
  epoch: number;
  trainLoss: number | null;
  trainAccuracy: number | null;
  valLoss: number | null;
  valAccuracy: number | null;
  learningRate: number | null;
  durationMs: number | null;
  stage: number | string | null;
}

export const FINAL_STATUSES = ['succeeded', 'failed', 'canceled'] as const;

export interface Job {
  id: string;
  status: string;
  datasetId: string;
  baseModel: string | { modelId: string } | { baseModelId: string };
  strategy: string;
  progress: { epoch: number; epochs: number; percent: number };
  metrics: { best: MetricRow | null; last: MetricRow | null };
  backend: string | null;
  modelId: string | null;
  stopReason: string | null;
  attempts: number;
  runs: number;
  cancelRequested: boolean;
  error: { code: string; message: string } | null;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
}

export interface Model {
  id: string;
  jobId: string;
  baseModel: string;
  strategy: string;
  labels: string[];
  inputSize: number;
  metrics: Record<string, unknown> | null;
  evaluation: { accuracy?: number } | null;
  transferGain: number | null;
  files: string[];
  createdAt: string;
}

export interface Prediction {
  label: string;
  score: number;
  top: { label: string; score: number }[];
}

export interface Limit {
  usage: number;
  limit: number | null;
}

export interface Usage {
  tenantId: string;
  quotas: { concurrentJobs: Limit; storedBytes: Limit & { breakdown?: Record<string, number> }; models: Limit };
  rateLimits: Record<string, { perMinute: number; burst: number } | null>;
}

/** SSE `progress` event (GET /v1/jobs/:id/events). */
export interface ProgressEvent {
  epoch: number;
  epochs: number;
  batch: number;
  batches: number;
  loss: number | null;
  imagesPerSecond: number | null;
  etaSeconds: number | null;
}

export function isFinal(status: string): boolean {
  return (FINAL_STATUSES as readonly string[]).includes(status);
}

export function baseModelName(base: Job['baseModel']): string {
  if (typeof base === 'string') return base;
  return 'baseModelId' in base ? `base:${base.baseModelId}` : `model:${base.modelId}`;
}
