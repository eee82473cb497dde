import type { Router } from 'express';
import { z } from 'zod';
import type { DeliveryCallbacks } from '../delivery/dispatcher';
import { AppError } from '../errors';
import { parseInput } from './query';
import { jsonBody, newRouter, requireScope } from './routing';

const MAX_LEASE_MS = 12 * 3600 * 1000;
const MAX_DELIVERY_ID_LENGTH = 128;

/**
 * Receivers' callbacks for manual acknowledgement. Authorised by the
 * unguessable delivery id alone: the receiver got it in the delivery.
 */
export function createDeliveriesRouter(dispatcher: DeliveryCallbacks): Router {
  const router = newRouter();
  const open = requireScope('none');
  const body = (req: { body?: unknown }) => req.body ?? {};
  // An id far past any delivery id's length is no attempt, and is not echoed back (a probe's 10,000 characters made a 20 KB 404).
  router.param('deliveryId', (_req, _res, next, id: string) => {
    if (id.length > MAX_DELIVERY_ID_LENGTH)
      throw new AppError('not_found', `no delivery attempt has an id of ${id.length} characters (delivery ids are dlv_ and 24 more)`);
    next();
  });

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
