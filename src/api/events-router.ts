import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Router } from 'express';
import { z } from 'zod';
import { toStructured } from '../cloudevents/format';
import { AppError } from '../errors';
import { newerFormatUnavailable, type EventLog, type ReadPage } from '../wal/event-store';
import { streamEvents } from './event-stream';
import { parseInput, pathInt, queryInt } from './query';
import { newRouter, requireScope } from './routing';

const MAX_PAGE = 1000;

/**
 * `POST /events` (the ingest handler: the gateway's node:http fast path serves the same requests
 * before express sees them, so this route is what express lists and answers `OPTIONS` with), and
 * reads from the log: one event by source+id, a partition page for replay, partition heads.
 */
export function createEventsRouter(store: EventLog, ingest: (req: IncomingMessage, res: ServerResponse) => Promise<void>): Router {
  const router = newRouter();
  const read = requireScope('read');

  router.post('/events', requireScope('publish'), (req, res) => ingest(req, res));

  router.get('/events/stream', read, streamEvents(store));

  router.get('/events', read, async (req, res) => {
    const { source, id } = parseInput(z.object({ source: z.string().min(1), id: z.string().min(1) }), req.query, 'query');
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
    const { from, limit } = parseInput(z.object({ from: queryInt(0), limit: queryInt(100, MAX_PAGE) }), req.query, 'query');
    // The bounds first, then the page: an empty page continues at a head read before it, so an event
    // stored while an engine with asynchronous reads (JetStream) reads the page is never skipped.
    const [heads, firstOffsets] = await Promise.all([store.heads(), store.firstOffsets()]);
    const page: ReadPage = limit === 0 ? { events: [] } : await store.read(partition, from, limit);
    if (page.newerFormatOffset !== undefined && page.events.length === 0) throw newerFormatUnavailable(partition, page.newerFormatOffset);
    const head = heads[partition]!;
    const first = Math.min(firstOffsets[partition] ?? 0, head);
    const last = page.events[page.events.length - 1];
    // A corrupt record ends the page and is named, so a reader can see it and go on past it. An empty
    // page continues at the head: offsets between are a gap (lost records are never reused).
    const nextOffset =
      page.corruptOffset !== undefined
        ? page.corruptOffset + 1
        : last
          ? last.offset + 1
          : limit === 0
            ? Math.min(Math.max(from, first), head)
            : head;
    res.json({
      events: page.events.map((e) => ({ partition: e.partition, offset: e.offset, event: toStructured(e.event) })),
      nextOffset,
      firstOffset: first,
      ...(page.corruptOffset !== undefined ? { corruptOffset: page.corruptOffset } : {}),
    });
  });

  return router;
}
