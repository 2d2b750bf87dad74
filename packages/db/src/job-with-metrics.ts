import type pg from 'pg';
import { prismaTypes, utcTimestamp } from './pg-reads.ts';
import type { EpochMetric, Job } from './generated/client.ts';
import type { JobWithModel } from './jobs.repository.ts';

// A job with its model id and its epoch metrics in one round trip: the read behind
// GET /v1/jobs/:id, which clients poll. One named (server-side prepared) statement instead of two
// Prisma queries. Postgres renders the whole answer as one JSON value: node-postgres' per-column
// work (a parser and a property per column, 40 of them for a job) cost more CPU than the request's
// HTTP handling, where one JSON.parse is cheap. `to_json(j)` keeps every column the Prisma `Job`
// type has, since the columns are named as its fields are.
const JOB_WITH_METRICS = {
  name: 'finetune_job_with_metrics_json',
  text: `SELECT json_build_object(
      'job', to_json(j),
      'modelId', m.id,
      'epochMetrics', COALESCE((SELECT json_agg(e ORDER BY e.epoch) FROM epoch_metrics e WHERE e."jobId" = j.id), '[]')
    ) AS "read"
    FROM jobs j LEFT JOIN models m ON m."jobId" = j.id
    WHERE j.id = $1 AND j."tenantId" = $2`,
};

/** The keys of `T` whose values are dates. */
type DateKeys<T> = { [K in keyof T]-?: NonNullable<T[K]> extends Date ? K : never }[keyof T];

/** The job's timestamp columns, which JSON renders as text. */
const JOB_TIMESTAMPS = ['createdAt', 'updatedAt', 'startedAt', 'finishedAt', 'heartbeatAt'] as const;
// Fails to compile when `Job` gains a timestamp that is not listed above (it would stay a string).
const everyTimestampListed: Exclude<DateKeys<Job>, (typeof JOB_TIMESTAMPS)[number]> extends never ? true : never = true;
void everyTimestampListed;

/** A job row as to_json renders it: timestamps as text without a zone. */
type JobJson = Omit<Job, (typeof JOB_TIMESTAMPS)[number]> & Record<(typeof JOB_TIMESTAMPS)[number], string | null>;

/** Metric rows as json_agg renders them: timestamps without a zone, and NaN/Infinity as strings. */
type MetricJson = Omit<EpochMetric, 'createdAt' | 'trainLoss' | 'trainAcc' | 'valLoss' | 'valAcc' | 'learningRate'> & {
  createdAt: string;
  trainLoss: number | string;
  trainAcc: number | string;
  valLoss: number | string | null;
  valAcc: number | string | null;
  learningRate: number | string;
};

const num = (v: number | string) => Number(v);
const numOrNull = (v: number | string | null) => (v === null ? null : Number(v));

export async function readJobWithMetrics(
  pool: pg.Pool,
  id: string,
  tenantId: string,
): Promise<{ job: JobWithModel; metrics: EpochMetric[] } | null> {
  const result = await pool.query({ ...JOB_WITH_METRICS, values: [id, tenantId], types: prismaTypes });
  const read = (result.rows[0] as { read: { job: JobJson; modelId: string | null; epochMetrics: MetricJson[] } } | undefined)?.read;
  if (!read) return null;
  const timestamps = Object.fromEntries(JOB_TIMESTAMPS.map((key) => [key, read.job[key] === null ? null : utcTimestamp(read.job[key])]));
  const job = { ...read.job, ...timestamps } as unknown as Job;
  const metrics = read.epochMetrics.map((m) => ({
    ...m,
    trainLoss: num(m.trainLoss),
    trainAcc: num(m.trainAcc),
    valLoss: numOrNull(m.valLoss),
    valAcc: numOrNull(m.valAcc),
    learningRate: num(m.learningRate),
    createdAt: utcTimestamp(m.createdAt),
  }));
  return { job: { ...job, model: read.modelId === null ? null : { id: read.modelId } }, metrics };
}
