import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { connect } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import sharp from 'sharp';
import { OPTIMIZERS, STRATEGIES } from '@finetune/core';
import { buildTestApp, TEST_ADMIN_API_KEY, type TestApp } from './support/app.ts';
import { digitPng, zipOf } from './support/mnist-fixtures.ts';
import { createTinyModel, listen, stagedUploads, svgUseBomb } from './support/hostile.ts';

// Property-based fuzzing of every route over real HTTP: generated and mutated job specs, query
// strings, path ids, headers, multipart and JSON bodies, methods and raw bytes. Whatever is sent:
//   - never a 5xx,
//   - every 4xx is application/problem+json with a `code` (and its own status),
//   - the service is still ready at the end, with no staged upload left behind.
// Deterministic: FUZZ_SEED (default below) fixes every property's inputs; a failure names the
// seed and the failing request. FUZZ_SCALE multiplies the run counts (default 1 ≈ 6,000
// requests); FUZZ_SHRINK=1 shrinks a failure to a minimal request (slower). No worker runs in
// this file: the jobs it creates stay queued, on their own queue prefix.

const SEED = Number(process.env.FUZZ_SEED ?? 20_261_122);
const SCALE = Number(process.env.FUZZ_SCALE ?? 1);
const SHRINK = process.env.FUZZ_SHRINK === '1';

let t: TestApp;
let port: number;
let agent: http.Agent;
let ids: { dataset: string; victim: string; job: string; model: string; tenant: string };
let fixtures: { png: Buffer; jpeg: Buffer; zip: Buffer; svg: Buffer };
/** Statuses seen, per property: shows what each one reached (printed at the end). */
const seen = new Map<string, Map<string, number>>();
let sent = 0;

function tally(status: number, code?: string): void {
  sent++;
  const name = expect.getState().currentTestName ?? '?';
  const counts = seen.get(name) ?? new Map<string, number>();
  const key = code ? `${status} ${code}` : String(status);
  counts.set(key, (counts.get(key) ?? 0) + 1);
  seen.set(name, counts);
}
const originalTmp = process.env.TMPDIR;
let privateTmp: string;

interface Req {
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: Buffer | string;
  /** The API key sent: the valid admin key (default), a wrong one, or none. A header in
   * `headers` wins over it. */
  auth?: 'valid' | 'invalid' | 'none';
}

/** Well-formed keys nobody issued, and malformed ones. */
const INVALID_KEYS = [
  `ft_${'0'.repeat(8)}_${'A'.repeat(43)}`,
  TEST_ADMIN_API_KEY.slice(0, -1) + (TEST_ADMIN_API_KEY.endsWith('A') ? 'B' : 'A'),
  'ft_short',
  'x'.repeat(600),
];

function authHeader(r: Req): Record<string, string> {
  if (r.auth === 'none') return {};
  if (r.auth === 'invalid') return { authorization: `Bearer ${INVALID_KEYS[r.path.length % INVALID_KEYS.length]}` };
  return { authorization: `Bearer ${TEST_ADMIN_API_KEY}` };
}
interface Res {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function send(r: Req): Promise<Res> {
  return new Promise((resolve, reject) => {
    const headers = { ...authHeader(r), ...r.headers };
    const req = http.request({ host: '127.0.0.1', port, method: r.method, path: r.path, headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      const done = () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') });
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        // A job's event stream runs until the job ends: its first event is the answer.
        if (String(res.headers['content-type']).startsWith('text/event-stream') && Buffer.concat(chunks).includes('\n\nid: ')) {
          done();
          res.destroy();
        }
      });
      res.on('error', reject);
      res.on('end', done);
    });
    req.on('error', reject);
    req.setTimeout(30_000, () => req.destroy(new Error('no answer within 30 s')));
    req.end(r.body);
  });
}

function describeReq(r: Req): string {
  const body = r.body === undefined ? '' : ` body(${r.body.length}B)=${JSON.stringify(r.body.toString('latin1').slice(0, 300))}`;
  return `${r.method} ${r.path.slice(0, 300)} ${JSON.stringify(r.headers ?? {}).slice(0, 300)}${body}`;
}

/** The invariants, for one request/response pair. Throws (failing the property) when broken. */
function check(r: Req, res: Res): void {
  const where = `${describeReq(r)} → ${res.status} ${res.body.slice(0, 300)}`;
  if (res.status >= 500 || res.status < 100) throw new Error(`server error: ${where}`);
  if (res.status < 400 || r.method === 'HEAD') tally(res.status);
  if (res.status >= 400) {
    if (!String(res.headers['content-type']).startsWith('application/problem+json')) throw new Error(`4xx without problem+json: ${where}`);
    if (r.method === 'HEAD') return;
    const problem = JSON.parse(res.body) as { code?: unknown; status?: unknown; type?: unknown };
    tally(res.status, String(problem.code));
    if (typeof problem.code !== 'string' || problem.code === '' || problem.status !== res.status || problem.type !== `urn:finetune:problem:${problem.code}`) {
      throw new Error(`malformed problem: ${where}`);
    }
  }
}

async function roundTrip(r: Req): Promise<void> {
  check(r, await send(r));
}

function params(numRuns: number): fc.Parameters<unknown> {
  return { seed: SEED, numRuns: Math.max(1, Math.round(numRuns * SCALE)), endOnFailure: !SHRINK };
}

