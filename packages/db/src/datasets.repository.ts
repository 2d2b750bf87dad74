import { ACTIVE_STATUSES, checkStorageQuota, DomainError, type QuotaLimits } from '@finetune/core';
import type { Db } from './client.ts';
import type { Dataset, Prisma } from './generated/client.ts';
import { pageArgs, toPage, type Page, type PageRequest } from './pagination.ts';
import { lockTenantQuotas, tenantUsage } from './usage.ts';

export class DatasetsRepository {
  constructor(private readonly db: Db) {}

  /**
   * `counts` is keyed by class name, and class names are folder names from the uploaded archive:
   * `__proto__` is a legitimate one. Prisma silently drops `__proto__` keys from Json input, so
   * the column is written as JSON text by hand (reads keep such keys: they use JSON.parse).
   */
  create(data: Prisma.DatasetUncheckedCreateInput, quotas?: QuotaLimits): Promise<Dataset> {
    return this.db.$transaction(async (tx) => {
      if (quotas) {
        // Under the tenant's row lock: concurrent uploads cannot both take the last free bytes.
        const limits = await lockTenantQuotas(tx, data.tenantId, quotas);
        if (!limits) throw new DomainError('unknown_tenant', `tenant ${data.tenantId} does not exist`, 422);
        checkStorageQuota(await tenantUsage(tx, data.tenantId), limits, Number(data.sizeBytes));
      }
      await tx.dataset.create({ data: { ...data, counts: {} } });
      await tx.$executeRaw`UPDATE datasets SET counts = ${JSON.stringify(data.counts)}::jsonb WHERE id = ${data.id}::uuid`;
      return tx.dataset.findUniqueOrThrow({ where: { id: data.id } });
    });
  }

  /** A dataset of this tenant; another tenant's is null, exactly like a missing one. */
  get(tenantId: string, id: string): Promise<Dataset | null> {
    return this.db.dataset.findFirst({ where: { id, tenantId } });
  }

  async list(tenantId: string, page: PageRequest, filters: { createdAfter?: Date | undefined } = {}): Promise<Page<Dataset>> {
    const where = { tenantId, status: 'ready' as const, ...(filters.createdAfter ? { createdAt: { gt: filters.createdAfter } } : {}) };
    const rows = await this.db.dataset.findMany({ where, ...pageArgs(page) });
    return toPage(rows, page.limit);
  }

  /**
   * First half of a delete: refuses while a job still needs the data, then marks the row
   * `deleting` so no new job can start on it while its objects are removed. Null when there is
   * no ready dataset to delete — including when a concurrent delete got there first (it waited
   * on the row lock, then finds the row `deleting` or gone): exactly one delete proceeds.
   */
  async beginDelete(tenantId: string, id: string): Promise<Dataset | null> {
    return this.db.$transaction(async (tx) => {
      // Row lock: a concurrent POST /v1/jobs takes the same lock before inserting its job.
      const locked = await tx.$queryRaw<{ status: string }[]>`
        SELECT status::text AS status FROM datasets WHERE id = ${id}::uuid AND "tenantId" = ${tenantId}::uuid FOR UPDATE`;
      if (locked[0]?.status !== 'ready') return null;
      // A domain_adaptation job names its target datasets in its spec.
      const active = await tx.job.count({
        where: {
          status: { in: [...ACTIVE_STATUSES] },
          OR: [{ datasetId: id }, { spec: { path: ['targetDatasetId'], equals: id } }, { spec: { path: ['targetTestDatasetId'], equals: id } }],
        },
      });
      if (active > 0) {
        throw new DomainError('dataset_in_use', `dataset ${id} is used by ${active} unfinished job(s)`, 409);
      }
      return tx.dataset.update({ where: { id }, data: { status: 'deleting' } });
    });
  }

  /** Puts back a dataset whose delete could not remove its objects, so it can be retried. */
  async abortDelete(tenantId: string, id: string): Promise<void> {
    await this.db.dataset.updateMany({ where: { id, tenantId, status: 'deleting' }, data: { status: 'ready' } });
  }

  async finishDelete(tenantId: string, id: string): Promise<void> {
    // deleteMany: no error should the row already be gone.
    await this.db.dataset.deleteMany({ where: { id, tenantId, status: 'deleting' } });
  }
}
