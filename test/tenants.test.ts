// Identity: tenants and API keys. Nobody sees what is not theirs — another tenant's resource is
// answered exactly as a missing one, on every route — and keys are stored only as HMACs, never
// logged, and fail at once when revoked.
import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { loadConfig } from '@finetune/core';
import { buildApp, closeAppDeps, createAppDeps } from '@finetune/api';
import { DEFAULT_TENANT_ID } from '@finetune/db';
import { keys } from '@finetune/storage';
import { FeatureCache } from '../apps/worker/src/training/feature-cache.ts';
import { buildTestApp, TEST_ADMIN_API_KEY, TEST_API_KEY_SECRET, type TestApp } from './support/app.ts';
import { createTinyModel, expectProblem } from './support/hostile.ts';
import { digitPng, zipOf } from './support/mnist-fixtures.ts';

let t: TestApp;
const logLines: string[] = [];

interface Member {
  tenantId: string;
  keyId: string;
  key: string;
  prefix: string;
  http: ReturnType<typeof request.agent>;
}
let a: Member;
let b: Member;
let png: Buffer;
/** A's resources. */
let own: { dataset: string; tinyDataset: string; job: string; finishedJob: string; model: string };
let bDataset: string;

const as = (key: string) => request.agent(t.app.server).set('authorization', `Bearer ${key}`);

async function newTenant(name: string): Promise<Member> {
  const tenant = await t.http.post('/v1/tenants').send({ name }).expect(201);
  expect(tenant.body).toEqual({ id: expect.stringMatching(/^[0-9a-f-]{36}$/), name });
  const created = await t.http.post(`/v1/tenants/${tenant.body.id}/api-keys`).send({ name: `${name} key` }).expect(201);
  expect(created.body).toMatchObject({ role: 'member', prefix: expect.stringMatching(/^[0-9a-f]{8}$/) });
  expect(created.body.key).toMatch(new RegExp(`^ft_${created.body.prefix}_[A-Za-z0-9_-]{43}$`));
  return { tenantId: tenant.body.id, keyId: created.body.id, key: created.body.key, prefix: created.body.prefix, http: as(created.body.key) };
}

async function upload(m: Member): Promise<string> {
  const zip = zipOf({ 'a/1.png': png, 'b/1.png': png });
  return (await m.http.post('/v1/datasets').attach('file', zip, 'd.zip').expect(201)).body.id;
}

/** B's answer on A's resource equals the answer on an id that exists nowhere, id aside. */
function sameAsMissing(theirs: request.Response, missing: request.Response, theirId: string, missingId: string) {
  expect(theirs.status).toBe(missing.status);
  expect(theirs.headers['content-type']).toBe(missing.headers['content-type']);
  const norm = (res: request.Response, id: string) => JSON.parse(JSON.stringify(res.body).split(id).join('<id>'));
  expect(norm(theirs, theirId)).toEqual(norm(missing, missingId));
}

beforeAll(async () => {
  t = await buildTestApp({}, { logger: { level: 'info', stream: { write: (line: string) => logLines.push(line) } } });
  png = await digitPng(3, 0);
  a = await newTenant('tenant a');
  b = await newTenant('tenant b');
  const dataset = await upload(a);
  bDataset = await upload(b);
  const job = await a.http
    .post('/v1/jobs')
    .set('idempotency-key', 'shared-key')
    .send({ datasetId: dataset, baseModel: 'small_cnn', strategy: 'scratch', hyperparameters: { epochs: 1 } })
    .expect(202);
  const tiny = await createTinyModel(t, ['a', 'b'], a.tenantId);
  own = { dataset, tinyDataset: tiny.datasetId, job: job.body.id, finishedJob: tiny.jobId, model: tiny.modelId };
});

afterAll(async () => {
  await t?.close();
});

