// Production runs compiled JavaScript: `npm run build` for real into this checkout (dist/ beside
// each src/, which nothing else here imports), then `npm run start:prod` against the run's
// Postgres, Redis and S3. The API and the worker it starts, and the training process the worker
// forks, run the build's output with plain node: a dataset upload and a small scratch job go
// through them, and none of them has tsx on its command line or in NODE_OPTIONS (the only ways
// tsx gets into a process). The launcher itself stays a TypeScript script run by tsx.
//
// The Dockerfiles and docker-compose.yml cannot be run here (no Docker engine); their entry
// points are checked against what the build wrote.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { strFromU8, unzipSync } from 'fflate';
import supertest from 'supertest';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { newAdminKey, newSecret } from '../scripts/launcher/credentials.ts';
import { mnistFolderZip } from './support/mnist-fixtures.ts';
import { freePort } from './support/processes.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));
const API_ENTRY = 'apps/api/dist/server.js';
const WORKER_ENTRY = 'apps/worker/dist/main.js';
const CHILD_ENTRY = join(repo, 'apps/worker/dist/training/child.js');

let launcher: ChildProcess;
let output = '';
let http: supertest.Agent;
let apiPid: number;
let workerPid: number;

/** Polls until `check` returns a value; the failure names what it waited for. (Not the helper in
 * support/app.ts: that one loads the API's sources into this process.) */
async function waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}:\n${output.slice(-4000)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

// ---- /proc: what a process was started with ------------------------------------------------

function commandLine(pid: number): string[] {
  return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
}

function environment(pid: number): Record<string, string> {
  const entries = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean);
  return Object.fromEntries(entries.map((entry) => [entry.slice(0, entry.indexOf('=')), entry.slice(entry.indexOf('=') + 1)]));
}

/** Processes whose parent is `pid` (field 4 of /proc/<pid>/stat, after the parenthesised name). */
function childrenOf(pid: number): number[] {
  const children: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) children.push(Number(name));
    } catch {
      // exited while we looked
    }
  }
  return children;
}

/** `node <entry> …args` with no loader or preload: no tsx on the command line or in NODE_OPTIONS. */
function expectPlainNode(argv: string[], nodeOptions: string, entry: string, what: string): void {
  const [node, ...args] = argv;
  expect(node, what).toBe(process.execPath);
  expect(args[0], `${what}: ${args.join(' ')}`).toBe(entry);
  expect(args.join(' '), what).not.toMatch(/tsx/);
  expect(nodeOptions, `${what}'s NODE_OPTIONS`).not.toMatch(/tsx|--import|--loader|--require|-r /);
}

function expectPlainNodeProcess(pid: number, entry: string, what: string): void {
  expectPlainNode(commandLine(pid), environment(pid).NODE_OPTIONS ?? '', entry, what);
}

// ---- the build and the service ------------------------------------------------------------

beforeAll(async () => {
  // Incremental: after the first build only what changed is compiled again.
  await promisify(execFile)('npm', ['run', 'build'], { cwd: repo, timeout: 240_000, maxBuffer: 16 * 1024 * 1024 }).catch(
    (error: { stdout?: string; stderr?: string; message: string }) => {
      throw new Error(`npm run build failed: ${error.message}\n${error.stdout ?? ''}\n${error.stderr ?? ''}`);
    },
  );

  const port = await freePort();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HOST: '127.0.0.1',
    PORT: String(port),
    API_KEY_SECRET: newSecret(),
    ADMIN_API_KEY: newAdminKey(),
    LOG_LEVEL: 'warn',
  };
  // Nothing may reach the service's processes except through the start script.
  delete env.NODE_OPTIONS;
  // Detached: afterAll stops the launcher, its npm parent and everything they started as a group.
  launcher = spawn('npm', ['run', 'start:prod'], { cwd: repo, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  for (const stream of [launcher.stdout!, launcher.stderr!]) stream.on('data', (chunk: Buffer) => (output += chunk.toString()));

  const started = (name: string) =>
    waitFor(`the launcher to start the ${name}`, async () => {
      if (launcher.exitCode !== null) throw new Error(`npm run start:prod exited ${launcher.exitCode}:\n${output}`);
      const match = output.match(new RegExp(`\\[start\\] started ${name} \\(pid (\\d+)\\)`));
      return match ? Number(match[1]) : undefined;
    }, 60_000);
  apiPid = await started('api');
  workerPid = await started('worker');
  http = supertest.agent(`http://127.0.0.1:${port}`).set('authorization', `Bearer ${env.ADMIN_API_KEY}`);
  await waitFor('the compiled API to answer /healthz', async () => {
    const res = await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined);
    return res?.ok ? true : undefined;
  }, 60_000);
}, 300_000);

