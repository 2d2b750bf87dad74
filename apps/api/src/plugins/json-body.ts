import type { FastifyInstance } from 'fastify';
import { DomainError } from '@finetune/core';

// Fastify's own JSON parser (prototype poisoning refused), plus one rule JSON cannot express:
// strings must be storable. Job specs are stored as Postgres jsonb, which refuses the NUL
// character and lone UTF-16 surrogates (`"\u0000"`, `"\ud800"` are valid JSON) with an error —
// a 500 for what is bad input. They are refused here, for every JSON route, as 400.

// eslint-disable-next-line no-control-regex
const UNSTORABLE = /\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** True when a string contains NUL or a lone surrogate (text no database column can hold). */
export function isUnstorable(text: string): boolean {
  return UNSTORABLE.test(text);
}

/** Path of the first unstorable string (as a value or a key), or null. Iterative: a 1 MB body
 * can nest half a million levels deep. */
function findUnstorable(root: unknown): string | null {
  const stack: [unknown, string][] = [[root, '']];
  while (stack.length > 0) {
    const [value, path] = stack.pop()!;
    if (typeof value === 'string') {
      if (isUnstorable(value)) return path || '/';
    } else if (Array.isArray(value)) {
      value.forEach((item, i) => stack.push([item, `${path}/${i}`]));
    } else if (value !== null && typeof value === 'object') {
      for (const [key, item] of Object.entries(value)) {
        if (isUnstorable(key)) return `${path}/${JSON.stringify(key).slice(1, -1)}`;
        stack.push([item, `${path}/${key}`]);
      }
    }
  }
  return null;
}

export function registerJsonBody(app: FastifyInstance): void {
  const parse = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    parse(request, body as string, (error, value) => {
      if (error) return done(error, undefined);
      const where = findUnstorable(value);
      if (where !== null) {
        return done(new DomainError('invalid_character', `body ${where} contains a NUL character or an unpaired surrogate`, 400), undefined);
      }
      done(null, value);
    });
  });
}
