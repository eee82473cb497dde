import type { Request, Response } from 'express';
import { z } from 'zod';
import { toStructured } from '../cloudevents/format';
import { AppError } from '../errors';
import { compileFilters, MAX_SQL_LENGTH, type Matcher } from '../filters/filter';
import type { EventLog } from '../wal/event-store';
import { parseInput } from './query';

/** A comment line this often keeps proxies from closing an idle stream. */
const KEEPALIVE_MS = 15_000;
/** A reader this far behind (bytes written but not taken by the socket) is disconnected, not buffered for. */
const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;
const PAGE = 256;

/** `sql` of `GET /events/stream`: the subscriptions' CloudEvents SQL dialect; a bad expression is a 400. */
function matcherOf(sql: string | undefined): Matcher | undefined {
  if (sql === undefined) return undefined;
  try {
    return compileFilters([{ sql }]);
  } catch (err) {
    if (!(err instanceof AppError)) throw err;
    throw new AppError('invalid_request', 'the sql expression is not valid', {
      details: err.details.map((d) => ({ attribute: 'sql', message: d.message })),
    });
  }
}

/** The stream's response headers (HEAD answers them too). */
const STREAM_HEADERS = { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' };

/**
 * `GET /events/stream`: a live tail as Server-Sent Events. From the moment of the request, every
 * stored event (matching `sql`, when given) is one message `event: cloudevent`, `id: <partition>:<offset>`,
 * `data: {"partition","offset","event"}`, in offset order within each partition. Reads follow the
 * store's append notifications, so the stream costs nothing while nothing is stored (on the JetStream
 * engine these are the appends made through this node). Reads may be asynchronous: one catch-up runs
 * per partition at a time, and a notification during it runs it once more.
 */
export function streamEvents(store: EventLog) {
  return async (req: Request, res: Response): Promise<void> => {
    const { sql } = parseInput(z.object({ sql: z.string().min(1).max(MAX_SQL_LENGTH).optional() }), req.query, 'query');
    const matches = matcherOf(sql);
    // HEAD (express routes it here): the headers a GET would get, and no tail to hold open.
    if (req.method === 'HEAD') return void res.writeHead(200, STREAM_HEADERS).end();
    const cursors = (await store.heads()).slice();
    if (res.closed || res.destroyed) return; // the reader left while the heads were read
    res.writeHead(200, STREAM_HEADERS);
    res.write(': herald live tail\n\n');
    let closed = false;
    /** Ends the tail: `end` when the client went away, `destroy` to cut off a reader that fell behind (or a failed read). */
    const stop = (how: 'end' | 'destroy') => {
      if (closed) return;
      closed = true;
      unsubscribe();
      clearInterval(keepalive);
      if (how === 'end') res.end();
      else res.destroy();
    };
    const send = (text: string): void => {
      res.write(text);
      // A slow reader is cut off rather than buffered without bound; it reconnects and continues from now.
      if (res.writableLength > MAX_BUFFERED_BYTES) stop('destroy');
    };
    // Appends are announced from the commit path: note the partitions and read after it, once per turn.
    const grown = new Set<number>();
    let scheduled = false;
    const unsubscribe = store.onAppend((partitions) => {
      for (const p of partitions) grown.add(p);
      if (scheduled) return;
      scheduled = true;
      setImmediate(() => {
        scheduled = false;
        const todo = [...grown];
        grown.clear();
        for (const partition of todo) catchUp(partition);
      });
    });
    const running = new Set<number>();
    const again = new Set<number>();
    /** Starts the partition's catch-up, or asks the running one to look again when it is done. */
    const catchUp = (partition: number): void => {
      if (running.has(partition)) {
        again.add(partition);
        return;
      }
      running.add(partition);
      readToHead(partition).then(
        () => {
          running.delete(partition);
          if (again.delete(partition) && !closed) catchUp(partition);
        },
        () => stop('destroy'), // the reader reconnects; a read that failed once would fail it again now
      );
    };
    const readToHead = async (partition: number): Promise<void> => {
      const head = (await store.heads())[partition] ?? 0;
      while (!closed && cursors[partition]! < head) {
        const page = await store.read(partition, cursors[partition]!, PAGE);
        for (const e of page.events) {
          if (closed) return;
          if (!matches || matches(e.event.attributes)) {
            const data = JSON.stringify({ partition: e.partition, offset: e.offset, event: toStructured(e.event) });
            send(`event: cloudevent\nid: ${e.partition}:${e.offset}\ndata: ${data}\n\n`);
          }
        }
        const last = page.events[page.events.length - 1];
        // Past the page, a corrupt record, or a gap: never wait on an offset that will not come.
        // A newer node's event (a rolling upgrade) is passed over like a corrupt one: this node cannot show it.
        const skipped = page.corruptOffset ?? page.newerFormatOffset;
        cursors[partition] = skipped !== undefined ? skipped + 1 : last ? last.offset + 1 : head;
      }
    };
    const keepalive = setInterval(() => send(': keepalive\n\n'), KEEPALIVE_MS);
    keepalive.unref();
    req.on('close', () => stop('end'));
    res.on('close', () => stop('end'));
  };
}
