import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { startWorker, type RunningWorker } from '@finetune/worker';
import { buildTestApp, trainModel, waitFor, type TestApp } from './support/app.ts';
import { digitPng, shiftedDigitPng, zipOf } from './support/mnist-fixtures.ts';

// Domain adaptation on real parts (API, worker, Postgres, Redis, S3, MobileNetV2's ImageNet
// weights, real MNIST digits). Source domain: digits as MNIST has them, white on black, with
// labels. Target domain: other digits as a different camera would see them — a colour cast and
// a fraction of the contrast — uploaded without labels (kind=unlabelled). A labelled target
// test set of yet other shifted digits scores both the source-only model (feature_extraction)
// and the domain-adapted one.

const DIGITS = [0, 1, 2, 3, 4];

let t: TestApp;
let worker: RunningWorker;

/** The target domain's look (a colour cast and less contrast: see mnist-fixtures.ts). */
const colourCastPng = (digit: number, index: number) => shiftedDigitPng(digit, index, 'colour_cast');

async function digitFiles(render: (d: number, i: number) => Promise<Buffer>, folder: (d: number) => string, count: number, offset: number) {
  const files: Record<string, Uint8Array> = {};
  for (const digit of DIGITS) {
    for (let i = offset; i < offset + count; i++) files[`${folder(digit)}${digit}-${i}.png`] = await render(digit, i);
  }
  return files;
}

async function upload(zip: Buffer, kind?: string): Promise<{ id: string; kind: string; layout: string; classes: string[]; counts: Record<string, unknown> }> {
  const req = t.http.post('/v1/datasets');
  if (kind) req.field('kind', kind);
  return (await req.attach('file', zip, 'images.zip').expect(201)).body;
}

const train = (spec: object) => trainModel(t, spec, 300_000);

/** Accuracy of /predict on labelled images, 32 per request. */
async function predictAccuracy(modelId: string, images: { png: Buffer; label: string }[]): Promise<number> {
  let correct = 0;
  for (let i = 0; i < images.length; i += 32) {
    const part = images.slice(i, i + 32);
    const res = await t.http
      .post(`/v1/models/${modelId}/predict`)
      .send({ instances: part.map((p) => ({ b64: p.png.toString('base64') })) })
      .expect(200);
    (res.body.predictions as { label: string }[]).forEach((p, j) => (correct += p.label === part[j]!.label ? 1 : 0));
  }
  return correct / images.length;
}

beforeAll(async () => {
  t = await buildTestApp();
  worker = startWorker(t.config, pino({ level: 'warn' }));
});

afterAll(async () => {
  await worker?.close();
  await t?.close();
});

describe('unlabelled datasets', () => {
  it('takes images in no class folders (at the root or in any folder), with kind=unlabelled', async () => {
    const png = await colourCastPng(3, 0);
    const dataset = await upload(zipOf({ 'a.png': png, 'b.png': await colourCastPng(4, 0), 'street/c.png': await colourCastPng(1, 0), 'notes.txt': 'x' }), 'unlabelled');
    expect(dataset).toMatchObject({ kind: 'unlabelled', layout: 'unlabelled', classes: [] });
    expect(dataset.counts).toMatchObject({ images: 3, unlabelled: 3, ignored: 1, train: {}, val: {}, test: {} });
    const listed = (await t.http.get(`/v1/datasets/${dataset.id}`).expect(200)).body;
    expect(listed.kind).toBe('unlabelled');
    // The data checks run on it as on any dataset.
    const duplicate = await upload(zipOf({ 'a.png': png, 'again/a.png': png }), 'unlabelled');
    const report = (await t.http.get(`/v1/datasets/${duplicate.id}/report`).expect(200)).body;
    expect(report.findings.map((f: { check: string }) => f.check)).toContain('duplicate_within_class');
    // Labelled stays the default, and a labelled upload is checked as before.
    const labelled = await upload(zipOf({ '0/a.png': await digitPng(0, 0), '1/b.png': await digitPng(1, 0) }));
    expect(labelled.kind).toBe('labelled');
  });

  it('refuses a bad kind, and an unlabelled archive with no decodable image', async () => {
    const bad = await t.http.post('/v1/datasets').field('kind', 'sort-of').attach('file', zipOf({ 'a.png': await digitPng(0, 0) }), 'x.zip').expect(400);
    expect(bad.body.code).toBe('invalid_kind');
    expect(bad.headers['content-type']).toMatch(/application\/problem\+json/);
    const broken = await t.http.post('/v1/datasets').field('kind', 'unlabelled').attach('file', zipOf({ 'a.png': 'not a png' }), 'x.zip');
    expect(broken.status).toBe(422);
    expect(broken.body.code).toBe('empty_archive');
  });
});

