// The API describes itself: every route is in the OpenAPI document with a response schema, the
// document is valid OpenAPI 3.1, and what the routes really answer matches their schemas.
import { Validator } from '@seriousme/openapi-schema-validator';
import { Ajv, type ValidateFunction } from 'ajv';
import ajvFormats from 'ajv-formats';
import type { RouteOptions } from 'fastify';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from './support/app.ts';
import { Dataset, Job, Model } from '../apps/api/src/response-schemas.ts';
import { presentDataset } from '../apps/api/src/services/datasets.service.ts';
import { presentJob } from '../apps/api/src/services/jobs.service.ts';
import { presentModel } from '../apps/api/src/services/models.service.ts';
import { createTinyModel } from './support/hostile.ts';
import { modelZip, saveModel, smallClassifier } from './support/base-model-fixtures.ts';
import { digitPng, zipOf } from './support/mnist-fixtures.ts';

const routes: RouteOptions[] = [];
let t: TestApp;
let doc: { openapi: string; paths: Record<string, Record<string, { responses?: Record<string, unknown>; security?: unknown[] }>> };

/** Every route but those marked hidden: the documentation itself and the dashboard's static files. */
const documented = () => routes.filter((r) => !(r.schema as { hide?: boolean } | undefined)?.hide);
const methodsOf = (r: RouteOptions) => (Array.isArray(r.method) ? r.method : [r.method]).filter((m) => m !== 'HEAD');
const openapiPath = (url: string) => url.replace(/:(\w+)/g, '{$1}');

beforeAll(async () => {
  t = await buildTestApp({}, { onRoute: (route) => routes.push(route) });
  doc = (await request(t.app.server).get('/openapi.json').expect(200).expect('content-type', /json/)).body;
});

afterAll(async () => {
  await t?.close();
});

