/**
 * The delivery thread: runs the dispatcher and its subscription workers off the ingest thread, with
 * its own SQLite connection to herald.db (delivery state written behind, as before), its own undici
 * sender, and its own read-only view of the log (`wal/log-reader.ts`). It hears of committed groups,
 * the indexer's progress and retention from the main thread, and answers the delivery port's calls
 * and receivers' callbacks by message (`delivery-protocol.ts`). If it dies, the main thread starts
 * another, which resumes from what this one persisted (at least once).
 */
import { parentPort, workerData } from 'node:worker_threads';
import pino from 'pino';
import { AppError, fromDatabaseError } from '../errors';
import { unwrittenCallback } from './callback-write';
import { createCheckpointSignal } from '../store/checkpoint-signal';
import { openConnection } from '../store/db';
import { openLogReader } from '../wal/log-reader';
import { throttledLine } from '../logger';
import { createDispatcher } from './dispatcher';
import {
  DELIVERY_BUSY_TIMEOUT_MS,
  toWire,
  type CallOp,
  type CallResults,
  type DeliveryCall,
  type DeliveryWorkerData,
  type FromDelivery,
  type Observed,
  type ToDelivery,
  type WireError,
} from './delivery-protocol';
import { startBacklogPriority } from './backlog-priority';
import { createHttpSender } from './http-sender';
import { niceOfThisThread, niceThisThread } from '../thread-priority';
import { countOutcome, newTally, observeDuration, observePublishToDelivery, type DeliveryTally } from './tally';

/** What was observed is sent as one tally per subscription at most this often (and before every answer). */
const OBSERVE_INTERVAL_MS = 50;

const port = parentPort!;
const data = workerData as DeliveryWorkerData;
const ownCheckpoint = data.checkpointSignal ? createCheckpointSignal(data.checkpointSignal) : undefined;
/** A hold that ended just before the callback came can still be what its write waited behind (a flush begun before). */
const OWN_HOLD_SLACK_MS = 1000;
const post = (message: FromDelivery) => port.postMessage(message);
// No time, pid or host: the main thread's logger adds its own when it writes the line.
const log = pino({ level: data.logLevel, base: null, timestamp: false }, { write: (line: string) => post({ type: 'log', line }) });
const skew = data.clockSkew;
const clock = skew ? () => Date.now() + (skew[0] ?? 0) : Date.now;

const db = openConnection(data.dbFile);
db.pragma(`busy_timeout = ${DELIVERY_BUSY_TIMEOUT_MS}`);
// A damage its reads find stops ingest and reads on the main thread too (its own reads may not meet it).
/** Lines that come once per callback while herald.db cannot be written: once a minute each. */
const answeredUnwritten = throttledLine(60_000);
const refusedUnwritten = throttledLine(60_000);
const reader = openLogReader(data.log, log, (detail) => post({ type: 'index-damaged', detail }));
const sender = createHttpSender({ allowPrivate: data.sinkAllowPrivate });
let committedGroups = 0;
const priority = startBacklogPriority({
  backlogNice: data.backlogNice,
  base: niceOfThisThread(),
  counts: () => ({ backlogReads: reader.indexReads(), committedGroups }),
  apply: niceThisThread,
});

let observed = new Map<string, Observed>();
let observeTimer: NodeJS.Timeout | undefined;
/** This subscription's counts since the last message (a timer sends them). */
function observedOf(subscriptionId: string): Observed {
  let entry = observed.get(subscriptionId);
  if (!entry) {
    observed.set(subscriptionId, (entry = { subscriptionId, tally: newTally(), filterErrors: 0 }));
    observeTimer ??= setTimeout(sendObservations, OBSERVE_INTERVAL_MS);
  }
  return entry;
}
const tallyOf = (subscriptionId: string): DeliveryTally => observedOf(subscriptionId).tally;
function sendObservations(): void {
  if (observeTimer) clearTimeout(observeTimer);
  observeTimer = undefined;
  if (observed.size === 0) return;
  post({ type: 'observed', subscriptions: [...observed.values()] });
  observed = new Map();
}

let answers = 0;
/** Test hook (never reachable from the API): an uncaught error after `crashAfterAnswers` answered attempts. */
function countAnswer(): void {
  answers++;
  if (data.crashAfterAnswers !== undefined && answers === data.crashAfterAnswers) {
    setImmediate(() => {
      throw new Error(`test: the delivery thread crashes after ${answers} answered attempts`);
    });
  }
}

const dispatcher = createDispatcher({
  store: reader,
  db,
  log,
  sender,
  ackUrlBase: () => data.ackUrlBase,
  clock,
  // A test's skewed clock moves time on purpose (days, for auto-disable): only the real one is watched for steps.
  clockSteps: !skew,
  enabled: data.enabled,
  onWriteHealth: (failing) => post({ type: 'state-writes', failing }),
  lockHeld: ownCheckpoint ? (forAtLeastMs = 0) => ownCheckpoint.holdingFor(forAtLeastMs) : undefined,
  observer: {
    outcome: (subscription, outcome) => countOutcome(tallyOf(subscription), outcome),
    answered: (subscription, ms) => {
      observeDuration(tallyOf(subscription), ms);
      countAnswer();
    },
    succeeded: (subscription, ms) => observePublishToDelivery(tallyOf(subscription), ms),
  },
});

