import { createHash } from 'node:crypto';
import Type, { type Static, type TSchema } from 'typebox';
import Value from 'typebox/value';
import { bestEpoch, type EpochScore } from './best-epoch.ts';
import {
  BaseModelRefSchema,
  HyperparametersSchema,
  MONITORS,
  specProblems,
  STRATEGIES,
  UUID_PATTERN,
  withDefaults,
  type JobSpec,
  type JobSpecDraft,
  type Monitor,
} from './job-spec.ts';

// A hyperparameter sweep: a job spec whose hyperparameters are partly fixed and partly drawn from
// a search space, tried as ordinary jobs ("trials"). Everything here is pure — the schema, the
// seeded sampling, the validation of what a space can produce and ASHA's decisions — so the API
// (which refuses a bad space before anything exists) and the worker's sweep controller (which
// creates the trials) compute the same trials from the same stored spec.

export const SEARCHERS = ['random', 'asha'] as const;
export type Searcher = (typeof SEARCHERS)[number];
export type SweepMetric = Monitor;

const literals = <T extends string>(values: readonly T[]) => values.map((v) => Type.Literal(v));

export const RangeSchema = Type.Object(
  {
    min: Type.Number(),
    max: Type.Number(),
    /** Log-uniform between min and max (both > 0): for rates and other scale-free values. */
    log: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);

export const ChoicesSchema = Type.Object(
  { choices: Type.Array(Type.Unknown(), { minItems: 1, maxItems: 100 }) },
  { additionalProperties: false },
);

export const SweepSpecSchema = Type.Object(
  {
    datasetId: Type.String({ pattern: UUID_PATTERN }),
    baseModel: BaseModelRefSchema,
    strategy: Type.Optional(Type.Union(literals(STRATEGIES), { default: 'feature_extraction' })),
    /** The fixed hyperparameters every trial shares; the space overrides the paths it names. */
    hyperparameters: Type.Optional(HyperparametersSchema),
    /** Each trial's training-time budget, as a job's. */
    maxRuntimeSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 30 * 24 * 3600 })),
    /** Hyperparameter path (`learningRate`, `head.dropout`) → a range or a list of choices. */
    space: Type.Record(Type.String(), Type.Union([RangeSchema, ChoicesSchema]), { minProperties: 1, maxProperties: 32 }),
    searcher: Type.Optional(Type.Union(literals(SEARCHERS), { default: 'random' })),
    /** What ranks trials: accuracies are maximised, losses minimised. */
    metric: Type.Optional(Type.Union(literals(MONITORS), { default: 'val_accuracy' })),
    maxTrials: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 10 })),
    maxConcurrentTrials: Type.Optional(Type.Integer({ minimum: 1, maximum: 32, default: 2 })),
    /** Seeds the sampling: the same spec and seed give the same trials. */
    seed: Type.Optional(Type.Integer({ minimum: 0, maximum: 2 ** 31 - 1, default: 0 })),
    asha: Type.Optional(
      Type.Object(
        {
          /** r: the first rung, in epochs. */
          minEpochs: Type.Integer({ minimum: 1, maximum: 500, default: 1 }),
          /** η: rungs at r·η^k epochs; a trial continues from a rung only in the top 1/η there. */
          reductionFactor: Type.Integer({ minimum: 2, maximum: 10, default: 3 }),
        },
        { additionalProperties: false, default: {} },
      ),
    ),
  },
  { additionalProperties: false },
);

export type SweepSpecInput = Static<typeof SweepSpecSchema>;
export type Range = Static<typeof RangeSchema>;
export type Choices = Static<typeof ChoicesSchema>;
export type SearchSpace = Record<string, Range | Choices>;

/** A sweep as stored and run: every default filled in. */
export interface SweepSpec {
  datasetId: string;
  baseModel: JobSpecDraft['baseModel'];
  strategy: NonNullable<JobSpecDraft['strategy']>;
  hyperparameters: Record<string, unknown>;
  maxRuntimeSeconds: number | null;
  space: SearchSpace;
  searcher: Searcher;
  metric: SweepMetric;
  maxTrials: number;
  maxConcurrentTrials: number;
  seed: number;
  asha: { minEpochs: number; reductionFactor: number };
}