describe('authentication', () => {
  it('needs Authorization: Bearer <key> on /v1, not on /healthz and /readyz', async () => {
    await request(t.app.server).get('/healthz').expect(200);
    await request(t.app.server).get('/readyz').expect(200);
    for (const [method, path] of [
      ['get', '/v1/datasets'],
      ['get', '/v1/base-models'],
      ['post', '/v1/jobs'],
      ['get', `/v1/models/${own.model}`],
      ['post', '/v1/tenants'],
      ['get', '/v1/api-keys'],
    ] as const) {
      const res = await request(t.app.server)[method](path);
      expectProblem(res, 401, 'unauthorized');
      expect(res.headers['www-authenticate']).toMatch(/^Bearer realm="finetune"/);
    }
    // Unknown paths and methods under /v1 too: an anonymous caller learns nothing of the routes.
    expectProblem(await request(t.app.server).get('/v1/nothing-here'), 401, 'unauthorized');
    expectProblem(await request(t.app.server).put('/v1/datasets'), 401, 'unauthorized');
    expectProblem(await t.http.put('/v1/datasets'), 405, 'method_not_allowed');
    expectProblem(await request(t.app.server).get('/nothing-here'), 404, 'route_not_found');
  });

  it('refuses a malformed header and an unknown key with 401 and a Bearer challenge', async () => {
    const wrongSecret = a.key.slice(0, -4) + (a.key.endsWith('AAAA') ? 'BBBB' : 'AAAA');
    for (const header of ['Basic dXNlcjpwYXNz', 'Bearer', 'Bearer ', a.key, `Bearer ${a.key} extra`, 'Bearer ft_00000000_' + 'x'.repeat(43), `Bearer ${wrongSecret}`, 'Bearer x']) {
      const res = await request(t.app.server).get('/v1/datasets').set('authorization', header);
      expectProblem(res, 401, 'unauthorized');
      expect(res.headers['www-authenticate']).toMatch(/^Bearer/);
    }
  });

  it('refuses an upload without a key before reading its body', async () => {
    const res = await request(t.app.server).post('/v1/datasets').attach('file', zipOf({ 'a/1.png': png, 'b/1.png': png }), 'd.zip');
    expectProblem(res, 401, 'unauthorized');
    expect(await t.deps.db.dataset.count({ where: { tenantId: DEFAULT_TENANT_ID } })).toBe(0);
  });

  it('ADMIN_API_KEY acts in the default tenant', async () => {
    const tenant = await t.deps.db.tenant.findUniqueOrThrow({ where: { id: DEFAULT_TENANT_ID } });
    expect(tenant.name).toBe('default');
    await t.http.get('/v1/datasets').expect(200);
  });
});

describe('roles', () => {
  it('a member calling an admin route gets 403 forbidden', async () => {
    expectProblem(await b.http.post('/v1/tenants').send({ name: 'mine' }), 403, 'forbidden');
    expectProblem(await b.http.post(`/v1/tenants/${b.tenantId}/api-keys`).send({ role: 'admin' }), 403, 'forbidden');
    expectProblem(await b.http.post(`/v1/tenants/${a.tenantId}/api-keys`).send({}), 403, 'forbidden');
  });

  it('an admin key created through the API can manage tenants; a missing tenant is 404', async () => {
    const admin = await t.http.post(`/v1/tenants/${b.tenantId}/api-keys`).send({ role: 'admin' }).expect(201);
    expect(admin.body.role).toBe('admin');
    await as(admin.body.key).post('/v1/tenants').send({ name: 'third' }).expect(201);
    // No body at all: a member key with no name.
    expect((await t.http.post(`/v1/tenants/${b.tenantId}/api-keys`).expect(201)).body).toMatchObject({ role: 'member', tenantId: b.tenantId });
    expectProblem(await t.http.post(`/v1/tenants/${randomUUID()}/api-keys`).send({}), 404, 'tenant_not_found');
    expectProblem(await t.http.post(`/v1/tenants/${b.tenantId}/api-keys`).send({ role: 'owner' }), 400, 'validation_error');
    await t.http.delete(`/v1/api-keys/${admin.body.id}`).expect(204);
  });
});

