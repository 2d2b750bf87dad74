import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { startWorker, type RunningWorker } from '@finetune/worker';
import { buildTestApp, waitFor, type TestApp } from './support/app.ts';
import { digitPng, mnistFolderZip } from './support/mnist-fixtures.ts';

// Users' controls over a job: idempotent submission under concurrency, a runtime budget that
// keeps the best model, a cancel that keeps what was trained, and deletion that removes every
// object a job left behind.

let t: TestApp;
let worker: RunningWorker;
let datasetId: string;

beforeAll(async () => {
  t = await buildTestApp({ QUEUE_PREFIX: `${process.env.QUEUE_PREFIX}-controls-${randomBytes(4).toString('hex')}` });
  worker = startWorker(t.config, pino({ level: 'warn' }));
  const zip = await mnistFolderZip([0, 6], 40);
  datasetId = (await t.http.post('/v1/datasets').attach('file', zip, 'd.zip').expect(201)).body.id;
});

afterAll(async () => {
  await worker?.close();
  await t?.close();
});

// Augmentation keeps every epoch a real pass through the network: slow enough to act mid-job.
const slowSpec = (over: Record<string, unknown> = {}) => ({
  datasetId,
  baseModel: 'small_cnn',
  strategy: 'scratch',
  hyperparameters: { epochs: 300, batchSize: 8, augmentation: { rotationDegrees: 5 }, seed: 9 },
  ...over,
});

async function getJob(id: string) {
  return (await t.http.get(`/v1/jobs/${id}`).expect(200)).body;
}

async function until(id: string, what: string, check: (job: Record<string, any>) => boolean, timeoutMs = 240_000) {
  return waitFor(`job ${id}: ${what}`, async () => {
    const job = await getJob(id);
    return check(job) ? job : undefined;
  }, timeoutMs);
}

const finished = (job: Record<string, any>) => ['succeeded', 'failed', 'canceled'].includes(job.status);

async function predictsDigits(modelId: string): Promise<void> {
  const res = await t.http
    .post(`/v1/models/${modelId}/predict`)
    .send({ instances: [{ b64: (await digitPng(0, 700)).toString('base64') }, { b64: (await digitPng(6, 700)).toString('base64') }] })
    .expect(200);
  expect(res.body.predictions).toHaveLength(2);
  for (const p of res.body.predictions) {
    expect(['0', '6']).toContain(p.label);
    expect(p.score).toBeGreaterThan(0);
  }
}

describe('idempotent submission', () => {
  it('the same key and body sent concurrently create one job; both callers get it', async () => {
    const before = await t.deps.db.job.count();
    for (let round = 0; round < 5; round++) {
      const key = `concurrent-${round}-${randomBytes(4).toString('hex')}`;
      const body = { datasetId, baseModel: 'small_cnn', strategy: 'scratch', hyperparameters: { epochs: 1 } };
      const send = () => t.http.post('/v1/jobs').set('idempotency-key', key).send(body);
      const [a, b, c] = await Promise.all([send(), send(), send()]);
      for (const res of [a, b, c]) expect([200, 202]).toContain(res.status);
      expect([a, b, c].filter((res) => res.status === 202)).toHaveLength(1);
      expect(new Set([a, b, c].map((res) => res.body.id)).size).toBe(1);
      // The same key with another body is refused, whatever state the first job is in.
      const other = await t.http
        .post('/v1/jobs')
        .set('idempotency-key', key)
        .send({ ...body, hyperparameters: { epochs: 2 } })
        .expect(422);
      expect(other.body.code).toBe('idempotency_key_reused');
      await t.http.post(`/v1/jobs/${a.body.id}/cancel`);
    }
    expect(await t.deps.db.job.count()).toBe(before + 5);
  });

  it('a retry that differs only in how a number is written (-0 for 0) is the same spec', async () => {
    const key = `negative-zero-${randomBytes(4).toString('hex')}`;
    const body = (momentum: string) =>
      `{"datasetId":"${datasetId}","baseModel":"small_cnn","strategy":"scratch","hyperparameters":{"epochs":1,"optimizer":"sgd","momentum":${momentum}}}`;
    const send = (momentum: string) =>
      t.http.post('/v1/jobs').set('idempotency-key', key).set('content-type', 'application/json').send(body(momentum));
    const first = await send('0').expect(202);
    const again = await send('-0').expect(200);
    expect(again.body.id).toBe(first.body.id);
    await t.http.post(`/v1/jobs/${first.body.id}/cancel`);
  });
});

