import { createOutput, printable, printableLines, terminalSafeJson, type CliStreams } from '../../src/cli/output';

/** A stdout/stderr pair that records what is written, as a terminal (colours on) or not. */
function streams(isTTY: boolean): CliStreams & { text: () => string } {
  let text = '';
  const stream = { isTTY, write: (chunk: string) => ((text += chunk), true) } as unknown as NodeJS.WriteStream;
  return { stdout: stream, stderr: stream, text: () => text };
}

describe('CLI human output', () => {
  it('writes control characters of the data as escapes, tabs and newlines too (they forge lines and columns)', () => {
    expect(printable('a\u001b]0;x\u0007b\u009b2J\u007f\tc\nd\re\u0085f')).toBe(
      'a\\u001b]0;x\\u0007b\\u009b2J\\u007f\\u0009c\\u000ad\\u000de\\u0085f',
    );
    expect(printable('café → ok')).toBe('café → ok');
  });

  it('writes the line and paragraph separators as escapes, as --json does (was: raw in human output only)', () => {
    expect(printable('type\u2028forged line\u2029x')).toBe('type\\u2028forged line\\u2029x');
    expect(printableLines('{\n  "type": "a\u2028b"\n}')).toBe('{\n  "type": "a\\u2028b"\n}');
    expect(terminalSafeJson({ type: 'a\u2028b' })).toBe('{"type":"a\\u2028b"}');
  });

  it('writes bidirectional controls as escapes: U+202E would show "…txt.exe" as "exe.txt…"', () => {
    expect(printable('a\u202eexe.txt\u2066b\u200fc')).toBe('a\\u202eexe.txt\\u2066b\\u200fc');
    expect(printableLines('{\n  "e": "\u202ex"\n}')).toBe('{\n  "e": "\\u202ex"\n}');
    expect(printable('עברית ok')).toBe('עברית ok');
  });

  it('writes invisible format characters as escapes, so two different ids never look the same (console probe)', () => {
    expect(printable('order\u200b-1\u2060\ufeff')).toBe('order\\u200b-1\\u2060\\ufeff');
    expect(printableLines('{\n  "id": "a\u2063b"\n}')).toBe('{\n  "id": "a\\u2063b"\n}');
    // The joiners stay: emoji sequences and Persian use them.
    expect(printable('👩\u200d💻 می\u200cخواهم')).toBe('👩\u200d💻 می\u200cخواهم');
  });

  it('--json writes DEL, C1, bidi and invisible characters as \\u escapes: the same JSON value, nothing raw for the terminal (console probe)', () => {
    const value = { id: 'c1-\u009b2J\u009d0;PWNED\u009c', type: 'a\u202eb\u200bc\u007f\u2028', data: { n: 1, é: 'café' } };
    for (const text of [terminalSafeJson(value), terminalSafeJson(value, 2)]) {
      expect(JSON.parse(text)).toEqual(value);
      expect(text).not.toMatch(/[\u007f-\u009f\u200b\u2028\u202e]/);
      expect(text).toContain('\\u009b2J');
      expect(text).toContain('café');
    }
    const s = streams(true);
    const out = createOutput(s, { json: true, env: {} });
    out.document(value);
    out.jsonLine(value);
    const [doc, line] = [s.text().slice(0, s.text().lastIndexOf('{"id"')), s.text().slice(s.text().lastIndexOf('{"id"'))];
    expect(JSON.parse(doc)).toEqual(value);
    expect(JSON.parse(line)).toEqual(value);
    expect(s.text()).not.toMatch(/[\u007f-\u009f\u202e]/);
  });

  it('keeps the newlines of text herald lays out itself, escaping every other control character', () => {
    expect(printableLines('{\n  "a": "x\u009b2J\ty"\n}')).toBe('{\n  "a": "x\\u009b2J\\u0009y"\n}');
  });

  it('escapes table cells and field values but still colours a styled field on a terminal', () => {
    const s = streams(true);
    const out = createOutput(s, { json: false, env: {} });
    out.table(['TYPE'], [['t\u001b[2J']]);
    out.fields([
      ['sink', 'http://x/\u001b]52;c;eA==\u0007'],
      ['state', 'active', 'green'],
    ]);
    const written = s.text();
    expect(written).toContain('t\\u001b[2J');
    expect(written).toContain('http://x/\\u001b]52;c;eA==\\u0007');
    // (node's styleText itself leaves colours out when the test's own stdout is not a terminal)
    // eslint-disable-next-line no-control-regex -- the colour codes styleText writes
    expect(written).toMatch(/state: {2}(\u001b\[32m)?active(\u001b\[39m)?\n/);
    // eslint-disable-next-line no-control-regex -- colour codes out, then no control character may be left
    expect(written.replace(/\u001b\[[0-9;]*m/g, '')).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/);
  });
});
