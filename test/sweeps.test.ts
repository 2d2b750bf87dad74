import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import supertest from 'supertest';
import { sampleTrial } from '@finetune/core';
import { startWorker, type RunningWorker } from '@finetune/worker';
import { buildTestApp, waitFor, type TestApp } from './support/app.ts';
import { mnistFolderZip } from './support/mnist-fixtures.ts';

// Hyperparameter sweeps on the real API and a real worker: trials are ordinary jobs (head-only
// MobileNetV2 trials on a few MNIST digits, sharing the embedding cache), started by the worker's
// sweep controller, ranked on a leaderboard; ASHA stops a weak trial; a cancel stops the trials.

let t: TestApp;
let worker: RunningWorker;
let datasetId: string;
const log = pino({ level: 'warn' });
// Two trials at once need two training slots; the controller looks often so ASHA acts promptly.
const startTestWorker = () => startWorker({ ...t.config, workerConcurrency: 2 }, log);

beforeAll(async () => {
  t = await buildTestApp({ QUEUE_PREFIX: `${process.env.QUEUE_PREFIX}-sweeps-${randomBytes(4).toString('hex')}`, SWEEP_CONTROLLER_INTERVAL_MS: '200' });
  worker = startTestWorker();
  const zip = await mnistFolderZip([0, 1, 2], 12);
  datasetId = (await t.http.post('/v1/datasets').attach('file', zip, 'digits.zip').expect(201)).body.id;
});

afterAll(async () => {
  // Nothing of this file's may keep running into the next file's worker.
  const open = await t?.http.get('/v1/sweeps?limit=100');
  for (const sweep of open?.body.items ?? []) {
    if (['queued', 'running'].includes(sweep.status)) await t.http.post(`/v1/sweeps/${sweep.id}/cancel`);
  }
  await worker?.close();
  await t?.close();
});

const headOnly = (hyperparameters: Record<string, unknown>) => ({
  datasetId,
  baseModel: 'mobilenet_v2',
  strategy: 'feature_extraction',
  hyperparameters: { batchSize: 16, validationSplit: 0.25, seed: 5, ...hyperparameters },
});

async function getSweep(id: string) {
  return (await t.http.get(`/v1/sweeps/${id}`).expect(200)).body;
}

const finished = (status: string) => ['succeeded', 'failed', 'canceled'].includes(status);

async function untilSweep(id: string, what: string, check: (sweep: Record<string, any>) => boolean, timeoutMs = 150_000) {
  return waitFor(`sweep ${id}: ${what}`, async () => {
    const sweep = await getSweep(id);
    return check(sweep) ? sweep : undefined;
  }, timeoutMs);
}

async function trialsOf(sweepId: string): Promise<Record<string, any>[]> {
  return (await t.http.get(`/v1/jobs?sweepId=${sweepId}&order=asc&limit=100`).expect(200)).body.items;
}