export function sweepWithDefaults(input: SweepSpecInput): SweepSpec {
  return {
    datasetId: input.datasetId,
    baseModel: input.baseModel,
    strategy: input.strategy ?? 'feature_extraction',
    hyperparameters: (input.hyperparameters ?? {}) as Record<string, unknown>,
    maxRuntimeSeconds: input.maxRuntimeSeconds ?? null,
    space: input.space as SearchSpace,
    searcher: input.searcher ?? 'random',
    metric: input.metric ?? 'val_accuracy',
    maxTrials: input.maxTrials ?? 10,
    maxConcurrentTrials: input.maxConcurrentTrials ?? 2,
    seed: input.seed ?? 0,
    asha: { minEpochs: input.asha?.minEpochs ?? 1, reductionFactor: input.asha?.reductionFactor ?? 3 },
  };
}

export const isRange = (entry: Range | Choices): entry is Range => 'min' in entry;

// ---------------------------------------------------------------------------------------------
// Paths into the hyperparameters

const PATH = /^[A-Za-z][A-Za-z0-9]{0,63}(\.[A-Za-z][A-Za-z0-9]{0,63}){0,3}$/;

function unwrapObject(schema: TSchema): Record<string, TSchema> | null {
  const s = schema as { type?: string; properties?: Record<string, TSchema> };
  return s.type === 'object' && s.properties ? s.properties : null;
}

/** The schema of the hyperparameter a path names (`head.dropout`), or null when there is none. */
export function hyperparameterSchema(path: string): TSchema | null {
  if (!PATH.test(path)) return null;
  let schema: TSchema = HyperparametersSchema;
  for (const segment of path.split('.')) {
    const properties = unwrapObject(schema);
    if (!properties || !Object.hasOwn(properties, segment)) return null;
    schema = properties[segment]!;
  }
  return schema;
}

/** A numeric hyperparameter's type (a union such as `number | "auto"` counts by its number). */
function numericKind(schema: TSchema): 'integer' | 'number' | null {
  const s = schema as { type?: string; anyOf?: TSchema[] };
  if (s.type === 'integer' || s.type === 'number') return s.type;
  for (const member of s.anyOf ?? []) {
    const kind = numericKind(member);
    if (kind) return kind;
  }
  return null;
}

function setPath(target: Record<string, unknown>, path: string, value: unknown): void {
  const segments = path.split('.');
  let node = target;
  for (const segment of segments.slice(0, -1)) {
    const next = node[segment];
    const child = next !== null && typeof next === 'object' && !Array.isArray(next) ? { ...(next as Record<string, unknown>) } : {};
    node[segment] = child;
    node = child;
  }
  node[segments[segments.length - 1]!] = value;
}

export function getPath(source: unknown, path: string): unknown {
  let node = source;
  for (const segment of path.split('.')) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<string, unknown>)[segment];
  }
  return node;
}

/** The fixed hyperparameters with the given path → value pairs written over them. */
export function applyParams(fixed: Record<string, unknown>, params: Record<string, unknown>): Record<string, unknown> {
  const merged = structuredClone(fixed);
  for (const [path, value] of Object.entries(params)) setPath(merged, path, structuredClone(value));
  return merged;
}

// ---------------------------------------------------------------------------------------------
// Sampling

/**
 * One uniform draw in [0, 1) for (seed, trial, path): the first 48 bits of a SHA-256. Draws are
 * independent across trials and paths and need no stream state, so the controller can compute
 * trial n at any time — after a restart, on another worker — and get what the API validated.
 */
export function uniformDraw(seed: number, trial: number, path: string): number {
  const digest = createHash('sha256').update(`${seed}:${trial}:${path}`).digest();
  return digest.readUIntBE(0, 6) / 2 ** 48;
}

/** The value a range or choice list gives for a draw `u` in [0, 1). */
export function valueAt(entry: Range | Choices, u: number, integer: boolean): unknown {
  if (!isRange(entry)) return entry.choices[Math.min(entry.choices.length - 1, Math.floor(u * entry.choices.length))];
  const { min, max } = entry;
  if (entry.log) {
    // Integers: log-uniform over [min, max + 1), floored, so each end gets its share.
    const top = integer ? max + 1 : max;
    const value = Math.exp(Math.log(min) + u * (Math.log(top) - Math.log(min)));
    return integer ? Math.min(max, Math.floor(value)) : Math.min(max, value);
  }
  if (integer) return Math.min(max, min + Math.floor(u * (max - min + 1)));
  return min + u * (max - min);
}

