// Live progress: GET /v1/jobs/:id/events streams a job's status changes, batch progress and epoch
// metrics as Server-Sent Events, ends with `done`, and resumes from Last-Event-ID after a
// reconnect without repeating what the client already has.
import { randomBytes } from 'node:crypto';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startWorker, type RunningWorker } from '@finetune/worker';
import { buildTestApp, type TestApp } from './support/app.ts';
import { listen } from './support/hostile.ts';
import { mnistFolderZip } from './support/mnist-fixtures.ts';

interface ServerEvent {
  id?: string;
  event: string;
  data: any;
}

/** An open event stream, read with fetch as a browser or the CLI would (EventSource cannot send a key). */
class EventStream {
  readonly events: ServerEvent[] = [];
  comments = 0;
  ended = false;
  private buffer = '';
  private readonly controller = new AbortController();
  private waiters: (() => void)[] = [];

  static async open(url: string, key: string, lastEventId?: string): Promise<{ status: number; stream: EventStream; headers: Headers }> {
    const stream = new EventStream();
    const res = await fetch(url, {
      headers: { authorization: `Bearer ${key}`, ...(lastEventId ? { 'last-event-id': lastEventId } : {}) },
      signal: stream.controller.signal,
    });
    if (res.ok) void stream.pump(res.body!);
    else stream.events.push({ event: 'http-error', data: await res.json() });
    return { status: res.status, stream, headers: res.headers };
  }

  private async pump(body: ReadableStream<Uint8Array>) {
    const decoder = new TextDecoder();
    try {
      for await (const chunk of body) {
        this.buffer += decoder.decode(chunk, { stream: true });
        let end: number;
        while ((end = this.buffer.indexOf('\n\n')) >= 0) {
          const block = this.buffer.slice(0, end);
          this.buffer = this.buffer.slice(end + 2);
          const fields: Record<string, string> = {};
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) this.comments++;
            const match = /^(\w+): ?(.*)$/.exec(line);
            if (match) fields[match[1]!] = match[2]!;
          }
          if (fields.event) this.events.push({ id: fields.id, event: fields.event, data: JSON.parse(fields.data ?? 'null') });
        }
        this.wake();
      }
    } catch {
      // aborted by close()
    }
    this.ended = true;
    this.wake();
  }

  private wake() {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /** Waits until an event satisfies `match`, and returns it. */
  async next(match: (e: ServerEvent) => boolean, timeoutMs = 30_000): Promise<ServerEvent> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events.find(match);
      if (found) return found;
      if (this.ended) throw new Error(`stream ended without the event; got ${this.events.map((e) => e.event).join(', ')}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out; got ${this.events.map((e) => e.event).join(', ')}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  async untilEnded(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended) {
      if (Date.now() > deadline) throw new Error('the stream did not end');
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  close() {
    this.controller.abort();
  }
}

let t: TestApp;
let base: string;
let key: string;
let datasetId: string;

beforeAll(async () => {
  t = await buildTestApp({ QUEUE_PREFIX: `${process.env.QUEUE_PREFIX}-events-${randomBytes(4).toString('hex')}` });
  base = `http://127.0.0.1:${await listen(t)}`;
  key = t.auth.authorization.slice('Bearer '.length);
  const zip = await mnistFolderZip([1, 7], 12);
  datasetId = (await t.http.post('/v1/datasets').attach('file', zip, 'd.zip').expect(201)).body.id;
});

afterAll(async () => {
  await t?.close();
});

const spec = (epochs: number) => ({ datasetId, baseModel: 'small_cnn', strategy: 'scratch', hyperparameters: { epochs, batchSize: 4, seed: 3 } });

