export * from './client.ts';
export * from './migrate.ts';
export * from './datasets.repository.ts';
export * from './jobs.repository.ts';
export * from './models.repository.ts';
export * from './tenants.repository.ts';
export { Prisma } from './generated/client.ts';
export type { Dataset, Job, EpochMetric, Checkpoint, Model, Tenant, ApiKey } from './generated/client.ts';
export { JobStatus, ApiKeyRole } from './generated/enums.ts';
