import { randomUUID } from 'node:crypto';
import { DomainError, NotFoundError } from '@finetune/core';
import type { ApiKey, Tenant } from '@finetune/db';
import { generateApiKey, hashApiKey } from '../auth/api-keys.ts';
import type { AppDeps } from '../deps.ts';
import type { Caller, Role } from '../plugins/auth.ts';

export async function createTenant(deps: AppDeps, name: string): Promise<Tenant> {
  return deps.tenants.create({ id: randomUUID(), name });
}

export async function renameTenant(deps: AppDeps, id: string, name: string): Promise<void> {
  if (!(await deps.tenants.rename(id, name))) throw new NotFoundError('tenant', id);
}

/** A new key for a tenant. The key itself is returned here and nowhere else, ever. */
export async function createApiKey(
  deps: AppDeps,
  tenantId: string,
  input: { name?: string | undefined; role?: Role | undefined },
): Promise<{ row: ApiKey; key: string }> {
  if (!(await deps.tenants.get(tenantId))) throw new NotFoundError('tenant', tenantId);
  for (let attempt = 0; ; attempt++) {
    const { key, prefix } = generateApiKey();
    try {
      const row = await deps.apiKeys.create({
        id: randomUUID(),
        tenantId,
        name: input.name ?? null,
        prefix,
        keyHash: hashApiKey(secretOf(deps), key).toString('hex'),
        role: input.role ?? 'member',
      });
      return { row, key };
    } catch (error) {
      // A prefix already taken (32 bits: rare): draw another key.
      if ((error as { code?: string }).code === 'P2002' && attempt < 5) continue;
      throw error;
    }
  }
}

/** Revoke: an admin any key, a member only its own tenant's (another's is a 404). */
export async function revokeApiKey(deps: AppDeps, caller: Caller, id: string): Promise<void> {
  const revoked = await deps.apiKeys.revoke(id, caller.role === 'admin' ? null : caller.tenantId);
  if (!revoked) throw new NotFoundError('api_key', id);
  // Before answering: this process's next request must not find the key in its cache, even
  // before the change notification arrives.
  deps.credentials.forget(revoked.prefix);
}

export function presentApiKey(key: ApiKey) {
  return {
    id: key.id,
    tenantId: key.tenantId,
    name: key.name,
    prefix: key.prefix,
    role: key.role,
    createdAt: key.createdAt.toISOString(),
    revokedAt: key.revokedAt?.toISOString() ?? null,
  };
}

function secretOf(deps: AppDeps): string {
  const secret = deps.config.auth.apiKeySecret;
  if (!secret) throw new DomainError('internal_error', 'API_KEY_SECRET is not configured', 500);
  return secret;
}
