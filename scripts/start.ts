// `npm start`: the whole service on one machine, no Docker needed. `npm run start:prod` (this
// script with `--compiled`) does the same with the output of `npm run build`.
//
//  - DATABASE_URL unset → an embedded PostgreSQL on 127.0.0.1:54329 (EMBEDDED_POSTGRES_PORT),
//    database `finetune`, initialised once in <DATA_DIR>/postgres and reused (as root, possibly
//    elsewhere: see launcher/postgres.ts).
//  - S3_ENDPOINT unset → s3rver in <DATA_DIR>/s3 on 127.0.0.1:9000 (S3_PORT).
//  - Redis is never embedded (no npm package provides one offline): REDIS_URL must reach one.
//  - Migrations are applied, the bucket ensured, then the API and the worker run as two child
//    processes with the resolved environment. A child that dies is restarted with backoff
//    (launcher/supervisor.ts). SIGINT/SIGTERM/SIGHUP stop the children gracefully, then the
//    embedded servers, and exit 0.
//  - API_KEY_SECRET unset → <DATA_DIR>/api-key-secret (mode 600), created on the first start.
//    ADMIN_API_KEY unset → <DATA_DIR>/admin-api-key (mode 600), created and printed once with the
//    command that uses it on the first start, read back afterwards.
//  - Any start-up failure prints one `[start] …` line saying what failed and what to do, exit 1.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { loadConfig, type Config } from '../packages/core/src/config.ts';
import { applyMigrations, ensureDatabase, redact } from '../packages/db/src/migrate.ts';
import { keyPrefix } from '../apps/api/src/auth/api-keys.ts';
import { S3ObjectStore, startEmbeddedS3 } from '../packages/storage/src/index.ts';
import { assertPortFree, describe, pingRedis, step, StartupError } from './launcher/checks.ts';
import { ADMIN_KEY_FILE, newAdminKey, newSecret, readOrCreate, SECRET_FILE } from './launcher/credentials.ts';
import { startEmbeddedPostgres } from './launcher/postgres.ts';
import { Supervisor } from './launcher/supervisor.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
/** `--compiled` (`npm run start:prod`): the API and the worker run the JavaScript `npm run build`
 * wrote, with plain node; otherwise their TypeScript sources through tsx, needing no build. */
const COMPILED = process.argv.slice(2).includes('--compiled');
const ENTRY_POINTS = COMPILED
  ? { api: 'apps/api/dist/server.js', worker: 'apps/worker/dist/main.js' }
  : { api: 'apps/api/src/server.ts', worker: 'apps/worker/src/main.ts' };
/** Node arguments before the entry point: tsx, and the workspace packages' sources (the
 * `development` export condition) rather than their builds. */
const NODE_ARGS = COMPILED ? [] : ['--conditions=development', '--import', 'tsx'];
const log = (message: string) => console.log(`[start] ${message}`);
const fail = (message: string) => console.error(`[start] ${message}`);

const env: NodeJS.ProcessEnv = { ...process.env };
/** Embedded servers, stopped in reverse order after the children. */
const embedded: Array<{ name: string; stop: () => Promise<void> }> = [];
const children: Supervisor[] = [];

// ---- shutdown: one path for signals, start-up failures and a dead embedded server ----------
let exiting: Promise<void> | undefined;
function shutdown(code: number, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  exiting ??= (async () => {
    await Promise.all(children.map((child) => child.stop(signal)));
    for (const { name, stop } of embedded.reverse()) {
      try {
        await stop();
        log(`stopped ${name}`);
      } catch (error) {
        fail(`stopping ${name} failed: ${describe(error)}`);
      }
    }
    process.exit(code);
  })();
  return exiting;
}

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(signal, () => {
    if (exiting) return;
    log(`${signal} received: stopping ${children.length ? 'api and worker, then ' : ''}everything`);
    // Children handle SIGINT and SIGTERM alike; SIGHUP would kill them without a graceful close.
    void shutdown(0, signal === 'SIGHUP' ? 'SIGTERM' : signal);
  });
}

