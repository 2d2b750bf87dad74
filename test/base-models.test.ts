import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import supertest from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '@finetune/ml';
import { startWorker, type RunningWorker } from '@finetune/worker';
import { fetchModelFiles } from '../apps/worker/src/base-models/fetch-files.ts';
import { buildTestApp, waitFor, type TestApp } from './support/app.ts';
import { convolutionalFeatures, modelZip, saveModel, smallClassifier, type SavedModel } from './support/base-model-fixtures.ts';
import { expectProblem } from './support/hostile.ts';
import { digitPng, mnistFolderZip, zipOf } from './support/mnist-fixtures.ts';

// Bring your own base: a small Keras-style classifier built here is uploaded as a zip, validated by
// the API and trained from with every strategy; a second model is served by a local HTTP server and
// fetched by the worker. Hostile archives are refused with a reason and leave nothing stored.

const MAX_BASE_MODEL_BYTES = 400_000;

let t: TestApp;
let worker: RunningWorker;
let server: http.Server;
let serverUrl: string;
/** The tenant these tests act in (a member key), and the default tenant's admin as the outsider. */
let api: ReturnType<typeof supertest.agent>;
let tenantId: string;
let datasetId: string;
let classifier: SavedModel;
let conv: SavedModel;
const served = new Map<string, Buffer | string>();

