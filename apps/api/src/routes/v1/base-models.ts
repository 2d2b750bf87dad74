import type { FastifyInstance } from 'fastify';
import { BASE_MODELS } from '@finetune/core';

export async function baseModelRoutes(app: FastifyInstance) {
  app.get('/v1/base-models', async () => ({ items: BASE_MODELS }));
}
