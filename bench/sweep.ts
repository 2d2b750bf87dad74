// A hyperparameter sweep against the default job spec, on the real service (API and worker in
// their own processes, bench/stack.ts): one `feature_extraction` job on MobileNetV2 with every
// default, then a 20-trial head-only sweep (random search, and with --asha an ASHA sweep too) on
// the same dataset. Reports each one's wall time (POST → finished, as a client sees it) and the
// accuracy of its model on held-out digits no run trains or selects on.
//
//   node --conditions=development --import tsx bench/sweep.ts            # random search
//   node --conditions=development --import tsx bench/sweep.ts --asha     # and an ASHA sweep
//   node --conditions=development --import tsx bench/sweep.ts --quick    # 4 trials, smoke run
//
// Writes the table to bench/results/sweep.md (sweep-quick.md with --quick).
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { digitPng, mnistFolderZip } from '../test/support/mnist-fixtures.ts';
import { Stack, type JobView } from './stack.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const QUICK = process.argv.includes('--quick');
const ASHA = process.argv.includes('--asha');
const DIGITS = [0, 1, 2, 3, 4];
const PER_DIGIT = 60; // training + validation images per digit
const HELD_OUT_OFFSET = 600; // held-out digits start here: never uploaded
const HELD_OUT_PER_DIGIT = 20;
const TRIALS = QUICK ? 4 : 20;

interface SweepView {
  id: string;
  status: string;
  modelId: string | null;
  counts: Record<string, number>;
  bestTrial: { trialNumber: number; params: Record<string, unknown>; metric: number | null } | null;
  leaderboard: { jobId: string; status: string; metric: number | null; stoppedByAsha: boolean; epochsRun: number }[];
  error: { code: string; message: string } | null;
}

async function heldOut(): Promise<{ b64: string; label: string }[]> {
  const images: { b64: string; label: string }[] = [];
  for (const digit of DIGITS) {
    for (let i = 0; i < HELD_OUT_PER_DIGIT; i++) images.push({ b64: (await digitPng(digit, HELD_OUT_OFFSET + i)).toString('base64'), label: String(digit) });
  }
  return images;
}

/** The model's accuracy on the held-out images, through POST /v1/models/:id/predict. */
async function accuracy(stack: Stack, modelId: string, images: { b64: string; label: string }[]): Promise<number> {
  let correct = 0;
  for (let i = 0; i < images.length; i += 32) {
    const batch = images.slice(i, i + 32);
    const res = await stack.request<{ predictions: { label: string }[] }>('POST', `/v1/models/${modelId}/predict`, { instances: batch.map(({ b64 }) => ({ b64 })) });
    res.predictions.forEach((p, j) => (correct += p.label === batch[j]!.label ? 1 : 0));
  }
  return correct / images.length;
}

async function runSweep(stack: Stack, body: Record<string, unknown>): Promise<{ sweep: SweepView; ms: number; trials: JobView[] }> {
  const started = performance.now();
  const created = await stack.request<SweepView>('POST', '/v1/sweeps', body);
  for (;;) {
    const sweep = await stack.request<SweepView>('GET', `/v1/sweeps/${created.id}`);
    if (['succeeded', 'failed', 'canceled'].includes(sweep.status)) {
      const ms = performance.now() - started;
      const trials = await Promise.all(sweep.leaderboard.map((entry) => stack.request<JobView>('GET', `/v1/jobs/${entry.jobId}`)));
      return { sweep, ms, trials };
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

const pct = (x: number) => `${(100 * x).toFixed(1)} %`;
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

async function main() {
  // Two training slots, so two trials run at once (maxConcurrentTrials 2).
  process.env.WORKER_CONCURRENCY ??= '2';
  const load = () => os.loadavg().map((l) => l.toFixed(1)).join(' ');
  const loadBefore = load();
  const stack = await Stack.start();
  try {
    const datasetId = await stack.uploadDataset(await mnistFolderZip(DIGITS, PER_DIGIT), 'bench-sweep');
    const images = await heldOut();
    const base = { datasetId, baseModel: 'mobilenet_v2', strategy: 'feature_extraction' };
    const rows: string[][] = [];

    const { job, ms } = await stack.runJob(base);
    rows.push(['one job, default spec (10 epochs, adam, lr 0.001)', secs(ms), pct(await accuracy(stack, job.modelId!, images)), `embeddings ${String(job.embeddingCache)}`]);
    console.log('[bench] default job', secs(ms));

    const space = {
      learningRate: { min: 1e-4, max: 1e-1, log: true },
      'head.dropout': { min: 0, max: 0.5 },
      batchSize: { choices: [16, 32, 64] },
      l2: { choices: [0, 1e-4, 1e-3] },
    };
    const searches: [string, Record<string, unknown>][] = [
      [`${TRIALS}-trial random sweep, 2 at a time (10 epochs each)`, { ...base, hyperparameters: { epochs: 10 }, space, maxTrials: TRIALS, maxConcurrentTrials: 2, seed: 1 }],
    ];
    if (ASHA) {
      searches.push([
        `${TRIALS}-trial ASHA sweep, 2 at a time (up to 27 epochs; rungs 3, 9; η 3)`,
        { ...base, hyperparameters: { epochs: 27 }, space, searcher: 'asha', asha: { minEpochs: 3, reductionFactor: 3 }, metric: 'val_loss', maxTrials: TRIALS, maxConcurrentTrials: 2, seed: 1 },
      ]);
    }
    for (const [name, body] of searches) {
      const { sweep, ms: sweepMs, trials } = await runSweep(stack, body);
      if (!sweep.modelId) throw new Error(`sweep ${sweep.id} ${sweep.status} without a model: ${JSON.stringify(sweep.error)}`);
      const reused = trials.filter((t) => t.embeddingCache === 'reused').length;
      const epochs = sweep.leaderboard.reduce((sum, e) => sum + e.epochsRun, 0);
      rows.push([
        name,
        secs(sweepMs),
        pct(await accuracy(stack, sweep.modelId, images)),
        `best trial ${sweep.bestTrial?.trialNumber} ${JSON.stringify(sweep.bestTrial?.params)}; ${sweep.counts.succeeded} succeeded, ${sweep.counts.stoppedByAsha} stopped by ASHA; ${epochs} epochs in all; embeddings reused by ${reused} of ${trials.length}; ${(sweepMs / ms).toFixed(1)}× the job's time`,
      ]);
      console.log('[bench]', name, secs(sweepMs));
    }

    const table = [
      `Sweep vs default spec — MobileNetV2 feature_extraction, digits ${DIGITS.join(',')} × ${PER_DIGIT} (validationSplit 0.2), accuracy on ${DIGITS.length * HELD_OUT_PER_DIGIT} held-out digits; load average before ${loadBefore}, after ${load()}`,
      '',
      '| run | wall time (POST → finished) | held-out accuracy | notes |',
      '|---|---|---|---|',
      ...rows.map((r) => `| ${r.join(' | ')} |`),
      '',
    ].join('\n');
    console.log(table);
    await mkdir(path.join(ROOT, 'bench/results'), { recursive: true });
    await writeFile(path.join(ROOT, 'bench/results', QUICK ? 'sweep-quick.md' : 'sweep.md'), table);
  } finally {
    await stack.close();
  }
}

await main();
