import type { ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { AppError, ErrorCode, Violation, errorTitle, isAppError } from '../errors';

/** RFC 9457 problem details, plus Herald's machine-readable `errors` list. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: ErrorCode;
  errors: Violation[];
}

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

export function problemType(code: ErrorCode): string {
  return `urn:herald:problem:${code}`;
}

/** Maps anything thrown to a problem. Unknown errors become an opaque 500 and are logged with their stack. */
export function toProblem(err: unknown, log: Logger): { problem: Problem; headers: Record<string, string> } {
  const appError = isAppError(err) ? err : fromFrameworkError(err);
  if (!appError) {
    log.error({ err }, 'unhandled error');
    return { problem: build(new AppError('internal', 'an unexpected error occurred; it has been logged')), headers: {} };
  }
  const headers: Record<string, string> = { ...appError.headers };
  if (appError.retryAfter !== undefined) headers['retry-after'] = String(appError.retryAfter);
  return { problem: build(appError), headers };
}

function build(err: AppError): Problem {
  return {
    type: problemType(err.code),
    title: errorTitle[err.code],
    status: err.status,
    detail: err.message,
    code: err.code,
    errors: err.details.length > 0 ? err.details : [{ message: err.message }],
  };
}

/** body-parser and friends throw errors with `status`/`type`; keep their 4xx meaning. */
function fromFrameworkError(err: unknown): AppError | undefined {
  const e = err as { status?: number; type?: string; message?: string } | undefined;
  if (!e || typeof e.status !== 'number' || e.status < 400 || e.status >= 500) return undefined;
  if (e.status === 413) return new AppError('payload_too_large', 'the request body is larger than the 1 MiB this endpoint accepts');
  if (e.status === 415) return new AppError('unsupported_media_type', e.message ?? 'unsupported media type');
  if (e.type === 'entity.parse.failed') return new AppError('invalid_request', 'the body is not valid JSON', { details: [{ message: e.message ?? 'invalid JSON' }] });
  return new AppError('invalid_request', e.message ?? 'bad request');
}

export function sendProblem(res: ServerResponse, err: unknown, log: Logger): void {
  const { problem, headers } = toProblem(err, log);
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = JSON.stringify(problem);
  res.writeHead(problem.status, { ...headers, 'content-type': PROBLEM_CONTENT_TYPE, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

export function sendJson(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { ...headers, 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}
