// Helpers for the hostile-input tests (hardening, fuzz): raw HTTP over a socket, hand-built
// multipart bodies, problem+json assertions, "nothing was written" snapshots, a real tiny model.
import { randomUUID } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import type { AddressInfo } from 'node:net';
import { expect } from 'vitest';
import type request from 'supertest';
import { initBackend, serializeModel, tf } from '@finetune/ml';
import { keys } from '@finetune/storage';
import type { TestApp } from './app.ts';

export function expectProblem(res: request.Response, status: number, code: string) {
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(res.headers['content-type']).toContain('application/problem+json');
  expect(res.body).toMatchObject({ status, code, type: `urn:finetune:problem:${code}` });
  expect(typeof res.body.title).toBe('string');
  expect(res.body.detail.length).toBeGreaterThan(0);
}

/** Rows and objects a rejected request must not have added. */
export async function stored(t: TestApp) {
  return {
    datasets: await t.deps.db.dataset.count(),
    jobs: await t.deps.db.job.count(),
    objects: (await t.deps.store.list('datasets/')).length,
    uploads: await stagedUploads(),
  };
}

/** Staged uploads (datasets.service's temp dirs) currently on disk. */
export async function stagedUploads(): Promise<string[]> {
  return (await readdir(tmpdir())).filter((name) => name.startsWith('finetune-upload-'));
}

export interface Part {
  name: string;
  filename?: string;
  contentType?: string;
  data: Buffer | string;
}

/** A multipart/form-data body, byte for byte, so tests can break it on purpose. */
export function multipartBody(boundary: string, parts: Part[], { close = true } = {}): Buffer {
  const chunks: Buffer[] = [];
  for (const part of parts) {
    const disposition = `form-data; name="${part.name}"${part.filename === undefined ? '' : `; filename="${part.filename}"`}`;
    const headers = [`Content-Disposition: ${disposition}`];
    if (part.contentType) headers.push(`Content-Type: ${part.contentType}`);
    chunks.push(Buffer.from(`--${boundary}\r\n${headers.join('\r\n')}\r\n\r\n`, 'utf8'));
    chunks.push(Buffer.isBuffer(part.data) ? part.data : Buffer.from(part.data, 'utf8'));
    chunks.push(Buffer.from('\r\n'));
  }
  if (close) chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(chunks);
}

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** ms from the first byte sent until the response arrived. */
  elapsedMs: number;
  /** Whether the server closed the connection (within the wait). */
  closed: boolean;
}

/**
 * Writes `chunks` to a fresh connection (a number is a pause in ms), then waits up to `waitMs`
 * for the server to answer and close. Resolves with what arrived; status 0 if nothing did.
 */
export async function rawHttp(port: number, chunks: (string | Buffer | number)[], waitMs = 5_000): Promise<RawResponse> {
  const socket = connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const started = Date.now();
  let received = Buffer.alloc(0);
  let answeredAt = 0;
  let closed = false;
  let answered: () => void = () => undefined;
  const complete = new Promise<void>((resolve) => (answered = resolve));
  socket.on('data', (d: Buffer) => {
    answeredAt ||= Date.now();
    received = Buffer.concat([received, d]);
    // A whole response on a connection kept alive: no need to wait for a close.
    const end = received.indexOf('\r\n\r\n');
    const length = /\r\ncontent-length: *(\d+)/i.exec(received.subarray(0, Math.max(end, 0)).toString('latin1'));
    if (end >= 0 && length && received.length >= end + 4 + Number(length[1])) answered();
  });
  socket.on('error', () => undefined); // a reset after the answer is fine
  const done = new Promise<void>((resolve) => socket.once('close', () => ((closed = true), resolve())));
  for (const chunk of chunks) {
    if (closed) break;
    if (typeof chunk === 'number') await new Promise((r) => setTimeout(r, chunk));
    else socket.write(chunk);
  }
  // A server that answers and closes: wait for the close too (the tests check it happens).
  await Promise.race([done, complete.then(() => Promise.race([done, new Promise((r) => setTimeout(r, 200))])), new Promise((r) => setTimeout(r, waitMs))]);
  socket.destroy();
  const text = received.toString('utf8');
  const [head = '', ...rest] = text.split('\r\n\r\n');
  const [statusLine = '', ...headerLines] = head.split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of headerLines) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return {
    status: Number(statusLine.split(' ')[1] ?? 0) || 0,
    headers,
    body: rest.join('\r\n\r\n'),
    elapsedMs: (answeredAt || Date.now()) - started,
    closed,
  };
}

