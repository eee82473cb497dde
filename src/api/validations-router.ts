import type { Router } from 'express';
import type { SubscriptionsService } from '../subscriptions/service';
import { AppError } from '../errors';
import { newRouter, requireScope } from './routing';

/**
 * `/validations/{token}`: the `WebHook-Request-Callback` of the CloudEvents validation handshake
 * (issue 12 §4). A sink calls it, with `GET` or `POST`, to consent later, or an administrator opens
 * it in a browser (http-webhook §4.1.3); the unguessable token is its only credential (no API key).
 * The call consents unless its `WebHook-Allowed-Origin` names another origin. A body, if any, is
 * ignored. `HEAD` (which express would answer with the `GET` handler) consents to nothing: link
 * checkers and URL scanners send it.
 */
export function createValidationsRouter(service: SubscriptionsService): Router {
  const router = newRouter();
  const open = requireScope('none');
  router.get('/validations/:token', open, async (req, res) => {
    // Express runs this for HEAD too (no route of its own, so the contract's route list stays as it is).
    if (req.method === 'HEAD') throw new AppError('not_found', 'HEAD does not consent: call this URL with GET or POST');
    res.json(await service.validationCallback(req.params.token, req.headers));
  });
  router.post('/validations/:token', open, async (req, res) => {
    res.json(await service.validationCallback(req.params.token, req.headers));
  });
  return router;
}
