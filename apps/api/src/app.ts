import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import type { IncomingMessage } from 'node:http';
import Fastify, { type FastifyInstance, type RouteOptions } from 'fastify';
import { InferencePool } from '@finetune/ml';
import cors from '@fastify/cors';
import type { AppDeps } from './deps.ts';
import { authenticate, decorateCaller } from './plugins/auth.ts';
import { registerJsonBody } from './plugins/json-body.ts';
import { rateLimit } from './plugins/rate-limit.ts';
import { TokenBuckets } from './rate-limit/token-buckets.ts';
import { createApiMetrics, registerMetrics } from './metrics/index.ts';
import { registerMultipart } from './plugins/multipart.ts';
import { registerOpenApi } from './plugins/openapi.ts';
import { dashboard } from './plugins/dashboard.ts';
import { clientErrorHandler, frameworkErrors, registerProblemDetails } from './plugins/problem-details.ts';
import { registerSecurityHeaders } from './plugins/security-headers.ts';
import { registerBodyIdleTimeout, serverTimeoutOptions } from './plugins/timeouts.ts';
import { validatorCompiler } from './plugins/validation.ts';
import { healthRoutes } from './routes/health.ts';
import { baseModelRoutes } from './routes/v1/base-models.ts';
import { datasetRoutes } from './routes/v1/datasets.ts';
import { datasetSampleRoutes } from './routes/v1/dataset-samples.ts';
import { datasetUploadRoutes } from './routes/v1/dataset-uploads.ts';
import { jobRoutes } from './routes/v1/jobs.ts';
import { jobEventRoutes } from './routes/v1/job-events.ts';
import { identityRoutes } from './routes/v1/identity.ts';
import { modelRoutes } from './routes/v1/models.ts';
import { batchPredictionRoutes } from './routes/v1/batch-predictions.ts';
import { sweepRoutes } from './routes/v1/sweeps.ts';
import { ModelCache } from './services/model-cache.ts';
import { PredictBatcher } from './services/predict-batcher.ts';

export { createAppDeps, closeAppDeps, type AppDeps } from './deps.ts';

/** The API's version, as the OpenAPI document states it. */
const API_VERSION = (createRequire(import.meta.url)('../package.json') as { version: string }).version;

/** A caller's X-Request-Id is kept (it ties our logs to theirs) only if it is a plain token: it
 * is echoed in a header and written to every log line, so nothing that could forge either. */
const CLIENT_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

function requestId(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  return typeof given === 'string' && CLIENT_REQUEST_ID.test(given) ? given : randomUUID();
}

/** Thrown when the API cannot authenticate anybody: it must not start. */
export class AuthConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AuthConfigError';
  }
}

/**
 * Refuses to start an API nobody could use or that could not check keys: no API_KEY_SECRET, or
 * neither ADMIN_API_KEY nor a usable key in the database. (`npm start` provides both.)
 */
export async function checkAuthConfig(deps: AppDeps): Promise<string> {
  const { apiKeySecret, adminApiKey } = deps.config.auth;
  if (!apiKeySecret) {
    throw new AuthConfigError(
      'API_KEY_SECRET is not set: API keys are stored as HMAC-SHA-256 under this secret. Set it to ' +
        '32+ random characters (e.g. `openssl rand -hex 32`), or run `npm start`, which creates one in <DATA_DIR>/api-key-secret',
    );
  }
  if (!adminApiKey && !(await deps.apiKeys.anyActive())) {
    throw new AuthConfigError(
      'no API key exists and ADMIN_API_KEY is not set: nobody could call the API. Set ADMIN_API_KEY ' +
        '(24+ characters, e.g. `openssl rand -hex 24`), or run `npm start`, which creates one in <DATA_DIR>/admin-api-key',
    );
  }
  return apiKeySecret;
}

/** Log paths that must never be written: credentials. */
const REDACT = ['req.headers.authorization', 'req.headers.cookie', 'headers.authorization'];

