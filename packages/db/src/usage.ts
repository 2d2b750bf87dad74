import { ACTIVE_STATUSES, effectiveQuotas, type QuotaLimits, type TenantUsage } from '@finetune/core';
import type { Db } from './client.ts';
import type { Prisma } from './generated/client.ts';

type Client = Db | Prisma.TransactionClient;

interface UsageRow {
  concurrent_jobs: bigint;
  dataset_bytes: bigint;
  model_bytes: bigint;
  checkpoint_bytes: bigint;
  base_model_bytes: bigint;
  models: bigint;
}

/** What a tenant uses now, in one round trip. Datasets being deleted still occupy storage. */
export async function tenantUsage(client: Client, tenantId: string): Promise<TenantUsage> {
  const [row] = await client.$queryRaw<UsageRow[]>`
    SELECT
      (SELECT count(*) FROM jobs
        WHERE "tenantId" = ${tenantId}::uuid AND status::text = ANY(${[...ACTIVE_STATUSES]}::text[])) AS concurrent_jobs,
      (SELECT coalesce(sum("sizeBytes"), 0)::bigint FROM datasets WHERE "tenantId" = ${tenantId}::uuid) AS dataset_bytes,
      (SELECT coalesce(sum("sizeBytes"), 0)::bigint FROM models WHERE "tenantId" = ${tenantId}::uuid) AS model_bytes,
      (SELECT coalesce(sum(c."sizeBytes"), 0)::bigint FROM checkpoints c JOIN jobs j ON j.id = c."jobId"
        WHERE j."tenantId" = ${tenantId}::uuid) AS checkpoint_bytes,
      (SELECT coalesce(sum("sizeBytes"), 0)::bigint FROM base_models WHERE "tenantId" = ${tenantId}::uuid) AS base_model_bytes,
      (SELECT count(*) FROM models WHERE "tenantId" = ${tenantId}::uuid) AS models`;
  const datasets = Number(row!.dataset_bytes);
  const models = Number(row!.model_bytes);
  const checkpoints = Number(row!.checkpoint_bytes);
  const baseModels = Number(row!.base_model_bytes);
  return {
    concurrentJobs: Number(row!.concurrent_jobs),
    storedBytes: { datasets, models, checkpoints, baseModels, total: datasets + models + checkpoints + baseModels },
    models: Number(row!.models),
  };
}

/**
 * Locks the tenant's row for the rest of the transaction and returns its quotas. Everything that
 * adds to a tenant's usage (a job, a dataset) takes this lock before counting, so two concurrent
 * requests cannot both see the last free slot. Null when the tenant does not exist.
 */
export async function lockTenantQuotas(tx: Prisma.TransactionClient, tenantId: string, defaults: QuotaLimits): Promise<QuotaLimits | null> {
  const rows = await tx.$queryRaw<{ quotaConcurrentJobs: number | null; quotaStoredBytes: bigint | null; quotaModels: number | null }[]>`
    SELECT "quotaConcurrentJobs", "quotaStoredBytes", "quotaModels" FROM tenants WHERE id = ${tenantId}::uuid FOR UPDATE`;
  return rows[0] ? effectiveQuotas(rows[0], defaults) : null;
}
