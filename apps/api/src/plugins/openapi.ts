import type { FastifyInstance, FastifySchema } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TSchema } from 'typebox';
import { Problem } from '../response-schemas.ts';

// The API describes itself: OpenAPI 3.1 generated from the route schemas (the same schemas that
// validate requests and serialise responses) at GET /openapi.json, and Swagger UI at /docs, its
// assets served from the installed package (no CDN). Register before the routes: the document is
// collected as routes are added.

export const OPENAPI_PATH = '/openapi.json';
export const DOCS_PREFIX = '/docs';

export async function registerOpenApi(app: FastifyInstance, options: { version: string }): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'finetune',
        version: options.version,
        description:
          'Transfer learning as a service: upload a labelled image dataset, start a fine-tuning job on a pretrained base, ' +
          'download the trained model or predict with it. Every /v1 call needs `Authorization: Bearer <API key>`. ' +
          'Errors are application/problem+json (RFC 9457) with a stable `code`.',
      },
      components: {
        securitySchemes: { apiKey: { type: 'http', scheme: 'bearer', description: 'an API key: ft_<prefix>_<secret>' } },
        schemas: { Problem: Problem as object },
      },
      tags: [
        { name: 'datasets', description: 'labelled image datasets (zip uploads)' },
        { name: 'jobs', description: 'fine-tuning jobs' },
        { name: 'models', description: 'trained models: download and predict' },
        { name: 'identity', description: 'tenants, API keys, quotas and usage' },
        { name: 'operations', description: 'health, readiness and metrics (no API key)' },
      ],
    },
  });
  await app.register(swaggerUi, {
    routePrefix: DOCS_PREFIX,
    uiConfig: { url: OPENAPI_PATH, persistAuthorization: false },
    // Swagger UI needs scripts and styles of its own: a CSP for its pages instead of the API's
    // `default-src 'none'`.
    staticCSP: true,
  });
  app.get(OPENAPI_PATH, { schema: { hide: true } }, async () => app.swagger());
}

/** The bearer requirement of /v1 routes, for their schemas. */
export const bearer = [{ apiKey: [] }];

/**
 * A multipart route cannot carry a body schema (its body is a stream at validation time), so its
 * request body is documented here instead: `config: { swaggerTransform: documentMultipart(…) }`.
 */
export function documentBody(content: Record<string, TSchema>) {
  return ({ schema, url }: { schema: FastifySchema; url: string }) => ({
    url,
    schema: {
      ...schema,
      body: { content: Object.fromEntries(Object.entries(content).map(([type, body]) => [type, { schema: body }])) },
    },
  });
}
