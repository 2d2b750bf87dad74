import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { unzipSync, strFromU8 } from 'fflate';
import * as tf from '@tensorflow/tfjs';
import { decodeImage, initBackend } from '@finetune/ml';
import { startWorker, type RunningWorker } from '@finetune/worker';
import { buildTestApp, waitFor, type TestApp } from './support/app.ts';
import { digitPng, mnistFolderZip } from './support/mnist-fixtures.ts';

// The whole path on real parts: upload → train → poll → download → predict, with the real
// API, a real worker (training in child processes) on real Redis, Postgres and S3 (s3rver),
// on real MNIST digits through the real MobileNetV2 weights.

const DIGITS = [0, 1, 2];
const HELD_OUT_OFFSET = 500; // training uses each digit's first 40 images; these never appear
const HELD_OUT_PER_CLASS = 15;

let t: TestApp;
let worker: RunningWorker;
let datasetId: string;

async function jobStatus(id: string, wanted: string[]) {
  const res = await t.http.get(`/v1/jobs/${id}`).expect(200);
  return wanted.includes(res.body.status) ? res.body : undefined;
}

beforeAll(async () => {
  t = await buildTestApp();
  worker = startWorker(t.config, pino({ level: 'warn' }));
  const zip = await mnistFolderZip(DIGITS, 40);
  const res = await t.http
    .post('/v1/datasets')
    .field('name', 'mnist 0-2')
    .attach('file', zip, 'digits.zip')
    .expect(201);
  datasetId = res.body.id;
});

afterAll(async () => {
  await worker?.close();
  await t?.close();
});

