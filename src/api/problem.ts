import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { AppError, ErrorCode, MAX_PROBLEM_ERRORS, Violation, errorTitle, fromDatabaseError, isAppError } from '../errors';

/** RFC 9457 problem details, plus Herald's machine-readable `errors` list (at most {@link MAX_PROBLEM_ERRORS}). */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: ErrorCode;
  errors: Violation[];
  /** Present, and `true`, when `errors` lists only the first violations found. */
  truncated?: true;
  /** How many violations there are in all; present with `truncated`. */
  totalErrors?: number;
}

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

export function problemType(code: ErrorCode): string {
  return `urn:herald:problem:${code}`;
}

/** Maps anything thrown to a problem. Unknown errors become an opaque 500 and are logged with their stack. */
export function toProblem(err: unknown, log: Logger): { problem: Problem; headers: Record<string, string> } {
  const appError = isAppError(err) ? err : (fromFrameworkError(err) ?? fromDatabaseError(err));
  if (!appError) {
    log.error({ err }, 'unhandled error');
    return { problem: build(new AppError('internal', 'an unexpected error occurred; it has been logged')), headers: {} };
  }
  const headers: Record<string, string> = { ...appError.headers };
  if (appError.retryAfter !== undefined) headers['retry-after'] = String(appError.retryAfter);
  return { problem: build(appError), headers };
}

function build(err: AppError): Problem {
  const errors = err.details.length > 0 ? err.details.slice(0, MAX_PROBLEM_ERRORS) : [{ message: err.message }];
  const problem: Problem = {
    type: problemType(err.code),
    title: errorTitle[err.code],
    status: err.status,
    detail: err.message,
    code: err.code,
    errors,
  };
  // The size of an answer must not grow with the size of the request that was wrong.
  if (err.totalErrors > errors.length) {
    problem.truncated = true;
    problem.totalErrors = err.totalErrors;
  }
  return problem;
}

/**
 * The router could not percent-decode a path parameter of `path`: a partition number is a bad request
 * (as `/partitions/abc` is); an id (`/deliveries/%zz/ack`, `/subscriptions/%zz`) names nothing, a 404.
 */
export function undecodablePath(path: string): AppError {
  const what = 'a path segment is not valid percent-encoding';
  if (path.startsWith('/partitions/')) {
    return new AppError('invalid_request', `the partition must be an integer: ${what}`, {
      details: [{ attribute: 'partition', message: what }],
    });
  }
  return new AppError('not_found', `nothing has this path: ${what}`);
}

/** Errors of express and node with a 4xx `status` keep their meaning (bodies are read by read-body.ts, not body-parser). */
function fromFrameworkError(err: unknown): AppError | undefined {
  const e = err as { status?: number; message?: string } | undefined;
  if (!e || typeof e.status !== 'number' || e.status < 400 || e.status >= 500) return undefined;
  if (e.status === 413) return new AppError('payload_too_large', e.message ?? 'the request body is too large');
  if (e.status === 415) return new AppError('unsupported_media_type', e.message ?? 'unsupported media type');
  return new AppError('invalid_request', e.message ?? 'bad request');
}

/** Answers with the problem for `err`; returns its code (for metrics). */
export function sendProblem(res: ServerResponse, err: unknown, log: Logger): ErrorCode {
  const { problem, headers } = toProblem(err, log);
  if (res.headersSent) {
    res.destroy();
    return problem.code;
  }
  const body = JSON.stringify(problem);
  // nosniff: a problem's detail can repeat what a request named (a console asset's file name), never to be read as HTML.
  res.writeHead(problem.status, {
    ...headers,
    'content-type': PROBLEM_CONTENT_TYPE,
    'content-length': Buffer.byteLength(body),
    'x-content-type-options': 'nosniff',
  });
  res.end(body);
  return problem.code;
}

export function sendJson(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { ...headers, 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/**
 * The answer to a request node's HTTP parser refused (malformed framing, both Content-Length and
 * Transfer-Encoding, a header block over 16 KiB): it never reaches a handler, so this is its whole
 * HTTP/1.1 response, written to the socket, closing the connection (its framing cannot be trusted).
 */
export function rawProblemResponse(err: { code?: unknown; message: string }): string {
  const what = err.code === 'HPE_HEADER_OVERFLOW' ? 'the request headers are larger than 16 KiB' : 'the request is not valid HTTP/1.1';
  return rawBadRequest(what, `${what} (${String(err.code ?? err.message)})`);
}

/** A whole `400 invalid_request` response, for a socket that node hands over without a response object. */
export function rawBadRequest(what: string, detail: string): string {
  return rawProblem(new AppError('invalid_request', what, { details: [{ message: detail }] }));
}

/** A whole problem response that closes its connection, for a socket that node hands over without a response object. */
export function rawProblem(err: AppError): string {
  const problem = build(err);
  const body = JSON.stringify(problem);
  return (
    `HTTP/1.1 ${problem.status} ${STATUS_CODES[problem.status] ?? ''}\r\ncontent-type: ${PROBLEM_CONTENT_TYPE}\r\n` +
    `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`
  );
}
