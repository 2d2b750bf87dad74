import type { QuotaLimits } from './config.ts';
import { DomainError } from './errors.ts';

// A tenant's quotas are its own where an admin set them, else the deployment's (QUOTA_* env).
// Stored per tenant: null means "the deployment's", 0 means "unlimited".

export type QuotaName = 'concurrent_jobs' | 'stored_bytes' | 'models';

export interface TenantQuotaOverrides {
  quotaConcurrentJobs: number | null;
  quotaStoredBytes: bigint | number | null;
  quotaModels: number | null;
}

export interface TenantUsage {
  /** Jobs queued, running or retrying. */
  concurrentJobs: number;
  /** baseModels: the tenant's custom base models (POST /v1/base-models). */
  storedBytes: { datasets: number; models: number; checkpoints: number; baseModels: number; total: number };
  models: number;
}

function own(value: bigint | number | null, fallback: number | null): number | null {
  if (value === null) return fallback;
  return Number(value) === 0 ? null : Number(value);
}

export function effectiveQuotas(tenant: TenantQuotaOverrides, defaults: QuotaLimits): QuotaLimits {
  return {
    concurrentJobs: own(tenant.quotaConcurrentJobs, defaults.concurrentJobs),
    storedBytes: own(tenant.quotaStoredBytes, defaults.storedBytes),
    models: own(tenant.quotaModels, defaults.models),
  };
}

/**
 * Over a quota. Concurrent jobs answer 429 (wait for one to finish); stored bytes and models 403
 * (nothing frees up by itself: delete something). The problem names the quota, usage and limit.
 */
export class QuotaExceededError extends DomainError {
  constructor(quota: QuotaName, usage: number, limit: number, detail: string) {
    super('quota_exceeded', detail, quota === 'concurrent_jobs' ? 429 : 403, { quota, usage, limit });
  }
}

/** What starting one more job needs: a free job slot, room for a model, and storage left. */
export function checkJobQuotas(usage: TenantUsage, limits: QuotaLimits): void {
  const { concurrentJobs, models, storedBytes } = limits;
  if (concurrentJobs !== null && usage.concurrentJobs >= concurrentJobs) {
    throw new QuotaExceededError(
      'concurrent_jobs',
      usage.concurrentJobs,
      concurrentJobs,
      `${usage.concurrentJobs} of ${concurrentJobs} concurrent jobs are queued or running; wait for one to finish or cancel one`,
    );
  }
  // Each unfinished job may still produce a model: they count against the quota already.
  const pendingModels = usage.models + usage.concurrentJobs;
  if (models !== null && pendingModels >= models) {
    throw new QuotaExceededError(
      'models',
      usage.models,
      models,
      `${usage.models} models are stored and ${usage.concurrentJobs} unfinished jobs may add more; the quota is ${models}: delete a job's model first`,
    );
  }
  if (storedBytes !== null && usage.storedBytes.total >= storedBytes) {
    throw new QuotaExceededError(
      'stored_bytes',
      usage.storedBytes.total,
      storedBytes,
      `${usage.storedBytes.total} of ${storedBytes} bytes of storage are used; delete datasets or jobs first`,
    );
  }
}

/** Storing `adding` more bytes (an upload) must stay within the storage quota. */
export function checkStorageQuota(usage: TenantUsage, limits: QuotaLimits, adding: number): void {
  const { storedBytes } = limits;
  if (storedBytes === null) return;
  const used = usage.storedBytes.total;
  // Adding 0 asks "is there any room left?" (before an upload's size is known).
  const over = adding > 0 ? used + adding > storedBytes : used >= storedBytes;
  if (!over) return;
  throw new QuotaExceededError(
    'stored_bytes',
    used,
    storedBytes,
    adding > 0
      ? `storing ${adding} more bytes would exceed the storage quota: ${used} of ${storedBytes} bytes are used; delete datasets or jobs first`
      : `${used} of ${storedBytes} bytes of storage are used; delete datasets or jobs first`,
  );
}
