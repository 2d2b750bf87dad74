// The training-state blob that lets a job killed mid-run resume where it was.
//
//   "FTTS" | header length (u32 LE) | header (UTF-8 JSON) | zero padding to 8 | tensor bytes | SHA-256
//
// The JSON header holds the format version, the run's fingerprint, counters, RNG states, the
// history and a manifest (name, dtype, shape, offset, bytes) of the tensors that follow as raw
// little-endian float32 / int32. The trailing SHA-256 covers everything before it: a truncated
// or damaged blob is refused as a whole before anything is read from it, so a resume either
// gets the complete state or an error, never a half-loaded one.
//
// Pure data: no tfjs here. The engine turns models and optimizers into TensorData and back.
import { createHash } from 'node:crypto';
import type { EarlyStoppingState } from './early-stopping.ts';
import type { LearningRateFinderResult } from './lr-finder.ts';
import type { EpochReport } from './types.ts';

// 2: one optimizer per base layer, kept across stages; the learning-rate range test.
export const TRAINING_STATE_FORMAT = 2;
const MAGIC = [0x46, 0x54, 0x54, 0x53]; // "FTTS"
const PREFIX_BYTES = 8;
const DIGEST_BYTES = 32;

/** A damaged blob, one from another format version, or one from a run with other options. */
export class TrainingStateError extends Error {
  override name = 'TrainingStateError';
}

export interface TensorData {
  dtype: 'float32' | 'int32';
  shape: number[];
  data: Float32Array | Int32Array;
}

/** What must be equal for a state to belong to a run: the fingerprint hashes it. */
export interface RunDescription {
  /** The base's id (a zoo id, or the trained model it was cut from): same shapes are not enough. */
  base: string;
  strategy: string;
  hyperparameters: unknown;
  labels: string[];
  train: number;
  val: number;
}

export interface TrainingState {
  run: RunDescription;
  /** Epochs completed, all stages. */
  epoch: number;
  /** 0-based index (in planStages order) of the stage the last epoch belonged to. */
  stage: number;
  /** Epochs of that stage completed. */
  stageEpoch: number;
  /** That stage trains no more: all its epochs ran, or early stopping ended it. */
  stageDone: boolean;
  stoppedEarly: boolean;
  /** Of the stage in progress (meaningless once stageDone). */
  earlyStopping: EarlyStoppingState;
  /** mulberry32 states (random.ts). */
  random: { shuffle: number; augment: number; dropout: number };
  everTrained: string[];
  best: { epoch: number; acc: number; loss: number } | null;
  history: EpochReport[];
  /** Layer name → weights: the head, every base layer trained so far (current values), the best epoch's. */
  head: Map<string, TensorData[]>;
  trained: Map<string, TensorData[]>;
  bestWeights: Map<string, TensorData[]>;
  /** optimizers.ts optimizerState of the head's optimizer and of each base layer's that has
   * trained so far (they carry into later stages); null for a run without optimizers (prototype). */
  optimizers: { head: TensorData[]; base: Map<string, TensorData[]> } | null;
  /** learningRate "auto": the range test, so that a resumed run trains at the same rate without repeating it. */
  learningRateFinder?: LearningRateFinderResult | null;
}

// ---- fingerprint

/** JSON with object keys sorted: the same options give the same text whatever built them. */
function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map((x) => (x === undefined ? 'null' : canonicalJson(x))).join(',')}]`;
  if (v && typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>)
      .filter(([, x]) => x !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonicalJson(x)}`).join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

export function runFingerprint(run: RunDescription): string {
  return createHash('sha256').update(canonicalJson(run)).digest('hex');
}

/** Where two JSON values differ (dotted paths, at most `limit`). */
function differences(a: unknown, b: unknown, path: string, out: string[], limit = 5): string[] {
  if (out.length >= limit || canonicalJson(a) === canonicalJson(b)) return out;
  const isObj = (x: unknown) => !!x && typeof x === 'object' && !Array.isArray(x);
  if (isObj(a) && isObj(b)) {
    const keys = [...new Set([...Object.keys(a as object), ...Object.keys(b as object)])].sort();
    for (const k of keys) differences((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], path ? `${path}.${k}` : k, out, limit);
  } else {
    const show = (x: unknown) => {
      const s = canonicalJson(x);
      return s.length > 60 ? `${s.slice(0, 57)}...` : s;
    };
    out.push(`${path || '(root)'}: ${show(a)} in the state, ${show(b)} here`);
  }
  return out;
}

