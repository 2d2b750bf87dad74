import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import supertest from 'supertest';
import { buildTestApp, type TestApp } from './support/app.ts';
import { digitPng, zipOf } from './support/mnist-fixtures.ts';

// Data checks at upload, through the public API: label noise and train/val leakage are named
// file by file; a clean archive has nothing blocking; the report is tenant-scoped.

let t: TestApp;
let other: ReturnType<typeof supertest.agent>;

beforeAll(async () => {
  t = await buildTestApp();
  const tenant = await t.http.post('/v1/tenants').send({ name: `checks-other-${randomBytes(3).toString('hex')}` }).expect(201);
  const key = await t.http.post(`/v1/tenants/${tenant.body.id}/api-keys`).send({ name: 'other' }).expect(201);
  other = supertest.agent(t.app.server).set({ authorization: `Bearer ${key.body.key}` });
});

afterAll(async () => {
  await t?.close();
});

/** Distinct real images: `n` digits of class `digit`, starting at MNIST index `from`. */
async function digits(digit: number, n: number, from = 0): Promise<Buffer[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => digitPng(digit, from + i)));
}

describe('GET /v1/datasets/:id/report', () => {
  it('blocks an image under two classes and a val image that is also in train, naming the files', async () => {
    const [threes, sevens] = [await digits(3, 4), await digits(7, 4)];
    const files: Record<string, Uint8Array> = {
      'train/three/0.png': threes[0]!,
      'train/three/1.png': threes[1]!,
      'train/three/2.png': threes[2]!,
      'train/seven/0.png': sevens[0]!,
      'train/seven/1.png': sevens[1]!,
      // The same bytes as train/three/0.png, labelled seven.
      'train/seven/mislabelled.png': threes[0]!,
      // The same bytes as train/seven/1.png: validation would score a training image.
      'val/seven/leaked.png': sevens[1]!,
      'val/three/3.png': threes[3]!,
      'val/seven/3.png': sevens[3]!,
    };
    const created = await t.http.post('/v1/datasets').attach('file', zipOf(files), 'noisy.zip').expect(201);
    expect(created.body.report).toEqual({ blocking: 2, warnings: expect.any(Number) });

    const res = await t.http.get(`/v1/datasets/${created.body.id}/report`).expect(200);
    expect(res.body.datasetId).toBe(created.body.id);
    expect(res.body.summary.blocking).toBe(2);
    const byCheck = new Map<string, { severity: string; files: string[]; message: string }>(res.body.findings.map((f: { check: string }) => [f.check, f]));
    expect(byCheck.get('duplicate_across_classes')).toMatchObject({
      severity: 'blocking',
      files: ['train/three/0.png', 'train/seven/mislabelled.png'],
    });
    expect(byCheck.get('train_val_leakage')).toMatchObject({
      severity: 'blocking',
      files: ['train/seven/1.png', 'val/seven/leaked.png'],
    });
    expect(byCheck.get('train_val_leakage')!.message).toContain('val/seven/leaked.png');
    // The dataset body carries the counts, GET as well as POST.
    expect((await t.http.get(`/v1/datasets/${created.body.id}`).expect(200)).body.report.blocking).toBe(2);
  });

  it('warns in a job on such a dataset, and refuses it with strictDataChecks', async () => {
    const [fours, nines] = [await digits(4, 3), await digits(9, 3)];
    const files = { 'four/0.png': fours[0]!, 'four/1.png': fours[1]!, 'four/2.png': fours[2]!, 'nine/0.png': nines[0]!, 'nine/1.png': nines[1]!, 'nine/copy.png': fours[0]! };
    const dataset = (await t.http.post('/v1/datasets').attach('file', zipOf(files), 'noisy.zip').expect(201)).body.id;
    const spec = { datasetId: dataset, baseModel: 'small_cnn', strategy: 'scratch', hyperparameters: { epochs: 1 } };

    const jobsBefore = await t.deps.db.job.count();
    const refused = await t.http.post('/v1/jobs').send({ ...spec, strictDataChecks: true });
    expect(refused.status).toBe(422);
    expect(refused.body).toMatchObject({ code: 'data_checks_failed', findings: [{ check: 'duplicate_across_classes', severity: 'blocking', fileCount: 2 }] });
    expect(refused.body.detail).toContain(`/v1/datasets/${dataset}/report`);
    expect(await t.deps.db.job.count()).toBe(jobsBefore);

    const warned = await t.http.post('/v1/jobs').send(spec).expect(202);
    expect(warned.body.warnings).toEqual([expect.objectContaining({ check: 'duplicate_across_classes', severity: 'blocking', fileCount: 2 })]);
    expect(warned.body.warnings[0].message).toContain('nine/copy.png');
    expect((await t.http.get(`/v1/jobs/${warned.body.id}`).expect(200)).body.warnings).toEqual(warned.body.warnings);
    await t.http.post(`/v1/jobs/${warned.body.id}/cancel`).expect(202);
  });

  it('a job on a clean dataset has no warnings', async () => {
    const files: Record<string, Uint8Array> = {};
    for (const [i, png] of (await digits(2, 3)).entries()) files[`two/${i}.png`] = png;
    for (const [i, png] of (await digits(6, 3)).entries()) files[`six/${i}.png`] = png;
    const dataset = (await t.http.post('/v1/datasets').attach('file', zipOf(files), 'clean.zip').expect(201)).body.id;
    const job = await t.http.post('/v1/jobs').send({ datasetId: dataset, baseModel: 'small_cnn', strategy: 'scratch', strictDataChecks: true, hyperparameters: { epochs: 1 } }).expect(202);
    expect(job.body.warnings).toEqual([]);
    expect(job.body.spec.strictDataChecks).toBe(true);
    await t.http.post(`/v1/jobs/${job.body.id}/cancel`).expect(202);
  });

  it('finds nothing blocking in a clean archive', async () => {
    const files: Record<string, Uint8Array> = {};
    for (const [i, png] of (await digits(1, 5)).entries()) files[`one/${i}.png`] = png;
    for (const [i, png] of (await digits(8, 5)).entries()) files[`eight/${i}.png`] = png;
    const created = await t.http.post('/v1/datasets').attach('file', zipOf(files), 'clean.zip').expect(201);
    const res = await t.http.get(`/v1/datasets/${created.body.id}/report`).expect(200);
    expect(res.body.summary.blocking).toBe(0);
    expect(res.body.findings.filter((f: { severity: string }) => f.severity === 'blocking')).toEqual([]);
    expect(res.body.findings.map((f: { check: string }) => f.check)).toContain('image_sizes');
    expect(created.body.report.blocking).toBe(0);
  });

  it("answers 404 for another tenant's dataset, as for a missing one", async () => {
    const files = { 'a/0.png': await digitPng(2, 0), 'a/1.png': await digitPng(2, 1), 'b/0.png': await digitPng(5, 0), 'b/1.png': await digitPng(5, 1) };
    const created = await t.http.post('/v1/datasets').attach('file', zipOf(files), 'mine.zip').expect(201);
    const res = await other.get(`/v1/datasets/${created.body.id}/report`);
    expect(res.status).toBe(404);
    expect(res.body.code).toBe('dataset_not_found');
    expect((await other.get('/v1/datasets/00000000-0000-4000-8000-000000000000/report')).status).toBe(404);
  });
});
