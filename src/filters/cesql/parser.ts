import type { ArithmeticOperator, ComparisonOperator, Node } from './ast';
import { CesqlError } from './errors';
import { type Keyword, type Token, tokenize } from './lexer';
import { INT_MAX } from './values';

/**
 * Deepest syntax tree accepted. Evaluation recurses once per level, so an
 * unbounded depth would let one subscription overflow the stack of the
 * process that filters every event. Real filters nest a handful of levels.
 */
export const MAX_DEPTH = 100;

const COMPARISON = new Set<string>(['=', '!=', '<>', '<', '<=', '>', '>=']);
const VALUE_IDENTIFIER = /^[A-Za-z0-9]+$/;
const FUNCTION_IDENTIFIER = /^[A-Za-z][A-Za-z_]*$/;

/**
 * Parses a CESQL expression into a syntax tree.
 *
 * Precedence, loosest first: OR, XOR, AND, then comparisons with `[NOT] LIKE`
 * and `[NOT] IN`, then `+ -`, then `* / %`, then the unary `NOT` and `-`.
 * The spec ranks unary operators highest (§3.4, "listed in precedence order"),
 * so `NOT a = b` is `(NOT a) = b`, as in the reference ANTLR grammar; write
 * `a != b` or `NOT (a = b)`. §3.6 puts AND, OR and XOR on one level, evaluated
 * left to right; the reference grammar makes that level right-associative
 * (`a AND b OR c` is `a AND (b OR c)`), and the test kit settles neither. This
 * parser follows SQL instead (AND binds tighter than XOR, XOR tighter than OR,
 * all left-associative), which SQL readers and stored filters expect (README).
 * The reference grammar also ranks LIKE and IN above arithmetic; here they
 * sit with the comparisons, as in SQL, so `count + 1 LIKE '6'` tests the sum.
 * Keywords and identifiers are case-insensitive; identifiers are lowercased.
 * @throws CesqlError `parse` naming the position of the first problem
 * @see cesql/spec.md §2, §3.4; cesql/CESQLParser.g4
 */
