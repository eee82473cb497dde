import type { JetStreamManager } from 'nats';
import type { Logger } from 'pino';
import type { JetStreamNames } from '../names';
import type { Consumers } from './consumers';
import type { DeliveryNames } from './names';

export interface RecoverDeps {
  jsm: JetStreamManager;
  consumers: Consumers;
  names: DeliveryNames;
  events: JetStreamNames;
  partitions: number;
  log: Logger;
}

/**
 * Writes the seek generation records again from the consumers on the partition streams, after the
 * generations bucket was lost and made again empty (HERALD_RECOVERY=recreate-missing). A
 * subscription's consumer per partition is the one of the highest generation there: a seek makes
 * the next generation's consumer and deletes the earlier one, and the ack floor lives in the
 * consumer, so delivery goes on where it was instead of starting over from `startAt`. Earlier
 * generations' consumers left behind are deleted. A record some node already wrote is kept (first
 * writer wins). A failure here fails the start, and the caller deletes the bucket again so that the
 * next start recovers once more. What a seek's target was is not recovered: a consumer of it
 * deleted later behind Herald is made again from `startAt`.
 */
export async function recoverGenerations(deps: RecoverDeps): Promise<number> {
  const { jsm, consumers, names, events, partitions, log } = deps;
  /** token → per partition, every generation found. */
  const found = new Map<string, number[][]>();
  for (let p = 0; p < partitions; p++) {
    for await (const info of jsm.consumers.list(events.stream(p))) {
      const parsed = names.parseConsumer(info.name);
      if (!parsed) continue;
      const perPartition = found.get(parsed.token) ?? Array.from({ length: partitions }, () => []);
      perPartition[p]!.push(parsed.generation);
      found.set(parsed.token, perPartition);
    }
  }
  let recovered = 0;
  for (const [token, perPartition] of found) {
    const gens = perPartition.map((g) => Math.max(0, ...g));
    // Else written meanwhile by a node that added the subscription: its record stands.
    if (!(await consumers.createGenerations(token, gens))) continue;
    recovered++;
    const stale = perPartition.flatMap((list, p) => list.filter((g) => g < gens[p]!).map((g) => ({ p, g })));
    await Promise.all(
      stale.map(({ p, g }) =>
        consumers.removeConsumerOfToken(token, p, g).catch((err: unknown) => {
          log.warn({ err, consumer: names.consumerOfToken(token, g) }, 'could not delete a consumer of an earlier seek generation');
        }),
      ),
    );
  }
  log.warn({ subscriptions: recovered }, 'seek generations recovered from the consumers on the partition streams');
  return recovered;
}
