import type { Db } from './client.ts';
import type { ApiKey, Tenant } from './generated/client.ts';
import type { ApiKeyRole } from './generated/enums.ts';

/** The tenant ADMIN_API_KEY acts in; also the owner of rows that predate tenants (migration 20261122170000_tenants). */
export const DEFAULT_TENANT_ID = '00000000-0000-4000-8000-000000000000';
export const DEFAULT_TENANT_NAME = 'default';

export type ApiKeyWithTenant = ApiKey & { tenant: Tenant };

export class TenantsRepository {
  constructor(private readonly db: Db) {}

  create(data: { id: string; name: string }): Promise<Tenant> {
    return this.db.tenant.create({ data });
  }

  get(id: string): Promise<Tenant | null> {
    return this.db.tenant.findUnique({ where: { id } });
  }

  /** The default tenant, created on first use. */
  ensureDefault(): Promise<Tenant> {
    return this.db.tenant.upsert({
      where: { id: DEFAULT_TENANT_ID },
      create: { id: DEFAULT_TENANT_ID, name: DEFAULT_TENANT_NAME },
      update: {},
    });
  }
}

/** API key rows. Only hashes are stored; the key itself is never passed in here. */
export class ApiKeysRepository {
  constructor(private readonly db: Db) {}

  create(data: { id: string; tenantId: string; name: string | null; prefix: string; keyHash: string; role: ApiKeyRole }): Promise<ApiKey> {
    return this.db.apiKey.create({ data });
  }

  /** The key row for a prefix, with its tenant; revoked keys included (the caller refuses them). */
  findByPrefix(prefix: string): Promise<ApiKeyWithTenant | null> {
    return this.db.apiKey.findUnique({ where: { prefix }, include: { tenant: true } });
  }

  listForTenant(tenantId: string): Promise<ApiKey[]> {
    return this.db.apiKey.findMany({ where: { tenantId }, orderBy: [{ createdAt: 'desc' }, { id: 'desc' }] });
  }

  /** Any key that could still authenticate (not revoked). */
  async anyActive(): Promise<boolean> {
    return (await this.db.apiKey.count({ where: { revokedAt: null }, take: 1 })) > 0;
  }

  /**
   * Revokes a key. `tenantId` scopes it to one tenant (a member revoking); null lets an admin
   * revoke any key. Null when there is no such key (in that scope); revoking twice keeps the
   * first revocation time.
   */
  async revoke(id: string, tenantId: string | null): Promise<ApiKey | null> {
    const where = tenantId ? { id, tenantId } : { id };
    const key = await this.db.apiKey.findFirst({ where });
    if (!key) return null;
    if (key.revokedAt) return key;
    await this.db.apiKey.updateMany({ where: { id, revokedAt: null }, data: { revokedAt: new Date() } });
    return this.db.apiKey.findUnique({ where: { id } });
  }
}
