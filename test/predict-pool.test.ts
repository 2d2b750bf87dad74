// /predict on the inference pool (PREDICT_WORKERS): ONNX Runtime runs on worker threads, so the
// API's event loop stays free while a prediction runs. Predictions through the pool equal those
// computed in-process (PREDICT_WORKERS=0); a model that does not convert to ONNX still runs on
// tfjs in-process; a worker that dies fails only the request it held (503) and is replaced.
// Nothing here depends on timing: the pool's own counters say when a run is in a worker, and
// the test worker exits through a test hook at a known point.
import { availableParallelism } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { initBackend, InferencePool, poolThreads, tf } from '@finetune/ml';
import { loadConfig } from '../packages/core/src/config.ts';
import { buildTestApp, type TestApp } from './support/app.ts';
import { expectProblem, storeModel as storeTrainedModel } from './support/hostile.ts';
import { digitPng } from './support/mnist-fixtures.ts';

const LABELS = ['a', 'b', 'c'];

interface Prediction {
  label: string;
  score: number;
  top: { label: string; score: number }[];
}

interface PooledApp {
  t: TestApp;
  pool: InferencePool;
}

let inProcess: TestApp; // PREDICT_WORKERS=0: ONNX Runtime on the main thread, as before the pool
let one: PooledApp; // one worker
let two: PooledApp; // two workers
let convModel: string; // converts to ONNX: runs in the pool
let heavyModel: string; // converts; 32 images take long enough to watch the event loop meanwhile
let tfjsModel: string; // has a layer the converter does not know: tfjs, in-process
let pngs: Buffer[];

async function pooledApp(workers: number): Promise<PooledApp> {
  let pool: InferencePool | undefined;
  const t = await buildTestApp({ PREDICT_WORKERS: String(workers) }, { onInferencePool: (p) => (pool = p) });
  expect(pool?.size).toBe(workers);
  return { t, pool: pool! };
}

/** Stores `model` as a trained model of the default tenant (rows and files), like a finished job's. */
async function storeModel(t: TestApp, model: tf.LayersModel, inputSize: number): Promise<string> {
  return (await storeTrainedModel(t, model, { labels: LABELS, inputSize })).modelId;
}

function predict(t: TestApp, modelId: string, images: Buffer[]) {
  return t.http.post(`/v1/models/${modelId}/predict`).send({ instances: images.map((image) => ({ b64: image.toString('base64') })) });
}

async function predictions(t: TestApp, modelId: string, images: Buffer[]): Promise<Prediction[]> {
  const res = await predict(t, modelId, images);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.predictions;
}

function expectSamePredictions(actual: Prediction[], expected: Prediction[]) {
  expect(actual.map((p) => p.label)).toEqual(expected.map((p) => p.label));
  actual.forEach((p, i) => {
    const e = expected[i]!;
    // Another thread, another session, possibly another thread count: float rounding may differ.
    expect(p.score).toBeCloseTo(e.score, 5);
    expect(p.top.map((x) => x.label)).toEqual(e.top.map((x) => x.label));
    p.top.forEach((x, j) => expect(x.score).toBeCloseTo(e.top[j]!.score, 5));
  });
}

