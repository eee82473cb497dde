import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ContentMode } from './cloudevents/parse';
import { errorStatus } from './errors';
import type { SubscriptionHooks } from './subscriptions/service';
import { SUBSCRIPTION_STATES } from './subscriptions/record';
import {
  addTally,
  countOutcome,
  DELIVERY_OUTCOMES,
  DURATION_BOUNDS,
  newTally,
  observeDuration,
  observePublishToDelivery,
  PUBLISH_BOUNDS,
  SECONDS,
  type DeliveryObserver,
  type DeliveryTally,
  type HistogramData,
} from './delivery/tally';

/** What `/metrics` reads from the rest of the gateway at scrape time (gauges are computed, never kept in step). */
export interface MetricsSources {
  log: () => { bytes: number; segments: number };
  /** Whether the log (local files, or the JetStream cluster) takes writes now: `/readyz`'s `log` check. */
  writable: () => boolean;
  heads: () => readonly number[];
  /** Asked of delivery at scrape time (the delivery thread answers by message). */
  subscriptions: () => Promise<SubscriptionSnapshot>;
}

/**
 * Herald's Prometheus metrics on a registry of their own (no global state, so
 * several gateways in one process, as in tests, do not share counters).
 * Labels are bounded: mode, problem code, outcome, partition, subscription id.
 */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'herald_' });
  let sources: MetricsSources | undefined;
  const r = [registry];

  const metrics = {
    registry,
    eventsIngested: new Counter({
      name: 'herald_events_ingested_total',
      help: 'Events stored (not duplicates).',
      labelNames: ['mode'],
      registers: r,
    }),
    eventsDuplicate: new Counter({ name: 'herald_events_duplicate_total', help: 'Events answered as duplicates.', registers: r }),
    ingestRejected: new Counter({
      name: 'herald_ingest_rejected_total',
      help: 'POST /events requests answered 4xx or 5xx, by problem code.',
      labelNames: ['code'],
      registers: r,
    }),
    ingestDuration: new Histogram({
      name: 'herald_ingest_request_duration_seconds',
      help: 'POST /events from the first byte to the answer.',
      buckets: [...SECONDS],
      registers: r,
    }),
    walFsync: new Histogram({
      name: 'herald_wal_fsync_duration_seconds',
      help: "Each group's fdatasync.",
      buckets: [...SECONDS],
      registers: r,
    }),
    walGroupEvents: new Histogram({
      name: 'herald_wal_group_events',
      help: 'Events per committed group.',
      buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000],
      registers: r,
    }),
    /**
     * Delivery's per-attempt metrics are kept in plain per-subscription arrays and written at scrape
     * time: prom-client's labelled counter and histograms hash their labels on every update, which
     * was ≈ 3 % of delivery CPU. The delivery thread counts them and sends a tally now and then.
     */
    delivery: {
      add(subscription: string, tally: DeliveryTally): void {
        addTally(deliveryOf(subscription), tally);
      },
      /** Counts straight into the accumulators: for delivery on this thread (the JetStream engine). */
      observer(): DeliveryObserver {
        return {
          outcome: (subscription, outcome) => countOutcome(deliveryOf(subscription), outcome),
          answered: (subscription, ms) => observeDuration(deliveryOf(subscription), ms),
          succeeded: (subscription, ms) => observePublishToDelivery(deliveryOf(subscription), ms),
        };
      },
    },
    /** A filter evaluation of `subscription` that failed or ran out of budget. */
    filterError(subscription: string): void {
      filterErrors.set(subscription, (filterErrors.get(subscription) ?? 0) + 1);
    },
    /** `subscription` paused with reason failing. */
    autoDisabled(subscription: string): void {
      autoDisabled.set(subscription, (autoDisabled.get(subscription) ?? 0) + 1);
    },
    /** Wires the scrape-time gauges to their sources (the composition root; none while a start is tried again). */
    setSources(next: MetricsSources | undefined): void {
      sources = next;
    },
    /** Forgets every series of a deleted subscription, so label sets do not pile up. */
    forgetSubscription(id: string): void {
      removeSeries(id);
    },
  };

  // Every series a `rate()` or `increase()` alert reads exists at 0 from the start: one first seen at 1 is
  // no increase to Prometheus (metrics probe: one poison event dead-lettered, and the documented alert stayed silent).
  for (const mode of CONTENT_MODES) metrics.eventsIngested.inc({ mode }, 0);
  for (const code of Object.keys(errorStatus)) metrics.ingestRejected.inc({ code }, 0);
  const deliveryStats = new Map<string, DeliveryTally>();
  const filterErrors = new Map<string, number>();
  const autoDisabled = new Map<string, number>();
  function deliveryOf(subscription: string): DeliveryTally {
    let stats = deliveryStats.get(subscription);
    if (!stats) deliveryStats.set(subscription, (stats = newTally()));
    return stats;
  }

  function removeSeries(id: string): void {
    deliveryStats.delete(id);
    filterErrors.delete(id);
    autoDisabled.delete(id);
  }

  new Gauge({
    name: 'herald_log_bytes',
    help: 'Bytes of log on disk.',
    registers: r,
    collect() {
      if (sources) this.set(sources.log().bytes);
    },
  });
  new Gauge({
    name: 'herald_log_writable',
    help: '1 while the log takes writes (local files, or the JetStream cluster), 0 while ingest answers 503.',
    registers: r,
    collect() {
      if (sources) this.set(sources.writable() ? 1 : 0);
    },
  });
  new Gauge({
    name: 'herald_log_segments',
    help: 'Segment files.',
    registers: r,
    collect() {
      if (sources) this.set(sources.log().segments);
    },
  });
  new Gauge({
    name: 'herald_partition_head_offset',
    help: 'Next offset to assign, per partition.',
    labelNames: ['partition'],
    registers: r,
    collect() {
      if (!sources) return;
      sources.heads().forEach((head, partition) => this.set({ partition: String(partition) }, head));
    },
  });

  /**
   * The whole exposition. The per-subscription gauges (16 partitions × 100 subscriptions is 1,600
   * lag series) are written straight from one read of every subscription's stats: going through
   * prom-client gauges (reset, then a labelled set per series) doubled the cost of a scrape.
   */
  async function exposition(): Promise<string> {
    const text = await registry.metrics();
    const subscriptions = sources ? await sources.subscriptions() : [];
    // Each subscription's counters at 0 until they count, written for this scrape only (never stored: a
    // subscription deleted while its snapshot was read must not come back as a series).
    const known = subscriptions.map((s) => s.id);
    const counters =
      deliveryFamilies(deliveryStats, known) +
      counterFamily(
        'herald_filter_errors_total',
        'Filter evaluations that failed or ran out of budget (counted as no match).',
        filterErrors,
        known,
      ) +
      counterFamily('herald_subscription_auto_disabled_total', 'Pauses with reason failing.', autoDisabled, known);
    return sources ? text + counters + (await subscriptionGauges(subscriptions)) : text + counters;
  }

  return Object.assign(metrics, { exposition, contentType: registry.contentType });
}

