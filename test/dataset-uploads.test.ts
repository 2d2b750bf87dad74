// Direct-to-storage uploads: POST /v1/datasets/uploads hands out a presigned URL, the client PUTs
// the zip to S3 with plain fetch (as a browser or curl would, no API key), then completes it into
// a dataset through the same inspection as a multipart upload. Against the real app and the test
// S3 server (s3rver).
import { randomUUID } from 'node:crypto';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DatasetUploadsRepository, LATE_PUT_GRACE_MS } from '@finetune/db';
import { keys } from '@finetune/storage';
import { sweepExpiredUploads } from '../apps/api/src/services/dataset-uploads.service.ts';
import { buildTestApp, type TestApp } from './support/app.ts';
import { expectProblem, stored } from './support/hostile.ts';
import { digitPng, zipOf } from './support/mnist-fixtures.ts';

const MAX_UPLOAD_BYTES = 64 * 1024;

let t: TestApp;
let png: Buffer;
let other: ReturnType<typeof request.agent>;
let otherTenantId: string;

const goodZip = () => zipOf({ 'cats/1.png': png, 'cats/2.png': png, 'dogs/1.png': png });

function createUpload(body: Record<string, unknown>, http = t.http) {
  return http.post('/v1/datasets/uploads').send(body);
}

/** Creates an upload for `zip` and PUTs it, as a client would. */
async function uploaded(zip: Buffer, extra: Record<string, unknown> = {}) {
  const created = await createUpload({ filename: 'pets.zip', size: zip.length, ...extra }).expect(201);
  const put = await fetch(created.body.url, { method: 'PUT', headers: created.body.headers, body: new Uint8Array(zip) });
  expect(put.status, await put.clone().text()).toBe(200);
  return created.body as { uploadId: string; url: string; method: string; headers: Record<string, string>; expiresAt: string };
}

const stagingKey = (uploadId: string, tenantId = t.tenantId) => keys.uploadSource(tenantId, uploadId);
const complete = (uploadId: string, http = t.http) => http.post(`/v1/datasets/uploads/${uploadId}/complete`);

beforeAll(async () => {
  t = await buildTestApp({ MAX_UPLOAD_BYTES: String(MAX_UPLOAD_BYTES), UPLOAD_URL_TTL_SECONDS: '600' });
  png = await digitPng(3, 0);
  const tenant = await t.http.post('/v1/tenants').send({ name: 'uploads other' }).expect(201);
  const key = await t.http.post(`/v1/tenants/${tenant.body.id}/api-keys`).send({}).expect(201);
  otherTenantId = tenant.body.id;
  other = request.agent(t.app.server).set('authorization', `Bearer ${key.body.key}`);
});

afterAll(async () => {
  await t?.close();
});

