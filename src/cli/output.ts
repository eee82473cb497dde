import stringWidth from 'string-width';
import { styleText } from 'node:util';

/** Where a command writes: stdout for results, stderr for notes, warnings and errors. */
export interface CliStreams {
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
}

type Style = Parameters<typeof styleText>[0];

/**
 * Output of one command run. `--json` prints the API's answers as JSON (one document per command;
 * streams print one compact object per line); otherwise human output: tables and `key: value`
 * lines. Colours only when stdout is a terminal and `NO_COLOR` is not set.
 */
export interface Output {
  readonly json: boolean;
  /** One JSON document on stdout, indented. */
  document(value: unknown): void;
  /** One JSON value on one line on stdout (streams: `events tail`, `listen`). */
  jsonLine(value: unknown): void;
  /** A line of human output on stdout. */
  line(text?: string): void;
  /** A note for the human on stderr (never mixed into results). */
  note(text: string): void;
  /** A warning on stderr. */
  warn(text: string): void;
  /** A borderless table on stdout; an empty table prints `empty` instead. */
  table(head: string[], rows: (string | number | null | undefined)[][], empty?: string): void;
  /** Aligned `key  value` lines on stdout, a value in its `style` (if given) on a terminal. */
  fields(pairs: [string, string | number | boolean | null | undefined, Style?][]): void;
  /** `text` in a style, on a terminal only. */
  style(style: Style, text: string): string;
  /** Whether stderr is a terminal (progress bars). */
  readonly stderrIsTty: boolean;
}

export function createOutput(streams: CliStreams, options: { json: boolean; env?: NodeJS.ProcessEnv }): Output {
  const env = options.env ?? process.env;
  const colours = streams.stdout.isTTY === true && !env.NO_COLOR;
  const errColours = streams.stderr.isTTY === true && !env.NO_COLOR;
  const style = (s: Style, text: string): string => (colours ? styleText(s, text) : text);
  const out = (text: string) => streams.stdout.write(text);
  return {
    json: options.json,
    stderrIsTty: streams.stderr.isTTY === true,
    style,
    document: (value) => out(`${terminalSafeJson(value, 2)}\n`),
    jsonLine: (value) => out(`${terminalSafeJson(value)}\n`),
    line: (text = '') => out(`${text}\n`),
    note: (text) => streams.stderr.write(`${text}\n`),
    warn: (text) => streams.stderr.write(`${errColours ? styleText('yellow', 'warning:') : 'warning:'} ${text}\n`),
    table(head, rows, empty = '(none)') {
      if (rows.length === 0) {
        out(`${empty}\n`);
        return;
      }
      const cells = rows.map((row) => row.map((cell) => (cell === null || cell === undefined ? '-' : printable(String(cell)))));
      out(columns([head.map((h) => style('bold', h)), ...cells]));
    },
    fields(pairs) {
      const width = Math.max(0, ...pairs.filter(([, v]) => v !== undefined).map(([k]) => k.length));
      for (const [key, value, valueStyle] of pairs) {
        if (value === undefined) continue;
        const shown = value === null ? '-' : printable(String(value));
        out(`${style('bold', `${key}:`.padEnd(width + 1))}  ${valueStyle ? style(valueStyle, shown) : shown}\n`);
      }
    },
  };
}

/**
 * Rows laid out in columns two spaces apart, each as wide as its widest cell's display width (wide
 * characters count two; styling none), no trailing spaces. Not cli-table3: it took 14 s for 10,000
 * subscriptions (its span layout), this takes milliseconds.
 */
function columns(rows: string[][]): string {
  const widths = rows.map((row) => row.map((cell) => stringWidth(cell)));
  const columnWidth = rows[0]!.map((_, c) => widths.reduce((max, w) => Math.max(max, w[c] ?? 0), 0));
  const line = (row: string[], r: number) =>
    row
      .map((cell, c) => cell + ' '.repeat(columnWidth[c]! - widths[r]![c]! + 2))
      .join('')
      .replace(/ +$/, '');
  return `${rows.map(line).join('\n')}\n`;
}

/**
 * Characters that are not control characters yet hide or disguise text on screen: the bidirectional
 * controls (U+202E reverses what follows it), and the invisible format characters that make two
 * different ids look the same (zero-width space, word joiner and the invisible operators, the byte
 * order mark). The zero-width joiner and non-joiner are left alone: emoji and scripts such as Persian use them.
 */
const HIDDEN = '\u061c\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff';
/** The line and paragraph separators: line breaks to Unicode as NEL (U+0085, a C1 control) is, escaped in `--json` too (was: raw here). */
const SEPARATORS = '\u2028\u2029';
const UNPRINTABLE = new RegExp(`[\u0000-\u001f\u007f-\u009f${SEPARATORS}${HIDDEN}]`, 'g');
const UNPRINTABLE_BUT_NEWLINE = new RegExp(`[\u0000-\u0009\u000b-\u001f\u007f-\u009f${SEPARATORS}${HIDDEN}]`, 'g');
/** What `JSON.stringify` leaves raw that a terminal may act on (DEL, C1: U+009B is a CSI) or that hides text, and U+2028/U+2029. */
const RAW_IN_JSON = new RegExp(`[\u007f-\u009f\u2028\u2029${HIDDEN}]`, 'g');

/**
 * `text` with every control character (C0, tab and newline included, DEL, C1), the line and paragraph
 * separators and every hidden character ({@link HIDDEN}) written as a `\u001b`-style escape: event attributes and receivers'
 * answers come from others, and must neither drive the terminal (move the cursor, retitle the window,
 * set the clipboard), nor forge lines or columns of the output (a type holding a newline and a
 * made-up event line), nor show text reversed or two ids alike. Human output only (`--json`: see
 * {@link terminalSafeJson}); text styled by {@link Output.style} is not passed through it.
 */
export function printable(text: string): string {
  return text.replace(UNPRINTABLE, escape);
}

/**
 * {@link printable} for text of several lines that herald lays out itself (an event as indented
 * JSON, a message of several lines): its newlines stay, every other control character is escaped.
 * Values from others put into such text must have gone through {@link printable} first.
 */
export function printableLines(text: string): string {
  return text.replace(UNPRINTABLE_BUT_NEWLINE, escape);
}

/**
 * `value` as JSON whose strings carry DEL, C1 controls and hidden characters as `\u` escapes: the
 * same JSON value, but `--json` on a terminal no longer writes U+009B (an 8-bit CSI) or U+202E raw
 * (`JSON.stringify` escapes only C0). Outside strings JSON text is ASCII, so only strings change.
 */
export function terminalSafeJson(value: unknown, indent?: number): string {
  return (JSON.stringify(value, null, indent) ?? 'null').replace(RAW_IN_JSON, escape);
}

const escape = (c: string): string => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;

/** Any value from the gateway, as {@link printable} text (for values put into a line by hand). */
export const shown = (value: unknown): string => printable(String(value));

/** Shortens a long cell (an error excerpt, a sink) to `max` characters, its runs of white space one space. */
export function clip(text: string | null | undefined, max = 60): string | null | undefined {
  if (typeof text !== 'string') return text;
  return shorten(text.replace(/\s+/g, ' ').trim(), max);
}

/** `text` cut to `max` characters, the last one `…` when cut. */
export function shorten(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}
