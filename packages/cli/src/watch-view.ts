// What `jobs watch` shows while a job runs, on stderr: a live bar on a terminal, plain lines
// (one per status change and per epoch) when stderr is a pipe or a log file.
import cliProgress from 'cli-progress';
import type { Job, MetricRow } from './api-types.ts';
import { duration, fixed, note, percent } from './output.ts';
import { interactive } from './progress.ts';

/** Where a running job stands, from SSE events or from polling GET /v1/jobs/:id. */
export interface Progress {
  epoch: number;
  epochs: number;
  batch?: number | undefined;
  batches?: number | undefined;
  loss?: number | null | undefined;
  accuracy?: number | null | undefined;
  etaSeconds?: number | null | undefined;
}

export interface WatchView {
  status(job: Job): void;
  progress(progress: Progress): void;
  epoch(row: MetricRow, epochs: number): void;
  /** A note that does not change the job (a reconnect, the polling fallback). */
  info(message: string): void;
  stop(): void;
}

export function createWatchView(jobId: string): WatchView {
  return interactive() ? new TerminalView(jobId) : new LineView(jobId);
}

export function epochLine(row: MetricRow, epochs: number): string {
  const parts = [`epoch ${row.epoch}/${epochs}`, `loss ${fixed(row.trainLoss)}`, `acc ${percent(row.trainAccuracy)}`];
  if (row.valLoss !== null || row.valAccuracy !== null) parts.push(`val_loss ${fixed(row.valLoss)}`, `val_acc ${percent(row.valAccuracy)}`);
  if (row.durationMs !== null) parts.push(duration(row.durationMs / 1000));
  return parts.join('  ');
}

function statusLine(jobId: string, job: Job): string {
  const extra = job.error
    ? ` (${job.error.code}: ${job.error.message})`
    : job.stopReason && job.stopReason !== job.status
      ? ` (${job.stopReason})`
      : '';
  return `job ${jobId}: ${job.status}${extra}`;
}

class LineView implements WatchView {
  #lastStatus: string | undefined;

  constructor(private readonly jobId: string) {}

  status(job: Job): void {
    if (job.status === this.#lastStatus) return;
    this.#lastStatus = job.status;
    note(statusLine(this.jobId, job));
  }

  progress(): void {
    // Batch-level updates would flood a log; the epoch lines say enough.
  }

  epoch(row: MetricRow, epochs: number): void {
    note(epochLine(row, epochs));
  }

  info(message: string): void {
    note(message);
  }

  stop(): void {}
}

class TerminalView implements WatchView {
  readonly #bars: cliProgress.MultiBar;
  readonly #bar: cliProgress.SingleBar;
  #lastStatus: string | undefined;
  #state: Progress & { status: string } = { epoch: 0, epochs: 0, status: 'queued' };
  readonly #onSigint = () => {
    // cli-progress hides the cursor while drawing: give it back before the shell does its thing.
    this.stop();
    process.exit(130);
  };

  constructor(private readonly jobId: string) {
    this.#bars = new cliProgress.MultiBar(
      {
        stream: process.stderr,
        // Fits 80 columns for everyday sizes; the state is only named when it is not `running`.
        format: '{status}|{bar}| {pct} epoch {epoch} batch {batch} loss {loss} acc {acc} ETA {remaining}',
        hideCursor: true,
        barsize: 20,
        fps: 10,
        clearOnComplete: false,
      },
      cliProgress.Presets.shades_classic,
    );
    this.#bar = this.#bars.create(1000, 0, this.#payload());
    process.once('SIGINT', this.#onSigint);
  }

  status(job: Job): void {
    this.#state.status = job.status;
    if (job.progress && job.progress.epochs > 0) {
      this.#state.epochs = job.progress.epochs;
      this.#state.epoch = Math.max(this.#state.epoch, job.progress.epoch);
    }
    if (job.status !== this.#lastStatus) {
      this.#lastStatus = job.status;
      this.#bars.log(`${statusLine(this.jobId, job)}\n`);
    }
    this.#draw();
  }

  progress(progress: Progress): void {
    Object.assign(this.#state, Object.fromEntries(Object.entries(progress).filter(([, v]) => v !== undefined)));
    this.#draw();
  }

  epoch(row: MetricRow, epochs: number): void {
    this.#state.accuracy = row.valAccuracy ?? row.trainAccuracy;
    this.#state.loss = row.trainLoss;
    this.#state.epoch = row.epoch;
    this.#state.epochs = epochs || this.#state.epochs;
    this.#bars.log(`${epochLine(row, this.#state.epochs)}\n`);
    this.#draw();
  }

  info(message: string): void {
    this.#bars.log(`${message}\n`);
  }

  stop(): void {
    process.off('SIGINT', this.#onSigint);
    // MultiBar writes logged lines on its next redraw, and stop() does not redraw: flush first.
    this.#bars.update();
    this.#bars.stop();
  }

  #fraction(): number {
    const { epoch, epochs, batch, batches } = this.#state;
    if (epochs <= 0) return 0;
    // During an epoch `epoch` is the one running; between epochs it is the last one finished.
    const within = batch !== undefined && batches ? (epoch - 1 + batch / batches) / epochs : epoch / epochs;
    return Math.min(Math.max(within, 0), 1);
  }

  #payload() {
    const s = this.#state;
    return {
      status: s.status === 'running' ? '' : `${s.status} `,
      pct: `${(this.#fraction() * 100).toFixed(0).padStart(3)}%`,
      epoch: s.epochs ? `${s.epoch}/${s.epochs}` : '-',
      batch: s.batch !== undefined && s.batches ? `${s.batch}/${s.batches}` : '-',
      loss: fixed(s.loss),
      acc: percent(s.accuracy),
      // Not `eta`: cli-progress fills that one itself from the bar's own rate.
      remaining: duration(s.etaSeconds),
    };
  }

  #draw(): void {
    this.#bar.update(Math.round(this.#fraction() * 1000), this.#payload());
  }
}