describe('a random sweep', () => {
  it('runs every trial as a job, at most maxConcurrentTrials at once, survives a worker restart, and ranks them', { timeout: 200_000 }, async () => {
    const space = { learningRate: { min: 1e-3, max: 3e-2, log: true }, 'head.dropout': { min: 0, max: 0.3 } };
    const created = await t.http
      .post('/v1/sweeps')
      .send({ ...headOnly({ epochs: 4 }), space, maxTrials: 4, maxConcurrentTrials: 2, metric: 'val_accuracy', seed: 11 })
      .expect(202);
    const id = created.body.id;
    expect(created.headers.location).toBe(`/v1/sweeps/${id}`);
    expect(created.body).toMatchObject({ status: 'queued', searcher: 'random', maxTrials: 4, maxConcurrentTrials: 2, modelId: null, bestTrial: null });

    // The controller's state is in Postgres: a worker stopped mid-sweep hands its trials back, and
    // a new worker process carries on with them and with the sweep.
    await untilSweep(id, 'a trial finished', (s) => s.counts.succeeded > 0, 90_000);
    await worker.close();
    worker = startTestWorker();

    const sweep = await untilSweep(id, 'finished', (s) => finished(s.status));
    expect(sweep.error).toBeNull();
    expect(sweep.status).toBe('succeeded');
    expect(sweep.counts).toMatchObject({ created: 4, queued: 0, running: 0, succeeded: 4, failed: 0, canceled: 0, stoppedByAsha: 0 });

    // Trials are ordinary jobs of the sweep, with the sampled values the seed gives.
    const jobs = await trialsOf(id);
    expect(jobs.map((j) => j.trialNumber).sort()).toEqual([0, 1, 2, 3]);
    for (const job of jobs) {
      expect(job.sweepId).toBe(id);
      const params = sampleTrial(space, 11, job.trialNumber);
      expect(job.spec.hyperparameters.learningRate).toBe(params.learningRate);
      expect(job.spec.hyperparameters.head.dropout).toBe(params['head.dropout']);
      expect(job.spec.hyperparameters.epochs).toBe(4);
    }
    // Never more than two at once: a trial is created only while fewer than two are unfinished.
    for (const job of jobs) {
      const overlapping = jobs.filter((o) => o.createdAt <= job.createdAt && o.finishedAt > job.createdAt);
      expect(overlapping.length).toBeLessThanOrEqual(2);
    }
    // Trials started after the first ones finished read the embeddings those computed.
    const later = jobs.filter((j) => j.trialNumber >= 2);
    for (const job of later) expect(job.embeddingCache).toBe('reused');

    // The leaderboard: every trial, best val_accuracy first; the best trial's model is the sweep's.
    const board = sweep.leaderboard as Record<string, any>[];
    expect(board).toHaveLength(4);
    for (let i = 1; i < board.length; i++) expect(board[i - 1]!.metric).toBeGreaterThanOrEqual(board[i]!.metric);
    for (const entry of board) {
      const job = jobs.find((j) => j.id === entry.jobId)!;
      expect(entry.params).toEqual({ learningRate: job.spec.hyperparameters.learningRate, 'head.dropout': job.spec.hyperparameters.head.dropout });
      const { metrics } = (await t.http.get(`/v1/jobs/${job.id}`).expect(200)).body;
      expect(entry.metric).toBe(metrics.best.valAccuracy);
      expect(entry).toMatchObject({ status: 'succeeded', epochsRun: 4, epochs: 4, stoppedByAsha: false, modelId: job.modelId });
    }
    expect(sweep.bestTrial).toEqual(board[0]);
    expect(sweep.modelId).toBe(board[0]!.modelId);
    const model = await t.http.get(`/v1/models/${sweep.modelId}`).expect(200);
    expect(model.body.jobId).toBe(board[0]!.jobId);

    const list = await t.http.get('/v1/sweeps?status=succeeded').expect(200);
    const listed = list.body.items.find((s: { id: string }) => s.id === id);
    expect(listed).toMatchObject({ id, modelId: sweep.modelId, counts: sweep.counts });
    expect(listed.leaderboard).toBeUndefined();
  });
});

