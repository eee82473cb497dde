import type { Request, Response } from 'express';
import { z } from 'zod';
import type { CloudEvent } from '../cloudevents/event';
import { toStructured } from '../cloudevents/format';
import { AppError } from '../errors';
import { compileFilters, MAX_SQL_LENGTH, type Matcher } from '../filters/filter';
import type { EventLog, StoredEvent } from '../wal/event-store';
import { endAtShutdown } from './http-server';
import { parseQuery } from './query';

/** A comment line this often keeps proxies from closing an idle stream. */
const KEEPALIVE_MS = 15_000;
/**
 * Past this many bytes written and not yet taken by the socket, the tail waits for the reader before
 * it writes more: a burst read from the log is handed over as fast as the reader takes it (a probe's
 * reader, taking all it could over loopback, was cut off by a burst written whole into the buffer).
 */
const HIGH_WATER_BYTES = 1024 * 1024;
/**
 * A reader that takes nothing of what waits for it for this long does not keep up: it is disconnected,
 * not buffered for. Long, because the socket buffers on both sides hold megabytes and the kernel takes
 * more only once a third of its buffer is free: a reader taking 150 KiB/s showed no progress for 9 s.
 */
const DRAIN_WAIT_MS = 15_000;
/**
 * Events per read, at most: a page is read into memory whole and held while the reader is waited for,
 * so reads are sized from the events seen so far to about {@link READ_BYTES} (one at a time at first,
 * and for events of a megabyte or more). With the high-water mark, about 2 MiB and one event per tail.
 */
const PAGE = 8;
const READ_BYTES = 1024 * 1024;
/** How soon a tail refused for HERALD_MAX_STREAMS may be tried again. */
const FULL_RETRY_AFTER_SECONDS = 5;

