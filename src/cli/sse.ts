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

  /** The line not ended yet, in the chunks it came in: joined once, when it ends (appending to one string made each chunk cost the whole line). */
  let pending: string[] = [];
  let pendingLength = 0;
  /** A \r ended the last chunk: a \n starting the next one belongs to it. */
  let afterCr = false;
  return {
    push(text: string) {
      if (text.length === 0) return; // an empty chunk between \r and \n changes nothing
      let start = 0;
      if (afterCr && text.startsWith('\n')) start = 1;
      afterCr = false;
      for (let i = start; i < text.length; i++) {
        const c = text.charCodeAt(i);
        if (c !== 10 && c !== 13) continue;
        pending.push(text.slice(start, i));
        const line = pending.length === 1 ? pending[0]! : pending.join('');
        pending = [];
        pendingLength = 0;
        field(line);
        if (c === 13) {
          if (i + 1 === text.length) afterCr = true;
          else if (text.charCodeAt(i + 1) === 10) i++;
        }
        start = i + 1;
      }
      if (start < text.length) {
        pending.push(text.slice(start));
        pendingLength += text.length - start;
        if (pendingLength > MAX_SSE_BYTES) throw new SseTooLargeError(`a stream line longer than ${MAX_SSE_BYTES} characters`);
      }
    },
  };
}
