import { AppError, type Violation } from '../../errors';
import type { SeekTarget } from '../../subscriptions/seek-schema';
import type { ConsumerStart } from './consumer-config';

/** A partition stream's bounds as offsets: the first stored, and the head (next to be stored). */
export interface PartitionBounds {
  first: number;
  head: number;
}

/**
 * Where each moved partition's new consumer starts (issue 12 §2, as `delivery/seek.ts` on the
 * local engine): `earliest` every stored event, `latest` the head, a time the first event stored at
 * or after it (JetStream's own by-time start), `offsets` the named partitions only. Pure.
 * @throws AppError `invalid_request` naming each partition that does not exist or offset past the head
 */
export function seekStarts(target: SeekTarget, bounds: readonly PartitionBounds[]): { partition: number; start: ConsumerStart }[] {
  const all = bounds.map((_, partition) => partition);
  if ('to' in target)
    return all.map((partition) => ({
      partition,
      start: target.to === 'earliest' ? { kind: 'all' } : { kind: 'seq', seq: bounds[partition]!.head + 1 },
    }));
  if ('time' in target) return all.map((partition) => ({ partition, start: { kind: 'time', ms: target.time } }));
  const problems: Violation[] = [];
  const moves: { partition: number; start: ConsumerStart }[] = [];
  for (const [key, offset] of Object.entries(target.offsets)) {
    const partition = Number(key);
    const attribute = `offsets.${key}`;
    const b = bounds[partition];
    if (!/^(0|[1-9]\d*)$/.test(key) || b === undefined) {
      problems.push({ attribute, message: `there is no partition ${key} (partitions are 0 to ${bounds.length - 1})` });
    } else if (offset > b.head) {
      problems.push({
        attribute,
        message: `offset ${offset} is past partition ${key}'s head: offsets 0 to ${b.head} can be sought`,
      });
    } else {
      moves.push({ partition, start: { kind: 'seq', seq: Math.max(offset, b.first) + 1 } });
    }
  }
  if (problems.length > 0) {
    throw new AppError('invalid_request', `the seek is not valid: ${problems.map((p) => `${p.attribute}: ${p.message}`).join('; ')}`, {
      details: problems,
    });
  }
  return moves;
}
