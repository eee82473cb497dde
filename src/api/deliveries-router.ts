import type { Router } from 'express';
import { z } from 'zod';
import type { DeliveryCallbacks } from '../delivery/dispatcher';
import { parseInput } from './query';
import { jsonBodyUpTo, newRouter, refuseOverlongIds, requireScope } from './routing';

const MAX_LEASE_MS = 12 * 3600 * 1000;
/**
 * A callback's body is a number or a reason of at most 1,024 characters: 16 KiB holds any, escaped.
 * Not the API's 1 MiB: these routes take no key, and a client holding many bodies open just short of
 * their end pinned 1 MiB each (security probe: 600 connections, 729 MiB).
 */
const CALLBACK_BODY_BYTES = 16 * 1024;
const jsonBody = jsonBodyUpTo(CALLBACK_BODY_BYTES, 'the 16 KiB a callback accepts');

/**
 * Receivers' callbacks for manual acknowledgement. Authorised by the
 * unguessable delivery id alone: the receiver got it in the delivery.
 */
export function createDeliveriesRouter(dispatcher: DeliveryCallbacks): Router {
  const router = newRouter();
  const open = requireScope('none');
  const body = (req: { body?: unknown }) => req.body ?? {};
  refuseOverlongIds(router, 'deliveryId', 'delivery attempt', 'delivery ids are dlv_ and 24 more');

  // The body of an ack, if any, is ignored: no parser, so any content type is fine.
  router.post('/deliveries/:deliveryId/ack', open, async (req, res) => {
    res.json(await dispatcher.callback(req.params.deliveryId, 'ack'));
  });
  router.post('/deliveries/:deliveryId/nack', open, jsonBody, async (req, res) => {
    const { delayMs } = parseInput(
      z
        .object({
          delayMs: z
            .number()
            .int()
            .min(0)
            .max(7 * 86_400_000)
            .optional(),
        })
        .strict(),
      body(req),
      'request',
    );
    res.json(await dispatcher.callback(req.params.deliveryId, 'nack', { delayMs }));
  });
  router.post('/deliveries/:deliveryId/extend', open, jsonBody, async (req, res) => {
    const { ms } = parseInput(z.object({ ms: z.number().int().min(1).max(MAX_LEASE_MS) }).strict(), body(req), 'request');
    res.json(await dispatcher.callback(req.params.deliveryId, 'extend', { ms }));
  });
  router.post('/deliveries/:deliveryId/reject', open, jsonBody, async (req, res) => {
    const { reason } = parseInput(z.object({ reason: z.string().max(1024).optional() }).strict(), body(req), 'request');
    res.json(await dispatcher.callback(req.params.deliveryId, 'reject', { reason }));
  });
  return router;
}
