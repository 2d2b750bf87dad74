import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { tf } from '@finetune/ml';
import { keys } from '@finetune/storage';
import { buildTestApp, type TestApp } from './support/app.ts';
import { modelZip, saveModel, smallClassifier } from './support/base-model-fixtures.ts';
import { digitPng, zipOf } from './support/mnist-fixtures.ts';

// Bad input is normal input: each case gets a clear 4xx problem+json with a stable code, and
// leaves no row and no stored object behind.

let t: TestApp;
let png: Buffer;

async function stored() {
  return {
    datasets: await t.deps.db.dataset.count(),
    jobs: await t.deps.db.job.count(),
    objects: (await t.deps.store.list('datasets/')).length,
  };
}

function expectProblem(res: request.Response, status: number, code: string) {
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(res.headers['content-type']).toContain('application/problem+json');
  expect(res.body).toMatchObject({ status, code, type: `urn:finetune:problem:${code}` });
  expect(typeof res.body.title).toBe('string');
  expect(res.body.detail.length).toBeGreaterThan(0);
}

async function upload(zip: Buffer, app = t) {
  return app.http.post('/v1/datasets').attach('file', zip, 'data.zip');
}

beforeAll(async () => {
  t = await buildTestApp();
  png = await digitPng(3, 0);
});

afterAll(async () => {
  await t?.close();
});

describe('dataset uploads', () => {
  const cases: [string, () => Buffer, number, string][] = [
    ['not a zip', () => Buffer.from('this is plain text, not an archive'), 422, 'invalid_zip'],
    ['an empty zip', () => zipOf({}), 422, 'empty_archive'],
    ['one class only', () => zipOf({ 'cats/a.png': png, 'cats/b.png': png }), 422, 'too_few_classes'],
    ['a class with no decodable image', () => zipOf({ 'cats/a.png': png, 'dogs/b.png': 'not really a png' }), 422, 'empty_class'],
    ['a zip-slip entry (../)', () => zipOf({ 'cats/a.png': png, 'dogs/b.png': png, '../evil.png': png }), 422, 'unsafe_entry_name'],
    ['a zip-slip entry (nested ..)', () => zipOf({ 'cats/a.png': png, 'dogs/../../evil.png': png }), 422, 'unsafe_entry_name'],
    ['an absolute entry path', () => zipOf({ 'cats/a.png': png, 'dogs/b.png': png, '/etc/evil.png': png }), 422, 'unsafe_entry_name'],
  ];
  for (const [name, make, status, code] of cases) {
    it(`rejects ${name} with ${status} ${code} and stores nothing`, async () => {
      const before = await stored();
      expectProblem(await upload(make()), status, code);
      expect(await stored()).toEqual(before);
    });
  }

  it('rejects an archive over the upload limit with 413 and stores nothing', async () => {
    const small = await buildTestApp({ MAX_UPLOAD_BYTES: '2048' });
    try {
      const big = zipOf(Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`c${i % 2}/${i}.png`, png])));
      expect(big.length).toBeGreaterThan(2048);
      const before = await stored();
      expectProblem(await upload(big, small), 413, 'upload_too_large');
      expect(await stored()).toEqual(before);
    } finally {
      await small.close();
    }
  });

  it('rejects a request that is not multipart, or has no file', async () => {
    expectProblem(await t.http.post('/v1/datasets').send({ file: 'x' }), 415, 'multipart_required');
    expectProblem(await t.http.post('/v1/datasets').field('name', 'x'), 400, 'file_required');
  });

  it('counts a corrupt image as skipped when its class still has good ones', async () => {
    const res = await upload(zipOf({ 'a/1.png': png, 'a/2.png': 'garbage', 'b/1.png': png, 'README.txt': 'hi' }));
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    expect(res.body.counts).toMatchObject({ train: { a: 1, b: 1 }, skipped: 1 });
    await t.http.delete(`/v1/datasets/${res.body.id}`).expect(204);
  });
});

