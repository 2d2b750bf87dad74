// `jobs watch`: follows a job until it ends, from Server-Sent Events on GET /v1/jobs/:id/events,
// reconnecting with Last-Event-ID when the stream breaks. A server without that route (it answers
// 404 `route_not_found`) is followed by polling GET /v1/jobs/:id every 2 s instead.
import { isFinal, type Job, type MetricRow, type Page, type ProgressEvent } from './api-types.ts';
import type { ApiClient } from './client.ts';
import { ApiError, CliError, NetworkError } from './errors.ts';
import { readEvents, StreamInterrupted, type EventSourceMessage } from './sse.ts';
import type { WatchView } from './watch-view.ts';

export interface WatchTiming {
  pollIntervalMs: number;
  /** A stream silent for this long (no event, no heartbeat) is dropped and reopened. */
  idleMs: number;
  /** Transient failures (network, 5xx, 429) are retried for this long in a row, then reported. */
  giveUpAfterMs: number;
}

export const DEFAULT_TIMING: WatchTiming = { pollIntervalMs: 2_000, idleMs: 60_000, giveUpAfterMs: 120_000 };

/** Resolves with the job as it ended (succeeded, failed or canceled). */
export async function watchJob(client: ApiClient, jobId: string, view: WatchView, timing = DEFAULT_TIMING): Promise<Job> {
  const stream = await followEvents(client, jobId, view, timing);
  if (stream !== 'no_event_route') return stream;
  view.info(`(the server has no event stream: polling every ${timing.pollIntervalMs / 1000} s)`);
  return poll(client, jobId, view, timing);
}

async function followEvents(client: ApiClient, jobId: string, view: WatchView, timing: WatchTiming): Promise<Job | 'no_event_route'> {
  const retry = new TransientRetry(timing.giveUpAfterMs);
  let lastEventId: string | undefined;
  let reconnectMs = 1_000;
  let epochs = 0;
  let latest: Job | undefined;
  for (;;) {
    let response: Response;
    try {
      response = await client.request('GET', `/v1/jobs/${jobId}/events`, {
        headers: { accept: 'text/event-stream', ...(lastEventId === undefined ? {} : { 'last-event-id': lastEventId }) },
      });
    } catch (error) {
      if (error instanceof ApiError && error.status === 404 && error.problem.code === 'route_not_found') return 'no_event_route';
      await retry.after(error, view, 'the event stream');
      continue;
    }
    if (!response.headers.get('content-type')?.includes('text/event-stream') || !response.body) {
      // Something between us and the API answered instead (a proxy's page): polling still works.
      await response.body?.cancel();
      return 'no_event_route';
    }
    let received = 0;
    try {
      for await (const event of readEvents(response.body, { idleMs: timing.idleMs, onRetry: (ms) => (reconnectMs = ms) })) {
        received++;
        retry.reset();
        if (event.id !== undefined) lastEventId = event.id;
        const handled = handleEvent(event, view, epochs);
        if (!handled) continue;
        if (handled.epochs) epochs = handled.epochs;
        if (handled.job) latest = handled.job;
        if (handled.done) return handled.done;
      }
    } catch (error) {
      if (!(error instanceof StreamInterrupted)) throw error;
      view.info(`(event stream interrupted: ${error.message}; reconnecting)`);
    }
    // The stream ended without `done`: a restarted API, a proxy's timeout. Reconnect and resume
    // after the last event seen; a job already over needs no stream at all.
    if (latest && isFinal(latest.status)) return client.json<Job>('GET', `/v1/jobs/${jobId}`);
    // A server that keeps closing streams before saying anything counts as trouble, not progress.
    if (received === 0) {
      await retry.after(new NetworkError(client.baseUrl, new Error('the event stream closed without an event')), view, 'the event stream');
    } else {
      await sleep(reconnectMs);
    }
  }
}

interface Handled {
  job?: Job;
  epochs?: number;
  done?: Job;
}

function handleEvent(event: EventSourceMessage, view: WatchView, epochs: number): Handled | undefined {
  let data: unknown;
  try {
    data = JSON.parse(event.data);
  } catch {
    return undefined; // not ours to understand; the next status or done event carries the truth
  }
  if (!data || typeof data !== 'object') return undefined;
  switch (event.event) {
    case 'status': {
      const { job } = data as { status: string; job: Job };
      if (!job) return undefined;
      view.status(job);
      return { job, epochs: job.progress?.epochs };
    }
    case 'progress': {
      const p = data as ProgressEvent;
      view.progress({
        epoch: p.epoch,
        epochs: p.epochs,
        batch: p.batch,
        batches: p.batches,
        loss: p.loss,
        etaSeconds: p.etaSeconds,
      });
      return { epochs: p.epochs };
    }
    case 'epoch':
      view.epoch(data as MetricRow, epochs);
      return {};
    case 'done': {
      const job = data as Job;
      view.status(job);
      return { done: job };
    }
    default:
      return undefined;
  }
}

async function poll(client: ApiClient, jobId: string, view: WatchView, timing: WatchTiming): Promise<Job> {
  const retry = new TransientRetry(timing.giveUpAfterMs);
  let shownEpoch = 0;
  for (;;) {
    let job: Job;
    try {
      job = await client.json<Job>('GET', `/v1/jobs/${jobId}`);
      if (job.progress.epoch > shownEpoch) {
        const metrics = await client.json<Page<MetricRow>>('GET', `/v1/jobs/${jobId}/metrics`);
        for (const row of metrics.items.filter((r) => r.epoch > shownEpoch)) view.epoch(row, job.progress.epochs);
        shownEpoch = Math.max(shownEpoch, ...metrics.items.map((r) => r.epoch));
      }
      retry.reset();
    } catch (error) {
      await retry.after(error, view, 'the job');
      continue;
    }
    view.status(job);
    const last = job.metrics.last;
    view.progress({
      epoch: job.progress.epoch,
      epochs: job.progress.epochs,
      loss: last?.trainLoss,
      accuracy: last ? (last.valAccuracy ?? last.trainAccuracy) : undefined,
      etaSeconds: estimateEta(job),
    });
    if (isFinal(job.status)) return job;
    await sleep(timing.pollIntervalMs);
  }
}

/** Without batch-level events: time so far over the share of epochs done. */
function estimateEta(job: Job): number | undefined {
  const { epoch, epochs } = job.progress;
  if (!job.startedAt || epoch <= 0 || epochs <= 0 || job.status !== 'running') return undefined;
  const elapsed = (Date.now() - Date.parse(job.startedAt)) / 1000;
  return (elapsed / epoch) * (epochs - epoch);
}

/**
 * Rides out transient trouble — the API restarting, a 503, a 429 — for a while with backoff;
 * anything else (a 404, a bad key) and trouble that lasts are thrown to the caller.
 */
class TransientRetry {
  #since: number | undefined;
  #delayMs = 500;

  constructor(private readonly giveUpAfterMs: number) {}

  reset(): void {
    this.#since = undefined;
    this.#delayMs = 500;
  }

  async after(error: unknown, view: WatchView, what: string): Promise<void> {
    const transient = error instanceof NetworkError || (error instanceof ApiError && (error.status >= 500 || error.status === 429));
    if (!transient) throw error;
    this.#since ??= Date.now();
    if (Date.now() - this.#since > this.giveUpAfterMs) throw error;
    view.info(`(${what}: ${(error as CliError).message.split('\n')[0]}; retrying)`);
    await sleep(this.#delayMs);
    this.#delayMs = Math.min(this.#delayMs * 2, 10_000);
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
