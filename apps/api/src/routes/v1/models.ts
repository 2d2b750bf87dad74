import type { FastifyInstance } from 'fastify';
import type { RequestTypeProvider } from '../../type-provider.ts';
import { Compile } from 'typebox/compile';
import { DomainError } from '@finetune/core';
import type { AppDeps } from '../../deps.ts';
import { callerOf } from '../../plugins/auth.ts';
import { multipartParts } from '../../plugins/multipart.ts';
import Type from 'typebox';
import { bearer, documentBody } from '../../plugins/openapi.ts';
import { Binary, errorResponses, Model, NoContent, Pages, Prediction } from '../../response-schemas.ts';
import { CreatedAfter, IdParams, ListQuery, PredictJsonBody, Uuid } from '../../schemas.ts';
import type { ModelCache } from '../../services/model-cache.ts';
import type { PredictBatcher } from '../../services/predict-batcher.ts';
import { deleteModel, downloadModel, getModel, predict, presentModel, setConfidenceThreshold } from '../../services/models.service.ts';

// /predict takes multipart or JSON, so its body cannot carry a route schema (a multipart body
// is not an object at validation time); the JSON form is checked with the same TypeBox schema.
const predictJson = Compile(PredictJsonBody);
const BASE64 = /^[A-Za-z0-9+/\r\n]*={0,2}$/;

const tags = ['models'];

const listRoute = {
  schema: {
    summary: 'List models',
    tags,
    security: bearer,
    querystring: Type.Object(
      { ...ListQuery.properties, jobId: Type.Optional(Uuid()), datasetId: Type.Optional(Uuid()), createdAfter: CreatedAfter },
      { additionalProperties: false },
    ),
    response: { 200: Pages.models, ...errorResponses },
  },
};

const byId = (summary: string, response: object, description?: string) => ({
  schema: { summary, ...(description ? { description } : {}), tags, security: bearer, params: IdParams, response: { ...response, ...errorResponses } },
});

const getRoute = byId(
  'Get a model',
  { 200: Model },
  'Labels, input shape and scaling, metrics, validation and test evaluations, calibration, confidence threshold, transfer gain.',
);
const Threshold = (description: string) => Type.Number({ minimum: 0, maximum: 1, description });
const patchRoute = {
  schema: {
    summary: 'Set a model\'s confidence threshold',
    description: 'Below the threshold (a calibrated top score), /predict and the downloaded page label an image "unknown". null removes it.',
    tags,
    security: bearer,
    params: IdParams,
    body: Type.Object(
      { confidenceThreshold: Type.Union([Threshold('0–1'), Type.Null()]) },
      { additionalProperties: false },
    ),
    response: { 200: Model, ...errorResponses },
  },
};
const deleteRoute = byId('Delete a model', { 204: NoContent }, 'Its files go too; the job that trained it remains, without a model.');
const downloadRoute = byId(
  'Download a model',
  { 200: Binary('application/zip: model.json, weights.bin, labels.json, metadata.json (a TensorFlow.js layers model), and index.html, app.js, style.css, tf.min.js: a page that runs it in a browser') },
);
const predictRouteById = byId(
  'Predict',
  { 200: Type.Object({ modelId: Uuid(), predictions: Type.Array(Prediction) }) },
  'One image as multipart field `file`, or up to 32 as base64 JSON. Scores are calibrated probabilities when the model has a temperature; ' +
    'below the confidence threshold (`?threshold=`, else the model\'s) the label is "unknown".',
);
const predictRoute = {
  ...predictRouteById,
  schema: {
    ...predictRouteById.schema,
    querystring: Type.Object(
      { threshold: Type.Optional(Threshold("a confidence threshold for this request, instead of the model's")) },
      { additionalProperties: false },
    ),
  },
  config: {
    swaggerTransform: documentBody({
      'application/json': PredictJsonBody,
      'multipart/form-data': Type.Object({ file: Type.String({ format: 'binary', description: 'one image (JPEG, PNG, WebP, GIF, TIFF, AVIF)' }) }),
    }),
  },
};

export async function modelRoutes(fastify: FastifyInstance, { deps, cache, batcher }: { deps: AppDeps; cache: ModelCache; batcher: PredictBatcher }) {
  const app = fastify.withTypeProvider<RequestTypeProvider>();

  app.get('/v1/models', listRoute, async (request) => {
    const { jobId, datasetId, createdAfter, ...page } = request.query;
    const filters = { jobId, datasetId, createdAfter: createdAfter ? new Date(createdAfter) : undefined };
    const result = await deps.models.list(callerOf(request).tenantId, page, filters);
    return { items: result.items.map(presentModel), nextCursor: result.nextCursor };
  });

  app.get('/v1/models/:id', getRoute, async (request) => presentModel(await getModel(deps, callerOf(request).tenantId, request.params.id)));

  app.patch('/v1/models/:id', patchRoute, async (request) =>
    presentModel(await setConfidenceThreshold(deps, callerOf(request).tenantId, request.params.id, request.body.confidenceThreshold)),
  );

  app.delete('/v1/models/:id', deleteRoute, async (request, reply) => {
    await deleteModel(deps, cache, callerOf(request).tenantId, request.params.id);
    return reply.code(204).send();
  });

  app.get('/v1/models/:id/download', downloadRoute, async (request, reply) => {
    const zip = await downloadModel(deps, callerOf(request).tenantId, request.params.id);
    return reply
      .type('application/zip')
      .header('content-disposition', `attachment; filename="model-${request.params.id}.zip"`)
      .send(zip);
  });

  // The JSON form carries its images as base64: as much as one MAX_PREDICT_BYTES upload, plus
  // room for the JSON around it.
  const { predictBytes, jsonBodyBytes } = deps.config.limits;
  const predictBodyLimit = Math.max(jsonBodyBytes, Math.ceil(predictBytes / 3) * 4 + 64 * 1024);

  app.post('/v1/models/:id/predict', { ...predictRoute, bodyLimit: predictBodyLimit }, async (request) => {
    const { tenantId } = callerOf(request);
    const images: Buffer[] = [];
    if (request.isMultipart()) {
      for await (const part of multipartParts(request, { limits: { fileSize: predictBytes } })) {
        if (part.type === 'file' && part.fieldname === 'file') images.push(await part.toBuffer());
        else if (part.type === 'file') part.file.resume();
      }
      if (images.length === 0) throw new DomainError('file_required', 'multipart field "file" (an image) is missing', 400);
    } else {
      const body = request.body;
      if (!predictJson.Check(body)) {
        const detail = [...predictJson.Errors(body)].map((e) => `${e.instancePath || '/'} ${e.message}`).join('; ');
        throw new DomainError('validation_error', `body ${detail}`, 400);
      }
      body.instances.forEach((instance, i) => {
        if (!BASE64.test(instance.b64)) throw new DomainError('invalid_base64', `instances[${i}].b64 is not base64`, 400);
        images.push(Buffer.from(instance.b64, 'base64'));
      });
    }
    const predictions = await predict(deps, cache, batcher, tenantId, request.params.id, images, request.query.threshold);
    return { modelId: request.params.id, predictions };
  });
}
