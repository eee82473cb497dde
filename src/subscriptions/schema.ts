import { z } from 'zod';
import { DEFAULT_RETRY } from '../delivery/retry';

const ms = (min: number, max: number) => z.number().int().min(min).max(max);

export const retrySchema = z
  .object({
    maxAttempts: z.number().int().min(1).max(1000).default(DEFAULT_RETRY.maxAttempts),
    initialDelayMs: ms(0, 86_400_000).default(DEFAULT_RETRY.initialDelayMs),
    maxDelayMs: ms(0, 7 * 86_400_000).default(DEFAULT_RETRY.maxDelayMs),
    multiplier: z.number().min(1).max(100).default(DEFAULT_RETRY.multiplier),
    jitter: z.number().min(0).max(1).default(DEFAULT_RETRY.jitter),
  })
  .strict();

export const deliverySchema = z
  .object({
    format: z.enum(['binary', 'structured']).default('binary'),
    ordering: z.enum(['partition', 'none']).default('partition'),
    maxInFlight: z.number().int().min(1).max(1024).default(16),
    timeoutMs: ms(10, 300_000).default(10_000),
    ackMode: z.enum(['auto', 'manual']).default('auto'),
    ackDeadlineMs: ms(10, 86_400_000).default(30_000),
    retry: retrySchema.prefault({}),
  })
  .strict();

export type DeliveryOptions = z.output<typeof deliverySchema>;

export const sinkSchema = z.url({ protocol: /^https?$/, error: 'sink must be an absolute http(s) URL' });

/**
 * Create request. `ackMode` and `retry` are also accepted at the top level
 * (as some clients send them) and folded into `delivery`.
 */
export const createSubscriptionSchema = z
  .object({
    sink: sinkSchema,
    filters: z.array(z.unknown()).max(100).default([]),
    delivery: deliverySchema.omit({ retry: true, ackMode: true }).partial().extend({
      retry: retrySchema.partial().optional(),
      ackMode: z.enum(['auto', 'manual']).optional(),
    }).strict().default({}),
    startAt: z.enum(['latest', 'earliest']).default('latest'),
    ackMode: z.enum(['auto', 'manual']).optional(),
    retry: retrySchema.partial().optional(),
  })
  .strict();

export const patchSubscriptionSchema = z
  .object({
    sink: sinkSchema.optional(),
    filters: z.array(z.unknown()).max(100).optional(),
    delivery: deliverySchema.omit({ retry: true }).partial().extend({ retry: retrySchema.partial().optional() }).strict().optional(),
  })
  .strict();

/** Folds a (partial) delivery change over the current options and checks the result as a whole. */
export function mergeDelivery(current: Partial<DeliveryOptions> | undefined, change: Record<string, unknown> | undefined, extra: { ackMode?: string; retry?: Record<string, unknown> } = {}): unknown {
  const base = (current ?? {}) as Record<string, unknown>;
  const next = { ...base, ...(change ?? {}) };
  if (extra.ackMode !== undefined) next.ackMode = extra.ackMode;
  const retry = { ...((base.retry as object) ?? {}), ...((change?.retry as object) ?? {}), ...(extra.retry ?? {}) };
  next.retry = retry;
  return next;
}
