// Why a run should stop, checked between batches without waiting on I/O: the flags are kept
// current by a one-second poll of the job row and by the parent's IPC messages.
import type { JobsRepository } from '@finetune/db';

export type StopCause = 'lease_lost' | 'handover' | 'canceled' | 'max_runtime';

const POLL_MS = 1_000;

export class RunControl {
  private cause: StopCause | null = null;
  private polling: Promise<void> | null = null;
  private readonly timer: NodeJS.Timeout;
  private readonly startedAt = Date.now();

  /**
   * @param elapsedBeforeMs training time earlier runs of the job spent (from the checkpoint)
   * @param maxRuntimeMs the job's budget across all its runs
   */
  constructor(
    private readonly jobs: JobsRepository,
    private readonly jobId: string,
    private readonly lease: string,
    private readonly elapsedBeforeMs: number,
    private readonly maxRuntimeMs: number,
  ) {
    this.timer = setInterval(() => void this.poll(), POLL_MS);
  }

  /** Reads the job row now (it is also read every second). One read at a time: Postgres may be slow. */
  poll(): Promise<void> {
    this.polling ??= this.jobs
      .runControl(this.jobId, this.lease)
      .then(
        (control) => {
          if (!control.ownsJob) this.stop('lease_lost');
          else if (control.cancelRequested) this.stop('canceled');
        },
        () => undefined, // a missed poll is retried a second later
      )
      .finally(() => (this.polling = null));
    return this.polling;
  }

  /** The first cause wins: a run that lost its lease must not then report a cancel. */
  stop(cause: StopCause): void {
    this.cause ??= cause;
  }

  /** Training time of the job so far, this run included. */
  elapsedMs(): number {
    return this.elapsedBeforeMs + (Date.now() - this.startedAt);
  }

  /** A method, not a getter: the answer changes while a caller waits on training. */
  stopCause(): StopCause | null {
    if (!this.cause && this.elapsedMs() >= this.maxRuntimeMs) this.cause = 'max_runtime';
    return this.cause;
  }

  shouldStop = (): boolean => this.stopCause() !== null;

  dispose(): void {
    clearInterval(this.timer);
  }
}
