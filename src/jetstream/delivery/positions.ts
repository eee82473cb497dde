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

const keyOf = (ctx: EngineContext, t: AttemptTarget) => ctx.names.positionKey(t.subscriptionId, t.partition, t.generation);

/** The partition's last matched offset before this event in its generation, or null (the first since the start or a seek). */
export async function previousMatched(ctx: EngineContext, t: AttemptTarget): Promise<number | null> {
  const got = await ctx.positions.get(keyOf(ctx, t));
  if (!got || got.operation !== 'PUT' || got.value.length === 0) return null;
  return previousFrom(Buffer.from(got.value).toString('utf8'), t.offset);
}

/** Records a finished event as the last matched, with the previous offset it was sent with (read when the caller has none). */
export async function markMatched(ctx: EngineContext, t: AttemptTarget): Promise<void> {
  if (t.redrive) return; // a redelivery is outside the partition's order
  const previous = t.previousOffset !== undefined ? t.previousOffset : await previousMatched(ctx, t);
  await ctx.positions.put(keyOf(ctx, t), encode(t.offset, previous, t.ordered === true));
}