describe('the OpenAPI document', () => {
  it('is valid OpenAPI 3.1', async () => {
    expect(doc.openapi).toBe('3.1.0');
    const result = await new Validator().validate(doc as unknown as Parameters<Validator['validate']>[0]);
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
  });

  it('has every registered route, each with a response schema for success and for errors', () => {
    expect(documented().length).toBeGreaterThan(20);
    // Hidden are only pages and files, never an API route.
    const hidden = routes.filter((r) => !documented().includes(r)).map((r) => r.url);
    expect(hidden.filter((url) => url.startsWith('/v1') || url === '/metrics' || url.endsWith('z'))).toEqual([]);
    const missing: string[] = [];
    for (const route of documented()) {
      for (const method of methodsOf(route)) {
        const name = `${method} ${route.url}`;
        const operation = doc.paths[openapiPath(route.url)]?.[method.toLowerCase()];
        if (!operation) {
          missing.push(`${name}: not in the document`);
          continue;
        }
        const response = (route.schema?.response ?? {}) as Record<string, unknown>;
        if (!Object.keys(response).some((status) => /^2\d\d$/.test(status))) missing.push(`${name}: no 2xx response schema`);
        if (route.url.startsWith('/v1') && !('4xx' in response)) missing.push(`${name}: no 4xx (problem) response schema`);
      }
    }
    expect(missing).toEqual([]);
  });

  it('says which routes need an API key', () => {
    for (const route of documented()) {
      for (const method of methodsOf(route)) {
        const operation = doc.paths[openapiPath(route.url)]![method.toLowerCase()]!;
        expect(operation.security, `${method} ${route.url}`).toEqual(route.url.startsWith('/v1') ? [{ apiKey: [] }] : []);
      }
    }
  });

  it('is browsable at /docs with assets served from here (no CDN)', async () => {
    const page = await request(t.app.server).get('/docs/').redirects(1).expect(200);
    expect(page.headers['content-type']).toContain('text/html');
    expect(page.text).not.toMatch(/<script[^>]+src="https?:/);
    const scripts = [...page.text.matchAll(/<script[^>]+src="([^"]+)"/g)].map((m) => m[1]!);
    expect(scripts.length).toBeGreaterThan(0);
    for (const src of scripts) {
      const url = new URL(src, 'http://x/docs/').pathname;
      await request(t.app.server).get(url).expect(200);
    }
  });

  it('can be turned off (DOCS_ENABLED=false)', async () => {
    const off = await buildTestApp({ DOCS_ENABLED: 'false' });
    try {
      await request(off.app.server).get('/openapi.json').expect(404);
      await request(off.app.server).get('/docs/').expect(404);
    } finally {
      await off.close();
    }
  });
});

describe('real responses match their schemas', () => {
  const ajv = new Ajv({ strict: false, allErrors: true });
  ((ajvFormats as unknown as { default?: (a: Ajv) => void }).default ?? (ajvFormats as unknown as (a: Ajv) => void))(ajv);
  const compiled = new Map<object, ValidateFunction>();
  const checked = new Set<string>();

  /** Validates a response against the schema its route declares for that status. */
  function conforms(method: string, url: string, res: request.Response): request.Response {
    const route = routes.find((r) => r.url === url && methodsOf(r).includes(method));
    expect(route, `${method} ${url} is registered`).toBeDefined();
    const responses = (route!.schema?.response ?? {}) as Record<string, object>;
    const schema = responses[String(res.status)] ?? responses[`${String(res.status)[0]}xx`];
    expect(schema, `${method} ${url} declares a schema for ${res.status}`).toBeDefined();
    if (res.status !== 204 && (res.headers['content-type'] ?? '').includes('json')) {
      let validate = compiled.get(schema!);
      if (!validate) compiled.set(schema!, (validate = ajv.compile(schema!)));
      expect(validate(res.body), `${method} ${url} → ${res.status}: ${ajv.errorsText(validate.errors)}`).toBe(true);
    }
    checked.add(`${method} ${url}`);
    return res;
  }

  it('on every route, for successes and problems', async () => {
    const http = t.http;
    const png = await digitPng(3, 0);
    const zip = zipOf({ 'a/1.png': png, 'b/1.png': png, '__proto__/1.png': png });

    conforms('GET', '/healthz', await request(t.app.server).get('/healthz'));
    conforms('GET', '/readyz', await request(t.app.server).get('/readyz'));
    conforms('GET', '/metrics', await request(t.app.server).get('/metrics'));
    conforms('GET', '/v1/base-models', await http.get('/v1/base-models'));

    const tenant = conforms('POST', '/v1/tenants', await http.post('/v1/tenants').send({ name: 'schema' }));
    conforms('GET', '/v1/tenants', await http.get('/v1/tenants?order=asc'));
    conforms('GET', '/v1/tenants/:id', await http.get(`/v1/tenants/${tenant.body.id}`));
    conforms('PATCH', '/v1/tenants/:id', await http.patch(`/v1/tenants/${tenant.body.id}`).send({ quotas: { models: 5, storedBytes: null } }));
    const key = conforms('POST', '/v1/tenants/:id/api-keys', await http.post(`/v1/tenants/${tenant.body.id}/api-keys`).send({ name: 'k' }));
    conforms('GET', '/v1/api-keys', await http.get('/v1/api-keys'));
    conforms('GET', '/v1/usage', await http.get('/v1/usage'));

    const dataset = conforms('POST', '/v1/datasets', await http.post('/v1/datasets').attach('file', zip, 'd.zip'));
    expect(dataset.status).toBe(201);
    expect(dataset.body.counts.train).toEqual(JSON.parse('{"a": 1, "b": 1, "__proto__": 1}'));
    conforms('GET', '/v1/datasets', await http.get('/v1/datasets'));
    conforms('GET', '/v1/datasets/:id', await http.get(`/v1/datasets/${dataset.body.id}`));
    conforms('GET', '/v1/datasets/:id/report', await http.get(`/v1/datasets/${dataset.body.id}/report`));
    const direct = conforms('POST', '/v1/datasets/uploads', await http.post('/v1/datasets/uploads').send({ filename: 'direct.zip', size: zip.length }));
    expect((await fetch(direct.body.url, { method: 'PUT', headers: direct.body.headers, body: new Uint8Array(zip) })).status).toBe(200);
    expect(conforms('POST', '/v1/datasets/uploads/:uploadId/complete', await http.post(`/v1/datasets/uploads/${direct.body.uploadId}/complete`)).status).toBe(201);
    const sample = conforms('GET', '/v1/datasets/:id/samples', await http.get(`/v1/datasets/${dataset.body.id}/samples?class=a&index=0`));
    expect(sample.status).toBe(200);
    expect(sample.headers['content-type']).toBe('image/webp');

    const job = conforms(
      'POST',
      '/v1/jobs',
      await http.post('/v1/jobs').send({ datasetId: dataset.body.id, baseModel: 'small_cnn', strategy: 'scratch', hyperparameters: { epochs: 1 } }),
    );
    expect(job.status).toBe(202);
    conforms('GET', '/v1/jobs', await http.get(`/v1/jobs?datasetId=${dataset.body.id}`));
    conforms('GET', '/v1/jobs/:id', await http.get(`/v1/jobs/${job.body.id}`));
    conforms('GET', '/v1/jobs/:id/metrics', await http.get(`/v1/jobs/${job.body.id}/metrics`));
    conforms('GET', '/v1/jobs/:id/checkpoints', await http.get(`/v1/jobs/${job.body.id}/checkpoints`));
    conforms('POST', '/v1/jobs/:id/cancel', await http.post(`/v1/jobs/${job.body.id}/cancel`));
    // A finished job's stream is its status and `done`, then it closes.
    const events = conforms('GET', '/v1/jobs/:id/events', await http.get(`/v1/jobs/${job.body.id}/events`).buffer(true));
    expect(events.headers['content-type']).toContain('text/event-stream');
    expect(events.text).toContain('event: done');
    conforms('DELETE', '/v1/jobs/:id', await http.delete(`/v1/jobs/${job.body.id}`));
    // No worker runs here: the sweep stays queued until it is canceled, with no trial.
    const sweep = conforms(
      'POST',
      '/v1/sweeps',
      await http.post('/v1/sweeps').send({ datasetId: dataset.body.id, baseModel: 'small_cnn', strategy: 'scratch', space: { learningRate: { min: 1e-3, max: 1e-2, log: true } }, maxTrials: 2 }),
    );
    expect(sweep.status).toBe(202);
    conforms('GET', '/v1/sweeps', await http.get('/v1/sweeps'));
    conforms('GET', '/v1/sweeps/:id', await http.get(`/v1/sweeps/${sweep.body.id}`));
    conforms('GET', '/v1/jobs', await http.get(`/v1/jobs?sweepId=${sweep.body.id}`));
    expect(conforms('POST', '/v1/sweeps/:id/cancel', await http.post(`/v1/sweeps/${sweep.body.id}/cancel`)).status).toBe(202);
    expect(conforms('DELETE', '/v1/sweeps/:id', await http.delete(`/v1/sweeps/${sweep.body.id}`)).status).toBe(204);
    conforms('DELETE', '/v1/datasets/:id', await http.delete(`/v1/datasets/${dataset.body.id}`));

    const tiny = await createTinyModel(t);
    conforms('GET', '/v1/models', await http.get('/v1/models'));
    conforms('GET', '/v1/models/:id', await http.get(`/v1/models/${tiny.modelId}`));
    conforms('GET', '/v1/models/:id/download', await http.get(`/v1/models/${tiny.modelId}/download`));
    const predicted = conforms('POST', '/v1/models/:id/predict', await http.post(`/v1/models/${tiny.modelId}/predict`).attach('file', png, 'x.png'));
    expect(predicted.status).toBe(200);
    const patched = conforms('PATCH', '/v1/models/:id', await http.patch(`/v1/models/${tiny.modelId}`).send({ confidenceThreshold: 0.75 }));
    expect(patched.body.confidenceThreshold).toBe(0.75);
    expect(conforms('POST', '/v1/models/:id/predict', await http.post(`/v1/models/${tiny.modelId}/predict?threshold=1`).attach('file', png, 'x.png')).status).toBe(200);
    // No worker in this file: the batch stays queued and its results are a 409 problem
    // (test/batch-predictions.test.ts reads real results).
    const batch = conforms('POST', '/v1/models/:id/batch-predictions', await http.post(`/v1/models/${tiny.modelId}/batch-predictions`).send({ datasetId: tiny.datasetId }));
    expect(batch.status).toBe(202);
    conforms('GET', '/v1/batch-predictions', await http.get('/v1/batch-predictions'));
    conforms('GET', '/v1/batch-predictions/:id', await http.get(`/v1/batch-predictions/${batch.body.id}`));
    expect(conforms('GET', '/v1/batch-predictions/:id/results', await http.get(`/v1/batch-predictions/${batch.body.id}/results`)).status).toBe(409);
    conforms('DELETE', '/v1/batch-predictions/:id', await http.delete(`/v1/batch-predictions/${batch.body.id}`));

    // A custom base: a zip validated at once (201), a URL queued for a worker (202; none runs here).
    const custom = conforms(
      'POST',
      '/v1/base-models',
      await http.post('/v1/base-models').field('embeddingLayer', 'embedding').attach('file', modelZip(await saveModel(await smallClassifier())), 'm.zip'),
    );
    expect(custom.status).toBe(201);
    const hosted = conforms('POST', '/v1/base-models', await http.post('/v1/base-models').send({ url: 'https://models.example/net/model.json', embeddingLayer: 'avg_pool', inputSize: 224 }));
    expect(hosted.status).toBe(202);
    const bases = conforms('GET', '/v1/base-models', await http.get('/v1/base-models'));
    expect(bases.body.items.map((b: { id: string }) => b.id)).toEqual(expect.arrayContaining(['mobilenet_v2', custom.body.id, hosted.body.id]));
    conforms('GET', '/v1/base-models/:id', await http.get(`/v1/base-models/${custom.body.id}`));
    expect(conforms('DELETE', '/v1/base-models/:id', await http.delete(`/v1/base-models/${custom.body.id}`)).status).toBe(204);
    expect(conforms('DELETE', '/v1/base-models/:id', await http.delete(`/v1/base-models/${hosted.body.id}`)).status).toBe(204);
    expect(conforms('GET', '/v1/base-models/:id', await http.get(`/v1/base-models/${custom.body.id}`)).status).toBe(404);
    conforms('DELETE', '/v1/models/:id', await http.delete(`/v1/models/${tiny.modelId}`));
    conforms('DELETE', '/v1/api-keys/:id', await http.delete(`/v1/api-keys/${key.body.id}`));

    // Problems: 404, 400, 401, 403, 405, 409, 415, 429-free here (limits are off in tests).
    const problems = [
      conforms('GET', '/v1/models/:id', await http.get(`/v1/models/${tiny.modelId}`)),
      conforms('GET', '/v1/jobs', await http.get('/v1/jobs?status=nope')),
      conforms('GET', '/v1/datasets', await request(t.app.server).get('/v1/datasets')),
      conforms('POST', '/v1/tenants', await request(t.app.server).post('/v1/tenants').set('authorization', `Bearer ${key.body.key}`).send({ name: 'x' })),
      conforms('POST', '/v1/datasets', await http.post('/v1/datasets').send({})),
    ];
    expect(problems.map((r) => r.status)).toEqual([404, 400, 401, 401, 415]);

    // The serialiser drops what a schema does not declare: nothing a present* function returns
    // may be missing from its schema.
    const model = await t.deps.db.model.findUniqueOrThrow({ where: { id: (await createTinyModel(t)).modelId } });
    const fresh = await t.deps.db.job.findFirstOrThrow({ where: { id: model.jobId }, include: { model: { select: { id: true } } } });
    const undeclared = (value: object, schema: { properties?: Record<string, unknown> }) =>
      Object.keys(value).filter((k) => !(k in (schema.properties ?? {})));
    expect(undeclared(presentModel(model), Model)).toEqual([]);
    expect(undeclared(presentJob(fresh, []), Job)).toEqual([]);
    const storedDataset = await t.deps.db.dataset.findUniqueOrThrow({ where: { id: fresh.datasetId! } });
    expect(undeclared(presentDataset(storedDataset), Dataset)).toEqual([]);
    expect(undeclared(presentDataset(storedDataset).counts, Dataset.properties.counts)).toEqual([]);

    // Every documented route was exercised.
    const all = documented().flatMap((r) => methodsOf(r).map((m) => `${m} ${r.url}`));
    expect(all.filter((name) => !checked.has(name))).toEqual([]);
  });
});