function eventsOf(subscriptionId: string) {
  return {
    onGone: () => post({ type: 'gone', subscriptionId }),
    onFailing: (detail: { failingSince: number; lastError: string }) => post({ type: 'failing', subscriptionId, detail }),
    onFilterError: () => void (observedOf(subscriptionId).filterErrors += 1),
  };
}

/** Adds or removes a subscription; the reader shares decoded events between them when there are several. */
function counted<T>(result: T): T {
  reader.readers(dispatcher.count());
  return result;
}

function run(call: DeliveryCall): CallResults[CallOp] {
  switch (call.op) {
    case 'add':
      return counted(dispatcher.add(call.record, eventsOf(call.record.id)));
    case 'update':
      return dispatcher.update(call.record);
    case 'resume':
      return dispatcher.resume(call.subscriptionId);
    case 'remove':
      return counted(dispatcher.remove(call.subscriptionId));
    case 'seek':
      return dispatcher.seek(call.subscriptionId, call.target);
    case 'stats':
      return dispatcher.stats(call.subscriptionId);
    case 'attempts':
      return dispatcher.attempts(call.subscriptionId, call.page);
    case 'deadLetters':
      return dispatcher.deadLetters(call.subscriptionId, call.page);
    case 'redeliver':
      return dispatcher.redeliver(call.subscriptionId, call.ids);
    case 'deleteDeadLetter':
      return dispatcher.deleteDeadLetter(call.subscriptionId, call.deadLetterId);
    case 'callback':
      return dispatcher.callback(call.deliveryId, call.action, call.arg);
  }
}

function wireError(thrown: unknown): WireError {
  const err = fromDatabaseError(thrown) ?? thrown;
  if (err instanceof AppError) return toWire(err);
  log.error({ err }, 'delivery thread: a call failed');
  return { message: err instanceof Error ? err.message : String(err) };
}

let closing = false;
async function close(deadline: number): Promise<void> {
  closing = true;
  await dispatcher.close({ deadline });
  priority.stop();
  sendObservations();
  reader.close();
  db.close();
  post({ type: 'closed' });
  port.close();
  // Everything is written and closed: the thread ends now, not when the HTTP client's last handle lets go
  // (a connect to a sink that drops packets, abandoned by its attempt, held the shutdown for 10 s).
  process.exit(0);
}

port.on('message', (message: ToDelivery) => {
  switch (message.type) {
    case 'call':
      if (closing) {
        post({
          type: 'answer',
          id: message.id,
          ok: false,
          error: { code: 'unavailable', message: 'delivery is shutting down', retryAfter: 1 },
        });
        return;
      }
      try {
        const value = run(message.call);
        // What was observed before the answer reaches the main thread first (a deleted subscription's
        // last observations before its series are forgotten, metrics that agree with the stats).
        sendObservations();
        if (message.call.op === 'callback') {
          // A receiver's callback is answered once what it changed is written: an ack answered 200 survives a
          // crash. While another process holds herald.db's write lock it is answered anyway, as before: applied
          // in memory, written by the flush's retry, a crash meanwhile delivering again (at least once).
          const { id } = message;
          const answer = () => post({ type: 'answer', id, ok: true, value });
          const arrived = Date.now();
          dispatcher.persisted().then(answer, (err: unknown) => {
            const refused = unwrittenCallback(err, ownCheckpoint?.heldSince(arrived - OWN_HOLD_SLACK_MS) ?? false);
            if (!refused) {
              answeredUnwritten((suppressed) =>
                log.warn({ err, suppressed }, 'delivery thread: a callback is answered before it could be written; its write is retried'),
              );
              answer();
              return;
            }
            // Once a minute: a full disk refuses every callback (crash probe: 62,090 lines in 25 s).
            refusedUnwritten((suppressed) => log.error({ err, suppressed }, 'delivery thread: a callback could not be written'));
            post({ type: 'answer', id, ok: false, error: toWire(refused) });
          });
          return;
        }
        post({ type: 'answer', id: message.id, ok: true, value });
      } catch (err) {
        post({ type: 'answer', id: message.id, ok: false, error: wireError(err) });
      }
      return;
    case 'committed':
      for (const group of message.groups) reader.committed(group);
      committedGroups += message.groups.length;
      return;
    case 'indexed':
      reader.indexed(message.through);
      return;
    case 'retire':
      reader.retire(message.through, message.firstOffsets);
      post({ type: 'retire-ready', id: message.id });
      return;
    case 'quiesce':
      dispatcher.quiesce();
      return;
    case 'close':
      void close(message.deadline);
      return;
  }
});

post({ type: 'ready' });
