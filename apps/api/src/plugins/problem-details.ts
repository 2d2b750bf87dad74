import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { isDomainError } from '@finetune/core';
import { isMalformedMultipart } from './multipart.ts';

// Every error leaves the API as RFC 9457 problem+json with a stable `code`. Domain errors map to
// their own status; Fastify's own 4xx (bad JSON, wrong content type, body too large, schema
// validation) keep theirs; anything else is a logged 500 whose body says nothing internal.
// Errors raised before a request reaches Fastify's routing — a malformed request line, headers
// over Node's limit, a request that does not arrive in time — are written straight to the
// socket in the same shape (`writeRawProblem`).

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  instance?: string;
  errors?: unknown[];
}

// RFC 9110's names where Node's table still has the older ones (413, 422).
const TITLES: Record<number, string> = {
  413: 'Content Too Large',
  422: 'Unprocessable Content',
};

function title(status: number): string {
  return TITLES[status] ?? STATUS_CODES[status] ?? 'Error';
}

function problemBody(problem: Omit<Problem, 'type' | 'title'> & { title?: string }): Problem {
  return { type: `urn:finetune:problem:${problem.code}`, title: problem.title ?? title(problem.status), ...problem };
}

/** `extensions`: problem-specific members (RFC 9457 §3.2), e.g. a quota's usage and limit. */
export function sendProblem(
  reply: FastifyReply,
  problem: Omit<Problem, 'type' | 'title'> & { title?: string },
  extensions: Record<string, unknown> = {},
) {
  // A request answered before its body was read (a refused upload, a malformed part) would
  // otherwise keep the connection reading — possibly hundreds of MB nobody wants — before the
  // next request on it: close it instead.
  if (!reply.request.raw.complete) reply.header('connection', 'close');
  return reply
    .code(problem.status)
    .type('application/problem+json')
    .send({ ...extensions, ...problemBody(problem), instance: reply.request.url });
}

/**
 * Answers on a bare socket (no Fastify request exists, or the request is being abandoned) and
 * closes it — only when no response has started on it, like Node's own client-error handler.
 */
export function writeRawProblem(socket: Socket, status: number, code: string, detail: string): void {
  if (socket.destroyed) return;
  const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (!socket.writable || inFlight?.headersSent) {
    socket.destroy();
    return;
  }
  const body = JSON.stringify(problemBody({ status, code, detail }));
  const head = [
    `HTTP/1.1 ${status} ${title(status)}`,
    'Content-Type: application/problem+json',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'X-Content-Type-Options: nosniff',
    'Connection: close',
  ].join('\r\n');
  // Destroy once flushed (or after a second, should the peer not read even this much).
  const fallback = setTimeout(() => socket.destroy(), 1000);
  fallback.unref();
  socket.end(`${head}\r\n\r\n${body}`, () => {
    clearTimeout(fallback);
    socket.destroy();
  });
}

/** Fastify's `clientErrorHandler`: what Node's HTTP parser and timeouts refuse. */
export function clientErrorHandler(this: FastifyInstance, error: Error & { code?: string }, socket: Socket): void {
  // A reset connection has nobody left to answer.
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  this.log.debug({ err: error }, 'client error');
  if (error.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    writeRawProblem(socket, 408, 'request_timeout', 'the request (headers and body) did not arrive in time');
  } else if (error.code === 'HPE_HEADER_OVERFLOW') {
    writeRawProblem(socket, 431, 'headers_too_large', 'the request line and headers exceed the size limit');
  } else {
    writeRawProblem(socket, 400, 'malformed_request', `the HTTP request could not be parsed (${error.code ?? 'parse error'})`);
  }
}

/** Fastify's `frameworkErrors`: routing-time errors that would otherwise answer plain JSON. */
export function frameworkErrors(error: FastifyError, _request: FastifyRequest, reply: FastifyReply) {
  if (error.code === 'FST_ERR_MAX_PARAM_LENGTH') {
    return sendProblem(reply, { status: 414, code: 'uri_too_long', detail: 'a path segment exceeds the length limit' });
  }
  if (error.code === 'FST_ERR_BAD_URL') {
    return sendProblem(reply, { status: 400, code: 'bad_url', detail: 'the URL is not correctly percent-encoded' });
  }
  reply.log.error({ err: error }, 'framework error');
  return sendProblem(reply, { status: 500, code: 'internal_error', detail: 'An internal error occurred; it has been logged.' });
}

