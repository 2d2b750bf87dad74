import type { FastifyError, FastifyInstance, FastifyReply } from 'fastify';
import { isDomainError } from '@finetune/core';

// Every error leaves the API as RFC 9457 problem+json with a stable `code`. Domain errors map to
// their own status; Fastify's own 4xx (bad JSON, wrong content type, body too large, schema
// validation) keep theirs; anything else is a logged 500 whose body says nothing internal.

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  instance?: string;
  errors?: unknown[];
}

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  404: 'Not Found',
  405: 'Method Not Allowed',
  406: 'Not Acceptable',
  409: 'Conflict',
  413: 'Content Too Large',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Content',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

export function sendProblem(reply: FastifyReply, problem: Omit<Problem, 'type' | 'title'> & { title?: string }) {
  const body: Problem = {
    type: `urn:finetune:problem:${problem.code}`,
    title: problem.title ?? TITLES[problem.status] ?? 'Error',
    ...problem,
    instance: reply.request.url,
  };
  return reply.code(problem.status).type('application/problem+json').send(body);
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
  FST_PROTO_VIOLATION: 'bad_request',
};

export function registerProblemDetails(app: FastifyInstance): void {
  app.setErrorHandler((error: FastifyError, request, reply) => {
    if (isDomainError(error)) {
      if (error.status >= 500) request.log.error({ err: error }, 'service error');
      return sendProblem(reply, { status: error.status, code: error.code, detail: error.message });
    }
    if (error.validation) {
      return sendProblem(reply, {
        status: 400,
        code: 'validation_error',
        detail: `${error.validationContext ?? 'request'} ${error.validation.map((v) => `${v.instancePath || '/'} ${v.message}`).join('; ')}`,
        errors: error.validation.map((v) => ({ path: v.instancePath, message: v.message, params: v.params })),
      });
    }
    // Malformed JSON surfaces as a SyntaxError with statusCode 400 from the JSON parser.
    const status = error.statusCode ?? 500;
    if (status >= 400 && status < 500) {
      const code = FASTIFY_CODES[error.code] ?? (error instanceof SyntaxError ? 'malformed_json' : 'bad_request');
      return sendProblem(reply, { status, code, detail: error.message });
    }
    request.log.error({ err: error }, 'unhandled error');
    return sendProblem(reply, { status: 500, code: 'internal_error', detail: 'An internal error occurred; it has been logged.' });
  });

  app.setNotFoundHandler((request, reply) =>
    sendProblem(reply, { status: 404, code: 'route_not_found', detail: `No route ${request.method} ${request.url.split('?')[0]}` }),
  );
}