// ---------------------------------------------------------------------------------------------
// Shared arbitraries

const NASTY_CONSTANTS = [
  null, true, false, 0, -0, -1, 0.5, 1.5, 2 ** 31, 2 ** 32, 2 ** 53 + 2, 1e21, 1e308, -1e308, 5e-324,
  '', ' ', '0', '3', '-1', '1e3', '0x10', 'NaN', 'Infinity', '-Infinity', '1e999', 'null', 'true', 'undefined',
  '__proto__', 'constructor', 'prototype', '\u0000', 'a\u0000b', '\u202e\u2066', '\uFEFF', '💥', 'é', '../../etc/passwd',
  '%00', "'; DROP TABLE jobs; --", '${jndi:x}', '<script>', 'mobilenet_v2', 'small_cnn', 'balanced', 'sgd',
  [], {}, [[]], [null], { a: {} }, { __proto__: null, x: 1 }, [1, 2, 3],
];

const nastyValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...NASTY_CONSTANTS) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 2, arbitrary: fc.integer() },
  { weight: 2, arbitrary: fc.double() },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 1, arbitrary: fc.string({ minLength: 200, maxLength: 3000 }) },
  { weight: 1, arbitrary: fc.integer({ min: 20, max: 200 }).map((depth) => JSON.parse('['.repeat(depth) + ']'.repeat(depth)) as unknown) },
  { weight: 1, arbitrary: fc.uuid().map((id) => `urn:uuid:${id}`) },
);

/** Ids to put in paths, cursors and specs: real ones, missing ones and broken ones. */
const idArb = (kind: 'any' | 'dataset-delete' = 'any') =>
  fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom('dataset', 'victim', 'job', 'model').map((k) => (kind === 'dataset-delete' && k === 'dataset' ? ids.victim : ids[k as keyof typeof ids])) },
    { weight: 2, arbitrary: fc.uuid() },
    { weight: 1, arbitrary: fc.uuid().map((u) => u.toUpperCase()) },
    { weight: 2, arbitrary: fc.uuid().map((u) => `urn:uuid:${u}`) },
    { weight: 1, arbitrary: fc.uuid().map((u) => `{${u}}`) },
    { weight: 1, arbitrary: fc.uuid().map((u) => u.replace(/-/g, '')) },
    { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 60 }) },
    { weight: 1, arbitrary: fc.constantFrom('', '.', '..', '%00', '%2F', '%', '%zz', 'null', '0', '-1', 'a'.repeat(101), 'a'.repeat(2000)) },
  );

/** A path segment as a client would send it: mostly encoded, sometimes raw bytes Node allows. */
function segment(id: string, raw: boolean): string {
  if (!raw) return encodeURIComponent(id);
  return [...id].map((c) => (c.charCodeAt(0) >= 0x21 && c.charCodeAt(0) <= 0xff && c !== '/' && c !== '?' && c !== '#' ? c : encodeURIComponent(c))).join('');
}

const ID_ROUTES: [string, string][] = [
  ['GET', '/v1/datasets/:id'],
  ['GET', '/v1/datasets/:id/samples'],
  ['DELETE', '/v1/datasets/:id'],
  ['GET', '/v1/jobs/:id'],
  ['GET', '/v1/jobs/:id/metrics'],
  ['GET', '/v1/jobs/:id/checkpoints'],
  ['POST', '/v1/jobs/:id/cancel'],
  ['DELETE', '/v1/jobs/:id'],
  ['GET', '/v1/models/:id'],
  ['PATCH', '/v1/models/:id'],
  ['GET', '/v1/models/:id/download'],
  ['POST', '/v1/models/:id/predict'],
  ['DELETE', '/v1/api-keys/:id'],
  ['POST', '/v1/tenants/:id/api-keys'],
  ['GET', '/v1/tenants/:id'],
  ['PATCH', '/v1/tenants/:id'],
  ['GET', '/v1/jobs/:id/events'],
  ['POST', '/v1/models/:id/batch-predictions'],
  ['GET', '/v1/batch-predictions/:id'],
  ['GET', '/v1/batch-predictions/:id/results'],
  ['DELETE', '/v1/batch-predictions/:id'],
  ['POST', '/v1/datasets/uploads/:id/complete'],
  ['GET', '/v1/base-models/:id'],
  ['DELETE', '/v1/base-models/:id'],
  ['GET', '/v1/sweeps/:id'],
  ['POST', '/v1/sweeps/:id/cancel'],
  ['DELETE', '/v1/sweeps/:id'],
];
const PATHS = ['/healthz', '/readyz', '/v1/base-models', '/v1/datasets', '/v1/jobs', '/v1/api-keys', '/v1/tenants', '/v1/usage', '/v1/models', '/v1/batch-predictions', '/v1/datasets/uploads', '/v1/sweeps', ...ID_ROUTES.map(([, p]) => p), '/', '/v1', '/v1/', '/v2/jobs', '/v1/jobs/', '//v1/jobs'];

// Header values Node's client will send: tab, visible ASCII, Latin-1.
const headerValue = fc.oneof(
  fc.string({ unit: fc.constantFrom(...'abcXYZ019 .:;,=/-_"\'()<>@[]{}?\t\u00e9\u00ff'.split('')), maxLength: 80 }),
  fc.string({ unit: 'grapheme-ascii', maxLength: 300 }),
  fc.constantFrom('', ' ', 'null', 'application/json', 'multipart/form-data', '0', '-1', '99999999999999999999'),
);
const headerName = fc.stringMatching(/^[a-z][a-z0-9-]{0,20}$/).filter((h) => !['content-length', 'transfer-encoding', 'host', 'connection', 'expect', 'upgrade'].includes(h));