export function portOf(t: TestApp): number {
  return (t.app.server.address() as AddressInfo).port;
}

/** Listens on an ephemeral loopback port (for raw-socket tests) and returns it. */
export async function listen(t: TestApp): Promise<number> {
  await t.app.listen({ port: 0, host: '127.0.0.1' });
  return portOf(t);
}

/**
 * A real two-class model (28×28 RGB → softmax) with its rows and files, so /predict and
 * /download run to the end: a flatten + dense layer, random weights, trained on nothing.
 */
export async function createTinyModel(
  t: TestApp,
  labels = ['a', 'b'],
  tenantId = t.tenantId,
): Promise<{ datasetId: string; jobId: string; modelId: string }> {
  await initBackend(t.config.mlBackend);
  const model = tf.sequential({
    layers: [tf.layers.flatten({ inputShape: [28, 28, 3] }), tf.layers.dense({ units: labels.length, activation: 'softmax' })],
  });
  return storeModel(t, model, { labels, inputSize: 28, tenantId });
}

/**
 * Stores `model` (disposed here) as a trained model of `tenantId`, with the dataset and job rows
 * and the files a finished job leaves, so /predict and /download serve it.
 */
export async function storeModel(
  t: TestApp,
  model: tf.LayersModel,
  { labels, inputSize, tenantId = t.tenantId }: { labels: string[]; inputSize: number; tenantId?: string },
): Promise<{ datasetId: string; jobId: string; modelId: string }> {
  const { modelJson, weights } = await serializeModel(model);
  model.dispose();
  const datasetId = randomUUID();
  const jobId = randomUUID();
  const modelId = randomUUID();
  await t.deps.db.dataset.create({
    data: {
      id: datasetId,
      tenantId,
      name: 'tiny',
      storageKey: `datasets/${datasetId}/source.zip`,
      sizeBytes: 1n,
      sha256: 'x',
      layout: 'flat',
      classes: labels,
      counts: { train: Object.fromEntries(labels.map((l) => [l, 1])), val: {}, skipped: 0, ignored: 0, skippedFiles: [] },
    },
  });
  await t.deps.db.job.create({
    data: { id: jobId, tenantId, datasetId, baseModel: 'small_cnn', strategy: 'scratch', spec: {}, epochs: 1, status: 'succeeded' },
  });
  await t.deps.db.model.create({
    data: { id: modelId, tenantId, jobId, baseModel: 'small_cnn', labels, inputSize, storagePrefix: keys.modelPrefix(modelId), metrics: {} },
  });
  const files: Record<string, Buffer> = {
    'model.json': modelJson,
    'weights.bin': weights,
    'labels.json': Buffer.from(JSON.stringify(labels)),
    'metadata.json': Buffer.from('{}'),
  };
  for (const [file, data] of Object.entries(files)) await t.deps.store.putBuffer(keys.modelFile(modelId, file), data);
  return { datasetId, jobId, modelId };
}

/** A 2.4 KB SVG whose `<use>` fan-out makes librsvg chase ~10^6 references (seconds of CPU). */
export function svgUseBomb(): Buffer {
  let svg =
    '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="1000" height="1000"><defs>' +
    '<rect id="a0" width="1000" height="1000" fill="red" opacity="0.01"/>';
  for (let i = 1; i < 10; i++) svg += `<g id="a${i}">${`<use xlink:href="#a${i - 1}"/>`.repeat(10)}</g>`;
  return Buffer.from(`${svg}</defs><use xlink:href="#a6"/></svg>`);
}
