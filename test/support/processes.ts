// Real processes for fault tests: worker processes that can be killed (whole process group, as
// `kill -9` of a worker and its training children), and a Redis server of the test's own on a
// free port (never the shared one: flushing or stopping it would break other runs).
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));

export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export interface SpawnedProcess {
  readonly child: ChildProcess;
  /** Everything the process wrote to stdout and stderr so far. */
  output(): string;
  /** Signals the whole process group (the process and everything it forked). */
  signalGroup(signal: NodeJS.Signals): void;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  exited: Promise<number | string>;
  /** SIGKILLs the group if still running and waits for the exit. */
  stop(): Promise<void>;
}

function spawnGroup(command: string, args: string[], env: NodeJS.ProcessEnv): SpawnedProcess {
  // detached: the child leads a new process group, so one kill reaches its training children too.
  const child = spawn(command, args, { cwd: root, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  let done = false;
  void exited.then(() => (done = true));
  const signalGroup = (signal: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, signal);
    } catch {
      // already gone
    }
  };
  return {
    child,
    output: () => output,
    signalGroup,
    exited,
    async stop() {
      if (!done) signalGroup('SIGKILL');
      await exited;
    },
  };
}

/** A worker process (`apps/worker/src/main.ts`) with the given environment overrides. */
export function spawnWorker(env: Record<string, string>): SpawnedProcess {
  return spawnGroup(process.execPath, ['--conditions=development', '--import', 'tsx', 'apps/worker/src/main.ts'], { ...process.env, LOG_LEVEL: 'info', ...env });
}

/** Kills a process group and waits until no member is left (training children included). */
export async function killGroup(proc: SpawnedProcess, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  proc.signalGroup(signal);
  await proc.exited;
  for (let i = 0; i < 100; i++) {
    try {
      process.kill(-proc.child.pid!, 0);
    } catch {
      return; // ESRCH: the group is empty
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`process group ${proc.child.pid} still has members after ${signal}`);
}

export interface TestRedis {
  url: string;
  port: number;
  /** Kills the server (nothing is persisted: it comes back empty, as a restarted Redis with no disk does). */
  kill(): Promise<void>;
  /** Starts it again on the same port. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** A redis-server of this test's own, on a free port, persisting nothing. */
export async function startTestRedis(): Promise<TestRedis> {
  const port = await freePort();
  let proc: SpawnedProcess | null = null;
  const start = async () => {
    proc = spawnGroup('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], process.env);
    for (let i = 0; i < 100; i++) {
      if (proc.output().includes('Ready to accept connections')) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`redis-server did not start on port ${port}: ${proc.output()}`);
  };
  await start();
  const kill = async () => {
    if (proc) await proc.stop();
    proc = null;
  };
  return { url: `redis://127.0.0.1:${port}`, port, kill, start, stop: kill };
}

/**
 * A job spec whose result depends on every piece of state a resume must restore: augmentation
 * and dropout on the RNGs, adam on its moments, the step schedule on the epoch count. Tests that
 * kill a worker mid-job compare its model with an uninterrupted run's.
 */
export function resumeSensitiveSpec(datasetId: string, epochs: number) {
  return {
    datasetId,
    baseModel: 'small_cnn',
    strategy: 'scratch',
    hyperparameters: {
      epochs,
      batchSize: 16,
      optimizer: 'adam',
      learningRate: 0.002,
      lrSchedule: { type: 'step', stepSize: 2, gamma: 0.5 },
      augmentation: { rotationDegrees: 10, zoom: 0.1 },
      head: { hiddenUnits: [32], dropout: 0.2 },
      validationSplit: 0.2,
      seed: 5,
    },
  };
}

