import { z } from 'zod';
import type { AttributeValue } from '../cloudevents/event';
import { AppError, type Violation } from '../errors';
import { CesqlError, cesqlMatches, compileCesql } from './cesql';

/**
 * A filter of the CloudEvents Subscriptions API: one dialect per object.
 * @see subscriptions/spec.md §3.2.4
 */
export type Filter =
  | { exact: Record<string, string> }
  | { prefix: Record<string, string> }
  | { suffix: Record<string, string> }
  | { all: Filter[] }
  | { any: Filter[] }
  | { not: Filter }
  | { sql: string };

export type Attributes = Record<string, AttributeValue>;
export type Matcher = (attributes: Attributes) => boolean;

const DIALECTS = ['exact', 'prefix', 'suffix', 'all', 'any', 'not', 'sql'] as const;
const MAX_DEPTH = 16;

const stringMap = z
  .record(z.string().min(1, 'attribute names must not be empty'), z.string().min(1, 'values must not be empty strings'))
  .refine((m) => Object.keys(m).length > 0, 'must name at least one attribute');

/**
 * Checks a list of filters and compiles it to one matcher (the list is ANDed).
 * @throws AppError `invalid_request` naming each malformed filter by path
 */
export function compileFilters(filters: unknown, path = 'filters'): Matcher {
  const violations: Violation[] = [];
  if (!Array.isArray(filters)) {
    throw new AppError('invalid_request', 'filters must be an array', { details: [{ attribute: path, message: 'expected an array of filter expressions' }] });
  }
  const matchers = filters.map((f, i) => compileOne(f, `${path}.${i}`, 0, violations));
  if (violations.length > 0) throw new AppError('invalid_request', 'the subscription filters are not valid', { details: violations });
  return (attributes) => matchers.every((m) => m(attributes));
}

function compileOne(filter: unknown, path: string, depth: number, violations: Violation[]): Matcher {
  const never: Matcher = () => false;
  if (depth > MAX_DEPTH) {
    violations.push({ attribute: path, message: `filters may nest at most ${MAX_DEPTH} levels` });
    return never;
  }
  if (typeof filter !== 'object' || filter === null || Array.isArray(filter)) {
    violations.push({ attribute: path, message: 'a filter must be an object with exactly one dialect' });
    return never;
  }
  const keys = Object.keys(filter);
  if (keys.length !== 1) {
    violations.push({ attribute: path, message: `a filter must have exactly one dialect, found ${keys.length}` });
    return never;
  }
  const dialect = keys[0]!;
  const value = (filter as Record<string, unknown>)[dialect];
  const at = `${path}.${dialect}`;
  if (!(DIALECTS as readonly string[]).includes(dialect)) {
    violations.push({ attribute: at, message: `unknown filter dialect "${dialect}"; supported: ${DIALECTS.join(', ')}` });
    return never;
  }
  switch (dialect) {
    case 'exact':
    case 'prefix':
    case 'suffix': {
      const parsed = stringMap.safeParse(value);
      if (!parsed.success) {
        for (const issue of parsed.error.issues) violations.push({ attribute: [at, ...issue.path].join('.'), message: issue.message });
        return never;
      }
      const pairs = Object.entries(parsed.data);
      const test =
        dialect === 'exact'
          ? (actual: string, expected: string) => actual === expected
          : dialect === 'prefix'
            ? (actual: string, expected: string) => actual.startsWith(expected)
            : (actual: string, expected: string) => actual.endsWith(expected);
      return (attributes) =>
        pairs.every(([name, expected]) => {
          const actual = attributes[name];
          return actual !== undefined && test(String(actual), expected);
        });
    }
    case 'all':
    case 'any': {
      if (!Array.isArray(value) || value.length === 0) {
        violations.push({ attribute: at, message: `"${dialect}" needs a non-empty array of filter expressions` });
        return never;
      }
      const nested = value.map((f, i) => compileOne(f, `${at}.${i}`, depth + 1, violations));
      return dialect === 'all' ? (a) => nested.every((m) => m(a)) : (a) => nested.some((m) => m(a));
    }
    case 'not': {
      const nested = compileOne(value, at, depth + 1, violations);
      return (a) => !nested(a);
    }
    default: {
      if (typeof value !== 'string' || value.trim() === '') {
        violations.push({ attribute: at, message: '"sql" needs a CloudEvents SQL expression string' });
        return never;
      }
      try {
        const expression = compileCesql(value);
        // An unknown function can never evaluate: refuse it now rather than match nothing forever.
        for (const err of expression.staticErrors) violations.push({ attribute: at, message: `invalid CloudEvents SQL expression: ${err.message}` });
        return (a) => cesqlMatches(expression, a);
      } catch (err) {
        if (!(err instanceof CesqlError)) throw err;
        violations.push({ attribute: at, message: `invalid CloudEvents SQL expression: ${err.message}` });
        return never;
      }
    }
  }
}
