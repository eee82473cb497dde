import type { Router } from 'express';
import type { SubscriptionsService } from '../subscriptions/service';
import { newRouter, requireScope } from './routing';

/**
 * `/validations/{token}`: the `WebHook-Request-Callback` of the CloudEvents validation handshake
 * (issue 12 §4). A sink calls it, with `GET` or `POST`, to consent later; the unguessable token is
 * its only credential (no API key). Consent is the `WebHook-Allowed-Origin` header, not the call.
 * A body, if any, is ignored.
 */
export function createValidationsRouter(service: SubscriptionsService): Router {
  const router = newRouter();
  const open = requireScope('none');
  router.get('/validations/:token', open, async (req, res) => {
    res.json(await service.validationCallback(req.params.token, req.headers));
  });
  router.post('/validations/:token', open, async (req, res) => {
    res.json(await service.validationCallback(req.params.token, req.headers));
  });
  return router;
}
