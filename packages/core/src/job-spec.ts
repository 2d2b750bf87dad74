import Type, { type Static } from 'typebox';
import { customBaseLabel } from './base-models.ts';

// One schema, two uses: the API validates POST /v1/jobs bodies with it, and the worker
// receives the same (defaults-filled) object, so both sides agree on every field.

export const STRATEGIES = [
  'feature_extraction',
  'fine_tune',
  'progressive_unfreezing',
  'full',
  'scratch',
  'prototype',
  'domain_adaptation',
] as const;
export const OPTIMIZERS = ['sgd', 'adam', 'adamw', 'rmsprop'] as const;
export const MONITORS = ['val_loss', 'val_accuracy', 'loss', 'accuracy'] as const;
export const ACTIVATIONS = ['relu', 'elu', 'selu', 'tanh', 'sigmoid', 'swish'] as const;

const literals = <T extends string>(values: readonly T[]) => values.map((v) => Type.Literal(v));

/** Which base layers train: the top N layers, or every layer from the named one upwards. */
export const UnfreezeSchema = Type.Union([
  Type.Object({ topLayers: Type.Integer({ minimum: 1, maximum: 10_000 }) }, { additionalProperties: false }),
  Type.Object({ fromLayer: Type.String({ minLength: 1, maxLength: 200 }) }, { additionalProperties: false }),
]);

export const LrScheduleSchema = Type.Union([
  Type.Object({ type: Type.Literal('constant') }, { additionalProperties: false }),
  Type.Object(
    {
      type: Type.Literal('step'),
      stepSize: Type.Integer({ minimum: 1, maximum: 10_000 }),
      gamma: Type.Number({ exclusiveMinimum: 0, maximum: 1 }),
    },
    { additionalProperties: false },
  ),
  Type.Object(
    { type: Type.Literal('cosine'), minLearningRate: Type.Optional(Type.Number({ minimum: 0, maximum: 10 })) },
    { additionalProperties: false },
  ),
  Type.Object(
    { type: Type.Literal('exponential'), gamma: Type.Number({ exclusiveMinimum: 0, maximum: 1 }) },
    { additionalProperties: false },
  ),
  // fastai's fit_one_cycle, per step: warm up from lr/div to lr over pctStart of the steps, then
  // anneal (cosine both ways) to lr/div/divFinal; SGD momentum cycles 0.95 → 0.85 → 0.95.
  Type.Object(
    {
      type: Type.Literal('one_cycle'),
      pctStart: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
      div: Type.Optional(Type.Number({ minimum: 1, maximum: 1e6 })),
      divFinal: Type.Optional(Type.Number({ minimum: 1, maximum: 1e9 })),
    },
    { additionalProperties: false },
  ),
]);

export const StageSchema = Type.Object(
  {
    unfreeze: UnfreezeSchema,
    epochs: Type.Integer({ minimum: 1, maximum: 500 }),
    learningRate: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 10 })),
  },
  { additionalProperties: false },
);

