import { isWrongLastSequence } from '../nats-errors';
import type { AttemptTarget, EngineContext } from './context';

/**
 * A partition's last matched offset (the next event's `herald-previous-offset`), per subscription
 * and generation, in the delivery positions bucket. It is written before the event's ack, so a node
 * that dies between the two leaves the event marked but unacknowledged: its redelivery must send
 * the previous offset its first attempt sent, not none. So the record keeps both: `"<offset>"` or
 * `"<offset> <previous>"`. An event sent under `ordering: partition` (one in flight per partition,
 * and JetStream delivers none past an unacknowledged one) adds ` p`, as `"<offset> <previous|-> p"`:
 * every offset below it is finished. Under `none` (or by an earlier version) it says nothing of them.
 */
function encode(offset: number, previous: number | null, ordered: boolean): string {
  if (ordered) return `${offset} ${previous ?? '-'} p`;
  return previous === null ? String(offset) : `${offset} ${previous}`;
}

/** An offset as the record writes it (decimal digits), or undefined. */
function offsetIn(text: string | undefined): number | undefined {
  const n = Number(text);
  return text !== undefined && /^(0|[1-9]\d*)$/.test(text) && Number.isSafeInteger(n) ? n : undefined;
}

/** The offset a record marks as the last finished (undefined when unreadable). */
export function markedOffset(value: string): number | undefined {
  return offsetIn(value.split(' ')[0]);
}

/** The marked offset when every offset below it is finished too (marked under `ordering: partition`), else undefined. */
export function finishedThrough(value: string): number | undefined {
  return value.split(' ')[2] === 'p' ? markedOffset(value) : undefined;
}

/** The previous offset for an event at `offset`, from the record: the marked offset below it, or, when the event itself is the one marked, what it was sent with. */
export function previousFrom(value: string, offset: number): number | null {
  const [marked, before] = value.split(' ').map(offsetIn);
  if (marked === undefined) return null;
  if (marked < offset) return marked;
  if (marked === offset && before !== undefined && before < offset) return before;
  return null;
}

/**
 * Whether the record shows `offset` finished by a later offset under `ordering: partition`: a message
 * this node held while it stalled (a long GC pause, a frozen VM) past ack_wait, which JetStream gave to
 * another node, which sent it and went on. Sending it now would break the partition's order. (The
 * marked offset itself may be unacknowledged, a node having died between mark and ack: it is sent.)
 */
export function finishedPast(value: string | undefined, offset: number): boolean {
  const through = value === undefined ? undefined : finishedThrough(value);
  return through !== undefined && offset < through;
}

const keyOf = (ctx: EngineContext, t: AttemptTarget) => ctx.names.positionKey(t.subscriptionId, t.partition, t.generation);

/** The record of the target's partition and generation, with its revision; undefined value when there is none. */
async function readRecord(ctx: EngineContext, t: AttemptTarget): Promise<{ value: string | undefined; revision: number | undefined }> {
  const got = await ctx.positions.get(keyOf(ctx, t));
  if (!got) return { value: undefined, revision: undefined };
  const value = got.operation === 'PUT' && got.value.length > 0 ? Buffer.from(got.value).toString('utf8') : undefined;
  return { value, revision: got.revision };
}

/** The record of the target's partition and generation (its text), or undefined. */
export async function positionRecord(ctx: EngineContext, t: AttemptTarget): Promise<string | undefined> {
  return (await readRecord(ctx, t)).value;
}

/** The partition's last matched offset before this event in its generation, or null (the first since the start or a seek). */
async function previousMatched(ctx: EngineContext, t: AttemptTarget): Promise<number | null> {
  const value = await positionRecord(ctx, t);
  return value === undefined ? null : previousFrom(value, t.offset);
}

/** Compare-and-set writes of an ordered mark tried before giving up to the other writers (whose marks are as far). */
const MARK_TRIES = 5;

/**
 * Records a finished event as the last matched, with the previous offset it was sent with (read when the
 * caller has none). Under `ordering: partition` the mark never moves back: a stalled node's late answer
 * for an offset another node finished and went past writes nothing (compare-and-set on the revision read).
 */
export async function markMatched(ctx: EngineContext, t: AttemptTarget): Promise<void> {
  if (t.redrive) return; // a redelivery is outside the partition's order
  if (t.ordered !== true) {
    const previous = t.previousOffset !== undefined ? t.previousOffset : await previousMatched(ctx, t);
    await ctx.positions.put(keyOf(ctx, t), encode(t.offset, previous, false));
    return;
  }
  for (let tries = 0; tries < MARK_TRIES; tries++) {
    const { value, revision } = await readRecord(ctx, t);
    if (finishedPast(value, t.offset)) return;
    const previous = t.previousOffset !== undefined ? t.previousOffset : value === undefined ? null : previousFrom(value, t.offset);
    const text = encode(t.offset, previous, true);
    try {
      if (revision === undefined) await ctx.positions.create(keyOf(ctx, t), text);
      else await ctx.positions.update(keyOf(ctx, t), text, revision);
      return;
    } catch (err) {
      if (!isWrongLastSequence(err)) throw err; // another write came first: read it again
    }
  }
  // Every try lost. Fine when the writes that won marked as far; a record still behind this offset means
  // the bucket refuses writes from the revision it answers (a chaos run on nats-server 2.9.10 saw that for
  // over a minute, after restarts and stalls): the partition's next events go out with a stale
  // herald-previous-offset until a write is taken again. Said, not hidden.
  const value = await readRecord(ctx, t).then(
    (r) => r.value,
    () => undefined, // no answer: nothing to say, and the event is settled as before
  );
  if (value === undefined) return;
  const marked = markedOffset(value);
  if (marked === undefined || marked < t.offset)
    ctx.log.warn(
      { subscription: t.subscriptionId, partition: t.partition, offset: t.offset, generation: t.generation, marked: value },
      "a partition's mark could not be moved past this event: the next events' herald-previous-offset is stale",
    );
}
