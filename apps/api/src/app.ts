import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import multipart from '@fastify/multipart';
import type { AppDeps } from './deps.ts';
import { registerProblemDetails } from './plugins/problem-details.ts';
import { healthRoutes } from './routes/health.ts';
import { baseModelRoutes } from './routes/v1/base-models.ts';
import { datasetRoutes } from './routes/v1/datasets.ts';
import { jobRoutes } from './routes/v1/jobs.ts';
import { modelRoutes } from './routes/v1/models.ts';
import { ModelCache } from './services/model-cache.ts';

export { createAppDeps, closeAppDeps, type AppDeps } from './deps.ts';

/** Builds the API without listening: tests inject requests, server.ts listens. */
export async function buildApp(deps: AppDeps, options: { logger?: boolean | object } = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: options.logger ?? { level: deps.config.logLevel },
    requestIdHeader: 'x-request-id',
    genReqId: () => randomUUID(),
    bodyLimit: 8 * 1024 * 1024, // JSON bodies: job specs and base64 predict instances
    ajv: {
      // Reject unknown fields instead of silently dropping them: a typo in a hyperparameter
      // name must not train with the default.
      customOptions: { removeAdditional: false, coerceTypes: 'array', useDefaults: true, allErrors: false },
    },
  });
  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });

  registerProblemDetails(app);
  await app.register(multipart, {
    limits: { fileSize: deps.config.limits.uploadBytes, files: 2, fields: 10, parts: 20, fieldSize: 64 * 1024 },
  });

  const cache = new ModelCache(deps.config.modelCacheSize, deps.config.mlBackend);
  app.addHook('onClose', async () => cache.clear());

  await app.register(healthRoutes, { deps });
  await app.register(baseModelRoutes);
  await app.register(datasetRoutes, { deps });
  await app.register(jobRoutes, { deps });
  await app.register(modelRoutes, { deps, cache });
  return app;
}
