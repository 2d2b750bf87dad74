import { Ajv, type Options } from 'ajv';
import ajvFormats from 'ajv-formats';
import type { FastifySchemaCompiler } from 'fastify';

// Bodies are validated as sent: `"epochs": "3"` or `"batchSize": true` is a client bug to report,
// not a value to guess at (Fastify's default ajv has coerceTypes on, which would train with 3 and
// 1). Querystrings, path params and headers are strings on the wire, so there — and only there —
// the declared type is parsed; 'array' also makes a repeated `?limit=1&limit=2` a 400 instead of
// silently picking one.

const common: Options = {
  // Unknown fields are rejected, not dropped: a typo in a hyperparameter name must not train
  // with the default.
  removeAdditional: false,
  useDefaults: true,
  // allErrors would let one request make ajv walk every error of a huge body.
  allErrors: false,
  addUsedSchema: false,
};

// ajv-formats is CommonJS whose default export is the plugin itself; under NodeNext the default
// import is module.exports, typed as the module record.
const addFormats = ((ajvFormats as unknown as { default?: unknown }).default ?? ajvFormats) as (ajv: Ajv) => Ajv;

function ajv(options: Options): Ajv {
  const instance = new Ajv({ ...common, ...options });
  addFormats(instance);
  return instance;
}

/** One compiler per HTTP part: strict types for bodies, parsed types for everything textual. */
export function validatorCompiler(): FastifySchemaCompiler<unknown> {
  const strict = ajv({ coerceTypes: false });
  const textual = ajv({ coerceTypes: 'array' });
  return ({ schema, httpPart }) => (httpPart === 'body' ? strict : textual).compile(schema as object);
}
