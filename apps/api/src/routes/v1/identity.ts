import type { FastifyInstance } from 'fastify';
import type { RequestTypeProvider } from '../../type-provider.ts';
import Type from 'typebox';
import type { AppDeps } from '../../deps.ts';
import { callerOf, requireAdmin } from '../../plugins/auth.ts';
import { NotFoundError } from '@finetune/core';
import { bearer } from '../../plugins/openapi.ts';
import { ApiKey, CreatedApiKey, errorResponses, NoContent, Pages, Tenant, Usage } from '../../response-schemas.ts';
import { IdParams, ListQuery, Uuid } from '../../schemas.ts';
import { checkDatasetName } from '../../services/datasets.service.ts';
import { createApiKey, createTenant, presentApiKey, renameTenant, revokeApiKey } from '../../services/identity.service.ts';
import { presentTenant, setTenantQuotas, usageReport } from '../../services/usage.service.ts';

const TenantBody = Type.Object({ name: Type.String({ minLength: 1, maxLength: 200 }) }, { additionalProperties: false });
// 0 is unlimited, null returns a quota to the deployment's default, absent leaves it as it is.
const QuotaValue = (maximum: number) => Type.Union([Type.Integer({ minimum: 0, maximum }), Type.Null()]);
const TenantPatchBody = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    quotas: Type.Optional(
      Type.Object(
        {
          concurrentJobs: Type.Optional(QuotaValue(1_000_000)),
          storedBytes: Type.Optional(QuotaValue(Number.MAX_SAFE_INTEGER)),
          models: Type.Optional(QuotaValue(100_000_000)),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false, minProperties: 1 },
);
const ApiKeyBody = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    role: Type.Optional(Type.Union([Type.Literal('member'), Type.Literal('admin')])),
  },
  { additionalProperties: false },
);

const tags = ['identity'];
const route = <S extends object>(summary: string, schema: S, response: object) => ({
  schema: { summary, tags, security: bearer, ...schema, response: { ...response, ...errorResponses } },
});
const admin = <S extends object>(summary: string, schema: S, response: object) => ({
  onRequest: requireAdmin,
  ...route(`${summary} (admin)`, schema, response),
});

const createTenantRoute = admin('Create a tenant', { body: TenantBody }, { 201: Type.Object({ id: Uuid(), name: Type.String() }) });
const listTenantsRoute = admin('List tenants', { querystring: ListQuery }, { 200: Pages.tenants });
const getTenantRoute = admin('Get a tenant, its quotas and usage', { params: IdParams }, { 200: Tenant });
const patchTenantRoute = admin('Rename a tenant or set its quotas', { params: IdParams, body: TenantPatchBody }, { 200: Tenant });
const usageRoute = route('Your usage against your quotas, and your rate limits', {}, { 200: Usage });
const createKeyRoute = admin('Create an API key for a tenant', { params: IdParams, body: ApiKeyBody }, { 201: CreatedApiKey });
const listKeysRoute = route("Your tenant's API keys (never the keys themselves)", {}, { 200: Type.Object({ items: Type.Array(ApiKey) }) });
const revokeKeyRoute = route('Revoke an API key', { params: IdParams }, { 204: NoContent });

export async function identityRoutes(fastify: FastifyInstance, { deps }: { deps: AppDeps }) {
  const app = fastify.withTypeProvider<RequestTypeProvider>();

  app.post('/v1/tenants', createTenantRoute, async (request, reply) => {
    // Same rules as a dataset name: no control characters.
    const tenant = await createTenant(deps, checkDatasetName(request.body.name));
    return reply.code(201).header('location', `/v1/tenants/${tenant.id}`).send({ id: tenant.id, name: tenant.name });
  });

  app.get('/v1/tenants', listTenantsRoute, async (request) => {
    const page = await deps.tenants.list(request.query);
    return { items: await Promise.all(page.items.map((t) => presentTenant(deps, t))), nextCursor: page.nextCursor };
  });

  app.get('/v1/tenants/:id', getTenantRoute, async (request) => {
    const tenant = await deps.tenants.get(request.params.id);
    if (!tenant) throw new NotFoundError('tenant', request.params.id);
    return presentTenant(deps, tenant);
  });

  app.patch('/v1/tenants/:id', patchTenantRoute, async (request) => {
    const { name, quotas } = request.body;
    if (name !== undefined) await renameTenant(deps, request.params.id, checkDatasetName(name));
    const tenant = await setTenantQuotas(deps, request.params.id, quotas ?? {});
    request.log.info({ forTenant: tenant.id, quotas }, 'tenant updated');
    return presentTenant(deps, tenant);
  });

  app.get('/v1/usage', usageRoute, async (request) => usageReport(deps, callerOf(request).tenantId));

  app.post(
    '/v1/tenants/:id/api-keys',
    {
      ...createKeyRoute,
      // The body is optional: no body is `{}` (a member key with no name).
      preValidation: async (request) => {
        if (request.body === undefined) request.body = {};
      },
    },
    async (request, reply) => {
      const body = request.body;
      const name = body.name === undefined ? undefined : checkDatasetName(body.name);
      const { row, key } = await createApiKey(deps, request.params.id, { name, role: body.role });
      request.log.info({ apiKeyId: row.id, newKeyPrefix: row.prefix, forTenant: row.tenantId, role: row.role }, 'api key created');
      return reply
        .code(201)
        .header('cache-control', 'no-store')
        .send({ id: row.id, key, prefix: row.prefix, role: row.role, name: row.name, tenantId: row.tenantId });
    },
  );

  app.get('/v1/api-keys', listKeysRoute, async (request) => {
    const rows = await deps.apiKeys.listForTenant(callerOf(request).tenantId);
    return { items: rows.map(presentApiKey) };
  });

  app.delete('/v1/api-keys/:id', revokeKeyRoute, async (request, reply) => {
    await revokeApiKey(deps, callerOf(request), request.params.id);
    request.log.info({ apiKeyId: request.params.id }, 'api key revoked');
    return reply.code(204).send();
  });
}
