import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import type { JobSpec } from '@finetune/core';
import { forwardImages, frozenEngine, initBackend, layerGraph, loadBaseModel } from '@finetune/ml';
import { startWorker, type RunningWorker } from '@finetune/worker';
import { FeatureCache } from '../apps/worker/src/training/feature-cache.ts';
import { decodeOverlapped, frozenOverlap } from '../apps/worker/src/training/frozen-overlap.ts';
import { decodeDataset, listDataset } from '../apps/worker/src/training/prepare-data.ts';
import { RunTimings } from '../apps/worker/src/training/run-timings.ts';
import { buildTestApp, waitFor, type TestApp } from './support/app.ts';
import { digitPng, zipOf } from './support/mnist-fixtures.ts';

// Decoding overlapped with the frozen forward pass (TRAINING_DECODE_OVERLAP=on) must
// give exactly what decoding first gives: the same splits, the same features byte for byte, the
// same cache objects under the same keys, the same model — with an unreadable image in the
// archive, which drops out of its split and shifts every later image's place in it.

let t: TestApp;
let worker: RunningWorker;
const setting = process.env.TRAINING_DECODE_OVERLAP;

/** Digits 0–2, 30 each, with an image that does not decode early in the archive order. */
async function archive(): Promise<Buffer> {
  const files: Record<string, Uint8Array | string> = { 'digits/1/broken.png': 'not a png' };
  for (const digit of [0, 1, 2]) for (let i = 0; i < 30; i++) files[`digits/${digit}/${i}.png`] = await digitPng(digit, i);
  return zipOf(files);
}

async function upload(zip: Buffer): Promise<string> {
  const res = await t.http.post('/v1/datasets').attach('file', zip, 'digits.zip');
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.id;
}

async function runJob(spec: object) {
  const created = await t.http.post('/v1/jobs').send(spec);
  expect(created.status, JSON.stringify(created.body)).toBe(202);
  return waitFor(
    `job ${created.body.id}`,
    async () => {
      const res = await t.http.get(`/v1/jobs/${created.body.id}`).expect(200);
      return ['succeeded', 'failed', 'canceled'].includes(res.body.status) ? res.body : undefined;
    },
    400_000,
  );
}

/** The dataset's embedding-cache objects, by key below the dataset's prefix. */
async function cacheObjects(datasetId: string): Promise<Map<string, Buffer>> {
  const prefix = `cache/embeddings/${t.tenantId}/mobilenet_v2/${datasetId}/`;
  const objects = new Map<string, Buffer>();
  for (const { key } of await t.deps.store.list(prefix)) objects.set(key.slice(prefix.length), await t.deps.store.getBuffer(key));
  return objects;
}

beforeAll(async () => {
  t = await buildTestApp();
  worker = startWorker(t.config, pino({ level: 'warn' }));
});

afterAll(async () => {
  if (setting === undefined) delete process.env.TRAINING_DECODE_OVERLAP;
  else process.env.TRAINING_DECODE_OVERLAP = setting;
  await worker?.close();
  await t?.close();
});

