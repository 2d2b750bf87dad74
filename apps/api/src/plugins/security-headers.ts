import type { FastifyInstance } from 'fastify';
import helmet from 'helmet';

export interface SecurityHeaderOptions {
  /** True when CORS origins are configured: browsers there may load models straight from here. */
  crossOrigin: boolean;
}

/**
 * Helmet's security headers on every response. The middleware is built once: @fastify/helmet
 * rebuilt it — parsing every option again — on each request, 4–5 % of the CPU a
 * `GET /v1/jobs/:id` costs (measured with a CPU profile under load).
 */
export function registerSecurityHeaders(app: FastifyInstance, { crossOrigin }: SecurityHeaderOptions): void {
  const setHeaders = helmet({
    // Responses are JSON, problem+json and zips: nothing a browser should render or run. The
    // dashboard and the docs pages set CSPs of their own.
    contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
    // With CORS configured, browsers on those origins load models straight from here
    // (tf.loadLayersModel on /download's files).
    crossOriginResourcePolicy: { policy: crossOrigin ? 'cross-origin' : 'same-origin' },
  });
  app.addHook('onRequest', (request, reply, done) => setHeaders(request.raw, reply.raw, (error) => done(error as Error | undefined)));
}
