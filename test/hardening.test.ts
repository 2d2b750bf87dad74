import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import request from 'supertest';
import { loadConfig } from '@finetune/core';
import { buildTestApp, TEST_ADMIN_API_KEY, type TestApp } from './support/app.ts';
import { digitPng, zipOf } from './support/mnist-fixtures.ts';
import { createTinyModel, expectProblem, listen, multipartBody, rawHttp, stagedUploads, stored, svgUseBomb } from './support/hostile.ts';

// Regressions from an attacker session: every request here once got a 5xx (or was held open, or
// silently coerced). Each must now be a clear 4xx problem+json with a stable code that leaves no
// row, no stored object and no staged upload behind.

let t: TestApp;
let png: Buffer;
let zip: Buffer;
let model: { datasetId: string; jobId: string; modelId: string };
let datasetId: string;
const originalTmp = process.env.TMPDIR;
let privateTmp: string;

beforeAll(async () => {
  // Staged uploads go to os.tmpdir(): a private one shows exactly what this file left behind.
  privateTmp = await mkdtemp(join(tmpdir(), 'finetune-hardening-'));
  process.env.TMPDIR = privateTmp;
  t = await buildTestApp();
  png = await digitPng(3, 0);
  zip = zipOf({ 'a/1.png': png, 'b/1.png': png });
  model = await createTinyModel(t);
  const res = await t.http.post('/v1/datasets').attach('file', zip, 'data.zip');
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  datasetId = res.body.id;
});

afterAll(async () => {
  await t?.close();
  process.env.TMPDIR = originalTmp;
  if (privateTmp) await rm(privateTmp, { recursive: true, force: true });
});

const server = () => t.app.server;

/** Runs `act`, then checks it answered `status`/`code` and changed nothing stored. */
async function refusesCleanly(act: () => Promise<request.Response>, status: number, code: string) {
  const before = await stored(t);
  const res = await act();
  expectProblem(res, status, code);
  expect(await stored(t)).toEqual(before);
  return res;
}

describe('1. malformed multipart bodies are 400 malformed_multipart', () => {
  const B = 'xYzBoundary123';
  const full = () => multipartBody(B, [{ name: 'name', data: 'n' }, { name: 'file', filename: 'd.zip', contentType: 'application/zip', data: zip }]);
  const cases: [string, string, () => Buffer][] = [
    ['no boundary= parameter', 'multipart/form-data', full],
    ['an empty boundary', 'multipart/form-data; boundary=', full],
    ['a boundary over 256 bytes', `multipart/form-data; boundary=${'b'.repeat(300)}`, full],
    ['the wrong boundary', 'multipart/form-data; boundary=SomethingElse', full],
    ['a body cut mid-file', `multipart/form-data; boundary=${B}`, () => full().subarray(0, full().length - zip.length / 2)],
    ['no closing boundary', `multipart/form-data; boundary=${B}`, () => multipartBody(B, [{ name: 'file', filename: 'd.zip', data: zip }], { close: false })],
    ['part headers cut off', `multipart/form-data; boundary=${B}`, () => Buffer.from(`--${B}\r\nContent-Disposition: form-data; name="file"; filename="x.zip"\r\n`)],
  ];
  for (const [what, contentType, body] of cases) {
    it(`POST /v1/datasets with ${what}`, async () => {
      await refusesCleanly(() => t.http.post('/v1/datasets').set('content-type', contentType).send(body()), 400, 'malformed_multipart');
    });
    it(`POST /v1/models/:id/predict with ${what}`, async () => {
      const image = (b: Buffer) => Buffer.from(b.toString('latin1').replace(/d\.zip/g, 'x.png'), 'latin1');
      await refusesCleanly(
        () => t.http.post(`/v1/models/${model.modelId}/predict`).set('content-type', contentType).send(image(body())),
        400,
        'malformed_multipart',
      );
    });
  }

  it('still accepts a well-formed hand-built body', async () => {
    const res = await t.http.post('/v1/datasets').set('content-type', `multipart/form-data; boundary=${B}`).send(full());
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    await t.http.delete(`/v1/datasets/${res.body.id}`).expect(204);
  });
});

