import { z } from 'zod';
import { percentDecodeUtf8 } from '../cloudevents/headers';
import { AppError } from '../errors';

/** Parses query or body input with zod; failures are a 400 listing each bad field. */
export function parseInput<T extends z.ZodType>(schema: T, input: unknown, what = 'request'): z.output<T> {
  const parsed = schema.safeParse(input);
  if (parsed.success) return parsed.data;
  throw new AppError('invalid_request', `the ${what} is not valid`, {
    details: parsed.error.issues.map((issue) => ({
      attribute: issue.path.length > 0 ? issue.path.join('.') : undefined,
      message: issue.message,
    })),
  });
}

/**
 * Parses a request's query with zod, after refusing escapes that are not UTF-8 ({@link assertUtf8Query}):
 * every route that reads a query parses it so, and none reads `%FF` as U+FFFD (API probe: `GET /events/stream?sql=` did).
 */
export function parseQuery<T extends z.ZodType>(schema: T, req: { originalUrl: string; query: unknown }): z.output<T> {
  assertUtf8Query(req.originalUrl);
  return parseInput(schema, req.query, 'query');
}

/**
 * A non-negative integer in strict decimal: digits only, nothing else (no sign, space, `0x`, `.`,
 * exponent), within the safe-integer range and at most `max`.
 */
const decimal = (max: number) =>
  z
    .string()
    .regex(/^[0-9]+$/, 'expected a non-negative integer in decimal digits')
    .transform(Number)
    .pipe(z.number().max(Math.min(max, Number.MAX_SAFE_INTEGER)));

/** A non-negative integer from a query string (`""` and absent mean the default). */
export const queryInt = (fallback: number, max = Number.MAX_SAFE_INTEGER) =>
  z.preprocess((v) => (v === undefined || v === '' ? undefined : v), decimal(max).default(fallback));

/** A non-negative integer path parameter. */
export const pathInt = (max = Number.MAX_SAFE_INTEGER) => decimal(max);

/** Whether a part of a request target decodes to valid UTF-8 (as a `ce-*` header value must). */
function escapesAreUtf8(text: string): boolean {
  try {
    percentDecodeUtf8(text);
    return true;
  } catch {
    return false;
  }
}

/**
 * Refuses a query whose escapes are not UTF-8: the query parser makes U+FFFD of them, so `id=%E0%A4`
 * found the event whose id is `\uFFFD` (edge probe), where ingest refuses such an id.
 */
export function assertUtf8Query(url: string): void {
  const query = url.slice(url.indexOf('?') + 1 || url.length);
  const bad = query.split('&').filter((pair) => !escapesAreUtf8(pair));
  if (bad.length === 0) return;
  throw new AppError('invalid_request', 'the query is not valid', {
    details: bad.map((pair) => ({
      attribute: decodeURIComponentOr(pair.split('=')[0]!),
      message: 'not valid UTF-8 once percent-decoded',
    })),
  });
}

const decodeURIComponentOr = (text: string): string => {
  try {
    return decodeURIComponent(text.replace(/\+/g, ' '));
  } catch {
    return text;
  }
};
