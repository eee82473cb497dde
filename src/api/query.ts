import { z } from 'zod';
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

/** A non-negative integer from a query string (`""` and absent mean the default). */
export const queryInt = (fallback: number, max = Number.MAX_SAFE_INTEGER) =>
  z.preprocess((v) => (v === undefined || v === '' ? undefined : v), z.coerce.number().int().min(0).max(max).default(fallback));
