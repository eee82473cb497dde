import type { AttributeValue } from '../cloudevents/event';
import { isAttributeName } from '../cloudevents/validate';
import { AppError, type Violation } from '../errors';
import { throttledLine } from '../logger';
import { CesqlError, WORK_BUDGET, cesqlBudget, cesqlMatches, compileCesql, type CesqlBudget } from './cesql';

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

/** Whether an event passes a subscription's filters. Never throws. */
export type Matcher = (attributes: Attributes) => boolean;

/** Longest `sql` expression accepted, in UTF-16 units (characters for all but emoji and rarer scripts). */
export const MAX_SQL_LENGTH = 4096;
/** Filter objects allowed in one subscription's list, nested ones included. */
export const MAX_FILTER_NODES = 64;
/** Levels of `all`/`any`/`not` nesting allowed below a top-level filter. */
export const MAX_FILTER_DEPTH = 16;
/**
 * Characters of attribute names and values allowed in all `exact`/`prefix`/`suffix` filters of one
 * subscription together: every list of subscriptions carries them (an API probe's 30 subscriptions of
 * 900,000-character prefixes made `GET /subscriptions` 28.5 MB, the event loop held 365 ms).
 */
export const MAX_FILTER_TEXT = 16_384;

const DIALECTS = ['exact', 'prefix', 'suffix', 'all', 'any', 'not', 'sql'] as const;

/**
 * Why a filter evaluation was abandoned: `budget` when a `sql` filter needed
 * more work than {@link WORK_BUDGET} allows for one event, `exception` when
 * evaluation threw (a bug, or a resource limit such as V8's maximum string
 * length). Either way the event does not match.
 */
export class FilterEvaluationError extends Error {
  override readonly name = 'FilterEvaluationError';

  constructor(
    readonly reason: 'budget' | 'exception',
    /** The filter being evaluated, as named in violations (`filters.0.sql`); `filters` when not known. */
    readonly path: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface FilterOptions {
  /** Prefix of the paths named in violations and errors. */
  path?: string;
  /**
   * Called when an evaluation is abandoned (see {@link FilterEvaluationError});
   * the matcher then returns false. Ordinary CESQL errors, such as a missing
   * attribute, are plain non-matches and are not reported. Must not throw
   * (if it does, the error is dropped).
   */
  onError?: (err: FilterEvaluationError) => void;
  /** Work allowed per event for all `sql` filters of the list together; {@link WORK_BUDGET} by default. */
  budget?: number;
  /**
   * Refuse `exact`, `prefix` and `suffix` names no CloudEvent can carry (`Type`, `data`, `data_base64`),
   * which would never match. Set for filters given to the API; off for stored subscriptions, which
   * keep loading as they were accepted (such a filter goes on matching nothing).
   */
  attributeNamesOnly?: boolean;
  /**
   * Refuse filters past {@link MAX_FILTER_NODES} objects, {@link MAX_FILTER_TEXT} characters of names and values, or an
   * `sql` past {@link MAX_SQL_LENGTH} (default on).
   * Off for stored subscriptions, which keep delivering as an older version accepted them (an upgrade
   * probe saw them stop); the per-event work budget still bounds what they cost.
   */
  sizeLimits?: boolean;
}

/** Per-call state shared by the compiled filters of one list. */
interface Evaluation {
  readonly budget: CesqlBudget;
  failure: FilterEvaluationError | undefined;
}

type Compiled = (attributes: Attributes, evaluation: Evaluation) => boolean;

/**
 * An `exact`/`prefix`/`suffix` filter's value: attribute names to non-empty strings, at least one. Checked
 * by hand, not by a schema library: the delivery thread compiles filters too, and would load one (about
 * 70 ms of CPU at every start) for this alone.
 */
function stringPairs(value: unknown, at: string, violations: Violation[]): [string, string][] | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    const kind = value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value;
    violations.push({ attribute: at, message: `expected an object of attribute names to strings, received ${kind}` });
    return undefined;
  }
  const pairs = Object.entries(value);
  if (pairs.length === 0) violations.push({ attribute: at, message: 'must name at least one attribute' });
  for (const [name, expected] of pairs) {
    if (name === '') violations.push({ attribute: `${at}.`, message: 'attribute names must not be empty' });
    else if (typeof expected !== 'string')
      violations.push({ attribute: `${at}.${name}`, message: `expected a string, received ${typeof expected}` });
    else if (expected === '') violations.push({ attribute: `${at}.${name}`, message: 'values must not be empty strings' });
  }
  return violations.length > 0 ? undefined : (pairs as [string, string][]);
}

