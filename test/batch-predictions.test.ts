import { randomBytes, randomUUID } from 'node:crypto';
import pino from 'pino';
import supertest from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BatchPredictionsRepository } from '@finetune/db';
import { keys } from '@finetune/storage';
import { startWorker, type RunningWorker } from '@finetune/worker';
import { BatchPrediction } from '../apps/api/src/response-schemas.ts';
import { presentBatchPrediction } from '../apps/api/src/services/batch-predictions.service.ts';
import { buildTestApp, waitFor, type TestApp } from './support/app.ts';
import { createTinyModel } from './support/hostile.ts';
import { digitPng, zipOf } from './support/mnist-fixtures.ts';

// Batch prediction end to end: the API queues it, a real worker classifies every image of a real
// dataset zip (one file in it is not an image) and uploads the results; tenants stay apart.

let t: TestApp;
let worker: RunningWorker;
let other: ReturnType<typeof supertest.agent>;
let otherTenantId: string;
let modelId: string;
let datasetId: string;
const LABELS = ['3', '5'];
const paths: string[] = [];
const BROKEN = 'digits/5/broken.png';

beforeAll(async () => {
  t = await buildTestApp({ QUEUE_PREFIX: `${process.env.QUEUE_PREFIX}-batch-${randomBytes(4).toString('hex')}` });
  worker = startWorker(t.config, pino({ level: 'warn' }));
  ({ modelId } = await createTinyModel(t, LABELS));

  const files: Record<string, Uint8Array | string> = {};
  for (const digit of [3, 5]) {
    for (let i = 0; i < 6; i++) files[`digits/${digit}/${i}.png`] = await digitPng(digit, i);
  }
  files[BROKEN] = 'this is not a png';
  paths.push(...Object.keys(files));
  const dataset = await t.http.post('/v1/datasets').attach('file', zipOf(files), 'd.zip').expect(201);
  datasetId = dataset.body.id;
  expect(dataset.body.counts.skipped).toBe(1);

  const tenant = await t.http.post('/v1/tenants').send({ name: `batch-other-${randomBytes(3).toString('hex')}` }).expect(201);
  otherTenantId = tenant.body.id;
  const key = await t.http.post(`/v1/tenants/${otherTenantId}/api-keys`).send({ name: 'other' }).expect(201);
  other = supertest.agent(t.app.server).set({ authorization: `Bearer ${key.body.key}` });
});

afterAll(async () => {
  await worker?.close();
  await t?.close();
});

async function finished(id: string) {
  return waitFor(`batch prediction ${id} to finish`, async () => {
    const res = await t.http.get(`/v1/batch-predictions/${id}`).expect(200);
    return ['succeeded', 'failed'].includes(res.body.status) ? res.body : undefined;
  }, 45_000);
}

