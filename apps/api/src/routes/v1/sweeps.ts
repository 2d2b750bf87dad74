import type { FastifyInstance } from 'fastify';
import Type from 'typebox';
import { SweepSpecSchema } from '@finetune/core';
import { SweepsRepository } from '@finetune/db';
import type { RequestTypeProvider } from '../../type-provider.ts';
import type { AppDeps } from '../../deps.ts';
import { callerOf } from '../../plugins/auth.ts';
import { bearer } from '../../plugins/openapi.ts';
import { errorResponses, NoContent, Sweep, SweepPage } from '../../response-schemas.ts';
import { CreatedAfter, IdParams, ListQuery } from '../../schemas.ts';
import { cancelSweep, createSweep, deleteSweep, getSweep, loadTrials, presentSweep, type SweepDeps } from '../../services/sweeps.service.ts';

const tags = ['sweeps'];

const createRoute = {
  schema: {
    summary: 'Start a hyperparameter sweep',
    description:
      'Answers 202 with the queued sweep; the workers start its trials (ordinary jobs) up to maxConcurrentTrials at a time. ' +
      '`space` maps hyperparameter paths (`learningRate`, `head.dropout`) to a range `{min, max, log?}` or `{choices: [...]}`. ' +
      'A space that names no hyperparameter or can produce an invalid job spec is 422 invalid_space, naming the path.',
    tags,
    security: bearer,
    body: SweepSpecSchema,
    response: { 202: Sweep, ...errorResponses },
  },
};

const SWEEP_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'canceled'] as const;

const listRoute = {
  schema: {
    summary: 'List sweeps',
    tags,
    security: bearer,
    querystring: Type.Object(
      {
        ...ListQuery.properties,
        status: Type.Optional(Type.Union(SWEEP_STATUSES.map((s) => Type.Literal(s)))),
        createdAfter: CreatedAfter,
      },
      { additionalProperties: false },
    ),
    response: { 200: SweepPage, ...errorResponses },
  },
};

const byId = (summary: string, response: object, description?: string) => ({
  schema: { summary, ...(description ? { description } : {}), tags, security: bearer, params: IdParams, response: { ...response, ...errorResponses } },
});

const getRoute = byId('Get a sweep', { 200: Sweep }, 'Status, counts, the leaderboard of its trials and the best trial, whose model is the sweep\'s modelId.');
const cancelRoute = byId('Cancel a sweep', { 202: Sweep }, 'No more trials start; unfinished trials are canceled (a running one keeps its best epoch as its model). 409 sweep_not_cancelable once finished.');
const deleteRoute = byId('Delete a finished sweep', { 204: NoContent }, 'With its trials, their checkpoints and models. 409 sweep_not_finished while it or a trial runs.');

export async function sweepRoutes(fastify: FastifyInstance, { deps }: { deps: AppDeps }) {
  const app = fastify.withTypeProvider<RequestTypeProvider>();
  const sweepDeps: SweepDeps = { ...deps, sweeps: new SweepsRepository(deps.db) };

  const present = async (id: string, tenantId: string) => {
    const sweep = await getSweep(sweepDeps, tenantId, id);
    const { trials, best } = await loadTrials(sweepDeps, [sweep.id]);
    return presentSweep(sweep, trials, best, true);
  };

  app.post('/v1/sweeps', createRoute, async (request, reply) => {
    const { tenantId } = callerOf(request);
    const sweep = await createSweep(sweepDeps, tenantId, request.body);
    return reply.code(202).header('location', `/v1/sweeps/${sweep.id}`).send(await present(sweep.id, tenantId));
  });

  app.get('/v1/sweeps', listRoute, async (request) => {
    const { status, createdAfter, ...page } = request.query;
    const result = await sweepDeps.sweeps.list(callerOf(request).tenantId, page, { status, createdAfter: createdAfter ? new Date(createdAfter) : undefined });
    const { trials, best } = await loadTrials(sweepDeps, result.items.map((s) => s.id));
    return { items: result.items.map((sweep) => presentSweep(sweep, trials, best, false)), nextCursor: result.nextCursor };
  });

  app.get('/v1/sweeps/:id', getRoute, async (request) => present(request.params.id, callerOf(request).tenantId));

  app.post('/v1/sweeps/:id/cancel', cancelRoute, async (request, reply) => {
    const { tenantId } = callerOf(request);
    await cancelSweep(sweepDeps, tenantId, request.params.id);
    return reply.code(202).send(await present(request.params.id, tenantId));
  });

  app.delete('/v1/sweeps/:id', deleteRoute, async (request, reply) => {
    await deleteSweep(sweepDeps, callerOf(request).tenantId, request.params.id);
    return reply.code(204).send();
  });
}
