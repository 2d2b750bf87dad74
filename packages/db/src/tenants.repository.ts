import { poolOf, type Db } from './client.ts';
import { prismaTypes } from './pg-reads.ts';
import type { ApiKey, Tenant } from './generated/client.ts';
import type { ApiKeyRole } from './generated/enums.ts';
import { pageArgs, toPage, type Page, type PageRequest } from './pagination.ts';

/** The tenant ADMIN_API_KEY acts in; also the owner of rows that predate tenants (migration 20261122170000_tenants). */
export const DEFAULT_TENANT_ID = '00000000-0000-4000-8000-000000000000';
export const DEFAULT_TENANT_NAME = 'default';

export type ApiKeyCredentials = Pick<ApiKey, 'id' | 'tenantId' | 'prefix' | 'keyHash' | 'role' | 'revokedAt'>;

const CREDENTIALS_BY_PREFIX = {
  name: 'finetune_api_key_credentials',
  text: 'SELECT id, "tenantId", prefix, "keyHash", role, "revokedAt" FROM api_keys WHERE prefix = $1',
};

export interface TenantQuotasInput {
  quotaConcurrentJobs?: number | null;
  quotaStoredBytes?: bigint | null;
  quotaModels?: number | null;
}

export class TenantsRepository {
  constructor(private readonly db: Db) {}

  create(data: { id: string; name: string }): Promise<Tenant> {
    return this.db.tenant.create({ data });
  }

  get(id: string): Promise<Tenant | null> {
    return this.db.tenant.findUnique({ where: { id } });
  }

  list(page: PageRequest): Promise<Page<Tenant>> {
    return this.db.tenant.findMany(pageArgs(page)).then((rows) => toPage(rows, page.limit));
  }

  async rename(id: string, name: string): Promise<boolean> {
    return (await this.db.tenant.updateMany({ where: { id }, data: { name } })).count === 1;
  }

  /** Sets a tenant's own quotas (undefined leaves one as it is, null returns it to the default). */
  async setQuotas(id: string, quotas: TenantQuotasInput): Promise<Tenant | null> {
    const updated = await this.db.tenant.updateMany({ where: { id }, data: quotas });
    return updated.count === 0 ? null : this.get(id);
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

  /**
   * What authenticating a key needs, by its prefix; revoked keys included (the caller refuses
   * them). Read on every request, so through one prepared statement rather than Prisma.
   */
  async credentialsByPrefix(prefix: string): Promise<ApiKeyCredentials | null> {
    const result = await poolOf(this.db).query({ ...CREDENTIALS_BY_PREFIX, values: [prefix], types: prismaTypes });
    return (result.rows[0] as ApiKeyCredentials | undefined) ?? null;
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
