import type { FastifyInstance } from 'fastify';
import Type from 'typebox';
import { BASE_MODELS } from '@finetune/core';
import { bearer } from '../../plugins/openapi.ts';
import { BaseModel, errorResponses } from '../../response-schemas.ts';

const listRoute = {
  schema: {
    summary: 'The model zoo',
    description: 'Pretrained bases a job can start from, with input size, embedding width, source and licence.',
    tags: ['models'],
    security: bearer,
    response: { 200: Type.Object({ items: Type.Array(BaseModel) }), ...errorResponses },
  },
};

export async function baseModelRoutes(app: FastifyInstance) {
  app.get('/v1/base-models', listRoute, async () => ({ items: BASE_MODELS }));
}