afterAll(async () => {
  if (!launcher?.pid) return;
  const exited = new Promise((resolve) => (launcher.exitCode !== null ? resolve(undefined) : launcher.once('exit', resolve)));
  // SIGTERM: the launcher stops the API and the worker gracefully; SIGKILL if that hangs.
  try {
    process.kill(-launcher.pid, 'SIGTERM');
  } catch {
    // already gone
  }
  const timer = setTimeout(() => {
    try {
      process.kill(-launcher.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  }, 30_000);
  await exited;
  clearTimeout(timer);
});

describe('the compiled service (npm run build, npm run start:prod)', () => {
  it('runs the API and the worker from dist/ with plain node', () => {
    expectPlainNodeProcess(apiPid, API_ENTRY, 'the API');
    expectPlainNodeProcess(workerPid, WORKER_ENTRY, 'the worker');
  });

  it('answers health checks and serves the dashboard and the API docs', async () => {
    await http.get('/healthz').expect(200, { status: 'ok' });
    await http.get('/').expect(302).expect('location', /\/dashboard\/?$/);
    const dashboard = await http.get('/dashboard/').expect(200).expect('content-type', /text\/html/);
    expect(dashboard.text).toMatch(/<script[^>]+type="module"/);
    await http.get('/docs/json').expect(200).expect('content-type', /json/);
    const docs = await http.get('/docs').redirects(1).expect(200).expect('content-type', /text\/html/);
    expect(docs.text).toMatch(/swagger/i);
  });

  it('trains a job through the compiled worker and its forked training process', { timeout: 120_000 }, async () => {
    // Training processes are the worker's children running training/child, forked per run (or
    // ahead of one): each is recorded as first seen, before a job can rename it (a titled
    // process shows its title, one string, in place of its arguments).
    const seen = new Map<number, { argv: string[]; nodeOptions: string }>();
    const watch = setInterval(() => {
      for (const pid of childrenOf(workerPid)) {
        if (seen.has(pid)) continue;
        try {
          const argv = commandLine(pid);
          if (argv.some((arg) => /training\/child\.[jt]s\b/.test(arg))) seen.set(pid, { argv, nodeOptions: environment(pid).NODE_OPTIONS ?? '' });
        } catch {
          // exited while we looked
        }
      }
    }, 50);
    onTestFinished(() => clearInterval(watch));

    const dataset = await http.post('/v1/datasets').attach('file', await mnistFolderZip([3, 7], 8), 'digits.zip').expect(201);
    const created = await http
      .post('/v1/jobs')
      .send({ datasetId: dataset.body.id, baseModel: 'small_cnn', strategy: 'scratch', hyperparameters: { epochs: 2, batchSize: 4 } })
      .expect(202);
    const jobId: string = created.body.id;

    const job = await waitFor('the job to finish', async () => {
      const res = await http.get(`/v1/jobs/${jobId}`).expect(200);
      return ['succeeded', 'failed', 'canceled'].includes(res.body.status) ? res.body : undefined;
    }, 90_000);
    expect(job.error).toBeNull();
    expect(job.status).toBe('succeeded');
    clearInterval(watch);
    const untitled = [...seen.values()].filter(({ argv }) => argv.length > 1);
    expect(untitled.length, 'training processes seen with their arguments').toBeGreaterThan(0);
    for (const { argv, nodeOptions } of untitled) expectPlainNode(argv, nodeOptions, CHILD_ENTRY, 'a training process');

    // The download carries the model page, read by the compiled API from the files the build
    // copied beside it.
    const download = await http
      .get(`/v1/models/${job.modelId}/download`)
      .buffer(true)
      .parse((response, done) => {
        const chunks: Buffer[] = [];
        response.on('data', (c: Buffer) => chunks.push(c));
        response.on('end', () => done(null, Buffer.concat(chunks)));
      })
      .expect(200);
    const files = unzipSync(new Uint8Array(download.body as Buffer));
    for (const name of ['index.html', 'app.js', 'style.css']) {
      expect(strFromU8(files[name]!), name).toBe(readFileSync(join(repo, 'apps/api/src/model-page', name), 'utf8'));
    }
  });
});

describe('container entry points', () => {
  /** `command: [...]` lines of docker-compose.yml and `CMD [...]` lines of the Dockerfiles. */
  const commands = [
    ...['Dockerfile', 'Dockerfile.gpu'].flatMap((file) =>
      [...readFileSync(join(repo, file), 'utf8').matchAll(/^CMD (\[.*\])$/gm)].map((m) => ({ file, argv: JSON.parse(m[1]!) as string[] })),
    ),
    ...[...readFileSync(join(repo, 'docker-compose.yml'), 'utf8').matchAll(/^\s+command: (\[.*\])$/gm)].map((m) => ({
      file: 'docker-compose.yml',
      argv: JSON.parse(m[1]!) as string[],
    })),
  ];

  it('start the API and the worker from what the build wrote, with plain node', () => {
    const entries = commands.filter(({ argv }) => argv.some((arg) => /^apps\/(api|worker)\//.test(arg)));
    expect(entries.map(({ file, argv }) => `${file}: ${argv.join(' ')}`).sort()).toEqual([
      `Dockerfile.gpu: node ${WORKER_ENTRY}`,
      `Dockerfile: node ${API_ENTRY}`,
      `docker-compose.yml: node ${API_ENTRY}`,
      `docker-compose.yml: node ${WORKER_ENTRY}`,
    ]);
    for (const entry of [API_ENTRY, WORKER_ENTRY]) expect(existsSync(join(repo, entry)), entry).toBe(true);
  });
});
