import { ACTIVE_STATUSES, DomainError } from '@finetune/core';
import type { Db } from './client.ts';
import type { Dataset, Prisma } from './generated/client.ts';
import { pageArgs, toPage, type Page, type PageRequest } from './pagination.ts';

export class DatasetsRepository {
  constructor(private readonly db: Db) {}

  create(data: Prisma.DatasetCreateInput): Promise<Dataset> {
    return this.db.dataset.create({ data });
  }

  get(id: string): Promise<Dataset | null> {
    return this.db.dataset.findUnique({ where: { id } });
  }

  async list(page: PageRequest): Promise<Page<Dataset>> {
    const rows = await this.db.dataset.findMany({ where: { status: 'ready' }, ...pageArgs(page) });
    return toPage(rows, page.limit);
  }

  /**
   * First half of a delete: refuses while a job still needs the data, then marks the row
   * `deleting` so no new job can start on it while its objects are removed.
   */
  async beginDelete(id: string): Promise<Dataset | null> {
    return this.db.$transaction(async (tx) => {
      // Row lock: a concurrent POST /v1/jobs takes the same lock before inserting its job.
      const locked = await tx.$queryRaw<{ id: string }[]>`
        SELECT id FROM datasets WHERE id = ${id}::uuid FOR UPDATE`;
      if (locked.length === 0) return null;
      const active = await tx.job.count({ where: { datasetId: id, status: { in: [...ACTIVE_STATUSES] } } });
      if (active > 0) {
        throw new DomainError('dataset_in_use', `dataset ${id} is used by ${active} unfinished job(s)`, 409);
      }
      return tx.dataset.update({ where: { id }, data: { status: 'deleting' } });
    });
  }

  async finishDelete(id: string): Promise<void> {
    await this.db.dataset.delete({ where: { id } });
  }
}
