import { CesqlError } from './errors';

/**
 * Token kinds. Words are split into keywords and names here; whether a name is
 * a value identifier or a function identifier depends on the next token, which
 * the parser decides.
 */
export type Token =
  | { readonly type: 'int'; readonly text: string; readonly pos: number }
  | { readonly type: 'string'; readonly value: string; readonly pos: number }
  | { readonly type: 'keyword'; readonly keyword: Keyword; readonly pos: number }
  | { readonly type: 'name'; readonly text: string; readonly pos: number }
  | { readonly type: 'symbol'; readonly symbol: string; readonly pos: number }
  | { readonly type: 'eof'; readonly pos: number };

export const KEYWORDS = ['AND', 'OR', 'XOR', 'NOT', 'LIKE', 'IN', 'EXISTS', 'TRUE', 'FALSE'] as const;
export type Keyword = (typeof KEYWORDS)[number];
const KEYWORD_SET: ReadonlySet<string> = new Set(KEYWORDS);

// Two-character symbols first so `<=` is not read as `<` then `=`.
const SYMBOLS = ['!=', '<>', '<=', '>=', '(', ')', ',', '*', '/', '%', '+', '-', '=', '<', '>'];
const WORD = /[A-Za-z0-9_]+/y;
const WHITESPACE = /[ \t\r\n]+/y;

/**
 * Splits an expression into tokens.
 *
 * Integer literals are unsigned here: the grammar's `('+' | '-')? digit+`
 * literal would make the lexer read `4 -1` as two literals side by side, so
 * the parser folds a sign into the literal instead.
 * A run of letters, digits and `_` is one word (as the ANTLR lexer's longest
 * match does), so `1a` is a name, not `1` then `a`.
 * @throws CesqlError `parse` for a character no token starts with, or an unterminated string
 * @see cesql/spec.md §2.2; cesql/CESQLLexer.g4
 */
export function tokenize(source: string): Token[] {
  const tokens: Token[] = [];
  let pos = 0;
  while (pos < source.length) {
    WHITESPACE.lastIndex = pos;
    if (WHITESPACE.test(source)) {
      pos = WHITESPACE.lastIndex;
      continue;
    }
    const ch = source[pos]!;
    if (ch === "'" || ch === '"') {
      const end = stringEnd(source, pos);
      tokens.push({ type: 'string', value: unescape(source.slice(pos + 1, end), ch), pos });
      pos = end + 1;
      continue;
    }
    WORD.lastIndex = pos;
    const word = WORD.exec(source);
    if (word) {
      const text = word[0];
      const upper = text.toUpperCase();
      if (/^[0-9]+$/.test(text)) tokens.push({ type: 'int', text, pos });
      else if (KEYWORD_SET.has(upper)) tokens.push({ type: 'keyword', keyword: upper as Keyword, pos });
      else tokens.push({ type: 'name', text, pos });
      pos = WORD.lastIndex;
      continue;
    }
    const symbol = SYMBOLS.find((s) => source.startsWith(s, pos));
    if (symbol === undefined) {
      throw new CesqlError('parse', `unexpected character ${JSON.stringify(ch)} at position ${pos}`);
    }
    tokens.push({ type: 'symbol', symbol, pos });
    pos += symbol.length;
  }
  tokens.push({ type: 'eof', pos });
  return tokens;
}

/**
 * Index of the closing quote. A backslash always takes the next character
 * with it, as in the ANTLR lexer, so an escaped quote does not close the string.
 */
function stringEnd(source: string, start: number): number {
  const quoteChar = source[start];
  for (let i = start + 1; i < source.length; i++) {
    const c = source[i];
    if (c === '\\') i++;
    else if (c === quoteChar) return i;
  }
  throw new CesqlError('parse', `unterminated string literal starting at position ${start}`);
}

/**
 * Only the delimiting quote is an escape (`\'` in '…', `\"` in "…"); any other
 * backslash stays in the value, because LIKE patterns give `\%` and `\_`
 * their own meaning and the TCK expects `'ab\c'` to keep its backslash.
 */
function unescape(body: string, quoteChar: string): string {
  return body.includes('\\') ? body.split(`\\${quoteChar}`).join(quoteChar) : body;
}
