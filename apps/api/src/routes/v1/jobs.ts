import type { FastifyInstance } from 'fastify';
import type { RequestTypeProvider } from '../../type-provider.ts';
import Type from 'typebox';
import { JOB_STATUSES, JobSpecSchema } from '@finetune/core';
import type { AppDeps } from '../../deps.ts';
import { callerOf } from '../../plugins/auth.ts';
import { bearer } from '../../plugins/openapi.ts';
import { Checkpoint, errorResponses, Job, Metric, NoContent, Pages } from '../../response-schemas.ts';
import { CreatedAfter, IdParams, ListQuery, Uuid } from '../../schemas.ts';
import { cancelJob, createJob, deleteJob, getJob, getJobWithMetrics, listCheckpoints, presentCheckpoint, presentJob, presentMetric } from '../../services/jobs.service.ts';

const tags = ['jobs'];

const createRoute = {
  schema: {
    summary: 'Start a fine-tuning job',
    description:
      'Answers 202 with the queued job. With an `Idempotency-Key`, the same key and spec return the first job (200); ' +
      'the same key with another spec is 422 idempotency_key_reused.',
    tags,
    security: bearer,
    body: JobSpecSchema,
    headers: Type.Object({ 'idempotency-key': Type.Optional(Type.String({ minLength: 1, maxLength: 255 })) }),
    response: { 200: Job, 202: Job, ...errorResponses },
  },
};

const listRoute = {
  schema: {
    summary: 'List jobs',
    tags,
    security: bearer,
    querystring: Type.Object(
      {
        ...ListQuery.properties,
        status: Type.Optional(Type.Union(JOB_STATUSES.map((s) => Type.Literal(s)) as [ReturnType<typeof Type.Literal<(typeof JOB_STATUSES)[number]>>])),
        datasetId: Type.Optional(Uuid()),
        sweepId: Type.Optional(Uuid()),
        createdAfter: CreatedAfter,
      },
      { additionalProperties: false },
    ),
    response: { 200: Pages.jobs, ...errorResponses },
  },
};

const byId = (summary: string, response: object, description?: string) => ({
  schema: { summary, ...(description ? { description } : {}), tags, security: bearer, params: IdParams, response: { ...response, ...errorResponses } },
});

const getRoute = byId('Get a job', { 200: Job }, 'Status, progress, best and last epoch metrics, error, model id.');
const metricsRoute = byId('A job\'s metrics, one row per epoch', { 200: Type.Object({ jobId: Uuid(), items: Type.Array(Metric) }) });
const checkpointsRoute = byId('A job\'s kept checkpoints', { 200: Type.Object({ jobId: Uuid(), items: Type.Array(Checkpoint) }) });
const deleteRoute = byId('Delete a finished job', { 204: NoContent }, 'With its metrics, checkpoints and model. 409 job_not_finished for an unfinished job.');
const cancelRoute = byId(
  'Cancel a job',
  { 202: Job },
  'A queued job is canceled at once; a running one stops after its current batch and keeps its best epoch as a model.',
);

export async function jobRoutes(fastify: FastifyInstance, { deps }: { deps: AppDeps }) {
  const app = fastify.withTypeProvider<RequestTypeProvider>();

  app.post('/v1/jobs', createRoute, async (request, reply) => {
    const { tenantId } = callerOf(request);
    const { job, replayed } = await createJob(deps, tenantId, request.body, request.headers['idempotency-key']);
    const full = await getJob(deps, tenantId, job.id);
    return reply
      .code(replayed ? 200 : 202)
      .header('location', `/v1/jobs/${job.id}`)
      .send(presentJob(full, await deps.jobs.metrics(job.id, tenantId)));
  });

  app.get('/v1/jobs', listRoute, async (request) => {
    const { status, datasetId, sweepId, createdAfter, ...page } = request.query;
    const filters = { status, datasetId, sweepId, createdAfter: createdAfter ? new Date(createdAfter) : undefined };
    const result = await deps.jobs.list(callerOf(request).tenantId, page, filters);
    // Lists carry no per-epoch figures; GET /v1/jobs/:id has them.
    return { items: result.items.map((job) => presentJob(job, [])), nextCursor: result.nextCursor };
  });

  app.get('/v1/jobs/:id', getRoute, async (request) => {
    const { job, metrics } = await getJobWithMetrics(deps, callerOf(request).tenantId, request.params.id);
    return presentJob(job, metrics);
  });

  app.get('/v1/jobs/:id/metrics', metricsRoute, async (request) => {
    const { tenantId } = callerOf(request);
    const job = await getJob(deps, tenantId, request.params.id);
    const metrics = await deps.jobs.metrics(job.id, tenantId);
    return { jobId: job.id, items: metrics.map(presentMetric) };
  });

  app.get('/v1/jobs/:id/checkpoints', checkpointsRoute, async (request) => {
    const checkpoints = await listCheckpoints(deps, callerOf(request).tenantId, request.params.id);
    return { jobId: request.params.id, items: checkpoints.map(presentCheckpoint) };
  });

  app.delete('/v1/jobs/:id', deleteRoute, async (request, reply) => {
    await deleteJob(deps, callerOf(request).tenantId, request.params.id);
    return reply.code(204).send();
  });

  app.post('/v1/jobs/:id/cancel', cancelRoute, async (request, reply) => {
    const { tenantId } = callerOf(request);
    const job = await cancelJob(deps, tenantId, request.params.id);
    return reply.code(202).send(presentJob(job, await deps.jobs.metrics(job.id, tenantId)));
  });
}
