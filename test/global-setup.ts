// Vitest global setup: real services, isolated per run.
//
//  - Postgres: a fresh database `finetune_test_<random>` on the machine's server (TEST_DATABASE_URL,
//    any database on it; the new one is created beside it), migrated with the committed
//    migrations exactly as `npm run db:migrate` does, dropped at the end.
//  - S3: s3rver in a temp dir on a random port, bucket created.
//  - Redis: the machine's server (REDIS_URL) with a random QUEUE_PREFIX, so runs never share keys.
//
// Values reach test workers through provide/inject; test/setup-env.ts copies them into
// process.env so `loadConfig()` sees them. Nothing is skipped when a service is missing: the
// run fails here, saying which one and how to start it.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { applyMigrations, ensureDatabase, redact } from '../packages/db/src/migrate.ts';
import { deleteKeysWithPrefix } from '../packages/queue/src/key-cleanup.ts';
import { S3ObjectStore, startEmbeddedS3, type EmbeddedS3 } from '../packages/storage/src/index.ts';

export interface TestEnv {
  DATABASE_URL: string;
  REDIS_URL: string;
  QUEUE_PREFIX: string;
  S3_ENDPOINT: string;
  S3_BUCKET: string;
  S3_REGION: string;
  S3_ACCESS_KEY_ID: string;
  S3_SECRET_ACCESS_KEY: string;
  S3_FORCE_PATH_STYLE: string;
  DATA_DIR: string;
  [limitOrQuota: string]: string;
}

// Tests send hundreds of requests with one key and keep many jobs queued: rate limits and
// quotas are off unless a test turns them on (test/limits.test.ts does, on its own app).
const LIMITS_OFF = {
  RATE_LIMIT_PER_MINUTE: '0',
  PREDICT_RATE_LIMIT_PER_MINUTE: '0',
  UPLOAD_RATE_LIMIT_PER_MINUTE: '0',
  QUOTA_CONCURRENT_JOBS: '0',
  QUOTA_STORED_BYTES: '0',
  QUOTA_MODELS: '0',
  // Spawned workers would all try the default metrics port; test/metrics.test.ts picks its own.
  WORKER_METRICS_PORT: '0',
};

declare module 'vitest' {
  export interface ProvidedContext {
    testEnv: TestEnv;
  }
}

const PG_HINT = "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";
const REDIS_HINT =
  'start it with: redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no';

