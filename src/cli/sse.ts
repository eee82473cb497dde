/** One Server-Sent Events message. */
export interface SseMessage {
  /** `event:` field; `message` when absent. */
  event: string;
  /** `id:` field, when the message has one. */
  id?: string;
  /** The `data:` lines joined with `\n`. */
  data: string;
}

/** A line, or a message's data, longer than this is not from a gateway: the stream is refused. */
export const MAX_SSE_BYTES = 16 * 1024 * 1024;

/** A stream the parser will not hold: a line or a message past {@link MAX_SSE_BYTES}. */
export class SseTooLargeError extends Error {
  override name = 'SseTooLargeError';
}

/**
 * An incremental Server-Sent Events parser: feed it decoded text in chunks of any size (a line
 * may be split anywhere); it calls `onMessage` for each complete message. Comments (`:` lines) and
 * `retry:` are ignored; a message without data is not dispatched. Each character is scanned once
 * (an endless line costs memory up to the cap, not time per chunk), and a line or message over
 * {@link MAX_SSE_BYTES} throws {@link SseTooLargeError}.
 * @see https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
 */
export function createSseParser(onMessage: (message: SseMessage) => void): { push(text: string): void } {
  let buffer = '';
  /** Where the search for a line end resumes: everything before it has none. */
  let scanned = 0;
  let event = '';
  let id: string | undefined;
  let data: string[] = [];
  let dataLength = 0;

  const dispatch = () => {
    if (data.length > 0) onMessage({ event: event || 'message', ...(id === undefined ? {} : { id }), data: data.join('\n') });
    event = '';
    id = undefined;
    data = [];
    dataLength = 0;
  };

  const field = (line: string) => {
    if (line === '') return dispatch();
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const name = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (name === 'data') {
      dataLength += value.length + 1;
      if (dataLength > MAX_SSE_BYTES) throw new SseTooLargeError(`a stream message longer than ${MAX_SSE_BYTES} characters`);
      data.push(value);
    } else if (name === 'event') event = value;
    else if (name === 'id' && !value.includes('\0')) id = value;
  };

  const lineEnd = /\r\n|\n|\r/g;
  return {
    push(text: string) {
      buffer += text;
      let start = 0;
      lineEnd.lastIndex = scanned;
      for (let match = lineEnd.exec(buffer); match; match = lineEnd.exec(buffer)) {
        // A \r at the very end may be the first half of \r\n: it waits for the next chunk.
        if (match[0] === '\r' && match.index === buffer.length - 1) break;
        field(buffer.slice(start, match.index));
        start = match.index + match[0].length;
      }
      buffer = buffer.slice(start);
      scanned = buffer.endsWith('\r') ? buffer.length - 1 : buffer.length;
      if (buffer.length > MAX_SSE_BYTES) throw new SseTooLargeError(`a stream line longer than ${MAX_SSE_BYTES} characters`);
    },
  };
}