describe("another tenant's resources are 404, exactly as if they did not exist", () => {
  it('datasets: get, delete', async () => {
    const missing = randomUUID();
    sameAsMissing(await b.http.get(`/v1/datasets/${own.dataset}`), await b.http.get(`/v1/datasets/${missing}`), own.dataset, missing);
    expectProblem(await b.http.get(`/v1/datasets/${own.dataset}`), 404, 'dataset_not_found');
    sameAsMissing(await b.http.delete(`/v1/datasets/${own.dataset}`), await b.http.delete(`/v1/datasets/${missing}`), own.dataset, missing);
    await a.http.get(`/v1/datasets/${own.dataset}`).expect(200);
  });

  it('jobs: get, metrics, checkpoints, cancel, delete', async () => {
    for (const job of [own.job, own.finishedJob]) {
      const missing = randomUUID();
      for (const [method, path] of [
        ['get', `/v1/jobs/${job}`],
        ['get', `/v1/jobs/${job}/metrics`],
        ['get', `/v1/jobs/${job}/checkpoints`],
        ['post', `/v1/jobs/${job}/cancel`],
        ['delete', `/v1/jobs/${job}`],
      ] as const) {
        const theirs = await b.http[method](path);
        expectProblem(theirs, 404, 'job_not_found');
        sameAsMissing(theirs, await b.http[method](path.replace(job, missing)), job, missing);
      }
    }
    // Nothing happened to A's jobs.
    expect((await a.http.get(`/v1/jobs/${own.job}`).expect(200)).body).toMatchObject({ status: 'queued', cancelRequested: false });
    await a.http.get(`/v1/jobs/${own.finishedJob}`).expect(200);
  });

  it('models: get, download, predict', async () => {
    const missing = randomUUID();
    for (const [method, path] of [
      ['get', `/v1/models/${own.model}`],
      ['get', `/v1/models/${own.model}/download`],
    ] as const) {
      const theirs = await b.http[method](path);
      expectProblem(theirs, 404, 'model_not_found');
      sameAsMissing(theirs, await b.http[method](path.replace(own.model, missing)), own.model, missing);
    }
    const predict = (id: string) => b.http.post(`/v1/models/${id}/predict`).attach('file', png, 'x.png');
    expectProblem(await predict(own.model), 404, 'model_not_found');
    sameAsMissing(await predict(own.model), await predict(missing), own.model, missing);
    const json = (id: string) => b.http.post(`/v1/models/${id}/predict`).send({ instances: [{ b64: png.toString('base64') }] });
    sameAsMissing(await json(own.model), await json(missing), own.model, missing);
    // A itself is served.
    await a.http.post(`/v1/models/${own.model}/predict`).attach('file', png, 'x.png').expect(200);
    await a.http.get(`/v1/models/${own.model}/download`).expect(200);
  });

  it("jobs: another tenant's dataset and baseModel {modelId} are unknown, as missing ones", async () => {
    const spec = (datasetId: string, modelId?: string) => ({
      datasetId,
      baseModel: modelId ? { modelId } : 'small_cnn',
      strategy: modelId ? 'fine_tune' : 'scratch',
      hyperparameters: { epochs: 1 },
    });
    const missing = randomUUID();
    const theirModel = await b.http.post('/v1/jobs').send(spec(bDataset, own.model));
    expectProblem(theirModel, 422, 'unknown_model');
    sameAsMissing(theirModel, await b.http.post('/v1/jobs').send(spec(bDataset, missing)), own.model, missing);
    const theirDataset = await b.http.post('/v1/jobs').send(spec(own.dataset));
    expectProblem(theirDataset, 422, 'unknown_dataset');
    sameAsMissing(theirDataset, await b.http.post('/v1/jobs').send(spec(missing)), own.dataset, missing);
    expect(await t.deps.db.job.count({ where: { tenantId: b.tenantId } })).toBe(0);
  });

  it('Idempotency-Key is scoped per tenant', async () => {
    const spec = { datasetId: bDataset, baseModel: 'small_cnn', strategy: 'scratch', hyperparameters: { epochs: 1 } };
    const first = await b.http.post('/v1/jobs').set('idempotency-key', 'shared-key').send(spec).expect(202);
    expect(first.body.id).not.toBe(own.job);
    const again = await b.http.post('/v1/jobs').set('idempotency-key', 'shared-key').send(spec).expect(200);
    expect(again.body.id).toBe(first.body.id);
    // A's replay still finds A's own job.
    const aSpec = { datasetId: own.dataset, baseModel: 'small_cnn', strategy: 'scratch', hyperparameters: { epochs: 1 } };
    expect((await a.http.post('/v1/jobs').set('idempotency-key', 'shared-key').send(aSpec).expect(200)).body.id).toBe(own.job);
    await b.http.post(`/v1/jobs/${first.body.id}/cancel`).expect(202);
  });

  it("lists never show another tenant's rows", async () => {
    const ids = async (m: { http: ReturnType<typeof request.agent> }, path: string) =>
      ((await m.http.get(path).expect(200)).body.items as { id: string }[]).map((i) => i.id);
    expect((await ids(a, '/v1/datasets')).sort()).toEqual([own.dataset, own.tinyDataset].sort());
    expect(await ids(b, '/v1/datasets')).toEqual([bDataset]);
    expect(await ids(t, '/v1/datasets')).toEqual([]);
    expect((await ids(a, '/v1/jobs')).sort()).toEqual([own.job, own.finishedJob].sort());
    expect(await ids(b, '/v1/jobs')).not.toContain(own.job);
    expect(await ids(t, '/v1/jobs')).toEqual([]);
    // A cursor from another tenant's list shows nothing of theirs either.
    expect(await ids(b, `/v1/jobs?cursor=${own.job}`)).not.toContain(own.finishedJob);
  });
});

