import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import { JOB_STATUSES, JobSpecSchema } from '@finetune/core';
import type { AppDeps } from '../../deps.ts';
import { callerOf } from '../../plugins/auth.ts';
import { IdParams, ListQuery } from '../../schemas.ts';
import { cancelJob, createJob, deleteJob, getJob, listCheckpoints, presentCheckpoint, presentJob, presentMetric } from '../../services/jobs.service.ts';

const JobListQuery = Type.Object(
  {
    ...ListQuery.properties,
    status: Type.Optional(Type.Union(JOB_STATUSES.map((s) => Type.Literal(s)) as [ReturnType<typeof Type.Literal<(typeof JOB_STATUSES)[number]>>])),
  },
  { additionalProperties: false },
);

const IdempotencyHeaders = Type.Object({
  'idempotency-key': Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
});

export async function jobRoutes(fastify: FastifyInstance, { deps }: { deps: AppDeps }) {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();

  app.post('/v1/jobs', { schema: { body: JobSpecSchema, headers: IdempotencyHeaders } }, async (request, reply) => {
    const { tenantId } = callerOf(request);
    const { job, replayed } = await createJob(deps, tenantId, request.body, request.headers['idempotency-key']);
    const full = await getJob(deps, tenantId, job.id);
    return reply
      .code(replayed ? 200 : 202)
      .header('location', `/v1/jobs/${job.id}`)
      .send(presentJob(full, await deps.jobs.metrics(job.id, tenantId)));
  });

  app.get('/v1/jobs', { schema: { querystring: JobListQuery } }, async (request) => {
    const { status, ...page } = request.query;
    const result = await deps.jobs.list(callerOf(request).tenantId, page, status);
    // Lists carry no per-epoch figures; GET /v1/jobs/:id has them.
    return { items: result.items.map((job) => presentJob(job, [])), nextCursor: result.nextCursor };
  });

  app.get('/v1/jobs/:id', { schema: { params: IdParams } }, async (request) => {
    const { tenantId } = callerOf(request);
    const job = await getJob(deps, tenantId, request.params.id);
    return presentJob(job, await deps.jobs.metrics(job.id, tenantId));
  });

  app.get('/v1/jobs/:id/metrics', { schema: { params: IdParams } }, async (request) => {
    const { tenantId } = callerOf(request);
    const job = await getJob(deps, tenantId, request.params.id);
    const metrics = await deps.jobs.metrics(job.id, tenantId);
    return { jobId: job.id, items: metrics.map(presentMetric) };
  });

  app.get('/v1/jobs/:id/checkpoints', { schema: { params: IdParams } }, async (request) => {
    const checkpoints = await listCheckpoints(deps, callerOf(request).tenantId, request.params.id);
    return { jobId: request.params.id, items: checkpoints.map(presentCheckpoint) };
  });

  app.delete('/v1/jobs/:id', { schema: { params: IdParams } }, async (request, reply) => {
    await deleteJob(deps, callerOf(request).tenantId, request.params.id);
    return reply.code(204).send();
  });

  app.post('/v1/jobs/:id/cancel', { schema: { params: IdParams } }, async (request, reply) => {
    const { tenantId } = callerOf(request);
    const job = await cancelJob(deps, tenantId, request.params.id);
    return reply.code(202).send(presentJob(job, await deps.jobs.metrics(job.id, tenantId)));
  });
}
