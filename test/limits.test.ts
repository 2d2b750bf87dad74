// Limits: per-key rate limits (token buckets in Redis) and per-tenant quotas. Two tenants in
// each case: one hitting a limit leaves the other alone, and every refusal is a problem+json that
// names the limit, what is used and what is allowed.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { buildTestApp, type TestApp } from './support/app.ts';
import { createTinyModel, expectProblem, stored } from './support/hostile.ts';
import { digitPng, zipOf } from './support/mnist-fixtures.ts';
import { freePort } from './support/processes.ts';

interface Member {
  tenantId: string;
  prefix: string;
  http: ReturnType<typeof request.agent>;
}

async function newTenant(t: TestApp, name: string): Promise<Member> {
  const tenant = await t.http.post('/v1/tenants').send({ name }).expect(201);
  const key = await t.http.post(`/v1/tenants/${tenant.body.id}/api-keys`).send({}).expect(201);
  return { tenantId: tenant.body.id, prefix: key.body.prefix, http: request.agent(t.app.server).set('authorization', `Bearer ${key.body.key}`) };
}

let png: Buffer;
const datasetZip = () => zipOf({ 'a/1.png': png, 'b/1.png': png });
const jobSpec = (datasetId: string) => ({ datasetId, baseModel: 'small_cnn', strategy: 'scratch', hyperparameters: { epochs: 1 } });

beforeAll(async () => {
  png = await digitPng(3, 0);
});

describe('rate limits', () => {
  let t: TestApp;
  let a: Member;
  let b: Member;

  beforeAll(async () => {
    // 3 requests at once, then one a second; uploads 1 at once and 1 a minute.
    t = await buildTestApp({ RATE_LIMIT_PER_MINUTE: '60', RATE_LIMIT_BURST: '3', UPLOAD_RATE_LIMIT_PER_MINUTE: '1', UPLOAD_RATE_LIMIT_BURST: '1' });
    // The admin key is limited too: set the tenants up before its bucket runs dry.
    a = await newTenant(t, 'rate a');
    await new Promise((r) => setTimeout(r, 3_000));
    b = await newTenant(t, 'rate b');
  });
  afterAll(async () => {
    await t?.close();
  });

  it('answers 429 with Retry-After and RateLimit-* once a key has spent its burst, then recovers', async () => {
    const remaining: string[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await a.http.get('/v1/datasets').expect(200);
      expect(res.headers['ratelimit-limit']).toBe('3');
      expect(res.headers['ratelimit-policy']).toBe('60;w=60;burst=3;policy="default"');
      remaining.push(String(res.headers['ratelimit-remaining']));
    }
    // Refill is one token a second: a slow first request may have earned one back.
    expect(Number(remaining[2])).toBeLessThan(Number(remaining[0]));

    let refused: request.Response | undefined;
    for (let i = 0; i < 5 && !refused; i++) {
      const res = await a.http.get('/v1/datasets');
      if (res.status === 429) refused = res;
    }
    expect(refused, 'no 429 within five more requests').toBeDefined();
    expectProblem(refused!, 429, 'rate_limited');
    expect(refused!.body.rateLimit).toBe('default');
    expect(refused!.headers['retry-after']).toBe('1');
    expect(refused!.headers['ratelimit-remaining']).toBe('0');
    expect(Number(refused!.headers['ratelimit-reset'])).toBeGreaterThanOrEqual(1);

    // Another key (another tenant) has buckets of its own.
    await b.http.get('/v1/datasets').expect(200);

    // After Retry-After, the same key gets through again.
    await new Promise((r) => setTimeout(r, Number(refused!.headers['retry-after']) * 1000 + 100));
    await a.http.get('/v1/datasets').expect(200);
  });

  it('gives uploads a lower limit of their own, which reads do not spend', async () => {
    await new Promise((r) => setTimeout(r, 3_000)); // a full default bucket
    const first = await b.http.post('/v1/datasets').attach('file', datasetZip(), 'd.zip');
    expect(first.status).toBe(201);
    const second = await b.http.post('/v1/datasets').attach('file', datasetZip(), 'd.zip');
    expectProblem(second, 429, 'rate_limited');
    expect(second.body.rateLimit).toBe('upload');
    expect(second.headers['ratelimit-policy']).toBe('1;w=60;burst=1;policy="upload"');
    expect(Number(second.headers['retry-after'])).toBeGreaterThan(1);
    // Nothing of the refused upload was stored.
    const list = await b.http.get('/v1/datasets').expect(200);
    expect(list.body.items).toHaveLength(1);
  });

  it('lets requests through, unlimited, while Redis is unreachable', async () => {
    const down = await buildTestApp({ REDIS_URL: `redis://127.0.0.1:${await freePort()}`, RATE_LIMIT_PER_MINUTE: '1', RATE_LIMIT_BURST: '1' });
    try {
      for (let i = 0; i < 3; i++) {
        const res = await down.http.get('/v1/datasets').expect(200);
        expect(res.headers['ratelimit-remaining']).toBeUndefined();
      }
    } finally {
      await down.close();
    }
  });
});