/** Trial `trial`'s sampled values, path → value. */
export function sampleTrial(space: SearchSpace, seed: number, trial: number): Record<string, unknown> {
  const params: Record<string, unknown> = {};
  for (const [path, entry] of Object.entries(space)) {
    const schema = hyperparameterSchema(path);
    params[path] = valueAt(entry, uniformDraw(seed, trial, path), schema !== null && numericKind(schema) === 'integer');
  }
  return params;
}

/** The job spec of trial `trial`: the sweep's fixed part with the trial's sampled values. */
export function trialSpec(sweep: SweepSpec, trial: number): { params: Record<string, unknown>; spec: JobSpec } {
  const params = sampleTrial(sweep.space, sweep.seed, trial);
  return { params, spec: specWith(sweep, params).spec };
}

function specWith(sweep: SweepSpec, params: Record<string, unknown>): { hyperparameters: unknown; spec: JobSpec } {
  // Defaults of nested objects a space may introduce (`earlyStopping.patience` alone) are filled
  // by the schema, as the API's validator fills a job's.
  const hyperparameters = Value.Default(HyperparametersSchema, applyParams(sweep.hyperparameters, params));
  const spec = withDefaults({
    datasetId: sweep.datasetId,
    baseModel: sweep.baseModel,
    strategy: sweep.strategy,
    hyperparameters: hyperparameters as JobSpecDraft['hyperparameters'],
  });
  return { hyperparameters, spec: { ...spec, maxRuntimeSeconds: sweep.maxRuntimeSeconds } };
}

// ---------------------------------------------------------------------------------------------
// Validation

export interface SpaceProblem {
  /** Where in the request: `space.learningRate.max`, `space.head.dropout.choices[2]`. */
  path: string;
  message: string;
}

function firstSchemaError(schema: TSchema, value: unknown): string | null {
  if (Value.Check(schema, value)) return null;
  const [error] = Value.Errors(schema, value);
  if (!error) return 'is not valid';
  return `${error.instancePath ? `${error.instancePath} ` : ''}${error.message}`;
}

/** What is wrong with each entry of a space on its own: unknown paths, bad bounds, invalid values. */
function entryProblems(space: SearchSpace): SpaceProblem[] {
  const problems: SpaceProblem[] = [];
  for (const [path, entry] of Object.entries(space)) {
    const at = `space.${path}`;
    const schema = hyperparameterSchema(path);
    if (!schema) {
      problems.push({ path: at, message: `"${path}" is not a hyperparameter (paths name one, e.g. "learningRate" or "head.dropout")` });
      continue;
    }
    if (isRange(entry)) {
      const kind = numericKind(schema);
      if (!kind) {
        problems.push({ path: at, message: `hyperparameters.${path} is not a number: give "choices" instead of a range` });
        continue;
      }
      if (!(entry.min <= entry.max)) problems.push({ path: `${at}.min`, message: `min (${entry.min}) is above max (${entry.max})` });
      if (entry.log && !(entry.min > 0)) problems.push({ path: `${at}.min`, message: `a log range needs min > 0 (got ${entry.min})` });
      for (const bound of ['min', 'max'] as const) {
        if (kind === 'integer' && !Number.isInteger(entry[bound])) {
          problems.push({ path: `${at}.${bound}`, message: `hyperparameters.${path} is an integer; ${bound} ${entry[bound]} is not` });
          continue;
        }
        const error = firstSchemaError(schema, entry[bound]);
        if (error) problems.push({ path: `${at}.${bound}`, message: `${entry[bound]} is not a valid hyperparameters.${path}: ${error}` });
      }
    } else {
      entry.choices.forEach((choice, i) => {
        const error = firstSchemaError(schema, choice);
        if (error) problems.push({ path: `${at}.choices[${i}]`, message: `${JSON.stringify(choice)?.slice(0, 100)} is not a valid hyperparameters.${path}: ${error}` });
      });
    }
  }
  return problems;
}

/** The values of an entry that bound what it can produce: a range's ends, every choice. */
function extremes(entry: Range | Choices): unknown[] {
  return isRange(entry) ? [entry.min, entry.max] : entry.choices;
}

const MAX_CORNERS = 256;