describe('2. ids must be canonical UUIDs', () => {
  const urn = `urn:uuid:${randomUUID()}`;
  const braces = `{${randomUUID()}}`;
  const routes: [string, string][] = [
    ['get', '/v1/datasets/:id'],
    ['delete', '/v1/datasets/:id'],
    ['get', '/v1/jobs/:id'],
    ['get', '/v1/jobs/:id/metrics'],
    ['get', '/v1/jobs/:id/checkpoints'],
    ['post', '/v1/jobs/:id/cancel'],
    ['delete', '/v1/jobs/:id'],
    ['get', '/v1/models/:id'],
    ['get', '/v1/models/:id/download'],
    ['post', '/v1/models/:id/predict'],
  ];
  for (const [method, route] of routes) {
    it(`${method.toUpperCase()} ${route} with urn:uuid:… or {…} is 400`, async () => {
      for (const id of [urn, braces, encodeURIComponent(urn)]) {
        await refusesCleanly(() => t.http[method as 'get'](route.replace(':id', id)), 400, 'validation_error');
      }
      // The canonical form, in either case, is looked up (and missing).
      let lookup = t.http[method as 'get'](route.replace(':id', randomUUID().toUpperCase()));
      if (route.endsWith('/predict')) lookup = lookup.attach('file', png, 'x.png');
      expect((await lookup).status).toBe(404);
    });
  }

  it('?cursor= must be canonical on both lists', async () => {
    for (const path of ['/v1/datasets', '/v1/jobs']) {
      await refusesCleanly(() => t.http.get(path).query({ cursor: urn }), 400, 'validation_error');
    }
  });

  it('datasetId and baseModel.modelId of a job spec must be canonical', async () => {
    await refusesCleanly(() => t.http.post('/v1/jobs').send({ datasetId: `urn:uuid:${datasetId}`, baseModel: 'mobilenet_v2' }), 400, 'validation_error');
    await refusesCleanly(
      () => t.http.post('/v1/jobs').send({ datasetId, baseModel: { modelId: `urn:uuid:${model.modelId}` }, strategy: 'fine_tune' }),
      400,
      'validation_error',
    );
  });
});

describe('3. control characters in names', () => {
  const upload = (fields: Record<string, string>, filename = 'data.zip') => {
    let req = t.http.post('/v1/datasets');
    for (const [k, v] of Object.entries(fields)) req = req.field(k, v);
    return req.attach('file', zip, filename);
  };

  it('refuses NUL and other control characters in "name" with 400 invalid_name', async () => {
    for (const name of ['evil\u0000name', 'bell\u0007', 'line\nbreak', 'c1\u0085', 'del\u007f']) {
      await refusesCleanly(() => upload({ name }), 400, 'invalid_name');
    }
  });

  it('refuses a "name" over 200 characters, and one the multipart field limit cut, with 400 name_too_long', async () => {
    await refusesCleanly(() => upload({ name: 'n'.repeat(201) }), 400, 'name_too_long');
    await refusesCleanly(() => upload({ name: 'n'.repeat(1024 * 1024) }), 400, 'name_too_long');
    const ok = await upload({ name: 'n'.repeat(200) }).expect(201);
    expect(ok.body.name).toBe('n'.repeat(200));
    await t.http.delete(`/v1/datasets/${ok.body.id}`).expect(204);
  });

  it('refuses a bad "name" sent after the file, and discards the staged file', async () => {
    const B = 'nameLast';
    const body = multipartBody(B, [{ name: 'file', filename: 'd.zip', data: zip }, { name: 'name', data: 'late\u0000name' }]);
    await refusesCleanly(() => t.http.post('/v1/datasets').set('content-type', `multipart/form-data; boundary=${B}`).send(body), 400, 'invalid_name');
  });

  it('refuses a "name" part that is JSON, not text', async () => {
    const B = 'jsonName';
    const body = multipartBody(B, [{ name: 'name', contentType: 'application/json', data: '{"a":1}' }, { name: 'file', filename: 'd.zip', data: zip }]);
    await refusesCleanly(() => t.http.post('/v1/datasets').set('content-type', `multipart/form-data; boundary=${B}`).send(body), 400, 'invalid_name');
  });

  it('makes a file name with control characters usable as the default name', async () => {
    const B = 'nulFile';
    const body = multipartBody(B, [{ name: 'file', filename: 'my\u0000da\u0001ta.zip', data: zip }]);
    const res = await t.http.post('/v1/datasets').set('content-type', `multipart/form-data; boundary=${B}`).send(body);
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    expect(res.body.name).toBe('my da ta');
    await t.http.delete(`/v1/datasets/${res.body.id}`).expect(204);
  });

  it('refuses NUL and lone surrogates anywhere in a JSON body with 400 invalid_character', async () => {
    const spec = (fromLayer: string) => ({ datasetId, baseModel: 'mobilenet_v2', strategy: 'fine_tune', hyperparameters: { unfreeze: { fromLayer } } });
    for (const raw of [JSON.stringify(spec('block_\u0000')), JSON.stringify(spec('x')).replace('"x"', '"\\ud800"'), JSON.stringify({ ...spec('x'), ['\u0000']: 1 })]) {
      await refusesCleanly(() => t.http.post('/v1/jobs').set('content-type', 'application/json').send(raw), 400, 'invalid_character');
    }
  });
});