describe('direct uploads', () => {
  it('create → PUT to the presigned URL → complete gives the dataset, and the staging object is gone', async () => {
    const zip = goodZip();
    const started = Date.now();
    const upload = await uploaded(zip, { name: 'pets' });
    expect(upload.method).toBe('PUT');
    expect(upload.headers['content-length']).toBe(String(zip.length));
    expect(new URL(upload.url).pathname).toContain(`/uploads/${t.tenantId}/${upload.uploadId}/source.zip`);
    expect(new URL(upload.url).searchParams.get('X-Amz-SignedHeaders')).toContain('content-length');
    expect(Date.parse(upload.expiresAt) - started).toBeGreaterThan(590_000);
    expect(await t.deps.store.exists(stagingKey(upload.uploadId))).toBe(true);

    const res = await complete(upload.uploadId).expect(201);
    expect(res.headers.location).toBe(`/v1/datasets/${res.body.id}`);
    expect(res.body).toMatchObject({ name: 'pets', status: 'ready', classes: ['cats', 'dogs'], sizeBytes: zip.length });
    expect(res.body.counts).toMatchObject({ train: { cats: 2, dogs: 1 }, images: 3, skipped: 0 });
    await t.http.get(`/v1/datasets/${res.body.id}`).expect(200);
    expect(await t.deps.store.exists(stagingKey(upload.uploadId))).toBe(false);
    expect((await t.deps.store.getBuffer(keys.datasetSource(res.body.id))).equals(zip)).toBe(true);

    // Completing again answers the same dataset (a client whose connection dropped retries).
    const again = await complete(upload.uploadId).expect(200);
    expect(again.body.id).toBe(res.body.id);
    // …until that dataset is deleted.
    await t.http.delete(`/v1/datasets/${res.body.id}`).expect(204);
    expectProblem(await complete(upload.uploadId), 409, 'upload_completed');
  });

  it("another tenant's upload is 404 exactly like a missing one", async () => {
    const upload = await uploaded(goodZip());
    const foreign = await complete(upload.uploadId, other);
    const missing = await complete(randomUUID(), other);
    expectProblem(foreign, 404, 'upload_not_found');
    expectProblem(missing, 404, 'upload_not_found');
    const ids = /[0-9a-f]{8}-[0-9a-f-]{27}/g;
    const shape = (body: Record<string, unknown>) => JSON.parse(JSON.stringify(body).replace(ids, 'ID'));
    expect(shape(foreign.body)).toEqual(shape(missing.body));
    // Untouched: its owner still completes it.
    await complete(upload.uploadId).expect(201);
  });

  it('completing before the PUT is 409 upload_not_uploaded, and works once the zip is there', async () => {
    const zip = goodZip();
    const created = await createUpload({ filename: 'later.zip', size: zip.length }).expect(201);
    expectProblem(await complete(created.body.uploadId), 409, 'upload_not_uploaded');
    const put = await fetch(created.body.url, { method: 'PUT', headers: created.body.headers, body: new Uint8Array(zip) });
    expect(put.status).toBe(200);
    const res = await complete(created.body.uploadId).expect(201);
    expect(res.body.name).toBe('later');
  });

  it('an expired upload is 410, and the sweep deletes its object and marks it expired', async () => {
    const upload = await uploaded(goodZip());
    // Past its expiry and the grace a late PUT gets.
    await t.deps.db.datasetUpload.update({ where: { id: upload.uploadId }, data: { expiresAt: new Date(Date.now() - LATE_PUT_GRACE_MS - 1000) } });
    expectProblem(await complete(upload.uploadId), 410, 'upload_expired');

    const uploads = new DatasetUploadsRepository(t.deps.db);
    expect(await sweepExpiredUploads({ ...t.deps, uploads })).toBeGreaterThanOrEqual(1);
    expect(await t.deps.store.exists(stagingKey(upload.uploadId))).toBe(false);
    expect((await t.deps.db.datasetUpload.findUniqueOrThrow({ where: { id: upload.uploadId } })).status).toBe('expired');
    expectProblem(await complete(upload.uploadId), 410, 'upload_expired');
    // A pending upload still within its time is left alone.
    const live = await uploaded(goodZip());
    await sweepExpiredUploads({ ...t.deps, uploads });
    expect(await t.deps.store.exists(stagingKey(live.uploadId))).toBe(true);
  });

  it('a hostile zip is 422 and leaves nothing behind', async () => {
    const before = await stored(t);
    const upload = await uploaded(zipOf({ 'cats/a.png': png, 'dogs/b.png': png, '../evil.png': png }));
    expectProblem(await complete(upload.uploadId), 422, 'unsafe_entry_name');
    expect(await t.deps.store.exists(stagingKey(upload.uploadId))).toBe(false);
    expect(await stored(t)).toEqual(before);
    // The upload can be used again while its URL is valid: nothing there now.
    expectProblem(await complete(upload.uploadId), 409, 'upload_not_uploaded');
  });

  it('413 for a declared size over MAX_UPLOAD_BYTES, and for an object larger than declared', async () => {
    expectProblem(await createUpload({ filename: 'big.zip', size: MAX_UPLOAD_BYTES + 1 }), 413, 'upload_too_large');

    // Real S3 refuses a PUT whose length differs from the signed one; s3rver does not check V4
    // signatures, which lets this test send what a misbehaving store would accept.
    const zip = goodZip();
    const created = await createUpload({ filename: 'liar.zip', size: 100 }).expect(201);
    const put = await fetch(created.body.url, { method: 'PUT', body: new Uint8Array(zip) });
    expect(put.status).toBe(200);
    expectProblem(await complete(created.body.uploadId), 413, 'upload_too_large');
    expect(await t.deps.store.exists(stagingKey(created.body.uploadId))).toBe(false);
  });

  it('refuses bad bodies with 400', async () => {
    expectProblem(await createUpload({ filename: 'x.zip' }), 400, 'validation_error');
    expectProblem(await createUpload({ filename: 'x.zip', size: 0 }), 400, 'validation_error');
    expectProblem(await createUpload({ filename: 'x.zip', size: '10' }), 400, 'validation_error');
    expectProblem(await createUpload({ filename: 'x.zip', size: 10, extra: 1 }), 400, 'validation_error');
    expectProblem(await createUpload({ filename: 'x.zip', size: 10, name: 'a\u0007b' }), 400, 'invalid_name');
    expectProblem(await complete('not-a-uuid'), 400, 'validation_error');
  });

  it("403 quota_exceeded when the tenant's storage has no room, counting open uploads", async () => {
    await t.http.patch(`/v1/tenants/${otherTenantId}`).send({ quotas: { storedBytes: 1000 } }).expect(200);
    try {
      const over = await createUpload({ filename: 'q.zip', size: 1001 }, other);
      expectProblem(over, 403, 'quota_exceeded');
      expect(over.body.quota).toBe('stored_bytes');
      await createUpload({ filename: 'q.zip', size: 600 }, other).expect(201);
      // The first upload's 600 declared bytes are reserved.
      expectProblem(await createUpload({ filename: 'q.zip', size: 600 }, other), 403, 'quota_exceeded');
    } finally {
      await t.http.patch(`/v1/tenants/${otherTenantId}`).send({ quotas: { storedBytes: null } }).expect(200);
    }
  });
});
