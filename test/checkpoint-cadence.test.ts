import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LeaseLostError } from '@finetune/db';
import type { EpochEvent } from '@finetune/ml';
import { keys } from '@finetune/storage';
import { JobCheckpoints } from '../apps/worker/src/training/checkpoints.ts';
import { buildTestApp, maxAbsDiff, modelWeights, waitFor, type TestApp } from './support/app.ts';
import { mnistFolderZip } from './support/mnist-fixtures.ts';
import { killGroup, resumeSensitiveSpec, spawnWorker, type SpawnedProcess } from './support/processes.ts';

// The checkpoint cadence (CHECKPOINT_INTERVAL_SECONDS): every epoch commits its metrics row, a
// checkpoint is written only once that much training has passed since the last one (and when the
// training ends), the best epoch's checkpoint is still kept, and a run killed between checkpoints
// resumes from the last one — forgetting and re-training the epochs after it — to the same model.
//
// First on the real S3 and Postgres with epochs whose durations are given (so which epochs get a
// checkpoint is known in advance), then with real worker processes killed for real.

const LOCK_MS = 2_000;
const EPOCHS = 6;
const env = {
  QUEUE_PREFIX: `${process.env.QUEUE_PREFIX}-cadence-${randomBytes(4).toString('hex')}`,
  WORKER_LOCK_DURATION_MS: String(LOCK_MS),
  RECONCILE_INTERVAL_MS: '2000',
  ML_BACKEND: 'wasm',
  // Longer than the whole job: the only checkpoints are the ones written when training ends.
  CHECKPOINT_INTERVAL_SECONDS: '3600',
};

let t: TestApp;
let datasetId: string;
const workers: SpawnedProcess[] = [];

beforeAll(async () => {
  t = await buildTestApp(env);
  const zip = await mnistFolderZip([3, 8], 60);
  datasetId = (await t.http.post('/v1/datasets').attach('file', zip, 'd.zip').expect(201)).body.id;
});

afterEach(async () => {
  for (const w of workers.splice(0)) await w.stop();
});

afterAll(async () => {
  for (const w of workers) await w.stop();
  await t?.close();
});

/** A running job claimed under a fresh lease. */
async function claimedJob(): Promise<{ id: string; lease: string }> {
  const { job } = await t.deps.jobs.create({ id: randomUUID(), tenantId: t.tenantId, datasetId, baseModel: 'small_cnn', strategy: 'scratch', spec: {}, epochs: 7 });
  const claim = await t.deps.jobs.claim(job.id, { attempt: 1 });
  return { id: job.id, lease: claim!.lease };
}

const stateOf = (epoch: number) => new TextEncoder().encode(`state after epoch ${epoch}`);

/** An epoch as the trainer reports it: `ms` of training, this validation accuracy. */
function epochEvent(epoch: number, ms: number, valAcc: number, isBest: boolean): EpochEvent {
  return {
    epoch,
    trainLoss: 1 / epoch,
    trainAcc: valAcc,
    valLoss: 1 - valAcc,
    valAcc,
    learningRate: 0.01,
    baseLearningRate: null,
    durationMs: ms,
    isBest,
    trainableLayers: [],
    checkpoint: async () => ({ modelJson: Buffer.from(`{"epoch":${epoch}}`), weights: Buffer.alloc(8 * epoch), cutLayer: 'input' }),
    state: async () => stateOf(epoch),
  };
}

// valAcc per epoch: epoch 2 stays the best.
const ACC = [0.5, 0.8, 0.7, 0.75, 0.6, 0.79, 0.78];

async function kept(jobId: string): Promise<number[]> {
  return (await t.deps.jobs.checkpoints(jobId)).map((c) => c.epoch);
}

async function objectEpochs(jobId: string): Promise<string[]> {
  const objects = await t.deps.store.list(keys.checkpointsPrefix(jobId));
  return objects.map((o) => o.key.slice(keys.checkpointsPrefix(jobId).length)).sort();
}

const files = (epoch: number, lease: string) => ['model.json', 'state.bin', 'weights.bin'].map((f) => `${epoch}-${lease.slice(0, 8)}/${f}`);