describe('api keys', () => {
  it("GET /v1/api-keys lists the caller's tenant's keys, never a secret or hash", async () => {
    const res = await a.http.get('/v1/api-keys').expect(200);
    expect(res.body.items).toEqual([
      { id: a.keyId, tenantId: a.tenantId, name: 'tenant a key', prefix: a.prefix, role: 'member', createdAt: expect.any(String), revokedAt: null },
    ]);
    expect(JSON.stringify(res.body)).not.toContain(a.key);
    expect(JSON.stringify(res.body)).not.toMatch(/hash/i);
  });

  it("a member revokes only its own tenant's keys; a revoked key fails at once", async () => {
    const second = await t.http.post(`/v1/tenants/${a.tenantId}/api-keys`).send({}).expect(201);
    const aSecond = as(second.body.key);
    await aSecond.get('/v1/datasets').expect(200);
    // B cannot revoke (or see) A's key: as a missing one.
    const missing = randomUUID();
    sameAsMissing(await b.http.delete(`/v1/api-keys/${second.body.id}`), await b.http.delete(`/v1/api-keys/${missing}`), second.body.id, missing);
    expectProblem(await b.http.delete(`/v1/api-keys/${second.body.id}`), 404, 'api_key_not_found');
    await aSecond.get('/v1/datasets').expect(200);
    // A revokes it: the very next request with it fails.
    await a.http.delete(`/v1/api-keys/${second.body.id}`).expect(204);
    expectProblem(await aSecond.get('/v1/datasets'), 401, 'unauthorized');
    const listed = (await a.http.get('/v1/api-keys').expect(200)).body.items.find((k: { id: string }) => k.id === second.body.id);
    expect(listed.revokedAt).toEqual(expect.any(String));
    // An admin revokes any tenant's key.
    const third = await t.http.post(`/v1/tenants/${b.tenantId}/api-keys`).send({}).expect(201);
    await t.http.delete(`/v1/api-keys/${third.body.id}`).expect(204);
    expectProblem(await as(third.body.key).get('/v1/jobs'), 401, 'unauthorized');
  });

  it('keys are stored only as HMAC-SHA-256 under the server secret', async () => {
    const row = await t.deps.db.apiKey.findUniqueOrThrow({ where: { id: a.keyId } });
    expect(row.keyHash).toBe(createHmac('sha256', TEST_API_KEY_SECRET).update(a.key).digest('hex'));
    expect(row.prefix).toBe(a.prefix);
    const secretPart = a.key.slice(`ft_${a.prefix}_`.length);
    const dump = JSON.stringify(await t.deps.db.apiKey.findMany());
    expect(dump).not.toContain(secretPart);
    expect(dump).not.toContain(b.key);
  });

  it('never writes a key to the log; log lines carry the tenant and the key prefix', async () => {
    await a.http.get(`/v1/datasets/${own.dataset}`).set('x-request-id', 'tenant-log-check').expect(200);
    const all = logLines.join('');
    expect(all.length).toBeGreaterThan(0);
    for (const key of [a.key, b.key, TEST_ADMIN_API_KEY]) {
      expect(all).not.toContain(key);
      expect(all).not.toContain(key.slice(12)); // the secret part alone
    }
    expect(all.toLowerCase()).not.toContain('bearer');
    const lines = logLines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.reqId === 'tenant-log-check');
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.some((l) => l.tenantId === a.tenantId && l.keyPrefix === a.prefix && l.msg === 'request completed')).toBe(true);
  });
});

describe('embedding cache', () => {
  it('is keyed per tenant', () => {
    const cache = new FeatureCache(t.deps.store, a.tenantId, 'mobilenet_v2', own.dataset, {});
    expect(cache.key('out', 'train', ['x'])).toMatch(new RegExp(`^cache/embeddings/${a.tenantId}/mobilenet_v2/${own.dataset}/`));
    expect(keys.embeddingCachePrefix(b.tenantId, 'mobilenet_v2', own.dataset)).not.toBe(keys.embeddingCachePrefix(a.tenantId, 'mobilenet_v2', own.dataset));
  });
});

describe('start-up', () => {
  it('refuses to start without API_KEY_SECRET, or with neither keys nor ADMIN_API_KEY', async () => {
    const noSecret = createAppDeps(loadConfig({ ...process.env, API_KEY_SECRET: '', ADMIN_API_KEY: TEST_ADMIN_API_KEY }));
    try {
      await expect(buildApp(noSecret, { logger: false })).rejects.toThrow(/API_KEY_SECRET is not set/);
    } finally {
      await closeAppDeps(noSecret);
    }
    // No usable key in the database (they are revoked here: this test runs last) and no ADMIN_API_KEY.
    const empty = createAppDeps(loadConfig({ ...process.env, API_KEY_SECRET: randomBytes(32).toString('hex'), ADMIN_API_KEY: '' }));
    try {
      await t.deps.db.apiKey.updateMany({ data: { revokedAt: new Date() } });
      await expect(buildApp(empty, { logger: false })).rejects.toThrow(/no API key exists and ADMIN_API_KEY is not set/);
    } finally {
      await closeAppDeps(empty);
    }
  });

  it('rejects weak settings', () => {
    expect(() => loadConfig({ ...process.env, API_KEY_SECRET: 'short' })).toThrow(/API_KEY_SECRET must be at least 32 characters/);
    expect(() => loadConfig({ ...process.env, ADMIN_API_KEY: 'short' })).toThrow(/ADMIN_API_KEY must be at least 24 characters/);
  });
});