export const HyperparametersSchema = Type.Object(
  {
    epochs: Type.Integer({ minimum: 1, maximum: 500, default: 10 }),
    batchSize: Type.Integer({ minimum: 1, maximum: 1024, default: 32 }),
    optimizer: Type.Union(literals(OPTIMIZERS), { default: 'adam' }),
    /** "auto": a learning-rate range test (fastai's lr_find, valley) picks it before training. */
    learningRate: Type.Union([Type.Number({ exclusiveMinimum: 0, maximum: 10 }), Type.Literal('auto')], { default: 0.001 }),
    momentum: Type.Number({ minimum: 0, maximum: 0.999, default: 0.9 }),
    nesterov: Type.Boolean({ default: false }),
    /** Decoupled weight decay (AdamW); with other optimizers use `l2`. */
    weightDecay: Type.Number({ minimum: 0, maximum: 1, default: 0 }),
    lrSchedule: Type.Optional(LrScheduleSchema),
    warmupEpochs: Type.Integer({ minimum: 0, maximum: 100, default: 0 }),
    earlyStopping: Type.Optional(
      Type.Object(
        {
          monitor: Type.Union(literals(MONITORS), { default: 'val_loss' }),
          patience: Type.Integer({ minimum: 1, maximum: 500, default: 3 }),
          minDelta: Type.Number({ minimum: 0, maximum: 10, default: 0 }),
        },
        { additionalProperties: false },
      ),
    ),
    head: Type.Object(
      {
        hiddenUnits: Type.Array(Type.Integer({ minimum: 1, maximum: 8192 }), { maxItems: 4, default: [] }),
        activation: Type.Union(literals(ACTIVATIONS), { default: 'relu' }),
        dropout: Type.Number({ minimum: 0, maximum: 0.95, default: 0 }),
      },
      { additionalProperties: false, default: {} },
    ),
    l2: Type.Number({ minimum: 0, maximum: 1, default: 0 }),
    labelSmoothing: Type.Number({ minimum: 0, maximum: 0.5, default: 0 }),
    augmentation: Type.Optional(
      Type.Object(
        {
          flipHorizontal: Type.Boolean({ default: false }),
          rotationDegrees: Type.Number({ minimum: 0, maximum: 180, default: 0 }),
          zoom: Type.Number({ minimum: 0, maximum: 0.9, default: 0 }),
          brightness: Type.Number({ minimum: 0, maximum: 1, default: 0 }),
          /** Fraction of each side a random crop may remove before resizing back. */
          randomCrop: Type.Number({ minimum: 0, maximum: 0.5, default: 0 }),
        },
        { additionalProperties: false },
      ),
    ),
    classWeights: Type.Optional(
      Type.Union([
        Type.Literal('balanced'),
        Type.Record(Type.String({ minLength: 1, maxLength: 200 }), Type.Number({ exclusiveMinimum: 0, maximum: 1000 })),
      ]),
    ),
    unfreeze: Type.Optional(UnfreezeSchema),
    baseLearningRateMultiplier: Type.Number({ exclusiveMinimum: 0, maximum: 10, default: 0.1 }),
    /** Discriminative rates (ULMFiT): block k below the top of the base trains at learningRate / decay^(k+1). */
    layerLearningRateDecay: Type.Optional(Type.Number({ minimum: 1, maximum: 100 })),
    stages: Type.Optional(Type.Array(StageSchema, { minItems: 1, maxItems: 20 })),
    validationSplit: Type.Number({ minimum: 0, maximum: 0.5, default: 0.2 }),
    /** Held out for the test metrics only (never early stopping or the best epoch); ignored when
     * the archive has its own test/. */
    testSplit: Type.Number({ minimum: 0, maximum: 0.5, default: 0 }),
    seed: Type.Integer({ minimum: 0, maximum: 2 ** 31 - 1, default: 42 }),
    /** k of the top-k accuracy in the evaluation report. */
    topK: Type.Integer({ minimum: 1, maximum: 100, default: 3 }),
    /** domain_adaptation: re-estimate only the first N BatchNormalization layers (from the input),
     * where low-level statistics — colour, contrast, lighting — live; the deeper layers keep the
     * base's. Default: every BatchNormalization layer (AdaBN as published). */
    adaptationLayers: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000 })),
  },
  { additionalProperties: false },
);

/** An id as Postgres stores it: the canonical 8-4-4-4-12 hex form only. ajv's `uuid` format also
 * lets `urn:uuid:…` through, which Postgres then refuses with an error instead of a miss. */
export const UUID_PATTERN = '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$';

export const BaseModelRefSchema = Type.Union([
  Type.String({ minLength: 1, maxLength: 100 }),
  Type.Object({ modelId: Type.String({ pattern: UUID_PATTERN }) }, { additionalProperties: false }),
  /** A custom base the tenant added (POST /v1/base-models). */
  Type.Object({ baseModelId: Type.String({ pattern: UUID_PATTERN }) }, { additionalProperties: false }),
]);

