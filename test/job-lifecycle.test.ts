import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Worker } from 'bullmq';
import { canTransition, JOB_STATUSES, TERMINAL_STATUSES, type JobStatusName } from '@finetune/core';
import { LeaseLostError } from '@finetune/db';
import { createProducerConnection, createWorkerConnection, reconcile, TRAINING_QUEUE, TrainingQueue, UnrecoverableError } from '@finetune/queue';
import { buildTestApp, type TestApp } from './support/app.ts';
import { mnistFolderZip } from './support/mnist-fixtures.ts';

// One owner of job state: the state machine, the repository's guarded transitions and leases,
// and reconciliation of Postgres with the queue — each on the real Postgres and Redis.

let t: TestApp;
let datasetId: string;

beforeAll(async () => {
  t = await buildTestApp({ QUEUE_PREFIX: `${process.env.QUEUE_PREFIX}-lifecycle-${randomBytes(4).toString('hex')}` });
  const zip = await mnistFolderZip([2, 5], 5);
  datasetId = (await t.http.post('/v1/datasets').attach('file', zip, 'd.zip').expect(201)).body.id;
});

afterAll(async () => {
  await t?.close();
});

async function newJob(): Promise<string> {
  const { job } = await t.deps.jobs.create({ id: randomUUID(), tenantId: t.tenantId, datasetId, baseModel: 'small_cnn', strategy: 'scratch', spec: {}, epochs: 3 });
  return job.id;
}

const status = async (id: string) => (await t.deps.jobs.get(id))!.status;
const metric = (epoch: number) => ({ epoch, trainLoss: 1, trainAcc: 0.5, valLoss: null, valAcc: null, learningRate: 0.1, durationMs: 5, stage: null });
const checkpoint = (epoch: number) => ({ storagePrefix: `jobs/x/checkpoints/${epoch}/`, sizeBytes: 10, elapsedMs: 100 });

/** Pretends the job has not changed (nor beaten) for a minute. */
async function age(id: string): Promise<void> {
  const past = new Date(Date.now() - 60_000);
  await t.deps.db.job.update({ where: { id }, data: { updatedAt: past, heartbeatAt: null } });
}

describe('the state machine', () => {
  it('never leaves a final state and never enters queued from a final one', () => {
    for (const from of TERMINAL_STATUSES) {
      for (const to of JOB_STATUSES) expect(canTransition(from, to)).toBe(false);
    }
    const allowed = (from: JobStatusName) => JOB_STATUSES.filter((to) => canTransition(from, to));
    expect(allowed('queued')).toEqual(['running', 'failed', 'canceled']);
    expect(allowed('running')).toEqual(['queued', 'running', 'retrying', 'succeeded', 'failed', 'canceled']);
    expect(allowed('retrying')).toEqual(['queued', 'running', 'failed', 'canceled']);
  });
});