const CONTENT_TYPES = [
  'application/json',
  'application/json; charset=utf-8',
  'application/json; charset=latin1',
  'application/json;;',
  'APPLICATION/JSON',
  'application/problem+json',
  'application/x-www-form-urlencoded',
  'text/plain',
  'text/json',
  'multipart/form-data',
  'multipart/form-data; boundary=',
  'multipart/form-data; boundary=abc',
  'multipart/mixed; boundary=abc',
  '*/*',
  '',
];

/** `arb`'s value with probability `p`, else null (fc.option's `freq` is the odds of null). */
function sometimes<T>(arb: fc.Arbitrary<T>, p: number): fc.Arbitrary<T | null> {
  const weight = Math.round(p * 100);
  return fc.oneof({ weight, arbitrary: arb }, { weight: 100 - weight, arbitrary: fc.constant(null) });
}

function withBody(r: Req, body: string | Buffer, contentType = 'application/json'): Req {
  return { ...r, body, headers: { 'content-type': contentType, ...r.headers } };
}

// ---------------------------------------------------------------------------------------------
// Job specs: valid ones, then broken

const validSpec = () =>
  fc
    .record(
      {
        strategy: fc.constantFrom(...STRATEGIES),
        compareWithScratch: fc.boolean(),
        maxRuntimeSeconds: fc.integer({ min: 1, max: 86_400 }),
        hyperparameters: fc.record(
          {
            epochs: fc.integer({ min: 1, max: 500 }),
            batchSize: fc.integer({ min: 1, max: 1024 }),
            optimizer: fc.constantFrom(...OPTIMIZERS),
            learningRate: fc.double({ min: 1e-6, max: 10, noNaN: true }),
            momentum: fc.double({ min: 0, max: 0.999, noNaN: true }),
            validationSplit: fc.double({ min: 0, max: 0.5, noNaN: true }),
            seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
            lrSchedule: fc.constantFrom({ type: 'constant' }, { type: 'step', stepSize: 2, gamma: 0.5 }, { type: 'cosine' }),
            earlyStopping: fc.record({ monitor: fc.constantFrom('val_loss', 'accuracy'), patience: fc.integer({ min: 1, max: 5 }) }),
            head: fc.record({ hiddenUnits: fc.array(fc.integer({ min: 1, max: 64 }), { maxLength: 2 }), dropout: fc.double({ min: 0, max: 0.9, noNaN: true }) }),
            augmentation: fc.record({ flipHorizontal: fc.boolean(), zoom: fc.double({ min: 0, max: 0.5, noNaN: true }) }),
            classWeights: fc.constantFrom('balanced', { a: 2 }, { b: 0.5 }),
            unfreeze: fc.constantFrom({ topLayers: 3 }, { fromLayer: 'block_16_project' }),
          },
          { requiredKeys: [] },
        ),
      },
      { requiredKeys: [] },
    )
    .chain((spec) =>
      fc.record({
        datasetId: fc.oneof({ weight: 6, arbitrary: fc.constant(ids.dataset) }, { weight: 1, arbitrary: idArb() }),
        baseModel: fc.oneof(
          { weight: 6, arbitrary: fc.constantFrom('mobilenet_v2', 'inception_v3', 'small_cnn') },
          { weight: 1, arbitrary: fc.constantFrom({ modelId: ids.model }) },
          { weight: 1, arbitrary: idArb().map((modelId) => ({ modelId })) },
        ),
      }).map((head) => ({ ...head, ...spec }) as Record<string, unknown>),
    );

type Mutation = { at: number; op: 'replace' | 'add' | 'delete'; key: string; value: unknown };
const mutation: fc.Arbitrary<Mutation> = fc.record({
  at: fc.nat(),
  op: fc.constantFrom('replace', 'replace', 'add', 'delete'),
  key: fc.oneof(fc.constantFrom('epochs', 'batchSize', 'datasetId', 'baseModel', 'hyperparameters', 'stages', 'weightDecay', 'nesterov', 'x', 'constructor', ''), fc.string({ maxLength: 12 })),
  value: nastyValue,
});

/** Applies mutations at containers/leaves picked by index, on a deep copy. */
function mutate(spec: Record<string, unknown>, mutations: Mutation[]): unknown {
  let root: unknown = structuredClone(spec);
  for (const m of mutations) {
    const slots: { parent: Record<string, unknown> | unknown[] | null; key: string | number; value: unknown }[] = [];
    const walk = (value: unknown, parent: Record<string, unknown> | unknown[] | null, key: string | number) => {
      slots.push({ parent, key, value });
      if (Array.isArray(value)) value.forEach((v, i) => walk(v, value, i));
      else if (value && typeof value === 'object') for (const [k, v] of Object.entries(value)) walk(v, value as Record<string, unknown>, k);
    };
    walk(root, null, '');
    const slot = slots[m.at % slots.length]!;
    if (m.op === 'replace') {
      if (slot.parent === null) root = m.value;
      else (slot.parent as Record<string | number, unknown>)[slot.key] = m.value;
    } else if (m.op === 'add' && slot.value && typeof slot.value === 'object' && !Array.isArray(slot.value)) {
      Object.defineProperty(slot.value, m.key, { value: m.value, enumerable: true, configurable: true, writable: true });
    } else if (m.op === 'delete' && slot.parent !== null) {
      if (Array.isArray(slot.parent)) slot.parent.splice(Number(slot.key), 1);
      else delete slot.parent[slot.key as string];
    }
  }
  return root;
}