/** Builds the API without listening: tests inject requests, server.ts listens. */
export interface BuildOptions {
  logger?: boolean | object;
  /** Sees every route as it is registered (tests check each one is documented). */
  onRoute?: (route: RouteOptions) => void;
  /** Sees /predict's inference pool when PREDICT_WORKERS is above 0 (tests watch and crash its workers). */
  onInferencePool?: (pool: InferencePool) => void;
}

export async function buildApp(deps: AppDeps, options: BuildOptions = {}): Promise<FastifyInstance> {
  const { config } = deps;
  const secret = await checkAuthConfig(deps);
  const logger =
    options.logger === false
      ? false
      : { level: config.logLevel, redact: { paths: REDACT, censor: '[redacted]' }, ...(typeof options.logger === 'object' ? options.logger : {}) };
  const app = Fastify({
    logger,
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
  if (options.onRoute) app.addHook('onRoute', options.onRoute);
  app.setValidatorCompiler(validatorCompiler());
  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });

  // Everything under /v1 needs an API key; /healthz and /readyz stay open.
  await deps.credentials.start();
  const onRequest = authenticate({ secret, adminApiKey: config.auth.adminApiKey, credentials: (prefix) => deps.credentials.credentials(prefix), tenants: deps.tenants });
  registerProblemDetails(app, { authenticateV1: onRequest });
  registerBodyIdleTimeout(app, config.http.uploadIdleTimeoutMs);
  registerJsonBody(app);
  registerSecurityHeaders(app, { crossOrigin: config.http.corsOrigins.length > 0 });
  // CORS is off unless origins are configured: no Access-Control-* headers at all.
  if (config.http.corsOrigins.length > 0) {
    await app.register(cors, {
      origin: config.http.corsOrigins.includes('*') ? '*' : config.http.corsOrigins,
      methods: ['GET', 'HEAD', 'POST', 'DELETE'],
      allowedHeaders: ['authorization', 'content-type', 'idempotency-key', 'x-request-id'],
      exposedHeaders: ['location', 'x-request-id', 'retry-after', 'ratelimit-limit', 'ratelimit-remaining', 'ratelimit-reset', 'ratelimit-policy'],
      maxAge: 600,
    });
  }
  await registerMultipart(app, config);
  // Before any route: the document is collected as routes are added.
  if (config.docsEnabled) await registerOpenApi(app, { version: API_VERSION });

  const metrics = config.metrics.enabled ? createApiMetrics(deps.queue) : undefined;
  const cache = new ModelCache(config.modelCacheSize, config.mlBackend, metrics);
  app.addHook('onClose', async () => cache.clear());
  // ONNX Runtime runs a batch synchronously on the thread that calls it: on worker threads, the
  // event loop keeps serving other requests meanwhile (and the next requests' decoding overlaps).
  const pool =
    config.predictWorkers > 0
      ? new InferencePool({
          workers: config.predictWorkers,
          sessionsPerWorker: config.modelCacheSize,
          onWorkerExit: ({ worker, reason, failedRuns }) => app.log.error({ worker, reason, failedRuns }, 'inference worker stopped; replacing it'),
        })
      : undefined;
  if (pool) {
    options.onInferencePool?.(pool);
    app.addHook('onClose', async () => pool.close());
  }
  const batcher = new PredictBatcher(config.predictBatch, metrics, pool);
  if (metrics) registerMetrics(app, { metrics, token: config.metrics.token });

  decorateCaller(app);
  await app.register(healthRoutes, { deps });
  await app.register(dashboard);
  await app.register(async (v1) => {
    v1.addHook('onRequest', onRequest);
    v1.addHook('onRequest', rateLimit(new TokenBuckets(deps.queue.connection, config.queuePrefix), config.rateLimits));
    await v1.register(baseModelRoutes, { deps });
    await v1.register(identityRoutes, { deps });
    await v1.register(datasetRoutes, { deps });
    await v1.register(datasetSampleRoutes, { deps });
    await v1.register(datasetUploadRoutes, { deps });
    await v1.register(jobRoutes, { deps });
    await v1.register(jobEventRoutes, { deps });
    await v1.register(modelRoutes, { deps, cache, batcher });
    await v1.register(batchPredictionRoutes, { deps });
    await v1.register(sweepRoutes, { deps });
  });
  return app;
}