describe('3b. hostile JSON structure', () => {
  it('answers prototype poisoning, a 1 MB nesting and duplicate keys with 4xx', async () => {
    const post = (raw: string) => t.http.post('/v1/jobs').set('content-type', 'application/json').send(raw);
    await refusesCleanly(() => post(`{"__proto__": {"x": 1}, "datasetId": "${datasetId}", "baseModel": "mobilenet_v2"}`), 400, 'malformed_json');
    await refusesCleanly(() => post(`{"constructor": {"prototype": {"x": 1}}, "datasetId": "${datasetId}", "baseModel": "mobilenet_v2"}`), 400, 'malformed_json');
    const depth = 400_000;
    await refusesCleanly(() => post(`{"datasetId": "${datasetId}", "baseModel": "mobilenet_v2", "hyperparameters": ${'['.repeat(depth)}${']'.repeat(depth)}}`), 400, 'validation_error');
    await refusesCleanly(() => post(`{"datasetId": "${datasetId}", "baseModel": "mobilenet_v2", "hyperparameters": {"epochs": 1, "epochs": "1"}}`), 400, 'validation_error');
  });
});

describe('4. concurrent deletes of one dataset', () => {
  it('one DELETE wins (204), the others are 404, and everything is gone', async () => {
    for (let round = 0; round < 3; round++) {
      const created = await t.http.post('/v1/datasets').attach('file', zip, 'd.zip').expect(201);
      const id = created.body.id as string;
      const results = await Promise.all(Array.from({ length: 4 }, () => t.http.delete(`/v1/datasets/${id}`)));
      const statuses = results.map((r) => r.status).sort();
      expect(statuses).toEqual([204, 404, 404, 404]);
      for (const r of results.filter((r) => r.status === 404)) expectProblem(r, 404, 'dataset_not_found');
      expect(await t.deps.db.dataset.findUnique({ where: { id } })).toBeNull();
      expect(await t.deps.store.list(`datasets/${id}/`)).toEqual([]);
    }
  });
});

describe('5. class folders named like Object.prototype members', () => {
  for (const name of ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf']) {
    it(`"${name}/" holding only an undecodable file is 422 empty_class`, async () => {
      const bad = zipOf({ 'a/1.png': png, [`${name}/x.png`]: 'not an image' });
      const res = await refusesCleanly(() => t.http.post('/v1/datasets').attach('file', bad, 'd.zip'), 422, 'empty_class');
      expect(res.body.detail).toContain(name);
    });
  }

  it('"__proto__/" with a real image is an ordinary class', async () => {
    const res = await t.http.post('/v1/datasets').attach('file', zipOf({ 'a/1.png': png, '__proto__/1.png': png }), 'd.zip').expect(201);
    expect(res.body.classes).toEqual(['__proto__', 'a']);
    expect(Object.getOwnPropertyDescriptor(res.body.counts.train, '__proto__')?.value).toBe(1);
    expect(res.body.counts.images).toBe(2);
    const again = await t.http.get(`/v1/datasets/${res.body.id}`).expect(200);
    expect(Object.getOwnPropertyDescriptor(again.body.counts.train, '__proto__')?.value).toBe(1);
    await t.http.delete(`/v1/datasets/${res.body.id}`).expect(204);
  });
});

