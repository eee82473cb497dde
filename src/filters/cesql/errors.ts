/**
 * The error kinds CESQL names. `parse` is raised by the compiler; every other
 * kind is collected during evaluation, next to a value that is still returned
 * (CESQL is total: an error never stops evaluation).
 * `budget` is Herald's own: the evaluation ran out of its work budget (see
 * `WORK_BUDGET`), so its result says nothing about the event. Unlike the
 * others, which are everyday non-matches, it points at a filter too costly
 * for the events it meets.
 * @see cesql/spec.md §3.3 Errors; cesql/cesql_tck/README.md (error names)
 */
export type CesqlErrorKind = 'parse' | 'math' | 'cast' | 'missingAttribute' | 'missingFunction' | 'functionEvaluation' | 'budget';

/** One CESQL error. Parse errors are thrown; evaluation errors are returned in a list. */
export class CesqlError extends Error {
  override readonly name = 'CesqlError';

  constructor(
    readonly kind: CesqlErrorKind,
    message: string,
  ) {
    super(message);
  }
}

/**
 * What evaluation records internally. Building an `Error` captures a stack
 * trace, which is costly; filters run for every event and a missing extension
 * is an everyday error, so records stay plain until a caller asks for them.
 */
export interface ErrorRecord {
  readonly kind: CesqlErrorKind;
  readonly message: string;
}

/** Shortens user-controlled text quoted in messages so one error cannot carry a whole attribute value. */
export function quote(value: string): string {
  return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
}
