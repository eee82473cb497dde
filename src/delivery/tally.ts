/**
 * Delivery's per-subscription metrics as plain numbers: counted where attempts are answered (the
 * delivery thread), sent to the main thread as one tally per subscription every few tens of
 * milliseconds, and added to what `/metrics` shows there. A message per observation (three per
 * delivered event) cost both threads an allocation and a structured clone each.
 */

/** Attempt outcomes counted by `herald_deliveries_total{outcome}`. */
export type DeliveryOutcome =
  'delivered' | 'retry' | 'dead_letter' | 'timeout' | 'acked' | 'nacked' | 'rejected' | 'lease_expired' | 'gone';

export const DELIVERY_OUTCOMES: readonly DeliveryOutcome[] = [
  'delivered',
  'retry',
  'dead_letter',
  'timeout',
  'acked',
  'nacked',
  'rejected',
  'lease_expired',
  'gone',
];

const OUTCOME_INDEX = Object.fromEntries(DELIVERY_OUTCOMES.map((o, i) => [o, i])) as Record<DeliveryOutcome, number>;

/** Where delivery reports what happened (the metrics), on either engine; optional so tests and tools can leave it out. */
export interface DeliveryObserver {
  outcome(subscriptionId: string, outcome: DeliveryOutcome): void;
  /** Request start to the receiver's answer (or the error). */
  answered(subscriptionId: string, ms: number): void;
  /** Stored to a 2xx from the receiver. */
  succeeded(subscriptionId: string, ms: number): void;
}

/** Histogram buckets in seconds, shared by Herald's duration histograms. */
export const SECONDS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
export const DURATION_BOUNDS = SECONDS;
export const PUBLISH_BOUNDS: readonly number[] = [...SECONDS, 60, 300, 3600];

export interface HistogramData {
  /** Count per bucket (not cumulative), one more than the bounds for +Inf. */
  counts: Float64Array;
  sum: number;
  count: number;
}

export interface DeliveryTally {
  outcomes: Float64Array;
  /** Request start to the receiver's answer, seconds. */
  duration: HistogramData;
  /** Stored to a 2xx from the receiver, seconds. */
  publishToDelivery: HistogramData;
}

const newHistogram = (bounds: readonly number[]): HistogramData => ({ counts: new Float64Array(bounds.length + 1), sum: 0, count: 0 });

export function newTally(): DeliveryTally {
  return {
    outcomes: new Float64Array(DELIVERY_OUTCOMES.length),
    duration: newHistogram(DURATION_BOUNDS),
    publishToDelivery: newHistogram(PUBLISH_BOUNDS),
  };
}

export function countOutcome(t: DeliveryTally, outcome: DeliveryOutcome): void {
  t.outcomes[OUTCOME_INDEX[outcome]]! += 1;
}

/** An attempt answered (or timed out) `ms` after its request started. */
export const observeDuration = (t: DeliveryTally, ms: number): void => observeSeconds(t.duration, DURATION_BOUNDS, ms / 1000);

/** A 2xx from the receiver `ms` after the event was stored. */
export const observePublishToDelivery = (t: DeliveryTally, ms: number): void =>
  observeSeconds(t.publishToDelivery, PUBLISH_BOUNDS, ms / 1000);

function observeSeconds(h: HistogramData, bounds: readonly number[], value: number): void {
  let i = 0;
  while (i < bounds.length && value > bounds[i]!) i++;
  h.counts[i]! += 1;
  h.sum += value;
  h.count += 1;
}

/** Adds `from` into `into` (the same shapes: both from `newTally`). */
export function addTally(into: DeliveryTally, from: DeliveryTally): void {
  addArray(into.outcomes, from.outcomes);
  addHistogram(into.duration, from.duration);
  addHistogram(into.publishToDelivery, from.publishToDelivery);
}

function addHistogram(into: HistogramData, from: HistogramData): void {
  addArray(into.counts, from.counts);
  into.sum += from.sum;
  into.count += from.count;
}

function addArray(into: Float64Array, from: Float64Array): void {
  for (let i = 0; i < into.length && i < from.length; i++) into[i]! += from[i]!;
}
