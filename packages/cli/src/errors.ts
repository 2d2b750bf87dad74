// Every way the CLI can fail ends in one of these exit codes, so scripts can tell "fix your
// command" from "retry later" from "the job itself failed" without parsing stderr.

export const EXIT = {
  ok: 0,
  /** A bug in the CLI or an answer it cannot understand from a server it reached. */
  internal: 1,
  /** Bad arguments or options, an unreadable local file. */
  usage: 2,
  /** 404: the dataset, job, model (or route) does not exist for this key's tenant. */
  notFound: 3,
  /** 401, or 403 other than a quota: no key, a revoked key, a member key on an admin call. */
  auth: 4,
  /** 429 (rate limit or the concurrent-jobs quota), and 403 `quota_exceeded`. Retry later or free room. */
  limited: 5,
  /** Any other 4xx: the server refused the request as sent (validation, conflicts, bad zip). */
  clientError: 6,
  /** 5xx, connection refused, DNS failure, a connection that dropped. */
  server: 7,
  /** `jobs watch` / `jobs create --watch`: the job ended `failed` or `canceled`. */
  jobFailed: 8,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** An RFC 9457 problem as the API sends it; `code` is the stable part. */
export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  code?: string;
  [extension: string]: unknown;
}

/** A failure with the exit code it maps to; `message` is what goes to stderr. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCode,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

export class UsageError extends CliError {
  constructor(message: string) {
    super(message, EXIT.usage);
    this.name = 'UsageError';
  }
}

/** The API answered with an error status. */
export class ApiError extends CliError {
  constructor(
    readonly status: number,
    readonly problem: Problem,
    hint?: string,
  ) {
    super(describeProblem(status, problem) + (hint ? `\n${hint}` : ''), exitCodeForStatus(status, problem.code));
    this.name = 'ApiError';
  }
}

/** The API could not be reached, or the connection broke before an answer arrived. */
export class NetworkError extends CliError {
  constructor(url: string, cause: unknown) {
    super(`request to ${url} failed: ${networkReason(cause)}`, EXIT.server);
    this.name = 'NetworkError';
  }
}

export function exitCodeForStatus(status: number, code: string | undefined): ExitCode {
  if (status === 404) return EXIT.notFound;
  if (status === 429 || code === 'quota_exceeded') return EXIT.limited;
  if (status === 401 || status === 403) return EXIT.auth;
  if (status >= 400 && status < 500) return EXIT.clientError;
  return EXIT.server;
}

function describeProblem(status: number, problem: Problem): string {
  const title = problem.title ?? `HTTP ${status}`;
  const parts = [`${title} (${status}${problem.code ? ` ${problem.code}` : ''})`];
  if (problem.detail) parts.push(problem.detail);
  // Quota problems name the quota, its usage and its limit: the part a user acts on.
  if (problem.code === 'quota_exceeded' && problem.quota !== undefined) {
    parts.push(`quota ${String(problem.quota)}: ${String(problem.usage)} of ${String(problem.limit)}`);
  }
  return parts.join(': ');
}

/** fetch() wraps the socket error in `cause`; the useful words are there (ECONNREFUSED, ENOTFOUND). */
function networkReason(error: unknown): string {
  const seen = new Set<unknown>();
  let current: unknown = error;
  let reason = error instanceof Error ? error.message : String(error);
  while (current instanceof Error && !seen.has(current)) {
    seen.add(current);
    const code = (current as Error & { code?: unknown }).code;
    if (typeof code === 'string') return `${code} (${current.message})`;
    reason = current.message || reason;
    current = current.cause;
  }
  return reason;
}
