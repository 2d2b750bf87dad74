// Every strategy with its default hyperparameters on small data: does any default fall below
// feature_extraction's? MobileNetV2 (ImageNet weights) on MNIST digits 0–4 from the `mnist`
// package, 10 training images per digit (indices 0–9), tested on 50 held-out images per digit
// (indices 800–849, never trained on), through the engine the worker runs (trainClassifier) on
// the wasm backend. Frozen features are shared between runs through an in-memory memo, as the
// worker's embedding cache shares them between jobs.
//
//   node --conditions=development --import tsx bench/strategies-small-data.ts [--quick] [--only a,b] [--variants]
//
// --only: a comma-separated subset of the rows (strategy names or variant names).
// --variants: also the new learning-rate options on top of the defaults (learningRate "auto",
//   one_cycle, layerLearningRateDecay).
// --quick: 3 digits, 5 images each, 10 test images each (a smoke run; figures not meaningful).
//
// Like the service's defaults except one thing: the whole 10 images per class train (no
// validation split; the engine then keeps the epoch with the best training accuracy), so every
// strategy sees the same images. Writes bench/results/strategies-small-data.md.
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { specProblems, withDefaults, type HyperparametersInput, type Strategy } from '../packages/core/src/index.ts';
import { decodeImageBytes, evaluateClassifier, initBackend, loadBaseModel, predictProbabilities, tf, trainClassifier } from '../packages/ml/src/index.ts';
import { digitPng } from '../test/support/mnist-fixtures.ts';

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const onlyAt = argv.indexOf('--only');
const only = onlyAt >= 0 ? new Set((argv[onlyAt + 1] ?? '').split(',')) : null;
const here = path.dirname(fileURLToPath(import.meta.url));

const DIGITS = quick ? [0, 1, 2] : [0, 1, 2, 3, 4];
const PER_CLASS = quick ? 5 : 10;
const TEST_FROM = 800;
const TEST_PER_CLASS = quick ? 10 : 50;
const BASE = 'mobilenet_v2';

interface Row {
  name: string;
  strategy: Strategy;
  hyperparameters: HyperparametersInput;
}

// validationSplit 0: all the images train (see the header); everything else is the default.
const defaults = (strategy: Strategy): Row => ({ name: strategy, strategy, hyperparameters: { validationSplit: 0 } });
const ROWS: Row[] = [
  defaults('feature_extraction'),
  defaults('prototype'),
  defaults('fine_tune'),
  defaults('progressive_unfreezing'),
  defaults('full'),
  defaults('scratch'),
];
const VARIANTS: Row[] = [
  { name: 'feature_extraction + auto', strategy: 'feature_extraction', hyperparameters: { validationSplit: 0, learningRate: 'auto' } },
  { name: 'fine_tune + auto + one_cycle', strategy: 'fine_tune', hyperparameters: { validationSplit: 0, learningRate: 'auto', lrSchedule: { type: 'one_cycle' } } },
  { name: 'progressive_unfreezing + auto + one_cycle', strategy: 'progressive_unfreezing', hyperparameters: { validationSplit: 0, learningRate: 'auto', lrSchedule: { type: 'one_cycle' } } },
  { name: 'fine_tune + layer decay 2.6', strategy: 'fine_tune', hyperparameters: { validationSplit: 0, layerLearningRateDecay: 2.6 } },
];
const rows = [...ROWS, ...(argv.includes('--variants') ? VARIANTS : [])].filter((r) => !only || only.has(r.name) || only.has(r.strategy));