describe('batch prediction', () => {
  let batchId: string;

  it('classifies every image of the dataset on a worker; an undecodable one carries an error', async () => {
    const created = await t.http.post(`/v1/models/${modelId}/batch-predictions`).send({ datasetId }).expect(202);
    batchId = created.body.id;
    expect(created.headers.location).toBe(`/v1/batch-predictions/${batchId}`);
    expect(created.body).toMatchObject({ modelId, datasetId, status: 'queued', error: null });

    const done = await finished(batchId);
    expect(done.error).toBeNull();
    expect(done.status).toBe('succeeded');
    expect(done.counts).toEqual({ total: paths.length, done: paths.length, failed: 1 });
    expect(done.startedAt).not.toBeNull();
    expect(done.finishedAt).not.toBeNull();

    const res = await t.http.get(`/v1/batch-predictions/${batchId}/results`).buffer(true).parse((r, cb) => {
      let text = '';
      r.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
      r.on('end', () => cb(null, text));
    }).expect(200);
    expect(res.headers['content-type']).toContain('application/x-ndjson');
    const lines = (res.body as string).trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, any>);
    expect(lines).toHaveLength(paths.length);
    expect(lines.map((l) => l.path).sort()).toEqual([...paths].sort());
    const broken = lines.filter((l) => 'error' in l);
    expect(broken).toEqual([{ path: BROKEN, error: expect.any(String) }]);
    for (const line of lines.filter((l) => !('error' in l))) {
      expect(LABELS).toContain(line.label);
      expect(line.score).toBeGreaterThan(0);
      expect(line.top).toHaveLength(LABELS.length);
      expect(line.top[0]).toEqual({ label: line.label, score: line.score });
    }
    expect(lines.length - broken.length + done.counts.failed).toBe(done.counts.total);

    const list = await t.http.get('/v1/batch-predictions?limit=100').expect(200);
    expect(list.body.items.map((b: { id: string }) => b.id)).toContain(batchId);
    // The serialiser drops what the schema does not declare: nothing presented may be missing from it.
    const row = await t.deps.db.batchPrediction.findUniqueOrThrow({ where: { id: batchId } });
    expect(Object.keys(presentBatchPrediction(row)).filter((k) => !(k in BatchPrediction.properties))).toEqual([]);
  });

  it('another tenant gets 404 on every route, and sees none in its list', async () => {
    expect((await other.post(`/v1/models/${modelId}/batch-predictions`).send({ datasetId }).expect(404)).body.code).toBe('model_not_found');
    for (const url of [`/v1/batch-predictions/${batchId}`, `/v1/batch-predictions/${batchId}/results`]) {
      expect((await other.get(url).expect(404)).body.code).toBe('batch_prediction_not_found');
    }
    await other.delete(`/v1/batch-predictions/${batchId}`).expect(404);
    expect((await other.get('/v1/batch-predictions').expect(200)).body.items).toEqual([]);
    // Its own model on our dataset: the dataset is as unknown as a missing one.
    const theirs = await createTinyModel(t, LABELS, otherTenantId);
    expect((await other.post(`/v1/models/${theirs.modelId}/batch-predictions`).send({ datasetId }).expect(422)).body.code).toBe('unknown_dataset');
    expect((await t.http.post(`/v1/models/${modelId}/batch-predictions`).send({ datasetId: randomUUID() }).expect(422)).body.code).toBe('unknown_dataset');
    // Still there for its owner.
    await t.http.get(`/v1/batch-predictions/${batchId}`).expect(200);
  });

  it('results before the end are 409 batch_prediction_not_finished', async () => {
    // A row no worker will take (it is not enqueued): deterministic, however fast the workers are.
    const row = await new BatchPredictionsRepository(t.deps.db).create({ id: randomUUID(), tenantId: t.tenantId, modelId, datasetId });
    const res = await t.http.get(`/v1/batch-predictions/${row.id}/results`).expect(409);
    expect(res.body.code).toBe('batch_prediction_not_finished');
    await t.http.delete(`/v1/batch-predictions/${row.id}`).expect(204);
  });

  it('a run taken over (its worker presumed dead) can record nothing; the new run starts over', async () => {
    const repo = new BatchPredictionsRepository(t.deps.db);
    const row = await repo.create({ id: randomUUID(), tenantId: t.tenantId, modelId, datasetId });
    const first = (await repo.claim(row.id))!;
    expect(await repo.progress(row.id, first.lease, { total: 13, done: 8 })).toBe(true);
    const second = (await repo.claim(row.id))!;
    expect(second.row).toMatchObject({ status: 'running', runs: 2, done: 0 });
    expect(await repo.progress(row.id, first.lease, { done: 13 })).toBe(false);
    expect(await repo.succeed(row.id, first.lease, { total: 13, done: 13, failed: 0 })).toBe(false);
    expect(await repo.succeed(row.id, second.lease, { total: 13, done: 13, failed: 1 })).toBe(true);
    expect(await repo.fail(row.id, { code: 'late', message: 'a late failure' })).toBe(false);
    await repo.delete(t.tenantId, row.id);
  });

  it('DELETE removes the row and its results', async () => {
    const key = keys.batchPredictionResults(batchId);
    expect(await t.deps.store.exists(key)).toBe(true);
    await t.http.delete(`/v1/batch-predictions/${batchId}`).expect(204);
    await t.http.get(`/v1/batch-predictions/${batchId}`).expect(404);
    expect(await t.deps.store.exists(key)).toBe(false);
  });
});
