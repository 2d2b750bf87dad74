import type { Config } from '@finetune/core';
import { ApiKeysRepository, createDb, DatasetsRepository, JobsRepository, ModelsRepository, TenantsRepository, type Db } from '@finetune/db';
import { createProducerConnection, TrainingQueue } from '@finetune/queue';
import { S3ObjectStore, type ObjectStore } from '@finetune/storage';
import { CredentialsCache } from './auth/credentials-cache.ts';
import { MemoryFitCheck } from './services/memory-fit.ts';

/** Everything with I/O the API talks to, built once from configuration. */
export interface AppDeps {
  config: Config;
  db: Db;
  store: ObjectStore;
  queue: TrainingQueue;
  datasets: DatasetsRepository;
  jobs: JobsRepository;
  models: ModelsRepository;
  tenants: TenantsRepository;
  apiKeys: ApiKeysRepository;
  /** API key lookups by prefix, cached while Postgres reports every key change. */
  credentials: CredentialsCache;
  /** Refuses at submission a spec that cannot train in the backend's memory. */
  memoryFit: MemoryFitCheck;
}

export function createAppDeps(config: Config): AppDeps {
  if (!config.databaseUrl) throw new Error('DATABASE_URL is required (npm start provides an embedded Postgres)');
  if (!config.s3.endpoint) throw new Error('S3_ENDPOINT is required (npm start provides an embedded S3 server)');
  const db = createDb(config.databaseUrl);
  const apiKeys = new ApiKeysRepository(db);
  return {
    config,
    db,
    store: new S3ObjectStore({ ...config.s3, endpoint: config.s3.endpoint }),
    queue: new TrainingQueue(createProducerConnection(config.redisUrl), config.queuePrefix, {
      attempts: config.jobAttempts,
      backoffMs: config.jobRetryBackoffMs,
    }),
    datasets: new DatasetsRepository(db),
    memoryFit: new MemoryFitCheck(config.mlBackend),
    jobs: new JobsRepository(db),
    models: new ModelsRepository(db),
    tenants: new TenantsRepository(db),
    apiKeys,
    credentials: new CredentialsCache((prefix) => apiKeys.credentialsByPrefix(prefix), config.databaseUrl, { ttlMs: config.auth.keyCacheTtlMs }),
  };
}

export async function closeAppDeps(deps: AppDeps): Promise<void> {
  await deps.credentials.close();
  await deps.queue.close();
  deps.queue.connection.disconnect();
  await deps.db.$disconnect();
}