describe('6. formats outside the accepted list are refused before decoding', () => {
  const bomb = svgUseBomb();

  it('skips an SVG named .png in a dataset, with a reason, without rendering it', async () => {
    const started = Date.now();
    const files: Record<string, Buffer> = { 'a/1.png': png, 'b/1.png': png };
    for (let i = 0; i < 8; i++) files[`a/bomb${i}.png`] = bomb;
    const res = await t.http.post('/v1/datasets').attach('file', zipOf(files), 'd.zip');
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    expect(Date.now() - started).toBeLessThan(3_000); // one rendering alone takes ~5 s
    expect(res.body.counts).toMatchObject({ train: { a: 1, b: 1 }, skipped: 8 });
    expect(res.body.counts.skippedFiles[0]).toMatchObject({ path: 'a/bomb0.png', reason: expect.stringContaining('SVG') });
    await t.http.delete(`/v1/datasets/${res.body.id}`).expect(204);
  });

  it('refuses a class of SVGs only with 422 empty_class', async () => {
    await refusesCleanly(() => t.http.post('/v1/datasets').attach('file', zipOf({ 'a/1.png': png, 'b/1.svg.png': bomb }), 'd.zip'), 422, 'empty_class');
  });

  it('answers predict on an SVG with 415 unsupported_image_format, multipart or base64, at once', async () => {
    const started = Date.now();
    expectProblem(await t.http.post(`/v1/models/${model.modelId}/predict`).attach('file', bomb, 'x.png'), 415, 'unsupported_image_format');
    const instances = Array.from({ length: 32 }, () => ({ b64: bomb.toString('base64') }));
    expectProblem(await t.http.post(`/v1/models/${model.modelId}/predict`).send({ instances }), 415, 'unsupported_image_format');
    expect(Date.now() - started).toBeLessThan(3_000);
  });

  it('still predicts on an accepted image, and says 422 invalid_image for data that is no image', async () => {
    const res = await t.http.post(`/v1/models/${model.modelId}/predict`).attach('file', png, 'x.png').expect(200);
    expect(res.body.predictions[0].label).toMatch(/^[ab]$/);
    const jpeg = await (await import('sharp')).default(png).jpeg().toBuffer();
    await t.http.post(`/v1/models/${model.modelId}/predict`).send({ instances: [{ b64: jpeg.toString('base64') }] }).expect(200);
    expectProblem(await t.http.post(`/v1/models/${model.modelId}/predict`).attach('file', Buffer.from('hello, not an image at all'), 'x.png'), 422, 'invalid_image');
  });
});