/**
 * Checks a list of filters and compiles it to one matcher (the list is ANDed).
 *
 * The matcher never throws and its cost per event is bounded: filters are
 * limited in size ({@link MAX_SQL_LENGTH}, {@link MAX_FILTER_NODES},
 * {@link MAX_FILTER_DEPTH}, {@link MAX_FILTER_TEXT}) and all their `sql` expressions share one work
 * budget per event. An evaluation that throws or runs out of budget does not
 * match, whatever `not` surrounds it, and is reported to `onError`: a filter
 * that fails on some event must neither stop delivery nor crash the process
 * that would then fail again on the same event at every start.
 * @throws AppError `invalid_request` naming each malformed filter by path
 */
export function compileFilters(filters: unknown, options: FilterOptions = {}): Matcher {
  const { path = 'filters', onError, budget: limit = WORK_BUDGET, attributeNamesOnly = false, sizeLimits = true } = options;
  const violations: Violation[] = [];
  if (!Array.isArray(filters)) {
    throw new AppError('invalid_request', 'filters must be an array', {
      details: [{ attribute: path, message: 'expected an array of filter expressions' }],
    });
  }
  const counter: NodeCounter = { path, nodes: 0, text: 0, attributeNamesOnly, sizeLimits };
  const matchers = filters.map((f, i) => compileOne(f, `${path}.${i}`, 0, violations, counter));
  if (violations.length > 0) throw new AppError('invalid_request', 'the subscription filters are not valid', { details: violations });
  // One state object per matcher: matching is synchronous, so calls never overlap.
  const evaluation: Evaluation = { budget: cesqlBudget(limit), failure: undefined };
  return (attributes) => {
    evaluation.budget.remaining = limit;
    evaluation.failure = undefined;
    let matched = false;
    try {
      matched = matchers.every((m) => m(attributes, evaluation));
    } catch (err) {
      evaluation.failure ??= failed(path, err);
    }
    const failure = evaluation.failure;
    if (failure === undefined) return matched;
    try {
      onError?.(failure);
    } catch {
      // A failing reporter must not turn a non-match into a crash.
    }
    return false;
  };
}

function failed(path: string, err: unknown): FilterEvaluationError {
  let message = 'a non-Error value was thrown';
  if (err instanceof Error) message = `${err.name}: ${err.message}`;
  return new FilterEvaluationError('exception', path, `evaluating ${path} failed: ${message}`, { cause: err });
}

/** What one compilation shares across the filter tree. */
interface NodeCounter {
  readonly path: string;
  nodes: number;
  /** Characters of `exact`/`prefix`/`suffix` names and values so far (see {@link MAX_FILTER_TEXT}). */
  text: number;
  /** {@link FilterOptions.attributeNamesOnly} */
  readonly attributeNamesOnly: boolean;
  /** {@link FilterOptions.sizeLimits} */
  readonly sizeLimits: boolean;
}

