/** One Server-Sent Events message. */
export interface SseMessage {
  /** `event:` field; `message` when absent. */
  event: string;
  /** `id:` field, when the message has one. */
  id?: string;
  /** The `data:` lines joined with `\n`. */
  data: string;
}

/**
 * An incremental Server-Sent Events parser: feed it decoded text in chunks of any size (a line
 * may be split anywhere); it calls `onMessage` for each complete message. Comments (`:` lines) and
 * `retry:` are ignored; a message without data is not dispatched.
 * @see https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
 */
export function createSseParser(onMessage: (message: SseMessage) => void): { push(text: string): void } {
  let buffer = '';
  let event = '';
  let id: string | undefined;
  let data: string[] = [];

  const dispatch = () => {
    if (data.length > 0) onMessage({ event: event || 'message', ...(id === undefined ? {} : { id }), data: data.join('\n') });
    event = '';
    id = undefined;
    data = [];
  };

  const field = (line: string) => {
    if (line === '') return dispatch();
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const name = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (name === 'data') data.push(value);
    else if (name === 'event') event = value;
    else if (name === 'id' && !value.includes('\0')) id = value;
  };

  return {
    push(text: string) {
      buffer += text;
      // Lines end with \r\n, \n or \r; a trailing \r may be the first half of \r\n, so it waits.
      for (;;) {
        const match = /\r\n|\n|\r(?!$)/.exec(buffer);
        if (!match) break;
        field(buffer.slice(0, match.index));
        buffer = buffer.slice(match.index + match[0].length);
      }
    },
  };
}
