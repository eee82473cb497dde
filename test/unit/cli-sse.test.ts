import { MAX_SSE_BYTES, SseTooLargeError, createSseParser, type SseMessage } from '../../src/cli/sse';

/** Feeds `text` to a parser in pieces of `size` characters and returns the messages it dispatched. */
function parse(text: string, size = text.length): SseMessage[] {
  const messages: SseMessage[] = [];
  const parser = createSseParser((m) => messages.push(m));
  for (let at = 0; at < text.length; at += size) parser.push(text.slice(at, at + size));
  return messages;
}

describe('createSseParser', () => {
  const stream =
    ': herald live tail\n\n' +
    'event: cloudevent\nid: 3:41\ndata: {"partition":3}\n\n' +
    ': keepalive\n\n' +
    'data: first\r\ndata:second\r\n\r\n' +
    'event: cloudevent\rdata: cr only\r\r' +
    'data: not finished';

  it('dispatches each message at its blank line, skipping comments, whatever the line endings', () => {
    expect(parse(stream)).toEqual([
      { event: 'cloudevent', id: '3:41', data: '{"partition":3}' },
      { event: 'message', data: 'first\nsecond' },
      { event: 'cloudevent', data: 'cr only' },
    ]);
  });

  it('gives the same messages however the text is split (a \\r\\n across chunks included)', () => {
    for (const size of [1, 2, 3, 7, 16]) expect(parse(stream, size)).toEqual(parse(stream));
  });

  it('joins \\r and \\n split by an empty chunk (was two line ends)', () => {
    const messages: SseMessage[] = [];
    const parser = createSseParser((m) => messages.push(m));
    for (const chunk of ['data: a\r', '', '\ndata: b\r\n', '\r\n']) parser.push(chunk);
    expect(messages).toEqual([{ event: 'message', data: 'a\nb' }]);
  });

  it('does not dispatch a message without data, and removes only one space after the colon', () => {
    expect(parse('event: x\n\ndata:  two spaces\nretry: 10\n\n')).toEqual([{ event: 'message', data: ' two spaces' }]);
  });
});

describe('createSseParser: a stream no gateway sends', () => {
  it('refuses a line that never ends once it passes the cap (was held and rescanned without bound)', () => {
    const parser = createSseParser(() => undefined);
    const chunk = 'x'.repeat(1024 * 1024);
    let pushed = 0;
    expect(() => {
      for (; pushed <= MAX_SSE_BYTES / chunk.length; pushed++) parser.push(chunk);
    }).toThrow(SseTooLargeError);
    expect(pushed).toBe(MAX_SSE_BYTES / chunk.length);
  });

  it('refuses a message whose data lines add up past the cap', () => {
    const parser = createSseParser(() => undefined);
    const line = `data: ${'y'.repeat(1024 * 1024)}\n`;
    expect(() => {
      for (let i = 0; i <= MAX_SSE_BYTES / (1024 * 1024); i++) parser.push(line);
    }).toThrow(/a stream message longer than/);
  });

  it('still reads a large message split into many chunks', () => {
    const big = 'z'.repeat(3 * 1024 * 1024);
    expect(parse(`data: ${big}\n\n`, 4096)).toEqual([{ event: 'message', data: big }]);
  });
});
