import { Router } from 'express';
import { z } from 'zod';
import { toStructured } from '../cloudevents/format';
import { AppError } from '../errors';
import type { EventStore } from '../log/event-store';
import { parseInput, queryInt } from './query';

const MAX_PAGE = 1000;

/** Reads from the log: one event by source+id, a partition page for replay, partition heads. */
export function createEventsRouter(store: EventStore): Router {
  const router = Router();

  router.get('/events', (req, res) => {
    const { source, id } = parseInput(z.object({ source: z.string().min(1), id: z.string().min(1) }), req.query, 'query');
    const found = store.lookup(source, id);
    if (!found) throw new AppError('not_found', `no event with source "${source}" and id "${id}" (or it is older than the idempotency window)`);
    res.json({ event: toStructured(found.event), partition: found.partition, offset: found.offset });
  });

  router.get('/partitions', (_req, res) => {
    res.json({ partitions: store.heads().map((headOffset, partition) => ({ partition, headOffset })) });
  });

  router.get('/partitions/:partition/events', (req, res) => {
    const { partition } = parseInput(z.object({ partition: z.coerce.number().int().min(0) }), req.params, 'path');
    if (partition >= store.partitions) throw new AppError('not_found', `partition ${partition} does not exist (there are ${store.partitions})`);
    const { from, limit } = parseInput(z.object({ from: queryInt(0), limit: queryInt(100, MAX_PAGE) }), req.query, 'query');
    const events = limit === 0 ? [] : store.read(partition, from, limit);
    const last = events[events.length - 1];
    res.json({
      events: events.map((e) => ({ partition: e.partition, offset: e.offset, event: toStructured(e.event) })),
      nextOffset: last ? last.offset + 1 : Math.min(from, store.heads()[partition]!),
    });
  });

  return router;
}
