import { DeliverPolicy, type ConsumerMessages, type JetStreamClient, type JetStreamManager, type StoredMsg } from 'nats';
import { deadLetterIdNumber } from '../../store/dead-letters-repo';
import { AppError } from '../../errors';
import { streamWritable } from '../cluster-monitor';
import { isNotFound } from '../nats-errors';
import type { DeliveryNames } from './names';
import type { AttemptRow, DeadLetterRow } from '../../subscriptions/delivery-records';

/** nats.js's manager has direct gets, though its exported interface does not list them (see `../reads.ts`). */
type WithDirectGet = JetStreamManager & {
  direct: { getMessage(stream: string, query: { seq: number; next_by_subj?: string } | { last_by_subj: string }): Promise<StoredMsg> };
};

/** How long the ephemeral consumer of a read that was abandoned (no delete reached the server) outlives it. */
const READ_CONSUMER_INACTIVE_MS = 10_000;
/** Longest wait for an ordered read of one subject (the attempt log: at most 1,000 small messages). */
const READ_EXPIRES_MS = 3000;
/** Longest a read of one subject may take in all, its consumer's creation included. */
const READ_DEADLINE_MS = READ_EXPIRES_MS + 2000;

const cannotRead = (why: string) =>
  new AppError('unavailable', `the JetStream cluster cannot read delivery records right now (${why}); retry later`, { retryAfter: 1 });

