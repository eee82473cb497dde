import type { Value } from './values';

export type ComparisonOperator = '=' | '!=' | '<>' | '<' | '<=' | '>' | '>=';
export type ArithmeticOperator = '+' | '-' | '*' | '/' | '%';

/**
 * The syntax tree the parser builds and the compiler turns into closures.
 * AND and OR chains are n-ary so that a long generated filter
 * (`type = 'a' OR type = 'b' OR …`) stays shallow.
 */
export type Node =
  | { readonly kind: 'literal'; readonly value: Value }
  | { readonly kind: 'attribute'; readonly name: string }
  | { readonly kind: 'exists'; readonly name: string }
  | { readonly kind: 'not'; readonly operand: Node }
  | { readonly kind: 'negate'; readonly operand: Node }
  | { readonly kind: 'and' | 'or'; readonly operands: readonly Node[] }
  | { readonly kind: 'xor'; readonly left: Node; readonly right: Node }
  | { readonly kind: 'comparison'; readonly operator: ComparisonOperator; readonly left: Node; readonly right: Node }
  | { readonly kind: 'arithmetic'; readonly operator: ArithmeticOperator; readonly left: Node; readonly right: Node }
  | { readonly kind: 'like'; readonly operand: Node; readonly pattern: string; readonly negated: boolean }
  | { readonly kind: 'in'; readonly operand: Node; readonly set: readonly Node[]; readonly negated: boolean }
  | { readonly kind: 'call'; readonly name: string; readonly args: readonly Node[] };
