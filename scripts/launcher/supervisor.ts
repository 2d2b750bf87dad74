// Keeps one child process running: when it dies (crash, OOM-kill, kill -9) it is started again
// after a delay that doubles with each quick death (1 s, 2 s, 4 s … capped at 30 s), so a child
// that crashes on start-up cannot spin the CPU. A child that stayed up for a while (60 s) counts
// as healthy again: its next death restarts it after the initial delay.
//
// Hand-written rather than a library: the npm candidates (respawn, forever-monitor) are
// unmaintained and pull in ps-tree/chokidar, and this is all we need.
import type { ChildProcess } from 'node:child_process';

export interface SupervisorOptions {
  /** Names the child in log lines, e.g. `worker`. */
  name: string;
  /** Starts one instance of the child. Called again for every restart. */
  spawn: () => ChildProcess;
  log: (line: string) => void;
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** Uptime after which a death no longer counts as "crashing again": the backoff resets. */
  resetAfterMs?: number;
  /** On stop, a child still running this long after the signal is killed. */
  killAfterMs?: number;
}

export class Supervisor {
  private child: ChildProcess | undefined;
  private startedAt = 0;
  private quickDeaths = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  private stopping = false;
  private readonly initialDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly resetAfterMs: number;
  private readonly killAfterMs: number;

  constructor(private readonly options: SupervisorOptions) {
    this.initialDelayMs = options.initialDelayMs ?? 1_000;
    this.maxDelayMs = options.maxDelayMs ?? 30_000;
    this.resetAfterMs = options.resetAfterMs ?? 60_000;
    this.killAfterMs = options.killAfterMs ?? 30_000;
  }

  start(): void {
    if (this.stopping) return;
    const child = this.options.spawn();
    this.child = child;
    this.startedAt = Date.now();
    this.options.log(`started ${this.options.name} (pid ${child.pid})`);
    // A failed spawn (e.g. ENOENT) emits 'error' and maybe no 'exit': treat both as a death, once.
    let seen = false;
    const died = (why: string) => {
      if (seen) return;
      seen = true;
      this.died(child, why);
    };
    child.once('exit', (code, signal) => died(signal ? `was killed by ${signal}` : `exited with code ${code}`));
    child.once('error', (error) => died(`failed: ${error.message}`));
  }

  private died(child: ChildProcess, why: string): void {
    if (child !== this.child) return;
    this.child = undefined;
    if (this.stopping) return;
    const uptimeMs = Date.now() - this.startedAt;
    if (uptimeMs >= this.resetAfterMs) this.quickDeaths = 0;
    const delayMs = Math.min(this.maxDelayMs, this.initialDelayMs * 2 ** this.quickDeaths);
    this.quickDeaths += 1;
    const at = new Date(Date.now() + delayMs).toISOString();
    this.options.log(
      `${this.options.name} (pid ${child.pid}) ${why} after ${seconds(uptimeMs)} s up; restarting it in ${seconds(delayMs)} s (at ${at})`,
    );
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      this.start();
    }, delayMs);
  }

  /** Stops the child (signal, then SIGKILL after killAfterMs) and cancels any pending restart. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill(signal);
    const killer = setTimeout(() => {
      const waited = seconds(this.killAfterMs);
      this.options.log(`${this.options.name} (pid ${child.pid}) did not exit ${waited} s after ${signal}, killing it`);
      child.kill('SIGKILL');
    }, this.killAfterMs);
    await exited;
    clearTimeout(killer);
  }
}

function seconds(ms: number): string {
  return String(Math.round(ms / 100) / 10);
}