/** Fastify and plugin error codes → our stable codes. */
const FASTIFY_CODES: Record<string, string> = {
  FST_ERR_CTP_INVALID_JSON_BODY: 'malformed_json',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'malformed_json',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'bad_request',
  FST_ERR_CTP_BODY_TOO_LARGE: 'body_too_large',
  FST_REQ_FILE_TOO_LARGE: 'upload_too_large',
  FST_PARTS_LIMIT: 'too_many_parts',
  FST_FILES_LIMIT: 'too_many_files',
  FST_FIELDS_LIMIT: 'too_many_fields',
  FST_INVALID_MULTIPART_CONTENT_TYPE: 'multipart_required',
  FST_INVALID_JSON_FIELD_ERROR: 'malformed_multipart',
  FST_MP_PREMATURE_CLOSE: 'malformed_multipart',
  // A multipart field named __proto__, constructor, …
  FST_PROTO_VIOLATION: 'invalid_field_name',
};

/** Plugin errors whose status says the wrong thing about a malformed request. */
const STATUS_OVERRIDES: Record<string, number> = {
  // A multipart field declared application/json that does not parse: @fastify/multipart says 406.
  FST_INVALID_JSON_FIELD_ERROR: 400,
};

/** Methods a path may answer to; the ones it does are listed in a 405's `Allow`. OPTIONS is
 * probed apart: with CORS on, a catch-all OPTIONS route matches every path, real or not. */
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;

export interface ProblemDetailsOptions {
  /** Runs before the 404/405 answer for a path under /v1: unknown /v1 paths need a key too, so
   * an anonymous caller learns nothing about which routes exist. */
  authenticateV1?: (request: FastifyRequest, reply: FastifyReply) => Promise<unknown>;
}

export function registerProblemDetails(app: FastifyInstance, options: ProblemDetailsOptions = {}): void {
  app.setErrorHandler((error: FastifyError, request, reply) => {
    if (isDomainError(error)) {
      if (error.status >= 500) request.log.error({ err: error }, 'service error');
      return sendProblem(reply, { status: error.status, code: error.code, detail: error.message }, error.extensions);
    }
    if (error.validation) {
      return sendProblem(reply, {
        status: 400,
        code: 'validation_error',
        detail: `${error.validationContext ?? 'request'} ${error.validation.map((v) => `${v.instancePath || '/'} ${v.message}`).join('; ')}`,
        errors: error.validation.map((v) => ({ path: v.instancePath, message: v.message, params: v.params })),
      });
    }
    if (isMalformedMultipart(error)) {
      return sendProblem(reply, { status: 400, code: 'malformed_multipart', detail: `the multipart body is malformed: ${error.message}` });
    }
    // Malformed JSON surfaces as a SyntaxError with statusCode 400 from the JSON parser.
    const status = STATUS_OVERRIDES[error.code] ?? error.statusCode ?? 500;
    if (status >= 400 && status < 500) {
      const code = FASTIFY_CODES[error.code] ?? (error instanceof SyntaxError ? 'malformed_json' : 'bad_request');
      return sendProblem(reply, { status, code, detail: error.message });
    }
    request.log.error({ err: error }, 'unhandled error');
    return sendProblem(reply, { status: 500, code: 'internal_error', detail: 'An internal error occurred; it has been logged.' });
  });

  // A path that exists under other methods is a 405 with `Allow` (RFC 9110 §15.5.6), not a 404.
  const { authenticateV1 } = options;
  const preHandler = async (request: FastifyRequest, reply: FastifyReply) => {
    const path = request.url.split('?')[0] ?? '/';
    if (authenticateV1 && (path === '/v1' || path.startsWith('/v1/'))) return authenticateV1(request, reply);
  };
  app.setNotFoundHandler({ preHandler }, (request, reply) => {
    const path = request.url.split('?')[0] ?? '/';
    const allowed: string[] = METHODS.filter((method) => method !== request.method && app.findRoute({ method, url: path }) !== null);
    if (allowed.length > 0) {
      if (request.method !== 'OPTIONS' && app.findRoute({ method: 'OPTIONS', url: path }) !== null) allowed.push('OPTIONS');
      reply.header('allow', allowed.join(', '));
      return sendProblem(reply, {
        status: 405,
        code: 'method_not_allowed',
        detail: `${request.method} is not supported on ${path}; use ${allowed.join(', ')}`,
      });
    }
    return sendProblem(reply, { status: 404, code: 'route_not_found', detail: `No route ${request.method} ${path}` });
  });
}
