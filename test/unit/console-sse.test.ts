import fc from 'fast-check';
import { createSseParser, type SseMessage } from '../../console/sse';

/** The console's Server-Sent Events parser (it reads `GET /events/stream` with fetch, to send the API key). */
describe('the console SSE parser', () => {
  const parseAll = (chunks: string[]): SseMessage[] => {
    const parser = createSseParser();
    return chunks.flatMap((c) => parser.push(c));
  };

  it('reads what the gateway sends: a comment, then cloudevent messages with an id', () => {
    const stream =
      ': herald live tail\n\n' +
      'event: cloudevent\nid: 3:41\ndata: {"partition":3,"offset":41}\n\n' +
      ': keepalive\n\n' +
      'event: cloudevent\nid: 0:7\ndata: {"partition":0,"offset":7}\n\n';
    expect(parseAll([stream])).toEqual([
      { event: 'cloudevent', id: '3:41', data: '{"partition":3,"offset":41}' },
      { event: 'cloudevent', id: '0:7', data: '{"partition":0,"offset":7}' },
    ]);
  });

  it('joins data lines, drops one leading space only, defaults the event name, and accepts CRLF and CR', () => {
    expect(parseAll(['data:  two spaces\r\ndata:x\r\n\r\n', 'event:\rdata\r\r'])).toEqual([
      { event: 'message', data: ' two spaces\nx' },
      { event: 'message', data: '' },
    ]);
  });

  it('does not dispatch a message without data, or one whose blank line has not arrived', () => {
    expect(parseAll(['event: cloudevent\n\n', 'event: cloudevent\ndata: {}\n'])).toEqual([]);
  });

  it('gives the same messages however the stream is cut into chunks, a CRLF split included', () => {
    const stream = 'event: cloudevent\r\nid: 1:2\r\ndata: {"a":1}\r\n\r\n: c\r\nevent: cloudevent\r\ndata: é\r\n\r\n';
    const whole = parseAll([stream]);
    expect(whole).toHaveLength(2);
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 1, max: stream.length - 1 }), { maxLength: 12 }), (cuts) => {
        const at = [0, ...cuts.sort((a, b) => a - b), stream.length];
        const chunks = at.slice(1).map((end, i) => stream.slice(at[i], end));
        expect(parseAll(chunks)).toEqual(whole);
      }),
    );
  });
});
