// Domain errors carry a stable `code` (clients branch on it) and the HTTP status the API maps
// them to. Everything else that reaches the API's error handler is a 500 with a generic body.
export class DomainError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status: number = 400,
    /** Extra members of the problem+json body, for clients to act on (a quota's usage and limit…). */
    readonly extensions: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'DomainError';
  }
}

export class NotFoundError extends DomainError {
  constructor(what: string, id: string) {
    super(`${what}_not_found`, `${what} ${id} does not exist`, 404);
  }
}

/** A dataset archive that cannot be used: bad zip, hostile entry names, too few classes… */
export class DatasetError extends DomainError {
  constructor(code: string, message: string) {
    super(code, message, 422);
  }
}

export function isDomainError(error: unknown): error is DomainError {
  return error instanceof DomainError;
}
