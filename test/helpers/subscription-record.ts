import { randomUUID } from 'node:crypto';
import type { SubscriptionRecord } from '../../src/subscriptions/record';
import { deliverySchema } from '../../src/subscriptions/schema';
import { newSigningSecret } from '../../src/webhook-policy';

/**
 * A whole subscription record as the service stores it (active, no validation, no rotation, the
 * schema's delivery defaults), for tests that drive a store or a delivery engine without the API.
 */
export function subscriptionRecord(overrides: Partial<SubscriptionRecord> = {}): SubscriptionRecord {
  const now = Date.now();
  return {
    id: randomUUID(),
    sink: 'http://127.0.0.1:1/hook',
    filters: [],
    delivery: deliverySchema.parse({}),
    startAt: 'latest',
    state: 'active',
    stateReason: null,
    secret: newSigningSecret(),
    previousSecret: null,
    previousSecretExpiresAt: null,
    validation: 'none',
    validationToken: null,
    validationDeadline: null,
    validatedAt: null,
    allowedRate: null,
    createdAt: now,
    updatedAt: now,
    ...overrides,
  };
}