/** The first message of `subject` at or after `seq`, or undefined. */
async function nextOf(jsm: JetStreamManager, stream: string, subject: string, seq: number): Promise<StoredMsg | undefined> {
  try {
    return await (jsm as WithDirectGet).direct.getMessage(stream, { seq, next_by_subj: subject });
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/**
 * A message asked of the stream's leader (`STREAM.MSG.GET`, which only the leader answers: not a
 * direct get, which any replica may, nor a stream info, which a replica without a leader answered
 * during a majority outage), or undefined. `next_by_subj`: the first of that subject at or after `seq`
 * (the server takes it; nats.js's type does not list it).
 */
export async function leaderGet(
  jsm: JetStreamManager,
  stream: string,
  query: { seq: number; next_by_subj?: string } | { last_by_subj: string },
): Promise<StoredMsg | undefined> {
  try {
    return await jsm.streams.getMessage(stream, query as Parameters<JetStreamManager['streams']['getMessage']>[1]);
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/**
 * Whether a stream's sequence went back: a new message stored at or below one this node stored before. A
 * stream's sequence only grows, a purge or a deleted message included; one that went back lost messages its
 * servers had confirmed (a chaos run on nats-server 2.9.10: `_dead` rolled back to a stalled replica's copy,
 * 85 dead letters gone and their ids given to new ones, with nothing said). Herald cannot bring them back; it
 * says so once per fall, with what was lost, in an `error` line. Only this node's own acknowledgements count:
 * they come back in the order the leader sequenced them, while a sequence read (another node's message) may be
 * read before the acknowledgement of an earlier one of this node's arrives.
 */
export function createSequenceWatch(stream: string, what: string, onWentBack: (message: string, fields: Record<string, unknown>) => void) {
  let highest = 0;
  return {
    /** A publish's acknowledgement: a new message (not a duplicate) at or below `highest` means the stream went back. */
    stored(seq: number, duplicate: boolean): void {
      if (!duplicate && seq <= highest)
        onWentBack(
          `stream ${stream} went back from sequence ${highest} to ${seq}: the NATS servers may have lost up to ${highest - seq + 1} ${what} they had confirmed; Herald cannot bring them back`,
          { stream, known: highest, seen: seq },
        );
      if (!duplicate) highest = seq;
    },
  };
}
export type SequenceWatch = ReturnType<typeof createSequenceWatch>;

/**
 * How many messages `subject` holds, from a stream that has a leader and a quorum of current
 * replicas (`streamWritable`, the rule readiness uses): during a majority outage a replica answered
 * the info request alone, with its own count.
 * @throws AppError `unavailable` when the stream has no quorum
 */
async function confirmedCount(jsm: JetStreamManager, stream: string, subject: string): Promise<number> {
  const info = await jsm.streams.info(stream, { subjects_filter: subject });
  const noQuorum = streamWritable(info);
  if (noQuorum) throw cannotRead(noQuorum);
  return info.state.subjects?.[subject] ?? 0;
}

/** How many messages `subject` holds in `stream`. */
async function countOf(jsm: JetStreamManager, stream: string, subject: string): Promise<number> {
  const info = await jsm.streams.info(stream, { subjects_filter: subject });
  return info.state.subjects?.[subject] ?? 0;
}

/**
 * Up to `max` messages of `subject` from sequence `from` on, in order, through an ordered
 * (ephemeral) consumer; stops at the last one there is. Bounded by `max` and a time limit.
 */
async function readSubject(
  js: JetStreamClient,
  jsm: JetStreamManager,
  stream: string,
  subject: string,
  from: number,
  max: number,
): Promise<{ seq: number; data: Uint8Array }[]> {
  if (max <= 0) return [];
  const first = await nextOf(jsm, stream, subject, Math.max(1, from));
  // A direct get may be answered by any replica, a lagging or cut-off one among them. The stream is
  // asked whether it has a leader and a quorum whatever that answer was: its "none" may be a lagging
  // replica's (an outage answers 503, not an empty list), and the ordered consumer below, which only
  // a leader can create, would otherwise wait for one as long as a majority outage lasts (probe: the
  // attempt log's GET never answered with 2 of 3 servers down).
  if ((await confirmedCount(jsm, stream, subject)) === 0) return [];
  let messages: ConsumerMessages | undefined;
  let abandoned = false;
  const read = async () => {
    const consumer = await js.consumers.get(stream, {
      filterSubjects: subject,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: first?.seq ?? Math.max(1, from),
      // An abandoned read's consumer goes soon (the client's default keeps it 5 minutes).
      inactive_threshold: READ_CONSUMER_INACTIVE_MS,
    });
    try {
      const out: { seq: number; data: Uint8Array }[] = [];
      messages = await consumer.fetch({ max_messages: max, expires: READ_EXPIRES_MS });
      if (abandoned) messages.stop(); // answered 503 already
      for await (const m of messages) {
        out.push({ seq: m.seq, data: m.data });
        if (out.length >= max || m.info.pending === 0) break;
      }
      return out;
    } finally {
      // Each read's ephemeral consumer is deleted once read (was: one per GET of the attempt log or the dead
      // letters stayed on the stream for 5 minutes: a probe counted 50 more after 50 GETs of each).
      messages?.stop();
      consumer.delete().catch(() => undefined);
    }
  };
  // The quorum may go while the read runs: bounded, it answers 503 rather than never. What the read
  // does after that is let go (its failure then is no one's to hear).
  const reading = read();
  reading.catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(cannotRead(`no answer within ${READ_DEADLINE_MS} ms`)), READ_DEADLINE_MS);
  });
  try {
    return await Promise.race([reading, deadline]);
  } catch (err) {
    abandoned = true;
    messages?.stop();
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

const json = <T>(data: Uint8Array): T => JSON.parse(Buffer.from(data).toString('utf8')) as T;

/**
 * Dead letters in the stream `<prefix>_dead`, one subject per subscription; a row's id is its
 * stream sequence. Published with a message id per (attempt, generation), so a node that retries a
 * publish whose answer it lost within the duplicate window stores it once.
 */
export function createDeadLetters(deps: { js: JetStreamClient; jsm: JetStreamManager; names: DeliveryNames; watch: SequenceWatch }) {
  const { js, jsm, names, watch } = deps;
  const stream = names.deadStream;
  const toRow = (seq: number, data: Uint8Array): DeadLetterRow => ({ ...json<Omit<DeadLetterRow, 'id'>>(data), id: String(seq) });
  return {
    async add(row: Omit<DeadLetterRow, 'id'>, msgId: string): Promise<string> {
      const ack = await js.publish(names.deadSubject(row.subscriptionId), JSON.stringify(row), { msgID: msgId });
      watch.stored(ack.seq, ack.duplicate);
      return String(ack.seq);
    },
    async page(subscriptionId: string, after: number, limit: number): Promise<DeadLetterRow[]> {
      const rows = await readSubject(js, jsm, stream, names.deadSubject(subscriptionId), after + 1, limit);
      return rows.map((r) => toRow(r.seq, r.data));
    },
    count: (subscriptionId: string) => countOf(jsm, stream, names.deadSubject(subscriptionId)),
    /** The subscription's dead letter of that id, or undefined. */
    async get(subscriptionId: string, id: string): Promise<DeadLetterRow | undefined> {
      const seq = deadLetterIdNumber(id);
      if (seq === undefined) return undefined;
      const subject = names.deadSubject(subscriptionId);
      const msg = (await nextOf(jsm, stream, subject, seq)) ?? (await leaderGet(jsm, stream, { seq }));
      return msg && msg.seq === seq && msg.subject === subject ? toRow(msg.seq, msg.data) : undefined;
    },
    async remove(subscriptionId: string, id: string): Promise<boolean> {
      const row = await this.get(subscriptionId, id);
      return row ? this.removeRow(row) : false;
    },
    /** A row this subscription's page or `get` gave: deleted without looking it up again. */
    async removeRow(row: DeadLetterRow): Promise<boolean> {
      try {
        return await jsm.streams.deleteMessage(stream, Number(row.id), false);
      } catch (err) {
        if (isNotFound(err)) return false; // deleted meanwhile (through another node)
        throw err;
      }
    },
    purge: (subscriptionId: string) => jsm.streams.purge(stream, { filter: names.deadSubject(subscriptionId) }),
  };
}
export type DeadLetters = ReturnType<typeof createDeadLetters>;

/**
 * The attempt log in the stream `<prefix>_attempts`, one subject per subscription keeping its newest
 * 1,000 (`max_msgs_per_subject`); a row's id is its stream sequence.
 */
export function createAttemptLog(deps: { js: JetStreamClient; jsm: JetStreamManager; names: DeliveryNames; kept: number }) {
  const { js, jsm, names } = deps;
  const stream = names.attemptsStream;
  return {
    async add(row: AttemptRow): Promise<void> {
      await js.publish(names.attemptsSubject(row.subscriptionId), JSON.stringify(row));
    },
    /** Newest first, ids below `before`: the subject's kept rows are read in order (at most 1,000) and the page cut from their end. */
    async page(subscriptionId: string, before: number, limit: number): Promise<(AttemptRow & { id: string })[]> {
      const rows = await readSubject(js, jsm, stream, names.attemptsSubject(subscriptionId), 1, deps.kept);
      return rows
        .filter((r) => r.seq < before)
        .reverse()
        .slice(0, limit)
        .map((r) => ({ ...json<AttemptRow>(r.data), id: String(r.seq) }));
    },
    purge: (subscriptionId: string) => jsm.streams.purge(stream, { filter: names.attemptsSubject(subscriptionId) }),
  };
}
export type AttemptLog = ReturnType<typeof createAttemptLog>;
