/**
 * A Server-Sent Events parser for a stream read with `fetch()` (EventSource cannot send an
 * `Authorization` header). Pure: feed it decoded text in chunks of any size, it returns the
 * messages completed so far. Follows the HTML event-stream rules: lines end with CRLF, LF or CR;
 * `:` starts a comment; one space after the colon is dropped; `data` lines join with `\n`; a blank
 * line dispatches (a message without data is dropped); a final message without its blank line is
 * never dispatched.
 * @see https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
 */
export interface SseMessage {
  event: string;
  data: string;
  id?: string;
}

export interface SseParser {
  push(text: string): SseMessage[];
}

export function createSseParser(): SseParser {
  let buffer = '';
  let event = '';
  let data: string[] = [];
  let id: string | undefined;
  // A CR at the very end of a chunk may be the first half of a CRLF split across chunks.
  let pendingCr = false;

  const line = (text: string, out: SseMessage[]) => {
    if (text === '') {
      if (data.length > 0) out.push({ event: event || 'message', data: data.join('\n'), ...(id !== undefined ? { id } : {}) });
      event = '';
      data = [];
      return;
    }
    if (text.startsWith(':')) return;
    const colon = text.indexOf(':');
    const field = colon === -1 ? text : text.slice(0, colon);
    let value = colon === -1 ? '' : text.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
    else if (field === 'id' && !value.includes('\0')) id = value;
  };

  return {
    push(text) {
      const out: SseMessage[] = [];
      if (pendingCr && text.startsWith('\n')) text = text.slice(1);
      pendingCr = false;
      buffer += text;
      const parts = buffer.split(/\r\n|\r|\n/);
      buffer = parts.pop() ?? '';
      if (buffer === '' && text.endsWith('\r')) pendingCr = true;
      for (const part of parts) line(part, out);
      return out;
    },
  };
}
