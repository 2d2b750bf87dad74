import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startEmbeddedS3, type EmbeddedS3 } from '@finetune/storage';
import { buildTestApp, waitFor, type TestApp } from './support/app.ts';
import { mnistFolderZip } from './support/mnist-fixtures.ts';
import { freePort, killGroup, spawnWorker, startTestRedis, type SpawnedProcess } from './support/processes.ts';

// Nothing stranded: the dependencies fail for real — a Redis of the test's own restarts empty,
// workers die again and again, the S3 server goes away for 20 s — and every job still ends in a
// state Postgres can explain: succeeded, or failed with a reason.

const cleanups: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function prefix(): string {
  return `${process.env.QUEUE_PREFIX}-recovery-${randomBytes(4).toString('hex')}`;
}

async function app(env: Record<string, string>): Promise<TestApp> {
  const t = await buildTestApp(env);
  cleanups.push(() => t.close());
  return t;
}

function worker(env: Record<string, string>): SpawnedProcess {
  const w = spawnWorker(env);
  cleanups.push(() => w.stop());
  return w;
}

async function upload(t: TestApp, perClass = 40): Promise<string> {
  const zip = await mnistFolderZip([1, 7], perClass);
  return (await t.http.post('/v1/datasets').attach('file', zip, 'd.zip').expect(201)).body.id;
}

const spec = (datasetId: string, epochs: number) => ({
  datasetId,
  baseModel: 'small_cnn',
  strategy: 'scratch',
  hyperparameters: { epochs, batchSize: 8, augmentation: { rotationDegrees: 5 }, seed: 3 },
});

async function getJob(t: TestApp, id: string) {
  return (await t.http.get(`/v1/jobs/${id}`).expect(200)).body;
}

async function until(t: TestApp, id: string, what: string, check: (job: Record<string, unknown>) => boolean, timeoutMs = 240_000) {
  return waitFor(`job ${id}: ${what}`, async () => {
    const job = await getJob(t, id);
    return check(job) ? job : undefined;
  }, timeoutMs);
}

const isFinished = (job: Record<string, unknown>) => ['succeeded', 'failed', 'canceled'].includes(job.status as string);

async function epochs(t: TestApp, id: string): Promise<number[]> {
  return (await t.http.get(`/v1/jobs/${id}/metrics`).expect(200)).body.items.map((m: { epoch: number }) => m.epoch);
}

describe('recovery', () => {
  it('Redis restarts empty: every queued and running job still completes', { timeout: 400_000 }, async () => {
    const redis = await startTestRedis();
    cleanups.push(() => redis.stop());
    const env = { REDIS_URL: redis.url, QUEUE_PREFIX: prefix(), WORKER_LOCK_DURATION_MS: '2000', RECONCILE_INTERVAL_MS: '2000' };
    const t = await app(env);
    worker(env);
    const datasetId = await upload(t);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await t.http.post('/v1/jobs').send(spec(datasetId, 4)).expect(202)).body.id);
    // One job training, the others waiting behind it (one worker, concurrency 1).
    await until(t, ids[0]!, 'an epoch committed', (job) => (job.progress as { epoch: number }).epoch >= 1);
    expect((await getJob(t, ids[2]!)).status).toBe('queued');

    await redis.kill();
    await redis.start(); // empty: no queue entries, no locks

    for (const id of ids) {
      const job = await until(t, id, 'finished', isFinished);
      expect(job.error).toBeNull();
      expect(job.status).toBe('succeeded');
      expect(await epochs(t, id)).toEqual([1, 2, 3, 4]);
    }
  });

  it('a job whose workers keep dying is failed by the queue, and Postgres says so', { timeout: 400_000 }, async () => {
    const env = { QUEUE_PREFIX: prefix(), WORKER_LOCK_DURATION_MS: '1000', RECONCILE_INTERVAL_MS: '2000' };
    const t = await app(env);
    const datasetId = await upload(t, 60);
    const id = (await t.http.post('/v1/jobs').send(spec(datasetId, 200)).expect(202)).body.id;
    // BullMQ allows two stalls (maxStalledCount 2); the third run's death fails the job.
    for (let run = 1; run <= 3; run++) {
      const w = worker(env);
      await until(t, id, `run ${run} started`, (job) => job.runs === run && job.status === 'running');
      await killGroup(w, 'SIGKILL');
    }
    worker(env); // its stalled-job check notices the third death
    const job = await until(t, id, 'failed', isFinished, 120_000);
    expect(job.status).toBe('failed');
    expect(job.error.code).toBe('worker_lost');
    expect(job.error.message).toMatch(/stopped responding/);
    expect(job.finishedAt).not.toBeNull();
  });

  it('S3 unavailable for 20 s mid-job: the run waits for it and the job succeeds', { timeout: 400_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'finetune-s3-outage-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const port = await freePort();
    let s3: EmbeddedS3 = await startEmbeddedS3({ dir, port });
    cleanups.push(() => s3.close());
    const env = { S3_ENDPOINT: s3.endpoint, QUEUE_PREFIX: prefix(), WORKER_LOCK_DURATION_MS: '2000' };
    const t = await app(env);
    const w = worker(env);
    const datasetId = await upload(t);
    const id = (await t.http.post('/v1/jobs').send(spec(datasetId, 8)).expect(202)).body.id;
    await until(t, id, 'an epoch committed', (job) => (job.progress as { epoch: number }).epoch >= 1);

    await s3.close();
    await new Promise((r) => setTimeout(r, 20_000));
    expect((await getJob(t, id)).status).toBe('running');
    s3 = await startEmbeddedS3({ dir, port });

    const job = await until(t, id, 'finished', isFinished);
    expect(job.error).toBeNull();
    expect(job.status).toBe('succeeded');
    expect(job.attempts).toBe(1);
    expect(await epochs(t, id)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(w.output()).toContain('dependency unavailable; retrying');
  });
});