// ---- start-up ---------------------------------------------------------------------------------
async function main(): Promise<void> {
  const config = readConfig();
  for (const entry of COMPILED ? Object.values(ENTRY_POINTS) : []) {
    if (!existsSync(join(root, entry))) throw new StartupError(`${entry} not found: run \`npm run build\` first`);
  }
  // Read by this launcher only (the embedded servers' ports), so checked here.
  const embeddedPostgresPort = portVariable('EMBEDDED_POSTGRES_PORT', 54329);
  const s3Port = portVariable('S3_PORT', 9000);
  const dataDir = resolve(root, config.dataDir);
  env.DATA_DIR = dataDir;

  // Cheap checks first: nothing is started if the API's port is taken or Redis is unreachable.
  await assertPortFree(config.host, config.port, 'PORT');
  await step(`Redis unreachable at ${redact(config.redisUrl)}`, 'start Redis or set REDIS_URL', () =>
    pingRedis(config.redisUrl),
  );
  await step(`cannot create DATA_DIR ${dataDir}`, 'set DATA_DIR to a writable directory', () =>
    mkdir(dataDir, { recursive: true }),
  );

  const databaseUrl = config.databaseUrl ?? (await startPostgres(dataDir, embeddedPostgresPort));
  if (config.databaseUrl) {
    // Managed databases often forbid connecting to `postgres`, so a failure here is not one:
    // the migrations below say whether the database itself is reachable.
    const created = await ensureDatabase(databaseUrl).catch(() => false);
    if (created) log(`created database ${redact(databaseUrl)}`);
  }
  env.DATABASE_URL = databaseUrl;
  if (!config.s3.endpoint) await startS3(dataDir, s3Port);
  const resolved = loadConfig(env);

  const applied = await step(
    `could not migrate the database at ${redact(databaseUrl)}`,
    config.databaseUrl ? 'check DATABASE_URL (or unset it to use the embedded PostgreSQL)' : undefined,
    () => applyMigrations(databaseUrl),
  );
  log(applied.length ? `applied migrations: ${applied.join(', ')}` : 'database schema is up to date');

  await step(
    `S3 bucket ${resolved.s3.bucket} unavailable at ${resolved.s3.endpoint}`,
    'check S3_ENDPOINT, S3_BUCKET and the S3 credentials (or unset S3_ENDPOINT to use the embedded s3rver)',
    async () => {
      const store = new S3ObjectStore({ ...resolved.s3, endpoint: resolved.s3.endpoint! });
      try {
        await store.ensureBucket();
      } finally {
        store.destroy();
      }
    },
  );
  log(`bucket ${resolved.s3.bucket} ready at ${resolved.s3.endpoint}`);
  log(
    `redis ${redact(resolved.redisUrl)} (queue prefix ${resolved.queuePrefix}); ` +
      `API on http://${resolved.host}:${resolved.port}`,
  );

  await step(`cannot read or create the API credentials in ${dataDir}`, 'check that DATA_DIR is writable', () =>
    ensureCredentials(dataDir, resolved),
  );

  if (exiting) return; // a signal arrived during start-up
  for (const [name, entry] of Object.entries(ENTRY_POINTS)) {
    const child = new Supervisor({ name, log, spawn: () => spawnChild(name, entry) });
    children.push(child);
    child.start();
  }
}

/**
 * The server secret API keys are hashed under, and the bootstrap admin key: from the environment
 * if set, else from files in DATA_DIR, created (mode 600) on the first start. The admin key is
 * printed only when it is created.
 */