type SubscriptionSnapshot = {
  id: string;
  state: string;
  /** Null while delivery of the subscription is not started on this node: only its state is shown. */
  delivery: {
    deadLetters: number;
    inFlight: number;
    oldestPendingAgeMs: number | null;
    lag: { partition: number; lag: number }[];
    expired: { partition: number; expired: number }[];
  } | null;
}[];

/** Label values are subscription ids, partitions and states; escaped anyway, per the text format. */
const label = (value: string) => value.replace(/[\\"\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`));

const CONTENT_MODES: readonly ContentMode[] = ['binary', 'structured', 'batch'];

/** A per-subscription counter family: every subscription counted or `known`, 0 for those not counted yet. */
function counterFamily(name: string, help: string, counts: Map<string, number>, known: readonly string[]): string {
  const lines: string[] = [];
  const line = (id: string, n: number) => lines.push(`${name}{subscription="${label(id)}"} ${n}\n`);
  for (const [id, n] of counts) line(id, n);
  for (const id of known) if (!counts.has(id)) line(id, 0);
  return `${family(name, help, lines, 'counter')}\n`;
}

function family(name: string, help: string, lines: string[], type: 'gauge' | 'counter' = 'gauge'): string {
  return `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n${lines.join('')}`;
}

/**
 * Series written between two turns of the event loop: a scrape of many subscriptions on many partitions
 * is built a slice at a time, so the publishes the same thread answers are not held up by all of it
 * (metrics probe: 827,000 lines in one go held a publish for 1.7 s).
 */
const LINES_PER_TURN = 20_000;

async function subscriptionGauges(subscriptions: SubscriptionSnapshot): Promise<string> {
  let sinceTurn = 0;
  const lag: string[] = [];
  const expired: string[] = [];
  const age: string[] = [];
  const inFlight: string[] = [];
  const dead: string[] = [];
  const state: string[] = [];
  for (const s of subscriptions) {
    const id = label(s.id);
    for (const st of SUBSCRIPTION_STATES)
      state.push(`herald_subscription_state{subscription="${id}",state="${st}"} ${s.state === st ? 1 : 0}\n`);
    const d = s.delivery;
    if (!d) continue;
    for (const p of d.lag) lag.push(`herald_subscription_lag_events{subscription="${id}",partition="${p.partition}"} ${p.lag}\n`);
    for (const p of d.expired)
      expired.push(`herald_subscription_expired_events{subscription="${id}",partition="${p.partition}"} ${p.expired}\n`);
    age.push(`herald_subscription_oldest_pending_age_seconds{subscription="${id}"} ${(d.oldestPendingAgeMs ?? 0) / 1000}\n`);
    inFlight.push(`herald_subscription_in_flight{subscription="${id}"} ${d.inFlight}\n`);
    dead.push(`herald_dead_letters{subscription="${id}"} ${d.deadLetters}\n`);
    sinceTurn += d.lag.length + d.expired.length + SUBSCRIPTION_STATES.length + 3;
    if (sinceTurn >= LINES_PER_TURN) {
      sinceTurn = 0;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }
  return (
    [
      family(
        'herald_subscription_lag_events',
        'Head offset minus committed offset, less the offsets a start skipped after an unclean stop under HERALD_FSYNC=interval or never: offsets, so events the filters leave out count until delivery passes them.',
        lag,
      ),
      family(
        'herald_subscription_expired_events',
        'Events retention deleted before the subscription had finished them (stats.expired), no longer in the lag. A gauge: one whose request was open then and which the receiver then takes leaves the count.',
        expired,
      ),
      family(
        'herald_subscription_oldest_pending_age_seconds',
        'Age of the oldest unfinished event, a redelivery of a dead letter included.',
        age,
      ),
      family(
        'herald_subscription_in_flight',
        "Events started and not finished (sending, awaiting a callback, waiting to retry or to be sent again after a pause), redeliveries of dead letters included: the sum of the partitions' stats.inFlight.",
        inFlight,
      ),
      family('herald_dead_letters', 'Dead letters stored.', dead),
      family('herald_subscription_state', '1 for the current state, 0 otherwise.', state),
    ].join('\n') + '\n'
  );
}

function histogramLines(name: string, id: string, h: HistogramData, bounds: readonly number[]): string {
  let out = '';
  let cumulative = 0;
  bounds.forEach((bound, i) => {
    cumulative += h.counts[i]!;
    out += `${name}_bucket{le="${bound}",subscription="${id}"} ${cumulative}\n`;
  });
  out += `${name}_bucket{le="+Inf",subscription="${id}"} ${h.count}\n`;
  out += `${name}_sum{subscription="${id}"} ${h.sum}\n${name}_count{subscription="${id}"} ${h.count}\n`;
  return out;
}

/**
 * `herald_deliveries_total` and the two delivery histograms, in the text format, from the accumulators:
 * every outcome of every subscription counted or `known`, 0 until it counts.
 */
function deliveryFamilies(stats: Map<string, DeliveryTally>, known: readonly string[]): string {
  let outcomes = '';
  let duration = '';
  let publish = '';
  for (const subscription of known) {
    if (stats.has(subscription)) continue;
    const id = label(subscription);
    for (const outcome of DELIVERY_OUTCOMES) outcomes += `herald_deliveries_total{subscription="${id}",outcome="${outcome}"} 0\n`;
  }
  const live = new Set(known);
  for (const [subscription, s] of stats) {
    // A count that came in after its subscription was deleted (a late answer, another node's lease) names none: its
    // series stay gone (review: a JetStream lease counted after the delete brought them back).
    if (!live.has(subscription)) continue;
    const id = label(subscription);
    DELIVERY_OUTCOMES.forEach((outcome, i) => {
      outcomes += `herald_deliveries_total{subscription="${id}",outcome="${outcome}"} ${s.outcomes[i]}\n`;
    });
    if (s.duration.count > 0) duration += histogramLines('herald_delivery_duration_seconds', id, s.duration, DURATION_BOUNDS);
    if (s.publishToDelivery.count > 0)
      publish += histogramLines('herald_publish_to_delivery_seconds', id, s.publishToDelivery, PUBLISH_BOUNDS);
  }
  return (
    `# HELP herald_deliveries_total Delivery attempt outcomes.\n# TYPE herald_deliveries_total counter\n${outcomes}\n` +
    `# HELP herald_delivery_duration_seconds Request start to the receiver's answer.\n# TYPE herald_delivery_duration_seconds histogram\n${duration}\n` +
    `# HELP herald_publish_to_delivery_seconds Stored to each 2xx from the receiver (a 202 under manual ack included).\n# TYPE herald_publish_to_delivery_seconds histogram\n${publish}\n`
  );
}

export type Metrics = ReturnType<typeof createMetrics>;

/** Where ingest reports what it did (the metrics). */
export interface IngestObserver {
  stored(mode: ContentMode, events: number): void;
  duplicates(events: number): void;
  rejected(code: string): void;
  /** From the start of the request's handling to its answer. */
  answered(seconds: number): void;
  /** Refused before the ingest handler (no key, wrong scope, the gateway starting): rejected and answered. */
  refused(code: string, seconds: number): void;
}

/** What `POST /events` reports, as counted by every engine's gateway. */
export function ingestObserver(metrics: Metrics): IngestObserver {
  return {
    stored: (mode, n) => n > 0 && metrics.eventsIngested.inc({ mode }, n),
    duplicates: (n) => metrics.eventsDuplicate.inc(n),
    rejected: (code) => metrics.ingestRejected.inc({ code }),
    answered: (seconds) => metrics.ingestDuration.observe(seconds),
    refused: (code, seconds) => {
      metrics.ingestRejected.inc({ code });
      metrics.ingestDuration.observe(seconds);
    },
  };
}

/** What the subscriptions service reports, as counted by every engine's gateway. */
export function subscriptionHooks(metrics: Metrics): SubscriptionHooks {
  return {
    filterError: (subscription) => metrics.filterError(subscription),
    deleted: (id) => metrics.forgetSubscription(id),
    autoDisabled: (subscription) => metrics.autoDisabled(subscription),
  };
}