describe('runtime budget', () => {
  it('maxRuntimeSeconds stops training at a batch boundary and keeps the best model', { timeout: 300_000 }, async () => {
    const created = await t.http.post('/v1/jobs').send(slowSpec({ maxRuntimeSeconds: 25 })).expect(202);
    expect(created.body.spec.maxRuntimeSeconds).toBe(25);
    const job = await until(created.body.id, 'finished', finished);
    expect(job.error).toBeNull();
    expect(job).toMatchObject({ status: 'succeeded', stopReason: 'max_runtime' });
    expect(job.progress.epoch).toBeGreaterThanOrEqual(1);
    expect(job.progress.epoch).toBeLessThan(300);
    const model = await t.http.get(`/v1/models/${job.modelId}`).expect(200);
    expect(model.body.metrics.bestEpoch).toBe(job.metrics.best.epoch);
    await predictsDigits(job.modelId);
  });

  it('a budget above the server limit is refused; none given gets the server default', async () => {
    const tooLong = await t.http.post('/v1/jobs').send(slowSpec({ maxRuntimeSeconds: t.config.maxJobRuntimeSeconds + 1 })).expect(422);
    expect(tooLong.body.code).toBe('max_runtime_too_long');
    const created = await t.http.post('/v1/jobs').send(slowSpec()).expect(202);
    expect(created.body.spec.maxRuntimeSeconds).toBe(t.config.maxJobRuntimeSeconds);
    await t.http.post(`/v1/jobs/${created.body.id}/cancel`).expect(202);
  });
});

describe('cancel and delete', () => {
  it('cancel after epoch 2 keeps the best epoch as a model that predicts; delete removes everything', { timeout: 300_000 }, async () => {
    const created = await t.http.post('/v1/jobs').send(slowSpec()).expect(202);
    const id = created.body.id;
    await until(id, 'two epochs committed', (job) => job.progress.epoch >= 2);
    await t.http.post(`/v1/jobs/${id}/cancel`).expect(202);
    const job = await until(id, 'finished', finished);
    expect(job).toMatchObject({ status: 'canceled', stopReason: 'canceled', error: null });
    expect(job.modelId).toEqual(expect.any(String));
    await predictsDigits(job.modelId);

    const checkpoints = await t.http.get(`/v1/jobs/${id}/checkpoints`).expect(200);
    expect(checkpoints.body.items.length).toBeGreaterThanOrEqual(1);
    expect(checkpoints.body.items.length).toBeLessThanOrEqual(2);
    expect((await t.deps.store.list(`jobs/${id}/`)).length).toBeGreaterThan(0);

    // A running or queued job cannot be deleted; a finished one goes with every object it made.
    const running = await t.http.post('/v1/jobs').send(slowSpec()).expect(202);
    const refused = await t.http.delete(`/v1/jobs/${running.body.id}`).expect(409);
    expect(refused.body.code).toBe('job_not_finished');
    await t.http.post(`/v1/jobs/${running.body.id}/cancel`).expect(202);

    await t.http.delete(`/v1/jobs/${id}`).expect(204);
    await t.http.get(`/v1/jobs/${id}`).expect(404);
    await t.http.get(`/v1/jobs/${id}/checkpoints`).expect(404);
    await t.http.get(`/v1/models/${job.modelId}`).expect(404);
    expect(await t.deps.store.list(`jobs/${id}/`)).toEqual([]);
    expect(await t.deps.store.list(`models/${job.modelId}/`)).toEqual([]);
    await t.http.delete(`/v1/jobs/${id}`).expect(404);
  });

  it('a job canceled while queued never runs', { timeout: 120_000 }, async () => {
    // The worker is busy with this one, so the next waits in the queue.
    const busy = await t.http.post('/v1/jobs').send(slowSpec()).expect(202);
    await until(busy.body.id, 'running', (job) => job.status === 'running');
    const queued = await t.http.post('/v1/jobs').send(slowSpec()).expect(202);
    const canceled = await t.http.post(`/v1/jobs/${queued.body.id}/cancel`).expect(202);
    expect(canceled.body).toMatchObject({ status: 'canceled', modelId: null });
    await t.http.post(`/v1/jobs/${busy.body.id}/cancel`).expect(202);
    await until(busy.body.id, 'finished', finished);
    // Give a worker the chance to (wrongly) pick the canceled one up.
    await new Promise((r) => setTimeout(r, 2_000));
    expect(await getJob(queued.body.id)).toMatchObject({ status: 'canceled', runs: 0, startedAt: null });
  });
});
