// /predict micro-batching (PREDICT_BATCH_WINDOW_MS, PREDICT_MAX_BATCH): concurrent requests for one
// model share a forward run, and each gets exactly the predictions it would get alone, scored with
// its own threshold; a bad image is refused in its own request and never reaches a shared run; the
// cap on a run's images splits runs. Runs are counted through the API's
// finetune_predict_batch_images histogram. Nothing here depends on timing: the window is long
// (500 ms) and the requests of a burst are sent together.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { Histogram, Registry } from 'prom-client';
import { decodeImage, forwardImages, initBackend, tf } from '@finetune/ml';
import { loadConfig } from '../packages/core/src/config.ts';
import { PredictBatcher } from '../apps/api/src/services/predict-batcher.ts';
import { buildTestApp, type TestApp } from './support/app.ts';
import { createTinyModel, expectProblem, svgUseBomb } from './support/hostile.ts';
import { digitPng } from './support/mnist-fixtures.ts';

const METRICS_TOKEN = randomBytes(24).toString('hex');
const WINDOW_MS = '500';
const LABELS = ['a', 'b', 'c'];

interface Prediction {
  label: string;
  score: number;
  top: { label: string; score: number }[];
}

/** One /predict call: its images, its threshold, JSON (base64) or multipart. */
interface Call {
  images: Buffer[];
  threshold?: number;
  multipart?: boolean;
}

let alone: TestApp; // window 0: every request runs by itself, as without batching
let batched: TestApp; // window 500 ms, runs of up to 32 images
let capped: TestApp; // window 500 ms, runs of up to 4 images
let modelId: string;
let pngs: Buffer[];

function send(t: TestApp, call: Call) {
  const url = `/v1/models/${modelId}/predict${call.threshold === undefined ? '' : `?threshold=${call.threshold}`}`;
  if (call.multipart) return t.http.post(url).attach('file', call.images[0]!, 'digit.png');
  return t.http.post(url).send({ instances: call.images.map((image) => ({ b64: image.toString('base64') })) });
}

/** The calls one after another on the window-0 app: what each must get in a burst too. */
async function sequential(calls: Call[]): Promise<Prediction[][]> {
  const out: Prediction[][] = [];
  for (const call of calls) {
    const res = await send(alone, call);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    out.push(res.body.predictions);
  }
  return out;
}

/** Every call sent at once. */
function burst(t: TestApp, calls: Call[]) {
  return Promise.all(calls.map((call) => send(t, call)));
}

function expectSamePredictions(actual: Prediction[], expected: Prediction[]) {
  expect(actual.map((p) => p.label)).toEqual(expected.map((p) => p.label));
  actual.forEach((p, i) => {
    const e = expected[i]!;
    // A row computed in a larger batch may differ from the row computed alone by float rounding.
    expect(p.score).toBeCloseTo(e.score, 5);
    expect(p.top.map((x) => x.label)).toEqual(e.top.map((x) => x.label));
    p.top.forEach((x, j) => expect(x.score).toBeCloseTo(e.top[j]!.score, 5));
  });
}

/** finetune_predict_batch_images as the app's /metrics shows it: runs, images, runs of ≤ 4 images. */
async function runs(t: TestApp) {
  const res = await request(t.app.server).get('/metrics').set('authorization', `Bearer ${METRICS_TOKEN}`).expect(200);
  const sample = (pattern: RegExp) => Number(pattern.exec(res.text)?.[1] ?? 0);
  return {
    runs: sample(/^finetune_predict_batch_images_count (\S+)$/m),
    images: sample(/^finetune_predict_batch_images_sum (\S+)$/m),
    upTo4: sample(/^finetune_predict_batch_images_bucket\{le="4"\} (\S+)$/m),
  };
}

/** What changed in the histogram while `act` ran. */
async function counting<T>(t: TestApp, act: () => Promise<T>): Promise<{ result: T; runs: number; images: number; upTo4: number }> {
  const before = await runs(t);
  const result = await act();
  const after = await runs(t);
  return { result, runs: after.runs - before.runs, images: after.images - before.images, upTo4: after.upTo4 - before.upTo4 };
}

