// Domain adaptation through the service: does `domain_adaptation` beat a model trained on the
// source domain alone, on held-out images of a shifted target domain?
//
// Source: MNIST digits as they come (white on black), labelled. Target: other MNIST digits under
// a shift (test/support/mnist-fixtures.ts shiftedDigitPng: colour_cast, mnist_m, inverted),
// uploaded without labels (kind=unlabelled). Test: yet other digits under the same shift,
// labelled, never trained on. Every row is a real job through the API and a worker on
// MobileNetV2 (ImageNet weights); the source-only model is `feature_extraction` with the same
// hyperparameters; accuracies are /predict's answers on the test images (for the adapted model
// they equal the `targetEvaluation` the job reports, which the bench checks).
//
//   node --conditions=development --import tsx bench/domain-adaptation.ts [--quick] [--shifts colour_cast,mnist_m,inverted] [--layers 3]
//
// --layers N: also a domain_adaptation row with hyperparameters.adaptationLayers N.
// --quick: 3 digits, 10 images each (a smoke run; figures not meaningful).
// Writes bench/results/domain-adaptation.md.
import { mkdir, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DIGIT_SHIFTS, digitPng, shiftedDigitPng, zipOf, type DigitShift } from '../test/support/mnist-fixtures.ts';
import { Stack } from './stack.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const arg = (name: string) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : undefined);
const quick = argv.includes('--quick');
const shifts = (arg('--shifts')?.split(',') ?? [...DIGIT_SHIFTS]) as DigitShift[];
const layers = arg('--layers') ? Number(arg('--layers')) : null;
const DIGITS = quick ? [0, 1, 2] : [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
const PER_CLASS = quick ? 10 : 50; // source (80 % train, 20 % validation) and unlabelled target each
const TEST_PER_CLASS = quick ? 10 : 30;
const HYPERPARAMETERS = { epochs: 20, batchSize: 32, seed: 7 };

const log = (msg: string) => process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${msg}\n`);

type Render = (digit: number, index: number) => Promise<Buffer>;
async function files(render: Render, folder: (digit: number) => string, count: number, offset: number): Promise<Record<string, Uint8Array>> {
  const out: Record<string, Uint8Array> = {};
  for (const d of DIGITS) for (let i = offset; i < offset + count; i++) out[`${folder(d)}${d}-${i}.png`] = await render(d, i);
  return out;
}

interface Row {
  shift: DigitShift;
  model: string;
  accuracy: number;
  seconds: number;
  adaptationSeconds: number | null;
}

async function main(): Promise<void> {
  const stack = await Stack.start();
  const rows: Row[] = [];
  const loads: number[] = [];
  try {
    const source = await stack.uploadDataset(zipOf(await files(digitPng, (d) => `${d}/`, PER_CLASS, 0)), 'da-source');
    for (const shift of shifts) {
      const render: Render = (d, i) => shiftedDigitPng(d, i, shift);
      const target = await stack.uploadDataset(zipOf(await files(render, () => 'target/', PER_CLASS, 100)), `da-target-${shift}`, 'unlabelled');
      const testFiles = await files(render, (d) => `${d}/`, TEST_PER_CLASS, 300);
      const targetTest = await stack.uploadDataset(zipOf(testFiles), `da-test-${shift}`);
      const test = Object.entries(testFiles).map(([p, png]) => ({ png: Buffer.from(png), label: p.split('/')[0]! }));

      const run = async (name: string, spec: Record<string, unknown>) => {
        loads.push(loadavg()[0]!);
        const { job, ms } = await stack.runJob({ datasetId: source, baseModel: 'mobilenet_v2', ...spec });
        const accuracy = await predictAccuracy(stack, job.modelId!, test);
        const model = await stack.request<{ targetEvaluation: { accuracy: number } | null }>('GET', `/v1/models/${job.modelId}`);
        if (model.targetEvaluation && Math.abs(model.targetEvaluation.accuracy - accuracy) > 1e-9) {
          throw new Error(`${name}: /predict scores ${accuracy} but the job reported ${model.targetEvaluation.accuracy}`);
        }
        rows.push({ shift, model: name, accuracy, seconds: ms / 1000, adaptationSeconds: job.timings?.adaptation ? job.timings.adaptation / 1000 : null });
        log(`${shift} ${name}: ${(accuracy * 100).toFixed(1)} % in ${(ms / 1000).toFixed(1)} s`);
      };
      const adapt = { strategy: 'domain_adaptation', targetDatasetId: target, targetTestDatasetId: targetTest };
      await run('feature_extraction (source only)', { hyperparameters: HYPERPARAMETERS });
      await run('domain_adaptation', { ...adapt, hyperparameters: HYPERPARAMETERS });
      if (layers !== null) await run(`domain_adaptation, adaptationLayers ${layers}`, { ...adapt, hyperparameters: { ...HYPERPARAMETERS, adaptationLayers: layers } });
    }
  } finally {
    await stack.close();
  }

  const lines = [
    `# Domain adaptation: accuracy on the shifted target domain`,
    '',
    `MobileNetV2 (ImageNet weights), ${DIGITS.length} digit classes; source ${PER_CLASS} labelled MNIST digits per class ` +
      `(80 % train, 20 % validation); target ${PER_CLASS} unlabelled shifted digits per class; test ${TEST_PER_CLASS} other shifted digits per class. ` +
      `Hyperparameters ${JSON.stringify(HYPERPARAMETERS)}. Load average ${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)} (2 cores).`,
    '',
    '| shift | model | target test accuracy | job wall time | of which adapting |',
    '|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.shift} | ${r.model} | ${(r.accuracy * 100).toFixed(1)} % | ${r.seconds.toFixed(1)} s | ${r.adaptationSeconds === null ? '—' : `${r.adaptationSeconds.toFixed(1)} s`} |`),
    '',
    `Command: \`node --conditions=development --import tsx bench/domain-adaptation.ts ${argv.join(' ')}\``.replace(/ `$/, '`'),
  ];
  const text = lines.join('\n');
  console.log(text);
  if (!quick) {
    await mkdir(path.join(HERE, 'results'), { recursive: true });
    await writeFile(path.join(HERE, 'results', 'domain-adaptation.md'), `${text}\n`);
  }
}

async function predictAccuracy(stack: Stack, modelId: string, images: { png: Buffer; label: string }[]): Promise<number> {
  let correct = 0;
  for (let i = 0; i < images.length; i += 32) {
    const part = images.slice(i, i + 32);
    const res = await stack.request<{ predictions: { label: string }[] }>('POST', `/v1/models/${modelId}/predict`, {
      instances: part.map((p) => ({ b64: p.png.toString('base64') })),
    });
    res.predictions.forEach((p, j) => (correct += p.label === part[j]!.label ? 1 : 0));
  }
  return correct / images.length;
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
