import { ACTIVE_STATUSES, checkStorageQuota, customBaseLabel, DomainError, type QuotaLimits } from '@finetune/core';
import type { Db } from './client.ts';
import type { BaseModel } from './generated/client.ts';
import { lockTenantQuotas, tenantUsage } from './usage.ts';

export interface BaseModelFacts {
  inputSize: number;
  embeddingSize: number;
  pooled: boolean;
  layerCount: number;
  sizeBytes: number;
}

export interface NewBaseModel {
  id: string;
  tenantId: string;
  name: string;
  source: 'zip' | 'url';
  url?: string | null;
  inputSize?: number | null;
  embeddingLayer: string;
  scale: string;
  storagePrefix: string;
}

/** Most custom bases listed (newest first) beside the zoo: GET /v1/base-models is one page. */
export const MAX_LISTED_BASE_MODELS = 500;

/**
 * The one owner of base_models rows. Bytes are added to a tenant's storage only under its row
 * lock (as datasets are), and a base is deleted only when no unfinished job names it.
 */
export class BaseModelsRepository {
  constructor(private readonly db: Db) {}

  /** A zip upload the API validated: stored and `ready` at once, within the storage quota. */
  createReady(data: NewBaseModel, facts: BaseModelFacts, quotas: QuotaLimits): Promise<BaseModel> {
    return this.db.$transaction(async (tx) => {
      await this.checkRoom(tx, data.tenantId, facts.sizeBytes, quotas);
      return tx.baseModel.create({ data: { ...data, ...facts, sizeBytes: BigInt(facts.sizeBytes), status: 'ready', readyAt: new Date() } });
    });
  }

  /** A URL base, before a worker has fetched anything: it takes no storage yet. */
  createPending(data: NewBaseModel): Promise<BaseModel> {
    return this.db.baseModel.create({ data: { ...data, status: 'pending' } });
  }

  private async checkRoom(tx: Parameters<Parameters<Db['$transaction']>[0]>[0], tenantId: string, adding: number, quotas: QuotaLimits) {
    const limits = await lockTenantQuotas(tx, tenantId, quotas);
    if (!limits) throw new DomainError('unknown_tenant', `tenant ${tenantId} does not exist`, 422);
    checkStorageQuota(await tenantUsage(tx, tenantId), limits, adding);
  }

  /** Undoes createPending when the queue refused it. */
  async discardPending(id: string): Promise<void> {
    await this.db.baseModel.deleteMany({ where: { id, status: 'pending', attempts: 0 } });
  }

  /** A base of this tenant; another tenant's is null, exactly like a missing one. */
  get(tenantId: string, id: string): Promise<BaseModel | null> {
    return this.db.baseModel.findFirst({ where: { id, tenantId } });
  }

  list(tenantId: string): Promise<BaseModel[]> {
    return this.db.baseModel.findMany({ where: { tenantId }, orderBy: [{ createdAt: 'desc' }, { id: 'desc' }], take: MAX_LISTED_BASE_MODELS });
  }

  /**
   * Removes a base no queued, running or retrying job names (409 base_model_in_use otherwise).
   * The row is locked while the jobs are counted, so two deletes cannot both proceed.
   */
  async delete(tenantId: string, id: string): Promise<BaseModel | null> {
    return this.db.$transaction(async (tx) => {
      const rows = await tx.$queryRaw<{ id: string }[]>`SELECT id FROM base_models WHERE id = ${id}::uuid AND "tenantId" = ${tenantId}::uuid FOR UPDATE`;
      if (!rows[0]) return null;
      const users = await tx.job.count({ where: { tenantId, baseModel: customBaseLabel(id), status: { in: [...ACTIVE_STATUSES] } } });
      if (users > 0) throw new DomainError('base_model_in_use', `${users} unfinished job(s) use base model ${id}; cancel them or wait for them to finish`, 409);
      return tx.baseModel.delete({ where: { id } });
    });
  }

  // ------------------------------------------------------------------------------------------
  // The worker's part (URL bases)

  /** Takes a pending base (or one whose earlier fetch attempt died) for fetching. Null: nothing to do. */
  async claim(id: string): Promise<BaseModel | null> {
    const result = await this.db.baseModel.updateMany({
      where: { id, status: { in: ['pending', 'validating'] } },
      data: { status: 'validating', attempts: { increment: 1 } },
    });
    return result.count === 1 ? this.db.baseModel.findUnique({ where: { id } }) : null;
  }

  /** The fetched base validated: `ready`, if the tenant's storage has room for it. */
  async markReady(id: string, facts: BaseModelFacts, quotas: QuotaLimits): Promise<boolean> {
    return this.db.$transaction(async (tx) => {
      const row = await tx.baseModel.findUnique({ where: { id } });
      if (!row || row.status !== 'validating') return false;
      await this.checkRoom(tx, row.tenantId, facts.sizeBytes, quotas);
      await tx.baseModel.update({ where: { id }, data: { ...facts, sizeBytes: BigInt(facts.sizeBytes), status: 'ready', readyAt: new Date(), errorCode: null, errorMessage: null } });
      return true;
    });
  }

  async fail(id: string, error: { code: string; message: string }): Promise<boolean> {
    const result = await this.db.baseModel.updateMany({
      where: { id, status: { in: ['pending', 'validating'] } },
      data: { status: 'failed', errorCode: error.code, errorMessage: error.message.slice(0, 2000) },
    });
    return result.count === 1;
  }
}