export function parse(source: string): Node {
  const tokens = tokenize(source);
  let index = 0;
  let nesting = 0;
  // Depth of every node built so far, to refuse trees too deep to evaluate.
  const depths = new Map<Node, number>();

  function parseExpression(): Node {
    const node = parseOr();
    const rest = peek();
    if (rest.type !== 'eof') fail(rest, 'an operator or the end of the expression');
    return node;
  }

  function parseOr(): Node {
    enter();
    const operands = [parseXor()];
    while (acceptKeyword('OR')) operands.push(parseXor());
    nesting--;
    return operands.length === 1 ? operands[0]! : make({ kind: 'or', operands }, operands);
  }

  function parseXor(): Node {
    let left = parseAnd();
    while (acceptKeyword('XOR')) {
      const right = parseAnd();
      left = make({ kind: 'xor', left, right }, [left, right]);
    }
    return left;
  }

  function parseAnd(): Node {
    const operands = [parseComparison()];
    while (acceptKeyword('AND')) operands.push(parseComparison());
    return operands.length === 1 ? operands[0]! : make({ kind: 'and', operands }, operands);
  }

  function parseComparison(): Node {
    let left = parseAdditive();
    for (;;) {
      const token = peek();
      if (token.type === 'symbol' && COMPARISON.has(token.symbol)) {
        index++;
        const right = parseAdditive();
        left = make({ kind: 'comparison', operator: token.symbol as ComparisonOperator, left, right }, [left, right]);
        continue;
      }
      const negated = isKeyword(token, 'NOT');
      const operator = peek(negated ? 1 : 0);
      if (isKeyword(operator, 'LIKE')) {
        index += negated ? 2 : 1;
        const pattern = next();
        if (pattern.type !== 'string') fail(pattern, 'a string literal: the LIKE pattern must be a literal');
        left = make({ kind: 'like', operand: left, pattern: pattern.value, negated }, [left]);
      } else if (isKeyword(operator, 'IN')) {
        index += negated ? 2 : 1;
        const set = parseList('the IN set', false);
        left = make({ kind: 'in', operand: left, set, negated }, [left, ...set]);
      } else {
        return left;
      }
    }
  }

  function parseAdditive(): Node {
    let left = parseMultiplicative();
    for (let op = acceptSymbol('+', '-'); op; op = acceptSymbol('+', '-')) {
      const right = parseMultiplicative();
      left = make({ kind: 'arithmetic', operator: op as ArithmeticOperator, left, right }, [left, right]);
    }
    return left;
  }

  function parseMultiplicative(): Node {
    let left = parseUnary();
    for (let op = acceptSymbol('*', '/', '%'); op; op = acceptSymbol('*', '/', '%')) {
      const right = parseUnary();
      left = make({ kind: 'arithmetic', operator: op as ArithmeticOperator, left, right }, [left, right]);
    }
    return left;
  }

  function parseUnary(): Node {
    const sign = acceptSymbol('-', '+');
    if (sign !== undefined) {
      const number = peek();
      // A sign written on an integer is part of the literal (the grammar's
      // integer-literal), which is the only way to write -2147483648.
      if (number.type === 'int') {
        index++;
        return integer(sign === '-' ? `-${number.text}` : number.text, number);
      }
      if (sign === '+') fail(number, 'an integer literal after "+"');
      return unary('negate');
    }
    if (acceptKeyword('NOT')) return unary('not');
    return parsePrimary();
  }

  function unary(kind: 'negate' | 'not'): Node {
    enter();
    const operand = parseUnary();
    nesting--;
    return make({ kind, operand }, [operand]);
  }

  function parsePrimary(): Node {
    const token = next();
    switch (token.type) {
      case 'int':
        return integer(token.text, token);
      case 'string':
        return make({ kind: 'literal', value: token.value }, []);
      case 'keyword':
        if (token.keyword === 'TRUE' || token.keyword === 'FALSE') return make({ kind: 'literal', value: token.keyword === 'TRUE' }, []);
        if (token.keyword === 'EXISTS') {
          const name = next();
          if (name.type !== 'name' && name.type !== 'int') fail(name, 'an attribute name after EXISTS');
          return make({ kind: 'exists', name: identifier(name) }, []);
        }
        return fail(token, 'a value');
      case 'name': {
        if (!isSymbol(peek(), '(')) return make({ kind: 'attribute', name: identifier(token) }, []);
        if (!FUNCTION_IDENTIFIER.test(token.text)) fail(token, 'a function name made of letters and "_"');
        const args = parseList('the argument list', true);
        return make({ kind: 'call', name: token.text.toUpperCase(), args }, args);
      }
      case 'symbol':
        if (token.symbol === '(') {
          const inner = parseOr();
          expectSymbol(')');
          return inner;
        }
        return fail(token, 'a value');
      default:
        return fail(token, 'a value');
    }
  }

  /** `( expr, … )`, the opening bracket still to be read; empty only where allowed. */
  function parseList(what: string, allowEmpty: boolean): Node[] {
    expectSymbol('(');
    const items: Node[] = [];
    if (allowEmpty && acceptSymbol(')')) return items;
    do items.push(parseOr());
    while (acceptSymbol(','));
    const close = next();
    if (!isSymbol(close, ')')) fail(close, `"," or ")" to continue ${what}`);
    return items;
  }

  function integer(text: string, token: Token): Node {
    const value = Number(text);
    if (value > INT_MAX || value < -INT_MAX - 1) {
      throw new CesqlError('parse', `integer literal ${text} at position ${token.pos} is outside the 32-bit range`);
    }
    return make({ kind: 'literal', value: value | 0 }, []);
  }

  /** Attribute names are lowercase letters and digits; keywords are case-insensitive, so names are too. */
  function identifier(token: Token & { text: string }): string {
    if (!VALUE_IDENTIFIER.test(token.text)) fail(token, 'an attribute name of letters and digits');
    return token.text.toLowerCase();
  }

  function make(node: Node, children: readonly Node[]): Node {
    let depth = 1;
    for (const child of children) depth = Math.max(depth, (depths.get(child) ?? 1) + 1);
    if (depth > MAX_DEPTH) throw new CesqlError('parse', `the expression nests deeper than ${MAX_DEPTH} levels`);
    depths.set(node, depth);
    return node;
  }

  function enter(): void {
    if (++nesting > MAX_DEPTH) throw new CesqlError('parse', `the expression nests deeper than ${MAX_DEPTH} levels`);
  }

  function peek(ahead = 0): Token {
    return tokens[Math.min(index + ahead, tokens.length - 1)]!;
  }

  function next(): Token {
    const token = peek();
    if (token.type !== 'eof') index++;
    return token;
  }

  function isKeyword(token: Token, keyword: Keyword): boolean {
    return token.type === 'keyword' && token.keyword === keyword;
  }

  function isSymbol(token: Token, symbol: string): boolean {
    return token.type === 'symbol' && token.symbol === symbol;
  }

  function acceptKeyword(keyword: Keyword): boolean {
    if (!isKeyword(peek(), keyword)) return false;
    index++;
    return true;
  }

  function acceptSymbol(...symbols: string[]): string | undefined {
    const token = peek();
    if (token.type !== 'symbol' || !symbols.includes(token.symbol)) return undefined;
    index++;
    return token.symbol;
  }

  function expectSymbol(symbol: string): void {
    const token = next();
    if (!isSymbol(token, symbol)) fail(token, `"${symbol}"`);
  }

  function fail(token: Token, expected: string): never {
    throw new CesqlError('parse', `expected ${expected} but found ${describe(token)} at position ${token.pos}`);
  }

  return parseExpression();
}

function describe(token: Token): string {
  switch (token.type) {
    case 'eof':
      return 'the end of the expression';
    case 'int':
    case 'name':
      return `"${token.text}"`;
    case 'string':
      return 'a string literal';
    case 'keyword':
      return token.keyword;
    case 'symbol':
      return `"${token.symbol}"`;
  }
}
