import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { strFromU8, unzipSync } from 'fflate';
import sharp from 'sharp';
import { decodeImage, initBackend, loadModelFromFiles, predictImages } from '@finetune/ml';
import { keys } from '@finetune/storage';
import { startWorker, type RunningWorker } from '@finetune/worker';
import { buildTestApp, trainModel, type TestApp } from './support/app.ts';
import { digitPng, zipOf } from './support/mnist-fixtures.ts';

// Honest evaluation on real parts (API, worker, Postgres, Redis, S3, real MNIST digits, the
// built-in small_cnn): validation and test reported apart, a temperature fitted on validation
// and served by /predict, "unknown" below a confidence threshold, and no evaluation on training
// images when nothing was held out.

const DIGITS = [0, 1, 2];

let t: TestApp;
let worker: RunningWorker;

/** `count` digits per class from `offset` on, under `<folder>/<digit>/`. */
async function digits(folder: string, count: number, offset: number): Promise<Record<string, Uint8Array>> {
  const files: Record<string, Uint8Array> = {};
  for (const digit of DIGITS) {
    for (let i = 0; i < count; i++) files[`${folder}${digit}/${offset + i}.png`] = await digitPng(digit, offset + i);
  }
  return files;
}

async function upload(zip: Buffer): Promise<{ id: string; counts: Record<string, unknown> }> {
  return (await t.http.post('/v1/datasets').attach('file', zip, 'digits.zip').expect(201)).body;
}

const train = (spec: object) => trainModel(t, spec);

beforeAll(async () => {
  t = await buildTestApp();
  worker = startWorker(t.config, pino({ level: 'warn' }));
});

afterAll(async () => {
  await worker?.close();
  await t?.close();
});