describe('job specs', () => {
  let datasetId: string;
  beforeAll(async () => {
    const res = await upload(zipOf({ 'a/1.png': png, 'b/1.png': png }));
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    datasetId = res.body.id;
  });

  const hyper = (hyperparameters: Record<string, unknown>) => () => ({ datasetId, baseModel: 'mobilenet_v2', hyperparameters });
  const cases: [string, () => unknown, number, string][] = [
    ['epochs 0', hyper({ epochs: 0 }), 400, 'validation_error'],
    ['epochs 10^6', hyper({ epochs: 1_000_000 }), 400, 'validation_error'],
    ['batchSize 0', hyper({ batchSize: 0 }), 400, 'validation_error'],
    ['a negative learning rate', hyper({ learningRate: -0.1 }), 400, 'validation_error'],
    ['learningRate "NaN"', hyper({ learningRate: 'NaN' }), 400, 'validation_error'],
    ['an unknown hyperparameter', hyper({ epochz: 3 }), 400, 'validation_error'],
    ['an unknown optimizer', hyper({ optimizer: 'lbfgs' }), 400, 'validation_error'],
    ['an unknown strategy', () => ({ datasetId, baseModel: 'mobilenet_v2', strategy: 'magic' }), 400, 'validation_error'],
    ['a missing datasetId', () => ({ baseModel: 'mobilenet_v2' }), 400, 'validation_error'],
    ['an unknown dataset', () => ({ datasetId: randomUUID(), baseModel: 'mobilenet_v2' }), 422, 'unknown_dataset'],
    ['an unknown base model', () => ({ datasetId, baseModel: 'resnet_9000' }), 422, 'unknown_base_model'],
    ['feature extraction on a random-init base', () => ({ datasetId, baseModel: 'small_cnn' }), 422, 'strategy_not_supported'],
    ['fine_tune on a random-init base', () => ({ datasetId, baseModel: 'small_cnn', strategy: 'fine_tune' }), 422, 'strategy_not_supported'],
    ['an unknown trained model as base', () => ({ datasetId, baseModel: { modelId: randomUUID() } }), 422, 'unknown_model'],
    ['unfreeze with feature_extraction', hyper({ unfreeze: { topLayers: 5 } }), 400, 'invalid_spec'],
    ['stages with fine_tune', () => ({ datasetId, baseModel: 'mobilenet_v2', strategy: 'fine_tune', hyperparameters: { stages: [{ unfreeze: { topLayers: 5 }, epochs: 1 }] } }), 400, 'invalid_spec'],
    ['nesterov with adam', hyper({ optimizer: 'adam', nesterov: true }), 400, 'invalid_spec'],
    ['weight decay without adamw', hyper({ optimizer: 'sgd', weightDecay: 0.01 }), 400, 'invalid_spec'],
    ['warm-up as long as training', hyper({ epochs: 3, warmupEpochs: 3 }), 400, 'invalid_spec'],
    ['val_loss early stopping with no validation split', hyper({ validationSplit: 0, earlyStopping: { monitor: 'val_loss' } }), 400, 'invalid_spec'],
    ['augmentation for prototypes', () => ({ datasetId, baseModel: 'mobilenet_v2', strategy: 'prototype', hyperparameters: { augmentation: { flipHorizontal: true } } }), 400, 'invalid_spec'],
    ['compareWithScratch on scratch', () => ({ datasetId, baseModel: 'small_cnn', strategy: 'scratch', compareWithScratch: true }), 400, 'invalid_spec'],
    ['an unknown lr schedule', hyper({ lrSchedule: { type: 'sawtooth' } }), 400, 'validation_error'],
    ['a step schedule without stepSize', hyper({ lrSchedule: { type: 'step', gamma: 0.1 } }), 400, 'validation_error'],
    ['class weights for a class the dataset lacks', hyper({ classWeights: { a: 1, zebra: 2 } }), 422, 'invalid_class_weights'],
    ['negative class weights', hyper({ classWeights: { a: -1 } }), 400, 'validation_error'],
    ['dropout of 1', hyper({ head: { dropout: 1 } }), 400, 'validation_error'],
  ];
  for (const [name, body, status, code] of cases) {
    it(`rejects ${name} with ${status} ${code} and creates no job`, async () => {
      const before = await stored();
      expectProblem(await t.http.post('/v1/jobs').send(body() as object), status, code);
      expect(await stored()).toEqual(before);
    });
  }

  it('refuses a spec whose training step cannot fit the backend memory even one image at a time, before any work', async () => {
    // The planner's budget override (packages/ml micro-batch.ts), read when a job is submitted.
    process.env.ML_MEMORY_BUDGET_BYTES = String(200 * 1024 ** 2);
    try {
      const before = await stored();
      // full MobileNetV2 with Adam: ~270 MiB of optimizer state alone.
      const res = await t.http.post('/v1/jobs').send({ datasetId, baseModel: 'mobilenet_v2', strategy: 'full', hyperparameters: { epochs: 1 } });
      expectProblem(res, 422, 'batch_exceeds_memory');
      expect(res.body.detail).toMatch(/more than the 200 MiB of ML_MEMORY_BUDGET_BYTES even one image at a time/);
      expect(res.body.budgetBytes).toBe(200 * 1024 ** 2);
      expect(res.body.fixedBytes).toBeGreaterThan(0);
      expect(await stored()).toEqual(before);
      // The head alone fits the same budget.
      const fits = await t.http.post('/v1/jobs').send({ datasetId, baseModel: 'mobilenet_v2', hyperparameters: { epochs: 1 } }).expect(202);
      await t.http.post(`/v1/jobs/${fits.body.id}/cancel`).expect(202);
    } finally {
      delete process.env.ML_MEMORY_BUDGET_BYTES;
    }
  });

  it('refuses domain_adaptation when its batch-norm statistics pass cannot fit one image, though its head training would', async () => {
    const target = await t.http.post('/v1/datasets').field('kind', 'unlabelled').attach('file', zipOf({ '1.png': png, '2.png': png }), 'target.zip');
    expect(target.status, JSON.stringify(target.body)).toBe(201);
    const spec = { datasetId, targetDatasetId: target.body.id, baseModel: 'mobilenet_v2', strategy: 'domain_adaptation', hyperparameters: { epochs: 1 } };
    process.env.ML_MEMORY_BUDGET_BYTES = String(200 * 1024 ** 2);
    try {
      const before = await stored();
      // The pass is planned as a whole-network step (MobileNetV2 with Adam: more than 200 MiB);
      // the head it trains afterwards fits, as feature_extraction does above.
      const res = await t.http.post('/v1/jobs').send(spec);
      expectProblem(res, 422, 'batch_exceeds_memory');
      expect(res.body.detail).toMatch(/^strategy domain_adaptation's batch-norm statistics pass .* more than the 200 MiB of ML_MEMORY_BUDGET_BYTES even one image at a time/);
      expect(res.body.budgetBytes).toBe(200 * 1024 ** 2);
      expect(await stored()).toEqual(before);
    } finally {
      delete process.env.ML_MEMORY_BUDGET_BYTES;
    }
    const fits = await t.http.post('/v1/jobs').send(spec).expect(202);
    await t.http.post(`/v1/jobs/${fits.body.id}/cancel`).expect(202);
  });

  describe('memory on a custom base and on a trained model as base (planned from model.json alone)', () => {
    // The digits classifier of base-model-fixtures.ts: ~26,500 base weights. A full step with Adam
    // holds ~19 copies of them (~2 MiB), over a 1 MiB budget even one image at a time; the head
    // alone (feature_extraction) fits it.
    const BUDGET = 1024 ** 2;
    let baseModelId: string;
    let modelId: string;
    /** The dataset row the trained-model fixtures' jobs name. */
    let trainedOn: string;

    beforeAll(async () => {
      const upload = await t.http.post('/v1/base-models').field('embeddingLayer', 'embedding').attach('file', modelZip(await saveModel(await smallClassifier())), 'digits.zip');
      expect(upload.status, JSON.stringify(upload.body)).toBe(201);
      baseModelId = upload.body.id;

      // A model as a job exports it: the base's layers, then head_* layers. Only its model.json is
      // stored, no weights.bin: the check reads the topology, never the weights.
      const classifier = await smallClassifier(3);
      const logits = tf.layers.dense({ units: 2, name: 'head_logits' }).apply(classifier.getLayer('embedding').output) as tf.SymbolicTensor;
      const probabilities = tf.layers.softmax({ name: 'head_softmax' }).apply(logits) as tf.SymbolicTensor;
      const trained = tf.model({ inputs: classifier.inputs, outputs: probabilities, name: 'classifier' });
      const saved = await saveModel(trained);
      trained.dispose();
      const dataset = await t.deps.db.dataset.create({
        data: { id: randomUUID(), tenantId: t.tenantId, name: 'm', storageKey: 'x', sizeBytes: 1n, sha256: 'x', layout: 'flat', classes: ['a', 'b'], counts: { train: { a: 1, b: 1 }, val: {}, skipped: 0, ignored: 0, skippedFiles: [] } },
      });
      const job = await t.deps.db.job.create({
        data: { id: randomUUID(), tenantId: t.tenantId, datasetId: dataset.id, baseModel: 'mobilenet_v2', strategy: 'feature_extraction', spec: {}, epochs: 1, status: 'succeeded' },
      });
      trainedOn = dataset.id;
      modelId = randomUUID();
      await t.deps.store.putBuffer(keys.modelFile(modelId, 'model.json'), Buffer.from(saved.modelJson));
      await t.deps.db.model.create({
        data: { id: modelId, tenantId: t.tenantId, jobId: job.id, baseModel: 'mobilenet_v2', labels: ['a', 'b'], inputSize: 28, storagePrefix: keys.modelPrefix(modelId), metrics: {} },
      });
    });

    const bases = () => [
      ['a custom base', { baseModelId }],
      ['a trained model', { modelId }],
    ] as const;

    it('refuses a spec that cannot fit one image with 422 naming the limit, and creates nothing', async () => {
      process.env.ML_MEMORY_BUDGET_BYTES = String(BUDGET);
      try {
        for (const [what, baseModel] of bases()) {
          const before = await stored();
          const res = await t.http.post('/v1/jobs').send({ datasetId, baseModel, strategy: 'full', hyperparameters: { epochs: 1 } });
          expectProblem(res, 422, 'batch_exceeds_memory');
          expect(res.body.detail, what).toMatch(/^strategy full \(stage 1\) needs ~\d+ MiB .* more than the 1 MiB of ML_MEMORY_BUDGET_BYTES even one image at a time/);
          expect(res.body, what).toMatchObject({ budgetBytes: BUDGET, fixedBytes: expect.any(Number), perImageBytes: expect.any(Number) });
          expect(res.body.perImageBytes, what).toBeGreaterThan(0);
          expect(await stored(), what).toEqual(before);
        }
      } finally {
        delete process.env.ML_MEMORY_BUDGET_BYTES;
      }
    });

    it('answers unknown_model for a model whose files are gone (deleted since its row was read)', async () => {
      const job = await t.deps.db.job.create({
        data: { id: randomUUID(), tenantId: t.tenantId, datasetId: trainedOn, baseModel: 'mobilenet_v2', strategy: 'feature_extraction', spec: {}, epochs: 1, status: 'succeeded' },
      });
      const orphan = await t.deps.db.model.create({
        data: { id: randomUUID(), tenantId: t.tenantId, jobId: job.id, baseModel: 'mobilenet_v2', labels: ['a', 'b'], inputSize: 28, storagePrefix: 'x', metrics: {} },
      });
      const before = await stored();
      expectProblem(await t.http.post('/v1/jobs').send({ datasetId, baseModel: { modelId: orphan.id }, hyperparameters: { epochs: 1 } }), 422, 'unknown_model');
      expect(await stored()).toEqual(before);
    });

    it('accepts a spec that fits the same budget', async () => {
      process.env.ML_MEMORY_BUDGET_BYTES = String(BUDGET);
      try {
        for (const [, baseModel] of bases()) {
          const res = await t.http.post('/v1/jobs').send({ datasetId, baseModel, hyperparameters: { epochs: 1 } });
          expect(res.status, JSON.stringify(res.body)).toBe(202);
          await t.http.post(`/v1/jobs/${res.body.id}/cancel`).expect(202);
        }
      } finally {
        delete process.env.ML_MEMORY_BUDGET_BYTES;
      }
    });
  });

  it('rejects malformed JSON', async () => {
    const res = await t.http.post('/v1/jobs').set('content-type', 'application/json').send('{"datasetId": ');
    expectProblem(res, 400, 'malformed_json');
  });

  it('honours Idempotency-Key: the same spec twice is one job, a different spec is refused', async () => {
    const key = randomUUID();
    const spec = { datasetId, baseModel: 'mobilenet_v2', hyperparameters: { epochs: 1 } };
    const first = await t.http.post('/v1/jobs').set('idempotency-key', key).send(spec).expect(202);
    const second = await t.http.post('/v1/jobs').set('idempotency-key', key).send(spec).expect(200);
    expect(second.body.id).toBe(first.body.id);
    const other = await t.http.post('/v1/jobs').set('idempotency-key', key).send({ ...spec, hyperparameters: { epochs: 2 } });
    expectProblem(other, 422, 'idempotency_key_reused');
    await t.http.post(`/v1/jobs/${first.body.id}/cancel`).expect(202);
  });
});

describe('lookups and predict', () => {
  it('answers 404 problem+json for unknown ids and routes, 400 for malformed ids', async () => {
    for (const path of [`/v1/datasets/${randomUUID()}`, `/v1/jobs/${randomUUID()}`, `/v1/models/${randomUUID()}`, `/v1/models/${randomUUID()}/download`]) {
      expectProblem(await t.http.get(path), 404, path.split('/')[2]!.replace(/s$/, '') + '_not_found');
    }
    expectProblem(await t.http.get('/v1/nothing-here'), 404, 'route_not_found');
    expectProblem(await t.http.get('/v1/jobs/not-a-uuid'), 400, 'validation_error');
    expectProblem(await t.http.post(`/v1/jobs/${randomUUID()}/cancel`), 404, 'job_not_found');
  });

  it('rejects predict on a missing model, a non-image and an empty request', async () => {
    const missing = await t.http.post(`/v1/models/${randomUUID()}/predict`).attach('file', png, 'x.png');
    expectProblem(missing, 404, 'model_not_found');

    // A model row is enough here: input is rejected before the model's files are read.
    const dataset = await t.deps.db.dataset.create({
      data: { id: randomUUID(), tenantId: t.tenantId, name: 'p', storageKey: 'x', sizeBytes: 1n, sha256: 'x', layout: 'flat', classes: ['a', 'b'], counts: { train: { a: 1, b: 1 }, val: {}, skipped: 0, ignored: 0, skippedFiles: [] } },
    });
    const job = await t.deps.db.job.create({
      data: { id: randomUUID(), tenantId: t.tenantId, datasetId: dataset.id, baseModel: 'mobilenet_v2', strategy: 'feature_extraction', spec: {}, epochs: 1, status: 'succeeded' },
    });
    const model = await t.deps.db.model.create({
      data: { id: randomUUID(), tenantId: t.tenantId, jobId: job.id, baseModel: 'mobilenet_v2', labels: ['a', 'b'], inputSize: 224, storagePrefix: 'x', metrics: {} },
    });
    const notImage = await t.http.post(`/v1/models/${model.id}/predict`).attach('file', Buffer.from('%PDF-1.4 not an image'), 'x.pdf');
    expectProblem(notImage, 422, 'invalid_image');
    const badB64 = await t.http.post(`/v1/models/${model.id}/predict`).send({ instances: [{ b64: '***' }] });
    expectProblem(badB64, 400, 'invalid_base64');
    const empty = await t.http.post(`/v1/models/${model.id}/predict`).send({ instances: [] });
    expectProblem(empty, 400, 'validation_error');
    const noBody = await t.http.post(`/v1/models/${model.id}/predict`).send({});
    expectProblem(noBody, 400, 'validation_error');
  });
});

describe('operations', () => {
  it('reports health and readiness of Postgres, Redis and S3', async () => {
    await t.http.get('/healthz').expect(200, { status: 'ok' });
    const ready = await t.http.get('/readyz').expect(200);
    expect(ready.body.checks).toEqual({ database: { ok: true }, redis: { ok: true }, storage: { ok: true } });
  });

  it('lists the base-model zoo', async () => {
    const res = await t.http.get('/v1/base-models').expect(200);
    const ids = res.body.items.map((m: { id: string }) => m.id);
    expect(ids).toEqual(expect.arrayContaining(['mobilenet_v2', 'inception_v3', 'small_cnn']));
    expect(res.body.items[0]).toMatchObject({ id: 'mobilenet_v2', inputSize: 224, embeddingSize: 1280, available: true });
  });
});
