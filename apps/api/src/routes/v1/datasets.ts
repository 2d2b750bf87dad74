import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Readable } from 'node:stream';
import { DomainError } from '@finetune/core';
import type { AppDeps } from '../../deps.ts';
import { callerOf } from '../../plugins/auth.ts';
import { multipartParts } from '../../plugins/multipart.ts';
import { IdParams, ListQuery } from '../../schemas.ts';
import {
  checkDatasetName,
  createDataset,
  deleteDataset,
  getDataset,
  presentDataset,
  stageArchive,
  type StagedArchive,
} from '../../services/datasets.service.ts';
import { checkUploadRoom } from '../../services/usage.service.ts';

export async function datasetRoutes(fastify: FastifyInstance, { deps }: { deps: AppDeps }) {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();

  app.post('/v1/datasets', async (request, reply) => {
    if (!request.isMultipart()) {
      throw new DomainError('multipart_required', 'upload the zip as multipart/form-data, field "file"', 415);
    }
    // A tenant whose storage is full is told so before its upload is read.
    await checkUploadRoom(deps, callerOf(request).tenantId);
    // Parts arrive in order and a file part must be consumed before the next one is read, so
    // the zip is staged to disk inside the loop and the dataset created once "name" (which may
    // come before or after the file) is known.
    let name: string | undefined;
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
          }
        } else if (part.fieldname === 'file' && !staged) {
          const file = part.file as Readable & { truncated: boolean };
          staged = await stageArchive(deps, { stream: file, truncated: () => file.truncated, filename: part.filename });
        } else {
          part.file.resume(); // drain anything but the first "file"
        }
      }
      if (!staged) throw new DomainError('file_required', 'multipart field "file" (the dataset zip) is missing', 400);
      dataset = await createDataset(deps, callerOf(request).tenantId, staged, name);
    } finally {
      await staged?.discard();
    }
    // Answered once the staged file is gone: a client never sees its upload still on disk.
    return reply.code(201).header('location', `/v1/datasets/${dataset.id}`).send(presentDataset(dataset));
  });

  app.get('/v1/datasets', { schema: { querystring: ListQuery } }, async (request) => {
    const page = await deps.datasets.list(callerOf(request).tenantId, request.query);
    return { items: page.items.map(presentDataset), nextCursor: page.nextCursor };
  });

  app.get('/v1/datasets/:id', { schema: { params: IdParams } }, async (request) =>
    presentDataset(await getDataset(deps, callerOf(request).tenantId, request.params.id)),
  );

  app.delete('/v1/datasets/:id', { schema: { params: IdParams } }, async (request, reply) => {
    await deleteDataset(deps, callerOf(request).tenantId, request.params.id);
    return reply.code(204).send();
  });
}
