import type { FastifyInstance } from 'fastify';
import Type from 'typebox';
import { BatchPredictionsRepository } from '@finetune/db';
import { BatchPredictQueue } from '@finetune/queue';
import type { RequestTypeProvider } from '../../type-provider.ts';
import type { AppDeps } from '../../deps.ts';
import { callerOf } from '../../plugins/auth.ts';
import { bearer } from '../../plugins/openapi.ts';
import { BatchPrediction, BatchPredictionPage, errorResponses, NoContent } from '../../response-schemas.ts';
import { IdParams, ListQuery, Uuid } from '../../schemas.ts';
import {
  batchPredictionResults,
  createBatchPrediction,
  deleteBatchPrediction,
  getBatchPrediction,
  presentBatchPrediction,
  type BatchDeps,
} from '../../services/batch-predictions.service.ts';

const tags = ['batch predictions'];

const createRoute = {
  schema: {
    summary: 'Classify every image of a dataset',
    description:
      'Answers 202 with the queued batch prediction; the workers run it. The model must be the caller\'s (404), the dataset ' +
      'the caller\'s and ready (422 unknown_dataset). Every image of the dataset, all splits, is classified.',
    tags,
    security: bearer,
    params: IdParams,
    body: Type.Object({ datasetId: Uuid() }, { additionalProperties: false }),
    response: { 202: BatchPrediction, ...errorResponses },
  },
};

const listRoute = {
  schema: { summary: 'List batch predictions', tags, security: bearer, querystring: ListQuery, response: { 200: BatchPredictionPage, ...errorResponses } },
};

const byId = (summary: string, response: object, description?: string) => ({
  schema: { summary, ...(description ? { description } : {}), tags, security: bearer, params: IdParams, response: { ...response, ...errorResponses } },
});

const getRoute = byId('Get a batch prediction', { 200: BatchPrediction }, 'Status and counts: total, done (updated as the run goes), failed.');
const resultsRoute = byId(
  'A batch prediction\'s results',
  {
    200: Type.String({
      description:
        'application/x-ndjson (JSON Lines), one line per image in archive order: {path, label, score, top: [{label, score}]}, ' +
        'or {path, error} for an image that could not be decoded',
    }),
  },
  '409 batch_prediction_not_finished until it succeeded (batch_prediction_failed when it failed).',
);
const deleteRoute = byId('Delete a batch prediction', { 204: NoContent }, 'In any state, with its results; a running one stops.');

export async function batchPredictionRoutes(fastify: FastifyInstance, { deps }: { deps: AppDeps }) {
  const app = fastify.withTypeProvider<RequestTypeProvider>();
  // On the API's producer connection, beside the training queue.
  const bp: BatchDeps = {
    batches: new BatchPredictionsRepository(deps.db),
    queue: new BatchPredictQueue(deps.queue.connection, deps.config.queuePrefix, { attempts: deps.config.jobAttempts, backoffMs: deps.config.jobRetryBackoffMs }),
  };
  app.addHook('onClose', async () => bp.queue.close());

  app.post('/v1/models/:id/batch-predictions', createRoute, async (request, reply) => {
    const row = await createBatchPrediction(deps, bp, callerOf(request).tenantId, request.params.id, request.body.datasetId);
    return reply.code(202).header('location', `/v1/batch-predictions/${row.id}`).send(presentBatchPrediction(row));
  });

  app.get('/v1/batch-predictions', listRoute, async (request) => {
    const page = await bp.batches.list(callerOf(request).tenantId, request.query);
    return { items: page.items.map(presentBatchPrediction), nextCursor: page.nextCursor };
  });

  app.get('/v1/batch-predictions/:id', getRoute, async (request) =>
    presentBatchPrediction(await getBatchPrediction(bp, callerOf(request).tenantId, request.params.id)),
  );

  app.get('/v1/batch-predictions/:id/results', resultsRoute, async (request, reply) => {
    const stream = await batchPredictionResults(deps, bp, callerOf(request).tenantId, request.params.id);
    return reply
      .type('application/x-ndjson')
      .header('content-disposition', `attachment; filename="batch-prediction-${request.params.id}.jsonl"`)
      .send(stream);
  });

  app.delete('/v1/batch-predictions/:id', deleteRoute, async (request, reply) => {
    await deleteBatchPrediction(deps, bp, callerOf(request).tenantId, request.params.id);
    return reply.code(204).send();
  });
}
