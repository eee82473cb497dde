import { z } from 'zod';
import { DEFAULT_RETRY } from '../delivery/retry';

const ms = (min: number, max: number) => z.number().int().min(min).max(max);

const retryShape = {
  maxAttempts: z.number().int().min(1).max(1000),
  initialDelayMs: ms(0, 86_400_000),
  maxDelayMs: ms(0, 7 * 86_400_000),
  multiplier: z.number().min(1).max(100),
  jitter: z.number().min(0).max(1),
};

export const retrySchema = z
  .object({
    maxAttempts: retryShape.maxAttempts.default(DEFAULT_RETRY.maxAttempts),
    initialDelayMs: retryShape.initialDelayMs.default(DEFAULT_RETRY.initialDelayMs),
    maxDelayMs: retryShape.maxDelayMs.default(DEFAULT_RETRY.maxDelayMs),
    multiplier: retryShape.multiplier.default(DEFAULT_RETRY.multiplier),
    jitter: retryShape.jitter.default(DEFAULT_RETRY.jitter),
  })
  .strict();

const deliveryShape = {
  format: z.enum(['binary', 'structured']),
  ordering: z.enum(['partition', 'none']),
  maxInFlight: z.number().int().min(1).max(1024),
  timeoutMs: ms(10, 300_000),
  ackMode: z.enum(['auto', 'manual']),
  ackDeadlineMs: ms(10, 86_400_000),
};

export const deliverySchema = z
  .object({
    format: deliveryShape.format.default('binary'),
    ordering: deliveryShape.ordering.default('partition'),
    maxInFlight: deliveryShape.maxInFlight.default(16),
    timeoutMs: deliveryShape.timeoutMs.default(10_000),
    ackMode: deliveryShape.ackMode.default('auto'),
    ackDeadlineMs: deliveryShape.ackDeadlineMs.default(30_000),
    retry: retrySchema.prefault({}),
  })
  .strict();

/**
 * Partial changes carry no defaults (zod 4 applies a default even inside
 * `.partial()`), so an absent field stays absent and `mergeDelivery` keeps the
 * current value instead of resetting it.
 */
const retryChangeSchema = z.object(retryShape).partial().strict();
const deliveryChangeSchema = z
  .object({ ...deliveryShape, retry: retryChangeSchema })
  .partial()
  .strict();

export type DeliveryOptions = z.output<typeof deliverySchema>;

/** An absolute http(s) URL whose port, if given, can be connected to (1–65535; not 0). */
export const sinkSchema = z
  .url({ protocol: /^https?$/, error: 'sink must be an absolute http(s) URL' })
  // An unparsable URL has already failed above; only its own error is reported then.
  .refine((sink) => !URL.canParse(sink) || new URL(sink).port !== '0', 'sink port must be between 1 and 65535');

/**
 * Create request. `ackMode` and `retry` are also accepted at the top level
 * (as some clients send them) and folded into `delivery`.
 */
export const createSubscriptionSchema = z
  .object({
    sink: sinkSchema,
    filters: z.array(z.unknown()).max(64).default([]),
    delivery: deliveryChangeSchema.default({}),
    startAt: z.enum(['latest', 'earliest']).default('latest'),
    ackMode: deliveryShape.ackMode.optional(),
    retry: retryChangeSchema.optional(),
  })
  .strict();

export const patchSubscriptionSchema = z
  .object({
    sink: sinkSchema.optional(),
    filters: z.array(z.unknown()).max(64).optional(),
    delivery: deliveryChangeSchema.optional(),
  })
  .strict();

/** Folds a (partial) delivery change over the current options and checks the result as a whole. */
export function mergeDelivery(
  current: Partial<DeliveryOptions> | undefined,
  change: Record<string, unknown> | undefined,
  extra: { ackMode?: string; retry?: Record<string, unknown> } = {},
): unknown {
  const base = (current ?? {}) as Record<string, unknown>;
  const next = { ...base, ...(change ?? {}) };
  if (extra.ackMode !== undefined) next.ackMode = extra.ackMode;
  const retry = { ...((base.retry as object) ?? {}), ...((change?.retry as object) ?? {}), ...(extra.retry ?? {}) };
  next.retry = retry;
  return next;
}
