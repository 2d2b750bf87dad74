import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, STATUS_CODES, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';

export interface MetricsServerOptions {
  host: string;
  port: number;
  /** Served on GET /metrics; null when METRICS_ENABLED is off (then only /healthz answers). */
  registry: Registry | null;
  /** When set, GET /metrics needs `Authorization: Bearer <token>` (METRICS_TOKEN). */
  token: string | undefined;
  /** Liveness: false once the worker has stopped taking jobs. */
  live: () => boolean;
  log: Logger;
}

export interface MetricsServer {
  /** Resolves with the bound port, or null when the listener could not start. */
  listening: Promise<number | null>;
  close(): Promise<void>;
}

const BEARER = /^Bearer (\S+)$/i;

/** Compares digests, so neither the token's content nor its length shows in the timing. */
function bearerMatches(header: string | undefined, token: string): boolean {
  const given = header === undefined ? undefined : BEARER.exec(header)?.[1];
  const digest = (value: string) => createHash('sha256').update(value).digest();
  return timingSafeEqual(digest(given ?? ''), digest(token)) && given !== undefined;
}

/** The API's problem+json shape, for the few answers that are not metrics. */
function problem(res: ServerResponse, status: number, code: string, detail: string, headers: Record<string, string> = {}) {
  const title = STATUS_CODES[status] ?? 'Error';
  res.writeHead(status, { 'content-type': 'application/problem+json', ...headers });
  res.end(JSON.stringify({ type: `urn:finetune:problem:${code}`, title, status, detail, code }));
}

/**
 * The worker's HTTP listener: GET /metrics for Prometheus and GET /healthz for liveness checks
 * (a container healthcheck). Training does not depend on it: a listener that cannot bind is
 * logged as an error and the worker goes on taking jobs (a port conflict must not stop training,
 * nor put a restarting launcher in a loop); the failing healthcheck and scrape make it visible.
 */
export function startMetricsServer(options: MetricsServerOptions): MetricsServer {
  const { registry, token, live, log } = options;
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return problem(res, 405, 'method_not_allowed', `${req.method} is not supported; use GET`, { allow: 'GET, HEAD' });
    }
    if (path === '/healthz') {
      const ok = live();
      res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ status: ok ? 'ok' : 'stopping' }));
    }
    if (path === '/metrics' && registry) {
      if (token !== undefined && !bearerMatches(req.headers.authorization, token)) {
        return problem(res, 401, 'unauthorized', 'GET /metrics needs Authorization: Bearer <METRICS_TOKEN>', {
          'www-authenticate': 'Bearer realm="metrics"',
        });
      }
      registry.metrics().then(
        (body) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(req.method === 'HEAD' ? undefined : body);
        },
        (err: unknown) => {
          log.error({ err }, 'collecting metrics failed');
          problem(res, 500, 'internal_error', 'An internal error occurred; it has been logged.');
        },
      );
      return;
    }
    return problem(res, 404, 'route_not_found', `No route ${req.method} ${path}`);
  });
  const listening = new Promise<number | null>((resolve) => {
    server.on('error', (err) => {
      if (server.listening) return log.error({ err }, 'metrics listener error');
      log.error({ err, host: options.host, port: options.port }, 'metrics listener could not start: no /metrics or /healthz from this worker (set WORKER_METRICS_PORT, or 0 to disable)');
      resolve(null);
    });
    server.listen(options.port, options.host, () => {
      const { port } = server.address() as AddressInfo;
      log.info({ host: options.host, port }, 'metrics listening (GET /metrics, GET /healthz)');
      resolve(port);
    });
  });

  return {
    listening,
    async close() {
      if (!server.listening) return;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}