export const JobSpecSchema = Type.Object(
  {
    datasetId: Type.String({ pattern: UUID_PATTERN }),
    baseModel: BaseModelRefSchema,
    strategy: Type.Optional(Type.Union(literals(STRATEGIES), { default: 'feature_extraction' })),
    hyperparameters: Type.Optional(HyperparametersSchema),
    /** Also train the `scratch` baseline on the same split and report the transfer gain. */
    compareWithScratch: Type.Optional(Type.Boolean({ default: false })),
    /** Wall-clock training budget (SageMaker's MaxRuntimeInSeconds): training stops at a batch
     * boundary once it is spent and the job keeps the best model so far. Capped by the server. */
    maxRuntimeSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 30 * 24 * 3600 })),
    /** Refuse (422) a dataset with blocking data-check findings instead of warning in the job. */
    strictDataChecks: Type.Optional(Type.Boolean({ default: false })),
    /** domain_adaptation: an unlabelled dataset (kind=unlabelled) from the domain the model will serve. */
    targetDatasetId: Type.Optional(Type.String({ pattern: UUID_PATTERN })),
    /** domain_adaptation: a labelled dataset from the target domain, only evaluated on (targetEvaluation). */
    targetTestDatasetId: Type.Optional(Type.String({ pattern: UUID_PATTERN })),
  },
  { additionalProperties: false },
);

export type Strategy = (typeof STRATEGIES)[number];
export type Optimizer = (typeof OPTIMIZERS)[number];
export type Monitor = (typeof MONITORS)[number];
export type Activation = (typeof ACTIVATIONS)[number];
export type Unfreeze = { topLayers: number } | { fromLayer: string };
export type LrSchedule = Static<typeof LrScheduleSchema>;
export type Stage = { unfreeze: Unfreeze; epochs: number; learningRate?: number };
export type BaseModelRef = string | { modelId: string } | { baseModelId: string };

/** Every hyperparameter with its default filled in (what the worker trains with). */
export interface Hyperparameters {
  epochs: number;
  batchSize: number;
  optimizer: Optimizer;
  learningRate: number | 'auto';
  momentum: number;
  nesterov: boolean;
  weightDecay: number;
  lrSchedule: LrSchedule;
  warmupEpochs: number;
  earlyStopping: { monitor: Monitor; patience: number; minDelta: number } | null;
  head: { hiddenUnits: number[]; activation: Activation; dropout: number };
  l2: number;
  labelSmoothing: number;
  augmentation: {
    flipHorizontal: boolean;
    rotationDegrees: number;
    zoom: number;
    brightness: number;
    randomCrop: number;
  } | null;
  classWeights: 'balanced' | Record<string, number> | null;
  unfreeze: Unfreeze | null;
  baseLearningRateMultiplier: number;
  /** Replaces baseLearningRateMultiplier when set: each block down the base trains `decay` times slower. */
  layerLearningRateDecay: number | null;
  stages: Stage[] | null;
  validationSplit: number;
  /** 0 in specs stored before the test split existed. */
  testSplit: number;
  seed: number;
  topK: number;
  /** domain_adaptation: the first N BatchNormalization layers adapt; null: all of them. */
  adaptationLayers: number | null;
}

export type JobSpecInput = Static<typeof JobSpecSchema>;

/** Hyperparameters as a caller may give them: any subset, nested objects partial too. */
export type HyperparametersInput = Partial<
  Omit<Hyperparameters, 'head' | 'earlyStopping' | 'augmentation' | 'lrSchedule' | 'classWeights' | 'unfreeze' | 'stages' | 'layerLearningRateDecay' | 'adaptationLayers'>
> & {
  head?: Partial<Hyperparameters['head']>;
  earlyStopping?: Partial<NonNullable<Hyperparameters['earlyStopping']>>;
  augmentation?: Partial<NonNullable<Hyperparameters['augmentation']>>;
  lrSchedule?: LrSchedule;
  classWeights?: NonNullable<Hyperparameters['classWeights']>;
  unfreeze?: Unfreeze;
  stages?: Stage[];
  layerLearningRateDecay?: number;
  adaptationLayers?: number;
};

/** A job spec as a caller may write it (the API's validated body, a benchmark, a test). */
export interface JobSpecDraft {
  datasetId: string;
  baseModel: BaseModelRef;
  strategy?: Strategy;
  hyperparameters?: HyperparametersInput;
  compareWithScratch?: boolean;
  maxRuntimeSeconds?: number;
  strictDataChecks?: boolean;
  targetDatasetId?: string;
  targetTestDatasetId?: string;
}

