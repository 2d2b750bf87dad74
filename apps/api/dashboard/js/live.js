// Live job updates: GET /v1/jobs/:id/events (Server-Sent Events) read with fetch, since
// EventSource cannot send an Authorization header. A stream that breaks off is resumed from its
// last event id (Last-Event-ID) a few times; where the API has no such route (404
// route_not_found) or the stream keeps failing, the job and its metrics are polled every 2 s.
import { api, session } from './api.js';

export const FINISHED = new Set(['succeeded', 'failed', 'canceled']);
const POLL_MS = 2000;
const RECONNECTS = 3;

/** Splits an SSE byte stream into events: { event, data } (comments such as `: ping` dropped). */
async function* readEvents(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  signal.addEventListener('abort', () => reader.cancel().catch(() => {}), { once: true });
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    const blocks = buffer.split(/\r?\n\r?\n/);
    buffer = blocks.pop() ?? '';
    for (const block of blocks) {
      let event = 'message';
      let id;
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (line === '' || line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon === -1 ? line : line.slice(0, colon);
        const text = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') event = text;
        else if (field === 'data') data.push(text);
        else if (field === 'id') id = text;
      }
      if (data.length > 0) yield { id, event, data: data.join('\n') };
    }
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}

/**
 * Follows a job until it finishes or `stop()` is called. Handlers: onJob(job), onEpoch(row),
 * onProgress({epoch, epochs, batch, batches, loss, imagesPerSecond, etaSeconds}),
 * onMode('stream' | 'polling'), onError(error).
 */
export function watchJob(id, handlers) {
  const controller = new AbortController();
  const { signal } = controller;
  const call = (name, value) => handlers[name]?.(value);

  let lastEventId = null;

  /** One connection: true once `done` arrived, false if the stream is not there or ended early. */
  async function stream() {
    const res = await fetch(`/v1/jobs/${id}/events`, {
      headers: { authorization: `Bearer ${session.key}`, accept: 'text/event-stream', ...(lastEventId ? { 'last-event-id': lastEventId } : {}) },
      signal,
    });
    if (!res.ok || !(res.headers.get('content-type') ?? '').startsWith('text/event-stream')) {
      await res.body?.cancel();
      return null;
    }
    call('onMode', 'stream');
    for await (const { id: eventId, event, data } of readEvents(res.body, signal)) {
      if (eventId) lastEventId = eventId;
      const payload = JSON.parse(data);
      if (event === 'status') call('onJob', payload.job ?? payload);
      else if (event === 'progress') call('onProgress', payload);
      else if (event === 'epoch') call('onEpoch', payload);
      else if (event === 'done') {
        call('onJob', payload.job ?? payload);
        return true;
      }
    }
    return false; // ended without `done`: reconnect
  }

  async function poll() {
    call('onMode', 'polling');
    while (!signal.aborted) {
      const [job, metrics] = await Promise.all([api('GET', `/v1/jobs/${id}`, { signal }), api('GET', `/v1/jobs/${id}/metrics`, { signal })]);
      for (const row of metrics.items) call('onEpoch', row);
      call('onJob', job);
      if (FINISHED.has(job.status)) return;
      await sleep(POLL_MS, signal);
    }
  }

  (async () => {
    try {
      for (let attempt = 0; attempt <= RECONNECTS && !signal.aborted; attempt++) {
        let finished;
        try {
          finished = await stream();
        } catch {
          // Broke off (network, a proxy's timeout): resumed below from the last event id.
          finished = false;
        }
        if (finished) return;
        if (finished === null) break; // no stream here: poll
        await sleep(1000, signal);
      }
      if (!signal.aborted) await poll();
    } catch (error) {
      if (!signal.aborted) call('onError', error);
    }
  })();
  return () => controller.abort();
}
