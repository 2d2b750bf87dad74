import type { FastifyTypeProvider } from 'fastify';
import type { Static, TSchema } from 'typebox';

/**
 * Types a route's request (params, query, headers, body) from its TypeBox schemas. Replies stay
 * untyped: their schemas serialise them at run time (a field a schema lacks never leaves the
 * API), and test/openapi.test.ts checks real responses of every route against those schemas.
 */
export interface RequestTypeProvider extends FastifyTypeProvider {
  validator: this['schema'] extends TSchema ? Static<this['schema']> : unknown;
  serializer: unknown;
}
