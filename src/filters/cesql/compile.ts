import type { ArithmeticOperator, ComparisonOperator, Node } from './ast';
import type { ErrorRecord } from './errors';
import { resolveFunction } from './functions';
import { compileLike } from './like';
import {
  INT_MIN,
  type Context,
  type Value,
  type ValueType,
  castTo,
  checkedInteger,
  exhaust,
  newBudget,
  readAttribute,
  same,
  toBoolean,
  toInteger,
  toStringValue,
  typeOf,
  zeroOf,
} from './values';

/** A compiled expression: evaluating it never re-reads the syntax tree. */
export type Evaluator = (ctx: Context) => Value;

/**
 * Turns a syntax tree into nested closures, once per expression.
 *
 * Error rule, drawn from the TCK: an operator or function whose operand
 * reported an error returns the zero value of its result type without doing
 * its own work (so `missing / 0` is a missing-attribute error, not a division
 * by zero, and `true AND (1 != 1 / 0)` is false). A cast the operator itself
 * performs is different: the cast yields its zero value and the operator goes
 * on (so `NOT 10` is true, with a cast error).
 * Unknown functions are not a parse error: the TCK expects `missingFunction`
 * at evaluation, with the value `false`; they are also listed in `unresolved`.
 * @see cesql/spec.md §3.3, §3.4, §3.7
 */
export function compileNode(node: Node, unresolved: ErrorRecord[]): Evaluator {
  const compile = (child: Node) => compileNode(child, unresolved);
  switch (node.kind) {
    case 'literal': {
      const value = node.value;
      return () => value;
    }
    case 'attribute': {
      const { name } = node;
      const error: ErrorRecord = { kind: 'missingAttribute', message: `the event has no attribute "${name}"` };
      return (ctx) => {
        const value = readAttribute(ctx.attributes, name);
        if (value !== undefined) return value;
        ctx.errors.push(error);
        // §3.2: a subexpression reading a missing attribute evaluates to false.
        return false;
      };
    }
    case 'exists': {
      const { name } = node;
      return (ctx) => readAttribute(ctx.attributes, name) !== undefined;
    }
    case 'not': {
      const operand = compile(node.operand);
      return unary(operand, 'boolean', (v, ctx) => !toBoolean(v, ctx));
    }
    case 'negate': {
      const operand = compile(node.operand);
      return unary(operand, 'integer', (v, ctx) => {
        const n = toInteger(v, ctx);
        return n === INT_MIN ? checkedInteger(-n, ctx) : -n | 0;
      });
    }
    case 'and':
    case 'or':
      return logical(node.kind, node.operands.map(compile));
    case 'xor': {
      const compute = (a: Value, b: Value, ctx: Context) => toBoolean(a, ctx) !== toBoolean(b, ctx);
      return binary(compile(node.left), compile(node.right), 'boolean', compute);
    }
    case 'comparison':
      return binary(compile(node.left), compile(node.right), 'boolean', comparison(node.operator));
    case 'arithmetic': {
      const compute = arithmetic(node.operator);
      return binary(compile(node.left), compile(node.right), 'integer', (a, b, ctx) => compute(toInteger(a, ctx), toInteger(b, ctx), ctx));
    }
    case 'like': {
      const matches = compileLike(node.pattern);
      const { negated } = node;
      return unary(compile(node.operand), 'boolean', (v, ctx) => {
        const matched = ctx.budget.remaining >= 0 && matches(toStringValue(v), ctx.budget);
        if (ctx.budget.remaining >= 0) return matched !== negated;
        // Out of budget: neither answer is known, so neither LIKE nor NOT LIKE holds.
        exhaust(ctx);
        return false;
      });
    }
    case 'in':
      return membership(compile(node.operand), node.set, compile, node.negated);
    case 'call':
      return call(node.name, node.args.map(compile), unresolved);
  }
}

function unary(operand: Evaluator, returns: ValueType, compute: (v: Value, ctx: Context) => Value): Evaluator {
  const zero = zeroOf(returns);
  return (ctx) => {
    const before = ctx.errors.length;
    const v = operand(ctx);
    return ctx.errors.length === before ? compute(v, ctx) : zero;
  };
}

function binary(left: Evaluator, right: Evaluator, returns: ValueType, compute: (a: Value, b: Value, ctx: Context) => Value): Evaluator {
  const zero = zeroOf(returns);
  return (ctx) => {
    const before = ctx.errors.length;
    const a = left(ctx);
    const b = right(ctx);
    return ctx.errors.length === before ? compute(a, b, ctx) : zero;
  };
}

/**
 * AND and OR over a flattened chain, short-circuited as §3.4.2 requires.
 * Equivalent to the left-nested binary form: an operand's error makes every
 * enclosing link false, so the chain stops there.
 */
function logical(kind: 'and' | 'or', operands: readonly Evaluator[]): Evaluator {
  const decisive = kind === 'or';
  return (ctx) => {
    for (const operand of operands) {
      const before = ctx.errors.length;
      const v = operand(ctx);
      if (ctx.errors.length !== before) return false;
      if (toBoolean(v, ctx) === decisive) return decisive;
    }
    return !decisive;
  };
}

