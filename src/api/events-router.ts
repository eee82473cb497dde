import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Router } from 'express';
import { z } from 'zod';
import { toStructured } from '../cloudevents/format';
import { AppError } from '../errors';
import { newerFormatUnavailable, PAGE_BYTES, type EventLog } from '../wal/event-store';
import { streamEvents } from './event-stream';
import { parseInput, parseQuery, pathInt, queryInt } from './query';
import { newRouter, requireScope } from './routing';

const MAX_PAGE = 1000;
/** Events read at first; later reads are sized from the bytes the page has left and the events so far. */
const FIRST_READ = 16;
const MAX_READ = 256;

interface BudgetedPage {
  /** Each event as the JSON the answer holds (`StoredEvent`). */
  items: string[];
  lastOffset?: number;
  corruptOffset?: number;
  newerFormatOffset?: number;
}

/** Up to `limit` events from `from`, read a few at a time, until the page holds {@link PAGE_BYTES}. */
async function readBudgeted(store: EventLog, partition: number, from: number, limit: number): Promise<BudgetedPage> {
  const page: BudgetedPage = { items: [] };
  let bytes = 0;
  let next = from;
  let ask = Math.min(limit, FIRST_READ);
  while (page.items.length < limit && bytes < PAGE_BYTES) {
    const read = await store.read(partition, next, ask);
    for (const e of read.events) {
      const item = JSON.stringify({ partition: e.partition, offset: e.offset, event: toStructured(e.event) });
      page.items.push(item);
      page.lastOffset = e.offset;
      bytes += Buffer.byteLength(item) + 1;
      if (bytes >= PAGE_BYTES) return page;
    }
    if (read.corruptOffset !== undefined) return { ...page, corruptOffset: read.corruptOffset };
    if (read.newerFormatOffset !== undefined) return { ...page, newerFormatOffset: read.newerFormatOffset };
    if (read.events.length === 0) return page;
    next = page.lastOffset! + 1;
    const perEvent = bytes / page.items.length;
    ask = Math.min(limit - page.items.length, MAX_READ, Math.max(1, Math.floor((PAGE_BYTES - bytes) / perEvent)));
  }
  return page;
}

/**
 * `POST /events` (the ingest handler: the gateway's node:http fast path serves the same requests
 * before express sees them, so this route is what express lists and answers `OPTIONS` with), and
 * reads from the log: one event by source+id, a partition page for replay, partition heads.
 */
export function createEventsRouter(
  store: EventLog,
  ingest: (req: IncomingMessage, res: ServerResponse) => Promise<void>,
  opts: { maxStreams: number },
): Router {
  const router = newRouter();
  const read = requireScope('read');

  router.post('/events', requireScope('publish'), (req, res) => ingest(req, res));

  router.get('/events/stream', read, streamEvents(store, opts));

  router.get('/events', read, async (req, res) => {
    const { source, id } = parseQuery(z.object({ source: z.string().min(1), id: z.string().min(1) }), req);
    const found = await store.lookup(source, id);
    if (!found)
      throw new AppError('not_found', `no event with source "${source}" and id "${id}" (or it is older than the idempotency window)`);
    res.json({ event: toStructured(found.event), partition: found.partition, offset: found.offset });
  });

  router.get('/partitions', read, async (_req, res) => {
    const [firstOffsets, heads] = await Promise.all([store.firstOffsets(), store.heads()]);
    res.json({
      partitions: heads.map((headOffset, partition) => ({
        partition,
        firstOffset: Math.min(firstOffsets[partition] ?? 0, headOffset),
        headOffset,
      })),
    });
  });

  router.get('/partitions/:partition/events', read, async (req, res) => {
    const { partition } = parseInput(z.object({ partition: pathInt() }), req.params, 'path');
    if (partition >= store.partitions)
      throw new AppError('not_found', `partition ${partition} does not exist (there are ${store.partitions})`);
    const { from, limit } = parseQuery(z.object({ from: queryInt(0), limit: queryInt(100, MAX_PAGE) }), req);
    // The bounds first, then the page: an empty page continues at a head read before it, so an event
    // stored while an engine with asynchronous reads (JetStream) reads the page is never skipped.
    const [heads, firstOffsets] = await Promise.all([store.heads(), store.firstOffsets()]);
    const page: BudgetedPage = limit === 0 ? { items: [] } : await readBudgeted(store, partition, from, limit);
    if (page.newerFormatOffset !== undefined && page.items.length === 0) throw newerFormatUnavailable(partition, page.newerFormatOffset);
    const head = heads[partition]!;
    const first = Math.min(firstOffsets[partition] ?? 0, head);
    // A corrupt record ends the page and is named, so a reader can see it and go on past it. An empty
    // page continues at the head: offsets between are a gap (lost records are never reused).
    const nextOffset =
      page.corruptOffset !== undefined
        ? page.corruptOffset + 1
        : page.lastOffset !== undefined
          ? page.lastOffset + 1
          : limit === 0
            ? Math.min(Math.max(from, first), head)
            : head;
    // Written from the events' own JSON: the page is never held as objects and a second time as one string.
    const rest = JSON.stringify({
      nextOffset,
      firstOffset: first,
      ...(page.corruptOffset !== undefined ? { corruptOffset: page.corruptOffset } : {}),
    });
    res.type('application/json').send(`{"events":[${page.items.join(',')}],${rest.slice(1)}`);
  });

  return router;
}
