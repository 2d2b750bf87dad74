// `npm start` (scripts/start.ts) run for real: the launcher restarts a dead child with backoff,
// stops everything on SIGTERM, reports a start-up failure as one line, and starts its embedded
// PostgreSQL as root from a clone the `postgres` user cannot enter.
//
// Every launcher runs in its own process group (detached) so afterAll can kill it with its API
// and worker; the embedded PostgreSQL has its own group and is killed through postmaster.pid.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, rmdir, stat, symlink } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { SYSTEM_STATE_DIR, systemStateDir } from '../scripts/launcher/postgres.ts';
import { Supervisor } from '../scripts/launcher/supervisor.ts';

const repo = fileURLToPath(new URL('..', import.meta.url));
const isRoot = process.getuid?.() === 0;

// ---- helpers ----------------------------------------------------------------------------------

class Launcher {
  readonly child: ChildProcess;
  output = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private waiters: Array<() => void> = [];

  constructor(env: NodeJS.ProcessEnv, options: { cwd?: string; nodeArgs?: string[] } = {}) {
    this.child = spawn(process.execPath, [...(options.nodeArgs ?? []), '--conditions=development', '--import', 'tsx', 'scripts/start.ts'], {
      cwd: options.cwd ?? repo,
      env,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    for (const stream of [this.child.stdout!, this.child.stderr!]) {
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => {
        this.output += chunk;
        for (const wake of this.waiters) wake();
      });
    }
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
    void this.exited.then(() => this.waiters.forEach((wake) => wake()));
    launchers.push(this);
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The first match of `pattern` in the output after character `from`; fails if the launcher exits first. */
  async waitFor(pattern: RegExp, what: string, timeoutMs = 90_000, from = 0): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const match = this.output.slice(from).match(pattern);
      if (match) return match;
      if (!this.running) throw new Error(`launcher exited before ${what}:\n${this.output}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}:\n${this.output}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 500);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      this.waiters = [];
    }
  }

  killGroup(): void {
    try {
      process.kill(-this.child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

const launchers: Launcher[] = [];
const cleanups: Array<() => Promise<void> | void> = [];

afterAll(async () => {
  for (const launcher of launchers) launcher.killGroup();
  for (const cleanup of cleanups.reverse()) {
    try {
      await cleanup();
    } catch (error) {
      console.error('launcher test cleanup failed', error);
    }
  }
});

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function waitForHttp(launcher: Launcher, url: string, timeoutMs = 90_000): Promise<Response> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(5_000) });
      if (response.ok) return response;
    } catch {
      // not listening yet
    }
    if (!launcher.running) throw new Error(`launcher exited before ${url} answered:\n${launcher.output}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${url}:\n${launcher.output}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function childPids(pid: number): number[] {
  const out = spawnSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).stdout;
  return out.split('\n').filter(Boolean).map(Number);
}

/** The launcher's environment: the test run's services, a fresh port, no inherited surprises. */
function launcherEnv(overrides: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HOST: '127.0.0.1',
    LOG_LEVEL: 'info',
    // Distinct from the other test files' prefix: this worker must not take their jobs.
    QUEUE_PREFIX: `${process.env.QUEUE_PREFIX}-launcher`,
    ...overrides,
  };
  for (const [name, value] of Object.entries(env)) if (value === undefined) delete env[name];
  return env;
}

// ---- the supervisor on its own ------------------------------------------------------------------

describe('Supervisor', () => {
  it('restarts a crashing child after doubling delays, never faster, and resets after a long enough uptime', async () => {
    const lines: string[] = [];
    const spawnedAt: number[] = [];
    // Runs 1, 2 and 4+ die at once; run 3 stays up longer than resetAfterMs.
    const supervisor = new Supervisor({
      name: 'crasher',
      log: (line) => lines.push(line),
      initialDelayMs: 100,
      maxDelayMs: 400,
      resetAfterMs: 1_000,
      spawn: () => {
        spawnedAt.push(Date.now());
        const script = spawnedAt.length === 3 ? 'sleep 1.5; exit 3' : 'exit 3';
        return spawn('/bin/sh', ['-c', script], { stdio: 'ignore' });
      },
    });
    supervisor.start();
    const deadline = Date.now() + 10_000;
    while (spawnedAt.length < 7 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await supervisor.stop();
    const startsAfterStop = spawnedAt.length;
    await new Promise((r) => setTimeout(r, 600));

    expect(spawnedAt.length).toBeGreaterThanOrEqual(7);
    expect(spawnedAt.length).toBe(startsAfterStop); // stop() cancelled the pending restart
    const delays = lines
      .map((line) => line.match(/^crasher \(pid \d+\) exited with code 3 after [\d.]+ s up; restarting it in ([\d.]+) s/))
      .filter((m) => m !== null)
      .map((m) => Number(m[1]));
    // 0.1, 0.2, then the long run resets to 0.1, then 0.2, 0.4, capped at 0.4.
    expect(delays.slice(0, 6)).toEqual([0.1, 0.2, 0.1, 0.2, 0.4, 0.4]);
    // The delays are really waited for (a crash loop does not spin the CPU).
    const expectedGaps = [100, 200, 1_500 + 100, 200, 400, 400];
    for (let i = 0; i < expectedGaps.length; i++) {
      expect(spawnedAt[i + 1]! - spawnedAt[i]!).toBeGreaterThanOrEqual(expectedGaps[i]! - 5);
    }
  });
});

// ---- the real launcher ----------------------------------------------------------------------------

describe('npm start (scripts/start.ts)', () => {
  it('restarts the worker after kill -9, and stops everything on SIGTERM with exit code 0', async () => {
    const port = await freePort();
    const dataDir = await mkdtemp(join(tmpdir(), 'finetune-launcher-'));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    // DATABASE_URL and S3_ENDPOINT come from the test run: no embedded servers.
    const launcher = new Launcher(launcherEnv({ PORT: String(port), DATA_DIR: dataDir }));

    const apiPid = Number((await launcher.waitFor(/started api \(pid (\d+)\)/, 'the api'))[1]);
    const workerPid = Number((await launcher.waitFor(/started worker \(pid (\d+)\)/, 'the worker'))[1]);
    await waitForHttp(launcher, `http://127.0.0.1:${port}/healthz`);
    expect(childPids(launcher.child.pid!)).toEqual(expect.arrayContaining([apiPid, workerPid]));

    // First start: a server secret and an admin key in DATA_DIR (mode 600); the key is printed
    // once, by the launcher, with the command that uses it — and works.
    const keyFile = join(dataDir, 'admin-api-key');
    const adminKey = (await readFile(keyFile, 'utf8')).trim();
    expect(adminKey).toMatch(/^ft_[0-9a-f]{8}_[A-Za-z0-9_-]{43}$/);
    expect((await stat(keyFile)).mode & 0o777).toBe(0o600);
    expect((await stat(join(dataDir, 'api-key-secret'))).mode & 0o777).toBe(0o600);
    expect(launcher.output).toContain(`curl -H "Authorization: Bearer $(cat ${keyFile})"`);
    expect(launcher.output.split('\n').filter((line) => line.includes(adminKey))).toEqual([`[start]   ${adminKey}`]);
    const url = `http://127.0.0.1:${port}/v1/datasets`;
    expect((await fetch(url, { headers: { authorization: `Bearer ${adminKey}` } })).status).toBe(200);
    expect((await fetch(url)).status).toBe(401);

    const before = launcher.output.length;
    process.kill(workerPid, 'SIGKILL');
    const died = await launcher.waitFor(
      new RegExp(`\\[start\\] worker \\(pid ${workerPid}\\) was killed by SIGKILL after [\\d.]+ s up; restarting it in 1 s \\(at [^)]+\\)`),
      'the restart line',
      30_000,
      before,
    );
    expect(died[0]).toBeTruthy();
    const newWorkerPid = Number((await launcher.waitFor(/started worker \(pid (\d+)\)/, 'the new worker', 30_000, before))[1]);
    expect(newWorkerPid).not.toBe(workerPid);
    expect(alive(workerPid)).toBe(false);
    expect(childPids(launcher.child.pid!)).toEqual(expect.arrayContaining([apiPid, newWorkerPid]));
    // Only the worker was restarted; the API kept answering.
    expect(launcher.output.match(/started api/g)).toHaveLength(1);
    await waitForHttp(launcher, `http://127.0.0.1:${port}/healthz`);
    // The new worker finished booting (its handlers are installed) before we stop it.
    await launcher.waitFor(/worker started[\s\S]*worker started/, 'the new worker to boot', 60_000);

    const beforeStop = launcher.output.length;
    process.kill(launcher.child.pid!, 'SIGTERM');
    const { code, signal } = await launcher.exited;
    const afterStop = launcher.output.slice(beforeStop);
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    expect(afterStop).toContain('[start] SIGTERM received');
    expect(afterStop).not.toMatch(/restarting it|started (api|worker)/);
    expect(alive(apiPid)).toBe(false);
    expect(alive(newWorkerPid)).toBe(false);

    // A later start reads the same key back and does not print it again.
    const again = new Launcher(launcherEnv({ PORT: String(port), DATA_DIR: dataDir }));
    await waitForHttp(again, `http://127.0.0.1:${port}/healthz`);
    expect((await fetch(url, { headers: { authorization: `Bearer ${adminKey}` } })).status).toBe(200);
    expect((await readFile(keyFile, 'utf8')).trim()).toBe(adminKey);
    expect(again.output).not.toContain(adminKey);
    expect(again.output).toContain(`admin API key ft_${adminKey.slice(3, 11)}_… in ${keyFile}`);
    process.kill(again.child.pid!, 'SIGTERM');
    expect(await again.exited).toEqual({ code: 0, signal: null });
  });

  describe('start-up failures print one [start] line, no stack trace, and exit non-zero', () => {
    const cases: Array<{ name: string; env: () => Promise<Record<string, string>>; line: RegExp }> = [
      {
        name: 'PORT already taken',
        env: async () => {
          const server: Server = createServer();
          await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
          cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
          return { PORT: String((server.address() as { port: number }).port) };
        },
        line: /^\[start\] cannot listen on 127\.0\.0\.1:\d+ \(EADDRINUSE\): another process is listening there: stop it or set PORT to a free port$/,
      },
      {
        name: 'an invalid PORT',
        env: async () => ({ PORT: 'abc' }),
        line: /^\[start\] invalid configuration: PORT must be an integer in \[0, 65535\], got "abc"$/,
      },
      {
        name: 'Redis unreachable',
        env: async () => ({ PORT: String(await freePort()), REDIS_URL: `redis://127.0.0.1:${await freePort()}` }),
        line: /^\[start\] Redis unreachable at redis:\/\/127\.0\.0\.1:\d+\/?: connect ECONNREFUSED .*; start Redis or set REDIS_URL$/,
      },
    ];
    for (const { name, env, line } of cases) {
      it(name, async () => {
        const launcher = new Launcher(launcherEnv(await env()));
        const { code } = await Promise.race([
          launcher.exited,
          new Promise<never>((_, reject) =>
            setTimeout(() => reject(new Error(`launcher still running after 30 s:\n${launcher.output}`)), 30_000),
          ),
        ]);
        const lines = launcher.output.split('\n').filter((l) => l.trim());
        expect(lines, launcher.output).toHaveLength(1);
        expect(lines[0]).toMatch(line);
        expect(launcher.output).not.toMatch(/^\s+at /m);
        expect(code).toBe(1);
      });
    }
  });

  it('runs the embedded PostgreSQL from a clone in a directory the postgres user cannot enter, and reuses it on restart', async () => {
    // The clone: a mode-700 directory (like /root) holding the repository's files. node_modules is
    // a symlink (a copy would be 1 GB) and node runs with --preserve-symlinks, so the launcher
    // resolves the PostgreSQL binaries inside the 700 directory, exactly as in a real clone
    // under /root. DATA_DIR is left at its default, <clone>/.data, equally out of reach.
    const base = await mkdtemp(join(tmpdir(), 'finetune-clone-'));
    cleanups.push(() => rm(base, { recursive: true, force: true }));
    expect(statSync(base).mode & 0o777).toBe(0o700);
    const cloneDir = join(base, 'finetune');
    await mkdir(cloneDir);
    for (const entry of ['node_modules', 'packages', 'apps', 'prisma', 'scripts', 'package.json', 'tsconfig.json']) {
      await symlink(join(repo, entry), join(cloneDir, entry));
    }
    const dataDir = join(cloneDir, '.data');
    const state = systemStateDir(dataDir);
    const varLibExisted = existsSync(SYSTEM_STATE_DIR);
    cleanups.push(async () => {
      // A launcher killed by afterAll leaves its detached PostgreSQL running: stop it first.
      for (const cluster of [join(state, 'postgres'), join(dataDir, 'postgres')]) {
        const pidFile = join(cluster, 'postmaster.pid');
        if (existsSync(pidFile)) {
          const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
          if (pid > 0 && alive(pid)) process.kill(pid, 'SIGKILL');
        }
      }
      await rm(state, { recursive: true, force: true });
      if (!varLibExisted) await rmdir(SYSTEM_STATE_DIR).catch(() => undefined);
    });

    if (isRoot) {
      // The premise: the postgres user (if it exists yet) can enter neither the clone nor DATA_DIR.
      const uid = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
      if (uid.status === 0) {
        const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout);
        expect(spawnSync('test', ['-x', cloneDir], { uid: Number(uid.stdout), gid }).status).not.toBe(0);
      }
    }

    const run = async (): Promise<{ launcher: Launcher; cluster: string }> => {
      const port = await freePort();
      const launcher = new Launcher(
        launcherEnv({
          PORT: String(port),
          EMBEDDED_POSTGRES_PORT: String(await freePort()),
          DATABASE_URL: undefined,
          DATA_DIR: undefined,
          // S3 from the test run: only PostgreSQL is embedded here.
        }),
        { cwd: cloneDir, nodeArgs: ['--preserve-symlinks', '--preserve-symlinks-main'] },
      );
      const cluster = (await launcher.waitFor(/embedded PostgreSQL ready at \S+ \(data: ([^)]+)\)/, 'embedded PostgreSQL'))[1]!;
      await waitForHttp(launcher, `http://127.0.0.1:${port}/healthz`);
      const ready = await waitForHttp(launcher, `http://127.0.0.1:${port}/readyz`, 30_000);
      expect(((await ready.json()) as { checks: { database: { ok: boolean } } }).checks.database).toEqual({ ok: true });

      // The server runs as the postgres user when we are root, as ourselves otherwise.
      const serverPid = Number(readFileSync(join(cluster, 'postmaster.pid'), 'utf8').split('\n')[0]);
      const serverUid = Number(readFileSync(`/proc/${serverPid}/status`, 'utf8').match(/^Uid:\s+(\d+)/m)![1]);
      if (isRoot) expect(serverUid).not.toBe(0);
      else expect(serverUid).toBe(process.getuid!());

      process.kill(launcher.child.pid!, 'SIGTERM');
      expect(await launcher.exited).toEqual({ code: 0, signal: null });
      expect(launcher.output).toContain('[start] stopped embedded PostgreSQL');
      expect(alive(serverPid)).toBe(false);
      return { launcher, cluster };
    };

    const first = await run();
    if (isRoot) {
      expect(first.cluster).toBe(join(state, 'postgres'));
      expect(first.launcher.output).toContain(
        `[start] the postgres user cannot reach ${dataDir}: the embedded database lives in ${join(state, 'postgres')}`,
      );
      expect(first.launcher.output).toMatch(
        new RegExp(`\\[start\\] the postgres user cannot run the binaries in ${cloneDir}/node_modules/\\S+: using a copy in ${state}/binaries/`),
      );
    } else {
      expect(first.cluster).toBe(join(dataDir, 'postgres'));
    }
    expect(first.launcher.output).toContain(`initialising embedded PostgreSQL in ${first.cluster}`);
    // Nothing was made more permissive on the way.
    expect(statSync(base).mode & 0o777).toBe(0o700);

    // Second start: same place, already initialised, migrations already applied.
    const second = await run();
    expect(second.cluster).toBe(first.cluster);
    expect(second.launcher.output).not.toContain('initialising embedded PostgreSQL');
    expect(second.launcher.output).toContain('[start] database schema is up to date');
  });
});
