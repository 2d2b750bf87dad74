import type { FastifyInstance } from 'fastify';
import type { RequestTypeProvider } from '../../type-provider.ts';
import type { Readable } from 'node:stream';
import { DomainError } from '@finetune/core';
import type { AppDeps } from '../../deps.ts';
import { callerOf } from '../../plugins/auth.ts';
import { multipartParts } from '../../plugins/multipart.ts';
import Type from 'typebox';
import { bearer, documentBody } from '../../plugins/openapi.ts';
import { Dataset, DatasetReport, errorResponses, NoContent, Pages } from '../../response-schemas.ts';
import { CreatedAfter, IdParams, ListQuery } from '../../schemas.ts';

const tags = ['datasets'];

const uploadRoute = {
  schema: {
    summary: 'Upload a dataset',
    description:
      'A zip of images in class folders (`<class>/<img>`, or `train/<class>/…` + `val/<class>/…`), streamed and ' +
      'inspected entry by entry (hostile names, bombs, undecodable images are refused or skipped) before it is stored. ' +
      'With `kind=unlabelled`, a zip of images in no class folders: the target domain of a `domain_adaptation` job.',
    tags,
    security: bearer,
    response: { 201: Dataset, ...errorResponses },
  },
  config: {
    swaggerTransform: documentBody({
      'multipart/form-data': Type.Object({
        file: Type.String({ format: 'binary', description: 'the dataset zip' }),
        name: Type.Optional(Type.String({ maxLength: 200 })),
        kind: Type.Optional(Type.Union([Type.Literal('labelled'), Type.Literal('unlabelled')], { default: 'labelled' })),
      }),
    }),
  },
};

const listRoute = {
  schema: {
    summary: 'List datasets',
    tags,
    security: bearer,
    querystring: Type.Object({ ...ListQuery.properties, createdAfter: CreatedAfter }, { additionalProperties: false }),
    response: { 200: Pages.datasets, ...errorResponses },
  },
};

const getRoute = { schema: { summary: 'Get a dataset', tags, security: bearer, params: IdParams, response: { 200: Dataset, ...errorResponses } } };

const reportRoute = {
  schema: {
    summary: 'Get the data checks of a dataset',
    description:
      'Findings computed at upload: identical images under two classes or in both train/ and val/ (blocking), ' +
      'near-duplicates across classes, class imbalance, classes too small to validate, skipped files, image size, ' +
      'aspect-ratio and greyscale/colour spread. 404 report_unavailable for a dataset uploaded before the checks existed.',
    tags,
    security: bearer,
    params: IdParams,
    response: { 200: DatasetReport, ...errorResponses },
  },
};

const deleteRoute = {
  schema: {
    summary: 'Delete a dataset',
    description: 'Refused (409 dataset_in_use) while an unfinished job needs it. Models trained on it remain.',
    tags,
    security: bearer,
    params: IdParams,
    response: { 204: NoContent, ...errorResponses },
  },
};
import {
  checkDatasetKind,
  checkDatasetName,
  createDataset,
  deleteDataset,
  getDataset,
  getDatasetReport,
  presentDataset,
  stageArchive,
  type DatasetKind,
  type StagedArchive,
} from '../../services/datasets.service.ts';
import { checkUploadRoom } from '../../services/usage.service.ts';

export async function datasetRoutes(fastify: FastifyInstance, { deps }: { deps: AppDeps }) {
  const app = fastify.withTypeProvider<RequestTypeProvider>();

  app.post('/v1/datasets', uploadRoute, async (request, reply) => {
    if (!request.isMultipart()) {
      throw new DomainError('multipart_required', 'upload the zip as multipart/form-data, field "file"', 415);
    }
    // A tenant whose storage is full is told so before its upload is read.
    await checkUploadRoom(deps, callerOf(request).tenantId);
    // Parts arrive in order and a file part must be consumed before the next one is read, so
    // the zip is staged to disk inside the loop and the dataset created once "name" (which may
    // come before or after the file) is known.
    let name: string | undefined;
    let kind: DatasetKind = 'labelled';
    let staged: StagedArchive | undefined;
    let dataset: Awaited<ReturnType<typeof createDataset>>;
    try {
      for await (const part of multipartParts(request)) {
        if (part.type === 'field') {
          // Checked as soon as it arrives: a bad name ends the request before the zip is read.
          if (part.fieldname === 'name') {
            // A part sent as application/json arrives parsed: only text is a name.
            if (typeof part.value !== 'string') throw new DomainError('invalid_name', 'name must be a text field', 400);
            name = checkDatasetName(part.value, part.valueTruncated);
          } else if (part.fieldname === 'kind') {
            kind = checkDatasetKind(part.value);
          }
        } else if (part.fieldname === 'file' && !staged) {
          const file = part.file as Readable & { truncated: boolean };
          staged = await stageArchive(deps, { stream: file, truncated: () => file.truncated, filename: part.filename });
        } else {
          part.file.resume(); // drain anything but the first "file"
        }
      }
      if (!staged) throw new DomainError('file_required', 'multipart field "file" (the dataset zip) is missing', 400);
      dataset = await createDataset(deps, callerOf(request).tenantId, staged, name, kind);
    } finally {
      await staged?.discard();
    }
    // Answered once the staged file is gone: a client never sees its upload still on disk.
    return reply.code(201).header('location', `/v1/datasets/${dataset.id}`).send(presentDataset(dataset));
  });

  app.get('/v1/datasets', listRoute, async (request) => {
    const { createdAfter, ...page } = request.query;
    const result = await deps.datasets.list(callerOf(request).tenantId, page, { createdAfter: createdAfter ? new Date(createdAfter) : undefined });
    return { items: result.items.map(presentDataset), nextCursor: result.nextCursor };
  });

  app.get('/v1/datasets/:id', getRoute, async (request) =>
    presentDataset(await getDataset(deps, callerOf(request).tenantId, request.params.id)),
  );

  app.get('/v1/datasets/:id/report', reportRoute, async (request) =>
    getDatasetReport(deps, callerOf(request).tenantId, request.params.id),
  );

  app.delete('/v1/datasets/:id', deleteRoute, async (request, reply) => {
    await deleteDataset(deps, callerOf(request).tenantId, request.params.id);
    return reply.code(204).send();
  });
}