describe('honest evaluation', () => {
  it('reports validation and test apart, calibrates on validation, and answers "unknown" below a threshold', { timeout: 180_000 }, async () => {
    const zip = zipOf({ ...(await digits('train/', 24, 0)), ...(await digits('val/', 8, 100)), ...(await digits('test/', 10, 200)) });
    const dataset = await upload(zip);
    expect(dataset.counts).toMatchObject({ test: { '0': 10, '1': 10, '2': 10 }, val: { '0': 8, '1': 8, '2': 8 }, images: 126 });

    // testSplit is ignored: the archive brings its own test/.
    const { job, model } = await train({
      datasetId: dataset.id,
      baseModel: 'small_cnn',
      strategy: 'scratch',
      hyperparameters: { epochs: 6, batchSize: 16, learningRate: 0.003, seed: 5, testSplit: 0.3 },
    });

    // Selection saw validation only: the best epoch is the best validation epoch, and the
    // validation evaluation is of the val/ images.
    const metrics = (await t.http.get(`/v1/jobs/${job.id}/metrics`).expect(200)).body.items as { valAccuracy: number }[];
    expect(job.metrics.best.valAccuracy).toBe(Math.max(...metrics.map((m) => m.valAccuracy)));
    expect(model.evaluation.samples).toBe(24);
    expect(model.evaluation.accuracy).toBeCloseTo(job.metrics.best.valAccuracy, 6);
    expect(model.evaluation.mostConfidentErrors.every((e: { id: string }) => e.id.startsWith('val/'))).toBe(true);
    expect(model.evaluationNote).toBeNull();

    // The test split, reported on its own.
    expect(model.testEvaluation.samples).toBe(30);
    expect(model.testEvaluation.perClass.map((c: { support: number }) => c.support)).toEqual([10, 10, 10]);
    expect(model.testEvaluation.mostConfidentErrors.every((e: { id: string }) => e.id.startsWith('test/'))).toBe(true);
    expect(model.metrics.reproducibility.dataset).toMatchObject({ trainImages: 72, valImages: 24, testImages: 30 });
    console.log(
      `small_cnn scratch: validation accuracy ${model.evaluation.accuracy.toFixed(3)}, test accuracy ${model.testEvaluation.accuracy.toFixed(3)}; ` +
        `temperature ${model.calibration.temperature.toFixed(3)}, test ECE ${model.calibration.eceBefore.toFixed(3)} → ${model.calibration.eceAfter.toFixed(3)}, ` +
        `NLL ${model.calibration.nllBefore.toFixed(3)} → ${model.calibration.nllAfter.toFixed(3)}`,
    );

    // Calibration: fitted on the 24 validation images, measured on the 30 test images.
    expect(model.calibration).toMatchObject({ fittedOn: 'validation', fitSamples: 24, measuredOn: 'test', samples: 30 });
    expect(model.calibration.temperature).toBeGreaterThan(0);
    expect(model.calibration.bins.reduce((n: number, b: { count: number }) => n + b.count, 0)).toBe(30);
    expect(model.confidenceThreshold).toBeNull();

    // /predict serves softmax(log p / T): the stored model's raw output, scaled by the temperature.
    // Of a few ambiguous images (two digits overlaid), the one the model is least sure about.
    const candidates = await Promise.all(
      [[0, 1], [1, 2], [0, 2], [2, 0]].map(async ([a, b], i) =>
        sharp(await digitPng(a!, 400 + i)).composite([{ input: await digitPng(b!, 450 + i), blend: 'lighten' }]).png().toBuffer(),
      ),
    );
    const all = (await t.http.post(`/v1/models/${model.id}/predict`).send({ instances: candidates.map((c) => ({ b64: c.toString('base64') })) }).expect(200)).body
      .predictions as { label: string; score: number; top: { label: string; score: number }[] }[];
    const least = all.reduce((best, p, i) => (p.score < all[best]!.score ? i : best), 0);
    const image = candidates[least]!;
    const served = all[least]!;
    await initBackend(t.config.mlBackend);
    const net = await loadModelFromFiles(
      await t.deps.store.getBuffer(keys.modelFile(model.id, 'model.json')),
      await t.deps.store.getBuffer(keys.modelFile(model.id, 'weights.bin')),
    );
    const [raw] = await predictImages(net, [await decodeImage(image, 28)], 28, model.labels, 3);
    net.dispose();
    const scaled = raw!.top.map((p) => Math.pow(p.score, 1 / model.calibration.temperature));
    const expected = Object.fromEntries(raw!.top.map((p, i) => [p.label, scaled[i]! / scaled.reduce((a, b) => a + b, 0)]));
    for (const p of served.top) expect(p.score).toBeCloseTo(expected[p.label]!, 5);
    expect(served.label).toBe(raw!.label);
    expect(served.score).toBeLessThan(1);

    // A threshold above the top score: "unknown", with the scores still there.
    const threshold = (served.score + 1) / 2;
    const patched = await t.http.patch(`/v1/models/${model.id}`).send({ confidenceThreshold: threshold }).expect(200);
    expect(patched.body.confidenceThreshold).toBeCloseTo(threshold, 12);
    const unknown = (await t.http.post(`/v1/models/${model.id}/predict`).attach('file', image, 'grey.png').expect(200)).body.predictions[0];
    expect(unknown).toEqual({ label: 'unknown', score: served.score, top: served.top });
    // A request's own threshold wins over the model's.
    const overridden = await t.http.post(`/v1/models/${model.id}/predict?threshold=0`).send({ instances: [{ b64: image.toString('base64') }] }).expect(200);
    expect(overridden.body.predictions[0].label).toBe(served.label);
    await t.http.post(`/v1/models/${model.id}/predict?threshold=1.5`).attach('file', image, 'grey.png').expect(400);
    await t.http.patch(`/v1/models/${model.id}`).send({ confidenceThreshold: -0.1 }).expect(400);
    await t.http.patch(`/v1/models/${model.id}`).send({ confidenceThreshold: null }).expect(200);
    const cleared = (await t.http.post(`/v1/models/${model.id}/predict`).attach('file', image, 'grey.png').expect(200)).body.predictions[0];
    expect(cleared.label).toBe(served.label);

    // The download carries the temperature and the current threshold for the page.
    await t.http.patch(`/v1/models/${model.id}`).send({ confidenceThreshold: 0.6 }).expect(200);
    const download = await t.http.get(`/v1/models/${model.id}/download`).buffer(true)
      .parse((res, done) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => done(null, Buffer.concat(chunks)));
      })
      .expect(200);
    const metadata = JSON.parse(strFromU8(unzipSync(new Uint8Array(download.body as Buffer))['metadata.json']!));
    expect(metadata.calibration.temperature).toBe(model.calibration.temperature);
    expect(metadata.confidenceThreshold).toBe(0.6);
    expect(metadata.testEvaluation.samples).toBe(30);

    // Transfer from this model, compared with scratch: the gain is measured on the test split.
    const transfer = await train({
      datasetId: dataset.id,
      baseModel: { modelId: model.id },
      strategy: 'feature_extraction',
      compareWithScratch: true,
      hyperparameters: { epochs: 1, batchSize: 16, learningRate: 0.003, seed: 5 },
    });
    expect(transfer.model.transferGainSplit).toBe('test');
    expect(transfer.model.transferGain).toBeCloseTo(transfer.model.testEvaluation.accuracy - transfer.model.scratchAccuracy, 12);
  });

  it('says there is no validation data instead of evaluating on training images; a testSplit is held out', { timeout: 180_000 }, async () => {
    const dataset = await upload(zipOf(await digits('digits/', 12, 300)));
    const { model } = await train({
      datasetId: dataset.id,
      baseModel: 'small_cnn',
      strategy: 'scratch',
      hyperparameters: { epochs: 2, batchSize: 8, seed: 2, validationSplit: 0, testSplit: 0.25 },
    });
    expect(model.evaluation).toBeNull();
    expect(model.evaluationNote).toMatch(/^no validation data/);
    expect(model.calibration).toBeNull();
    // 12 per class × 0.25: 3 test images per class, drawn stratified and never trained on.
    expect(model.testEvaluation.samples).toBe(9);
    expect(model.testEvaluation.perClass.map((c: { support: number }) => c.support)).toEqual([3, 3, 3]);
    expect(model.metrics.reproducibility.dataset).toMatchObject({ trainImages: 27, valImages: 0, testImages: 9 });
    expect(model.testEvaluation.mostConfidentErrors.every((e: { id: string }) => e.id.startsWith('digits/'))).toBe(true);
  });

  it('refuses a validationSplit and testSplit that leave nothing to train on', async () => {
    const res = await t.http
      .post('/v1/jobs')
      .send({ datasetId: '00000000-0000-4000-8000-000000000000', baseModel: 'small_cnn', hyperparameters: { validationSplit: 0.5, testSplit: 0.5 } })
      .expect(400);
    expect(res.body.code).toBe('invalid_spec');
    expect(res.body.detail).toContain('validationSplit + testSplit must be below 1');
  });
});
