// Reads a text/event-stream response body as Server-Sent Events. Parsing is eventsource-parser's
// (field rules, multi-line data, comments, `retry:`); this adds the byte loop and a stall check:
// a connection a proxy silently dropped would otherwise wait forever, so no bytes at all (not
// even a `: ping` heartbeat) for `idleMs` ends the stream with an error and the caller reconnects.
import { createParser, type EventSourceMessage } from 'eventsource-parser';

export type { EventSourceMessage };

/** The stream broke off: the connection dropped, or stalled (see `idleMs`). Reconnect. */
export class StreamInterrupted extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'StreamInterrupted';
  }
}

export interface SseOptions {
  idleMs: number;
  /** The server's `retry:` field: how long to wait before reconnecting. */
  onRetry?: (ms: number) => void;
}

export async function* readEvents(body: ReadableStream<Uint8Array>, { idleMs, onRetry }: SseOptions): AsyncGenerator<EventSourceMessage> {
  const queue: EventSourceMessage[] = [];
  const parser = createParser({ onEvent: (event) => queue.push(event), onRetry });
  const decoder = new TextDecoder();
  const reader = body.getReader();
  try {
    for (;;) {
      const { done, value } = await readWithin(reader, idleMs);
      if (done) break;
      parser.feed(decoder.decode(value, { stream: true }));
      while (queue.length > 0) yield queue.shift()!;
    }
  } finally {
    // Ends the connection too when the consumer stops early (a `done` event, an error).
    await reader.cancel().catch(() => undefined);
  }
}

async function readWithin(reader: ReadableStreamDefaultReader<Uint8Array>, idleMs: number) {
  let timer: NodeJS.Timeout | undefined;
  const stalled = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new StreamInterrupted(`no data (not even a heartbeat) for ${Math.round(idleMs / 1000)} s`)), idleMs);
  });
  try {
    return await Promise.race([reader.read(), stalled]);
  } catch (error) {
    if (error instanceof StreamInterrupted) throw error;
    // fetch reports a reset connection mid-body as a TypeError ("terminated").
    throw new StreamInterrupted(error instanceof Error ? error.message : String(error), { cause: error });
  } finally {
    clearTimeout(timer);
  }
}