/** About what a stored event holds in memory: its data's bytes and a little for the attributes. */
function storedBytes(event: CloudEvent): number {
  const data = event.data;
  const dataBytes =
    data.kind === 'bytes' || data.kind === 'base64' ? data.bytes.length : data.kind === 'json' ? (data.text?.length ?? 1024) : 0;
  return dataBytes + 256;
}

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
export function streamEvents(store: EventLog, opts: { maxStreams: number }) {
  let open = 0;
  /**
   * Each event's message, built once for every tail that sends it: the local engine hands readers of
   * the same offsets the same decoded event (its read cache), so N tails serialise an event once.
   */
  const messages = new WeakMap<StoredEvent, Buffer>();
  const messageOf = (e: StoredEvent): Buffer => {
    let message = messages.get(e);
    if (!message) {
      const data = JSON.stringify({ partition: e.partition, offset: e.offset, event: toStructured(e.event) });
      message = Buffer.from(`event: cloudevent\nid: ${e.partition}:${e.offset}\ndata: ${data}\n\n`);
      messages.set(e, message);
    }
    return message;
  };
  return async (req: Request, res: Response): Promise<void> => {
    const { sql } = parseQuery(z.object({ sql: z.string().min(1).max(MAX_SQL_LENGTH).optional() }), req);
    const matches = matcherOf(sql);
    // Each tail reads and holds pages of its own: their number is bounded, as a reader's memory is.
    if (open >= opts.maxStreams)
      throw new AppError('unavailable', `${opts.maxStreams} live tails are open, as many as HERALD_MAX_STREAMS allows; try again later`, {
        headers: { 'retry-after': String(FULL_RETRY_AFTER_SECONDS) },
      });
    // HEAD (express routes it here): the headers a GET would get, a 503 when full included (security probe:
    // it said 200), and no tail to hold open.
    if (req.method === 'HEAD') return void res.writeHead(200, STREAM_HEADERS).end();
    open++;
    let counted = true;
    const uncount = () => {
      if (counted) open--;
      counted = false;
    };
    let cursors: number[];
    try {
      cursors = (await store.heads()).slice();
    } catch (err) {
      uncount();
      throw err;
    }
    if (res.closed || res.destroyed) return uncount(); // the reader left while the heads were read
    res.writeHead(200, STREAM_HEADERS);
    res.write(': herald live tail\n\n');
    let closed = false;
    /** Ends the tail: `end` when the client went away, `destroy` to cut off a reader that fell behind (or a failed read). */
    const stop = (how: 'end' | 'destroy') => {
      if (closed) return;
      closed = true;
      uncount();
      unsubscribe();
      clearInterval(keepalive);
      if (how === 'end') res.end();
      else res.destroy();
    };
    /**
     * Resolves true once the reader has taken what waits for it down to {@link HIGH_WATER_BYTES} (at
     * once when it has), false when it takes nothing for {@link DRAIN_WAIT_MS} or the stream ended.
     */
    let waiting: Promise<boolean> | undefined;
    const keptUp = (): Promise<boolean> => {
      if (res.writableLength <= HIGH_WATER_BYTES) return Promise.resolve(!closed);
      // One wait for every partition's catch-up: one pair of listeners, whatever the partition count.
      waiting ??= new Promise<boolean>((resolve) => {
        // Cut off only a reader that takes nothing for DRAIN_WAIT_MS: a slow one that keeps taking is waited for.
        let left = res.writableLength;
        let stalledSince = performance.now();
        const done = (ok: boolean) => {
          clearInterval(watch);
          res.off('drain', onDrain);
          res.off('close', onClose);
          waiting = undefined;
          resolve(ok && !closed);
        };
        const onDrain = () => done(true);
        const onClose = () => done(false);
        const watch = setInterval(() => {
          if (res.writableLength < left) {
            left = res.writableLength;
            stalledSince = performance.now();
          } else if (performance.now() - stalledSince >= DRAIN_WAIT_MS) done(false);
        }, 250);
        res.on('drain', onDrain);
        res.on('close', onClose);
      });
      return waiting;
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
    let turn: Promise<void> = Promise.resolve();
    const running = new Set<number>();
    const again = new Set<number>();
    /** Starts the partition's catch-up, or asks the running one to look again when it is done. */
    const catchUp = (partition: number): void => {
      if (running.has(partition)) {
        again.add(partition);
        return;
      }
      running.add(partition);
      // One partition's catch-up at a time per stream: a reader being waited for holds one page, not one per partition.
      const run = turn.then(() => readToHead(partition));
      turn = run.catch(() => undefined);
      run.then(
        () => {
          running.delete(partition);
          if (again.delete(partition) && !closed) catchUp(partition);
        },
        () => stop('destroy'), // the reader reconnects; a read that failed once would fail it again now
      );
    };
    /** The events' size on average so far (0: none seen yet), which sizes each read. */
    let perEvent = 0;
    let seen = 0;
    const readSize = () => (perEvent === 0 ? 1 : Math.max(1, Math.min(PAGE, Math.floor(READ_BYTES / perEvent))));
    const readToHead = async (partition: number): Promise<void> => {
      const head = (await store.heads())[partition] ?? 0;
      while (!closed && cursors[partition]! < head) {
        const page = await store.read(partition, cursors[partition]!, readSize());
        for (const e of page.events) {
          if (closed) return;
          seen = Math.min(seen + 1, 64);
          perEvent += (storedBytes(e.event) - perEvent) / seen;
          if (!matches || matches(e.event.attributes)) {
            res.write(messageOf(e));
            // A reader that does not keep up is cut off rather than buffered for; it reconnects and continues from then.
            if (!(await keptUp())) return stop('destroy');
          }
        }
        const last = page.events[page.events.length - 1];
        // Past the page, a corrupt record, or a gap: never wait on an offset that will not come.
        // A newer node's event (a rolling upgrade) is passed over like a corrupt one: this node cannot show it.
        const skipped = page.corruptOffset ?? page.newerFormatOffset;
        cursors[partition] = skipped !== undefined ? skipped + 1 : last ? last.offset + 1 : head;
      }
    };
    // Not while events wait for the reader: they keep the connection alive themselves.
    const keepalive = setInterval(() => res.writableLength === 0 && res.write(': keepalive\n\n'), KEEPALIVE_MS);
    keepalive.unref();
    // The answer's close, not the request's: a request emits it once its body is read, and a tail sent with a
    // body (read and discarded) ended at once (re-probe). The answer's comes when the client goes, and the
    // connection's too (node emits none for an answer queued behind an unfinished one: its slot was kept).
    res.on('close', () => stop('end'));
    req.socket.once('close', () => stop('end'));
    endAtShutdown(res, () => stop('end'));
  };
}
