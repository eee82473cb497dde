/** One entry of a problem's machine-readable `errors` list. */
export interface Violation {
  /** Position of the event in a batch request; absent for single events and non-event input. */
  index?: number;
  /** Attribute, header or field that is wrong (`source`, `ce-time`, `delivery.retry.maxAttempts`…). */
  attribute?: string;
  message: string;
}

/** At most this many violations go into a problem's `errors`; the rest are counted in `totalErrors`. */
export const MAX_PROBLEM_ERRORS = 100;

export const errorStatus = {
  invalid_event: 400,
  invalid_request: 400,
  sink_not_allowed: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  method_not_allowed: 405,
  request_timeout: 408,
  conflict: 409,
  payload_too_large: 413,
  unsupported_media_type: 415,
  unavailable: 503,
  storage_full: 503,
  internal: 500,
  corrupt_record: 500,
  not_implemented: 501,
  http_version_not_supported: 505,
} as const;

export type ErrorCode = keyof typeof errorStatus;

export const errorTitle: Record<ErrorCode, string> = {
  invalid_event: 'Invalid CloudEvent',
  invalid_request: 'Invalid request',
  sink_not_allowed: 'Sink not allowed',
  unauthorized: 'Unauthorized',
  forbidden: 'Forbidden',
  not_found: 'Not found',
  method_not_allowed: 'Method not allowed',
  request_timeout: 'Request timeout',
  conflict: 'Conflict',
  payload_too_large: 'Payload too large',
  unsupported_media_type: 'Unsupported media type',
  unavailable: 'Service unavailable',
  storage_full: 'Storage full',
  internal: 'Internal server error',
  corrupt_record: 'Corrupt record',
  not_implemented: 'Not implemented',
  http_version_not_supported: 'HTTP version not supported',
};

/**
 * The one error type the gateway raises on purpose. `api/` maps it to an
 * RFC 9457 problem; anything else reaching the API is an opaque 500.
 */
export class AppError extends Error {
  readonly code: ErrorCode;
  readonly details: Violation[];
  /** How many violations were found, when `details` holds only some of them (a long batch). */
  readonly totalErrors: number;
  /** Seconds, sent as `Retry-After` (503s from a failing disk). */
  readonly retryAfter?: number;
  readonly headers?: Record<string, string>;

  constructor(
    code: ErrorCode,
    message: string,
    opts: { details?: Violation[]; totalErrors?: number; cause?: unknown; retryAfter?: number; headers?: Record<string, string> } = {},
  ) {
    super(message, { cause: opts.cause });
    this.name = 'AppError';
    this.code = code;
    this.details = opts.details ?? [];
    this.totalErrors = Math.max(opts.totalErrors ?? 0, this.details.length);
    this.retryAfter = opts.retryAfter;
    this.headers = opts.headers;
  }

  get status(): number {
    return errorStatus[this.code];
  }
}

export function isAppError(err: unknown): err is AppError {
  return err instanceof AppError;
}

/**
 * SQLite errors that are the database's state, not a bug, as a 503 with Retry-After (nothing was
 * changed: the statement or its transaction failed whole):
 * - "database is locked" (`SQLITE_BUSY*`: another process holds the write lock past the busy timeout,
 *   an operator's shell, a backup): `unavailable`;
 * - "database or disk is full" (`SQLITE_FULL`): `storage_full`;
 * - an I/O error (`SQLITE_IOERR*`: a failing disk): `unavailable`.
 */
export function fromDatabaseError(err: unknown): AppError | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code !== 'string') return undefined;
  if (isDatabaseBusy(err))
    return new AppError('unavailable', 'the database is locked by another connection; nothing was changed, try again', {
      cause: err,
      retryAfter: 1,
    });
  if (code === 'SQLITE_FULL')
    return new AppError('storage_full', 'the disk holding the database is full; nothing was changed, try again once space is freed', {
      cause: err,
      retryAfter: 5,
    });
  if (code.startsWith('SQLITE_IOERR'))
    return new AppError('unavailable', 'the database could not be written (an I/O error); nothing was changed, try again', {
      cause: err,
      retryAfter: 5,
    });
  return undefined;
}

/** An `AppError` that says "not now, retry" (503 `unavailable`): a file or a cluster that cannot be reached for a while. */
export function isUnavailable(err: unknown): boolean {
  return err instanceof AppError && err.code === 'unavailable';
}

/** SQLite's "database is locked" (`SQLITE_BUSY*`): another connection holds the write lock past the busy timeout. */
export function isDatabaseBusy(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && code.startsWith('SQLITE_BUSY');
}

/** {@link isDatabaseBusy}, or `SQLITE_LOCKED*`: another connection holds what a call needs. */
export function isLockHeld(err: unknown): boolean {
  return isDatabaseBusy(err) || String((err as { code?: unknown } | undefined)?.code).startsWith('SQLITE_LOCKED');
}

/** Turns anything thrown into an Error without losing it (for logs and `cause`). */
export function coerceError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/**
 * The gateway cannot start on this configuration or data dir. `main` prints its
 * message as one line and exits 2: the operator must act, a restart loop won't help.
 * `retryable`: a cluster that is reachable but not answering yet (a leader election): the
 * JetStream gateway asks again for a while before giving up with it.
 */
export class StartupError extends Error {
  override name = 'StartupError';
  readonly retryable: boolean;
  constructor(message: string, opts: { retryable?: boolean } = {}) {
    super(message);
    this.retryable = opts.retryable ?? false;
  }
}

/** A database a newer Herald migrated (`migration`: its first migration this version does not have). */
export class NewerSchemaError extends StartupError {
  override name = 'NewerSchemaError';
  constructor(
    message: string,
    readonly migration: string,
  ) {
    super(message);
  }
}