describe('the checkpoint cadence on S3 and Postgres', () => {
  it('commits every epoch, checkpoints every interval of training and at the end, and keeps the best epoch', async () => {
    const { id, lease } = await claimedJob();
    // 1 s of training between checkpoints, 0.4 s epochs: due after epochs 3 and 6.
    const checkpoints = new JobCheckpoints(t.deps.store, t.deps.jobs, id, lease, 1, 1);
    let best = -1;
    for (let e = 1; e <= 7; e++) {
      const acc = ACC[e - 1]!;
      await checkpoints.commitEpoch(epochEvent(e, 400, acc, acc > best), 400 * e);
      best = Math.max(best, acc);
      expect((await t.deps.jobs.metrics(id)).map((m) => m.epoch)).toEqual(Array.from({ length: e }, (_, i) => i + 1));
      // Epochs 1 and 2 wait; epoch 3 brings the best one (2) along; 6 replaces 3; 7 waits.
      expect(await kept(id)).toEqual(e < 3 ? [] : e < 6 ? [2, 3] : [2, 6]);
    }
    expect((await t.deps.jobs.get(id))!.epoch).toBe(7);

    await checkpoints.flush();
    expect(await kept(id)).toEqual([2, 7]);
    expect(await objectEpochs(id)).toEqual([...files(2, lease), ...files(7, lease)].sort());
    const rows = await t.deps.jobs.checkpoints(id);
    // A checkpoint written after its epoch carries that epoch's metrics and training time.
    expect(rows[0]).toMatchObject({ epoch: 2, valAcc: 0.8, trainLoss: 0.5, elapsedMs: 800 });
    expect(rows[1]).toMatchObject({ epoch: 7, valAcc: 0.78, elapsedMs: 2800 });
    await checkpoints.flush(); // nothing left to write
    expect(await kept(id)).toEqual([2, 7]);
  });

  it('a run killed between checkpoints resumes from the last one and forgets the epochs after it', async () => {
    const { id, lease } = await claimedJob();
    const first = new JobCheckpoints(t.deps.store, t.deps.jobs, id, lease, 1, 1);
    let best = -1;
    for (let e = 1; e <= 7; e++) {
      await first.commitEpoch(epochEvent(e, 400, ACC[e - 1]!, ACC[e - 1]! > best), 400 * e);
      best = Math.max(best, ACC[e - 1]!);
    }
    // The run dies here (epoch 7 committed, its checkpoint not written); the job is delivered again.
    const second = await t.deps.jobs.claim(id, { attempt: 2 });
    const resumed = new JobCheckpoints(t.deps.store, t.deps.jobs, id, second!.lease, 1, 1);
    const point = await resumed.resumePoint();
    expect(point).toMatchObject({ epoch: 6, elapsedMs: 2400 });
    expect(new TextDecoder().decode(point!.state)).toBe('state after epoch 6');
    expect((await t.deps.jobs.metrics(id)).map((m) => m.epoch)).toEqual([1, 2, 3, 4, 5, 6]);
    expect((await t.deps.jobs.get(id))!.epoch).toBe(6);
    expect(await kept(id)).toEqual([2, 6]);

    // The old run, still alive somewhere, can write nothing: its late checkpoint leaves no trace.
    await expect(first.flush()).rejects.toBeInstanceOf(LeaseLostError);
    expect(await kept(id)).toEqual([2, 6]);
    expect(await objectEpochs(id)).toEqual([...files(2, lease), ...files(6, lease)].sort());
  });

  it('an interval of 0 writes a checkpoint after every epoch', async () => {
    const { id, lease } = await claimedJob();
    const checkpoints = new JobCheckpoints(t.deps.store, t.deps.jobs, id, lease, 1, 0);
    await checkpoints.commitEpoch(epochEvent(1, 1, 0.5, true), 1);
    expect(await kept(id)).toEqual([1]);
    await checkpoints.commitEpoch(epochEvent(2, 1, 0.4, false), 2);
    expect(await kept(id)).toEqual([1, 2]);
    await checkpoints.commitEpoch(epochEvent(3, 1, 0.3, false), 3);
    expect(await kept(id)).toEqual([1, 3]);
    await checkpoints.flush();
    expect(await kept(id)).toEqual([1, 3]);
  });
});

// The same spec as test/resume.test.ts.
const spec = () => resumeSensitiveSpec(datasetId, EPOCHS);

function worker(): SpawnedProcess {
  const w = spawnWorker(env);
  workers.push(w);
  return w;
}

async function job(id: string) {
  return (await t.http.get(`/v1/jobs/${id}`).expect(200)).body;
}

async function finished(id: string) {
  return waitFor(`job ${id} to finish`, async () => {
    const body = await job(id);
    return ['succeeded', 'failed', 'canceled'].includes(body.status) ? body : undefined;
  }, 300_000);
}

async function metricEpochs(id: string): Promise<number[]> {
  return (await t.http.get(`/v1/jobs/${id}/metrics`).expect(200)).body.items.map((m: { epoch: number }) => m.epoch);
}

async function checkpointEpochs(id: string): Promise<number[]> {
  return (await t.http.get(`/v1/jobs/${id}/checkpoints`).expect(200)).body.items.map((c: { epoch: number }) => c.epoch);
}

describe('the cadence with real workers', () => {
  it('metrics for every epoch, checkpoints only for the best and the last, and kill -9 between checkpoints still ends with the uninterrupted model', { timeout: 600_000 }, async () => {
    // The reference, never interrupted.
    const w = worker();
    const referenceId = (await t.http.post('/v1/jobs').send(spec()).expect(202)).body.id;
    const reference = await finished(referenceId);
    expect(reference).toMatchObject({ status: 'succeeded', runs: 1, error: null });
    expect(await metricEpochs(referenceId)).toEqual([1, 2, 3, 4, 5, 6]);
    const best = reference.metrics.best.epoch;
    expect(await checkpointEpochs(referenceId)).toEqual([...new Set([best, EPOCHS])].sort((a, b) => a - b));
    const referenceWeights = await modelWeights(t, reference.modelId);
    await killGroup(w, 'SIGTERM');

    const first = worker();
    const id = (await t.http.post('/v1/jobs').send(spec()).expect(202)).body.id;
    await waitFor(`job ${id} to commit two epochs`, async () => ((await metricEpochs(id)).length >= 2 ? true : undefined), 240_000);
    await killGroup(first, 'SIGKILL');
    const committed = await metricEpochs(id);
    expect(committed.length).toBeLessThan(EPOCHS);
    // Metrics rows, but no checkpoint yet: the next run starts over.
    expect(await checkpointEpochs(id)).toEqual([]);

    const second = worker();
    const done = await finished(id);
    expect(done).toMatchObject({ status: 'succeeded', stopReason: 'completed', runs: 2, error: null });
    expect(second.output()).not.toContain('resuming from checkpoint');
    // The epochs of the killed run were forgotten and trained again: one row per epoch.
    expect(await metricEpochs(id)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(await checkpointEpochs(id)).toEqual([...new Set([done.metrics.best.epoch, EPOCHS])].sort((a, b) => a - b));
    expect(maxAbsDiff(await modelWeights(t, done.modelId), referenceWeights)).toBeLessThan(1e-5);
    await killGroup(second, 'SIGTERM');
  });
});
