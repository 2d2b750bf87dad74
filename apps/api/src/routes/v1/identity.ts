import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import type { AppDeps } from '../../deps.ts';
import { callerOf, requireAdmin } from '../../plugins/auth.ts';
import { NotFoundError } from '@finetune/core';
import { IdParams, ListQuery } from '../../schemas.ts';
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

export async function identityRoutes(fastify: FastifyInstance, { deps }: { deps: AppDeps }) {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();

  app.post('/v1/tenants', { onRequest: requireAdmin, schema: { body: TenantBody } }, async (request, reply) => {
    // Same rules as a dataset name: no control characters.
    const tenant = await createTenant(deps, checkDatasetName(request.body.name));
    return reply.code(201).header('location', `/v1/tenants/${tenant.id}`).send({ id: tenant.id, name: tenant.name });
  });

  app.get('/v1/tenants', { onRequest: requireAdmin, schema: { querystring: ListQuery } }, async (request) => {
    const page = await deps.tenants.list(request.query);
    return { items: await Promise.all(page.items.map((t) => presentTenant(deps, t))), nextCursor: page.nextCursor };
  });

  app.get('/v1/tenants/:id', { onRequest: requireAdmin, schema: { params: IdParams } }, async (request) => {
    const tenant = await deps.tenants.get(request.params.id);
    if (!tenant) throw new NotFoundError('tenant', request.params.id);
    return presentTenant(deps, tenant);
  });

  app.patch('/v1/tenants/:id', { onRequest: requireAdmin, schema: { params: IdParams, body: TenantPatchBody } }, async (request) => {
    const { name, quotas } = request.body;
    if (name !== undefined) await renameTenant(deps, request.params.id, checkDatasetName(name));
    const tenant = await setTenantQuotas(deps, request.params.id, quotas ?? {});
    request.log.info({ forTenant: tenant.id, quotas }, 'tenant updated');
    return presentTenant(deps, tenant);
  });

  app.get('/v1/usage', async (request) => usageReport(deps, callerOf(request).tenantId));

  app.post(
    '/v1/tenants/:id/api-keys',
    {
      onRequest: requireAdmin,
      // The body is optional: no body is `{}` (a member key with no name).
      preValidation: async (request) => {
        if (request.body === undefined) request.body = {};
      },
      schema: { params: IdParams, body: ApiKeyBody },
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

  app.get('/v1/api-keys', async (request) => {
    const rows = await deps.apiKeys.listForTenant(callerOf(request).tenantId);
    return { items: rows.map(presentApiKey) };
  });

  app.delete('/v1/api-keys/:id', { schema: { params: IdParams } }, async (request, reply) => {
    await revokeApiKey(deps, callerOf(request), request.params.id);
    request.log.info({ apiKeyId: request.params.id }, 'api key revoked');
    return reply.code(204).send();
  });
}