describe('domain_adaptation specs', () => {
  it('refuses what cannot run, naming the field, and creates nothing', async () => {
    const source = await upload(zipOf(await digitFiles(digitPng, (d) => `${d}/`, 2, 0)));
    const unlabelled = await upload(zipOf(await digitFiles(colourCastPng, () => '', 2, 0)), 'unlabelled');
    const foreign = await upload(zipOf({ '7/a.png': await colourCastPng(7, 0), '8/b.png': await colourCastPng(8, 0) }));
    const before = (await t.http.get('/v1/jobs?limit=100').expect(200)).body.items.length;
    const spec = (extra: object) => ({ datasetId: source.id, baseModel: 'mobilenet_v2', strategy: 'domain_adaptation', ...extra });
    const cases: [string, object, number, string][] = [
      ['no target', spec({}), 400, 'invalid_spec'],
      ['a labelled target', spec({ targetDatasetId: source.id }), 400, 'invalid_spec'],
      ['a labelled target dataset', spec({ targetDatasetId: foreign.id }), 422, 'target_dataset_labelled'],
      ['an unknown target', spec({ targetDatasetId: randomUUID() }), 422, 'unknown_dataset'],
      ['an unlabelled target test set', spec({ targetDatasetId: unlabelled.id, targetTestDatasetId: unlabelled.id }), 422, 'unlabelled_dataset'],
      ['a target test set with other classes', spec({ targetDatasetId: unlabelled.id, targetTestDatasetId: foreign.id }), 422, 'class_mismatch'],
      ['augmentation', spec({ targetDatasetId: unlabelled.id, hyperparameters: { augmentation: { flipHorizontal: true } } }), 400, 'invalid_spec'],
      ['a target on another strategy', { datasetId: source.id, baseModel: 'mobilenet_v2', targetDatasetId: unlabelled.id }, 400, 'invalid_spec'],
      ['training on an unlabelled dataset', { datasetId: unlabelled.id, baseModel: 'mobilenet_v2' }, 422, 'unlabelled_dataset'],
      ['a base without pretrained weights', spec({ baseModel: 'small_cnn', targetDatasetId: unlabelled.id }), 422, 'strategy_not_supported'],
    ];
    for (const [what, body, status, code] of cases) {
      const res = await t.http.post('/v1/jobs').send(body);
      expect({ what, status: res.status, code: res.body.code }).toEqual({ what, status, code });
      expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
    }
    expect((await t.http.get('/v1/jobs?limit=100').expect(200)).body.items.length).toBe(before);
  });
});

