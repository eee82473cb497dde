import { z } from 'zod';
import { rfc3339ToEpochMs } from '../cloudevents/validate';

/** Where a seek moves a subscription (issue 12 §2): exactly one of the three forms; `time` in epoch ms. */
export type SeekTarget = { to: 'earliest' | 'latest' } | { time: number } | { offsets: Record<string, number> };

/**
 * `POST /subscriptions/{id}/seek` (issue 12 §2): exactly one of `to` (`earliest` | `latest`), `time`
 * (RFC 3339, with `Z` or an offset) or `offsets` (partition → offset, at least one partition).
 */
export const seekSchema = z
  .object({
    to: z.enum(['earliest', 'latest']),
    // The event `time` attribute's rule (lower-case t and z, a leap second): zod's ISO check refuses those.
    time: z.string().refine((time) => rfc3339ToEpochMs(time) !== undefined, {
      error: 'time must be an RFC 3339 date-time such as 2026-12-01T10:00:00Z',
    }),
    offsets: z
      .unknown()
      // zod's record leaves a `__proto__` key out, and the body was refused for naming no partition.
      .refine((v) => typeof v !== 'object' || v === null || !Object.hasOwn(v, '__proto__'), {
        error: 'not a partition number',
        path: ['__proto__'],
        abort: true,
      })
      .pipe(z.record(z.string(), z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)))
      .refine((offsets) => Object.keys(offsets).length > 0, 'offsets must name at least one partition'),
  })
  .partial()
  .strict()
  .refine((body) => [body.to, body.time, body.offsets].filter((v) => v !== undefined).length === 1, {
    message: 'give exactly one of to, time or offsets',
  })
  .transform((body): SeekTarget => {
    if (body.to !== undefined) return { to: body.to };
    if (body.time !== undefined) return { time: rfc3339ToEpochMs(body.time)! };
    return { offsets: body.offsets! };
  });
