import type { FastifyInstance } from 'fastify';
import Type from 'typebox';
import { DomainError } from '@finetune/core';
import type { AppDeps } from '../../deps.ts';
import { callerOf } from '../../plugins/auth.ts';
import { bearer } from '../../plugins/openapi.ts';
import { Binary, errorResponses } from '../../response-schemas.ts';
import { IdParams } from '../../schemas.ts';
import { datasetSample, SampleArchives, THUMBNAIL_SIZE, THUMBNAIL_TYPE } from '../../services/dataset-samples.service.ts';
import type { RequestTypeProvider } from '../../type-provider.ts';

const sampleRoute = {
  schema: {
    summary: 'A thumbnail of one dataset image',
    description:
      `One image of the dataset, re-encoded as WebP at most ${THUMBNAIL_SIZE} px on its longer side: the \`index\`-th image ` +
      'of `class` (train images first, then val, in archive order), or the image at an archive `path` (as a model\'s ' +
      '`evaluation.mostConfidentErrors[].id` names it). 404 sample_not_found past the last image.',
    tags: ['datasets'],
    security: bearer,
    params: IdParams,
    querystring: Type.Object(
      {
        class: Type.Optional(Type.String({ minLength: 1, maxLength: 1024, description: 'a class of the dataset' })),
        index: Type.Integer({ minimum: 0, maximum: 1_000_000, default: 0, description: 'which image of the class, from 0' }),
        path: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: 'an image\'s path in the archive (instead of class and index)' })),
      },
      { additionalProperties: false },
    ),
    response: { 200: Binary(`${THUMBNAIL_TYPE}: the thumbnail`), ...errorResponses },
  },
};

export async function datasetSampleRoutes(fastify: FastifyInstance, { deps }: { deps: AppDeps }) {
  const app = fastify.withTypeProvider<RequestTypeProvider>();
  const archives = new SampleArchives(deps);
  app.addHook('onClose', async () => archives.close());

  app.get('/v1/datasets/:id/samples', sampleRoute, async (request, reply) => {
    const { class: label, index, path } = request.query;
    if ((label === undefined) === (path === undefined)) {
      throw new DomainError('invalid_sample_selector', 'give either class (with an optional index) or path', 400);
    }
    const selector = path !== undefined ? { path } : { class: label!, index };
    const image = await datasetSample(deps, archives, callerOf(request).tenantId, request.params.id, selector);
    // A dataset never changes, so the browser may keep its thumbnails a while — privately, and
    // per key (Vary): they belong to the caller's tenant.
    return reply.type(THUMBNAIL_TYPE).header('cache-control', 'private, max-age=3600').header('vary', 'authorization').send(image);
  });
}