/**
 * `=`, `!=` and `<>` are defined for every type: the left operand is cast to
 * the right operand's type (§3.7: the right type picks the overload), which
 * is why `'TRUE' = true` holds and `true = 'TRUE'` does not. The ordering
 * operators exist for integers only.
 */
function comparison(operator: ComparisonOperator): (a: Value, b: Value, ctx: Context) => boolean {
  switch (operator) {
    case '=':
      return (a, b, ctx) => same(castTo(a, typeOf(b), ctx), b, ctx);
    case '!=':
    case '<>':
      // Out of budget, `same` is false and this true, but the budget error already fails the expression.
      return (a, b, ctx) => !same(castTo(a, typeOf(b), ctx), b, ctx);
    case '<':
      return (a, b, ctx) => toInteger(a, ctx) < toInteger(b, ctx);
    case '<=':
      return (a, b, ctx) => toInteger(a, ctx) <= toInteger(b, ctx);
    case '>':
      return (a, b, ctx) => toInteger(a, ctx) > toInteger(b, ctx);
    case '>=':
      return (a, b, ctx) => toInteger(a, ctx) >= toInteger(b, ctx);
  }
}

/** 32-bit arithmetic; `/` and `%` truncate toward zero and report division by zero. @see cesql/spec.md §3.4.2 */
function arithmetic(operator: ArithmeticOperator): (a: number, b: number, ctx: Context) => number {
  switch (operator) {
    case '+':
      return (a, b, ctx) => checkedInteger(a + b, ctx);
    case '-':
      return (a, b, ctx) => checkedInteger(a - b, ctx);
    case '*':
      // Products of two 32-bit integers can exceed 2^53, but only when they
      // are far outside the range anyway, so the range check stays exact.
      return (a, b, ctx) => checkedInteger(a * b, ctx);
    case '/':
      return (a, b, ctx) => (b === 0 ? divisionByZero(ctx) : a === INT_MIN && b === -1 ? checkedInteger(-a, ctx) : Math.trunc(a / b) | 0);
    case '%':
      // `| 0` also turns JavaScript's -0 (from -4 % 2) into 0.
      return (a, b, ctx) => (b === 0 ? divisionByZero(ctx) : (a % b) | 0);
  }
}

function divisionByZero(ctx: Context): number {
  ctx.errors.push({ kind: 'math', message: 'division by zero' });
  return 0;
}

/**
 * `x [NOT] IN (…)`: the set elements are cast to the type of `x` (§3.7, IN rule).
 * Every element is evaluated, because the set is unordered: stopping at the
 * first match would make errors depend on the order it was written in.
 * A set of literals, the usual case, is cast once per type at compile time.
 */
function membership(operand: Evaluator, set: readonly Node[], compile: (n: Node) => Evaluator, negated: boolean): Evaluator {
  const literals = set.every((n) => n.kind === 'literal') ? set.map((n) => (n as { value: Value }).value) : undefined;
  if (literals !== undefined) {
    const byType = new Map<ValueType, { values: ReadonlySet<Value>; errors: ErrorRecord[] }>();
    for (const type of ['string', 'integer', 'boolean'] as const) {
      const ctx: Context = { attributes: {}, errors: [], budget: newBudget(Infinity), outOfBudget: false };
      byType.set(type, { values: new Set(literals.map((v) => castTo(v, type, ctx))), errors: ctx.errors });
    }
    return unary(operand, 'boolean', (v, ctx) => {
      const cast = byType.get(typeOf(v))!;
      for (const error of cast.errors) ctx.errors.push(error);
      return cast.values.has(v) !== negated;
    });
  }
  const elements = set.map(compile);
  return (ctx) => {
    const before = ctx.errors.length;
    const v = operand(ctx);
    const values = elements.map((element) => element(ctx));
    if (ctx.errors.length !== before) return false;
    const type = typeOf(v);
    let found = false;
    for (const element of values) found = same(castTo(element, type, ctx), v, ctx) || found;
    return found !== negated;
  };
}

function call(name: string, args: readonly Evaluator[], unresolved: ErrorRecord[]): Evaluator {
  const definition = resolveFunction(name, args.length);
  if (definition === undefined) {
    const error: ErrorRecord = { kind: 'missingFunction', message: `no function ${name} takes ${args.length} argument(s)` };
    unresolved.push(error);
    return (ctx) => {
      ctx.errors.push(error);
      return false;
    };
  }
  const { params, variadic, returns } = definition;
  const types = args.map((_, i) => params[i] ?? variadic ?? 'any');
  const zero = zeroOf(returns);
  return (ctx) => {
    const before = ctx.errors.length;
    const values = args.map((arg) => arg(ctx));
    if (ctx.errors.length !== before) return zero;
    return definition.call(
      values.map((v, i) => castTo(v, types[i]!, ctx)),
      ctx,
    );
  };
}
