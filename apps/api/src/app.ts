import { randomUUID } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import Fastify, { type FastifyInstance } from 'fastify';
import cors from '@fastify/cors';
import helmet from '@fastify/helmet';
import type { AppDeps } from './deps.ts';
import { registerJsonBody } from './plugins/json-body.ts';
import { registerMultipart } from './plugins/multipart.ts';
import { clientErrorHandler, frameworkErrors, registerProblemDetails } from './plugins/problem-details.ts';
import { registerBodyIdleTimeout, serverTimeoutOptions } from './plugins/timeouts.ts';
import { validatorCompiler } from './plugins/validation.ts';
import { healthRoutes } from './routes/health.ts';
import { baseModelRoutes } from './routes/v1/base-models.ts';
import { datasetRoutes } from './routes/v1/datasets.ts';
import { jobRoutes } from './routes/v1/jobs.ts';
import { modelRoutes } from './routes/v1/models.ts';
import { ModelCache } from './services/model-cache.ts';

export { createAppDeps, closeAppDeps, type AppDeps } from './deps.ts';

/** A caller's X-Request-Id is kept (it ties our logs to theirs) only if it is a plain token: it
 * is echoed in a header and written to every log line, so nothing that could forge either. */
const CLIENT_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

function requestId(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && CLIENT_REQUEST_ID.test(given) ? given : randomUUID();
}

/** Builds the API without listening: tests inject requests, server.ts listens. */
export async function buildApp(deps: AppDeps, options: { logger?: boolean | object } = {}): Promise<FastifyInstance> {
  const { config } = deps;
  const app = Fastify({
    logger: options.logger ?? { level: config.logLevel },
    // Ids come from requestId() only: Fastify would trust the header verbatim.
    requestIdHeader: false,
    genReqId: requestId,
    // JSON routes (job specs) take small bodies; /predict raises its own limit for base64
    // images and multipart uploads have their own limits (plugins/multipart.ts).
    bodyLimit: config.limits.jsonBodyBytes,
    trustProxy: config.http.trustProxy,
    ...serverTimeoutOptions(config),
    clientErrorHandler,
    frameworkErrors,
  });
  app.setValidatorCompiler(validatorCompiler());
  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });

  registerProblemDetails(app);
  registerBodyIdleTimeout(app, config.http.uploadIdleTimeoutMs);
  registerJsonBody(app);
  await app.register(helmet, {
    // Responses are JSON, problem+json and zips: nothing a browser should render or run.
    contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
    // With CORS configured, browsers on those origins load models straight from here
    // (tf.loadLayersModel on /download's files).
    crossOriginResourcePolicy: { policy: config.http.corsOrigins.length > 0 ? 'cross-origin' : 'same-origin' },
  });
  // CORS is off unless origins are configured: no Access-Control-* headers at all.
  if (config.http.corsOrigins.length > 0) {
    await app.register(cors, {
      origin: config.http.corsOrigins.includes('*') ? '*' : config.http.corsOrigins,
      methods: ['GET', 'HEAD', 'POST', 'DELETE'],
      allowedHeaders: ['content-type', 'idempotency-key', 'x-request-id'],
      exposedHeaders: ['location', 'x-request-id'],
      maxAge: 600,
    });
  }
  await registerMultipart(app, config);

  const cache = new ModelCache(config.modelCacheSize, config.mlBackend);
  app.addHook('onClose', async () => cache.clear());

  await app.register(healthRoutes, { deps });
  await app.register(baseModelRoutes);
  await app.register(datasetRoutes, { deps });
  await app.register(jobRoutes, { deps });
  await app.register(modelRoutes, { deps, cache });
  return app;
}