function compileOne(filter: unknown, path: string, depth: number, violations: Violation[], counter: NodeCounter): Compiled {
  const never: Compiled = () => false;
  if (depth > MAX_FILTER_DEPTH) {
    violations.push({ attribute: path, message: `filters may nest at most ${MAX_FILTER_DEPTH} levels` });
    return never;
  }
  // Past the limit, the rest is only counted: one violation says it all, and compiling stays cheap.
  if (++counter.nodes > MAX_FILTER_NODES && counter.sizeLimits) {
    if (counter.nodes === MAX_FILTER_NODES + 1) {
      violations.push({
        attribute: counter.path,
        message: `a subscription may have at most ${MAX_FILTER_NODES} filter expressions, nested ones included`,
      });
    }
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
      // No event can carry it (CloudEvents names are a-z0-9), and a copy of the object would drop it.
      if (typeof value === 'object' && value !== null && Object.hasOwn(value, '__proto__')) {
        violations.push({ attribute: `${at}.__proto__`, message: '__proto__ is not a CloudEvents attribute name' });
        return never;
      }
      const found: Violation[] = [];
      const pairs = stringPairs(value, at, found);
      if (!pairs) {
        violations.push(...found);
        return never;
      }
      const before = counter.text;
      for (const [name, expected] of pairs) counter.text += name.length + expected.length;
      if (counter.sizeLimits && counter.text > MAX_FILTER_TEXT && before <= MAX_FILTER_TEXT) {
        violations.push({
          attribute: at,
          message: `the attribute names and values of a subscription's exact, prefix and suffix filters may be at most ${MAX_FILTER_TEXT} characters in all`,
        });
        return never;
      }
      if (counter.attributeNamesOnly) {
        const unnamed = pairs.filter(([name]) => !isAttributeName(name));
        for (const [name] of unnamed) violations.push({ attribute: `${at}.${name}`, message: notAnAttribute(name) });
        if (unnamed.length > 0) return never;
      }
      const test =
        dialect === 'exact'
          ? (actual: string, expected: string) => actual === expected
          : dialect === 'prefix'
            ? (actual: string, expected: string) => actual.startsWith(expected)
            : (actual: string, expected: string) => actual.endsWith(expected);
      return (attributes) =>
        pairs.every(([name, expected]) => {
          // Own attributes only: `constructor` of an event without it is not Object's.
          const actual = Object.hasOwn(attributes, name) ? attributes[name] : undefined;
          return actual !== undefined && test(String(actual), expected);
        });
    }
    case 'all':
    case 'any': {
      if (!Array.isArray(value) || value.length === 0) {
        violations.push({ attribute: at, message: `"${dialect}" needs a non-empty array of filter expressions` });
        return never;
      }
      const nested = value.map((f, i) => compileOne(f, `${at}.${i}`, depth + 1, violations, counter));
      return dialect === 'all' ? (a, e) => nested.every((m) => m(a, e)) : (a, e) => nested.some((m) => m(a, e));
    }
    case 'not': {
      const nested = compileOne(value, at, depth + 1, violations, counter);
      return (a, e) => !nested(a, e);
    }
    default: {
      if (typeof value !== 'string' || value.trim() === '') {
        violations.push({ attribute: at, message: '"sql" needs a CloudEvents SQL expression string' });
        return never;
      }
      if (value.length > MAX_SQL_LENGTH && counter.sizeLimits) {
        violations.push({
          attribute: at,
          message: `sql expressions may be at most ${MAX_SQL_LENGTH} characters (this one has ${value.length})`,
        });
        return never;
      }
      try {
        const expression = compileCesql(value);
        // An unknown function can never evaluate: refuse it now rather than match nothing forever.
        for (const err of expression.staticErrors)
          violations.push({ attribute: at, message: `invalid CloudEvents SQL expression: ${err.message}` });
        return (a, e) => {
          try {
            const matched = cesqlMatches(expression, a, e.budget);
            if (e.budget.remaining >= 0) return matched;
            e.failure ??= new FilterEvaluationError(
              'budget',
              at,
              `${at} needed more than the work budget of ${e.budget.limit} units (about one per character read) for this event`,
            );
          } catch (err) {
            e.failure ??= failed(at, err);
          }
          return false;
        };
      } catch (err) {
        if (!(err instanceof CesqlError)) throw err;
        violations.push({ attribute: at, message: `invalid CloudEvents SQL expression: ${err.message}` });
        return never;
      }
    }
  }
}

/** Why a filter may not name `name`: no event can carry it, so the filter would never match. */
function notAnAttribute(name: string): string {
  if (name === 'data') return '"data" is the event\'s data, not an attribute, so no event could match: filters compare attributes only';
  const hint = /^[A-Za-z0-9]+$/.test(name) ? ` (did you mean "${name.toLowerCase()}"?)` : '';
  return `${JSON.stringify(name)} is not a CloudEvents attribute name, so no event could match: names are lower-case letters a-z and digits 0-9${hint}`;
}

/** The part of a pino logger the reporter uses. */
export interface WarnLog {
  warn(obj: object, msg: string): void;
}

export interface FilterErrorReporterOptions {
  log: WarnLog;
  subscriptionId: string;
  clock?: () => number;
  /** At most one line per this many milliseconds; 60,000 by default. */
  intervalMs?: number;
  /** Called for every error, logged or not: where `herald_filter_errors_total{subscription}` is counted. */
  count?: (err: FilterEvaluationError) => void;
}

/**
 * An `onError` for {@link compileFilters} that logs at `warn`, at most once
 * per interval for the subscription. A filter that fails on one event
 * usually fails on every event like it, and one line per event would flood
 * the log at the ingest rate; the line says how many were left out since the
 * previous one (`suppressed`).
 */
export function createFilterErrorReporter(options: FilterErrorReporterOptions): (err: FilterEvaluationError) => void {
  const { log, subscriptionId, clock = Date.now, intervalMs = 60_000, count } = options;
  const line = throttledLine(intervalMs, clock);
  return (err) => {
    count?.(err);
    line((suppressed) =>
      log.warn({ subscription: subscriptionId, err, suppressed }, 'filter evaluation failed: the event does not match this subscription'),
    );
  };
}
