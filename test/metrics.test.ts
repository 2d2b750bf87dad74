// Prometheus metrics, scraped and parsed as Prometheus would: the API's /metrics (request
// timings by route pattern, the queue's states at scrape time, /predict timings and the model
// cache) behind METRICS_TOKEN or switched off, and a real worker process's own listener
// (finished jobs, epoch timings, liveness).
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { buildTestApp, waitFor, type TestApp } from './support/app.ts';
import { createTinyModel, expectProblem } from './support/hostile.ts';
import { digitPng, mnistFolderZip } from './support/mnist-fixtures.ts';
import { freePort, killGroup, spawnWorker, type SpawnedProcess } from './support/processes.ts';

const METRICS_TOKEN = randomBytes(24).toString('hex');
const bearer = { authorization: `Bearer ${METRICS_TOKEN}` };

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The samples of a text exposition (comments and blank lines skipped). */
function parse(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) throw new Error(`not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, key, value] of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[key!] = value!;
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

/** The value of the one sample with this name whose labels include `labels`; 0 when absent. */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (found.length > 1) throw new Error(`${name} ${JSON.stringify(labels)} matches ${found.length} samples`);
  return found[0]?.value ?? 0;
}

let t: TestApp;

async function scrape(): Promise<Sample[]> {
  const res = await request(t.app.server).get('/metrics').set(bearer).expect(200);
  expect(res.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
  return parse(res.text);
}

beforeAll(async () => {
  t = await buildTestApp({ METRICS_TOKEN });
});

afterAll(async () => {
  await t?.close();
});

describe('API /metrics', () => {
  it('is open to METRICS_TOKEN only: 401 problem+json without it or with another', async () => {
    const none = await request(t.app.server).get('/metrics');
    expectProblem(none, 401, 'unauthorized');
    expect(none.headers['www-authenticate']).toBe('Bearer realm="metrics"');
    expectProblem(await request(t.app.server).get('/metrics').set('authorization', `Bearer ${METRICS_TOKEN}x`), 401, 'unauthorized');
    expectProblem(await request(t.app.server).get('/metrics').set('authorization', METRICS_TOKEN), 401, 'unauthorized');
    // An API key is not the metrics token.
    expectProblem(await request(t.app.server).get('/metrics').set(t.auth), 401, 'unauthorized');
    const samples = await scrape();
    // prom-client's default process metrics are there too.
    expect(value(samples, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(value(samples, 'nodejs_heap_size_used_bytes')).toBeGreaterThan(0);
  });

  it('times requests by method, route pattern and status, never by raw URL', async () => {
    const route = { method: 'GET', route: '/v1/jobs/:id', status_code: '404' };
    const before = value(await scrape(), 'finetune_http_request_duration_seconds_count', route);
    const ids = [randomUUID(), randomUUID()];
    for (const id of ids) await t.http.get(`/v1/jobs/${id}`).expect(404);
    await request(t.app.server).get(`/no/such/path/${ids[0]}`).expect(404);

    const samples = await scrape();
    expect(value(samples, 'finetune_http_request_duration_seconds_count', route)).toBe(before + 2);
    expect(value(samples, 'finetune_http_request_duration_seconds_bucket', { ...route, le: '+Inf' })).toBe(before + 2);
    expect(value(samples, 'finetune_http_request_duration_seconds_sum', route)).toBeGreaterThan(0);
    expect(value(samples, 'finetune_http_request_duration_seconds_count', { route: 'unmatched', status_code: '404' })).toBeGreaterThanOrEqual(1);
    const routes = new Set(samples.filter((s) => s.name.startsWith('finetune_http_request_duration_seconds')).map((s) => s.labels.route));
    for (const r of routes) expect(r === 'unmatched' || !/[0-9a-f]{8}-/.test(r!)).toBe(true);
    expect(routes).toContain('/metrics');
  });

  it('times /predict and counts a model cache miss, then a hit', async () => {
    const { modelId } = await createTinyModel(t);
    const before = await scrape();
    const image = { instances: [{ b64: (await digitPng(1, 0)).toString('base64') }] };
    await t.http.post(`/v1/models/${modelId}/predict`).send(image).expect(200);
    const afterMiss = await scrape();
    expect(value(afterMiss, 'finetune_model_cache_misses_total')).toBe(value(before, 'finetune_model_cache_misses_total') + 1);
    expect(value(afterMiss, 'finetune_model_cache_hits_total')).toBe(value(before, 'finetune_model_cache_hits_total'));
    await t.http.post(`/v1/models/${modelId}/predict`).send(image).expect(200);
    const afterHit = await scrape();
    expect(value(afterHit, 'finetune_model_cache_misses_total')).toBe(value(afterMiss, 'finetune_model_cache_misses_total'));
    expect(value(afterHit, 'finetune_model_cache_hits_total')).toBe(value(afterMiss, 'finetune_model_cache_hits_total') + 1);
    expect(value(afterHit, 'finetune_predict_seconds_count')).toBe(value(before, 'finetune_predict_seconds_count') + 2);
    expect(value(afterHit, 'finetune_predict_seconds_sum')).toBeGreaterThan(value(before, 'finetune_predict_seconds_sum'));
    // A refused prediction is not a prediction.
    await t.http.post(`/v1/models/${randomUUID()}/predict`).send(image).expect(404);
    expect(value(await scrape(), 'finetune_predict_seconds_count')).toBe(value(afterHit, 'finetune_predict_seconds_count'));
  });

  it('reads the queue at scrape time: a job enqueued is waiting', async () => {
    const zip = await mnistFolderZip([0, 1], 4);
    const datasetId = (await t.http.post('/v1/datasets').attach('file', zip, 'd.zip').expect(201)).body.id;
    const before = value(await scrape(), 'finetune_queue_jobs', { state: 'waiting' });
    const job = (await t.http.post('/v1/jobs').send({ datasetId, baseModel: 'small_cnn', strategy: 'scratch' }).expect(202)).body;
    const samples = await scrape();
    expect(value(samples, 'finetune_queue_jobs', { state: 'waiting' })).toBe(before + 1);
    for (const state of ['active', 'delayed', 'failed', 'completed']) expect(samples.some((s) => s.name === 'finetune_queue_jobs' && s.labels.state === state)).toBe(true);
    // No worker of this file takes it: canceled at once, it leaves the queue (and no worker's
    // reconciliation ever finds it unfinished).
    await t.http.post(`/v1/jobs/${job.id}/cancel`).expect(202);
    expect(value(await scrape(), 'finetune_queue_jobs', { state: 'waiting' })).toBe(before);
  });

  it('METRICS_ENABLED=false: no /metrics route', async () => {
    const off = await buildTestApp({ METRICS_ENABLED: 'false' });
    try {
      expectProblem(await request(off.app.server).get('/metrics'), 404, 'route_not_found');
      await request(off.app.server).get('/healthz').expect(200);
    } finally {
      await off.close();
    }
  });
});

describe('worker metrics listener', () => {
  let worker: SpawnedProcess | undefined;
  let app: TestApp | undefined;

  afterAll(async () => {
    if (worker) await killGroup(worker);
    await app?.close();
  });

  it('counts a finished job and its epochs, and answers /healthz', async () => {
    // A queue of its own: only this test's job reaches this worker.
    const prefix = `${process.env.QUEUE_PREFIX}-metrics-${randomBytes(4).toString('hex')}`;
    app = await buildTestApp({ QUEUE_PREFIX: prefix });
    const port = await freePort();
    worker = spawnWorker({ QUEUE_PREFIX: prefix, WORKER_METRICS_PORT: String(port), WORKER_METRICS_HOST: '127.0.0.1', METRICS_TOKEN, ML_BACKEND: 'wasm' });
    const base = `http://127.0.0.1:${port}`;
    const health = await waitFor('the worker metrics listener', async () => {
      try {
        return await fetch(`${base}/healthz`);
      } catch {
        if (worker!.child.exitCode !== null) throw new Error(`worker exited: ${worker!.output()}`);
        return undefined;
      }
    }, 30_000);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: 'ok' });

    const unauthorized = await fetch(`${base}/metrics`);
    expect(unauthorized.status).toBe(401);
    expect(unauthorized.headers.get('content-type')).toBe('application/problem+json');
    expect((await fetch(`${base}/nope`)).status).toBe(404);
    const scrapeWorker = async () => {
      const res = await fetch(`${base}/metrics`, { headers: bearer });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
      return parse(await res.text());
    };
    const initial = await scrapeWorker();
    expect(value(initial, 'process_resident_memory_bytes')).toBeGreaterThan(0);
    expect(value(initial, 'finetune_jobs_total', { strategy: 'scratch', status: 'succeeded' })).toBe(0);

    const epochs = 2;
    const zip = await mnistFolderZip([0, 1], 8);
    const datasetId = (await app.http.post('/v1/datasets').attach('file', zip, 'd.zip').expect(201)).body.id;
    const spec = { datasetId, baseModel: 'small_cnn', strategy: 'scratch', hyperparameters: { epochs, batchSize: 8, seed: 1 } };
    const jobId = (await app.http.post('/v1/jobs').send(spec).expect(202)).body.id;
    const job = await waitFor('the job to finish', async () => {
      const body = (await app!.http.get(`/v1/jobs/${jobId}`).expect(200)).body;
      return ['succeeded', 'failed', 'canceled'].includes(body.status) ? body : undefined;
    }, 60_000);
    expect(job.status, JSON.stringify(job.error)).toBe('succeeded');

    // Counted right after the transition commits: a scrape may land in between.
    const samples = await waitFor('the job to be counted', async () => {
      const s = await scrapeWorker();
      return value(s, 'finetune_jobs_total', { strategy: 'scratch', status: 'succeeded' }) > 0 ? s : undefined;
    }, 10_000);
    expect(value(samples, 'finetune_jobs_total', { strategy: 'scratch', status: 'succeeded' })).toBe(1);
    expect(samples.filter((s) => s.name === 'finetune_jobs_total' && s.value > 0)).toHaveLength(1);
    expect(value(samples, 'finetune_training_epoch_seconds_count', { strategy: 'scratch' })).toBe(epochs);
    expect(value(samples, 'finetune_training_epoch_seconds_sum', { strategy: 'scratch' })).toBeGreaterThan(0);
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
  });
});
