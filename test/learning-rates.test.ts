import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { startWorker, type RunningWorker } from '@finetune/worker';
import { buildTestApp, waitFor, type TestApp } from './support/app.ts';
import { mnistFolderZip } from './support/mnist-fixtures.ts';

// learningRate "auto" through the whole service: the worker runs the range test before the
// first epoch, records it on the job under its lease, and GET /v1/jobs/:id shows it. And the
// cross-field rules of the new options are refused like the other spec errors.

let t: TestApp;
let worker: RunningWorker;
let datasetId: string;

beforeAll(async () => {
  t = await buildTestApp();
  worker = startWorker(t.config, pino({ level: 'warn' }));
  const res = await t.http.post('/v1/datasets').attach('file', await mnistFolderZip([0, 1, 2], 10), 'digits.zip');
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  datasetId = res.body.id;
});

afterAll(async () => {
  await worker?.close();
  await t?.close();
});

describe('learningRate "auto"', () => {
  it('runs the range test, trains at the chosen rate and shows the curve on the job', { timeout: 300_000 }, async () => {
    const created = await t.http.post('/v1/jobs').send({
      datasetId,
      baseModel: 'small_cnn',
      strategy: 'scratch',
      hyperparameters: { epochs: 2, batchSize: 8, learningRate: 'auto', lrSchedule: { type: 'one_cycle' }, validationSplit: 0.2, seed: 3 },
    });
    expect(created.status, JSON.stringify(created.body)).toBe(202);
    expect(created.body.learningRateFinder).toBeNull();
    const job = await waitFor(
      `job ${created.body.id}`,
      async () => {
        const res = await t.http.get(`/v1/jobs/${created.body.id}`).expect(200);
        return ['succeeded', 'failed', 'canceled'].includes(res.body.status) ? res.body : undefined;
      },
      240_000,
    );
    expect(job.error).toBeNull();
    expect(job.status).toBe('succeeded');
    const finder = job.learningRateFinder;
    expect(finder.curve.length).toBeGreaterThan(10);
    expect(finder.curve[0].lr).toBeCloseTo(1e-7, 12);
    for (const p of finder.curve) expect(Number.isFinite(p.loss)).toBe(true);
    expect(finder.chosen).toBe(finder.suggested);
    expect(finder.curve.map((p: { lr: number }) => p.lr)).toContain(finder.suggested);
    // one_cycle starts each run at chosen / 25: the first epoch's reported rate.
    const metrics = (await t.http.get(`/v1/jobs/${created.body.id}/metrics`).expect(200)).body;
    const first = metrics.items[0];
    expect(first.learningRate).toBeCloseTo(finder.chosen / 25, 9);
  });

  it('refuses the new options where they make no sense (problem+json)', async () => {
    const refused = async (hyperparameters: object, strategy: string, message: RegExp) => {
      const res = await t.http.post('/v1/jobs').send({ datasetId, baseModel: 'small_cnn', strategy, hyperparameters });
      expect(res.status, JSON.stringify(res.body)).toBe(400);
      expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
      expect(res.body.detail).toMatch(message);
    };
    await refused({ layerLearningRateDecay: 2.6, baseLearningRateMultiplier: 0.5 }, 'full', /layerLearningRateDecay and baseLearningRateMultiplier are alternatives/);
    await refused({ layerLearningRateDecay: 2.6 }, 'scratch', /layerLearningRateDecay applies to fine_tune, progressive_unfreezing and full/);
    await refused({ lrSchedule: { type: 'one_cycle' }, warmupEpochs: 1 }, 'scratch', /one_cycle warms up by itself/);
    const schema = await t.http.post('/v1/jobs').send({ datasetId, baseModel: 'small_cnn', strategy: 'scratch', hyperparameters: { layerLearningRateDecay: 0.5 } });
    expect(schema.status).toBe(400);
  });
});