/** Throws unless `state` was taken from a run with these options. */
export function checkRun(state: TrainingState, run: RunDescription): void {
  if (runFingerprint(state.run) === runFingerprint(run)) return;
  const diff = differences(state.run, run, '', []);
  throw new TrainingStateError(`training state belongs to a run with other options (strategy, hyperparameters, labels or split sizes) and cannot be resumed here: ${diff.join('; ')}`);
}

// ---- container

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

function leBytes(data: Float32Array | Int32Array): Uint8Array {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (LITTLE_ENDIAN) return bytes;
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i += 4) for (let j = 0; j < 4; j++) out[i + j] = bytes[i + 3 - j]!;
  return out;
}

function fromLeBytes(bytes: Uint8Array, dtype: TensorData['dtype']): Float32Array | Int32Array {
  // A copy (aligned, detached from the blob). Not bytes.slice(): on a Node Buffer that is a view.
  const copy = new Uint8Array(bytes);
  if (!LITTLE_ENDIAN) for (let i = 0; i < copy.length; i += 4) copy.subarray(i, i + 4).reverse();
  return dtype === 'float32' ? new Float32Array(copy.buffer) : new Int32Array(copy.buffer);
}

// JSON has no NaN or ±Infinity (a diverged loss is a number the history must keep).
const replacer = (_k: string, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? { $number: String(v) } : v);
const reviver = (_k: string, v: unknown) => {
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    const keys = Object.keys(v);
    const n = (v as { $number?: unknown }).$number;
    if (keys.length === 1 && typeof n === 'string' && ['NaN', 'Infinity', '-Infinity'].includes(n)) return Number(n);
  }
  return v;
};

interface ManifestEntry {
  name: string;
  dtype: TensorData['dtype'];
  shape: number[];
  offset: number;
  bytes: number;
}

/** header (JSON-able, without `format` / `tensors`) + named tensors → one blob. */
export function packBlob(header: Record<string, unknown>, tensors: [string, TensorData][]): Uint8Array {
  const manifest: ManifestEntry[] = [];
  let offset = 0;
  for (const [name, t] of tensors) {
    const size = t.shape.reduce((a, b) => a * b, 1);
    if (size !== t.data.length) throw new Error(`training state: tensor ${name} has ${t.data.length} values for shape [${t.shape}]`);
    manifest.push({ name, dtype: t.dtype, shape: t.shape, offset, bytes: t.data.byteLength });
    offset += t.data.byteLength;
  }
  const json = new TextEncoder().encode(JSON.stringify({ format: TRAINING_STATE_FORMAT, ...header, tensors: manifest }, replacer));
  const dataStart = Math.ceil((PREFIX_BYTES + json.length) / 8) * 8;
  const out = new Uint8Array(dataStart + offset + DIGEST_BYTES);
  out.set(MAGIC, 0);
  new DataView(out.buffer).setUint32(4, json.length, true);
  out.set(json, PREFIX_BYTES);
  tensors.forEach(([, t], i) => out.set(leBytes(t.data), dataStart + manifest[i]!.offset));
  out.set(createHash('sha256').update(out.subarray(0, out.length - DIGEST_BYTES)).digest(), out.length - DIGEST_BYTES);
  return out;
}

