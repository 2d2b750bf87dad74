import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Config } from '@finetune/core';
import { writeRawProblem } from './problem-details.ts';

// Slow clients. A request that sends part of its body and then stalls (slow-loris) would hold a
// connection, a handler and — for an upload — a temp file for as long as it likes. Three bounds:
//
//  - REQUEST_TIMEOUT_MS: the whole request (headers and body) must have arrived by then (Node's
//    `requestTimeout`). Catches a client that trickles a byte now and then.
//  - UPLOAD_IDLE_TIMEOUT_MS: a body that delivers no byte for this long, while the server is
//    reading it, is abandoned (below). Catches a stall within seconds instead of minutes.
//  - headers: Node's `headersTimeout`, at most a minute and never beyond the request timeout.
//
// Both answer 408 problem+json and close the connection; the handler then sees its body stream
// fail and cleans up after itself (a staged upload is removed). Deliberately NOT set: Fastify's
// `connectionTimeout` (socket inactivity), which would also cut a legitimate upload while the
// server is busy inspecting it and sending nothing.

/** The Fastify factory options for the bounds Node enforces. */
export function serverTimeoutOptions(config: Config) {
  const { requestTimeoutMs, keepAliveTimeoutMs } = config.http;
  return {
    requestTimeout: requestTimeoutMs,
    keepAliveTimeout: keepAliveTimeoutMs,
    http: {
      requestTimeout: requestTimeoutMs,
      headersTimeout: requestTimeoutMs > 0 ? Math.min(60_000, requestTimeoutMs) : 60_000,
      // How often Node looks for expired requests (its default, 30 s, would let a 10 s
      // timeout run for 40 s).
      connectionsCheckingInterval: requestTimeoutMs > 0 ? Math.min(30_000, Math.max(100, Math.floor(requestTimeoutMs / 4))) : 30_000,
    },
  };
}

export function registerBodyIdleTimeout(app: FastifyInstance, idleMs: number): void {
  if (idleMs <= 0) return;
  app.addHook('onRequest', (request, _reply, done) => {
    watchBody(request, idleMs);
    done();
  });
}

/**
 * Watches the socket's byte counter rather than the request stream: listening for 'data' on the
 * request would start it flowing before the body's consumer (a parser, busboy) is attached.
 * Time only counts while the server is actually reading the body — not while it holds back
 * (backpressure from a slow disk) or has not started reading yet.
 */
function watchBody(request: FastifyRequest, idleMs: number): void {
  const raw = request.raw;
  const socket = raw.socket;
  // No body to wait for (HTTP/1.1 sends a body only with one of these headers): a poll must not
  // pay for a timer and two listeners, 5 % of a `GET /v1/jobs/:id` (CPU profile under load).
  if (raw.headers['content-length'] === undefined && raw.headers['transfer-encoding'] === undefined) return;
  if (raw.complete || !socket) return;
  let bytes = socket.bytesRead;
  let since = Date.now();
  const timer = setInterval(check, Math.max(25, Math.min(1000, Math.floor(idleMs / 4))));
  timer.unref();
  const stop = () => clearInterval(timer);
  raw.once('end', stop);
  raw.once('close', stop);

  function check() {
    if (raw.complete || socket.destroyed) return stop();
    const now = Date.now();
    if (socket.bytesRead !== bytes || raw.readableFlowing !== true) {
      bytes = socket.bytesRead;
      since = now;
      return;
    }
    if (now - since < idleMs) return;
    stop();
    request.log.info({ idleMs }, 'request body stalled; closing the connection');
    writeRawProblem(socket, 408, 'body_idle_timeout', `no byte of the request body arrived for ${idleMs} ms`);
  }
}