beforeAll(async () => {
  alone = await buildTestApp({ METRICS_TOKEN, PREDICT_BATCH_WINDOW_MS: '0' });
  batched = await buildTestApp({ METRICS_TOKEN, PREDICT_BATCH_WINDOW_MS: WINDOW_MS, PREDICT_MAX_BATCH: '32' });
  capped = await buildTestApp({ METRICS_TOKEN, PREDICT_BATCH_WINDOW_MS: WINDOW_MS, PREDICT_MAX_BATCH: '4' });
  // One model for all three apps (one database): a calibrated one, so scores go through the temperature.
  ({ modelId } = await createTinyModel(alone, LABELS));
  await alone.deps.db.model.update({ where: { id: modelId }, data: { calibration: { temperature: 1.7 } } });
  pngs = await Promise.all(Array.from({ length: 10 }, (_, d) => digitPng(d, 900)));
  // Each app loads the model (and opens its ONNX Runtime session) before any burst, so a burst's
  // requests are not held apart by a first load.
  for (const t of [alone, batched, capped]) await send(t, { images: [pngs[0]!] }).expect(200);
});

afterAll(async () => {
  for (const t of [alone, batched, capped]) await t?.close();
});

describe('/predict micro-batching', () => {
  it('gives concurrent requests sharing a run the predictions each gets alone, with its own threshold', async () => {
    // A threshold just above image 0's score makes it "unknown" in one request, while another
    // request in the same run sees its label: scoring is per caller, after the shared pass.
    const first = (await sequential([{ images: [pngs[0]!] }]))[0]![0]!;
    const calls: Call[] = [
      { images: [pngs[0]!] },
      { images: [pngs[0]!], threshold: first.score + (1 - first.score) / 2 },
      { images: [pngs[1]!, pngs[2]!, pngs[3]!], threshold: 0 },
      { images: [pngs[4]!], multipart: true },
      { images: [pngs[5]!, pngs[0]!] },
      { images: [pngs[6]!], threshold: first.score / 2 },
      { images: [pngs[7]!, pngs[8]!] },
      { images: [pngs[9]!] },
    ];
    const images = calls.reduce((n, c) => n + c.images.length, 0);

    const reference = await counting(alone, () => sequential(calls));
    // Without a window every request is a run of its own.
    expect(reference).toMatchObject({ runs: calls.length, images });
    expect(reference.result[0]![0]!.label).not.toBe('unknown');
    expect(reference.result[1]![0]!.label).toBe('unknown');

    const shared = await counting(batched, () => burst(batched, calls));
    shared.result.forEach((res, i) => {
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expectSamePredictions(res.body.predictions, reference.result[i]!);
    });
    expect(shared.images).toBe(images);
    expect(shared.runs).toBeGreaterThanOrEqual(1);
    expect(shared.runs).toBeLessThan(calls.length);
  });

  it('refuses a bad image in its own request while the rest of the burst shares a run and succeeds', async () => {
    const good: Call[] = [0, 1, 2, 3, 4].map((i) => ({ images: [pngs[i]!] }));
    const reference = await sequential(good);
    const bad: Call[] = [
      { images: [Buffer.from('hello, not an image at all')] },
      { images: [svgUseBomb()] },
      { images: [pngs[5]!, Buffer.from('half a request is still a bad request')] },
    ];
    const shared = await counting(batched, () => burst(batched, [good[0]!, bad[0]!, good[1]!, good[2]!, bad[1]!, good[3]!, bad[2]!, good[4]!]));
    const [g0, b0, g1, g2, b1, g3, b2, g4] = shared.result;
    [g0, g1, g2, g3, g4].forEach((res, i) => {
      expect(res!.status, JSON.stringify(res!.body)).toBe(200);
      expectSamePredictions(res!.body.predictions, reference[i]!);
    });
    expectProblem(b0!, 422, 'invalid_image');
    expectProblem(b1!, 415, 'unsupported_image_format');
    expectProblem(b2!, 422, 'invalid_image');
    expect(b2!.body.detail).toMatch(/^instance 1/);
    // Only the good requests' images reached a run.
    expect(shared.images).toBe(good.length);
    expect(shared.runs).toBeLessThan(good.length);
  });

  it('splits runs at PREDICT_MAX_BATCH images; a larger request runs alone', async () => {
    const calls: Call[] = [
      ...[0, 1, 2, 3, 4, 5].map((i) => ({ images: [pngs[i]!] })),
      { images: [pngs[6]!, pngs[7]!, pngs[8]!, pngs[9]!, pngs[0]!, pngs[1]!] },
    ];
    const reference = await sequential(calls);
    const split = await counting(capped, () => burst(capped, calls));
    split.result.forEach((res, i) => {
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expectSamePredictions(res.body.predictions, reference[i]!);
    });
    expect(split.images).toBe(12);
    // Six single images need two runs of at most four; the six-image request is a run of its own.
    expect(split.runs).toBeGreaterThanOrEqual(3);
    expect(split.upTo4).toBe(split.runs - 1);
  });
});