/** PING over RESP with AUTH when the URL carries credentials: no client library needed. */
async function pingRedis(redisUrl: string): Promise<void> {
  const url = new URL(redisUrl);
  const port = Number(url.port || 6379);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const commands: string[][] = [];
  if (url.password) {
    const user = decodeURIComponent(url.username);
    const password = decodeURIComponent(url.password);
    commands.push(user ? ['AUTH', user, password] : ['AUTH', password]);
  }
  commands.push(['PING']);
  const payload = commands
    .map((args) => `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`)
    .join('');

  await new Promise<void>((resolve, reject) => {
    const socket: Socket =
      url.protocol === 'rediss:' ? tlsConnect({ host, port, servername: host }) : netConnect({ host, port });
    let received = '';
    const fail = (error: Error) => {
      socket.destroy();
      reject(error);
    };
    socket.setTimeout(5000, () => fail(new Error('timed out after 5 s')));
    socket.once('error', fail);
    socket.once(url.protocol === 'rediss:' ? 'secureConnect' : 'connect', () => socket.write(payload));
    socket.on('data', (chunk) => {
      received += chunk.toString('utf8');
      if (received.startsWith('-')) return fail(new Error(received.trim()));
      if (received.includes('+PONG')) {
        socket.end();
        resolve();
      }
    });
  });
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const baseUrl = process.env.TEST_DATABASE_URL || 'postgresql://postgres@127.0.0.1:5432/postgres';
  const redisUrl = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
  const runId = randomBytes(6).toString('hex');
  const cleanups: Array<() => Promise<void>> = [];
  const teardown = async () => {
    const errors: unknown[] = [];
    for (const cleanup of cleanups.reverse()) {
      try {
        await cleanup();
      } catch (error) {
        errors.push(error);
      }
    }
    if (errors.length > 0) throw new AggregateError(errors, 'test global teardown failed');
  };

  try {
    try {
      await pingRedis(redisUrl);
    } catch (error) {
      throw new Error(`Redis unreachable at ${redisUrl} (${(error as Error).message}); ${REDIS_HINT}`);
    }

    const dbUrl = new URL(baseUrl);
    dbUrl.pathname = `/finetune_test_${runId}`;
    const databaseUrl = dbUrl.toString();
    try {
      await ensureDatabase(databaseUrl);
    } catch (error) {
      throw new Error(`Postgres unreachable at ${redact(baseUrl)} (${(error as Error).message}); ${PG_HINT}`, {
        cause: error,
      });
    }
    cleanups.push(() => dropDatabase(databaseUrl));
    await applyMigrations(databaseUrl);

    // Every file's queue prefix starts with the run's (test/setup-env.ts): one sweep removes them all.
    const queuePrefix = `finetune-test-${runId}`;
    cleanups.push(async () => void (await deleteKeysWithPrefix(redisUrl, queuePrefix)));

    const tmp = await mkdtemp(join(tmpdir(), 'finetune-test-'));
    cleanups.push(() => rm(tmp, { recursive: true, force: true }));
    const s3: EmbeddedS3 = await startEmbeddedS3({ dir: join(tmp, 's3'), port: 0 });
    cleanups.push(() => s3.close());

    const env: TestEnv = {
      DATABASE_URL: databaseUrl,
      REDIS_URL: redisUrl,
      QUEUE_PREFIX: queuePrefix,
      S3_ENDPOINT: s3.endpoint,
      S3_BUCKET: 'finetune-test',
      S3_REGION: 'us-east-1',
      // s3rver accepts only its built-in credentials.
      S3_ACCESS_KEY_ID: 'S3RVER',
      S3_SECRET_ACCESS_KEY: 'S3RVER',
      S3_FORCE_PATH_STYLE: 'true',
      DATA_DIR: join(tmp, 'data'),
      ...LIMITS_OFF,
    };
    const store = new S3ObjectStore({
      endpoint: env.S3_ENDPOINT,
      bucket: env.S3_BUCKET,
      region: env.S3_REGION,
      accessKeyId: env.S3_ACCESS_KEY_ID,
      secretAccessKey: env.S3_SECRET_ACCESS_KEY,
      forcePathStyle: true,
    });
    await store.ensureBucket();
    store.destroy();

    project.provide('testEnv', env);
    console.log(
      `[global-setup] postgres ${redact(databaseUrl)} · s3 ${s3.endpoint}/${env.S3_BUCKET} · ` +
        `redis ${redisUrl} prefix ${env.QUEUE_PREFIX}`,
    );
  } catch (error) {
    await teardown().catch((cleanupError) => console.error('[global-setup] cleanup failed', cleanupError));
    throw error;
  }
  return teardown;
}

/** Drops the run's database and the per-file copies test/setup-env.ts made of it. */
async function dropDatabase(databaseUrl: string): Promise<void> {
  const url = new URL(databaseUrl);
  const name = decodeURIComponent(url.pathname.slice(1));
  url.pathname = '/postgres';
  const admin = new pg.Client({ connectionString: url.toString() });
  await admin.connect();
  try {
    const copies = await admin.query<{ datname: string }>('SELECT datname FROM pg_database WHERE starts_with(datname, $1)', [`${name}_f`]);
    for (const db of [...copies.rows.map((r) => r.datname), name]) {
      // FORCE (PG 13+) ends connections a test leaked instead of failing the drop.
      await admin.query(`DROP DATABASE IF EXISTS "${db.replace(/"/g, '""')}" WITH (FORCE)`);
    }
  } finally {
    await admin.end();
  }
}
