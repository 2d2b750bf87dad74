import type { Db } from './client.ts';
import type { Model } from './generated/client.ts';

export class ModelsRepository {
  constructor(private readonly db: Db) {}

  get(id: string): Promise<Model | null> {
    return this.db.model.findUnique({ where: { id } });
  }
}
