import type { FastifyInstance } from 'fastify';
import type { Readable } from 'node:stream';
import Type from 'typebox';
import { DomainError } from '@finetune/core';
import { BaseModelsRepository } from '@finetune/db';
import { BaseModelFetchQueue } from '@finetune/queue';
import type { AppDeps } from '../../deps.ts';
import type { RequestTypeProvider } from '../../type-provider.ts';
import { callerOf } from '../../plugins/auth.ts';
import { multipartParts } from '../../plugins/multipart.ts';
import { bearer, documentBody } from '../../plugins/openapi.ts';
import { BaseModel, CustomBaseModel, errorResponses, NoContent } from '../../response-schemas.ts';
import { IdParams } from '../../schemas.ts';
import {
  BaseModelUrlBody,
  BaseModelZipFields,
  createFromUrl,
  createFromZip,
  deleteBaseModel,
  getBaseModel,
  listBaseModels,
  parseUrlBody,
  parseZipFields,
  presentBaseModel,
  type BaseModelDeps,
} from '../../services/base-models.service.ts';
import { stageArchive, type StagedArchive } from '../../services/datasets.service.ts';
import { checkUploadRoom } from '../../services/usage.service.ts';

const tags = ['models'];

const listRoute = {
  schema: {
    summary: 'The model zoo and your own bases',
    description:
      'Pretrained bases a job can start from, with input size, embedding width, source and licence: the zoo ' +
      '(`kind: "zoo"`, named in a job by id) and the bases the caller\'s tenant added (`kind: "custom"`, named as ' +
      '`{"baseModelId": id}` once `ready`), newest first.',
    tags,
    security: bearer,
    // Custom first: a zoo entry never has kind "custom", so each item is serialised by its own schema.
    response: { 200: Type.Object({ items: Type.Array(Type.Union([CustomBaseModel, BaseModel])) }), ...errorResponses },
  },
};

const createRoute = {
  schema: {
    summary: 'Add a base model of your own',
    description:
      'A TensorFlow.js layers model (as `tensorflowjs_converter` writes it from Keras). Either multipart: `file` = a zip ' +
      'of model.json and the weight files its manifest names (at the root or in one folder), with the text fields ' +
      '`embeddingLayer`, `inputSize`, `scale`, `name` — validated at once and answered `201` with the `ready` base; ' +
      'or JSON `{url, embeddingLayer, inputSize?, scale?, name?}` naming a hosted model.json — answered `202` with a ' +
      '`pending` base that a worker fetches, validates and stores (`ready`, or `failed` with the reason). A model that ' +
      'does not load, lacks the layer, or whose layer output is neither a vector nor a feature map is refused with the reason.',
    tags,
    security: bearer,
    response: { 201: CustomBaseModel, 202: CustomBaseModel, ...errorResponses },
  },
  config: {
    swaggerTransform: documentBody({
      'multipart/form-data': Type.Object({ file: Type.String({ format: 'binary', description: 'zip of model.json + weight files' }), ...BaseModelZipFields.properties }),
      'application/json': BaseModelUrlBody,
    }),
  },
};

const getRoute = { schema: { summary: 'Get one of your base models', tags, security: bearer, params: IdParams, response: { 200: CustomBaseModel, ...errorResponses } } };

const deleteRoute = {
  schema: {
    summary: 'Delete one of your base models',
    description: 'Refused (409 base_model_in_use) while a queued or running job uses it. Its files and cached embeddings are removed; models trained from it remain.',
    tags,
    security: bearer,
    params: IdParams,
    response: { 204: NoContent, ...errorResponses },
  },
};

const FIELDS = new Set(['name', 'embeddingLayer', 'inputSize', 'scale']);

export async function baseModelRoutes(fastify: FastifyInstance, { deps }: { deps: AppDeps }) {
  const app = fastify.withTypeProvider<RequestTypeProvider>();
  const bd: BaseModelDeps = {
    bases: new BaseModelsRepository(deps.db),
    // On the API's producer connection, beside the training queue.
    queue: new BaseModelFetchQueue(deps.queue.connection, deps.config.queuePrefix, { attempts: deps.config.jobAttempts, backoffMs: deps.config.jobRetryBackoffMs }),
  };
  app.addHook('onClose', async () => bd.queue.close());

  app.get('/v1/base-models', listRoute, async (request) => ({ items: await listBaseModels(bd, callerOf(request).tenantId) }));

  app.post('/v1/base-models', createRoute, async (request, reply) => {
    const { tenantId } = callerOf(request);
    if (!request.isMultipart()) {
      if (!request.headers['content-type']?.startsWith('application/json')) {
        throw new DomainError('unsupported_media_type', 'send a zip as multipart/form-data (field "file") or a URL as application/json', 415);
      }
      const body = parseUrlBody(request.body);
      await checkUploadRoom(deps, tenantId);
      const row = await createFromUrl(bd, tenantId, body);
      return reply.code(202).header('location', `/v1/base-models/${row.id}`).send(presentBaseModel(row));
    }
    // A tenant whose storage is full is told so before its upload is read.
    await checkUploadRoom(deps, tenantId);
    const fields: Record<string, string> = {};
    let staged: StagedArchive | undefined;
    let row: Awaited<ReturnType<typeof createFromZip>>;
    try {
      for await (const part of multipartParts(request)) {
        if (part.type === 'field') {
          if (!FIELDS.has(part.fieldname)) throw new DomainError('unknown_field', `unknown multipart field "${part.fieldname.slice(0, 100)}"`, 400);
          if (typeof part.value !== 'string' || part.valueTruncated) throw new DomainError('invalid_field', `${part.fieldname} must be a short text field`, 400);
          fields[part.fieldname] = part.value;
        } else if (part.fieldname === 'file' && !staged) {
          const file = part.file as Readable & { truncated: boolean };
          staged = await stageArchive(deps, { stream: file, truncated: () => file.truncated, filename: part.filename, maxBytes: deps.config.limits.baseModelBytes });
        } else {
          part.file.resume(); // drain anything but the first "file"
        }
      }
      if (!staged) throw new DomainError('file_required', 'multipart field "file" (the model zip) is missing', 400);
      row = await createFromZip(deps, bd, tenantId, staged, parseZipFields(fields));
    } finally {
      await staged?.discard();
    }
    return reply.code(201).header('location', `/v1/base-models/${row.id}`).send(presentBaseModel(row));
  });

  app.get('/v1/base-models/:id', getRoute, async (request) => presentBaseModel(await getBaseModel(bd, callerOf(request).tenantId, request.params.id)));

  app.delete('/v1/base-models/:id', deleteRoute, async (request, reply) => {
    await deleteBaseModel(deps, bd, callerOf(request).tenantId, request.params.id);
    return reply.code(204).send();
  });
}
