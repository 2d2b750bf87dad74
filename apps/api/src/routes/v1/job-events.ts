import type { OutgoingHttpHeaders } from 'node:http';
import type { FastifyInstance } from 'fastify';
import Type from 'typebox';
import type { AppDeps } from '../../deps.ts';
import { callerOf } from '../../plugins/auth.ts';
import { bearer } from '../../plugins/openapi.ts';
import { errorResponses } from '../../response-schemas.ts';
import { IdParams } from '../../schemas.ts';
import { decodeCursor, jobEvents, type JobEvent } from '../../services/job-events.service.ts';
import { getJob } from '../../services/jobs.service.ts';
import type { RequestTypeProvider } from '../../type-provider.ts';

/** Comment lines at this interval keep proxies and load balancers from closing an idle stream. */
const HEARTBEAT_MS = 15_000;
/** Reads of the job while it runs; each is one Postgres query (and one Redis read while training). */
const POLL_MS = 1_000;

const eventsRoute = {
  schema: {
    summary: "A job's live events (Server-Sent Events)",
    description:
      '`text/event-stream`: `status` `{status, job}` on every state change (one at once with the current state), `progress` ' +
      '`{epoch, epochs, batch, batches, loss, accuracy, imagesPerSecond, etaSeconds}` during an epoch, `epoch` with each ' +
      'epoch\'s metrics row, and `done` with the finished job, after which the stream closes. Every event has an `id`: ' +
      'reconnect with `Last-Event-ID` to get what was missed. `: ping` comments every 15 s. Read it with fetch and the ' +
      'Authorization header (browsers\' EventSource cannot send one).',
    tags: ['jobs'],
    security: bearer,
    params: IdParams,
    headers: Type.Object({ 'last-event-id': Type.Optional(Type.String({ maxLength: 512 })) }),
    response: { 200: { description: 'the event stream', content: { 'text/event-stream': { schema: Type.String() } } }, ...errorResponses },
  },
};

function frame(id: string, { event, data }: JobEvent): string {
  return `id: ${id}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

export async function jobEventRoutes(fastify: FastifyInstance, { deps }: { deps: AppDeps }) {
  const app = fastify.withTypeProvider<RequestTypeProvider>();

  app.get('/v1/jobs/:id/events', eventsRoute, async (request, reply) => {
    const { tenantId } = callerOf(request);
    // Another tenant's or a missing job is a plain 404 problem, before any stream starts.
    const job = await getJob(deps, tenantId, request.params.id);
    const from = decodeCursor(request.headers['last-event-id']);

    // From here the response is ours to write (onSend hooks do not run): headers set so far
    // (security, rate limit) go out with it, and the request id the onSend hook would add.
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      ...(reply.getHeaders() as OutgoingHttpHeaders),
      'x-request-id': request.id,
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      // nginx would otherwise buffer the stream.
      'x-accel-buffering': 'no',
    });
    res.write('retry: 2000\n\n');
    const closed = new AbortController();
    res.on('close', () => closed.abort());
    const heartbeat = setInterval(() => res.write(': ping\n\n'), HEARTBEAT_MS);
    try {
      for await (const { id, event } of jobEvents(deps, tenantId, job.id, from, { pollMs: POLL_MS, signal: closed.signal })) {
        res.write(frame(id, event));
      }
    } catch (error) {
      // Headers are gone: the stream just ends; the client reconnects with Last-Event-ID.
      if (!closed.signal.aborted) request.log.warn({ err: error }, 'job event stream failed');
    } finally {
      clearInterval(heartbeat);
      res.end();
    }
  });
}
