import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDb, JobsRepository, type Db } from '@finetune/db';

// GET /v1/jobs/:id reads the job, its model id and its epoch metrics with one prepared pg
// statement instead of Prisma queries: it must return exactly what Prisma returns for the same rows.
describe('JobsRepository.getWithMetrics', () => {
  let db: Db;
  let jobs: JobsRepository;
  const tenantId = randomUUID();
  const otherTenantId = randomUUID();
  const savedTz = process.env.TZ;

  beforeAll(async () => {
    // Off UTC, so a timestamp read in local time instead of UTC would be hours off.
    process.env.TZ = 'America/New_York';
    db = createDb(process.env.DATABASE_URL!);
    jobs = new JobsRepository(db);
    await db.tenant.createMany({ data: [{ id: tenantId, name: 'reads' }, { id: otherTenantId, name: 'other' }] });
  });

  afterAll(async () => {
    await db.$disconnect();
    process.env.TZ = savedTz;
  });

  async function jobRow(options: { metrics: number; model: boolean }) {
    const id = randomUUID();
    await db.job.create({
      data: {
        id,
        tenantId,
        baseModel: 'mobilenet_v2',
        strategy: 'feature_extraction',
        spec: { datasetId: randomUUID(), nested: { list: [1, 2] } },
        epochs: 5,
        status: options.model ? 'succeeded' : 'running',
        startedAt: new Date('2026-01-02T03:04:05.678Z'),
        heartbeatAt: new Date('2026-01-02T03:05:00.001Z'),
        finishedAt: options.model ? new Date('2026-01-02T03:06:07.890Z') : null,
        warnings: [{ code: 'near_duplicates', count: 2 }],
        timings: { training: 1234 },
      },
    });
    for (let epoch = 1; epoch <= options.metrics; epoch++) {
      await db.epochMetric.create({
        data: {
          jobId: id,
          epoch,
          // A diverged epoch's loss is NaN; JSON has no NaN, so it must survive the aggregation.
          trainLoss: epoch === 2 ? Number.NaN : 1 / epoch,
          trainAcc: 0.1 * epoch,
          valLoss: epoch === 1 ? null : 0.5 / epoch,
          valAcc: epoch === 1 ? null : 0.2 * epoch,
          learningRate: 1e-3 / epoch,
          durationMs: 100 * epoch,
          stage: epoch === 3 ? 2 : null,
        },
      });
    }
    if (options.model) {
      await db.model.create({
        data: { id: randomUUID(), jobId: id, tenantId, baseModel: 'mobilenet_v2', strategy: 'feature_extraction', labels: ['a', 'b'], inputSize: 224, storagePrefix: `models/${id}/`, metrics: {}, evaluation: {} },
      });
    }
    return id;
  }

  it.each([
    { metrics: 3, model: true },
    { metrics: 0, model: false },
  ])('equals the Prisma reads ($metrics epochs, model: $model)', async (options) => {
    const id = await jobRow(options);
    const read = await jobs.getWithMetrics(id, tenantId);
    expect(read).not.toBeNull();
    expect(read!.job).toEqual(await jobs.get(id, tenantId));
    expect(read!.metrics).toEqual(await jobs.metrics(id, tenantId));
    expect(read!.metrics).toHaveLength(options.metrics);
    expect(read!.job.model === null).toBe(!options.model);
    expect(read!.job.startedAt?.toISOString()).toBe('2026-01-02T03:04:05.678Z');
    expect(read!.job.heartbeatAt?.toISOString()).toBe('2026-01-02T03:05:00.001Z');
  });

  it("is null for a missing job and for another tenant's job", async () => {
    const id = await jobRow({ metrics: 1, model: false });
    expect(await jobs.getWithMetrics(randomUUID(), tenantId)).toBeNull();
    expect(await jobs.getWithMetrics(id, otherTenantId)).toBeNull();
  });
});
