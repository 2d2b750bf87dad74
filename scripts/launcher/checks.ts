// Start-up failures are reported as one line saying what failed and what to set or do, never as a
// stack trace: `npm start` is run by people who did not write it. Each step wraps its errors in a
// StartupError carrying that line; the launcher prints it and exits non-zero.
import { createServer } from 'node:net';
import { Redis } from 'ioredis';

export class StartupError extends Error {
  override name = 'StartupError';
}

/** An error's message on one line. Node's connect errors are often AggregateErrors with no message. */
export function describe(error: unknown): string {
  if (error instanceof AggregateError && !error.message) {
    return [...new Set(error.errors.map(describe))].join(', ');
  }
  if (error instanceof Error) {
    const code = (error as NodeJS.ErrnoException).code;
    const message = error.message || code || error.name;
    return message.replace(/\s*\n\s*/g, ' ').trim();
  }
  return String(error ?? 'unknown error');
}

/** Runs one start-up step; any failure becomes `<what>: <reason>; <hint>`. */
export async function step<T>(what: string, hint: string | undefined, run: () => Promise<T> | T): Promise<T> {
  try {
    return await run();
  } catch (error) {
    if (error instanceof StartupError) throw error;
    throw new StartupError(`${what}: ${describe(error)}${hint ? `; ${hint}` : ''}`, { cause: error });
  }
}

/** Fails, naming `variable`, when host:port cannot be listened on (taken, or privileged). */
export async function assertPortFree(host: string, port: number, variable: string): Promise<void> {
  if (port === 0) return;
  await new Promise<void>((resolve, reject) => {
    const server = createServer();
    server.once('error', (error: NodeJS.ErrnoException) => {
      const hint =
        error.code === 'EADDRINUSE'
          ? `another process is listening there: stop it or set ${variable} to a free port`
          : error.code === 'EACCES'
            ? `this user may not listen on it: set ${variable} to a port above 1023`
            : `set ${variable} (and HOST) to an address this machine can listen on`;
      reject(new StartupError(`cannot listen on ${host}:${port} (${error.code ?? describe(error)}): ${hint}`));
    });
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve()));
  });
}

/** Connects to Redis once (no retries), PINGs, disconnects. */
export async function pingRedis(url: string, timeoutMs = 5_000): Promise<void> {
  const redis = new Redis(url, {
    lazyConnect: true,
    connectTimeout: timeoutMs,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
  });
  // ioredis reports the cause (refused, WRONGPASS …) as 'error' events; connect() may only say
  // "Connection is closed", so the last event is what the message shows.
  let lastError: unknown;
  redis.on('error', (error) => (lastError = error));
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      redis.connect().then(() => redis.ping()),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer in ${timeoutMs / 1000} s`)), timeoutMs);
      }),
    ]);
  } catch (error) {
    throw lastError ?? error;
  } finally {
    clearTimeout(timer);
    redis.disconnect();
  }
}
