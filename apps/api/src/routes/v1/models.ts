import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Compile } from 'typebox/compile';
import { DomainError } from '@finetune/core';
import type { AppDeps } from '../../deps.ts';
import { callerOf } from '../../plugins/auth.ts';
import { multipartParts } from '../../plugins/multipart.ts';
import { IdParams, PredictJsonBody } from '../../schemas.ts';
import type { ModelCache } from '../../services/model-cache.ts';
import { downloadModel, getModel, predict, presentModel } from '../../services/models.service.ts';

// /predict takes multipart or JSON, so its body cannot carry a route schema (a multipart body
// is not an object at validation time); the JSON form is checked with the same TypeBox schema.
const predictJson = Compile(PredictJsonBody);
const BASE64 = /^[A-Za-z0-9+/\r\n]*={0,2}$/;

export async function modelRoutes(fastify: FastifyInstance, { deps, cache }: { deps: AppDeps; cache: ModelCache }) {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();

  app.get('/v1/models/:id', { schema: { params: IdParams } }, async (request) =>
    presentModel(await getModel(deps, callerOf(request).tenantId, request.params.id)),
  );

  app.get('/v1/models/:id/download', { schema: { params: IdParams } }, async (request, reply) => {
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

  app.post('/v1/models/:id/predict', { schema: { params: IdParams }, bodyLimit: predictBodyLimit }, async (request) => {
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
    return { modelId: request.params.id, predictions: await predict(deps, cache, tenantId, request.params.id, images) };
  });
}
