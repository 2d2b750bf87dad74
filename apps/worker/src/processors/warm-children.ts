import type { ChildProcess } from 'node:child_process';
import type { ChildMessage } from '../training/messages.ts';

/** A training child and whether it got ready (false: it exited first). */
export interface TrainingChild {
  child: ChildProcess;
  ready: Promise<boolean>;
}

/** Forks a training child with these arguments (see child.ts: `--warm <base hint> <title room>`). */
export type ForkChild = (args: string[]) => ChildProcess;

// Room in the child's argv for the process title it takes when it gets its job (child.ts): on
// Linux a title can only overwrite the memory the original arguments occupy.
const TITLE_ROOM = '.'.repeat(96);

/**
 * Keeps one training child warm: forked ahead of need, its modules, tfjs backend and expected
 * base already loaded, so a job's run does not wait for a process to start. Each child still
 * runs one job only (a wasm abort or a leak never reaches the next job); when the warm one is
 * taken, the next starts warming at once, told which base the job just taken uses.
 *
 * The warm child is listed in `active` (the worker's shutdown asks every listed child to stop;
 * an idle one exits at once), and it exits by itself when its parent goes. A child is forked
 * with the worker's environment of that moment, and the run reads its configuration from it: one
 * forked before the environment changed is discarded, never given a job.
 */
export class WarmChildren {
  private warm: (TrainingChild & { env: string }) | null = null;

  constructor(
    private readonly fork: ForkChild,
    private readonly active: Set<ChildProcess>,
    private readonly closing: () => boolean,
  ) {}

  /** Starts a warm child now unless there is one (or the worker is closing). */
  prestart(baseHint: string | null): void {
    if (this.warm || this.closing()) return;
    this.warm = this.start(baseHint);
  }

  /** A ready-to-be child for one job, which the caller owns from now on; a replacement starts warming. */
  take(baseHint: string | null): TrainingChild {
    let taken = this.warm;
    this.warm = null;
    if (taken && (taken.env !== environment() || taken.child.exitCode !== null || taken.child.signalCode !== null || !taken.child.connected)) {
      taken.child.kill('SIGKILL');
      taken = null;
    }
    const child = taken ?? this.start(baseHint);
    // After the caller has handed the taken child its job (a microtask on its ready promise):
    // forking is synchronous and takes tens of milliseconds the job need not wait for.
    setImmediate(() => this.prestart(baseHint));
    return child;
  }

  private start(baseHint: string | null): TrainingChild & { env: string } {
    const env = environment();
    const child = this.fork(['--warm', baseHint ?? '-', TITLE_ROOM]);
    this.active.add(child);
    // A message to a child that has just exited (shutdown's stop) is an 'error' event: not a crash.
    child.on('error', () => undefined);
    const ready = new Promise<boolean>((resolve) => {
      const onMessage = (message: ChildMessage) => {
        if (message.type !== 'ready') return;
        child.off('message', onMessage);
        resolve(true);
      };
      child.on('message', onMessage);
      child.once('exit', () => resolve(false));
    });
    child.once('exit', () => {
      this.active.delete(child);
      if (this.warm?.child === child) this.warm = null;
    });
    return { child, ready, env };
  }
}

function environment(): string {
  return JSON.stringify(Object.entries(process.env).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