describe('ASHA', () => {
  it('stops a trial that ranks out at a rung; it ends canceled with its best epoch as its model', { timeout: 200_000 }, async () => {
    const rates = [0.02, 1e-7];
    const space = { learningRate: { choices: rates } };
    // A seed whose first trial is the good rate and second the absurdly small one: trials run one
    // at a time, so the weak one reaches rung 1 (epoch 1) after the good one was recorded there.
    const seed = [...Array(200).keys()].find((s) => sampleTrial(space, s, 0).learningRate === rates[0] && sampleTrial(space, s, 1).learningRate === rates[1])!;
    const created = await t.http
      .post('/v1/sweeps')
      .send({
        // Many epochs: a head epoch on this data takes milliseconds, and the controller must get
        // to stop the weak trial (it polls every 200 ms here) before it has run them all.
        ...headOnly({ epochs: 500 }),
        space,
        searcher: 'asha',
        asha: { minEpochs: 1, reductionFactor: 3 },
        metric: 'val_loss',
        maxTrials: 2,
        maxConcurrentTrials: 1,
        seed,
      })
      .expect(202);
    const sweep = await untilSweep(created.body.id, 'finished', (s) => finished(s.status));
    expect(sweep.status).toBe('succeeded');
    const [good, weak] = [...sweep.leaderboard].sort((a: any, b: any) => a.trialNumber - b.trialNumber);
    expect(good).toMatchObject({ params: { learningRate: rates[0] }, status: 'succeeded', epochsRun: 500, stoppedByAsha: false });
    expect(weak).toMatchObject({ params: { learningRate: rates[1] }, status: 'canceled', stoppedByAsha: true });
    // Stopped soon after rung 1, long before its 500 epochs; it kept a model of its best epoch.
    expect(weak.epochsRun).toBeGreaterThanOrEqual(1);
    expect(weak.epochsRun).toBeLessThan(500);
    expect(weak.modelId).not.toBeNull();
    expect(weak.metric).toBeGreaterThan(good.metric);
    const job = (await t.http.get(`/v1/jobs/${weak.jobId}`).expect(200)).body;
    expect(job).toMatchObject({ status: 'canceled', stopReason: 'asha_stopped', sweepId: sweep.id, trialNumber: 1 });
    expect(sweep.counts).toMatchObject({ succeeded: 1, canceled: 1, stoppedByAsha: 1 });
    // The stopped trial is not the best: the good one is, and its model is the sweep's.
    expect(sweep.bestTrial.jobId).toBe(good.jobId);
    expect(sweep.modelId).toBe(good.modelId);
  });
});

describe('cancel and delete', () => {
  it('cancels the unfinished trials and starts no more; a finished sweep is deleted with its trials', { timeout: 120_000 }, async () => {
    const created = await t.http
      .post('/v1/sweeps')
      .send({ ...headOnly({ epochs: 500 }), space: { learningRate: { min: 1e-3, max: 1e-2 } }, maxTrials: 5, maxConcurrentTrials: 1 })
      .expect(202);
    const id = created.body.id;
    await untilSweep(id, 'a trial running', (s) => s.counts.running > 0, 60_000);
    expect((await t.http.delete(`/v1/sweeps/${id}`)).body.code).toBe('sweep_not_finished');

    const canceled = await t.http.post(`/v1/sweeps/${id}/cancel`).expect(202);
    expect(canceled.body.status).toBe('canceled');
    expect(canceled.body.finishedAt).not.toBeNull();
    const again = await t.http.post(`/v1/sweeps/${id}/cancel`).expect(409);
    expect(again.body.code).toBe('sweep_not_cancelable');

    const jobs = await waitFor('the trial to stop', async () => {
      const trials = await trialsOf(id);
      return trials.every((j) => finished(j.status)) ? trials : undefined;
    }, 60_000);
    expect(jobs).toHaveLength(1);
    expect(jobs[0]).toMatchObject({ status: 'canceled', stopReason: 'canceled', cancelRequested: true });
    // Several controller passes later, still no new trial.
    await new Promise((r) => setTimeout(r, 1_000));
    expect(await trialsOf(id)).toHaveLength(1);
    expect((await getSweep(id)).counts.created).toBe(1);

    await t.http.delete(`/v1/sweeps/${id}`).expect(204);
    await t.http.get(`/v1/sweeps/${id}`).expect(404);
    await t.http.get(`/v1/jobs/${jobs[0]!.id}`).expect(404);
  });
});

