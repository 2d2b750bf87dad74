import type { FastifyInstance } from 'fastify';
import Type from 'typebox';
import { DatasetUploadsRepository } from '@finetune/db';
import type { AppDeps } from '../../deps.ts';
import { callerOf } from '../../plugins/auth.ts';
import { bearer } from '../../plugins/openapi.ts';
import { Dataset, errorResponses, PresignedUpload } from '../../response-schemas.ts';
import { Uuid } from '../../schemas.ts';
import { completeUpload, createUpload, presentUpload, startUploadSweep, type UploadDeps } from '../../services/dataset-uploads.service.ts';
import { presentDataset } from '../../services/datasets.service.ts';
import type { RequestTypeProvider } from '../../type-provider.ts';

const tags = ['datasets'];

const createRoute = {
  schema: {
    summary: 'Start a direct upload',
    description:
      'Returns a presigned URL to PUT the dataset zip straight to object storage (the bytes never pass through the API), ' +
      'valid for UPLOAD_URL_TTL_SECONDS and for exactly `size` bytes; then call …/complete. 413 above MAX_UPLOAD_BYTES, ' +
      "403 quota_exceeded when the tenant's storage has no room for `size` (open uploads count).",
    tags,
    security: bearer,
    body: Type.Object(
      {
        filename: Type.String({ minLength: 1, maxLength: 255, description: "the zip's file name: the dataset's name when `name` is not given" }),
        size: Type.Integer({ minimum: 1, description: 'bytes of the zip, exactly: the PUT must send this Content-Length' }),
        name: Type.Optional(Type.String({ description: 'the dataset name (at most 200 characters)' })),
        kind: Type.Optional(Type.Union([Type.Literal('labelled'), Type.Literal('unlabelled')], { description: 'unlabelled: images in no class folders (a domain_adaptation target)' })),
      },
      { additionalProperties: false },
    ),
    response: { 201: PresignedUpload, ...errorResponses },
  },
};

const completeRoute = {
  schema: {
    summary: 'Complete a direct upload',
    description:
      'Reads the uploaded zip back, inspects it as POST /v1/datasets does and creates the dataset (201). Completing again ' +
      'answers the same dataset (200). 409 upload_not_uploaded before the PUT, 410 upload_expired after expiry, 413 when ' +
      'the object is larger than declared; a refused archive (413, 422) is deleted, and the URL may be used again while valid.',
    tags,
    security: bearer,
    params: Type.Object({ uploadId: Uuid() }),
    response: { 200: Dataset, 201: Dataset, ...errorResponses },
  },
};

export async function datasetUploadRoutes(fastify: FastifyInstance, { deps }: { deps: AppDeps }) {
  const app = fastify.withTypeProvider<RequestTypeProvider>();
  const uploadDeps: UploadDeps = { ...deps, uploads: new DatasetUploadsRepository(deps.db) };
  const sweep = startUploadSweep(uploadDeps, fastify.log);
  fastify.addHook('onClose', () => sweep.stop());

  app.post('/v1/datasets/uploads', createRoute, async (request, reply) => {
    const created = await createUpload(uploadDeps, callerOf(request).tenantId, request.body);
    // The URL is a credential until it expires: logs get the id only.
    request.log.info({ uploadId: created.upload.id, size: request.body.size }, 'dataset upload created');
    return reply.code(201).send(presentUpload(created));
  });

  app.post('/v1/datasets/uploads/:uploadId/complete', completeRoute, async (request, reply) => {
    const { dataset, created } = await completeUpload(uploadDeps, callerOf(request).tenantId, request.params.uploadId);
    return reply
      .code(created ? 201 : 200)
      .header('location', `/v1/datasets/${dataset.id}`)
      .send(presentDataset(dataset));
  });
}
