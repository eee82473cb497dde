import { AckPolicy, DeliverPolicy, nanos, type ConsumerConfig, type JetStreamManager, type KV } from 'nats';
import type { Logger } from 'pino';
import type { SubscriptionRecord } from '../../subscriptions/record';
import { isWrongLastSequence } from '../nats-errors';
import type { JetStreamNames } from '../names';
import { needsUpdate, partitionConsumerConfig, redriveConsumerConfig, startOf, type ConsumerStart } from './consumer-config';
import type { DeliveryNames } from './names';
import { finishedThrough, markedOffset } from './positions';

const isConsumerNotFound = (err: unknown) => /consumer not found/i.test((err as Error)?.message ?? '');
const isInUse = (err: unknown) => /already in use|already exists/i.test((err as Error)?.message ?? '');
const isTimeout = (err: unknown) => (err as { code?: string })?.code === 'TIMEOUT';
/** nats-server may fail a consumer delete while it still writes the consumer's state ("unlinkat …: directory not empty"): it succeeds when asked again. */
const isDeleteRace = (err: unknown) => /directory not empty/i.test((err as Error)?.message ?? '');
/** nats-server 2.9.10 refuses every update of a consumer that starts at a time, whatever the update. */
const isStartTimeFrozen = (err: unknown) => /start time can not be updated/i.test((err as Error)?.message ?? '');
/** How long the probe consumer that turns a time into a sequence may outlive a node that died meanwhile. */
const PROBE_INACTIVE_MS = 10_000;
/** How often a consumer create not yet answered looks whether it is still wanted (see addedOrSuperseded). */
const ADD_CHECK_MS = 250;
/** Tries of a consumer create that timed out. */
const TRIES = 3;
/**
 * Tries of a consumer delete, each with the shorter timeout of {@link ConsumersDeps.shortJsm}: a delete
 * racing another node's is left unanswered (re-probe: a losing DELETE took 5 s, the whole default
 * timeout), and asked again it is answered "not found" at once. 5 s in all before the DELETE fails
 * with a 503 (was 3 tries of 5 s). The stats' consumer infos are asked as often (see `info`).
 */
const SHORT_TRIES = 5;

/**
 * Runs an idempotent consumer operation again when its request timed out: nats-server 2.9 may leave
 * unanswered a clustered create or delete of a consumer another node is creating or deleting at the
 * same moment (every node runs `add` and `remove`). Each try looks at the consumer afresh.
 */
async function retryTransient(op: () => Promise<void>, tries = TRIES): Promise<void> {
  for (let tried = 1; ; tried++) {
    try {
      return await op();
    } catch (err) {
      if (!(isTimeout(err) || isDeleteRace(err)) || tried >= tries) throw err;
      if (isDeleteRace(err)) await new Promise((r) => setTimeout(r, 50 * tried));
    }
  }
}

/**
 * Whether nothing reads the consumer of `partition` at `generation` any more, by the generation record `current`:
 * the subscription was deleted, or sought past that generation (through any node).
 */
function soughtPast(current: Generations | undefined, partition: number, generation: number): boolean {
  return !current || (current.gens[partition] ?? 0) > generation;
}

/** Seek generations of a subscription's partitions, as kept in `<prefix>_dgen`. */
export interface Generations {
  gens: number[];
  /** Where each partition's consumer at its generation started, when a seek made it (null: the subscription's `startAt`). */
  starts: (ConsumerStart | null)[];
  revision: number;
}

/** A start as written in a generation record, or null for anything else (a record of an earlier version has none). */
function startFrom(value: unknown): ConsumerStart | null {
  const v = value as { kind?: unknown; ms?: unknown; seq?: unknown } | null;
  if (v?.kind === 'all') return { kind: 'all' };
  if (v?.kind === 'time' && Number.isSafeInteger(v.ms)) return { kind: 'time', ms: v.ms as number };
  if (v?.kind === 'seq' && Number.isSafeInteger(v.seq)) return { kind: 'seq', seq: v.seq as number };
  return null;
}

