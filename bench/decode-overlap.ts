// Decoding overlapped with the frozen forward pass (apps/worker/src/training/frozen-overlap.ts)
// against decoding first, on first runs of a `feature_extraction` job (embedding cache cold: each
// job gets a dataset of its own).
//
//   node --conditions=development --import tsx bench/decode-overlap.ts [perDigit=60] [pairs=3]
//
// Runs through the real API and worker (bench/stack.ts). Each pair runs one job with
// TRAINING_DECODE_OVERLAP=off and one with it on, back to back on a fresh worker each, the order
// alternating between pairs; the figures are medians (min–max) of the job's POST → succeeded
// time and of its decode and frozenForward phases.
import { loadavg } from 'node:os';
import { execFileSync } from 'node:child_process';
import { mnistFolderZip } from '../test/support/mnist-fixtures.ts';
import { Stack } from './stack.ts';
import { fmt, summarize } from './stats.ts';

const perDigit = Number(process.argv[2] ?? 60);
const pairs = Number(process.argv[3] ?? 3);
const DIGITS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
const HYPER = { epochs: 10, batchSize: 32, seed: 7 };
const n = perDigit * DIGITS.length;

const uptime = () => execFileSync('uptime', { encoding: 'utf8' }).trim();
const stack = await Stack.start();
const zip = await mnistFolderZip(DIGITS, perDigit);
type Side = 'off' | 'on';
const figures: Record<Side, { total: number[]; decode: number[]; forward: number[]; both: number[] }> = {
  off: { total: [], decode: [], forward: [], both: [] },
  on: { total: [], decode: [], forward: [], both: [] },
};
try {
  console.log(`start: ${uptime()}`);
  let serial = 0;
  for (let pair = 0; pair < pairs; pair++) {
    const order: Side[] = pair % 2 === 0 ? ['off', 'on'] : ['on', 'off'];
    for (const side of order) {
      await stack.startWorker({ TRAINING_DECODE_OVERLAP: side });
      // The same archive each time, as a new dataset: its embedding cache is cold.
      const datasetId = await stack.uploadDataset(zip, `overlap-${process.pid}-${++serial}`);
      const { job, ms } = await stack.runJob({ datasetId, baseModel: 'mobilenet_v2', strategy: 'feature_extraction', hyperparameters: HYPER });
      const t = (job.timings ?? {}) as Record<string, number>;
      const decode = t.decode ?? NaN;
      const forward = t.frozenForward ?? NaN;
      figures[side].total.push(ms);
      figures[side].decode.push(decode);
      figures[side].forward.push(forward);
      figures[side].both.push(decode + forward);
      console.log(
        `pair ${pair + 1} overlap ${side}: job ${(ms / 1000).toFixed(2)} s; decode ${(decode / 1000).toFixed(2)} s + frozenForward ${(forward / 1000).toFixed(2)} s = ${((decode + forward) / 1000).toFixed(2)} s; load ${loadavg()[0]!.toFixed(1)}; timings ${JSON.stringify(t)}`,
      );
    }
  }
  console.log(`end: ${uptime()}`);
  const s = (xs: number[]) => fmt(summarize(xs.map((x) => x / 1000)), ' s', 2);
  console.log(`\n${n}-image feature_extraction job, first run (cache cold), ${pairs} pairs:`);
  console.log('| overlap | POST → succeeded | decode | frozenForward | decode + frozenForward |');
  console.log('|---|---|---|---|---|');
  for (const side of ['off', 'on'] as const) {
    const f = figures[side];
    console.log(`| ${side} | ${s(f.total)} | ${s(f.decode)} | ${s(f.forward)} | ${s(f.both)} |`);
  }
} finally {
  await stack.close();
}