/** What the worker runs: every default filled in. */
export interface JobSpec {
  datasetId: string;
  baseModel: BaseModelRef;
  strategy: Strategy;
  hyperparameters: Hyperparameters;
  compareWithScratch: boolean;
  /** Null: the server's default (MAX_JOB_RUNTIME_SECONDS) applies; the API fills it in. */
  maxRuntimeSeconds: number | null;
  strictDataChecks: boolean;
  /** domain_adaptation only (null otherwise, and in specs stored before it existed). */
  targetDatasetId?: string | null;
  targetTestDatasetId?: string | null;
}

export const DEFAULT_HYPERPARAMETERS: Hyperparameters = {
  epochs: 10,
  batchSize: 32,
  optimizer: 'adam',
  learningRate: 0.001,
  momentum: 0.9,
  nesterov: false,
  weightDecay: 0,
  lrSchedule: { type: 'constant' },
  warmupEpochs: 0,
  earlyStopping: null,
  head: { hiddenUnits: [], activation: 'relu', dropout: 0 },
  l2: 0,
  labelSmoothing: 0,
  augmentation: null,
  classWeights: null,
  unfreeze: null,
  baseLearningRateMultiplier: 0.1,
  layerLearningRateDecay: null,
  stages: null,
  validationSplit: 0.2,
  testSplit: 0,
  seed: 42,
  topK: 3,
  adaptationLayers: null,
};

const EARLY_STOPPING_DEFAULTS = { monitor: 'val_loss' as Monitor, patience: 3, minDelta: 0 };
const AUGMENTATION_DEFAULTS = { flipHorizontal: false, rotationDegrees: 0, zoom: 0, brightness: 0, randomCrop: 0 };

export function withDefaults(input: JobSpecDraft): JobSpec {
  const given: HyperparametersInput = input.hyperparameters ?? {};
  const d = DEFAULT_HYPERPARAMETERS;
  const hyperparameters: Hyperparameters = {
    ...d,
    ...given,
    head: { ...d.head, ...given.head },
    lrSchedule: given.lrSchedule ?? d.lrSchedule,
    // Nested defaults again here (the API's validator fills them already) so that callers
    // outside the API — benchmarks, tests — get the same complete spec.
    earlyStopping: given.earlyStopping ? { ...EARLY_STOPPING_DEFAULTS, ...given.earlyStopping } : null,
    augmentation: given.augmentation ? { ...AUGMENTATION_DEFAULTS, ...given.augmentation } : null,
    classWeights: given.classWeights ?? null,
    unfreeze: given.unfreeze ?? null,
    stages: given.stages ?? null,
    layerLearningRateDecay: given.layerLearningRateDecay ?? null,
    adaptationLayers: given.adaptationLayers ?? null,
  };
  return {
    datasetId: input.datasetId,
    baseModel: input.baseModel,
    strategy: input.strategy ?? 'feature_extraction',
    hyperparameters,
    compareWithScratch: input.compareWithScratch ?? false,
    maxRuntimeSeconds: input.maxRuntimeSeconds ?? null,
    strictDataChecks: input.strictDataChecks ?? false,
    targetDatasetId: input.targetDatasetId ?? null,
    targetTestDatasetId: input.targetTestDatasetId ?? null,
  };
}

/**
 * Cross-field rules a schema cannot express. Returns the reasons a spec is impossible (empty
 * when it is fine); the API answers 400 with them.
 */
