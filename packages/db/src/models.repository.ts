import type { Db } from './client.ts';
import type { Model } from './generated/client.ts';

export class ModelsRepository {
  constructor(private readonly db: Db) {}

  /** A model of this tenant; another tenant's model is null, exactly like a missing one. */
  get(tenantId: string, id: string): Promise<Model | null> {
    return this.db.model.findFirst({ where: { id, tenantId } });
  }
}
