// The service as it runs in production, for bench/run.ts: the API (apps/api/src/server.ts) and
// the worker (bench/worker-probe.ts around `startWorker`) each in their own process, on a fresh
// Postgres database, an embedded S3 server in a temp dir and the local Redis under a unique
// QUEUE_PREFIX. `close()` removes all three.
import { spawn, fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { deleteKeysWithPrefix } from '../packages/queue/src/key-cleanup.ts';
import pg from 'pg';
import { applyMigrations, ensureDatabase } from '../packages/db/src/migrate.ts';
import { startEmbeddedS3, type EmbeddedS3 } from '../packages/storage/src/index.ts';
import type { WorkerProbe } from './worker-probe.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/**
 * BENCH_COMPILED=1 runs the service as `npm run start:prod` and the Docker images do: the
 * JavaScript `npm run build` wrote, with plain node (no TypeScript loader in the API, the worker
 * or the worker's training children). Otherwise the sources through tsx, as `npm start` does.
 */
const COMPILED = process.env.BENCH_COMPILED === '1';
const API_ARGS = COMPILED ? [path.join(ROOT, 'apps/api/dist/server.js')] : ['--conditions=development', '--import', 'tsx', path.join(ROOT, 'apps/api/src/server.ts')];
// The probe around the worker is TypeScript either way; without the `development` condition the
// workspace packages it imports (the worker included) resolve to their builds.
const WORKER_EXEC_ARGV = COMPILED ? ['--import', 'tsx', '--expose-gc'] : ['--conditions=development', '--import', 'tsx', '--expose-gc'];

/** How the service runs in this bench: for the results' headers. */
export const SERVICE_BUILD = COMPILED ? 'its build (`npm run build`, plain node, BENCH_COMPILED=1)' : 'its sources through tsx (as `npm start` runs it)';

export interface JobView {
  id: string;
  status: string;
  modelId: string | null;
  error: { code: string; message: string } | null;
  timings: Record<string, number> | null;
  runtime?: Record<string, string>;
  [field: string]: unknown;
}

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  server.close();
  return port;
}

export class Stack {
  private worker: ChildProcess | null = null;

  private constructor(
    readonly baseUrl: string,
    readonly headers: { authorization: string },
    private readonly env: NodeJS.ProcessEnv,
    private readonly api: ChildProcess,
    private readonly cleanups: Array<() => Promise<unknown>>,
  ) {}

  static async start(): Promise<Stack> {
    const runId = randomBytes(6).toString('hex');
    const cleanups: Array<() => Promise<unknown>> = [];
    const dbUrl = new URL(process.env.BENCH_DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/postgres');
    dbUrl.pathname = `/finetune_bench_${runId}`;
    const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
    const prefix = `finetune-bench-${runId}`;
    try {
      await ensureDatabase(dbUrl.toString());
      cleanups.push(() => dropDatabase(dbUrl));
      await applyMigrations(dbUrl.toString());
      const tmp = await mkdtemp(path.join(tmpdir(), 'finetune-bench-'));
      cleanups.push(() => rm(tmp, { recursive: true, force: true }));
      const s3: EmbeddedS3 = await startEmbeddedS3({ dir: path.join(tmp, 's3'), port: 0 });
      cleanups.push(() => s3.close());
      cleanups.push(() => deleteKeysWithPrefix(redisUrl, prefix));
      const adminKey = `ft_bench_${randomBytes(24).toString('hex')}`;
      const port = await freePort();
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        DATABASE_URL: dbUrl.toString(),
        REDIS_URL: redisUrl,
        QUEUE_PREFIX: prefix,
        S3_ENDPOINT: s3.endpoint,
        S3_BUCKET: 'finetune-bench',
        S3_REGION: 'us-east-1',
        S3_ACCESS_KEY_ID: 'S3RVER', // s3rver accepts only its built-in credentials
        S3_SECRET_ACCESS_KEY: 'S3RVER',
        S3_FORCE_PATH_STYLE: 'true',
        DATA_DIR: path.join(tmp, 'data'),
        ADMIN_API_KEY: adminKey,
        API_KEY_SECRET: randomBytes(32).toString('hex'),
        PORT: String(port),
        HOST: '127.0.0.1',
        LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
        // The bench sends thousands of requests with one key: limits and quotas off.
        RATE_LIMIT_PER_MINUTE: '0',
        PREDICT_RATE_LIMIT_PER_MINUTE: '0',
        UPLOAD_RATE_LIMIT_PER_MINUTE: '0',
        QUOTA_CONCURRENT_JOBS: '0',
        QUOTA_STORED_BYTES: '0',
        QUOTA_MODELS: '0',
        WORKER_METRICS_PORT: '0',
      };
      const api = spawn(process.execPath, API_ARGS, { env, stdio: ['ignore', 'inherit', 'inherit'], cwd: ROOT });
      cleanups.push(() => stopProcess(api));
      const stack = new Stack(`http://127.0.0.1:${port}`, { authorization: `Bearer ${adminKey}` }, env, api, cleanups);
      await stack.waitReady();
      await stack.startWorker();
      return stack;
    } catch (error) {
      await runCleanups(cleanups);
      throw error;
    }
  }

  /**
   * Another API process on the same database, S3 and queue, with `env` on top of the stack's
   * (e.g. PREDICT_BATCH_WINDOW_MS): settings read at start-up compared side by side in one run.
   * Stopped by close().
   */
  async startApi(env: NodeJS.ProcessEnv): Promise<{ baseUrl: string; pid: number }> {
    const port = await freePort();
    const api = spawn(process.execPath, API_ARGS, { env: { ...this.env, ...env, PORT: String(port) }, stdio: ['ignore', 'inherit', 'inherit'], cwd: ROOT });
    this.cleanups.push(() => stopProcess(api));
    const baseUrl = `http://127.0.0.1:${port}`;
    await waitReady(api, baseUrl);
    return { baseUrl, pid: api.pid! };
  }

  get apiPid(): number {
    return this.api.pid!;
  }

  private async waitReady(): Promise<void> {
    await waitReady(this.api, this.baseUrl);
  }

  /** A fresh worker process (the previous one, if any, is stopped first), with `env` on top of the stack's. */
  async startWorker(env: NodeJS.ProcessEnv = {}): Promise<void> {
    if (this.worker) await stopProcess(this.worker, 'stop');
    const worker = fork(path.join(ROOT, 'bench/worker-probe.ts'), [], { env: { ...this.env, ...env }, execArgv: WORKER_EXEC_ARGV, stdio: ['ignore', 'inherit', 'inherit', 'ipc'], cwd: ROOT });
    const [message] = (await Promise.race([once(worker, 'message'), once(worker, 'exit').then(() => [{ type: 'exit' }])])) as [{ type: string }];
    if (message.type !== 'ready') throw new Error('the worker exited during start-up');
    this.worker = worker;
  }

  /** Stops the worker (benches of the API alone: an idle worker still polls). */
  async stopWorker(): Promise<void> {
    if (this.worker) await stopProcess(this.worker, 'stop');
    this.worker = null;
  }

  async probeWorker(): Promise<WorkerProbe> {
    const worker = this.worker;
    if (!worker) throw new Error('no worker running');
    const reply = once(worker, 'message') as Promise<[WorkerProbe]>;
    worker.send({ type: 'probe' });
    return (await reply)[0];
  }

  async request<T>(method: string, route: string, body?: unknown): Promise<T> {
    const init: RequestInit = { method, headers: { ...this.headers } };
    if (body instanceof FormData) init.body = body;
    else if (body !== undefined) {
      init.body = JSON.stringify(body);
      (init.headers as Record<string, string>)['content-type'] = 'application/json';
    }
    const res = await fetch(`${this.baseUrl}${route}`, init);
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${route}: ${res.status} ${text.slice(0, 500)}`);
    return JSON.parse(text) as T;
  }

  async uploadDataset(zip: Buffer, name: string, kind: 'labelled' | 'unlabelled' = 'labelled'): Promise<string> {
    const form = new FormData();
    form.append('name', name);
    form.append('kind', kind);
    form.append('file', new Blob([new Uint8Array(zip)], { type: 'application/zip' }), `${name}.zip`);
    const dataset = await this.request<{ id: string; status: string }>('POST', '/v1/datasets', form);
    if (dataset.status !== 'ready') throw new Error(`dataset ${dataset.id} is ${dataset.status}`);
    return dataset.id;
  }

  /** POST /v1/jobs, then GET until it settles; `ms` is POST → succeeded as a client sees it. */
  async runJob(spec: Record<string, unknown>, timeoutMs = 1_800_000): Promise<{ job: JobView; ms: number }> {
    const started = performance.now();
    const created = await this.request<JobView>('POST', '/v1/jobs', spec);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const job = await this.request<JobView>('GET', `/v1/jobs/${created.id}`);
      if (job.status === 'succeeded') return { job, ms: performance.now() - started };
      if (job.status === 'failed' || job.status === 'canceled') throw new Error(`job ${job.id} ${job.status}: ${JSON.stringify(job.error)}`);
      if (Date.now() > deadline) throw new Error(`job ${job.id} still ${job.status} after ${timeoutMs / 1000} s`);
      // 25 ms resolution (a cached rerun takes about a second); one small GET each time.
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  async close(): Promise<void> {
    if (this.worker) await stopProcess(this.worker, 'stop');
    this.worker = null;
    await runCleanups(this.cleanups);
  }
}

async function waitReady(api: ChildProcess, baseUrl: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (api.exitCode !== null) throw new Error(`the API exited with code ${api.exitCode}`);
    const ok = await fetch(`${baseUrl}/readyz`).then((r) => r.ok, () => false);
    if (ok) return;
    if (Date.now() > deadline) throw new Error('the API did not become ready within 60 s');
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function runCleanups(cleanups: Array<() => Promise<unknown>>): Promise<void> {
  for (const cleanup of cleanups.reverse()) {
    try {
      await cleanup();
    } catch (error) {
      console.error('[bench] cleanup failed:', (error as Error).message);
    }
  }
}

/** SIGTERM (or an IPC `stop`), then SIGKILL after 30 s. */
async function stopProcess(child: ChildProcess, ipcStop?: string): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  if (ipcStop && child.connected) child.send({ type: ipcStop });
  else child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  await exited;
  clearTimeout(timer);
}

async function dropDatabase(url: URL): Promise<void> {
  const name = decodeURIComponent(url.pathname.slice(1));
  const admin = new URL(url);
  admin.pathname = '/postgres';
  const client = new pg.Client({ connectionString: admin.toString() });
  await client.connect();
  try {
    await client.query(`DROP DATABASE IF EXISTS "${name.replace(/"/g, '""')}" WITH (FORCE)`);
  } finally {
    await client.end();
  }
}