export function specProblems(spec: JobSpec): string[] {
  const hp = spec.hyperparameters;
  const problems: string[] = [];
  const trainsBase = ['fine_tune', 'progressive_unfreezing'].includes(spec.strategy);
  if (hp.unfreeze && !['fine_tune'].includes(spec.strategy)) {
    problems.push(`hyperparameters.unfreeze applies to strategy fine_tune only (got ${spec.strategy})`);
  }
  if (hp.stages && spec.strategy !== 'progressive_unfreezing') {
    problems.push(`hyperparameters.stages applies to strategy progressive_unfreezing only (got ${spec.strategy})`);
  }
  if (hp.nesterov && hp.optimizer !== 'sgd') problems.push('hyperparameters.nesterov needs optimizer sgd');
  if (hp.weightDecay > 0 && hp.optimizer !== 'adamw') {
    problems.push('hyperparameters.weightDecay is decoupled decay for optimizer adamw; use l2 with other optimizers');
  }
  if (hp.warmupEpochs >= hp.epochs && spec.strategy !== 'progressive_unfreezing') {
    problems.push(`hyperparameters.warmupEpochs (${hp.warmupEpochs}) must be less than epochs (${hp.epochs})`);
  }
  if (hp.validationSplit + hp.testSplit >= 1) {
    problems.push(`hyperparameters.validationSplit + testSplit must be below 1 (got ${hp.validationSplit + hp.testSplit}): nothing would be left to train on`);
  }
  if (hp.earlyStopping?.monitor.startsWith('val_') && hp.validationSplit === 0) {
    problems.push(`earlyStopping.monitor ${hp.earlyStopping.monitor} needs a validation set; validationSplit is 0`);
  }
  if (spec.strategy === 'prototype') {
    const trainingOnly: (keyof Hyperparameters)[] = ['augmentation', 'classWeights', 'earlyStopping'];
    for (const key of trainingOnly) {
      if (hp[key] !== null) problems.push(`hyperparameters.${key} has no meaning for strategy prototype (no training loop)`);
    }
    if (hp.head.hiddenUnits.length > 0) problems.push('strategy prototype has no trained head: hyperparameters.head.hiddenUnits must be empty');
  }
  if (spec.compareWithScratch && spec.strategy === 'scratch') {
    problems.push('compareWithScratch compares a transfer strategy with scratch; the strategy is already scratch');
  }
  if (!trainsBase && hp.baseLearningRateMultiplier !== DEFAULT_HYPERPARAMETERS.baseLearningRateMultiplier && spec.strategy !== 'full') {
    problems.push(`hyperparameters.baseLearningRateMultiplier applies to fine_tune, progressive_unfreezing and full (got ${spec.strategy})`);
  }
  if (hp.layerLearningRateDecay !== null) {
    if (!trainsBase && spec.strategy !== 'full') {
      problems.push(`hyperparameters.layerLearningRateDecay applies to fine_tune, progressive_unfreezing and full (got ${spec.strategy})`);
    }
    // The decay sets every base rate itself; a multiplier beside it would be silently ignored.
    if (hp.baseLearningRateMultiplier !== DEFAULT_HYPERPARAMETERS.baseLearningRateMultiplier) {
      problems.push('hyperparameters.layerLearningRateDecay and baseLearningRateMultiplier are alternatives; give one of them');
    }
  }
  if (hp.lrSchedule.type === 'one_cycle' && hp.warmupEpochs > 0) {
    problems.push('lrSchedule one_cycle warms up by itself (pctStart of the steps); warmupEpochs must be 0');
  }
  if (spec.strategy === 'domain_adaptation') {
    if (!spec.targetDatasetId) problems.push('strategy domain_adaptation needs targetDatasetId: an unlabelled dataset (kind=unlabelled) from the target domain');
    if (spec.targetDatasetId === spec.datasetId) problems.push('targetDatasetId must differ from datasetId: the target domain is what the source data lacks');
    if (hp.augmentation !== null) problems.push('hyperparameters.augmentation is not supported with strategy domain_adaptation (its features are computed once per domain)');
    if (spec.compareWithScratch) problems.push('compareWithScratch is not supported with strategy domain_adaptation');
  } else if (spec.targetDatasetId || spec.targetTestDatasetId || hp.adaptationLayers !== null) {
    problems.push(`targetDatasetId, targetTestDatasetId and hyperparameters.adaptationLayers apply to strategy domain_adaptation only (got ${spec.strategy})`);
  }
  if (hp.learningRate === 'auto' && spec.strategy === 'prototype') {
    problems.push('learningRate "auto" has no meaning for strategy prototype (no training loop)');
  }
  return problems;
}

/** The base a spec names, as jobs and models record it: a zoo id, `model:<id>` or `base:<id>`. */
export function baseModelLabel(ref: BaseModelRef): string {
  if (typeof ref === 'string') return ref;
  return 'modelId' in ref ? `model:${ref.modelId}` : customBaseLabel(ref.baseModelId);
}

/** Total epochs a spec trains for (progressive unfreezing: the sum of its stages). */
export function totalEpochs(spec: JobSpec): number {
  if (spec.strategy === 'prototype') return 1;
  if (spec.strategy === 'progressive_unfreezing' && spec.hyperparameters.stages) {
    return spec.hyperparameters.stages.reduce((sum, s) => sum + s.epochs, 0);
  }
  return spec.hyperparameters.epochs;
}