/** Lets the event loop turn until `done()` holds; the work it waits for happens on other threads. */
async function until(what: string, done: () => boolean): Promise<void> {
  const deadline = Date.now() + 120_000;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

beforeAll(async () => {
  inProcess = await buildTestApp({ PREDICT_WORKERS: '0' });
  one = await pooledApp(1);
  two = await pooledApp(2);
  await initBackend(inProcess.config.mlBackend);
  const conv = (inputSize: number, filters: number[]) =>
    tf.sequential({
      layers: [
        ...filters.map((f, i) =>
          tf.layers.conv2d({ ...(i === 0 ? { inputShape: [inputSize, inputSize, 3] } : {}), filters: f, kernelSize: 3, padding: 'same', activation: 'relu' }),
        ),
        tf.layers.globalAveragePooling2d({}),
        tf.layers.dense({ units: LABELS.length, activation: 'softmax' }),
      ],
    });
  convModel = await storeModel(inProcess, conv(28, [8, 16]), 28);
  // About 1.8 GFLOP an image: 32 of them keep a worker busy for a second or more.
  heavyModel = await storeModel(inProcess, conv(64, [64, 128, 128]), 64);
  tfjsModel = await storeModel(
    inProcess,
    tf.sequential({
      layers: [
        tf.layers.permute({ inputShape: [28, 28, 3], dims: [2, 1, 3] }),
        tf.layers.flatten({}),
        tf.layers.dense({ units: LABELS.length, activation: 'softmax' }),
      ],
    }),
    28,
  );
  pngs = await Promise.all(Array.from({ length: 10 }, (_, d) => digitPng(d, 900)));
});

afterAll(async () => {
  for (const t of [inProcess, one?.t, two?.t]) await t?.close();
});

describe('/predict on the inference pool', () => {
  it('gives the predictions in-process ONNX Runtime gives, with one worker and with two', async () => {
    const requests = [[pngs[0]!], [pngs[1]!, pngs[2]!, pngs[3]!], pngs.slice(4)];
    const expected: Prediction[][] = [];
    for (const images of requests) expected.push(await predictions(inProcess, convModel, images));
    for (const { t, pool } of [one, two]) {
      const before = pool.completed;
      // Sequential, then all at once (with two workers, spread over both).
      for (const [i, images] of requests.entries()) expectSamePredictions(await predictions(t, convModel, images), expected[i]!);
      const burst = await Promise.all(requests.map((images) => predictions(t, convModel, images)));
      burst.forEach((p, i) => expectSamePredictions(p, expected[i]!));
      // Every run went through a worker: none fell back to tfjs.
      expect(pool.completed - before).toBe(2 * requests.length);
    }
  });

  it('runs a model that does not convert to ONNX on tfjs, in-process, as without the pool', async () => {
    const expected = await predictions(inProcess, tfjsModel, pngs.slice(0, 4));
    const before = one.pool.completed;
    expectSamePredictions(await predictions(one.t, tfjsModel, pngs.slice(0, 4)), expected);
    expect(one.pool.completed).toBe(before);
  });

  it('keeps serving other requests while a worker runs a prediction', async () => {
    const { t, pool } = one;
    await predictions(t, heavyModel, [pngs[0]!]); // loads the model and opens the worker's session
    const before = pool.completed;
    let finished = false;
    const big = predict(t, heavyModel, Array.from({ length: 32 }, (_, i) => pngs[i % 10]!)).then((res) => {
      finished = true;
      return res;
    });
    // The big request has been decoded and its run handed to the worker.
    await until('the big prediction to reach the worker', () => pool.busy === 1 || finished);
    expect(finished).toBe(false);
    // Sent after that run started, these are answered while it is still running: the event loop
    // is free. (On the main thread, ONNX Runtime would hold it until the run ended.)
    const health = await request(t.app.server).get('/healthz');
    const model = await t.http.get(`/v1/models/${heavyModel}`);
    expect(finished).toBe(false);
    expect(pool.completed).toBe(before);
    expect(health.status).toBe(200);
    expect(model.status).toBe(200);
    const res = await big;
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.predictions).toHaveLength(32);
    expect(pool.completed).toBe(before + 1);
  });

  it('fails only the request a dying worker held, with a 503, and serves the next ones', async () => {
    const { t, pool } = two;
    const expected = await predictions(inProcess, convModel, [pngs[5]!]);
    await predictions(t, convModel, [pngs[5]!]);
    // The worker that receives the next run exits holding it; the requests sent with it run on
    // the other worker, or on the replacement.
    pool.exitOnNextRun();
    const burst = await Promise.all(Array.from({ length: 4 }, () => predict(t, convModel, [pngs[5]!])));
    const failed = burst.filter((res) => res.status !== 200);
    expect(failed).toHaveLength(1);
    expectProblem(failed[0]!, 503, 'inference_unavailable');
    expect(failed[0]!.body.detail).toMatch(/inference worker .* stopped/);
    for (const res of burst.filter((r) => r.status === 200)) expectSamePredictions(res.body.predictions, expected);
    // The pool is whole again: two workers, and both can run.
    const next = await Promise.all(Array.from({ length: 4 }, () => predictions(t, convModel, [pngs[5]!])));
    next.forEach((p) => expectSamePredictions(p, expected));
    expect(pool.size).toBe(2);
  });
});

describe('InferencePool', () => {
  it('fails its batches with InferenceWorkerLost once closed', async () => {
    const pool = new InferencePool({ workers: 1, sessionsPerWorker: 1 });
    await pool.close();
    const model = { key: 'k', bytes: new Uint8Array(), inputName: 'x', outputName: 'y', inputShape: [1], outputShape: [1] };
    await expect(pool.run(model, new Float32Array(1), 1)).rejects.toMatchObject({ name: 'InferenceWorkerLost' });
  });
});

describe('configuration', () => {
  it('reads PREDICT_WORKERS (default 2, 1 on a single core) and refuses bad values; workers share the threads', () => {
    expect(loadConfig({ ...process.env, PREDICT_WORKERS: '' }).predictWorkers).toBe(Math.min(2, availableParallelism()));
    expect(loadConfig({ ...process.env, PREDICT_WORKERS: '0' }).predictWorkers).toBe(0);
    expect(loadConfig({ ...process.env, PREDICT_WORKERS: '4' }).predictWorkers).toBe(4);
    for (const value of ['-1', '1.5', '65', 'many']) {
      expect(() => loadConfig({ ...process.env, PREDICT_WORKERS: value })).toThrow('PREDICT_WORKERS must be an integer in');
    }
    expect(poolThreads(1, { ML_THREADS: '4' })).toBe(4);
    expect(poolThreads(2, { ML_THREADS: '4' })).toBe(2);
    expect(poolThreads(3, { ML_THREADS: '4' })).toBe(1);
    expect(poolThreads(8, { ML_THREADS: '2' })).toBe(1);
  });
});
