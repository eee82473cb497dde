import { createOutput, printable, printableLines, type CliStreams } from '../../src/cli/output';

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

  it('writes bidirectional controls as escapes: U+202E would show "…txt.exe" as "exe.txt…"', () => {
    expect(printable('a\u202eexe.txt\u2066b\u200fc')).toBe('a\\u202eexe.txt\\u2066b\\u200fc');
    expect(printableLines('{\n  "e": "\u202ex"\n}')).toBe('{\n  "e": "\\u202ex"\n}');
    expect(printable('עברית ok')).toBe('עברית ok');
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
