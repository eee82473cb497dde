import type { Router } from 'express';
import { z } from 'zod';
import { createSubscriptionSchema, patchSubscriptionSchema, rotateSecretSchema } from '../subscriptions/schema';
import { seekSchema } from '../subscriptions/seek-schema';
import { ATTEMPTS_KEPT } from '../store/attempts-repo';
import type { SubscriptionsService } from '../subscriptions/service';
import { parseInput, parseQuery, pathInt, queryInt } from './query';
import { jsonBody, newRouter, refuseOverlongIds, requireScope, type AnyRouteHandler } from './routing';

const MAX_PAGE = 1000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * `GET /subscriptions`' query: `after` is a previous page's `nextAfter`, the creation time (ms) and id
 * of its last subscription, so a page starts right even when that subscription was deleted meanwhile.
 */
const listQuery = z.object({
  limit: z.preprocess((v) => (v === '' ? undefined : v), pathInt(MAX_PAGE).pipe(z.number().min(1)).optional()),
  after: z.preprocess(
    (v) => (v === '' ? undefined : v),
    z
      .string()
      .regex(/^[0-9]{1,15}_[0-9A-Za-z-]{1,64}$/, 'expected the nextAfter of a previous page')
      .transform((cursor) => {
        const cut = cursor.indexOf('_');
        return { createdAt: Number(cursor.slice(0, cut)), id: cursor.slice(cut + 1) };
      })
      .optional(),
  ),
});

/**
 * `/subscriptions…`: CRUD, pause/resume, seek, secret rotation, dead letters. Bodies and queries are
 * validated here; the service takes their typed output. For a subscription that does not exist the
 * answer is 404 whatever the body: checked before the body is read (or, under `Expect: 100-continue`,
 * asked for), so a client is not made to send one for nothing.
 */
export function createSubscriptionsRouter(service: SubscriptionsService, opts: { basePath?: string } = {}): Router {
  const router = newRouter();
  refuseOverlongIds(router, 'id', 'subscription', 'ids are UUIDs, 36');
  // UUIDs are case-insensitive (RFC 9562 §4); Herald makes them in lower case (API probe: an upper-case id was a 404).
  router.param('id', (req, _res, next, id: string) => {
    if (UUID.test(id)) req.params.id = id.toLowerCase();
    next();
  });
  const admin = requireScope('admin');
  const exists: AnyRouteHandler = async (req, _res, next) => {
    await service.assertExists(String(req.params.id));
    next();
  };

  router.post('/subscriptions', admin, jsonBody, async (req, res) => {
    const created = await service.create(parseInput(createSubscriptionSchema, req.body, 'subscription'));
    // Under HERALD_PUBLIC_URL's path, as clients behind its proxy reach it (API probe: the prefix was left out).
    res
      .status(201)
      .location(`${opts.basePath ?? ''}/subscriptions/${created.id}`)
      .json(created);
  });
  router.get('/subscriptions', admin, async (req, res) => {
    const { limit, after } = parseQuery(listQuery, req);
    const { subscriptions, next } = await service.list({ limit, after });
    // Unpaged, the answer is what it always was; paged, it says where the next page starts.
    const paged = limit !== undefined || after !== undefined;
    res.json(paged ? { subscriptions, nextAfter: next && `${next.createdAt}_${next.id}` } : { subscriptions });
  });
  router.get('/subscriptions/:id', admin, async (req, res) => {
    res.json(await service.get(req.params.id));
  });
  router.patch('/subscriptions/:id', admin, exists, jsonBody, async (req, res) => {
    const input = parseInput(patchSubscriptionSchema, req.body, 'subscription update');
    res.json(await service.patch(req.params.id, input));
  });
  router.delete('/subscriptions/:id', admin, async (req, res) => {
    await service.remove(req.params.id);
    res.status(204).end();
  });
  router.post('/subscriptions/:id/pause', admin, async (req, res) => {
    res.json(await service.pause(req.params.id));
  });
  router.post('/subscriptions/:id/resume', admin, async (req, res) => {
    res.json(await service.resume(req.params.id));
  });
  router.post('/subscriptions/:id/seek', admin, exists, jsonBody, async (req, res) => {
    res.json(await service.seek(req.params.id, parseInput(seekSchema, req.body ?? {}, 'seek')));
  });
  router.post('/subscriptions/:id/rotate-secret', admin, exists, jsonBody, async (req, res) => {
    res.json(await service.rotateSecret(req.params.id, parseInput(rotateSecretSchema, req.body ?? {}, 'request')));
  });

  router.get('/subscriptions/:id/attempts', admin, async (req, res) => {
    const page = parseQuery(
      z.object({ limit: queryInt(100, ATTEMPTS_KEPT).pipe(z.number().min(1)), before: queryInt(Number.MAX_SAFE_INTEGER) }),
      req,
    );
    res.json(await service.attempts(req.params.id, page));
  });
  router.get('/subscriptions/:id/dead-letters', admin, async (req, res) => {
    // At least 1, as the other lists: an empty page of 0 said `nextAfter: null`, "no more", whatever there was (retention probe).
    const page = parseQuery(z.object({ limit: queryInt(100, MAX_PAGE).pipe(z.number().min(1)), after: queryInt(0) }), req);
    res.json(await service.deadLetters(req.params.id, page));
  });
  router.post('/subscriptions/:id/dead-letters/redeliver', admin, exists, jsonBody, async (req, res) => {
    const { ids } = parseInput(z.object({ ids: z.array(z.string().min(1)).max(10_000).optional() }).strict(), req.body ?? {}, 'request');
    res.status(202).json({ redelivering: await service.redeliver(req.params.id, ids) });
  });
  router.delete('/subscriptions/:id/dead-letters/:deadLetterId', admin, async (req, res) => {
    await service.deleteDeadLetter(req.params.id, req.params.deadLetterId);
    res.status(204).end();
  });
  return router;
}
