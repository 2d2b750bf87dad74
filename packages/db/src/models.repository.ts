import type { Db } from './client.ts';
import type { Model } from './generated/client.ts';
import { pageArgs, toPage, type Page, type PageRequest } from './pagination.ts';

export interface ModelFilters {
  jobId?: string | undefined;
  /** Models trained on this dataset (through their job). */
  datasetId?: string | undefined;
  createdAfter?: Date | undefined;
}

export class ModelsRepository {
  constructor(private readonly db: Db) {}

  /** A model of this tenant; another tenant's model is null, exactly like a missing one. */
  get(tenantId: string, id: string): Promise<Model | null> {
    return this.db.model.findFirst({ where: { id, tenantId } });
  }

  async list(tenantId: string, page: PageRequest, filters: ModelFilters = {}): Promise<Page<Model>> {
    const rows = await this.db.model.findMany({
      where: {
        tenantId,
        ...(filters.jobId ? { jobId: filters.jobId } : {}),
        ...(filters.datasetId ? { job: { datasetId: filters.datasetId } } : {}),
        ...(filters.createdAfter ? { createdAt: { gt: filters.createdAfter } } : {}),
      },
      ...pageArgs(page),
    });
    return toPage(rows, page.limit);
  }

  /** Sets (a number in [0, 1]) or clears (null) the tenant's model's confidence threshold; null
   * when the model is not the tenant's. */
  async setConfidenceThreshold(tenantId: string, id: string, confidenceThreshold: number | null): Promise<Model | null> {
    const updated = await this.db.model.updateMany({ where: { id, tenantId }, data: { confidenceThreshold } });
    return updated.count === 1 ? this.get(tenantId, id) : null;
  }

  /** Deletes the tenant's model row; returns it (its objects are the caller's to remove), or null. */
  async delete(tenantId: string, id: string): Promise<Model | null> {
    return this.db.$transaction(async (tx) => {
      const model = await tx.model.findFirst({ where: { id, tenantId } });
      if (!model) return null;
      // A concurrent delete may have won between the read and here: then this one found nothing.
      const deleted = await tx.model.deleteMany({ where: { id } });
      return deleted.count === 1 ? model : null;
    });
  }
}