describe('decoding overlapped with the frozen forward pass', () => {
  it('computes each split batch by batch as it decodes, the same bytes as the pass over the decoded split', { timeout: 300_000 }, async () => {
    await initBackend(t.config.mlBackend);
    const base = await loadBaseModel('mobilenet_v2');
    const workDir = await mkdtemp(join(tmpdir(), 'decode-overlap-'));
    try {
      const storageKey = `test/decode-overlap/${Date.now()}.zip`;
      await t.deps.store.putBuffer(storageKey, await archive(), 'application/zip');
      const hp = { validationSplit: 0.3, testSplit: 0, seed: 3 };
      const listing = await listDataset(t.deps.store, t.config, storageKey, workDir, 224, hp);
      const cache = new FeatureCache(t.deps.store, t.tenantId, 'mobilenet_v2', `overlap-${Date.now()}`, { sha256: 'x', inputSize: 224 });
      const spec = { datasetId: 'x', baseModel: 'mobilenet_v2', strategy: 'feature_extraction', hyperparameters: { epochs: 1, ...hp } } as unknown as JobSpec;
      const timings = new RunTimings();
      process.env.TRAINING_DECODE_OVERLAP = 'on';
      const overlap = await frozenOverlap(spec, listing, cache, { base: base.model, maxPixels: t.config.limits.imagePixels, resumed: false, timings, isCanceled: () => false });
      expect(overlap).not.toBeNull();
      const decoding = { config: t.config, inputSize: 224, timings };
      const overlapped = await decodeOverlapped(listing, decoding, () => false, overlap);
      const sequential = await decodeDataset(listing, { config: t.config, inputSize: 224 }, () => false);

      // The same splits, in the same order, with the same image left out.
      expect(overlapped.unreadable).toEqual(['digits/1/broken.png']);
      expect(overlapped.skipped).toBe(1);
      for (const split of ['train', 'val'] as const) {
        expect(overlapped[split]!.ids).toEqual(sequential[split]!.ids);
        expect([...overlapped[split]!.targets]).toEqual([...sequential[split]!.targets]);
      }
      // More than one batch in train, a partial last batch in both splits.
      expect(overlapped.train.ids.length).toBeGreaterThan(32);
      expect(overlapped.train.ids.length % 32).not.toBe(0);
      expect(overlapped.val!.ids.length % 32).not.toBe(0);

      const cut = layerGraph(base.model).outputName;
      const engine = await frozenEngine(base.model, cut);
      for (const split of ['train', 'val'] as const) {
        const images = sequential[split]!.images;
        const taken = overlap!.take(cut, split, engine, images.length);
        expect(taken, `${split} features from the overlap`).not.toBeNull();
        // What the engine's frozen pass (runFrozen) computes: the whole split, 32 images a batch.
        const whole = await forwardImages(base.model, images, { batchSize: 32 });
        expect(Buffer.from(taken!.buffer).equals(Buffer.from(whole.output.buffer))).toBe(true);
      }
      // Another cut, another engine or a count that does not match: nothing (the engine computes its own).
      expect(overlap!.take('block_1_expand', 'train', engine, overlapped.train.ids.length)).toBeNull();
      const timed = timings.toJSON();
      expect(timed.decode).toBeGreaterThan(0);
      expect(timed.frozenForward).toBeGreaterThan(0);
    } finally {
      base.model.dispose();
      await rm(workDir, { recursive: true, force: true });
    }
  });

  it('leaves the cache objects, the skipped image and the model as decoding first does', { timeout: 600_000 }, async () => {
    const zip = await archive();
    const spec = (datasetId: string) => ({
      datasetId,
      baseModel: 'mobilenet_v2',
      strategy: 'feature_extraction',
      hyperparameters: { epochs: 3, batchSize: 16, validationSplit: 0.3, testSplit: 0.2, seed: 11 },
    });
    // Two datasets of the same archive: each job finds its embedding cache cold. The worker forks
    // its training children with the environment as it is when the job starts.
    const sequentialId = await upload(zip);
    process.env.TRAINING_DECODE_OVERLAP = 'off';
    const sequential = await runJob(spec(sequentialId));
    const overlappedId = await upload(zip);
    process.env.TRAINING_DECODE_OVERLAP = 'on';
    const overlapped = await runJob(spec(overlappedId));

    for (const job of [sequential, overlapped]) {
      expect(job.error).toBeNull();
      expect(job.status).toBe('succeeded');
      expect(job.skippedImages).toBe(1);
      expect(job.embeddingCache).toBe('computed');
      expect(job.timings.decode).toBeGreaterThan(0);
      expect(job.timings.frozenForward).toBeGreaterThan(0);
    }
    const before = await cacheObjects(sequentialId);
    const after = await cacheObjects(overlappedId);
    // The unreadable-image record and the train and val features, under the same keys.
    expect([...after.keys()].sort()).toEqual([...before.keys()].sort());
    expect([...before.keys()].filter((k) => k.endsWith('.f32'))).toHaveLength(2);
    for (const [key, bytes] of before) expect(after.get(key)!.equals(bytes), key).toBe(true);

    const model = async (id: string) => (await t.http.get(`/v1/models/${id}`).expect(200)).body;
    const [a, b] = [await model(sequential.modelId), await model(overlapped.modelId)];
    expect(b.evaluation).toEqual(a.evaluation);
    expect(b.testEvaluation).toEqual(a.testEvaluation);
    expect(b.calibration).toEqual(a.calibration);
    expect(b.metrics.reproducibility.dataset).toEqual({ ...a.metrics.reproducibility.dataset, id: overlappedId });
  });
});
