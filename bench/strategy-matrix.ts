// Every training strategy on each zoo base at batch sizes 32 and 64, end to end through the
// service on this machine's backend (wasm here): POST a job, wait for it, record what happened.
// It answers "does an ordinary spec ever fail?" rather than "how fast?": each job trains one
// epoch on exactly one batch of images, so the step runs at the requested batch size (with
// micro-batching where the backend's memory needs it).
//
//   node --conditions=development --import tsx bench/strategy-matrix.ts [--bases mobilenet_v2,inception_v3] [--batches 32,64] [--cases full,scratch,…]
//
// Prints one markdown table and writes it to bench/results/strategy-matrix.md. Slow: a full
// InceptionV3 step at batch 64 on one wasm core takes minutes.
import { mkdir, writeFile } from 'node:fs/promises';
import { loadavg } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { mnistFolderZip } from '../test/support/mnist-fixtures.ts';
import { Stack, type JobView } from './stack.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const list = (flag: string, fallback: string) => (argv.includes(flag) ? argv[argv.indexOf(flag) + 1]! : fallback).split(',');
const BASES = list('--bases', 'mobilenet_v2,inception_v3');
const BATCHES = list('--batches', '32,64').map(Number);
const ONLY_CASES = argv.includes('--cases') ? new Set(list('--cases', '')) : null;
const CASES: Array<{ name: string; spec: Record<string, unknown> }> = [
  { name: 'full', spec: { strategy: 'full' } },
  { name: 'scratch', spec: { strategy: 'scratch' } },
  { name: 'fine_tune', spec: { strategy: 'fine_tune' } },
  // Its default stages with one epoch each (3 epochs: head, top ~10 %, top ~35 %), so every stage
  // boundary is crossed; each epoch is still one step.
  { name: 'progressive_unfreezing', spec: { strategy: 'progressive_unfreezing', hyperparameters: { epochs: 3 } } },
  { name: 'feature_extraction + compareWithScratch', spec: { strategy: 'feature_extraction', compareWithScratch: true } },
];

interface Result {
  base: string;
  batch: number;
  strategy: string;
  status: string;
  microBatchSize: number | null;
  seconds: number;
  note: string;
}

const log = (message: string) => console.log(`[matrix ${new Date().toISOString().slice(11, 19)} load ${loadavg()[0]!.toFixed(1)}] ${message}`);

async function main() {
  const stack = await Stack.start();
  const results: Result[] = [];
  try {
    for (const batch of BATCHES) {
      // Two digits, batch/2 + 4 images each; validationSplit leaves `batch` to train on: one step per epoch.
      const datasetId = await stack.uploadDataset(await mnistFolderZip([3, 7], batch / 2 + 4), `matrix-${batch}`);
      for (const base of BASES) {
        for (const c of CASES.filter((k) => !ONLY_CASES || ONLY_CASES.has(k.name))) {
          const spec = {
            datasetId,
            baseModel: base,
            ...c.spec,
            hyperparameters: { epochs: 1, batchSize: batch, seed: 1, validationSplit: 8 / (batch + 8), ...((c.spec.hyperparameters as object) ?? {}) },
          };
          const started = performance.now();
          let result: Result;
          try {
            const { job } = await stack.runJob(spec, 3 * 3_600_000);
            const view = job as JobView & { microBatchSize?: number | null };
            result = { base, batch, strategy: c.name, status: job.status, microBatchSize: view.microBatchSize ?? null, seconds: (performance.now() - started) / 1000, note: '' };
          } catch (error) {
            result = { base, batch, strategy: c.name, status: 'failed', microBatchSize: null, seconds: (performance.now() - started) / 1000, note: (error as Error).message.slice(0, 200) };
          }
          results.push(result);
          log(`${base} batch ${batch} ${c.name}: ${result.status}, micro-batch ${result.microBatchSize ?? '—'}, ${result.seconds.toFixed(0)} s ${result.note}`);
        }
      }
    }
  } finally {
    await stack.close();
  }
  const table = [
    '| base | batchSize | strategy | status | micro-batch | POST → done |',
    '|---|---|---|---|---|---|',
    ...results.map((r) => `| ${r.base} | ${r.batch} | ${r.strategy} | ${r.status}${r.note ? ` (${r.note})` : ''} | ${r.microBatchSize ?? '—'} | ${r.seconds.toFixed(0)} s |`),
  ].join('\n');
  const out = `# bench/strategy-matrix.ts\n\n${new Date().toISOString()}, load average at the end ${loadavg().map((l) => l.toFixed(1)).join(' / ')}\n\n${table}\n`;
  console.log(`\n${out}`);
  await mkdir(path.join(HERE, 'results'), { recursive: true });
  await writeFile(path.join(HERE, 'results', 'strategy-matrix.md'), out);
  if (results.some((r) => r.status !== 'succeeded')) process.exitCode = 1;
}

await main();
