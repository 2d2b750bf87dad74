import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { startWorker, type RunningWorker } from '@finetune/worker';
import { buildTestApp, maxAbsDiff, modelWeights, trainModel, waitFor, type TestApp } from './support/app.ts';
import { mnistFolderZip } from './support/mnist-fixtures.ts';

// A training child that ran a head-only job cleanly takes the next job instead of exiting (no
// process start-up on a cached rerun or a sweep's trials), up to TRAINING_CHILD_MAX_RUNS runs;
// any other run's child exits after it. The worker runs in this process, so its training
// children are this process's children: the pids below are theirs, not another test file's.

const MAX_RUNS = 3;

let t: TestApp;
let worker: RunningWorker;
let datasetId: string;

/** The pid of this process's idle training child, once there is exactly one and it is idle. */
function idleChild(): number | undefined {
  const children = pgrep(['-P', String(process.pid), '-f', 'training/child']);
  if (children.length !== 1) return undefined;
  // An idle child shows `--warm` in its arguments (or its title after a run); a running one its job.
  return pgrep(['-P', String(process.pid), '-f', 'training/child.* --warm'])[0];
}

function pgrep(args: string[]): number[] {
  try {
    return execFileSync('pgrep', args, { encoding: 'utf8' }).trim().split('\n').map(Number);
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
}

// A child that has exited but is not reaped yet (a zombie) has no command line: not matched.
const alive = (pid: number) => pgrep(['-P', String(process.pid), '-f', 'training/child']).includes(pid);

beforeAll(async () => {
  // The children read their configuration from the environment they are forked with.
  process.env.TRAINING_CHILD_MAX_RUNS = String(MAX_RUNS);
  t = await buildTestApp();
  worker = startWorker(t.config, pino({ level: 'warn' }));
  datasetId = (await t.http.post('/v1/datasets').attach('file', await mnistFolderZip([3, 7], 10), 'd.zip').expect(201)).body.id;
});

afterAll(async () => {
  await worker?.close();
  await t?.close();
  delete process.env.TRAINING_CHILD_MAX_RUNS;
});

const headOnly = () => ({ datasetId, baseModel: 'mobilenet_v2', strategy: 'feature_extraction', hyperparameters: { epochs: 3, batchSize: 4, seed: 5 } });

describe('training child reuse', () => {
  it('a head-only job’s child takes the next job, with the same results as a fresh one, up to TRAINING_CHILD_MAX_RUNS runs', { timeout: 240_000 }, async () => {
    const spec = headOnly();
    const first = await trainModel(t, spec);
    const reused = await waitFor('an idle child after the first job', async () => idleChild(), 30_000);

    const second = await trainModel(t, spec);
    expect(await waitFor('an idle child after the second job', async () => idleChild(), 30_000)).toBe(reused);
    // Nothing the first run left in the process changed the second: the same weights, bit for bit.
    expect(maxAbsDiff(await modelWeights(t, first.model.id), await modelWeights(t, second.model.id))).toBe(0);
    expect(second.model.metrics.accuracy).toBe(first.model.metrics.accuracy);

    // Its third run is its last (TRAINING_CHILD_MAX_RUNS=3): then it exits and a new child warms.
    await trainModel(t, spec);
    const next = await waitFor('a new idle child after the third job', async () => {
      const pid = idleChild();
      return pid !== undefined && pid !== reused ? pid : undefined;
    }, 60_000);
    expect(alive(reused)).toBe(false);
    expect(alive(next)).toBe(true);
  });

  it('the child of a job that trains base layers exits after it', { timeout: 240_000 }, async () => {
    await trainModel(t, headOnly());
    const before = await waitFor('an idle child after a head-only job', async () => idleChild(), 30_000);
    await trainModel(t, { ...headOnly(), baseModel: 'small_cnn', strategy: 'scratch', hyperparameters: { epochs: 2, batchSize: 4 } });
    const after = await waitFor('an idle child other than the scratch job’s', async () => {
      const pid = idleChild();
      return pid !== undefined && pid !== before ? pid : undefined;
    }, 60_000);
    expect(alive(before)).toBe(false);
    expect(after).not.toBe(before);
  });
});