describe('domain adaptation', () => {
  it('beats the source-only model on the shifted target domain, and serves what it reports', { timeout: 900_000 }, async () => {
    const source = await upload(zipOf(await digitFiles(digitPng, (d) => `${d}/`, 40, 0)));
    // The target's images carry no labels: only their look is learnt from.
    const target = await upload(zipOf(await digitFiles(colourCastPng, () => 'shifted/', 40, 100)), 'unlabelled');
    const testFiles = await digitFiles(colourCastPng, (d) => `${d}/`, 30, 300);
    const targetTest = await upload(zipOf(testFiles));
    const testImages = Object.entries(testFiles).map(([path, png]) => ({ png: Buffer.from(png), label: path.split('/')[0]! }));

    const hyperparameters = { epochs: 20, batchSize: 16, seed: 3 };
    const sourceOnly = await train({ datasetId: source.id, baseModel: 'mobilenet_v2', hyperparameters });
    const adapted = await train({
      datasetId: source.id,
      baseModel: 'mobilenet_v2',
      strategy: 'domain_adaptation',
      targetDatasetId: target.id,
      targetTestDatasetId: targetTest.id,
      hyperparameters,
    });

    // The target evaluation is its own report, on every target test image.
    const report = adapted.model.targetEvaluation;
    expect(report.samples).toBe(testImages.length);
    expect(adapted.model.metrics.adaptation).toMatchObject({ method: 'adabn', targetDatasetId: target.id, sourceImages: 160, targetImages: 200, targetImagesSkipped: 0 });
    expect(adapted.model.metrics.adaptation.batchNormLayers).toBeGreaterThan(10);
    expect(adapted.job.timings.adaptation).toBeGreaterThan(0);
    // Source validation is reported as for any job, apart from the target's.
    expect(adapted.model.evaluation.samples).toBe(40);

    // /predict serves the adapted model: its accuracy on the target test images is the reported one.
    const adaptedAccuracy = await predictAccuracy(adapted.model.id, testImages);
    expect(adaptedAccuracy).toBeCloseTo(report.accuracy, 6);
    const sourceOnlyAccuracy = await predictAccuracy(sourceOnly.model.id, testImages);
    console.log(
      `shifted-MNIST target (${testImages.length} images, 5 classes): source-only ${sourceOnlyAccuracy.toFixed(3)}, ` +
        `domain_adaptation ${adaptedAccuracy.toFixed(3)}; source validation ${sourceOnly.model.evaluation.accuracy.toFixed(3)} vs ${adapted.model.evaluation.accuracy.toFixed(3)}`,
    );
    expect(adaptedAccuracy).toBeGreaterThan(sourceOnlyAccuracy + 0.1);

    // The target images themselves, unlabelled, are what a batch prediction classifies.
    const batch = (await t.http.post(`/v1/models/${adapted.model.id}/batch-predictions`).send({ datasetId: target.id }).expect(202)).body;
    const done = await waitFor('batch prediction', async () => {
      const res = await t.http.get(`/v1/batch-predictions/${batch.id}`).expect(200);
      return ['succeeded', 'failed'].includes(res.body.status) ? res.body : undefined;
    });
    expect(done.status).toBe('succeeded');
    expect(done.counts).toEqual({ total: 200, done: 200, failed: 0 });

    // adaptationLayers: only the first layers take the domains' statistics (where a colour cast lives).
    const shallow = await train({
      datasetId: source.id,
      baseModel: 'mobilenet_v2',
      strategy: 'domain_adaptation',
      targetDatasetId: target.id,
      targetTestDatasetId: targetTest.id,
      hyperparameters: { ...hyperparameters, adaptationLayers: 3 },
    });
    expect(shallow.model.metrics.adaptation.batchNormLayers).toBe(3);
    console.log(`adaptationLayers 3: ${shallow.model.targetEvaluation.accuracy.toFixed(3)}`);
    expect(shallow.model.targetEvaluation.accuracy).toBeGreaterThan(sourceOnlyAccuracy + 0.1);
  });

  it('keeps its target datasets while the job needs them', { timeout: 120_000 }, async () => {
    const source = await upload(zipOf(await digitFiles(digitPng, (d) => `${d}/`, 2, 500)));
    const target = await upload(zipOf(await digitFiles(colourCastPng, () => '', 2, 500)), 'unlabelled');
    // Paused: the job stays queued while the deletes are tried.
    await worker.close();
    try {
      const job = (await t.http.post('/v1/jobs').send({ datasetId: source.id, baseModel: 'mobilenet_v2', strategy: 'domain_adaptation', targetDatasetId: target.id }).expect(202)).body;
      const refused = await t.http.delete(`/v1/datasets/${target.id}`).expect(409);
      expect(refused.body.code).toBe('dataset_in_use');
      await t.http.post(`/v1/jobs/${job.id}/cancel`).expect(202);
      await t.http.delete(`/v1/datasets/${target.id}`).expect(204);
    } finally {
      worker = startWorker(t.config, pino({ level: 'warn' }));
    }
  });
});
