/**
 * A subscription as the service decides it and every store keeps it (SQLite, the cluster's KV bucket).
 * Types only, with the states' list: delivery reads them, and `store/` implements their storage.
 */
import type { DeliveryOptions } from './schema';

export const SUBSCRIPTION_STATES = ['active', 'paused', 'validating'] as const;
export type SubscriptionState = (typeof SUBSCRIPTION_STATES)[number];

export interface SubscriptionRecord {
  id: string;
  sink: string;
  filters: unknown[];
  delivery: DeliveryOptions;
  startAt: 'latest' | 'earliest';
  /** `validating`: waiting for the sink's consent (CloudEvents handshake); nothing is delivered. */
  state: SubscriptionState;
  stateReason: string | null;
  secret: string;
  /** The secret the last rotation replaced, still signing (after the new one) until `previousSecretExpiresAt`. */
  previousSecret: string | null;
  /** Epoch ms; null when there is no overlap. */
  previousSecretExpiresAt: number | null;
  /** `cloudevents`: deliveries wait for the sink's consent to a validation handshake. */
  validation: 'none' | 'cloudevents';
  /** While `validating`: the secret part of the callback URL, and when the wait ends (epoch ms). */
  validationToken: string | null;
  validationDeadline: number | null;
  /** When the sink consented (epoch ms); null before. */
  validatedAt: number | null;
  /**
   * The rate the sink granted with its consent (`WebHook-Allowed-Rate`): deliveries go at most at the lower
   * of it and `delivery.rateLimit` (delivery's `effectiveRateLimit`). null: no grant (none given, `*`, no handshake).
   */
  allowedRate: { perSecond: number } | null;
  createdAt: number;
  updatedAt: number;
}
