import { randomBytes } from 'node:crypto';
import type { Logger } from '../logger';
import { handshakeHeaders, judgeHandshake, requestOrigin, sinkForLog } from '../webhook-policy';
import type { SubscriptionRecord } from './record';

/** How long a sink has to consent, by its answer or by the callback (CloudEvents http-webhook §4.1). */
export const VALIDATION_WAIT_MS = 10 * 60_000;
/** The callback route, under `HERALD_PUBLIC_URL`; the token is the only credential. */
export const CALLBACK_PATH = '/validations/';

/** An `OPTIONS` request to a sink (the HTTP sender's `probe`). */
export type Probe = (
  sink: string,
  headers: Record<string, string>,
  timeoutMs: number,
) => Promise<{
  status: number | null;
  headers?: Record<string, string | string[] | undefined>;
  error?: string;
  /** Not sent: this process could not (out of descriptors): no verdict on the sink. */
  localFailure?: boolean;
}>;

/** How long after a request this process could not send (out of descriptors) it is sent again, within the deadline. */
export const LOCAL_FAILURE_RETRY_MS = 5000;

/** An unguessable callback token: 32 random bytes, base64url. */
export const newValidationToken = (): string => `val_${randomBytes(32).toString('base64url')}`;

/**
 * Runs validation handshakes: sends the `OPTIONS` request, judges the answer and arms the
 * 10-minute deadline. What a result does to a subscription is the service's (`consent`, `fail`),
 * which checks that the token is still the current one, so an answer that arrives after a callback,
 * a pause or a deletion changes nothing.
 */
export function createHandshakes(deps: {
  probe: Probe;
  publicUrl: () => string;
  clock: () => number;
  log: Logger;
  /** False under `HERALD_DELIVERY=off`: nothing is sent, subscriptions stay `validating`. */
  enabled?: boolean;
  /** {@link LOCAL_FAILURE_RETRY_MS} (tests shorten it). */
  localFailureRetryMs?: number;
}) {
  const deadlines = new Map<string, NodeJS.Timeout>();
  let closed = false;
  let outcome: {
    consent: (id: string, token: string, rateLimit: { perSecond: number } | null | undefined) => void;
    fail: (id: string, token: string, reason: string) => void;
  } = { consent: () => undefined, fail: () => undefined };

  function cancel(id: string): void {
    clearTimeout(deadlines.get(id));
    deadlines.delete(id);
  }

  return {
    /** Where results go: the subscriptions service (set once, at wiring). */
    onOutcome(handlers: typeof outcome): void {
      outcome = handlers;
    },
    origin: (): string => requestOrigin(deps.publicUrl()),
    callbackUrl: (token: string): string => `${deps.publicUrl().replace(/\/+$/, '')}${CALLBACK_PATH}${token}`,
    /**
     * Validates a subscription in state `validating` (with a token and a deadline): arms the deadline,
     * then sends the `OPTIONS` request (again, after a restart: the spec lets a sender repeat it).
     */
    start(record: SubscriptionRecord): void {
      if (closed || deps.enabled === false || !record.validationToken || record.validationDeadline === null) return;
      const { id, validationToken: token, validationDeadline: deadline } = record;
      cancel(id);
      const timer = setTimeout(
        () => {
          deadlines.delete(id);
          if (!closed) outcome.fail(id, token, `no consent within ${VALIDATION_WAIT_MS / 60_000} minutes`);
        },
        Math.max(0, deadline - deps.clock()),
      );
      timer.unref();
      deadlines.set(id, timer);
      const origin = requestOrigin(deps.publicUrl());
      const headers = handshakeHeaders({
        origin,
        perSecond: record.delivery.rateLimit?.perSecond,
        callbackUrl: this.callbackUrl(token),
        sink: record.sink,
      });
      deps.log.info({ subscription: id, sink: sinkForLog(record.sink) }, 'validation handshake sent');
      const send = (): void =>
        void deps.probe(record.sink, headers, record.delivery.timeoutMs).then(
          (answer) => {
            if (closed) return;
            // The gateway's own failure (re-probe: connect EMFILE paused a sink that never got the request, as
            // if it had refused): sent again while the deadline runs, which still ends the wait.
            if (answer.localFailure) return later(answer.error);
            const verdict = judgeHandshake(answer, origin);
            if (verdict.kind === 'consent') outcome.consent(id, token, verdict.rateLimit);
            else if (verdict.kind === 'refused') outcome.fail(id, token, verdict.reason);
            else deps.log.info({ subscription: id }, 'validation handshake answered without consent; waiting for the callback');
          },
          // The request could not be made here at all (its sender not loaded: no descriptor left): as above.
          (err: unknown) => {
            if (!closed) later(String(err));
          },
        );
      const later = (error: string | undefined): void => {
        if (!deadlines.has(id)) return; // the deadline passed (or a cancel came): nothing more is sent
        deps.log.warn({ subscription: id, err: error }, 'validation handshake not sent (this process could not); sent again shortly');
        setTimeout(() => {
          if (!closed && deadlines.has(id)) send();
        }, deps.localFailureRetryMs ?? LOCAL_FAILURE_RETRY_MS).unref();
      };
      send();
    },
    cancel,
    /** Drops every deadline; answers still on their way are ignored (at shutdown). */
    close(): void {
      closed = true;
      for (const id of [...deadlines.keys()]) cancel(id);
    },
  };
}
export type Handshakes = ReturnType<typeof createHandshakes>;
