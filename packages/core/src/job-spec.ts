import Type, { type Static } from 'typebox';

// One schema, two uses: the API validates POST /v1/jobs bodies with it, and the worker
// receives the same (defaults-filled) object, so both sides agree on every field.

export const STRATEGIES = ['feature_extraction'] as const;
export const OPTIMIZERS = ['sgd', 'adam'] as const;

export const HyperparametersSchema = Type.Object(
  {
    epochs: Type.Integer({ minimum: 1, maximum: 500, default: 10 }),
    batchSize: Type.Integer({ minimum: 1, maximum: 1024, default: 32 }),
    optimizer: Type.Union([Type.Literal('sgd'), Type.Literal('adam')], { default: 'adam' }),
    learningRate: Type.Number({ exclusiveMinimum: 0, maximum: 10, default: 0.001 }),
    momentum: Type.Number({ minimum: 0, maximum: 0.999, default: 0.9 }),
    validationSplit: Type.Number({ minimum: 0, maximum: 0.5, default: 0.2 }),
    seed: Type.Integer({ minimum: 0, maximum: 2 ** 31 - 1, default: 42 }),
  },
  { additionalProperties: false },
);

export const JobSpecSchema = Type.Object(
  {
    datasetId: Type.String({ format: 'uuid' }),
    baseModel: Type.String({ minLength: 1, maxLength: 100 }),
    strategy: Type.Optional(Type.Union([Type.Literal('feature_extraction')], { default: 'feature_extraction' })),
    hyperparameters: Type.Optional(HyperparametersSchema),
  },
  { additionalProperties: false },
);

export type Hyperparameters = Static<typeof HyperparametersSchema>;
export type JobSpecInput = Static<typeof JobSpecSchema>;
export type Strategy = (typeof STRATEGIES)[number];
export type Optimizer = (typeof OPTIMIZERS)[number];

/** What the worker runs: every default filled in. */
export interface JobSpec {
  datasetId: string;
  baseModel: string;
  strategy: Strategy;
  hyperparameters: Hyperparameters;
}

export const DEFAULT_HYPERPARAMETERS: Hyperparameters = {
  epochs: 10,
  batchSize: 32,
  optimizer: 'adam',
  learningRate: 0.001,
  momentum: 0.9,
  validationSplit: 0.2,
  seed: 42,
};

export function withDefaults(input: JobSpecInput): JobSpec {
  return {
    datasetId: input.datasetId,
    baseModel: input.baseModel,
    strategy: input.strategy ?? 'feature_extraction',
    hyperparameters: { ...DEFAULT_HYPERPARAMETERS, ...(input.hyperparameters ?? {}) },
  };
}