beforeAll(async () => {
  t = await buildTestApp({ QUEUE_PREFIX: `${process.env.QUEUE_PREFIX ?? 'finetune-test'}-bases-${randomBytes(4).toString('hex')}`, MAX_BASE_MODEL_BYTES: String(MAX_BASE_MODEL_BYTES) });
  // The fixture server is on loopback: this deployment allows fetching from its own network.
  // Two runs at once: the strategies' jobs are small.
  worker = startWorker({ ...t.config, workerConcurrency: 2, limits: { ...t.config.limits, baseModelFetchPrivate: true } }, pino({ level: 'warn' }));
  const tenant = await t.http.post('/v1/tenants').send({ name: `bases-${randomBytes(3).toString('hex')}` }).expect(201);
  tenantId = tenant.body.id;
  const key = await t.http.post(`/v1/tenants/${tenantId}/api-keys`).send({ name: 'bases' }).expect(201);
  api = supertest.agent(t.app.server).set({ authorization: `Bearer ${key.body.key}` });

  await initBackend('auto');
  classifier = await saveModel(await smallClassifier());
  conv = await saveModel(await convolutionalFeatures());
  for (const [name, data] of Object.entries(conv.shards)) served.set(`/conv/${name}`, data);
  served.set('/conv/model.json', conv.modelJson);
  // A model.json whose manifest names a shard the server does not have.
  served.set('/broken/model.json', conv.modelJson);
  server = http.createServer((req, res) => {
    const body = served.get(req.url ?? '');
    if (body === undefined) return void res.writeHead(404).end('not found');
    res.writeHead(200, { 'content-type': req.url!.endsWith('.json') ? 'application/json' : 'application/octet-stream' }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  serverUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const dataset = await api.post('/v1/datasets').attach('file', await mnistFolderZip([0, 1, 2], 8), 'digits.zip').expect(201);
  datasetId = dataset.body.id;
});

afterAll(async () => {
  await worker?.close();
  if (server) await new Promise((resolve) => server.close(resolve));
  await t?.close();
});

async function finishedJob(id: string) {
  return waitFor(`job ${id} to finish`, async () => {
    const res = await api.get(`/v1/jobs/${id}`).expect(200);
    return ['succeeded', 'failed', 'canceled'].includes(res.body.status) ? res.body : undefined;
  }, 60_000);
}

async function settledBase(id: string) {
  return waitFor(`base ${id} to be fetched`, async () => {
    const res = await api.get(`/v1/base-models/${id}`).expect(200);
    return ['ready', 'failed'].includes(res.body.status) ? res.body : undefined;
  }, 30_000);
}

async function storedBaseObjects(id: string) {
  return (await t.deps.store.list(`base-models/${id}/`)).map((o) => o.key).sort();
}

async function predictDigit(modelId: string, digit: number) {
  const res = await api.post(`/v1/models/${modelId}/predict`).attach('file', await digitPng(digit, 900), 'digit.png').expect(200);
  return res.body.predictions[0] as { label: string; score: number };
}

describe('custom base models', () => {
  let zipBase: { id: string; sizeBytes: number };

  it('validates an uploaded zip (model.json + sharded weights, in a folder) and lists it as ready for its tenant only', async () => {
    const res = await api
      .post('/v1/base-models')
      .field('embeddingLayer', 'embedding')
      .field('name', 'my digits net')
      .attach('file', modelZip(classifier, 'digits_web_model/'), 'digits_web_model.zip')
      .expect(201);
    zipBase = res.body;
    expect(res.headers.location).toBe(`/v1/base-models/${res.body.id}`);
    const weightBytes = Object.values(classifier.shards).reduce((n, s) => n + s.length, 0);
    expect(res.body).toMatchObject({
      kind: 'custom',
      name: 'my digits net',
      status: 'ready',
      source: 'zip',
      url: null,
      inputSize: 28,
      embeddingSize: 32,
      embeddingLayer: 'embedding',
      pooled: false,
      scale: '0_1',
      layerCount: 6,
      available: true,
      error: null,
    });
    // Stored as model.json + one weights.bin: the shards concatenated in manifest order.
    expect(await storedBaseObjects(zipBase.id)).toEqual([`base-models/${zipBase.id}/model.json`, `base-models/${zipBase.id}/weights.bin`]);
    expect((await t.deps.store.getBuffer(`base-models/${zipBase.id}/weights.bin`)).equals(Buffer.concat(Object.values(classifier.shards)))).toBe(true);
    expect(res.body.sizeBytes).toBeGreaterThan(weightBytes);

    const list = await api.get('/v1/base-models').expect(200);
    expect(list.body.items.filter((b: { kind: string }) => b.kind === 'zoo').map((b: { id: string }) => b.id)).toEqual(expect.arrayContaining(['mobilenet_v2', 'small_cnn']));
    expect(list.body.items.find((b: { id: string }) => b.id === zipBase.id)).toEqual(res.body);
    const usage = await api.get('/v1/usage').expect(200);
    expect(usage.body.quotas.storedBytes.breakdown.baseModels).toBe(zipBase.sizeBytes);

    // Another tenant neither sees it nor can train from it.
    expect((await t.http.get('/v1/base-models').expect(200)).body.items.some((b: { id: string }) => b.id === zipBase.id)).toBe(false);
    expectProblem(await t.http.get(`/v1/base-models/${zipBase.id}`), 404, 'base_model_not_found');
    expectProblem(await t.http.delete(`/v1/base-models/${zipBase.id}`), 404, 'base_model_not_found');
    const otherDataset = await t.http.post('/v1/datasets').attach('file', await mnistFolderZip([0, 1], 2), 'd.zip').expect(201);
    expectProblem(
      await t.http.post('/v1/jobs').send({ datasetId: otherDataset.body.id, baseModel: { baseModelId: zipBase.id }, hyperparameters: { epochs: 1 } }),
      422,
      'unknown_base_model',
    );
    await t.http.delete(`/v1/datasets/${otherDataset.body.id}`).expect(204);
  });

  it('trains from it with every strategy, caches its embeddings under its own name, and serves the models', async () => {
    const specs = [
      { strategy: 'feature_extraction', hyperparameters: { epochs: 4, batchSize: 8, learningRate: 0.01 } },
      { strategy: 'fine_tune', hyperparameters: { epochs: 3, batchSize: 8, unfreeze: { topLayers: 2 } } },
      {
        strategy: 'progressive_unfreezing',
        hyperparameters: { batchSize: 8, stages: [{ unfreeze: { topLayers: 1 }, epochs: 1 }, { unfreeze: { topLayers: 4 }, epochs: 1 }] },
      },
      { strategy: 'full', hyperparameters: { epochs: 2, batchSize: 8 } },
    ];
    const created = [];
    for (const spec of specs) {
      const res = await api.post('/v1/jobs').send({ datasetId, baseModel: { baseModelId: zipBase.id }, ...spec }).expect(202);
      expect(res.body.baseModel).toBe(`base:${zipBase.id}`);
      created.push(res.body.id as string);
    }
    // While jobs use it, it cannot be deleted.
    expectProblem(await api.delete(`/v1/base-models/${zipBase.id}`), 409, 'base_model_in_use');

    const jobs = [];
    for (const id of created) jobs.push(await finishedJob(id));
    for (const [i, job] of jobs.entries()) {
      expect(job.error, specs[i]!.strategy).toBeNull();
      expect(job.status).toBe('succeeded');
    }
    // Its frozen layers convert to ONNX; the cut for fine_tune moved to a block boundary and trained the top.
    expect(jobs[0].runtime.frozenLayers).toBe('onnxruntime');
    const fineTuned = await api.get(`/v1/models/${jobs[1].modelId}`).expect(200);
    expect(fineTuned.body.baseModel).toBe(`base:${zipBase.id}`);
    const cached = await t.deps.store.list(`cache/embeddings/${tenantId}/base-${zipBase.id}/${datasetId}/`);
    expect(cached.length).toBeGreaterThan(0);

    for (const job of jobs) {
      const top = await predictDigit(job.modelId, 1);
      expect(['0', '1', '2']).toContain(top.label);
      expect(top.score).toBeGreaterThan(0);
    }
  });

  it('fetches a hosted model.json and its weights on the worker: no fixed input size, a pooled feature map, tfjs for an unconvertible layer', async () => {
    const res = await api
      .post('/v1/base-models')
      .send({ url: `${serverUrl}/conv/model.json`, embeddingLayer: 'features_b', inputSize: 32, scale: '-1_1' })
      .expect(202);
    expect(res.body).toMatchObject({ status: 'pending', source: 'url', url: `${serverUrl}/conv/model.json`, name: 'conv', embeddingSize: null, available: false });
    const base = await settledBase(res.body.id);
    expect(base.error).toBeNull();
    expect(base).toMatchObject({ status: 'ready', inputSize: 32, embeddingSize: 12, pooled: true, layerCount: 3, scale: '-1_1' });
    expect(await storedBaseObjects(base.id)).toHaveLength(2);

    const job = await api
      .post('/v1/jobs')
      .send({ datasetId, baseModel: { baseModelId: base.id }, strategy: 'feature_extraction', hyperparameters: { epochs: 3, batchSize: 8 } })
      .expect(202);
    const done = await finishedJob(job.body.id);
    expect(done.error).toBeNull();
    expect(done.status).toBe('succeeded');
    // Cropping2D has no ONNX mapping: the frozen layers ran on tfjs.
    expect(done.runtime.frozenLayers).toMatch(/^tfjs-/);
    expect(['0', '1', '2']).toContain((await predictDigit(done.modelId, 2)).label);
  });

  it('marks a URL base failed with the reason when the fetch or the validation fails, and stores nothing', async () => {
    const cases = [
      { url: `${serverUrl}/missing/model.json`, embeddingLayer: 'features_b', inputSize: 32, code: 'fetch_failed' },
      { url: `${serverUrl}/broken/model.json`, embeddingLayer: 'features_b', inputSize: 32, code: 'fetch_failed' },
      { url: `${serverUrl}/conv/model.json`, embeddingLayer: 'no_such_layer', inputSize: 32, code: 'unknown_embedding_layer' },
      { url: `${serverUrl}/conv/model.json`, embeddingLayer: 'features_b', code: 'input_size_required' },
    ];
    for (const { code, ...body } of cases) {
      const res = await api.post('/v1/base-models').send(body).expect(202);
      const base = await settledBase(res.body.id);
      expect(base.status, body.url).toBe('failed');
      expect(base.error.code).toBe(code);
      expect(base.error.message.length).toBeGreaterThan(0);
      expect(await storedBaseObjects(base.id)).toEqual([]);
      expectProblem(await api.post('/v1/jobs').send({ datasetId, baseModel: { baseModelId: base.id } }), 422, 'base_model_not_ready');
      await api.delete(`/v1/base-models/${base.id}`).expect(204);
    }
    // By default a worker refuses private and loopback addresses (the tests' worker allows them).
    await expect(
      fetchModelFiles(`${serverUrl}/conv/model.json`, { maxBytes: 1e6, timeoutMs: 5_000, allowPrivate: false, maxRetryTimeMs: 0 }),
    ).rejects.toMatchObject({ code: 'url_not_allowed' });
    expectProblem(await api.post('/v1/base-models').send({ url: 'file:///etc/passwd', embeddingLayer: 'x' }), 400, 'invalid_url');
    expectProblem(await api.post('/v1/base-models').send({ url: `${serverUrl}/conv/model.json` }), 400, 'validation_error');
  });

  it('refuses hostile and broken uploads with a 4xx problem and stores nothing', async () => {
    const before = (await api.get('/v1/base-models').expect(200)).body.items.filter((b: { kind: string }) => b.kind === 'custom');
    const objectsBefore = (await t.deps.store.list('base-models/')).length;
    const [firstShard, ...otherShards] = Object.keys(classifier.shards);
    const shards = (change: Record<string, Buffer | undefined>) => {
      const files: Record<string, Uint8Array | string> = { 'model.json': classifier.modelJson };
      for (const [name, data] of Object.entries({ ...classifier.shards, ...change })) if (data) files[name] = data;
      return zipOf(files);
    };
    const manifest = JSON.parse(classifier.modelJson) as { weightsManifest: { paths: string[] }[] };
    const traversal = JSON.stringify({ ...JSON.parse(classifier.modelJson), weightsManifest: [{ ...manifest.weightsManifest[0], paths: ['../../etc/passwd', ...otherShards] }] });
    // A rank-3 layer: neither a vector nor an image feature map.
    const input = tf.input({ shape: [8, 8, 3] });
    const reshaped = tf.layers.reshape({ targetShape: [16, 12], name: 'sequence' }).apply(input) as tf.SymbolicTensor;
    const sequence = await saveModel(tf.model({ inputs: input, outputs: tf.layers.dense({ units: 4, name: 'out' }).apply(reshaped) as tf.SymbolicTensor }));

    const cases: [string, Buffer, Record<string, string>, number, string][] = [
      ['no model.json', await mnistFolderZip([0, 1], 1), { embeddingLayer: 'embedding' }, 422, 'model_json_missing'],
      ['model.json is not JSON', zipOf({ 'model.json': '{"modelTopology": ', ...classifier.shards }), { embeddingLayer: 'embedding' }, 422, 'invalid_model_json'],
      ['a graph model', zipOf({ 'model.json': JSON.stringify({ format: 'graph-model', modelTopology: {}, weightsManifest: [] }) }), { embeddingLayer: 'x' }, 422, 'unsupported_model_format'],
      ['a weight shard missing', shards({ [firstShard!]: undefined }), { embeddingLayer: 'embedding' }, 422, 'weights_missing'],
      ['a weight shard cut short', shards({ [firstShard!]: classifier.shards[firstShard!]!.subarray(0, 100) }), { embeddingLayer: 'embedding' }, 422, 'weights_mismatch'],
      ['a manifest path outside the model', zipOf({ 'model.json': traversal, ...classifier.shards }), { embeddingLayer: 'embedding' }, 422, 'unsafe_weight_path'],
      ['an entry name outside the archive', zipOf({ '../model.json': classifier.modelJson }), { embeddingLayer: 'embedding' }, 400, 'unsafe_entry_name'],
      ['not a zip', Buffer.from('PK\u0003\u0004 this is not really a zip'), { embeddingLayer: 'embedding' }, 400, 'invalid_zip'],
      ['an unknown embedding layer', modelZip(classifier), { embeddingLayer: 'pool9' }, 422, 'unknown_embedding_layer'],
      ['a layer whose output is not a vector', modelZip(sequence), { embeddingLayer: 'sequence' }, 422, 'embedding_not_vector'],
      ['an input size the model does not have', modelZip(classifier), { embeddingLayer: 'embedding', inputSize: '64' }, 422, 'input_size_mismatch'],
      ['no embeddingLayer', modelZip(classifier), {}, 400, 'validation_error'],
      ['an unknown pixel scale', modelZip(classifier), { embeddingLayer: 'embedding', scale: '0_2' }, 400, 'validation_error'],
      ['an unknown field', modelZip(classifier), { embeddingLayer: 'embedding', layer: 'x' }, 400, 'unknown_field'],
      // Compresses to almost nothing, inflates past MAX_BASE_MODEL_BYTES.
      ['weights inflating past the limit', zipOf({ 'model.json': classifier.modelJson, [firstShard!]: Buffer.alloc(MAX_BASE_MODEL_BYTES + 1) }), { embeddingLayer: 'embedding' }, 413, 'model_too_large'],
      ['an upload past the limit', Buffer.concat([modelZip(classifier), randomBytes(MAX_BASE_MODEL_BYTES)]), { embeddingLayer: 'embedding' }, 413, 'upload_too_large'],
    ];
    for (const [what, zip, fields, status, code] of cases) {
      let req = api.post('/v1/base-models');
      for (const [name, value] of Object.entries(fields)) req = req.field(name, value);
      const res = await req.attach('file', zip, 'model.zip');
      expect(res.status, `${what}: ${res.text}`).toBe(status);
      expectProblem(res, status, code);
    }
    expectProblem(await api.post('/v1/base-models').field('embeddingLayer', 'embedding'), 400, 'file_required');
    expectProblem(await api.post('/v1/base-models').set('content-type', 'text/plain').send('model'), 415, 'unsupported_media_type');

    const after = (await api.get('/v1/base-models').expect(200)).body.items.filter((b: { kind: string }) => b.kind === 'custom');
    expect(after).toEqual(before);
    expect((await t.deps.store.list('base-models/')).length).toBe(objectsBefore);
  });

  it('counts toward the storage quota', async () => {
    const usage = await api.get('/v1/usage').expect(200);
    await t.http.patch(`/v1/tenants/${tenantId}`).send({ quotas: { storedBytes: usage.body.quotas.storedBytes.usage + 1000 } }).expect(200);
    try {
      const res = await api.post('/v1/base-models').field('embeddingLayer', 'embedding').attach('file', modelZip(classifier), 'model.zip');
      expectProblem(res, 403, 'quota_exceeded');
      expect((await api.get('/v1/usage').expect(200)).body.quotas.storedBytes.usage).toBe(usage.body.quotas.storedBytes.usage);
    } finally {
      await t.http.patch(`/v1/tenants/${tenantId}`).send({ quotas: { storedBytes: null } }).expect(200);
    }
  });

  it('deletes a base with its files and cached embeddings; jobs can no longer name it', async () => {
    await api.delete(`/v1/base-models/${zipBase.id}`).expect(204);
    expect(await storedBaseObjects(zipBase.id)).toEqual([]);
    expect(await t.deps.store.list(`cache/embeddings/${tenantId}/base-${zipBase.id}/`)).toEqual([]);
    expectProblem(await api.get(`/v1/base-models/${zipBase.id}`), 404, 'base_model_not_found');
    expectProblem(await api.post('/v1/jobs').send({ datasetId, baseModel: { baseModelId: zipBase.id } }), 422, 'unknown_base_model');
    expect((await api.get('/v1/usage').expect(200)).body.quotas.storedBytes.breakdown.baseModels).toBeGreaterThan(0); // the URL base remains
  });
});
