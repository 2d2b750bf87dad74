import type pg from 'pg';
import { prismaTypes, utcTimestamp } from './pg-reads.ts';
import type { EpochMetric } from './generated/client.ts';
import type { JobWithModel } from './jobs.repository.ts';

// A job with its model id and its epoch metrics in one round trip: the read behind
// GET /v1/jobs/:id, which clients poll. One named (server-side prepared) statement instead of two
// Prisma queries; `j.*` keeps every column the Prisma `Job` type has, since the columns are
// named as its fields are.
const JOB_WITH_METRICS = {
  name: 'finetune_job_with_metrics',
  text: `SELECT j.*, m.id AS "modelId",
      COALESCE((SELECT json_agg(e ORDER BY e.epoch) FROM epoch_metrics e WHERE e."jobId" = j.id), '[]') AS "epochMetrics"
    FROM jobs j LEFT JOIN models m ON m."jobId" = j.id
    WHERE j.id = $1 AND j."tenantId" = $2`,
};

/** Rows as json_agg renders them: timestamps without a zone, and NaN/Infinity as strings. */
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
  const row = result.rows[0] as (JobWithModel & { modelId: string | null; epochMetrics: MetricJson[] }) | undefined;
  if (!row) return null;
  const { modelId, epochMetrics, ...job } = row;
  const metrics = epochMetrics.map((m) => ({
    ...m,
    trainLoss: num(m.trainLoss),
    trainAcc: num(m.trainAcc),
    valLoss: numOrNull(m.valLoss),
    valAcc: numOrNull(m.valAcc),
    learningRate: num(m.learningRate),
    createdAt: utcTimestamp(m.createdAt),
  }));
  return { job: { ...job, model: modelId === null ? null : { id: modelId } }, metrics };
}
