import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { sendProblem } from '../plugins/problem-details.ts';
import { Problem } from '../response-schemas.ts';
import { UNMATCHED_ROUTE, type ApiMetrics } from './metrics.ts';

export interface MetricsOptions {
  metrics: ApiMetrics;
  /** When set, GET /metrics needs `Authorization: Bearer <token>` (METRICS_TOKEN). */
  token: string | undefined;
}

const BEARER = /^Bearer (\S+)$/i;

/** Compares digests, so neither the token's content nor its length shows in the timing. */
function bearerMatches(header: string | undefined, token: string): boolean {
  const given = header === undefined ? undefined : BEARER.exec(header)?.[1];
  const digest = (value: string) => createHash('sha256').update(value).digest();
  return timingSafeEqual(digest(given ?? ''), digest(token)) && given !== undefined;
}

/**
 * Times every response (labelled with the route pattern, never the raw URL) and serves
 * GET /metrics outside /v1: no API key, only METRICS_TOKEN when the operator sets one.
 * Call on the root instance before the routes are registered.
 */
export function registerMetrics(app: FastifyInstance, { metrics, token }: MetricsOptions): void {
  app.addHook('onResponse', async (request, reply) => {
    metrics.httpDuration.observe(
      { method: request.method, route: request.routeOptions.url ?? UNMATCHED_ROUTE, status_code: String(reply.statusCode) },
      reply.elapsedTime / 1000,
    );
  });

  const authorize = async (request: FastifyRequest, reply: FastifyReply) => {
    if (token === undefined || bearerMatches(request.headers.authorization, token)) return;
    reply.header('www-authenticate', 'Bearer realm="metrics"');
    return sendProblem(reply, { status: 401, code: 'unauthorized', detail: 'GET /metrics needs Authorization: Bearer <METRICS_TOKEN>' });
  };

  app.get(
    '/metrics',
    {
      onRequest: authorize,
      schema: {
        summary: 'Prometheus metrics',
        description: 'No API key; `Authorization: Bearer <METRICS_TOKEN>` when the operator sets one.',
        tags: ['operations'],
        security: [],
        response: { 200: { description: 'Prometheus text exposition format', type: 'string' }, '4xx': Problem },
      },
    },
    async (_request, reply) => {
      const body = await metrics.registry.metrics();
      return reply.type(metrics.registry.contentType).send(body);
    },
  );
}