/** The inverse of packBlob; throws TrainingStateError for anything but an intact blob of this format. */
export function unpackBlob(blob: Uint8Array): { header: Record<string, unknown>; tensors: Map<string, TensorData> } {
  const fail = (why: string): never => {
    throw new TrainingStateError(`invalid training state: ${why}`);
  };
  if (!(blob instanceof Uint8Array)) fail('not a byte array');
  if (blob.length < PREFIX_BYTES + DIGEST_BYTES || MAGIC.some((b, i) => blob[i] !== b)) fail('not a training-state blob (no FTTS header)');
  const body = blob.subarray(0, blob.length - DIGEST_BYTES);
  const digest = createHash('sha256').update(body).digest();
  if (!digest.equals(blob.subarray(blob.length - DIGEST_BYTES))) fail(`checksum mismatch: the blob (${blob.length} bytes) is truncated or corrupted`);
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  const jsonLength = view.getUint32(4, true);
  if (PREFIX_BYTES + jsonLength > body.length) fail('header longer than the blob');
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(blob.subarray(PREFIX_BYTES, PREFIX_BYTES + jsonLength)), reviver) as Record<string, unknown>;
  } catch (error) {
    return fail(`header is not JSON (${(error as Error).message})`);
  }
  if (!header || typeof header !== 'object') fail('header is not an object');
  if (header.format !== TRAINING_STATE_FORMAT) fail(`format ${String(header.format)}; this version reads format ${TRAINING_STATE_FORMAT}`);
  const manifest = header.tensors;
  if (!Array.isArray(manifest)) fail('no tensor manifest');
  const dataStart = Math.ceil((PREFIX_BYTES + jsonLength) / 8) * 8;
  const tensors = new Map<string, TensorData>();
  let expectedOffset = 0;
  for (const m of manifest as ManifestEntry[]) {
    const ok =
      m &&
      typeof m.name === 'string' &&
      (m.dtype === 'float32' || m.dtype === 'int32') &&
      Array.isArray(m.shape) &&
      m.shape.every((d) => Number.isInteger(d) && d >= 0) &&
      m.offset === expectedOffset &&
      m.bytes === 4 * m.shape.reduce((a, b) => a * b, 1);
    if (!ok) fail(`bad manifest entry ${JSON.stringify(m)}`);
    if (tensors.has(m.name)) fail(`tensor ${m.name} listed twice`);
    if (dataStart + m.offset + m.bytes > body.length) fail(`tensor ${m.name} runs past the end`);
    tensors.set(m.name, { dtype: m.dtype, shape: m.shape, data: fromLeBytes(body.subarray(dataStart + m.offset, dataStart + m.offset + m.bytes), m.dtype) });
    expectedOffset += m.bytes;
  }
  if (dataStart + expectedOffset !== body.length) fail(`${body.length - dataStart - expectedOffset} bytes after the last tensor`);
  const { format: _format, tensors: _manifest, ...rest } = header;
  return { header: rest, tensors };
}

// ---- the training state on top of the container

type Group = 'head' | 'trained' | 'best';
const GROUP_KEYS: Record<Group, 'head' | 'trained' | 'bestWeights'> = { head: 'head', trained: 'trained', best: 'bestWeights' };

export function encodeTrainingState(s: TrainingState): Uint8Array {
  const tensors: [string, TensorData][] = [];
  for (const [group, key] of Object.entries(GROUP_KEYS)) {
    for (const [layer, ws] of s[key]) ws.forEach((w, i) => tensors.push([`${group}/${layer}/${i}`, w]));
  }
  s.optimizers?.head.forEach((w, i) => tensors.push([`optimizer/head/${i}`, w]));
  for (const [layer, ws] of s.optimizers?.base ?? []) ws.forEach((w, i) => tensors.push([`optimizer/base/${layer}/${i}`, w]));
  const header = {
    fingerprint: runFingerprint(s.run),
    run: s.run,
    epoch: s.epoch,
    stage: s.stage,
    stageEpoch: s.stageEpoch,
    stageDone: s.stageDone,
    stoppedEarly: s.stoppedEarly,
    earlyStopping: s.earlyStopping,
    random: s.random,
    everTrained: s.everTrained,
    best: s.best,
    history: s.history,
    optimizers: s.optimizers ? { head: s.optimizers.head.length, base: Object.fromEntries([...s.optimizers.base].map(([layer, ws]) => [layer, ws.length])) } : null,
    learningRateFinder: s.learningRateFinder ?? null,
  };
  return packBlob(header, tensors);
}