describe('PredictBatcher', () => {
  it("hands each caller its own rows of a shared run, and a failed run's error to every caller in it", async () => {
    await initBackend(alone.config.mlBackend);
    const model = tf.sequential({ layers: [tf.layers.flatten({ inputShape: [28, 28, 3] }), tf.layers.dense({ units: 3, activation: 'softmax' })] });
    const images = await Promise.all(pngs.slice(0, 5).map((png) => decodeImage(png, 28)));
    const registry = new Registry();
    const predictBatchImages = new Histogram({ name: 'batch_images', help: 'images per run', buckets: [1, 2, 4, 8], registers: [registry] });
    const batcher = new PredictBatcher({ windowMs: 10_000, maxImages: 5 }, { predictBatchImages });
    const solo = await forwardImages(model, images);

    // 2 + 3 images reach the cap of 5: the run starts at once, long before the window ends.
    const [a, b] = await Promise.all([batcher.forward(model, images.slice(0, 2)), batcher.forward(model, images.slice(2))]);
    expect(a.shape).toEqual([3]);
    expect(Array.from(a.output)).toEqual(Array.from(solo.output.subarray(0, 6)).map((x) => expect.closeTo(x, 6)));
    expect(Array.from(b.output)).toEqual(Array.from(solo.output.subarray(6)).map((x) => expect.closeTo(x, 6)));
    expect((await predictBatchImages.get()).values.find((v) => v.metricName === 'batch_images_count')?.value).toBe(1);

    // Images of another size than the model takes: the engine refuses the run, and both callers get its error.
    const wrong = await Promise.all(pngs.slice(0, 5).map((png) => decodeImage(png, 27)));
    const settled = await Promise.allSettled([batcher.forward(model, wrong.slice(0, 1)), batcher.forward(model, wrong.slice(1))]);
    expect(settled.map((s) => s.status)).toEqual(['rejected', 'rejected']);
    const [r0, r1] = settled as PromiseRejectedResult[];
    expect((r0!.reason as Error).message).toMatch(/expected/);
    expect(r0!.reason).toBe(r1!.reason);
    model.dispose();
  });
});

describe('configuration', () => {
  it('reads PREDICT_BATCH_WINDOW_MS and PREDICT_MAX_BATCH, and refuses bad values at start-up', () => {
    expect(loadConfig({ ...process.env, PREDICT_BATCH_WINDOW_MS: '', PREDICT_MAX_BATCH: '' }).predictBatch).toEqual({ windowMs: 0, maxImages: 32 });
    expect(loadConfig({ ...process.env, PREDICT_BATCH_WINDOW_MS: '5', PREDICT_MAX_BATCH: '64' }).predictBatch).toEqual({ windowMs: 5, maxImages: 64 });
    for (const [name, value] of [
      ['PREDICT_BATCH_WINDOW_MS', '-1'],
      ['PREDICT_BATCH_WINDOW_MS', '2.5'],
      ['PREDICT_BATCH_WINDOW_MS', '1001'],
      ['PREDICT_MAX_BATCH', '0'],
      ['PREDICT_MAX_BATCH', 'lots'],
      ['PREDICT_MAX_BATCH', '1025'],
    ]) {
      expect(() => loadConfig({ ...process.env, [name!]: value })).toThrow(`${name} must be an integer in`);
    }
  });
});
