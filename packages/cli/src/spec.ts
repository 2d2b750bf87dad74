// `jobs create` options → the job spec (README "Job spec"). `--set key=value` fills
// hyperparameters.<key> (dotted keys nest: earlyStopping.patience=3); the spec's top-level
// optional fields are the exception and go where the API expects them.

export type Spec = Record<string, unknown> & { hyperparameters?: Record<string, unknown> };

/** Fields of the spec itself rather than of `hyperparameters`. */
export const TOP_LEVEL_FIELDS = new Set(['compareWithScratch', 'maxRuntimeSeconds']);

/** `value` as JSON when it parses (3, true, {"type": "cosine"}), else the text as given. */
export function parseValue(value: string): unknown {
  try {
    return JSON.parse(value);
  } catch {
    return value;
  }
}

/** Throws a message for a malformed assignment (the caller reports it as a usage error). */
export function applySet(spec: Spec, assignment: string): void {
  const eq = assignment.indexOf('=');
  if (eq <= 0) throw new Error(`--set expects key=value, got "${assignment}"`);
  const path = assignment.slice(0, eq).trim().split('.');
  if (path.some((segment) => segment === '' || segment === '__proto__' || segment === 'constructor' || segment === 'prototype')) {
    throw new Error(`--set: bad key "${assignment.slice(0, eq)}"`);
  }
  const value = parseValue(assignment.slice(eq + 1));
  let target: Record<string, unknown>;
  if (path.length === 1 && TOP_LEVEL_FIELDS.has(path[0]!)) {
    target = spec;
  } else {
    spec.hyperparameters ??= {};
    target = spec.hyperparameters;
  }
  for (const segment of path.slice(0, -1)) {
    const next = target[segment];
    if (next === undefined) target[segment] = {};
    else if (!next || typeof next !== 'object' || Array.isArray(next)) {
      throw new Error(`--set ${path.join('.')}: "${segment}" is already set to a value that is not an object`);
    }
    target = target[segment] as Record<string, unknown>;
  }
  target[path[path.length - 1]!] = value;
}

/** `mobilenet_v2` stays a zoo id; `model:<id>` (or a bare model UUID) is an earlier job's model. */
export function parseBaseModel(value: string): string | { modelId: string } | { baseModelId: string } {
  const custom = /^base:([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/i.exec(value);
  if (custom) return { baseModelId: custom[1]! };
  const match = /^(?:model:)?([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/i.exec(value);
  return match ? { modelId: match[1]! } : value;
}