describe('7. slow clients', () => {
  let slow: TestApp;
  let port: number;
  beforeAll(async () => {
    slow = await buildTestApp({ UPLOAD_IDLE_TIMEOUT_MS: '800', REQUEST_TIMEOUT_MS: '1500' });
    port = await listen(slow);
  });
  afterAll(async () => slow?.close());

  const B = 'slowBoundary';
  const head = (length: number, path = '/v1/datasets') =>
    `POST ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TEST_ADMIN_API_KEY}\r\nContent-Type: multipart/form-data; boundary=${B}\r\nContent-Length: ${length}\r\n\r\n`;

  async function expectTimedOut(res: Awaited<ReturnType<typeof rawHttp>>, code: string) {
    expect(res.status, res.body).toBe(408);
    expect(res.headers['content-type']).toContain('application/problem+json');
    expect(JSON.parse(res.body)).toMatchObject({ status: 408, code });
    expect(res.closed).toBe(true);
  }

  it('answers 408 when an upload stalls mid-file, and removes the staged file', async () => {
    const before = await stored(t);
    const body = multipartBody(B, [{ name: 'file', filename: 'd.zip', data: zip }]);
    const half = body.subarray(0, Math.floor(body.length / 2));
    let sawStaged = false;
    const watching = (async () => {
      for (let i = 0; i < 20 && !sawStaged; i++) {
        sawStaged = (await stagedUploads()).length > 0;
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const res = await rawHttp(port, [head(body.length), half], 5_000);
    await watching;
    expect(sawStaged).toBe(true); // the upload really was being staged when it stalled
    await expectTimedOut(res, 'body_idle_timeout');
    expect(res.elapsedMs).toBeLessThan(2_500);
    // The handler notices the closed connection and discards what it staged.
    await expect.poll(() => stagedUploads(), { timeout: 3_000 }).toEqual([]);
    expect(await stored(t)).toEqual(before);
  });

  it('answers 408 when a predict upload stalls', async () => {
    const body = multipartBody(B, [{ name: 'file', filename: 'x.png', data: png }]);
    const res = await rawHttp(port, [head(body.length, `/v1/models/${model.modelId}/predict`), body.subarray(0, 100)], 5_000);
    await expectTimedOut(res, 'body_idle_timeout');
  });

  it('answers 408 to a body that trickles in past REQUEST_TIMEOUT_MS', async () => {
    const body = multipartBody(B, [{ name: 'file', filename: 'd.zip', data: zip }]);
    // A byte every 200 ms never trips the idle timeout (800 ms); the request deadline (1.5 s) ends it.
    const chunks: (Buffer | number | string)[] = [head(body.length)];
    for (let i = 0; i < 40; i++) chunks.push(body.subarray(i, i + 1), 200);
    const res = await rawHttp(port, chunks, 8_000);
    await expectTimedOut(res, 'request_timeout');
    expect(res.elapsedMs).toBeLessThan(4_000);
    await expect.poll(() => stagedUploads(), { timeout: 3_000 }).toEqual([]);
  });

  it('answers 408 to headers that never finish', async () => {
    const res = await rawHttp(port, ['GET /healthz HTTP/1.1\r\nHost: x\r\n', 200, 'X-Slow: 1\r\n'], 6_000);
    await expectTimedOut(res, 'request_timeout');
  });

  it('does not time out a body the client is still sending', async () => {
    const body = multipartBody(B, [{ name: 'file', filename: 'd.zip', data: zip }]);
    const third = Math.ceil(body.length / 3);
    const res = await rawHttp(port, [head(body.length), body.subarray(0, third), 200, body.subarray(third, 2 * third), 200, body.subarray(2 * third)], 5_000);
    expect(res.status, res.body).toBe(201);
    await slow.http.delete(`/v1/datasets/${JSON.parse(res.body).id}`).expect(204);
  });
});

describe('8. the smaller ones', () => {
  it('does not coerce types in JSON bodies', async () => {
    const cases: Record<string, unknown>[] = [
      { hyperparameters: { epochs: '3' } },
      { hyperparameters: { batchSize: true } },
      { hyperparameters: { learningRate: '0.01' } },
      { hyperparameters: { head: { hiddenUnits: 64 } } },
      { compareWithScratch: 'true' },
      { maxRuntimeSeconds: [60] },
    ];
    for (const extra of cases) {
      const res = await refusesCleanly(() => t.http.post('/v1/jobs').send({ datasetId, baseModel: 'mobilenet_v2', ...extra }), 400, 'validation_error');
      expect(res.body.detail).toMatch(/must be/);
    }
    await refusesCleanly(() => t.http.post('/v1/jobs').send({ datasetId, baseModel: 123 }), 400, 'validation_error');
  });

  it('still parses ?limit= from the querystring, and refuses junk or repeats', async () => {
    const res = await t.http.get('/v1/datasets?limit=1').expect(200);
    expect(res.body.items.length).toBeLessThanOrEqual(1);
    for (const qs of ['limit=abc', 'limit=1.5', 'limit=0', 'limit=1&limit=2', 'limit=', 'cursor=x&cursor=y', 'nope=1']) {
      await refusesCleanly(() => t.http.get(`/v1/datasets?${qs}`), 400, 'validation_error');
    }
  });

  it('answers an unsupported method with 405 and Allow', async () => {
    const put = await t.http.put('/v1/datasets').send({});
    expectProblem(put, 405, 'method_not_allowed');
    expect(put.headers.allow?.split(', ').sort()).toEqual(['GET', 'HEAD', 'POST']);
    const patch = await t.http.patch(`/v1/jobs/${randomUUID()}`).send({});
    expectProblem(patch, 405, 'method_not_allowed');
    expect(patch.headers.allow?.split(', ').sort()).toEqual(['DELETE', 'GET', 'HEAD']);
    const get = await t.http.get(`/v1/models/${randomUUID()}/predict`);
    expectProblem(get, 405, 'method_not_allowed');
    expect(get.headers.allow).toBe('POST');
    expectProblem(await t.http.put('/v1/nothing-here'), 404, 'route_not_found');
  });

  it('answers 414, 431 and unparseable requests with problem+json', async () => {
    expectProblem(await t.http.get(`/v1/datasets/${'a'.repeat(500)}`), 414, 'uri_too_long');
    expectProblem(await t.http.get('/v1/datasets/%E0%A4%A'), 400, 'bad_url');
    const port = await listen(t);
    const big = await rawHttp(port, [`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`]);
    expect(big.status).toBe(431);
    expect(big.headers['content-type']).toContain('application/problem+json');
    expect(JSON.parse(big.body)).toMatchObject({ status: 431, code: 'headers_too_large' });
    const longUrl = await rawHttp(port, [`GET /v1/datasets?cursor=${'a'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`]);
    expect(JSON.parse(longUrl.body)).toMatchObject({ status: 431, code: 'headers_too_large' });
    const garbage = await rawHttp(port, ['NOT HTTP AT ALL\r\n\r\n']);
    expect(garbage.status).toBe(400);
    expect(JSON.parse(garbage.body)).toMatchObject({ status: 400, code: 'malformed_request' });
  });

  it('keeps a plain X-Request-Id and replaces anything else', async () => {
    const ok = 'client-1.2:trace_ID';
    expect((await t.http.get('/healthz').set('x-request-id', ok)).headers['x-request-id']).toBe(ok);
    for (const bad of ['has space', 'a'.repeat(129), 'semi;colon', '<script>', 'é']) {
      const id = (await t.http.get('/healthz').set('x-request-id', bad)).headers['x-request-id'];
      expect(id).not.toBe(bad);
      expect(id).toMatch(/^[0-9a-f-]{36}$/);
    }
    expect((await t.http.get('/healthz')).headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('limits JSON bodies to MAX_JSON_BODY_BYTES, except /predict which takes a base64 image', async () => {
    const huge = { datasetId, baseModel: 'mobilenet_v2', hyperparameters: { classWeights: { a: 1 } }, pad: 'x'.repeat(2 * 1024 * 1024) };
    await refusesCleanly(() => t.http.post('/v1/jobs').send(huge), 413, 'body_too_large');
    // 3 MB of base64 is over the JSON limit but within /predict's: it is read, then judged.
    const res = await t.http.post(`/v1/models/${model.modelId}/predict`).send({ instances: [{ b64: Buffer.alloc(2_300_000, 7).toString('base64') }] });
    expectProblem(res, 422, 'invalid_image');
  });

  it('sends security headers and no CORS headers unless configured', async () => {
    const res = await t.http.get('/healthz').set('origin', 'https://evil.example');
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    expect(res.headers['content-security-policy']).toContain("default-src 'none'");
    expect(res.headers['access-control-allow-origin']).toBeUndefined();
    const problem = await t.http.get('/v1/nothing-here');
    expect(problem.headers['x-content-type-options']).toBe('nosniff');

    const withCors = await buildTestApp({ CORS_ORIGINS: 'https://app.example' });
    try {
      const allowed = await withCors.http.get('/healthz').set('origin', 'https://app.example');
      expect(allowed.headers['access-control-allow-origin']).toBe('https://app.example');
      const other = await withCors.http.get('/healthz').set('origin', 'https://evil.example');
      expect(other.headers['access-control-allow-origin']).toBeUndefined();
      const preflight = await withCors.http
        .options('/v1/jobs')
        .set('origin', 'https://app.example')
        .set('access-control-request-method', 'POST');
      expect(preflight.status).toBe(204);
      // Its catch-all OPTIONS route does not turn unknown paths into 405s.
      expectProblem(await withCors.http.put('/v1/nothing-here'), 404, 'route_not_found');
      const put = await withCors.http.put('/v1/datasets');
      expectProblem(put, 405, 'method_not_allowed');
      expect(put.headers.allow?.split(', ').sort()).toEqual(['GET', 'HEAD', 'OPTIONS', 'POST']);
    } finally {
      await withCors.close();
    }
  });

  it('reads the new settings from the environment, listing every bad one', () => {
    const config = loadConfig({ ...process.env, TRUST_PROXY: '10.0.0.0/8, loopback', CORS_ORIGINS: 'https://a.example,http://b.example:8080' });
    expect(config.http.trustProxy).toEqual(['10.0.0.0/8', 'loopback']);
    expect(config.http.corsOrigins).toEqual(['https://a.example', 'http://b.example:8080']);
    expect(loadConfig({ ...process.env, TRUST_PROXY: 'true' }).http.trustProxy).toBe(true);
    expect(loadConfig({ ...process.env }).http).toMatchObject({ trustProxy: false, corsOrigins: [], requestTimeoutMs: 600_000, uploadIdleTimeoutMs: 30_000 });
    const bad = { TRUST_PROXY: 'proxy.example', CORS_ORIGINS: 'https://a.example/path', REQUEST_TIMEOUT_MS: '-1', UPLOAD_IDLE_TIMEOUT_MS: 'soon', KEEP_ALIVE_TIMEOUT_MS: '0', MAX_JSON_BODY_BYTES: '1' };
    let message = '';
    try {
      loadConfig({ ...process.env, ...bad });
    } catch (error) {
      message = (error as Error).message;
    }
    for (const name of Object.keys(bad)) expect(message).toContain(name);
  });
});
