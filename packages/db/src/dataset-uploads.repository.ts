import type { Db } from './client.ts';
import type { DatasetUpload } from './generated/client.ts';

/**
 * How long after its expiry a `completing` upload is taken for abandoned (its API process died
 * mid-inspection). A completion is claimed only before expiry and lasts at most a request
 * timeout, so an hour is far past any live one.
 */
export const STALE_COMPLETION_MS = 3_600_000;

/**
 * How long after its expiry a pending upload is swept. S3 checks a presigned URL's expiry when a
 * PUT starts, so a large PUT begun just before expiry may land well after it: sweeping at once
 * would leave that object behind, unowned.
 */
export const LATE_PUT_GRACE_MS = 15 * 60_000;

export interface NewDatasetUpload {
  id: string;
  tenantId: string;
  storageKey: string;
  filename: string;
  sizeBytes: number;
  name: string | null;
  kind: 'labelled' | 'unlabelled';
  expiresAt: Date;
}

/**
 * Direct-to-storage uploads. Status moves pending → completing (one completion at a time) →
 * completed, or back to pending when the completion fails; pending (or abandoned completing)
 * → expired by the sweep.
 */
export class DatasetUploadsRepository {
  constructor(private readonly db: Db) {}

  create(data: NewDatasetUpload): Promise<DatasetUpload> {
    return this.db.datasetUpload.create({ data: { ...data, sizeBytes: BigInt(data.sizeBytes) } });
  }

  /** An upload of this tenant; another tenant's is null, exactly like a missing one. */
  get(tenantId: string, id: string): Promise<DatasetUpload | null> {
    return this.db.datasetUpload.findFirst({ where: { id, tenantId } });
  }

  /** Bytes the tenant's open uploads have declared: reserved against its storage quota. */
  async reservedBytes(tenantId: string, now: Date): Promise<number> {
    const result = await this.db.datasetUpload.aggregate({
      where: { tenantId, status: { in: ['pending', 'completing'] }, expiresAt: { gt: now } },
      _sum: { sizeBytes: true },
    });
    return Number(result._sum.sizeBytes ?? 0n);
  }

  /** Takes a pending, unexpired upload for one completion; false if another has it or it is not pending. */
  async claim(tenantId: string, id: string, now: Date): Promise<boolean> {
    const { count } = await this.db.datasetUpload.updateMany({
      where: { id, tenantId, status: 'pending', expiresAt: { gt: now } },
      data: { status: 'completing' },
    });
    return count === 1;
  }

  /** A failed completion hands the upload back. */
  async release(id: string): Promise<void> {
    await this.db.datasetUpload.updateMany({ where: { id, status: 'completing' }, data: { status: 'pending' } });
  }

  async complete(id: string, datasetId: string): Promise<void> {
    await this.db.datasetUpload.updateMany({ where: { id, status: 'completing' }, data: { status: 'completed', datasetId } });
  }

  /** Uploads the sweep removes: pending ones past expiry (and a late PUT), completing ones long past it. */
  due(now: Date, limit = 500): Promise<DatasetUpload[]> {
    return this.db.datasetUpload.findMany({
      where: {
        OR: [
          { status: 'pending', expiresAt: { lt: new Date(now.getTime() - LATE_PUT_GRACE_MS) } },
          { status: 'completing', expiresAt: { lt: new Date(now.getTime() - STALE_COMPLETION_MS) } },
        ],
      },
      orderBy: { expiresAt: 'asc' },
      take: limit,
    });
  }

  async markExpired(id: string): Promise<void> {
    await this.db.datasetUpload.updateMany({ where: { id, status: { in: ['pending', 'completing'] } }, data: { status: 'expired' } });
  }
}
