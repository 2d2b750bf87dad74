import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import { QueueEvents } from 'bullmq';
import { createWorkerConnection, TRAINING_QUEUE } from '@finetune/queue';
import { startWorker, type RunningWorker } from '@finetune/worker';
import { buildTestApp, waitFor, type TestApp } from './support/app.ts';
import { mnistFolderZip } from './support/mnist-fixtures.ts';

// The planner's budget override (packages/ml/src/training/micro-batch.ts).
const MEMORY_BUDGET_ENV = 'ML_MEMORY_BUDGET_BYTES';

// Faults lose no data: a training process killed mid-job costs one attempt (the job is retried
// and succeeds, the worker lives on); minutes of training never let the BullMQ lock lapse; an
// unreachable Redis gets a clear 503 and leaves no orphan job row.

// A short lock: if training blocked the worker's event loop, the job would stall within seconds.
const LOCK_MS = 2_000;

let t: TestApp;
let worker: RunningWorker;
let events: QueueEvents;
let datasetId: string;
const stalled: string[] = [];

function trainingProcessPid(jobId: string): number | undefined {
  try {
    const out = execFileSync('pgrep', ['-f', `training/child.ts ${jobId}`], { encoding: 'utf8' });
    return Number(out.trim().split('\n')[0]);
  } catch {
    return undefined; // pgrep exits 1 when nothing matches
  }
}

beforeAll(async () => {
  t = await buildTestApp({ WORKER_LOCK_DURATION_MS: String(LOCK_MS), JOB_ATTEMPTS: '2' });
  worker = startWorker(t.config, pino({ level: 'silent' }));
  events = new QueueEvents(TRAINING_QUEUE, { connection: createWorkerConnection(t.config.redisUrl), prefix: t.config.queuePrefix });
  events.on('stalled', ({ jobId }) => stalled.push(jobId));
  await events.waitUntilReady();
  const res = await t.http.post('/v1/datasets').attach('file', await mnistFolderZip([3, 7], 15), 'd.zip').expect(201);
  datasetId = res.body.id;
});

afterAll(async () => {
  await events?.close();
  await worker?.close();
  await t?.close();
});

describe('faults', () => {
  it('retries a job whose training process is killed, and the retry succeeds', { timeout: 300_000 }, async () => {
    const created = await t.http
      .post('/v1/jobs')
      .send({ datasetId, baseModel: 'mobilenet_v2', hyperparameters: { epochs: 3, batchSize: 8 } })
      .expect(202);
    const jobId: string = created.body.id;
    const pid = await waitFor('the training process', async () => trainingProcessPid(jobId), 60_000);
    process.kill(pid, 'SIGKILL');

    const job = await waitFor('the retried job to finish', async () => {
      const res = await t.http.get(`/v1/jobs/${jobId}`).expect(200);
      return ['succeeded', 'failed', 'canceled'].includes(res.body.status) ? res.body : undefined;
    }, 240_000);
    expect(job.error).toBeNull();
    expect(job.status).toBe('succeeded');
    expect(job.attempts).toBe(2);
    const metrics = await t.http.get(`/v1/jobs/${jobId}/metrics`).expect(200);
    expect(metrics.body.items.map((m: { epoch: number }) => m.epoch)).toEqual([1, 2, 3]);
    // The worker survived: the whole job ran longer than many lock periods and never stalled.
    expect(stalled).toEqual([]);
  });

  it('a backend abort fails the job once, with a code and what to change, not three raw retries', { timeout: 300_000 }, async () => {
    // The real fault: a full MobileNetV2 backward pass over a batch of 24 (the 30-image dataset's
    // training split, batch 32) needs ~7 GiB, more than tfjs' wasm heap can grow to (4 GiB): it
    // aborts with "memory access out of bounds". The micro-batch planner would split that batch;
    // a memory budget far above the heap (an operator's mistake) makes it keep the whole batch, so
    // wasm really aborts. The same spec would abort on every attempt. The training child inherits
    // the worker's environment when the job is claimed, after this is set.
    process.env[MEMORY_BUDGET_ENV] = String(64 * 1024 ** 3);
    let jobId = '';
    try {
      const created = await t.http
        .post('/v1/jobs')
        .send({ datasetId, baseModel: 'mobilenet_v2', strategy: 'full', hyperparameters: { epochs: 1, batchSize: 32 } })
        .expect(202);
      jobId = created.body.id;
      await waitFor('the training process', async () => trainingProcessPid(jobId), 60_000);
    } finally {
      delete process.env[MEMORY_BUDGET_ENV];
    }
    const job = await waitFor('the job to fail', async () => {
      const res = await t.http.get(`/v1/jobs/${jobId}`).expect(200);
      return ['succeeded', 'failed', 'canceled'].includes(res.body.status) ? res.body : undefined;
    }, 240_000);
    expect(job.status).toBe('failed');
    expect(job).toMatchObject({ attempts: 1, runs: 1 });
    expect(job.error.code).toBe('backend_out_of_memory');
    expect(job.error.message).toMatch(/lower hyperparameters\.batchSize \(e\.g\. to 16\)/);
    expect(job.error.message).not.toMatch(/out of bounds|Aborted/);
  });

  it('answers 503 when Redis is unreachable and leaves no job row behind', async () => {
    const offline = await buildTestApp({ REDIS_URL: 'redis://127.0.0.1:1' });
    try {
      const before = await offline.deps.db.job.count();
      const res = await offline.http.post('/v1/jobs').send({ datasetId, baseModel: 'mobilenet_v2' });
      expect(res.status).toBe(503);
      expect(res.body.code).toBe('queue_unavailable');
      expect(await offline.deps.db.job.count()).toBe(before);
      const ready = await offline.http.get('/readyz').expect(503);
      expect(ready.body.checks.redis.ok).toBe(false);
      expect(ready.body.checks.redis.error).toContain('ECONNREFUSED');
      expect(ready.body.checks.database.ok).toBe(true);
    } finally {
      await offline.close();
    }
  });
});
