import type { FastifyInstance } from 'fastify';
import { pingDb } from '@finetune/db';
import Type from 'typebox';
import type { AppDeps } from '../deps.ts';
import { Readiness } from '../response-schemas.ts';

const tags = ['operations'];
const livenessRoute = {
  schema: { summary: 'Liveness', tags, security: [], response: { 200: Type.Object({ status: Type.Literal('ok') }) } },
};
const readinessRoute = {
  schema: {
    summary: 'Readiness',
    description: 'Checks Postgres, Redis and S3 each on its own: 503 names the one that is down.',
    tags,
    security: [],
    response: { 200: Readiness, 503: Readiness },
  },
};

export async function healthRoutes(app: FastifyInstance, { deps }: { deps: AppDeps }) {
  app.get('/healthz', livenessRoute, async () => ({ status: 'ok' }));

  // Readiness checks each dependency on its own so the answer says which one is down.
  app.get('/readyz', readinessRoute, async (_request, reply) => {
    const check = async (probe: () => Promise<unknown>) => {
      try {
        await probe();
        return { ok: true as const };
      } catch (error) {
        return { ok: false as const, error: (error as Error).message };
      }
    };
    const [database, redis, storage] = await Promise.all([
      check(() => pingDb(deps.db)),
      check(() => deps.queue.ping()),
      check(() => deps.store.ping()),
    ]);
    const ready = database.ok && redis.ok && storage.ok;
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'unavailable', checks: { database, redis, storage } });
  });
}