describe('GET /v1/jobs/:id/events', () => {
  it('streams status, progress and epochs as they happen, and resumes from Last-Event-ID', async () => {
    // No worker here: the test plays the worker's part through the same repositories and queue.
    const job = (await t.http.post('/v1/jobs').send(spec(2)).expect(202)).body;
    const url = `${base}/v1/jobs/${job.id}/events`;
    const { status, stream, headers } = await EventStream.open(url, key);
    expect(status).toBe(200);
    expect(headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    expect(headers.get('x-request-id')).toBeTruthy();

    const queued = await stream.next((e) => e.event === 'status');
    expect(queued.data.status).toBe('queued');
    expect(queued.data.job).toMatchObject({ id: job.id, status: 'queued' });

    const claim = (await t.deps.jobs.claim(job.id, { attempt: 1 }))!;
    await stream.next((e) => e.event === 'status' && e.data.status === 'running');

    const bullJob = (await t.deps.queue.queue.getJob(job.id))!;
    await bullJob.updateProgress({ phase: 'training', epoch: 1, epochs: 2, percent: 30, batch: 3, batches: 5, loss: 0.7, accuracy: 0.5, imagesPerSecond: 40, etaSeconds: 12 });
    const progress = await stream.next((e) => e.event === 'progress');
    expect(progress.data).toEqual({ epoch: 1, epochs: 2, batch: 3, batches: 5, loss: 0.7, accuracy: 0.5, imagesPerSecond: 40, etaSeconds: 12 });

    const metric = (epoch: number) => ({ epoch, trainLoss: 1 / epoch, trainAcc: 0.5, valLoss: null, valAcc: null, learningRate: 0.01, durationMs: 10, stage: null });
    const checkpoint = (epoch: number) => ({ storagePrefix: `jobs/${job.id}/checkpoints/${epoch}-x/`, sizeBytes: 1, elapsedMs: 10 });
    await t.deps.jobs.recordEpoch(job.id, claim.lease, metric(1), checkpoint(1));
    const epoch1 = await stream.next((e) => e.event === 'epoch');
    expect(epoch1.data).toMatchObject({ epoch: 1, trainLoss: 1, trainAccuracy: 0.5 });
    expect(stream.events.every((e) => typeof e.id === 'string' && e.id.length > 0)).toBe(true);

    // The client drops; epoch 2 completes meanwhile; it reconnects with the last id it saw.
    stream.close();
    const lastSeen = stream.events.at(-1)!.id!;
    await t.deps.jobs.recordEpoch(job.id, claim.lease, metric(2), checkpoint(2));
    const again = (await EventStream.open(url, key, lastSeen)).stream;
    const epoch2 = await again.next((e) => e.event === 'epoch');
    expect(epoch2.data.epoch).toBe(2);

    await t.deps.jobs.fail(job.id, { code: 'training_error', message: 'planted' }, claim.lease);
    const done = await again.next((e) => e.event === 'done');
    expect(done.data).toMatchObject({ id: job.id, status: 'failed', error: { code: 'training_error', message: 'planted' } });
    await again.untilEnded();
    // Nothing the client had was sent again: no epoch 1, no repeat of `running` or of the progress.
    expect(again.events.map((e) => e.event)).toEqual(['epoch', 'status', 'done']);
    expect(again.events[1]!.data.status).toBe('failed');
  });

  it('is a 404 problem for another tenant or a missing job, and needs a key', async () => {
    const job = (await t.http.post('/v1/jobs').send(spec(1)).expect(202)).body;
    const tenant = (await t.http.post('/v1/tenants').send({ name: 'events b' }).expect(201)).body;
    const other = (await t.http.post(`/v1/tenants/${tenant.id}/api-keys`).send({}).expect(201)).body.key;

    const theirs = await EventStream.open(`${base}/v1/jobs/${job.id}/events`, other);
    expect(theirs.status).toBe(404);
    expect(theirs.stream.events[0]!.data).toMatchObject({ code: 'job_not_found' });
    const missing = await EventStream.open(`${base}/v1/jobs/00000000-0000-4000-8000-00000000abcd/events`, key);
    expect(missing.status).toBe(404);
    const anonymous = await fetch(`${base}/v1/jobs/${job.id}/events`);
    expect(anonymous.status).toBe(401);
    await t.http.post(`/v1/jobs/${job.id}/cancel`).expect(202);
  });

  it('follows a real job on a real worker to `done`', async () => {
    const worker: RunningWorker = startWorker(t.config, pino({ level: 'warn' }));
    try {
      const job = (await t.http.post('/v1/jobs').send(spec(3)).expect(202)).body;
      const { stream } = await EventStream.open(`${base}/v1/jobs/${job.id}/events`, key);
      const done = await stream.next((e) => e.event === 'done', 180_000);
      await stream.untilEnded();
      expect(done.data).toMatchObject({ id: job.id, status: 'succeeded', progress: { epoch: 3, epochs: 3, percent: 100 } });
      expect(stream.events.filter((e) => e.event === 'epoch').map((e) => e.data.epoch)).toEqual([1, 2, 3]);
      const statuses = stream.events.filter((e) => e.event === 'status').map((e) => e.data.status);
      // The worker may claim the job before the stream's first read.
      expect(['queued', 'running']).toContain(statuses[0]);
      expect(statuses).toContain('running');
      expect(statuses.at(-1)).toBe('succeeded');
      // Whatever progress was caught between polls is well-formed and never beyond the run.
      for (const p of stream.events.filter((e) => e.event === 'progress')) {
        expect(p.data.batch).toBeGreaterThanOrEqual(1);
        expect(p.data.batch).toBeLessThanOrEqual(p.data.batches);
        expect(p.data.epoch).toBeLessThanOrEqual(3);
      }
    } finally {
      await worker.close();
    }
  }, 240_000);
});