type TextMutation = { kind: number; at: number; text: string };
/** JSON-text-level damage JSON.stringify cannot produce. */
function mutateText(json: string, m: TextMutation): string {
  const at = json.length === 0 ? 0 : m.at % json.length;
  switch (m.kind % 10) {
    case 0: return json.slice(0, at); // truncated
    case 1: return json.slice(0, at) + m.text + json.slice(at); // inserted junk
    case 2: return json.replace(/"([^"\\]*)"/, '"$1\\ud800"'); // lone surrogate escape
    case 3: return json.replace(/"([^"\\]*)"/, '"$1\\u0000"'); // NUL escape
    case 4: return json.replace(/^\{/, '{"__proto__":{"polluted":1},'); // prototype poisoning
    case 5: return json.replace(/^\{/, '{"constructor":{"prototype":{"x":1}},');
    case 6: return json.replace(/:(\d+)/, ':1e400'); // beyond double
    case 7: return `\uFEFF${json}`; // BOM
    case 8: return json.replace(/^\{/, '{"epochs":1,"epochs":"x",'); // duplicate keys
    default: return `${json}${m.text}`; // trailing garbage
  }
}
const textMutation: fc.Arbitrary<TextMutation> = fc.record({ kind: fc.nat(), at: fc.nat(), text: fc.string({ unit: 'binary-ascii', maxLength: 8 }) });

// ---------------------------------------------------------------------------------------------
// Multipart

const boundaryArb = fc.oneof(
  { weight: 5, arbitrary: fc.stringMatching(/^[A-Za-z0-9'()+_,.\/:=?-]{1,70}$/) },
  { weight: 1, arbitrary: fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 300 }).filter((b) => !/[\r\n"]/.test(b)) },
);

interface FuzzPart {
  name: string;
  filename: string | null;
  contentType: string | null;
  data: Buffer;
}

function flip(data: Buffer, positions: number[], bytes: number[]): Buffer {
  const out = Buffer.from(data);
  positions.forEach((p, i) => {
    if (out.length > 0) out[p % out.length] = bytes[i % bytes.length]! & 0xff;
  });
  return out;
}

const blobArb = (kind: 'zip' | 'image') =>
  fc.oneof(
    { weight: 3, arbitrary: fc.constant(kind === 'zip' ? 'zip' : 'png').map((k) => fixtures[k as 'zip' | 'png']) },
    { weight: 1, arbitrary: fc.constant('jpeg').map(() => fixtures.jpeg) },
    { weight: 1, arbitrary: fc.constant('svg').map(() => fixtures.svg) },
    {
      weight: 4,
      arbitrary: fc
        .tuple(fc.array(fc.nat(), { minLength: 1, maxLength: 12 }), fc.array(fc.nat(255), { minLength: 1, maxLength: 12 }))
        .map(([positions, bytes]) => flip(kind === 'zip' ? fixtures.zip : fixtures.png, positions, bytes)),
    },
    { weight: 1, arbitrary: fc.nat().map((n) => (kind === 'zip' ? fixtures.zip : fixtures.png).subarray(0, n % fixtures.zip.length)) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 2048 }).map((a) => Buffer.from(a)) },
  );

const partArb = (route: 'datasets' | 'predict'): fc.Arbitrary<FuzzPart> =>
  fc.oneof(
    {
      weight: 3,
      arbitrary: fc.record({
        name: fc.constant('file'),
        filename: fc.oneof(fc.constantFrom('d.zip', 'x.png', '', 'a\u0000b.zip', '../../x.zip', 'x'.repeat(300)), fc.string({ unit: 'binary', maxLength: 30 }).map((s) => s.replace(/["\r\n]/g, ''))),
        contentType: fc.constantFrom(null, 'application/zip', 'image/png', 'application/json', 'text/plain'),
        data: blobArb(route === 'datasets' ? 'zip' : 'image'),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        name: fc.constantFrom('name', 'name', 'file', 'other', '__proto__', 'constructor', ''),
        filename: fc.constant(null),
        contentType: fc.constantFrom(null, null, 'application/json', 'text/plain; charset=utf-16'),
        data: fc
          .oneof(
            fc.string({ unit: 'binary', maxLength: 60 }),
            fc.constantFrom('ok', '', '\u0000', 'a\u0007b', '{"a":1}', '"quoted"', 'x'.repeat(250), 'x'.repeat(70_000)),
          )
          .map((s) => Buffer.from(s, 'utf8')),
      }),
    },
  );

function multipart(boundary: string, parts: FuzzPart[], close: boolean): Buffer {
  const chunks: Buffer[] = [];
  for (const p of parts) {
    const disposition = `form-data; name="${p.name}"${p.filename === null ? '' : `; filename="${p.filename}"`}`;
    chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: ${disposition}\r\n${p.contentType ? `Content-Type: ${p.contentType}\r\n` : ''}\r\n`, 'utf8'), p.data, Buffer.from('\r\n'));
  }
  if (close) chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(chunks);
}

// ---------------------------------------------------------------------------------------------

beforeAll(async () => {
  privateTmp = await mkdtemp(join(tmpdir(), 'finetune-fuzz-'));
  process.env.TMPDIR = privateTmp;
  t = await buildTestApp({ QUEUE_PREFIX: `${process.env.QUEUE_PREFIX}-fuzz-${randomBytes(6).toString('hex')}` });
  port = await listen(t);
  agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  const png = await digitPng(3, 0);
  fixtures = { png, jpeg: await sharp(png).jpeg().toBuffer(), zip: zipOf({ 'a/1.png': png, 'b/1.png': await digitPng(5, 0) }), svg: svgUseBomb() };
  const upload = async () => {
    const body = multipart('fuzzSetup', [{ name: 'file', filename: 'd.zip', contentType: null, data: fixtures.zip }], true);
    const res = await send({ method: 'POST', path: '/v1/datasets', headers: { 'content-type': 'multipart/form-data; boundary=fuzzSetup' }, body });
    expect(res.status, res.body).toBe(201);
    return (JSON.parse(res.body) as { id: string }).id;
  };
  const dataset = await upload();
  const victim = await upload();
  const { modelId } = await createTinyModel(t);
  const job = await send(withBody({ method: 'POST', path: '/v1/jobs' }, JSON.stringify({ datasetId: dataset, baseModel: 'mobilenet_v2' })));
  expect(job.status, job.body).toBe(202);
  // A tenant of its own for PATCH bodies: quotas set at random must not starve the other properties.
  const tenant = await send(withBody({ method: 'POST', path: '/v1/tenants' }, JSON.stringify({ name: 'fuzzed' })));
  expect(tenant.status, tenant.body).toBe(201);
  ids = { dataset, victim, job: (JSON.parse(job.body) as { id: string }).id, model: modelId, tenant: (JSON.parse(tenant.body) as { id: string }).id };
});

afterAll(async () => {
  agent?.destroy();
  await t?.close();
  process.env.TMPDIR = originalTmp;
  if (privateTmp) await rm(privateTmp, { recursive: true, force: true });
  const lines = [...seen].map(([name, counts]) => `  ${name.replace(/^.*> /, '')}: ${JSON.stringify(Object.fromEntries([...counts].sort(([a], [b]) => (a < b ? -1 : 1))))}`);
  console.log(`[fuzz] seed ${SEED}: ${sent} requests\n${lines.join('\n')}`);
});

describe(`fuzz (seed ${SEED})`, () => {
  it('POST /v1/jobs with mutated job specs', async () => {
    await fc.assert(
      fc.asyncProperty(
        validSpec(),
        fc.oneof({ weight: 1, arbitrary: fc.constant<Mutation[]>([]) }, { weight: 3, arbitrary: fc.array(mutation, { minLength: 1, maxLength: 3 }) }),
        sometimes(textMutation, 0.2),
        sometimes(fc.constantFrom(...CONTENT_TYPES), 0.15),
        sometimes(fc.oneof(fc.uuid(), headerValue.filter((v) => v.trim() !== ''), fc.constant('k'.repeat(300))), 0.25),
        async (spec, mutations, text, contentType, idempotencyKey) => {
          let json = JSON.stringify(mutate(spec, mutations)) ?? 'null';
          if (text) json = mutateText(json, text);
          const req = withBody({ method: 'POST', path: '/v1/jobs', headers: idempotencyKey ? { 'idempotency-key': idempotencyKey } : {} }, json, contentType ?? 'application/json');
          await roundTrip(req);
        },
      ),
      params(2000),
    );
  });

  it('POST /v1/sweeps with generated spaces and mutated sweep specs', async () => {
    // Mostly well-formed entries, so that most bodies reach the space's own validation.
    const bound = fc.oneof({ weight: 9, arbitrary: fc.double({ min: -2, max: 600, noNaN: true }) }, { weight: 1, arbitrary: fc.double() });
    const entry = fc.oneof(
      { weight: 4, arbitrary: fc.record({ min: bound, max: bound, log: fc.boolean() }, { requiredKeys: ['min', 'max'] }) },
      { weight: 3, arbitrary: fc.record({ choices: fc.array(fc.oneof(bound, fc.constantFrom('adam', 'sgd', [], [64], { type: 'constant' }, true), nastyValue), { minLength: 1, maxLength: 4 }) }) },
      { weight: 1, arbitrary: nastyValue },
    );
    const path = fc.oneof(
      fc.constantFrom('learningRate', 'epochs', 'batchSize', 'head.dropout', 'head.hiddenUnits', 'optimizer', 'earlyStopping.patience', 'lrSchedule', 'warmupEpochs', '__proto__', 'head..x', 'constructor', 'head.dropout.x', ''),
      fc.string({ maxLength: 12 }),
    );
    const options = fc.record(
      {
        searcher: fc.constantFrom('random', 'asha', 'asha', 'random', 'grid'),
        maxTrials: fc.integer({ min: 0, max: 120 }),
        maxConcurrentTrials: fc.integer({ min: 1, max: 40 }),
        metric: fc.constantFrom('val_accuracy', 'loss', 'val_loss', 'accuracy', 'f1'),
        seed: fc.integer({ min: -1, max: 2 ** 31 }),
        asha: fc.record({ minEpochs: fc.integer({ min: 0, max: 600 }), reductionFactor: fc.integer({ min: 1, max: 12 }) }, { requiredKeys: [] }),
      },
      { requiredKeys: [] },
    );
    // Spaces that are valid as they stand, so that sweeps are also accepted (and then canceled).
    const validSpace = fc.subarray(
      [
        ['learningRate', { min: 1e-4, max: 1e-1, log: true }],
        ['head.dropout', { min: 0, max: 0.5 }],
        ['epochs', { min: 1, max: 5 }],
        ['batchSize', { choices: [8, 16, 64] }],
        ['head.hiddenUnits', { choices: [[], [32]] }],
      ] as [string, unknown][],
      { minLength: 1 },
    ).map((entries) => Object.fromEntries(entries));
    const space = fc.oneof({ weight: 2, arbitrary: fc.dictionary(path, entry, { minKeys: 1, maxKeys: 4 }) }, { weight: 1, arbitrary: validSpace });
    await fc.assert(
      fc.asyncProperty(validSpec(), space, options, sometimes(fc.array(mutation, { minLength: 1, maxLength: 2 }), 0.3), async (spec, space, extra, mutations) => {
        // The job spec's own fuzz covers its fields: here they stay as generated, the space varies.
        const { compareWithScratch: _unused, ...rest } = spec;
        const req = withBody({ method: 'POST', path: '/v1/sweeps' }, JSON.stringify(mutate({ ...rest, ...extra, space }, mutations ?? [])) ?? 'null');
        const res = await send(req);
        check(req, res);
        // An accepted sweep waits for a worker: canceled here, no later test's worker runs it.
        if (res.status === 202) check({ method: 'POST', path: '/cancel' }, await send({ method: 'POST', path: `/v1/sweeps/${(JSON.parse(res.body) as { id: string }).id}/cancel` }));
      }),
      params(400),
    );
  });

  it('POST /v1/base-models with generated and mutated JSON bodies', async () => {
    const field = fc.oneof(fc.string({ unit: 'binary', maxLength: 30 }), fc.integer({ min: -5, max: 5000 }), fc.constantFrom(null, true, [], {}, 1.5, '224', 'a'.repeat(300)));
    const body = fc.oneof(
      fc.record(
        {
          url: fc.oneof(fc.constantFrom('http://127.0.0.1:9/m/model.json', 'https://example.invalid/model.json', 'file:///etc/passwd', 'ftp://x/model.json', 'http://user:pw@x/model.json', 'not a url', ''), field),
          embeddingLayer: fc.oneof(fc.constantFrom('embedding', 'avg_pool'), field),
          inputSize: fc.oneof(fc.integer({ min: -1, max: 2000 }), field),
          scale: fc.oneof(fc.constantFrom('0_1', '-1_1', '0_255', '0-1', ''), field),
          name: field,
          extra: field,
        },
        { requiredKeys: [] },
      ),
      fc.json({ maxDepth: 3 }),
    );
    await fc.assert(
      fc.asyncProperty(body, sometimes(fc.constantFrom(...CONTENT_TYPES), 0.15), async (b, contentType) => {
        await roundTrip(withBody({ method: 'POST', path: '/v1/base-models' }, typeof b === 'string' ? b : JSON.stringify(b), contentType ?? 'application/json'));
      }),
      params(300),
    );
  });

  it('query strings on the lists', async () => {
    const key = fc.oneof({ weight: 4, arbitrary: fc.constantFrom('limit', 'cursor', 'status') }, { weight: 1, arbitrary: fc.constantFrom('__proto__', 'constructor', 'limit[]', 'a', '') }, { weight: 1, arbitrary: fc.string({ maxLength: 8 }) });
    const value = fc.oneof(
      fc.integer({ min: -5, max: 200 }).map(String),
      fc.constantFrom('', '1.5', '1e2', '0x10', 'NaN', '-0', ' 5', '5 ', 'queued', 'running', 'succeeded', 'nope', 'true', '[]'),
      idArb(),
      fc.string({ unit: 'binary', maxLength: 20 }),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('/v1/datasets', '/v1/jobs', '/v1/base-models', '/v1/sweeps', '/healthz'),
        fc.array(fc.tuple(key, value, fc.boolean()), { maxLength: 5 }),
        sometimes(fc.constantFrom('&&', '=', '&=&', '%', '%zz', '%00', '?', '#', ';', '+'), 0.2),
        async (path, pairs, junk) => {
          const query = pairs.map(([k, v, raw]) => `${raw ? segment(k, true) : encodeURIComponent(k)}=${raw ? segment(v, true) : encodeURIComponent(v)}`).join('&');
          await roundTrip({ method: 'GET', path: `${path}?${query}${junk ?? ''}` });
        },
      ),
      params(800),
    );
  });

  it('PATCH /v1/tenants/:id with generated and mutated bodies', async () => {
    const quota = fc.oneof(fc.integer({ min: -2, max: 5 }), fc.constantFrom(null, 0, 2 ** 53, 2 ** 53 + 2, 1.5, -0, '3', true, [], {}, 1e308));
    const body = fc.oneof(
      fc.record({ name: fc.oneof(fc.string({ unit: 'binary', maxLength: 40 }), fc.constant('a'.repeat(300))), quotas: fc.dictionary(fc.constantFrom('concurrentJobs', 'storedBytes', 'models', '__proto__', 'x'), quota) }, { requiredKeys: [] }),
      fc.json({ maxDepth: 3 }),
    );
    await fc.assert(
      fc.asyncProperty(body, async (b) => {
        await roundTrip(withBody({ method: 'PATCH', path: `/v1/tenants/${ids.tenant}` }, typeof b === 'string' ? b : JSON.stringify(b)));
      }),
      params(300),
    );
  });

  it('PATCH /v1/models/:id and predict ?threshold= with generated values', async () => {
    const threshold = fc.oneof(fc.double({ min: -1, max: 2, noNaN: true }), fc.constantFrom(null, 0, 1, -0, 1e308, '0.5', true, [], {}, 'NaN'));
    const body = fc.oneof(fc.record({ confidenceThreshold: threshold, extra: threshold }, { requiredKeys: [] }), fc.json({ maxDepth: 3 }));
    await fc.assert(
      fc.asyncProperty(body, fc.oneof(fc.string({ unit: 'binary-ascii', maxLength: 12 }), threshold.map(String)), async (b, query) => {
        await roundTrip(withBody({ method: 'PATCH', path: `/v1/models/${ids.model}` }, typeof b === 'string' ? b : JSON.stringify(b)));
        await roundTrip(withBody({ method: 'POST', path: `/v1/models/${ids.model}/predict?threshold=${encodeURIComponent(query)}` }, '{"instances":[]}'));
      }),
      params(200),
    );
  });

  it('ids in every :id route', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...ID_ROUTES).chain(([method, route]) =>
          fc.tuple(fc.constant(method), fc.constant(route), idArb(route === '/v1/datasets/:id' && method === 'DELETE' ? 'dataset-delete' : 'any')),
        ),
        fc.boolean(),
        async ([method, route, id], raw) => {
          await roundTrip({ method, path: route.replace(':id', segment(id, raw)) });
        },
      ),
      params(1000),
    );
  });

  it('headers on every route', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...PATHS),
        fc.constantFrom('GET', 'POST', 'DELETE', 'PATCH'),
        fc.dictionary(headerName, headerValue, { maxKeys: 4 }),
        fc.record({
          'content-type': sometimes(fc.oneof(fc.constantFrom(...CONTENT_TYPES), headerValue), 0.5),
          'x-request-id': sometimes(headerValue, 0.5),
          'idempotency-key': sometimes(headerValue, 0.3),
          accept: sometimes(fc.constantFrom('application/xml', '*/*', 'text/html', ''), 0.3),
        }),
        sometimes(fc.oneof(fc.json({ maxDepth: 2 }), fc.string({ unit: 'binary-ascii', maxLength: 100 })), 0.5),
        async (path, method, extra, known, body) => {
          const headers: Record<string, string> = { ...extra };
          for (const [k, v] of Object.entries(known)) if (v !== null) headers[k] = v;
          const resolved = path.replace(':id', ids.job);
          await roundTrip({ method, path: resolved, headers, body: method === 'POST' || method === 'PATCH' ? (body ?? undefined) : undefined });
        },
      ),
      params(600),
    );
  });

  it('multipart uploads to /v1/datasets, /v1/base-models and /predict', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('datasets', 'predict', 'base-models').chain((route) =>
          fc.record({
            route: fc.constant(route as 'datasets' | 'predict' | 'base-models'),
            boundary: boundaryArb,
            headerBoundary: sometimes(boundaryArb, 0.15),
            // A base-model upload has the same shape as a dataset's: a "file" zip and text fields.
            parts: fc.array(partArb(route === 'predict' ? 'predict' : 'datasets'), { maxLength: 4 }),
            cut: sometimes(fc.nat(), 0.2),
            unclosed: fc.nat(9).map((n) => n === 0),
          }),
        ),
        async ({ route, boundary, headerBoundary, parts, cut, unclosed }) => {
          let body = multipart(boundary, parts, !unclosed);
          if (cut !== null && body.length > 0) body = body.subarray(0, cut % body.length);
          const contentType = `multipart/form-data; boundary=${headerBoundary ?? boundary}`;
          const path = route === 'predict' ? `/v1/models/${ids.model}/predict` : `/v1/${route}`;
          await roundTrip({ method: 'POST', path, headers: { 'content-type': contentType }, body });
        },
      ),
      params(600),
    );
  });

  it('JSON predict bodies', async () => {
    const instance = fc.oneof(
      { weight: 4, arbitrary: blobArb('image').map((b) => ({ b64: b.toString('base64') })) },
      { weight: 1, arbitrary: fc.string({ unit: 'binary-ascii', maxLength: 40 }).map((b64) => ({ b64 })) },
      { weight: 1, arbitrary: fc.record({ b64: nastyValue }, { requiredKeys: [] }) },
      { weight: 1, arbitrary: fc.record({ b64: fc.constant('iVBORw0KGgo='), extra: nastyValue }) },
    );
    await fc.assert(
      fc.asyncProperty(
        fc.oneof({ weight: 5, arbitrary: fc.array(instance, { maxLength: 34 }).map((instances) => ({ instances })) }, { weight: 1, arbitrary: nastyValue }),
        sometimes(textMutation, 0.15),
        fc.oneof({ weight: 5, arbitrary: fc.constant(ids.model) }, { weight: 1, arbitrary: idArb() }),
        async (body, text, modelId) => {
          let json = JSON.stringify(body) ?? 'null';
          if (text) json = mutateText(json, text);
          await roundTrip(withBody({ method: 'POST', path: `/v1/models/${segment(modelId, false)}/predict` }, json));
        },
      ),
      params(400),
    );
  });

  it('every method on every path', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'PROPFIND', 'TRACE', 'SEARCH'),
        fc.constantFrom(...PATHS),
        idArb(),
        async (method, path, id) => {
          await roundTrip({ method, path: path.replace(':id', segment(id, false)), body: method === 'POST' ? '{}' : undefined, headers: method === 'POST' ? { 'content-type': 'application/json' } : {} });
        },
      ),
      params(500),
    );
  });

  it('credentials: a valid key, an invalid key, a malformed header and none, on every route', async () => {
    const authorization = fc.oneof(
      { weight: 3, arbitrary: fc.constantFrom<Req['auth']>('valid', 'invalid', 'none').map((auth) => ({ auth, header: null as string | null })) },
      {
        weight: 2,
        arbitrary: fc
          .oneof(
            headerValue,
            fc.constantFrom('Bearer', 'Bearer ', 'bearer', 'Basic dXNlcjpwYXNz', `Bearer  ${TEST_ADMIN_API_KEY}`, `Token ${TEST_ADMIN_API_KEY}`, `Bearer ${TEST_ADMIN_API_KEY} x`, `${TEST_ADMIN_API_KEY}`),
            fc.string({ unit: 'grapheme-ascii', maxLength: 80 }).map((k) => `Bearer ${k}`),
          )
          .map((header) => ({ auth: 'none' as Req['auth'], header: header as string | null })),
      },
    );
    const known = new Set(['/v1/base-models', '/v1/datasets', '/v1/jobs', '/v1/api-keys', '/v1/usage', '/v1/tenants']);
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...ID_ROUTES, ...[...known].map((p) => ['GET', p] as [string, string])), authorization, async ([method, route], { auth, header }) => {
        const path = route.replace(':id', ids.job);
        const r: Req = { method, path, auth, headers: header === null ? {} : { authorization: header } };
        const res = await send(r);
        check(r, res);
        // Without a usable key, every /v1 route answers 401 with a Bearer challenge, before anything else.
        if (auth !== 'valid' && header === null) {
          if (res.status !== 401 || !String(res.headers['www-authenticate']).startsWith('Bearer')) {
            throw new Error(`expected 401 + WWW-Authenticate: ${describeReq(r)} → ${res.status} ${res.body.slice(0, 200)}`);
          }
        }
      }),
      params(400),
    );
  });

  it('raw bytes on the socket', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.uint8Array({ minLength: 1, maxLength: 300 }).map((a) => Buffer.from(a)),
          fc
            .tuple(fc.constantFrom('GET', 'POST', 'G\u0000T', 'get', ''), fc.string({ unit: 'binary-ascii', maxLength: 60 }), fc.constantFrom('HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/9', ''), fc.string({ unit: 'binary-ascii', maxLength: 80 }))
            .map(([m, path, version, headers]) => Buffer.from(`${m} /${path} ${version}\r\nHost: x\r\n${headers}\r\n\r\n`, 'latin1')),
          fc
            .tuple(fc.string({ unit: 'binary-ascii', maxLength: 40 }), fc.string({ unit: 'binary-ascii', maxLength: 40 }))
            .map(([te, cl]) => Buffer.from(`POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: ${te}\r\nContent-Length: ${cl}\r\n\r\n{}`, 'latin1')),
        ),
        async (bytes) => {
          const status = await rawExchange(bytes);
          tally(status.status);
          if (status.status >= 500) throw new Error(`server error on raw bytes ${JSON.stringify(bytes.toString('latin1'))}: ${status.text}`);
          if (status.status >= 400 && !/content-type: application\/problem\+json/i.test(status.text)) {
            throw new Error(`non-problem ${status.status} on raw bytes ${JSON.stringify(bytes.toString('latin1'))}: ${status.text}`);
          }
        },
      ),
      params(200),
    );
  });

  it('is still ready, and left no staged upload behind', async () => {
    const ready = await send({ method: 'GET', path: '/readyz' });
    expect(ready.status, ready.body).toBe(200);
    await expect.poll(() => stagedUploads(), { timeout: 5_000 }).toEqual([]);
    expect(sent).toBeGreaterThan(5000 * Math.min(1, SCALE));
  });
});

/** Sends raw bytes, half-closes, and returns the first response's status line and head. */
function rawExchange(bytes: Buffer): Promise<{ status: number; text: string }> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let text = '';
    const finish = () => {
      socket.destroy();
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      resolve({ status: status ? Number(status[1]) : 0, text: text.split('\r\n\r\n')[0] ?? '' });
    };
    socket.setTimeout(3_000, finish);
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
    });
    socket.on('error', finish);
    socket.on('close', finish);
    socket.on('connect', () => socket.end(bytes));
  });
}

// A helper for one-off replays while debugging: FUZZ_REPLAY='{"method":"GET","path":"/"}'.
if (process.env.FUZZ_REPLAY) {
  it('replays FUZZ_REPLAY', async () => {
    const r = JSON.parse(process.env.FUZZ_REPLAY!) as Req;
    await roundTrip(r);
  });
}