const log = (msg: string): void => void process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${msg}\n`);

async function loadDigits(from: number, count: number, size: number) {
  const mnist = createRequire(import.meta.url)('mnist') as Record<number, { length: number }>;
  const images: Uint8Array[] = [];
  const labels: number[] = [];
  for (const [cls, digit] of DIGITS.entries()) {
    for (let i = from; i < Math.min(from + count, mnist[digit]!.length); i++) {
      images.push(await decodeImageBytes(await digitPng(digit, i), size));
      labels.push(cls);
    }
  }
  return { images, labels: Int32Array.from(labels) };
}

async function main(): Promise<void> {
  await initBackend('wasm');
  const base = await loadBaseModel(BASE);
  const size = base.info.inputSize;
  const train = await loadDigits(0, PER_CLASS, size);
  const test = await loadDigits(TEST_FROM, TEST_PER_CLASS, size);
  const labels = DIGITS.map(String);
  const memo = new Map<string, Float32Array>();
  const results: { row: Row; accuracy: number; epochs: number; best: number; lr: string; seconds: number }[] = [];
  for (const row of rows) {
    const spec = withDefaults({ datasetId: '00000000-0000-4000-8000-000000000000', baseModel: BASE, strategy: row.strategy, hyperparameters: row.hyperparameters });
    const problems = specProblems(spec);
    if (problems.length > 0) throw new Error(`${row.name}: the API would refuse this spec: ${problems.join('; ')}`);
    log(`${row.name}: training on ${train.labels.length} images`);
    const t0 = performance.now();
    const r = await trainClassifier({
      strategy: row.strategy,
      base,
      inputSize: size,
      train,
      val: null,
      labels,
      hyperparameters: spec.hyperparameters,
      frozenFeatures: async ({ cut, split }, compute) => {
        const key = `${cut}|${split}`;
        if (!memo.has(key)) memo.set(key, await compute());
        return memo.get(key)!;
      },
      onEpochEnd: async (e) => void log(`  epoch ${e.epoch}${e.stage ? ` (stage ${e.stage})` : ''}: loss ${e.trainLoss.toFixed(4)} acc ${e.trainAcc.toFixed(3)} lr ${e.learningRate.toExponential(2)}`),
    });
    const seconds = (performance.now() - t0) / 1000;
    const probabilities = await predictProbabilities(r.model, test.images, size);
    const ev = evaluateClassifier({ probabilities, targets: test.labels, labels, ids: test.images.map((_, i) => String(i)), topK: 1 });
    r.model.dispose();
    const lr = r.learningRateFinder ? `auto → ${r.learningRateFinder.chosen.toExponential(2)}` : String(spec.hyperparameters.learningRate);
    results.push({ row, accuracy: ev.accuracy, epochs: r.epochsRun, best: r.bestEpoch, lr, seconds });
    log(`${row.name}: test accuracy ${(100 * ev.accuracy).toFixed(1)}% (${seconds.toFixed(1)} s)`);
  }
  const reference = results.find((r) => r.row.name === 'feature_extraction')?.accuracy;
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const lines = [
    '# Strategies with their defaults on small data',
    '',
    `Generated by \`node --conditions=development --import tsx bench/strategies-small-data.ts${argv.length ? ` ${argv.join(' ')}` : ''}\` on ${new Date().toISOString().slice(0, 10)}: Node ${process.version}, tfjs ${tf.version.tfjs} ${tf.getBackend()} backend, ${os.cpus()[0]?.model ?? 'cpu'} × ${os.cpus().length}.`,
    `${BASE} (ImageNet weights) on MNIST digits ${DIGITS.join(', ')}: ${PER_CLASS} training images per digit, ${TEST_PER_CLASS} held-out test images per digit (indices ${TEST_FROM}–${TEST_FROM + TEST_PER_CLASS - 1}). Default hyperparameters except validationSplit 0 (all images train).`,
    '',
    '| strategy | learning rate | epochs (best) | test accuracy | vs feature_extraction | wall |',
    '| --- | --- | --- | --- | --- | --- |',
    ...results.map((r) => `| ${r.row.name} | ${r.lr} | ${r.epochs} (${r.best}) | **${pct(r.accuracy)}** | ${reference === undefined ? '—' : `${r.accuracy - reference >= 0 ? '+' : ''}${(100 * (r.accuracy - reference)).toFixed(1)} pts`} | ${r.seconds.toFixed(1)} s |`),
    '',
  ];
  const text = lines.join('\n');
  process.stdout.write(`${text}\n`);
  mkdirSync(path.join(here, 'results'), { recursive: true });
  writeFileSync(path.join(here, 'results', `strategies-small-data${quick ? '-quick' : ''}${only ? `-${[...only].join('-').replace(/[^a-z0-9_-]+/gi, '_')}` : ''}.md`), text);
}

await main();
