// Which failures are worth retrying. A job attempt is retried only for these; everything else
// (bad data, an impossible spec, a deterministic backend abort, a bug) fails the same way every
// time and ends the job at once with a reason.
import pRetry from 'p-retry';

// Node's socket-level failures: the peer is down, restarting or unreachable for now.
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
]);

// Prisma's codes for "cannot reach / lost the database", pool exhaustion (P2024) and a transaction
// that could not start in time (P2028: every connection busy, as under heavy load).
const PRISMA_TRANSIENT = new Set(['P1001', 'P1002', 'P1008', 'P1017', 'P2024', 'P2028', 'P2034']);
// Postgres SQLSTATE classes 08 (connection) and 57P (operator intervention: shutdown, restart),
// and 40001/40P01 (serialization failure, deadlock): the same statement can succeed later.
const PG_TRANSIENT = /^(08|57P|40001|40P01|53300)/;

const MESSAGE_PATTERNS = [
  /socket hang up/i,
  /connection (terminated|closed|reset|refused)/i,
  /Connection terminated unexpectedly/i,
  /Can't reach database server/i,
  /Client has encountered a connection error/i,
  /timed out/i,
  /Stream isn't writeable/i,
  /Unable to start a transaction in the given time/i,
];

interface ErrorLike {
  name?: string;
  code?: unknown;
  errno?: unknown;
  message?: string;
  cause?: unknown;
  $retryable?: unknown;
  $metadata?: { httpStatusCode?: number };
  errors?: unknown[];
}

/** True for failures of a dependency (S3, Postgres, Redis, the network) that may pass. */
export function isTransientError(error: unknown, depth = 0): boolean {
  if (!error || typeof error !== 'object' || depth > 5) return false;
  const e = error as ErrorLike;
  const code = typeof e.code === 'string' ? e.code : undefined;
  if (code && (NETWORK_CODES.has(code) || PRISMA_TRANSIENT.has(code) || PG_TRANSIENT.test(code))) return true;
  // AWS SDK v3: throttling and 5xx answers are marked retryable; so are its timeouts.
  if (e.$retryable) return true;
  const status = e.$metadata?.httpStatusCode;
  if (status !== undefined && (status >= 500 || status === 429)) return true;
  if (e.name === 'TimeoutError' || e.name === 'RequestTimeout') return true;
  if (e.message && MESSAGE_PATTERNS.some((p) => p.test(e.message!))) return true;
  if (Array.isArray(e.errors) && e.errors.some((inner) => isTransientError(inner, depth + 1))) return true;
  return isTransientError(e.cause, depth + 1);
}

export interface RetryOptions {
  /** Give up once this long has passed since the first failure. */
  maxRetryTimeMs: number;
  /** Called before each wait: for a log line. */
  onRetry?: (error: unknown, attempt: number) => void;
  signal?: AbortSignal;
}

/**
 * Runs `fn`, retrying transient failures with exponential backoff (0.5 s doubling to 10 s,
 * jittered) until `maxRetryTimeMs` has passed; any other error is thrown at once.
 */
export function retryTransient<T>(fn: () => Promise<T>, options: RetryOptions): Promise<T> {
  return pRetry(fn, {
    retries: Number.POSITIVE_INFINITY,
    minTimeout: 500,
    maxTimeout: 10_000,
    factor: 2,
    randomize: true,
    maxRetryTime: options.maxRetryTimeMs,
    signal: options.signal,
    shouldRetry: ({ error }) => isTransientError(error),
    onFailedAttempt: ({ error, attemptNumber }) => {
      if (isTransientError(error)) options.onRetry?.(error, attemptNumber);
    },
  });
}
