import type { ChildProcess } from 'node:child_process';
import type { ChildMessage, ParentMessage } from '../training/messages.ts';

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
 * base already loaded, so a job's run does not wait for a process to start.
 *
 * A child that ran a head-only job cleanly (child-reuse.ts) says it is ready again: it becomes
 * the warm child (`reclaim`), and no process starts for the next job. Any other child exits after
 * its run — a wasm abort or a grown heap never reaches another job — and its replacement starts
 * warming when its job is taken (a long run hides the warm-up) or, when the child was expected
 * back, at once when it exits instead. Forking beside a short run
 * would not hide anything: a child's start-up takes a core for 2–3 s, longer than a cached rerun.
 *
 * The warm child is listed in `active` (the worker's shutdown asks every listed child to stop;
 * an idle one exits at once), and it exits by itself when its parent goes. A child is forked
 * with the worker's environment of that moment, and its runs read their configuration from it:
 * one forked before the environment changed is discarded, never given a job.
 */
export class WarmChildren {
  private warm: TrainingChild | null = null;
  /** The worker's environment each child was forked with. */
  private readonly envs = new WeakMap<ChildProcess, string>();
  /** Runs each child has been given. */
  private readonly runs = new WeakMap<ChildProcess, number>();

  constructor(
    private readonly fork: ForkChild,
    private readonly active: Set<ChildProcess>,
    private readonly closing: () => boolean,
    /** TRAINING_CHILD_MAX_RUNS: a child given this many runs exits after the last. */
    private readonly maxRuns: number,
  ) {}

  /** Starts a warm child now unless there is one (or the worker is closing). */
  prestart(baseHint: string | null): void {
    if (this.warm || this.closing()) return;
    this.warm = this.start(baseHint);
  }

  /**
   * A ready-to-be child for one job, which the caller owns until it gives it back (`reclaim`).
   * `headOnly`: the job trains a head only, so its child is expected back (unless this is its
   * last run) and no replacement starts.
   */
  take(baseHint: string | null, headOnly: boolean): TrainingChild {
    let taken = this.warm;
    this.warm = null;
    if (taken && (this.envs.get(taken.child) !== environment() || !alive(taken.child))) {
      taken.child.kill('SIGKILL');
      taken = null;
    }
    const child = taken ?? this.start(baseHint);
    const runs = (this.runs.get(child.child) ?? 0) + 1;
    this.runs.set(child.child, runs);
    // After the caller has handed the taken child its job (a microtask on its ready promise):
    // forking is synchronous and takes tens of milliseconds the job need not wait for.
    if (!headOnly || runs >= this.maxRuns) setImmediate(() => this.prestart(baseHint));
    return child;
  }

  /**
   * Called once the child's run has ended: a child ready again becomes the warm one (or stops,
   * if there is one already); a child that exits is replaced.
   */
  reclaim(child: ChildProcess, baseHint: string | null): void {
    if (!alive(child)) return this.prestart(baseHint);
    const onMessage = (message: ChildMessage) => {
      if (message.type !== 'ready') return;
      child.off('message', onMessage);
      child.off('exit', onExit);
      if (this.warm || this.closing() || this.envs.get(child) !== environment()) child.send({ type: 'stop' } satisfies ParentMessage);
      else this.warm = { child, ready: Promise.resolve(true) };
    };
    const onExit = () => {
      child.off('message', onMessage);
      this.prestart(baseHint);
    };
    child.on('message', onMessage);
    child.once('exit', onExit);
  }

  private start(baseHint: string | null): TrainingChild {
    const child = this.fork(['--warm', baseHint ?? '-', TITLE_ROOM]);
    this.envs.set(child, environment());
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
    return { child, ready };
  }
}

function alive(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null && child.connected;
}

function environment(): string {
  return JSON.stringify(Object.entries(process.env).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