export function decodeTrainingState(blob: Uint8Array): TrainingState {
  const { header: h, tensors } = unpackBlob(blob);
  const fail = (why: string): never => {
    throw new TrainingStateError(`invalid training state: ${why}`);
  };
  const count = (v: unknown) => Number.isInteger(v) && (v as number) >= 0;
  const num = (v: unknown) => typeof v === 'number';
  const numOrNull = (v: unknown) => v === null || typeof v === 'number';
  const strings = (v: unknown) => Array.isArray(v) && v.every((x) => typeof x === 'string');
  const obj = (v: unknown): Record<string, unknown> => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : fail(`expected an object, got ${JSON.stringify(v)}`));
  const uint32 = (v: unknown) => Number.isInteger(v) && (v as number) >= 0 && (v as number) < 2 ** 32;

  const run = obj(h.run);
  if (typeof run.strategy !== 'string' || !strings(run.labels) || !count(run.train) || !count(run.val)) fail('bad run description');
  if (h.fingerprint !== runFingerprint(run as unknown as RunDescription)) fail('fingerprint does not match the run description');
  for (const k of ['epoch', 'stage', 'stageEpoch'] as const) if (!count(h[k])) fail(`${k} is not a count`);
  for (const k of ['stageDone', 'stoppedEarly'] as const) if (typeof h[k] !== 'boolean') fail(`${k} is not a boolean`);
  const es = obj(h.earlyStopping);
  if (!numOrNull(es.best) || !count(es.wait)) fail('bad early-stopping state');
  const random = obj(h.random);
  if (!uint32(random.shuffle) || !uint32(random.augment) || !uint32(random.dropout)) fail('bad RNG states');
  if (!strings(h.everTrained)) fail('everTrained is not a list of layer names');
  const best = h.best === null ? null : obj(h.best);
  if (best && (!count(best.epoch) || !num(best.acc) || !num(best.loss))) fail('bad best epoch');
  if (!Array.isArray(h.history)) fail('no history');
  const history = (h.history as unknown[]).map((e, i) => {
    const r = obj(e);
    const ok =
      r.epoch === i + 1 &&
      (r.stage === undefined || count(r.stage)) &&
      num(r.trainLoss) &&
      num(r.trainAcc) &&
      numOrNull(r.valLoss) &&
      numOrNull(r.valAcc) &&
      num(r.learningRate) &&
      numOrNull(r.baseLearningRate) &&
      num(r.durationMs) &&
      typeof r.isBest === 'boolean' &&
      strings(r.trainableLayers);
    if (!ok) fail(`bad history entry ${i + 1}`);
    return r as unknown as EpochReport;
  });
  if (history.length !== h.epoch) fail(`history has ${history.length} epochs; the state is after epoch ${String(h.epoch)}`);

  const groups: Record<Group, Map<string, TensorData[]>> = { head: new Map(), trained: new Map(), best: new Map() };
  const optimizers = { head: [] as TensorData[], base: new Map<string, TensorData[]>() };
  for (const [name, t] of tensors) {
    const first = name.indexOf('/');
    const last = name.lastIndexOf('/');
    const group = name.slice(0, first);
    const middle = name.slice(first + 1, last);
    const index = Number(name.slice(last + 1));
    if (first < 0 || last <= first || !Number.isInteger(index)) fail(`unexpected tensor name ${name}`);
    const optimizerList = () =>
      middle === 'head' ? optimizers.head : middle.startsWith('base/') && middle.length > 5 ? listFor(optimizers.base, middle.slice(5)) : fail(`unexpected tensor ${name}`);
    const list = group === 'optimizer' ? optimizerList() : group in groups ? listFor(groups[group as Group], middle) : fail(`unexpected tensor ${name}`);
    if (index !== list.length) fail(`tensor ${name} out of order`);
    list.push(t);
  }
  const opt = h.optimizers === null ? null : obj(h.optimizers);
  if (opt) {
    const base = obj(opt.base);
    const counts = [...optimizers.base].map(([layer, ws]) => [layer, ws.length] as const);
    if (opt.head !== optimizers.head.length || Object.keys(base).length !== counts.length || counts.some(([layer, n]) => base[layer] !== n)) {
      fail('optimizer tensor counts do not match the header');
    }
  } else if (optimizers.head.length + optimizers.base.size > 0) fail('optimizer tensors without optimizer state');
  const finder = h.learningRateFinder === undefined || h.learningRateFinder === null ? null : obj(h.learningRateFinder);
  if (finder) {
    const curveOk = Array.isArray(finder.curve) && (finder.curve as unknown[]).every((p) => !!p && typeof p === 'object' && num((p as { lr?: unknown }).lr) && num((p as { loss?: unknown }).loss));
    if (!num(finder.suggested) || !num(finder.chosen) || !curveOk) fail('bad learning-rate finder result');
  }

  return {
    run: run as unknown as RunDescription,
    epoch: h.epoch as number,
    stage: h.stage as number,
    stageEpoch: h.stageEpoch as number,
    stageDone: h.stageDone as boolean,
    stoppedEarly: h.stoppedEarly as boolean,
    earlyStopping: { best: es.best as number | null, wait: es.wait as number },
    random: { shuffle: random.shuffle as number, augment: random.augment as number, dropout: random.dropout as number },
    everTrained: h.everTrained as string[],
    best: best && { epoch: best.epoch as number, acc: best.acc as number, loss: best.loss as number },
    history,
    head: groups.head,
    trained: groups.trained,
    bestWeights: groups.best,
    optimizers: opt ? { head: optimizers.head, base: optimizers.base } : null,
    learningRateFinder: finder as LearningRateFinderResult | null,
  };
}

function listFor(m: Map<string, TensorData[]>, key: string): TensorData[] {
  let list = m.get(key);
  if (!list) m.set(key, (list = []));
  return list;
}