describe('end to end', () => {
  it('describes the uploaded dataset', async () => {
    const res = await t.http.get(`/v1/datasets/${datasetId}`).expect(200);
    expect(res.body).toMatchObject({
      id: datasetId,
      name: 'mnist 0-2',
      status: 'ready',
      classes: ['0', '1', '2'],
      counts: { train: { '0': 40, '1': 40, '2': 40 }, images: 120, skipped: 0 },
    });
    const list = await t.http.get('/v1/datasets').expect(200);
    expect(list.body.items.map((d: { id: string }) => d.id)).toContain(datasetId);
  });

  it('trains feature_extraction on mobilenet_v2, serves and exports a model that beats chance', { timeout: 400_000 }, async () => {
    const epochs = 15;
    const created = await t.http
      .post('/v1/jobs')
      .send({
        datasetId,
        baseModel: 'mobilenet_v2',
        strategy: 'feature_extraction',
        hyperparameters: { epochs, batchSize: 16, optimizer: 'adam', learningRate: 0.001, validationSplit: 0.25, seed: 7 },
      })
      .expect(202);
    expect(created.body.status).toBe('queued');
    expect(created.headers.location).toBe(`/v1/jobs/${created.body.id}`);

    const job = await waitFor('job to finish', () => jobStatus(created.body.id, ['succeeded', 'failed', 'canceled']), 300_000);
    expect(job.error).toBeNull();
    expect(job.status).toBe('succeeded');
    if (t.config.mlBackend === 'auto') expect(['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu']).toContain(job.backend);
    else expect(job.backend).toBe(t.config.mlBackend);
    expect(job.progress).toEqual({ epoch: epochs, epochs, percent: 100 });
    expect(job.skippedImages).toBe(0);
    // A head on cached embeddings fits memory whole: one pass per batch.
    expect(job.microBatchSize).toBe(job.spec.hyperparameters.batchSize);
    // Where the time went, and what ran it: the frozen base on ONNX Runtime, the head on tfjs.
    expect(Object.keys(job.timings).sort()).toEqual(['decode', 'download', 'evaluation', 'export', 'frozenForward', 'queueWaitMs', 'training']);
    for (const ms of Object.values(job.timings)) expect(ms).toBeGreaterThanOrEqual(0);
    expect(job.timings.frozenForward).toBeGreaterThan(0);
    expect(job.runtime).toEqual({ training: `tfjs-${job.backend}`, frozenLayers: 'onnxruntime', device: 'cpu' });
    expect(job.startedAt).not.toBeNull();
    expect(job.finishedAt).not.toBeNull();

    // One metrics row per epoch.
    const metrics = await t.http.get(`/v1/jobs/${job.id}/metrics`).expect(200);
    expect(metrics.body.items).toHaveLength(epochs);
    for (const [i, row] of metrics.body.items.entries()) {
      expect(row.epoch).toBe(i + 1);
      expect(row.trainLoss).toBeGreaterThan(0);
      expect(row.valAccuracy).toBeGreaterThanOrEqual(0);
      expect(row.learningRate).toBeCloseTo(0.001);
      expect(row.durationMs).toBeGreaterThanOrEqual(0);
    }
    expect(job.metrics.best.valAccuracy).toBe(Math.max(...metrics.body.items.map((m: { valAccuracy: number }) => m.valAccuracy)));
    expect(job.stopReason).toBe('completed');

    // Retention (CHECKPOINTS_KEEP_LAST=1): the best epoch's checkpoint and the last one, each
    // whole (model, weights, resumable state), and no other checkpoint objects in storage.
    const checkpoints = await t.http.get(`/v1/jobs/${job.id}/checkpoints`).expect(200);
    const kept: number[] = checkpoints.body.items.map((c: { epoch: number }) => c.epoch);
    expect(kept).toContain(epochs);
    expect(kept).toContain(job.metrics.best.epoch);
    expect(kept.length).toBe(new Set([epochs, job.metrics.best.epoch]).size);
    for (const c of checkpoints.body.items) {
      expect(c.sizeBytes).toBeGreaterThan(0);
      expect(c.elapsedMs).toBeGreaterThan(0);
    }
    const objects = await t.deps.store.list(`jobs/${job.id}/checkpoints/`);
    expect(objects.map((o) => o.key.split('/').pop()).sort()).toEqual(
      kept.flatMap(() => ['model.json', 'state.bin', 'weights.bin']).sort(),
    );

    const model = await t.http.get(`/v1/models/${job.modelId}`).expect(200);
    expect(model.body).toMatchObject({ id: job.modelId, jobId: job.id, baseModel: 'mobilenet_v2', labels: ['0', '1', '2'], inputSize: 224 });

    // Download, unzip and open it with tfjs exactly as a browser would.
    const download = await t.http
      .get(`/v1/models/${job.modelId}/download`)
      .buffer(true)
      .parse((res, done) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => done(null, Buffer.concat(chunks)));
      })
      .expect(200)
      .expect('content-type', 'application/zip');
    const files = unzipSync(new Uint8Array(download.body as Buffer));
    expect(Object.keys(files).sort()).toEqual(['app.js', 'index.html', 'labels.json', 'metadata.json', 'model.json', 'style.css', 'tf.min.js', 'weights.bin']);
    expect(JSON.parse(strFromU8(files['labels.json']!))).toEqual(['0', '1', '2']);
    const metadata = JSON.parse(strFromU8(files['metadata.json']!));
    expect(metadata).toMatchObject({ baseModel: 'mobilenet_v2', jobId: job.id, labels: ['0', '1', '2'] });

    // The model's files count against the tenant's storage, byte for byte (the page beside them does not).
    const modelBytes = ['model.json', 'weights.bin', 'labels.json', 'metadata.json'].reduce((sum, f) => sum + files[f]!.byteLength, 0);
    const row = await t.deps.db.model.findUniqueOrThrow({ where: { id: job.modelId } });
    expect(Number(row.sizeBytes)).toBe(modelBytes);

    await initBackend('wasm');
    const modelJson = JSON.parse(strFromU8(files['model.json']!));
    const weights = files['weights.bin']!;
    const loaded = await tf.loadLayersModel(
      tf.io.fromMemory({
        modelTopology: modelJson.modelTopology,
        weightSpecs: modelJson.weightsManifest[0].weights,
        weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength),
      }),
    );
    expect(loaded.inputs[0]!.shape).toEqual([null, 224, 224, 3]);

    // Held-out digits: the downloaded model locally, and the API's /predict, must agree and
    // must clearly beat chance (1/3).
    let correct = 0;
    let agree = 0;
    const images: Buffer[] = [];
    const truth: number[] = [];
    for (const digit of DIGITS) {
      for (let i = 0; i < HELD_OUT_PER_CLASS; i++) {
        images.push(await digitPng(digit, HELD_OUT_OFFSET + i));
        truth.push(digit);
      }
    }
    const served = await t.http
      .post(`/v1/models/${job.modelId}/predict`)
      .send({ instances: images.slice(0, 32).map((b) => ({ b64: b.toString('base64') })) })
      .expect(200);
    const servedRest = await t.http
      .post(`/v1/models/${job.modelId}/predict`)
      .send({ instances: images.slice(32).map((b) => ({ b64: b.toString('base64') })) })
      .expect(200);
    const predictions = [...served.body.predictions, ...servedRest.body.predictions];
    expect(predictions).toHaveLength(images.length);
    for (const [i, image] of images.entries()) {
      const pixels = await decodeImage(image, 224);
      const probs = tf.tidy(() => (loaded.predict(tf.tensor4d(pixels, [1, 224, 224, 3])) as tf.Tensor).dataSync());
      const local = probs.indexOf(Math.max(...probs));
      if (local === truth[i]) correct++;
      if (predictions[i].label === String(local)) agree++;
      expect(predictions[i].top[0].label).toBe(predictions[i].label);
    }
    const accuracy = correct / images.length;
    console.log(`held-out accuracy (downloaded model, ${images.length} unseen digits, 3 classes): ${accuracy.toFixed(3)}; API agreement ${agree}/${images.length}`);
    expect(agree).toBe(images.length);
    expect(accuracy).toBeGreaterThan(0.7);

    // Multipart predict with one image.
    const one = await t.http
      .post(`/v1/models/${job.modelId}/predict`)
      .attach('file', images[0]!, 'digit.png')
      .expect(200);
    expect(one.body.predictions).toHaveLength(1);
    expect(one.body.predictions[0].label).toBe(predictions[0].label);
    const scores = one.body.predictions[0].top.map((p: { score: number }) => p.score);
    expect(scores.reduce((a: number, b: number) => a + b, 0)).toBeCloseTo(1, 3);
    loaded.dispose();
  });

  it('cancels a queued job before it runs and a running job after its current batch', { timeout: 400_000 }, async () => {
    const spec = { datasetId, baseModel: 'mobilenet_v2', strategy: 'feature_extraction', hyperparameters: { epochs: 500, batchSize: 4 } };
    const running = await t.http.post('/v1/jobs').send(spec).expect(202);
    const queued = await t.http.post('/v1/jobs').send(spec).expect(202);

    // Concurrency 1: the second job waits while the first runs.
    const canceledQueued = await t.http.post(`/v1/jobs/${queued.body.id}/cancel`).expect(202);
    expect(canceledQueued.body.status).toBe('canceled');

    // A dataset in use cannot be deleted.
    const inUse = await t.http.delete(`/v1/datasets/${datasetId}`).expect(409);
    expect(inUse.body.code).toBe('dataset_in_use');

    await waitFor('first epoch', async () => {
      const res = await t.http.get(`/v1/jobs/${running.body.id}`).expect(200);
      return res.body.progress.epoch >= 1 ? res.body : undefined;
    }, 300_000);
    await t.http.post(`/v1/jobs/${running.body.id}/cancel`).expect(202);
    const stopped = await waitFor('cancellation', () => jobStatus(running.body.id, ['canceled', 'succeeded', 'failed']));
    expect(stopped.status).toBe('canceled');
    // At least one epoch had completed: the best one is kept as the job's model.
    expect(stopped.modelId).toEqual(expect.any(String));
    expect(stopped.stopReason).toBe('canceled');
    expect(stopped.progress.epoch).toBeLessThan(500);

    const never = await t.http.get(`/v1/jobs/${queued.body.id}`).expect(200);
    expect(never.body.status).toBe('canceled');
    expect(never.body.startedAt).toBeNull();

    // A finished job cannot be canceled again.
    const again = await t.http.post(`/v1/jobs/${running.body.id}/cancel`).expect(409);
    expect(again.body.code).toBe('job_not_cancelable');

    const jobs = await t.http.get('/v1/jobs?status=canceled&limit=1').expect(200);
    expect(jobs.body.items).toHaveLength(1);
    expect(jobs.body.nextCursor).not.toBeNull();
    const next = await t.http.get(`/v1/jobs?status=canceled&limit=1&cursor=${jobs.body.nextCursor}`).expect(200);
    expect(next.body.items[0].id).not.toBe(jobs.body.items[0].id);
  });

  it('deletes a dataset with its stored archive once no job needs it', async () => {
    const key = `datasets/${datasetId}/source.zip`;
    expect(await t.deps.store.exists(key)).toBe(true);
    await t.http.delete(`/v1/datasets/${datasetId}`).expect(204);
    expect(await t.deps.store.exists(key)).toBe(false);
    const gone = await t.http.get(`/v1/datasets/${datasetId}`).expect(404);
    expect(gone.headers['content-type']).toContain('application/problem+json');
    // Models trained on it outlive it.
    const jobs = await t.http.get('/v1/jobs?status=succeeded').expect(200);
    expect(jobs.body.items[0].datasetId).toBeNull();
    await t.http.get(`/v1/models/${jobs.body.items[0].modelId}`).expect(200);
  });
});