describe('quotas', () => {
  let t: TestApp;
  let a: Member;
  let b: Member;
  let aDataset: string;
  let bDataset: string;

  beforeAll(async () => {
    t = await buildTestApp();
    a = await newTenant(t, 'quota a');
    b = await newTenant(t, 'quota b');
    aDataset = (await a.http.post('/v1/datasets').attach('file', datasetZip(), 'd.zip').expect(201)).body.id;
    bDataset = (await b.http.post('/v1/datasets').attach('file', datasetZip(), 'd.zip').expect(201)).body.id;
  });
  afterAll(async () => {
    await t?.close();
  });

  const setQuotas = (tenantId: string, quotas: Record<string, number | null>) =>
    t.http.patch(`/v1/tenants/${tenantId}`).send({ quotas }).expect(200);

  it('only admins see and set quotas', async () => {
    expectProblem(await a.http.patch(`/v1/tenants/${a.tenantId}`).send({ quotas: { models: 1 } }), 403, 'forbidden');
    expectProblem(await a.http.get(`/v1/tenants/${b.tenantId}`), 403, 'forbidden');
    expectProblem(await t.http.patch(`/v1/tenants/${randomUUID()}`).send({ quotas: { models: 1 } }), 404, 'tenant_not_found');
    expectProblem(await t.http.patch(`/v1/tenants/${a.tenantId}`).send({ quotas: { models: -1 } }), 400, 'validation_error');
    expectProblem(await t.http.patch(`/v1/tenants/${a.tenantId}`).send({ quotas: { models: '3' } }), 400, 'validation_error');
    expectProblem(await t.http.patch(`/v1/tenants/${a.tenantId}`).send({}), 400, 'validation_error');
  });

  it('limits concurrent jobs per tenant (429), counts them in /v1/usage, and frees a slot when one ends', async () => {
    await setQuotas(a.tenantId, { concurrentJobs: 1 });
    const first = await a.http.post('/v1/jobs').send(jobSpec(aDataset)).expect(202);

    const refused = await a.http.post('/v1/jobs').send(jobSpec(aDataset));
    expectProblem(refused, 429, 'quota_exceeded');
    expect(refused.body).toMatchObject({ quota: 'concurrent_jobs', usage: 1, limit: 1 });

    // B is not A: its own jobs go through.
    await b.http.post('/v1/jobs').send(jobSpec(bDataset)).expect(202);

    const usage = await a.http.get('/v1/usage').expect(200);
    expect(usage.body.tenantId).toBe(a.tenantId);
    expect(usage.body.quotas.concurrentJobs).toEqual({ usage: 1, limit: 1 });

    const canceled = await a.http.post(`/v1/jobs/${first.body.id}/cancel`).expect(202);
    expect(canceled.body.status).toBe('canceled');
    await a.http.post('/v1/jobs').send(jobSpec(aDataset)).expect(202);
    await setQuotas(a.tenantId, { concurrentJobs: 0 });
  });

  it('admits exactly the quota under concurrent submissions', async () => {
    const c = await newTenant(t, 'quota c');
    const dataset = (await c.http.post('/v1/datasets').attach('file', datasetZip(), 'd.zip').expect(201)).body.id;
    await setQuotas(c.tenantId, { concurrentJobs: 2 });
    const answers = await Promise.all(Array.from({ length: 6 }, () => c.http.post('/v1/jobs').send(jobSpec(dataset))));
    expect(answers.map((r) => r.status).sort()).toEqual([202, 202, 429, 429, 429, 429]);
    expect(await t.deps.db.job.count({ where: { tenantId: c.tenantId } })).toBe(2);
  });

  it('an idempotent retry returns its job even when the quota is full by now', async () => {
    const d = await newTenant(t, 'quota d');
    const dataset = (await d.http.post('/v1/datasets').attach('file', datasetZip(), 'd.zip').expect(201)).body.id;
    await setQuotas(d.tenantId, { concurrentJobs: 1 });
    const first = await d.http.post('/v1/jobs').set('idempotency-key', 'k1').send(jobSpec(dataset)).expect(202);
    const again = await d.http.post('/v1/jobs').set('idempotency-key', 'k1').send(jobSpec(dataset)).expect(200);
    expect(again.body.id).toBe(first.body.id);
  });

  it('refuses an upload over the storage quota (403) and leaves nothing behind', async () => {
    const e = await newTenant(t, 'quota e');
    const zip = datasetZip();
    await e.http.post('/v1/datasets').attach('file', zip, 'd.zip').expect(201);
    const used = (await e.http.get('/v1/usage').expect(200)).body.quotas.storedBytes;
    expect(used.usage).toBe(zip.length);
    expect(used.breakdown).toEqual({ datasets: zip.length, models: 0, checkpoints: 0, baseModels: 0, total: zip.length });

    // Room for less than a second copy: the upload is read, inspected, then refused.
    await setQuotas(e.tenantId, { storedBytes: zip.length + 10 });
    const before = await stored(t);
    const over = await e.http.post('/v1/datasets').attach('file', zip, 'd.zip');
    expectProblem(over, 403, 'quota_exceeded');
    expect(over.body).toMatchObject({ quota: 'stored_bytes', usage: zip.length, limit: zip.length + 10 });
    expect(await stored(t)).toEqual(before);

    // Full: refused before the body is read.
    await setQuotas(e.tenantId, { storedBytes: zip.length });
    const full = await e.http.post('/v1/datasets').attach('file', zip, 'd.zip');
    expectProblem(full, 403, 'quota_exceeded');
    expect(full.body.quota).toBe('stored_bytes');
    expect(await stored(t)).toEqual(before);

    // A full storage also refuses new jobs (they write checkpoints and a model).
    const datasetId = (await e.http.get('/v1/datasets').expect(200)).body.items[0].id;
    const job = await e.http.post('/v1/jobs').send(jobSpec(datasetId));
    expectProblem(job, 403, 'quota_exceeded');
    expect(job.body.quota).toBe('stored_bytes');

    // null returns the tenant to the deployment's default (unlimited here).
    const reset = await setQuotas(e.tenantId, { storedBytes: null });
    expect(reset.body.quotaOverrides.storedBytes).toBeNull();
    expect(reset.body.quotas.storedBytes.limit).toBeNull();
    await e.http.post('/v1/datasets').attach('file', zip, 'd.zip').expect(201);
  });

  it('limits models, counting the ones unfinished jobs will add (403), until a model is deleted', async () => {
    const f = await newTenant(t, 'quota f');
    const tiny = await createTinyModel(t, ['a', 'b'], f.tenantId);
    await setQuotas(f.tenantId, { models: 1 });
    const refused = await f.http.post('/v1/jobs').send(jobSpec(tiny.datasetId));
    expectProblem(refused, 403, 'quota_exceeded');
    expect(refused.body).toMatchObject({ quota: 'models', usage: 1, limit: 1 });
    expect((await f.http.get('/v1/usage').expect(200)).body.quotas.models).toEqual({ usage: 1, limit: 1 });

    await f.http.delete(`/v1/jobs/${tiny.jobId}`).expect(204);
    expect((await f.http.get('/v1/usage').expect(200)).body.quotas.models).toEqual({ usage: 0, limit: 1 });
  });

  it('applies the deployment defaults (QUOTA_*) to tenants without their own', async () => {
    const limited = await buildTestApp({ QUOTA_CONCURRENT_JOBS: '1', QUOTA_MODELS: '50', QUOTA_STORED_BYTES: '1000000' });
    try {
      const g = await newTenant(limited, 'defaults g');
      const usage = await g.http.get('/v1/usage').expect(200);
      expect(usage.body.quotas).toEqual({
        concurrentJobs: { usage: 0, limit: 1 },
        storedBytes: { usage: 0, limit: 1_000_000, breakdown: { datasets: 0, models: 0, checkpoints: 0, baseModels: 0, total: 0 } },
        models: { usage: 0, limit: 50 },
      });
      const dataset = (await g.http.post('/v1/datasets').attach('file', datasetZip(), 'd.zip').expect(201)).body.id;
      await g.http.post('/v1/jobs').send(jobSpec(dataset)).expect(202);
      const refused = await g.http.post('/v1/jobs').send(jobSpec(dataset));
      expect(refused.body).toMatchObject({ quota: 'concurrent_jobs', usage: 1, limit: 1 });
      // An admin override beats the default; 0 is unlimited.
      const tenant = await limited.http.patch(`/v1/tenants/${g.tenantId}`).send({ quotas: { concurrentJobs: 0 } }).expect(200);
      expect(tenant.body.quotas.concurrentJobs).toEqual({ usage: 1, limit: null });
      await g.http.post('/v1/jobs').send(jobSpec(dataset)).expect(202);
    } finally {
      await limited.close();
    }
  });
});

describe('usage', () => {
  it('counts checkpoints and models in stored bytes', async () => {
    const t = await buildTestApp();
    try {
      const h = await newTenant(t, 'usage h');
      const tiny = await createTinyModel(t, ['a', 'b'], h.tenantId);
      await t.deps.db.model.update({ where: { id: tiny.modelId }, data: { sizeBytes: 1234n } });
      await t.deps.db.checkpoint.create({
        data: { jobId: tiny.jobId, epoch: 1, storagePrefix: 'x/', sizeBytes: 100n, trainLoss: 1, trainAcc: 0.5, elapsedMs: 1 },
      });
      const usage = (await h.http.get('/v1/usage').expect(200)).body;
      // createTinyModel records its dataset as 1 byte.
      expect(usage.quotas.storedBytes).toEqual({ usage: 1335, limit: null, breakdown: { datasets: 1, models: 1234, checkpoints: 100, baseModels: 0, total: 1335 } });
      expect(usage.rateLimits).toEqual({ default: null, predict: null, upload: null });
    } finally {
      await t.close();
    }
  });
});
