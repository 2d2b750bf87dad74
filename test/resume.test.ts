import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Queue } from 'bullmq';
import { createWorkerConnection, TRAINING_QUEUE } from '@finetune/queue';
import { buildTestApp, maxAbsDiff, modelWeights, waitFor, type TestApp } from './support/app.ts';
import { mnistFolderZip } from './support/mnist-fixtures.ts';
import { killGroup, resumeSensitiveSpec, spawnWorker, type SpawnedProcess } from './support/processes.ts';

// Resume, not restart. Real worker processes are killed for real: `kill -9` of a worker's whole
// process group (the worker and its training child) mid-epoch, and SIGTERM (a deploy). Either
// way the job continues from its last committed epoch on another worker process, and ends with
// the very weights an uninterrupted run of the same spec produces, with one metrics row per epoch.

const LOCK_MS = 2_000;
const EPOCHS = 6;
const env = {
  QUEUE_PREFIX: `${process.env.QUEUE_PREFIX}-resume-${randomBytes(4).toString('hex')}`,
  WORKER_LOCK_DURATION_MS: String(LOCK_MS),
  RECONCILE_INTERVAL_MS: '2000',
  ML_BACKEND: 'wasm',
  // A checkpoint after every epoch, so that a kill after epoch 2 resumes from a checkpoint
  // (test/checkpoint-cadence.test.ts covers kills between checkpoints of the default cadence).
  CHECKPOINT_INTERVAL_SECONDS: '0',
};

let t: TestApp;
let datasetId: string;
const workers: SpawnedProcess[] = [];
let referenceWeights: Float32Array;

const spec = () => resumeSensitiveSpec(datasetId, EPOCHS);

function worker(): SpawnedProcess {
  const w = spawnWorker(env);
  workers.push(w);
  return w;
}

async function createJob(): Promise<string> {
  const res = await t.http.post('/v1/jobs').send(spec()).expect(202);
  return res.body.id;
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

async function metrics(id: string): Promise<Array<{ epoch: number; trainLoss: number; valLoss: number }>> {
  return (await t.http.get(`/v1/jobs/${id}/metrics`).expect(200)).body.items;
}

/** Waits until `epoch` epochs are committed and the job is still training. */
async function committed(id: string, epoch: number) {
  return waitFor(`job ${id} to commit epoch ${epoch}`, async () => {
    const rows = await metrics(id);
    if (rows.length >= epoch) return rows;
    const body = await job(id);
    if (body.status !== 'running' && body.status !== 'queued') throw new Error(`job ended early: ${JSON.stringify(body)}`);
    return undefined;
  }, 240_000);
}

beforeAll(async () => {
  t = await buildTestApp(env);
  const zip = await mnistFolderZip([3, 8], 60);
  datasetId = (await t.http.post('/v1/datasets').attach('file', zip, 'd.zip').expect(201)).body.id;

  // The reference: the same spec, never interrupted.
  const w = worker();
  const id = await createJob();
  const done = await finished(id);
  expect(done.status).toBe('succeeded');
  expect(done.runs).toBe(1);
  referenceWeights = await modelWeights(t, done.modelId);
  await killGroup(w, 'SIGTERM');
}, 400_000);

// A test that failed half-way must not leave a worker behind to take the next test's job.
afterEach(async () => {
  for (const w of workers.splice(0)) await w.stop();
});

afterAll(async () => {
  for (const w of workers) await w.stop();
  await t?.close();
});

describe('resume after a crash or a shutdown', () => {
  it('kill -9 of the worker tree mid-epoch: another worker resumes, same weights, one metrics row per epoch', { timeout: 400_000 }, async () => {
    const first = worker();
    const id = await createJob();
    const before = await committed(id, 2);
    await killGroup(first, 'SIGKILL');
    const crashed = await job(id);
    expect(crashed.status).toBe('running'); // nobody has noticed yet
    const committedBeforeCrash = await metrics(id);

    const second = worker();
    const done = await finished(id);
    expect(done.error).toBeNull();
    expect(done.status).toBe('succeeded');
    expect(done.stopReason).toBe('completed');
    expect(done.runs).toBe(2);
    expect(second.output()).toContain('resuming from checkpoint');

    const rows = await metrics(id);
    expect(rows.map((r) => r.epoch)).toEqual([1, 2, 3, 4, 5, 6]);
    // Epochs committed before the crash were not trained again nor rewritten.
    expect(rows.slice(0, committedBeforeCrash.length)).toEqual(committedBeforeCrash);
    expect(committedBeforeCrash.length).toBeGreaterThanOrEqual(before.length);
    expect(committedBeforeCrash.length).toBeLessThan(EPOCHS);

    expect(maxAbsDiff(await modelWeights(t, done.modelId), referenceWeights)).toBeLessThan(1e-5);
    await killGroup(second, 'SIGTERM');
  });

  it('SIGTERM: the run stops at a batch boundary, the job goes back to the queue without a failed attempt, and resumes elsewhere', { timeout: 400_000 }, async () => {
    const first = worker();
    const id = await createJob();
    await committed(id, 1);
    await killGroup(first, 'SIGTERM');
    expect(await first.exited).toBe(0);
    expect(first.output()).toContain('handed back to the queue');

    const handedBack = await job(id);
    expect(handedBack).toMatchObject({ status: 'queued', attempts: 1, runs: 1, error: null });
    const queue = new Queue(TRAINING_QUEUE, { connection: createWorkerConnection(t.config.redisUrl), prefix: env.QUEUE_PREFIX });
    try {
      const entry = await queue.getJob(id);
      expect(await entry!.getState()).toBe('waiting');
      expect(entry!.attemptsMade).toBe(0);
    } finally {
      await queue.close();
      await queue.disconnect();
    }

    const second = worker();
    const done = await finished(id);
    expect(done).toMatchObject({ status: 'succeeded', attempts: 1, runs: 2, error: null });
    expect((await metrics(id)).map((r) => r.epoch)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(maxAbsDiff(await modelWeights(t, done.modelId), referenceWeights)).toBeLessThan(1e-5);
    await killGroup(second, 'SIGTERM');
  });

  it('canceling a job that waits to resume keeps its best epoch as a model', { timeout: 400_000 }, async () => {
    const first = worker();
    const id = await createJob();
    await committed(id, 2);
    await killGroup(first, 'SIGTERM');
    expect((await job(id)).status).toBe('queued');

    const canceled = await t.http.post(`/v1/jobs/${id}/cancel`).expect(202);
    expect(canceled.body).toMatchObject({ status: 'queued', cancelRequested: true });
    worker(); // resumes it only to stop and export
    const done = await finished(id);
    expect(done).toMatchObject({ status: 'canceled', stopReason: 'canceled', error: null });
    expect(done.modelId).toEqual(expect.any(String));
    const rows = await metrics(id);
    expect(rows.length).toBeGreaterThanOrEqual(2);
    const model = (await t.http.get(`/v1/models/${done.modelId}`).expect(200)).body;
    expect(model.metrics.bestEpoch).toBe(done.metrics.best.epoch);
    expect(model.metrics.bestEpoch).toBeLessThanOrEqual(rows.length);
  });
});