/**
 * What is wrong with a sweep before any trial exists. Every entry must name a hyperparameter and
 * only produce valid values; then the combinations of the entries' extremes (a range's ends,
 * every choice — up to 256 combinations) and every trial the seed will actually draw must be
 * valid job specs, cross-field rules included (`warmupEpochs` below `epochs`, `nesterov` with
 * sgd…). A problem names the space paths involved.
 */
export function sweepProblems(sweep: SweepSpec): SpaceProblem[] {
  // A sweep's body has no place for target datasets, so its trials could not name them.
  if (sweep.strategy === 'domain_adaptation') {
    return [{ path: 'strategy', message: 'sweeps do not run strategy domain_adaptation (a sweep names no target dataset); run its trials as jobs' }];
  }
  const fixedError = firstSchemaError(HyperparametersSchema, Value.Default(HyperparametersSchema, structuredClone(sweep.hyperparameters)));
  if (fixedError) return [{ path: 'hyperparameters', message: fixedError }];
  const problems = entryProblems(sweep.space);
  if (problems.length > 0) return problems;

  const check = (params: Record<string, unknown>, what: string): SpaceProblem | null => {
    const { hyperparameters, spec } = specWith(sweep, params);
    const schemaError = firstSchemaError(HyperparametersSchema, hyperparameters);
    const reasons = schemaError ? [schemaError] : specProblems(spec);
    if (reasons.length === 0) return null;
    const paths = Object.keys(params).map((p) => `space.${p}`);
    return { path: paths.join(', '), message: `${what} (${JSON.stringify(params).slice(0, 300)}) is not a valid job spec: ${reasons.join('; ')}` };
  };

  const entries = Object.entries(sweep.space);
  const combinations = entries.reduce((n, [, entry]) => n * extremes(entry).length, 1);
  if (combinations <= MAX_CORNERS) {
    for (let index = 0; index < combinations; index++) {
      const params: Record<string, unknown> = {};
      let rest = index;
      for (const [path, entry] of entries) {
        const values = extremes(entry);
        params[path] = values[rest % values.length];
        rest = Math.floor(rest / values.length);
      }
      const problem = check(params, 'a combination the space can produce');
      if (problem) return [problem];
    }
  }
  for (let trial = 0; trial < sweep.maxTrials; trial++) {
    const problem = check(sampleTrial(sweep.space, sweep.seed, trial), `trial ${trial}`);
    if (problem) return [problem];
  }
  return [];
}

// ---------------------------------------------------------------------------------------------
// Ranking and ASHA

export type Direction = 'max' | 'min';

export function metricDirection(metric: SweepMetric): Direction {
  return metric.endsWith('accuracy') ? 'max' : 'min';
}

/** `a` ranks above `b` for the metric. */
export function isBetterScore(a: number, b: number, direction: Direction): boolean {
  return direction === 'max' ? a > b : a < b;
}

/**
 * A trial's score: the metric at its best epoch — the epoch whose weights its model keeps (the
 * rule of `bestEpoch`) — among epochs up to `upToEpoch` when given. Null without such an epoch or
 * when the metric was not measured (a `val_*` metric with no validation data).
 */
export function trialScore(epochs: readonly EpochScore[], metric: SweepMetric, upToEpoch = Infinity): number | null {
  const best = bestEpoch(epochs.filter((e) => e.epoch <= upToEpoch));
  if (!best) return null;
  const value = { val_accuracy: best.valAcc, val_loss: best.valLoss, accuracy: best.trainAcc, loss: best.trainLoss }[metric];
  return value ?? null;
}

/** ASHA's rungs for a trial of `epochs` epochs: r·η^k below its last epoch (the end is no rung). */
export function ashaRungs(minEpochs: number, reductionFactor: number, epochs: number): number[] {
  const rungs: number[] = [];
  for (let rung = minEpochs; rung < epochs; rung *= reductionFactor) rungs.push(rung);
  return rungs;
}

/**
 * Asynchronous successive halving, decided when a trial reaches a rung: it continues only when it
 * ranks within the top 1/η of the trials recorded at that rung so far, itself included — at least
 * one, so the first trial to arrive always continues (Determined's "stop once" ASHA). Ties go to
 * the trials recorded earlier.
 */
export function ashaContinues(recorded: readonly number[], value: number, reductionFactor: number, direction: Direction): boolean {
  const ahead = recorded.filter((other) => !isBetterScore(value, other, direction)).length;
  const promoted = Math.max(1, Math.floor((recorded.length + 1) / reductionFactor));
  return ahead < promoted;
}
