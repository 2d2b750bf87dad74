import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { runCli, shown } from './run-cli.ts';

// `jobs watch` against a stand-in API that speaks the event-stream contract of
// GET /v1/jobs/:id/events (status / progress / epoch / done, `: ping` heartbeats, ids), so the
// SSE path, its reconnection with Last-Event-ID and the polling fallback are each exercised
// whatever the real API offers today.

const JOB_ID = '7d1c3f52-8a0e-4f7e-9b8e-2f1c0d9e6a11';
const KEY = 'ft_test_key';

function job(status: string, epoch: number, extra: Record<string, unknown> = {}) {
  return {
    id: JOB_ID,
    status,
    datasetId: 'b0c1d2e3-0000-4000-8000-000000000001',
    baseModel: 'small_cnn',
    strategy: 'scratch',
    progress: { epoch, epochs: 2, percent: status === 'succeeded' ? 100 : epoch * 50 },
    metrics: { best: null, last: null },
    backend: 'wasm',
    modelId: status === 'succeeded' ? 'c0ffee00-0000-4000-8000-000000000002' : null,
    stopReason: status === 'succeeded' ? 'completed' : null,
    attempts: 1,
    runs: 1,
    cancelRequested: false,
    error: null,
    createdAt: '2025-01-01T00:00:00.000Z',
    startedAt: '2025-01-01T00:00:01.000Z',
    finishedAt: null,
    ...extra,
  };
}

function row(epoch: number) {
  return { epoch, trainLoss: 1 / epoch, trainAccuracy: 0.5 + epoch / 10, valLoss: 1.1 / epoch, valAccuracy: 0.4 + epoch / 10, learningRate: 0.001, durationMs: 1200, stage: null };
}

function sse(id: number, event: string, data: unknown): string {
  return `id: ${id}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

function problem(res: ServerResponse, status: number, code: string, detail: string) {
  res.writeHead(status, { 'content-type': 'application/problem+json' });
  res.end(JSON.stringify({ type: `urn:finetune:problem:${code}`, title: status === 404 ? 'Not Found' : 'Error', status, code, detail }));
}

let server: Server | undefined;

async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  server = createServer((req, res) => {
    if (req.headers.authorization !== `Bearer ${KEY}`) return problem(res, 401, 'unauthorized', 'no key');
    handler(req, res);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

afterEach(async () => {
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve));
  server = undefined;
});

describe('jobs watch over Server-Sent Events', () => {
  it('shows status, progress and epochs, reconnects with Last-Event-ID after a drop, exits 0 on success', async () => {
    const lastEventIds: (string | undefined)[] = [];
    const seen: string[] = [];
    const url = await serve((req, res) => {
      seen.push(`${req.method} ${req.url} ${req.headers.accept}`);
      lastEventIds.push(req.headers['last-event-id'] as string | undefined);
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      if (lastEventIds.length === 1) {
        res.write(': ping\n\n');
        res.write(sse(1, 'status', { status: 'running', job: job('running', 0) }));
        res.write(sse(2, 'progress', { epoch: 1, epochs: 2, batch: 3, batches: 5, loss: 0.9, imagesPerSecond: 40, etaSeconds: 4 }));
        res.write(sse(3, 'epoch', row(1)));
        // The connection drops mid-job (an API restart, a proxy): the client must come back.
        setTimeout(() => res.destroy(), 50);
        return;
      }
      res.write(sse(4, 'status', { status: 'running', job: job('running', 1) }));
      res.write(sse(5, 'epoch', row(2)));
      res.write(sse(6, 'done', job('succeeded', 2, { finishedAt: '2025-01-01T00:00:09.000Z' })));
      res.end();
    });
    const result = await runCli(['jobs', 'watch', JOB_ID], { url, apiKey: KEY });
    expect(result.code, shown(result)).toBe(0);
    expect(lastEventIds).toEqual([undefined, '3']);
    for (const request of seen) expect(request).toBe(`GET /v1/jobs/${JOB_ID}/events text/event-stream`);
    expect(result.stderr).toContain(`job ${JOB_ID}: running`);
    expect(result.stderr).toMatch(/epoch 1\/2 {2}loss 1\.0000 {2}acc 60\.0% {2}val_loss 1\.1000 {2}val_acc 50\.0%/);
    expect(result.stderr).toMatch(/epoch 2\/2 {2}loss 0\.5000/);
    expect(result.stderr).toContain('reconnecting');
    expect(result.stderr).not.toContain('polling');
    expect(result.stdout).toMatch(/^status:\s+succeeded$/m);
    expect(result.stdout).toMatch(/^model:\s+c0ffee00-/m);
  });

  it('a job that ends failed exits 8 with its error; --json prints the final job', async () => {
    const url = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(sse(1, 'status', { status: 'running', job: job('running', 0) }));
      res.write(sse(2, 'done', job('failed', 0, { error: { code: 'dataset_invalid', message: 'no decodable images' } })));
      res.end();
    });
    const result = await runCli(['--json', 'jobs', 'watch', JOB_ID], { url, apiKey: KEY });
    expect(result.code, shown(result)).toBe(8);
    expect(JSON.parse(result.stdout)).toMatchObject({ id: JOB_ID, status: 'failed', error: { code: 'dataset_invalid' } });
    expect(result.stderr).toContain('dataset_invalid: no decodable images');
  });

  it('an unknown job on the event route is exit 3, not a fallback to polling', async () => {
    const url = await serve((_req, res) => problem(res, 404, 'job_not_found', `job ${JOB_ID} does not exist`));
    const result = await runCli(['jobs', 'watch', JOB_ID], { url, apiKey: KEY });
    expect(result.code, shown(result)).toBe(3);
    expect(result.stderr).toContain('job_not_found');
  });

  it('without the event route (404 route_not_found) it polls GET /v1/jobs/:id until the job ends', async () => {
    let polls = 0;
    const url = await serve((req, res) => {
      if (req.url === `/v1/jobs/${JOB_ID}/events`) return problem(res, 404, 'route_not_found', `No route GET ${req.url}`);
      res.writeHead(200, { 'content-type': 'application/json' });
      if (req.url === `/v1/jobs/${JOB_ID}/metrics`) return res.end(JSON.stringify({ jobId: JOB_ID, items: polls >= 2 ? [row(1), row(2)] : [row(1)] }));
      polls++;
      res.end(JSON.stringify(polls >= 2 ? job('succeeded', 2) : job('running', 1)));
    });
    const result = await runCli(['jobs', 'watch', JOB_ID], { url, apiKey: KEY });
    expect(result.code, shown(result)).toBe(0);
    expect(polls).toBe(2);
    expect(result.stderr).toContain('polling');
    // Each epoch is shown once, however many polls saw it.
    expect(result.stderr.match(/epoch 1\/2/g)).toHaveLength(1);
    expect(result.stderr.match(/epoch 2\/2/g)).toHaveLength(1);
    expect(result.stdout).toMatch(/^status:\s+succeeded$/m);
  });
});