describe('leases', () => {
  it('a redelivered job gets a new lease that fences the old run out of every write', async () => {
    const id = await newJob();
    const first = await t.deps.jobs.claim(id, { attempt: 1 });
    expect(first).not.toBeNull();
    expect(await status(id)).toBe('running');
    await t.deps.jobs.recordEpoch(id, first!.lease, metric(1), checkpoint(1));
    expect(await t.deps.jobs.heartbeat(id, first!.lease)).toBe(true);

    // BullMQ redelivers (the first run stalled): the new claim takes the job over.
    const second = await t.deps.jobs.claim(id, { attempt: 1 });
    expect(second!.lease).not.toBe(first!.lease);
    expect(second!.job.runs).toBe(2);
    expect(await t.deps.jobs.heartbeat(id, first!.lease)).toBe(false);
    expect(await t.deps.jobs.runControl(id, first!.lease)).toEqual({ ownsJob: false, cancelRequested: false });
    await expect(t.deps.jobs.recordEpoch(id, first!.lease, metric(2), checkpoint(2))).rejects.toBeInstanceOf(LeaseLostError);
    await expect(t.deps.jobs.recordSkippedImages(id, first!.lease, 3)).rejects.toBeInstanceOf(LeaseLostError);
    expect(await t.deps.jobs.succeed(id, first!.lease, { id: randomUUID(), baseModel: 'x', strategy: 'x', labels: [], inputSize: 1, storagePrefix: 'm/', metrics: {} }, 'completed')).toBe(false);
    expect(await t.deps.jobs.requeue(id, { lease: first!.lease })).toBe(false);
    expect((await t.deps.jobs.metrics(id)).map((m) => m.epoch)).toEqual([1]);

    // The live run finishes; nothing moves the job afterwards.
    const modelId = randomUUID();
    expect(await t.deps.jobs.succeed(id, second!.lease, { id: modelId, baseModel: 'x', strategy: 'x', labels: [], inputSize: 1, storagePrefix: 'm/', metrics: {} }, 'completed')).toBe(true);
    expect((await t.deps.jobs.get(id))).toMatchObject({ status: 'succeeded', stopReason: 'completed', leaseToken: null, model: { id: modelId } });
    expect(await t.deps.jobs.fail(id, { code: 'late', message: 'a late event' })).toBe(false);
    expect(await t.deps.jobs.claim(id, { attempt: 2 })).toBeNull();
    await expect(t.deps.jobs.requestCancel(t.tenantId, id)).rejects.toMatchObject({ code: 'job_not_cancelable', status: 409 });
    expect(await status(id)).toBe('succeeded');
  });

  it('a stall moves a job to retrying only once its heartbeat has stopped', async () => {
    const id = await newJob();
    const run = await t.deps.jobs.claim(id, { attempt: 1 });
    expect(await t.deps.jobs.runLost(id, new Date(Date.now() - 10_000))).toBe(false); // beating
    expect(await status(id)).toBe('running');
    expect(await t.deps.jobs.runLost(id, new Date(Date.now() + 1_000))).toBe(true);
    expect(await t.deps.jobs.get(id)).toMatchObject({ status: 'retrying', errorCode: 'worker_lost', leaseToken: null });
    expect(await t.deps.jobs.heartbeat(id, run!.lease)).toBe(false);
    // Canceling a job that waits for redelivery ends it at once.
    expect(await t.deps.jobs.requestCancel(t.tenantId, id)).toBe('canceled');
    expect(await t.deps.jobs.claim(id, { attempt: 2 })).toBeNull();
  });
});

describe('reconciliation', () => {
  it('re-enqueues a queued job the queue has lost, leaves a live run alone, and takes back a dead one', async () => {
    const lost = await newJob(); // never enqueued: as if Redis lost it
    await age(lost);
    const live = await newJob();
    const liveRun = await t.deps.jobs.claim(live, { attempt: 1 });
    await t.deps.db.job.update({ where: { id: live }, data: { updatedAt: new Date(Date.now() - 60_000) } });
    const dead = await newJob();
    await t.deps.jobs.claim(dead, { attempt: 1 });
    await age(dead);

    const report = await reconcile(t.deps.jobs, t.deps.queue, { graceMs: 5_000, staleAfterMs: 30_000 });
    expect(report.requeued.sort()).toEqual([lost, dead].sort());
    expect((await t.deps.queue.deliveryOf(lost)).state).toBe('waiting');
    expect((await t.deps.queue.deliveryOf(dead)).state).toBe('waiting');
    expect((await t.deps.queue.deliveryOf(live)).state).toBe('missing');
    expect(await status(dead)).toBe('queued');
    expect(await t.deps.jobs.heartbeat(live, liveRun!.lease)).toBe(true);

    // Idempotent: a second sweep finds nothing to do.
    const again = await reconcile(t.deps.jobs, t.deps.queue, { graceMs: 0, staleAfterMs: 30_000 });
    expect(again.requeued).toEqual([]);
  });

  it('fails a job that the queue failed for good when the event saying so was missed', async () => {
    const id = await newJob();
    // A queue of this test's own, so the bare worker below sees no other test's jobs.
    const prefix = `${t.config.queuePrefix}-bare`;
    const queue = new TrainingQueue(createProducerConnection(t.config.redisUrl), prefix, { attempts: 1, backoffMs: 0 });
    await queue.enqueue(id);
    // A bare BullMQ worker (no Postgres bookkeeping) fails the delivery for good.
    const connection = createWorkerConnection(t.config.redisUrl);
    const bare = new Worker(TRAINING_QUEUE, async () => {
      throw new UnrecoverableError('backend_out_of_memory: lower the batch size');
    }, { connection, prefix });
    try {
      for (let i = 0; i < 100 && (await queue.deliveryOf(id)).state !== 'failed'; i++) await new Promise((r) => setTimeout(r, 100));
      await age(id);
      const report = await reconcile(t.deps.jobs, queue, { graceMs: 5_000, staleAfterMs: 30_000 });
      expect(report.failed).toEqual([id]);
    } finally {
      await bare.close();
      connection.disconnect();
      await queue.close();
      queue.connection.disconnect();
    }
    expect(await t.deps.jobs.get(id)).toMatchObject({ status: 'failed', errorCode: 'backend_out_of_memory', errorMessage: 'lower the batch size' });
  });
});
