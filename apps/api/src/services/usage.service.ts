import { checkStorageQuota, effectiveQuotas, NotFoundError, type QuotaLimits, type RateLimit, type TenantUsage } from '@finetune/core';
import { tenantUsage, type Tenant, type TenantQuotasInput } from '@finetune/db';
import type { AppDeps } from '../deps.ts';

/** A tenant's quotas as they apply now: its own where set, else the deployment's. */
async function quotasOf(deps: AppDeps, tenantId: string): Promise<{ tenant: Tenant; limits: QuotaLimits }> {
  const tenant = await deps.tenants.get(tenantId);
  if (!tenant) throw new NotFoundError('tenant', tenantId);
  return { tenant, limits: effectiveQuotas(tenant, deps.config.quotas) };
}

function presentQuotas(usage: TenantUsage, limits: QuotaLimits) {
  return {
    concurrentJobs: { usage: usage.concurrentJobs, limit: limits.concurrentJobs },
    storedBytes: { usage: usage.storedBytes.total, limit: limits.storedBytes, breakdown: usage.storedBytes },
    models: { usage: usage.models, limit: limits.models },
  };
}

function presentRateLimit(limit: RateLimit | null) {
  return limit && { perMinute: limit.perMinute, burst: limit.burst };
}

/** GET /v1/usage: what the tenant uses against its quotas, and the rate limits its keys get. */
export async function usageReport(deps: AppDeps, tenantId: string) {
  const { limits } = await quotasOf(deps, tenantId);
  const usage = await tenantUsage(deps.db, tenantId);
  const { rateLimits } = deps.config;
  return {
    tenantId,
    quotas: presentQuotas(usage, limits),
    rateLimits: {
      default: presentRateLimit(rateLimits.default),
      predict: presentRateLimit(rateLimits.predict),
      upload: presentRateLimit(rateLimits.upload),
    },
  };
}

/** Before an upload is read: refuses at once when the tenant's storage is already full. */
export async function checkUploadRoom(deps: AppDeps, tenantId: string): Promise<void> {
  const { limits } = await quotasOf(deps, tenantId);
  if (limits.storedBytes === null) return;
  checkStorageQuota(await tenantUsage(deps.db, tenantId), limits, 0);
}

/** A tenant as an admin sees it: its own quota settings (null: the default) and what applies. */
export async function presentTenant(deps: AppDeps, tenant: Tenant) {
  const usage = await tenantUsage(deps.db, tenant.id);
  return {
    id: tenant.id,
    name: tenant.name,
    createdAt: tenant.createdAt.toISOString(),
    quotaOverrides: {
      concurrentJobs: tenant.quotaConcurrentJobs,
      storedBytes: tenant.quotaStoredBytes === null ? null : Number(tenant.quotaStoredBytes),
      models: tenant.quotaModels,
    },
    quotas: presentQuotas(usage, effectiveQuotas(tenant, deps.config.quotas)),
  };
}

export interface QuotaOverridesInput {
  concurrentJobs?: number | null | undefined;
  storedBytes?: number | null | undefined;
  models?: number | null | undefined;
}

export async function setTenantQuotas(deps: AppDeps, tenantId: string, input: QuotaOverridesInput): Promise<Tenant> {
  const data: TenantQuotasInput = {};
  if (input.concurrentJobs !== undefined) data.quotaConcurrentJobs = input.concurrentJobs;
  if (input.models !== undefined) data.quotaModels = input.models;
  if (input.storedBytes !== undefined) data.quotaStoredBytes = input.storedBytes === null ? null : BigInt(input.storedBytes);
  const tenant = await deps.tenants.setQuotas(tenantId, data);
  if (!tenant) throw new NotFoundError('tenant', tenantId);
  return tenant;
}
