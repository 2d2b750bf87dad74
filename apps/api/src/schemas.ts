import Type from 'typebox';
import { UUID_PATTERN } from '@finetune/core';

/** Canonical 8-4-4-4-12 hex ids only (not `format: 'uuid'`, which accepts `urn:uuid:…`). */
export const Uuid = () => Type.String({ pattern: UUID_PATTERN });

export const IdParams = Type.Object({ id: Uuid() });

// Querystrings are the one place types are coerced (see plugins/validation.ts): `?limit=5`
// arrives as the string "5".
export const ListQuery = Type.Object(
  {
    limit: Type.Integer({ minimum: 1, maximum: 100, default: 20 }),
    cursor: Type.Optional(Uuid()),
    order: Type.Union([Type.Literal('desc'), Type.Literal('asc')], { default: 'desc', description: 'by creation time: newest first (desc) or oldest first (asc)' }),
  },
  { additionalProperties: false },
);

/** `?createdAfter=` on the resource lists: an RFC 3339 date-time. */
export const CreatedAfter = Type.Optional(Type.String({ format: 'date-time', description: 'only what was created after this instant (RFC 3339)' }));

export const PredictJsonBody = Type.Object(
  {
    instances: Type.Array(Type.Object({ b64: Type.String({ minLength: 1 }) }, { additionalProperties: false }), {
      minItems: 1,
      maxItems: 32,
    }),
  },
  { additionalProperties: false },
);