async function ensureCredentials(dataDir: string, config: Config): Promise<void> {
  if (!env.API_KEY_SECRET) {
    const path = join(dataDir, SECRET_FILE);
    const secret = await readOrCreate(path, newSecret);
    env.API_KEY_SECRET = secret.value;
    log(secret.created ? `created the API key secret in ${path}` : `API key secret: ${path}`);
  }
  if (!env.ADMIN_API_KEY) {
    const path = join(dataDir, ADMIN_KEY_FILE);
    const admin = await readOrCreate(path, newAdminKey);
    env.ADMIN_API_KEY = admin.value;
    const base = `http://${config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host}:${config.port}`;
    if (admin.created) {
      log(`created an admin API key (shown once; kept in ${path}, mode 600):`);
      log(`  ${admin.value}`);
      log(`use it: curl -H "Authorization: Bearer $(cat ${path})" ${base}/v1/datasets`);
    } else {
      log(`admin API key ${keyPrefix(admin.value) ? `ft_${keyPrefix(admin.value)}_…` : ''} in ${path}: curl -H "Authorization: Bearer $(cat ${path})" ${base}/v1/datasets`);
    }
  }
}

function readConfig(): Config {
  try {
    return loadConfig(env);
  } catch (error) {
    // loadConfig lists each problem on its own line ("Invalid configuration:\n  - …\n  - …").
    const problems = String((error as Error).message).split('\n').slice(1).map((line) => line.replace(/^\s*-\s*/, ''));
    throw new StartupError(`invalid configuration: ${problems.length ? problems.join('; ') : describe(error)}`);
  }
}

function portVariable(name: string, fallback: number): number {
  const raw = env[name];
  if (!raw) return fallback;
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new StartupError(`invalid configuration: ${name} must be an integer in [1, 65535], got "${raw}"`);
  }
  return port;
}

async function startPostgres(dataDir: string, port: number): Promise<string> {
  const pg = await startEmbeddedPostgres({
    dataDir,
    port,
    log,
    onUnexpectedExit: (why) => {
      if (exiting) return;
      fail(`embedded PostgreSQL ${why}: stopping everything`);
      void shutdown(1);
    },
  });
  embedded.push({ name: 'embedded PostgreSQL', stop: pg.stop });
  await step('could not create the database `finetune` in the embedded PostgreSQL', undefined, () =>
    ensureDatabase(pg.url),
  );
  log(`embedded PostgreSQL ready at ${redact(pg.url)} (data: ${pg.cluster})`);
  return pg.url;
}

async function startS3(dataDir: string, port: number): Promise<void> {
  const dir = join(dataDir, 's3');
  const s3 = await step(
    `embedded S3 (s3rver) did not start on 127.0.0.1:${port}`,
    'set S3_PORT to a free port, or S3_ENDPOINT to use another S3 server',
    () => startEmbeddedS3({ dir, port, host: '127.0.0.1' }),
  );
  embedded.push({ name: 'embedded S3 (s3rver)', stop: () => s3.close() });
  env.S3_ENDPOINT = s3.endpoint;
  // s3rver only accepts its built-in credentials and path-style URLs.
  env.S3_ACCESS_KEY_ID = 'S3RVER';
  env.S3_SECRET_ACCESS_KEY = 'S3RVER';
  env.S3_FORCE_PATH_STYLE = 'true';
  log(`embedded S3 (s3rver) ready at ${s3.endpoint} (data: ${dir})`);
}

function spawnChild(name: string, entry: string) {
  const child = spawn(process.execPath, [...NODE_ARGS, entry], {
    cwd: root,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  for (const [stream, out] of [
    [child.stdout, process.stdout],
    [child.stderr, process.stderr],
  ] as const) {
    createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => out.write(`[${name}] ${line}\n`));
  }
  return child;
}

try {
  await main();
} catch (error) {
  if (!exiting) {
    // StartupErrors carry the whole line; anything else is a bug: its message, and the stack
    // only when asked for (LOG_LEVEL=debug).
    fail(error instanceof StartupError ? error.message : `start-up failed: ${describe(error)}`);
    if (!(error instanceof StartupError) && /^(debug|trace)$/.test(env.LOG_LEVEL ?? '')) console.error(error);
    await shutdown(1);
  }
}
