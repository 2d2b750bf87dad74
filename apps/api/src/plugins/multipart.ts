import type { FastifyInstance, FastifyRequest } from 'fastify';
import multipart, { type Multipart } from '@fastify/multipart';
import type { Config } from '@finetune/core';

// Multipart bodies are parsed by busboy (through @fastify/multipart). A body without a boundary,
// with the wrong one, cut mid-part or missing its closing delimiter makes busboy fail with a
// plain Error ("Multipart: Boundary not found", "Unexpected end of multipart data", "Part
// terminated early …") that carries no status, so it used to end as a 500. Those errors are
// recognised here, where they surface — the parts iterator and the file streams it hands out —
// and the error mapper answers them 400 `malformed_multipart`.

export async function registerMultipart(app: FastifyInstance, config: Config): Promise<void> {
  await app.register(multipart, {
    limits: {
      fileSize: config.limits.uploadBytes,
      files: 2,
      fields: 10,
      parts: 20,
      fieldSize: 64 * 1024,
      // Header lines per part: a form part needs two or three.
      headerPairs: 20,
    },
  });
}

const malformed = new WeakSet<Error>();

/** True for an error the multipart parser raised because of the body it was sent. */
export function isMalformedMultipart(error: unknown): boolean {
  return error instanceof Error && malformed.has(error);
}

/**
 * Busboy's own errors are bare `Error`s. Everything else that can travel the same streams has a
 * `code` (system errors such as ENOSPC from the disk the part is written to, Node's stream
 * errors) or a `statusCode` (@fastify/multipart's limit and premature-close errors, which the
 * mapper already answers with their own status), and is left alone.
 */
function markIfParserError(error: unknown): void {
  if (error instanceof Error && error.constructor === Error && !('code' in error) && !('statusCode' in error)) {
    malformed.add(error);
  }
}

/** `request.parts()` whose parser errors the error mapper recognises. */
export async function* multipartParts(
  request: FastifyRequest,
  options?: Parameters<FastifyRequest['parts']>[0],
): AsyncGenerator<Multipart> {
  const iterator = request.parts(options);
  try {
    for (;;) {
      let next: IteratorResult<Multipart>;
      try {
        next = await iterator.next();
      } catch (error) {
        markIfParserError(error);
        throw error;
      }
      if (next.done) return;
      // A body cut inside this part fails its stream, where the consumer (a pipeline to disk,
      // toBuffer) sees the error; a listener added now runs before theirs.
      // When the whole body was buffered before parsing began, busboy may already have failed the
      // stream before it reached us: mark that error too.
      if (next.value.type === 'file') {
        next.value.file.prependListener('error', markIfParserError);
        if (next.value.file.errored) markIfParserError(next.value.file.errored);
      }
      yield next.value;
    }
  } finally {
    await iterator.return?.(undefined);
  }
}
