import { compileNode } from './compile';
import { CesqlError, type ErrorRecord } from './errors';
import { parse } from './parser';
import { type Budget, type Context, type Value, newBudget } from './values';

export { CesqlError, type CesqlErrorKind } from './errors';
export { MAX_DEPTH } from './parser';
export { WORK_BUDGET, newBudget as cesqlBudget, type Budget as CesqlBudget, type Value as CesqlValue } from './values';

/** Context attributes of one event, extensions included, as the filter sees them. */
export type CesqlAttributes = Record<string, string | number | boolean>;

/** The result of one evaluation: CESQL always yields a value, and lists the errors met on the way. */
export interface CesqlResult {
  value: Value;
  errors: CesqlError[];
}

export interface CesqlExpression {
  /**
   * Evaluates against one event's attributes. Never throws: failures are
   * returned in `errors` next to the value the spec defines for them.
   * Attribute values are read with their JSON type (string, integer or
   * boolean); numbers that are not 32-bit integers are read as their text.
   * The work is charged to `budget` (a fresh {@link WORK_BUDGET} if absent);
   * when it runs out, the result carries a `budget` error.
   */
  evaluate(event: CesqlAttributes, budget?: Budget): CesqlResult;
  /**
   * Errors known before any event arrives: calls to functions that do not
   * exist with that number of arguments. Such an expression can never match,
   * so a caller may reject it up front (§3.3: "Whenever possible, some error
   * checks SHOULD be done at compile time").
   */
  readonly staticErrors: readonly CesqlError[];
}

// The filter path only needs "true and no errors"; it skips building Error
// objects (each captures a stack trace) for every non-matching event.
const run = Symbol('cesql.run');
interface Compiled extends CesqlExpression {
  readonly [run]: (event: CesqlAttributes, budget: Budget) => { value: Value; errors: ErrorRecord[] };
}

/**
 * Compiles a CloudEvents SQL (CESQL 1.0) expression once, for evaluation
 * against many events. Keywords and attribute names are case-insensitive.
 * @throws CesqlError with kind `parse` for an invalid expression (including
 *   integer literals outside the 32-bit range, LIKE with a non-literal
 *   pattern, and nesting deeper than {@link MAX_DEPTH})
 * @see cesql/spec.md; cesql/cesql_tck for the cases this implementation passes
 */
export function compileCesql(expression: string): CesqlExpression {
  const unresolved: ErrorRecord[] = [];
  const root = compileNode(parse(expression), unresolved);
  const execute = (event: CesqlAttributes, budget: Budget) => {
    const ctx: Context = { attributes: event, errors: [], budget, outOfBudget: false };
    const value = root(ctx);
    return { value, errors: ctx.errors };
  };
  const compiled: Compiled = {
    [run]: execute,
    staticErrors: unresolved.map(toError),
    evaluate(event, budget = newBudget()) {
      const { value, errors } = execute(event, budget);
      return { value, errors: errors.map(toError) };
    },
  };
  return compiled;
}

/**
 * Filter semantics: the event passes only if the expression evaluates to the
 * Boolean `true` with no error. A non-Boolean result does not pass, even one
 * that would cast to true (such as the string "true"): CESQL 1.0 §1.2 says
 * "If the output value is not a Boolean or any errors are returned, the event
 * MUST NOT pass the filter". Write `BOOL(myext)` to test a string attribute.
 * A caller that must tell "too costly" from "does not match" passes its own
 * `budget` and looks at `budget.remaining` (negative once exhausted).
 * @see cesql/spec.md §1.2; subscriptions/spec.md §3.2.4.1 (the `sql` dialect)
 */
export function cesqlMatches(expr: CesqlExpression, event: CesqlAttributes, budget: Budget = newBudget()): boolean {
  const result = run in expr ? (expr as Compiled)[run](event, budget) : expr.evaluate(event, budget);
  return result.value === true && result.errors.length === 0;
}

function toError(record: ErrorRecord): CesqlError {
  return new CesqlError(record.kind, record.message);
}