export interface ConsumersDeps {
  jsm: JetStreamManager;
  /** The manager consumer deletes and the stats' consumer infos go through: one whose requests time out sooner (1 s), see {@link SHORT_TRIES}. */
  shortJsm?: JetStreamManager;
  generations: KV;
  /** The delivery positions bucket (`<prefix>_dpos`): where a consumer that went missing is made again from. */
  positions: KV;
  names: DeliveryNames;
  events: JetStreamNames;
  partitions: number;
  log?: Logger;
}

/**
 * The durable consumers of subscriptions and their seek generations. Every operation is idempotent
 * and safe on several nodes at once: creating a consumer that exists with the same start is a
 * no-op, the generation record is created once (first writer wins) and moved by compare-and-set.
 */
export function createConsumers(deps: ConsumersDeps) {
  const { jsm, names, events } = deps;
  const decode = (value: Uint8Array) => {
    const { gens, starts } = JSON.parse(Buffer.from(value).toString('utf8')) as { gens: number[]; starts?: unknown[] };
    return { gens, starts: gens.map((_, p) => startFrom(Array.isArray(starts) ? starts[p] : null)) };
  };
  const encode = (gens: readonly number[], starts: readonly (ConsumerStart | null)[]) =>
    JSON.stringify(starts.some((s) => s !== null) ? { gens, starts } : { gens });

  /** The generation record, or undefined once the subscription is deleted. */
  async function generations(id: string): Promise<Generations | undefined> {
    const got = await deps.generations.get(names.generationKey(id));
    if (!got || got.operation !== 'PUT' || got.value.length === 0) return undefined;
    return { ...decode(got.value), revision: got.revision };
  }

  /** Creates the record at generation 0 everywhere unless it exists; the record either way. */
  async function ensureGenerations(id: string): Promise<Generations> {
    const existing = await generations(id);
    if (existing) return existing;
    try {
      const gens = Array.from({ length: deps.partitions }, () => 0);
      const starts = gens.map(() => null);
      const revision = await deps.generations.create(names.generationKey(id), encode(gens, starts));
      return { gens, starts, revision };
    } catch (err) {
      if (!isWrongLastSequence(err)) throw err;
      const raced = await generations(id);
      if (!raced) throw err;
      return raced;
    }
  }

  /** Moves the record from `revision` (false: another seek or a delete came first). */
  async function swapGenerations(id: string, next: Pick<Generations, 'gens' | 'starts'>, revision: number): Promise<boolean> {
    try {
      await deps.generations.update(names.generationKey(id), encode(next.gens, next.starts), revision);
      return true;
    } catch (err) {
      if (isWrongLastSequence(err)) return false;
      throw err;
    }
  }

  type Config = Partial<ConsumerConfig> & { durable_name: string };

  /**
   * Creates the consumer, or brings the lease settings of the one that exists up to date. A missing
   * one is made with `missing()`'s config when given (it decides where it starts), else `config`.
   * `superseded` says whether the consumer is no longer wanted (its generation sought past, or the
   * subscription deleted), for an add that waits for its answer.
   */
  const ensure = (stream: string, config: Config, missing?: () => Promise<Config | undefined>, superseded?: () => Promise<boolean>) =>
    retryTransient(() => ensureOnce(stream, config, missing, superseded));

  async function ensureOnce(
    stream: string,
    config: Config,
    missing?: () => Promise<Config | undefined>,
    superseded?: () => Promise<boolean>,
  ): Promise<void> {
    let existing: ConsumerConfig | undefined;
    try {
      existing = (await jsm.consumers.info(stream, config.durable_name)).config;
    } catch (err) {
      if (!isConsumerNotFound(err)) throw err;
    }
    if (!existing) {
      try {
        const made = missing ? await missing() : config;
        if (!made) return; // not to be made (see startOfMissing)
        const adding = jsm.consumers.add(stream, made.deliver_policy === DeliverPolicy.StartTime ? await bySequence(stream, made) : made);
        await addedOrSuperseded(adding, stream, config.durable_name, superseded);
        return;
      } catch (err) {
        if (!isInUse(err)) throw err;
        existing = (await jsm.consumers.info(stream, config.durable_name)).config;
      }
    }
    if (needsUpdate(existing, config)) await updateLeaseSettings(stream, config);
  }

  /**
   * The add's answer, or 'superseded' once its consumer is no longer wanted: nats-server 2.9.10 leaves
   * unanswered an add that meets a delete of the same consumer, and the add then waited for the whole API
   * timeout (probe: seeks through two nodes at once took 5 s, a seek's delete of the generation it left meeting
   * the other's add of it). Every ADD_CHECK_MS unanswered, it looks whether `superseded`: then the add is let go
   * (removed should the server make it after all). Not "is the consumer there": one made by another node at
   * that moment is listed before it can be pulled from, and pulls from it then failed (two seconds more each).
   */
  async function addedOrSuperseded(adding: Promise<unknown>, stream: string, name: string, superseded?: () => Promise<boolean>) {
    const added = adding.then(() => 'added' as const);
    if (!superseded) return added;
    let answered = false;
    const letGo = async (): Promise<'superseded'> => {
      for (let look = 0; !answered; look++) {
        // 250 ms, then less often (at most every 2 s): each look is a read of the record, many adds may wait at once.
        await new Promise((resolve) => setTimeout(resolve, Math.min(ADD_CHECK_MS * 2 ** look, 2000)));
        if (!answered && (await superseded().catch(() => false))) {
          // Removed once the add settles either way (one that timed out may have been made all the same), and only
          // if still superseded then: a DELETE that failed part-way re-attaches the subscription, same names.
          const late = async () => {
            if (await superseded()) await remove(stream, name);
          };
          adding.then(late, late).catch(() => undefined);
          return 'superseded';
        }
      }
      return new Promise<never>(() => undefined); // the add answered first: this result is no one's
    };
    try {
      return await Promise.race([added, letGo()]);
    } finally {
      answered = true;
      added.catch(() => undefined); // thrown above, or no one's once the wait was let go
    }
  }

  async function updateLeaseSettings(stream: string, config: Config): Promise<void> {
    const { ack_wait, max_deliver, max_ack_pending } = config;
    try {
      // `backoff` emptied: one set behind Herald overrides ack_wait, and JetStream refuses max_deliver -1 beside it.
      await jsm.consumers.update(stream, config.durable_name, { ack_wait, max_deliver, max_ack_pending, backoff: [] });
    } catch (err) {
      if (!isStartTimeFrozen(err)) throw err;
      // Made by an earlier version (at a time): delivery goes on under its old lease settings rather than stop.
      deps.log?.warn(
        { stream, consumer: config.durable_name },
        'this consumer starts at a time and the server refuses to update it: its lease settings (timeoutMs, ackDeadlineMs, ordering, maxInFlight) stay as they were',
      );
    }
  }

  /**
   * Lease settings changed behind Herald (`nats consumer edit`) are set back, with a warn naming them
   * (JetStream probe: `max_deliver` 1 made JetStream drop a failed event silently, `max_ack_pending` above 1
   * breaks `ordering: partition`). Only consumers that exist: a missing one is the pullers' to make again.
   */
  async function restoreLeaseSettings(record: SubscriptionRecord, gens: readonly number[]): Promise<void> {
    const wanted: { stream: string; config: Config }[] = gens.map((generation, partition) => ({
      stream: events.stream(partition),
      config: partitionConsumerConfig(names.consumer(record.id, generation), record.delivery, startOf(record)) as Config,
    }));
    const redrive = names.redriveConsumer(record.id);
    wanted.push({
      stream: names.redriveStream,
      config: redriveConsumerConfig(redrive, names.redriveSubject(record.id), record.delivery) as Config,
    });
    for (const { stream, config } of wanted) {
      let found: ConsumerConfig;
      try {
        found = (await jsm.consumers.info(stream, config.durable_name)).config;
      } catch (err) {
        if (isConsumerNotFound(err)) continue;
        throw err;
      }
      if (!needsUpdate(found, config)) continue;
      const settings = (c: Partial<ConsumerConfig>) => ({
        ack_wait: c.ack_wait,
        max_deliver: c.max_deliver,
        max_ack_pending: c.max_ack_pending,
        ...(c.backoff?.length ? { backoff: c.backoff } : {}),
      });
      deps.log?.warn(
        { subscription: record.id, stream, consumer: config.durable_name, found: settings(found), wanted: settings(config) },
        "a consumer's lease settings were changed outside Herald: set back to the subscription's (Herald bounds attempts itself, and JetStream drops a message at max_deliver)",
      );
      await updateLeaseSettings(stream, config);
    }
  }

  /**
   * The config starting at the stream sequence the time starts at, not at the time: nats-server 2.9.10
   * refuses any later update of a consumer that starts at a time (so a PATCH of delivery options
   * never reached it). The sequence is what a probe consumer at that time would deliver first; it is
   * the same on every node (the first event stored at or after the time, or the next one).
   */
  async function bySequence(
    stream: string,
    config: Partial<ConsumerConfig> & { durable_name: string },
  ): Promise<Partial<ConsumerConfig> & { durable_name: string }> {
    const probe = await jsm.consumers.add(stream, {
      ack_policy: AckPolicy.None,
      deliver_policy: DeliverPolicy.StartTime,
      opt_start_time: config.opt_start_time,
      inactive_threshold: nanos(PROBE_INACTIVE_MS),
    });
    await jsm.consumers.delete(stream, probe.name).catch(() => undefined); // else it goes by itself when inactive
    const { opt_start_time: _time, ...rest } = config;
    return { ...rest, deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: probe.delivered.stream_seq + 1 };
  }

  /**
   * Where a partition's consumer that is not there is made from. One that delivered before (a
   * position is marked for its generation) was deleted behind Herald, and its ack floor went with it.
   * A mark written under `ordering: partition` says every offset below it is finished (one event at
   * a time, marked once decided), so it starts just after it: nothing is lost, and only an attempt
   * open at the deletion is sent again. Any other mark (written under `none`, where events below it
   * may still wait for a retry, also before a PATCH to `partition`) says nothing of them, so it
   * starts where its generation started and those since may be sent again (at least once). A
   * generation a seek made starts at the seek's target (kept in the generation record), any other
   * at `fallback`.
   */
  async function startOfMissing(
    record: SubscriptionRecord,
    partition: number,
    generation: number,
    fallback: ConsumerStart,
  ): Promise<ConsumerStart | undefined> {
    const got = await deps.positions.get(names.positionKey(record.id, partition, generation));
    const value = got && got.operation === 'PUT' ? Buffer.from(got.value).toString('utf8') : undefined;
    const marked = value === undefined ? undefined : markedOffset(value);
    const current = await generations(record.id);
    // Made now (a create retried after a timeout, a node's repair), it would outlive the subscription.
    if (soughtPast(current, partition, generation)) return undefined;
    const start = (current?.gens[partition] === generation ? current.starts[partition] : null) ?? fallback;
    if (value === undefined || marked === undefined) return start;
    const through = finishedThrough(value);
    deps.log?.warn(
      { subscription: record.id, partition, generation, consumer: names.consumer(record.id, generation), lastFinishedOffset: marked },
      through !== undefined
        ? 'a consumer that delivered before is missing (deleted behind Herald?): made again just after the last finished offset'
        : 'a consumer that delivered before is missing (deleted behind Herald?): made again where its generation started; events since may be sent again',
    );
    return through !== undefined ? { kind: 'seq', seq: through + 2 } : start; // offset o is stream sequence o + 1
  }

  const partitionConsumer = (record: SubscriptionRecord, partition: number, generation: number, start: ConsumerStart) => {
    const config = (from: ConsumerStart) => partitionConsumerConfig(names.consumer(record.id, generation), record.delivery, from) as Config;
    const superseded = async () => soughtPast(await generations(record.id), partition, generation);
    return ensure(
      events.stream(partition),
      config(start),
      async () => {
        const from = await startOfMissing(record, partition, generation, start);
        return from && config(from);
      },
      superseded,
    );
  };

  const shortJsm = deps.shortJsm ?? jsm;
  const remove = (stream: string, name: string) =>
    retryTransient(async () => {
      try {
        await shortJsm.consumers.delete(stream, name);
      } catch (err) {
        if (!isConsumerNotFound(err)) throw err;
      }
    }, SHORT_TRIES);

  /**
   * Consumers just made at generations that a seek or the DELETE (through any node) has since moved the
   * record past: its removal of them may have come before they were made, so they are removed here, or
   * they would outlive their subscription (probe: 23 left after seeks through two nodes and a DELETE).
   * A record that cannot be read says nothing: they stay.
   */
  async function removeSuperseded(id: string, made: readonly { partition: number; generation: number }[]): Promise<void> {
    let now: Generations | undefined;
    try {
      now = await generations(id);
    } catch {
      return;
    }
    const stale = made.filter((m) => now?.gens[m.partition] !== m.generation);
    await Promise.all(stale.map((m) => remove(events.stream(m.partition), names.consumer(id, m.generation)))).catch(() => undefined);
  }

  /**
   * Partition consumers of `record` at these generations and starts. Every create settles first (a failed
   * one retried), then those superseded meanwhile are removed ({@link removeSuperseded}); the first
   * failure, or undefined.
   */
  async function makeConsumers(
    record: SubscriptionRecord,
    targets: readonly { partition: number; generation: number; start: ConsumerStart }[],
  ): Promise<PromiseRejectedResult | undefined> {
    const made = await Promise.allSettled(targets.map((t) => partitionConsumer(record, t.partition, t.generation, t.start)));
    await removeSuperseded(record.id, targets);
    return made.find((m) => m.status === 'rejected');
  }

  return {
    generations,
    ensureGenerations,
    makeConsumers,
    swapGenerations,
    /** Writes the record of a subscription's token with these generations (no seek targets) unless one exists: false then. */
    async createGenerations(token: string, gens: readonly number[]): Promise<boolean> {
      try {
        await deps.generations.create(token, encode(gens, []));
        return true;
      } catch (err) {
        if (isWrongLastSequence(err)) return false;
        throw err;
      }
    },
    partitionConsumer,
    /**
     * Every consumer of a subscription at its generations: a partition's consumer at generation 0
     * starts at `startAt`; at a later one it was made by a seek. One that went missing is made again
     * as {@link startOfMissing} says.
     */
    async ensureAll(record: SubscriptionRecord, gens: readonly number[]): Promise<void> {
      const failed = await makeConsumers(
        record,
        gens.map((generation, partition) => ({ partition, generation, start: startOf(record) })),
      );
      if (failed) throw failed.reason;
      const name = names.redriveConsumer(record.id);
      await ensure(names.redriveStream, redriveConsumerConfig(name, names.redriveSubject(record.id), record.delivery) as never);
    },
    restoreLeaseSettings,
    removePartitionConsumer: (id: string, partition: number, generation: number) =>
      remove(events.stream(partition), names.consumer(id, generation)),
    /** The same by the subscription's token (a consumer found on a stream, whose id is not known). */
    removeConsumerOfToken: (token: string, partition: number, generation: number) =>
      remove(events.stream(partition), names.consumerOfToken(token, generation)),
    removeRedriveConsumer: (id: string) => remove(names.redriveStream, names.redriveConsumer(id)),
    /**
     * The info of a partition's consumer at `generation`, or at the one the record holds once a seek through
     * another node moved it past (this node not yet told): nats-server 2.9.10 answers no info of a consumer
     * such a seek is deleting (probe: a seek's answer, whose stats read the consumers of the generation it made,
     * took the whole 5 s API timeout). Asked with the 1 s timeout of {@link ConsumersDeps.shortJsm} while the
     * record moves; once it does not, one last time with the whole API timeout (a slow cluster's answer).
     */
    async info(id: string, partition: number, generation: number) {
      const ask = (m: JetStreamManager, g: number) => m.consumers.info(events.stream(partition), names.consumer(id, g));
      for (let tried = 1; tried < SHORT_TRIES; tried++) {
        try {
          return await ask(shortJsm, generation);
        } catch (err) {
          if (!isTimeout(err) && !isConsumerNotFound(err)) throw err;
          const now = (await generations(id).catch(() => undefined))?.gens[partition];
          if (now === undefined || now <= generation) break;
          generation = now;
        }
      }
      return ask(jsm, generation);
    },
  };
}
export type Consumers = ReturnType<typeof createConsumers>;