describe('bad sweeps', () => {
  it.each([
    ['an unknown hyperparameter', { space: { learningRat: { min: 0.1, max: 0.2 } } }, 'space.learningRat'],
    ['a bound above the schema', { space: { learningRate: { min: 0.1, max: 20 } } }, 'space.learningRate.max'],
    ['min above max', { space: { 'head.dropout': { min: 0.5, max: 0.1 } } }, 'space.head.dropout.min'],
    ['a log range from 0', { space: { learningRate: { min: 0, max: 0.1, log: true } } }, 'space.learningRate.min'],
    ['a fractional integer bound', { space: { epochs: { min: 1.5, max: 3 } } }, 'space.epochs.min'],
    ['a range over a string', { space: { optimizer: { min: 0, max: 1 } } }, 'space.optimizer'],
    ['an invalid choice', { space: { optimizer: { choices: ['adam', 'sgdx'] } } }, 'space.optimizer.choices[1]'],
    ['an impossible combination', { space: { warmupEpochs: { min: 0, max: 6 } }, hyperparameters: { epochs: 4 } }, 'space.warmupEpochs'],
  ])('%s → 422 invalid_space naming the path, nothing created', async (_name, over, path) => {
    const before = await t.deps.db.sweep.count();
    const res = await t.http.post('/v1/sweeps').send({ ...headOnly({}), ...over }).expect(422);
    expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
    expect(res.body.code).toBe('invalid_space');
    expect(res.body.path).toBe(path);
    expect(res.body.detail).toContain(path);
    expect(await t.deps.db.sweep.count()).toBe(before);
  });

  it('refuses malformed requests (400) and what a job would be refused for (422)', async () => {
    const base = { ...headOnly({}), space: { learningRate: { min: 1e-3, max: 1e-2 } } };
    for (const body of [
      { ...base, space: {} },
      { ...base, maxTrials: 0 },
      { ...base, searcher: 'grid' },
      { ...base, space: { learningRate: { min: 1e-3 } } },
      { ...base, space: { learningRate: [0.1, 0.2] } },
      { ...base, unknown: true },
    ]) {
      expect((await t.http.post('/v1/sweeps').send(body)).status).toBe(400);
    }
    expect((await t.http.post('/v1/sweeps').send({ ...base, datasetId: randomUUID() }).expect(422)).body.code).toBe('unknown_dataset');
    expect((await t.http.post('/v1/sweeps').send({ ...base, baseModel: 'nope' }).expect(422)).body.code).toBe('unknown_base_model');
    await t.http.get(`/v1/sweeps/${randomUUID()}`).expect(404);
    await t.http.post(`/v1/sweeps/${randomUUID()}/cancel`).expect(404);
  });
});

describe('tenants', () => {
  it("another tenant's sweep and its trials are invisible", async () => {
    const tenant = await t.http.post('/v1/tenants').send({ name: `sweeps-${randomBytes(3).toString('hex')}` }).expect(201);
    const key = (await t.http.post(`/v1/tenants/${tenant.body.id}/api-keys`).send({}).expect(201)).body.key;
    const other = supertest.agent(t.app.server).set({ authorization: `Bearer ${key}` });
    const mine = (await t.http.get('/v1/sweeps?limit=100').expect(200)).body.items;
    expect(mine.length).toBeGreaterThan(0);
    const id = mine[0].id;
    await other.get(`/v1/sweeps/${id}`).expect(404);
    await other.post(`/v1/sweeps/${id}/cancel`).expect(404);
    await other.delete(`/v1/sweeps/${id}`).expect(404);
    expect((await other.get('/v1/sweeps').expect(200)).body.items).toEqual([]);
    expect((await other.get(`/v1/jobs?sweepId=${id}`).expect(200)).body.items).toEqual([]);
    // Nor can it sweep over this tenant's dataset.
    const res = await other.post('/v1/sweeps').send({ ...headOnly({}), space: { learningRate: { min: 1e-3, max: 1e-2 } } }).expect(422);
    expect(res.body.code).toBe('unknown_dataset');
  });
});
