/**
 * Messages between the gateway's main thread (`delivery-thread.ts`, the proxy) and the delivery
 * thread (`delivery-worker.ts`, which runs the dispatcher). The main thread owns the subscription
 * records and the log; the delivery thread owns delivery state (it writes it behind into herald.db)
 * and reads the log through its own view (`wal/log-reader.ts`).
 */
import { AppError, type ErrorCode, type Violation } from '../errors';
import type { SubscriptionRecord } from '../subscriptions/record';
import type { DeliveryStats } from '../subscriptions/delivery-control';
import type { SeekTarget } from '../subscriptions/seek-schema';
import type { DeliveryTally } from './tally';
import type { GroupPositions, LogSnapshot } from '../wal/log-feed';
import type { CallbackAction, CallbackAnswer } from './dispatcher';
import type { AttemptRow, DeadLetterRow } from '../subscriptions/delivery-records';

/** A call of the delivery port (`DeliveryControl`) or a receiver's callback, answered by `answer`. */
export type DeliveryCall =
  | { op: 'add'; record: SubscriptionRecord }
  | { op: 'update'; record: SubscriptionRecord }
  | { op: 'resume'; subscriptionId: string }
  | { op: 'remove'; subscriptionId: string }
  | { op: 'seek'; subscriptionId: string; target: SeekTarget }
  | { op: 'stats'; subscriptionId: string }
  | { op: 'attempts'; subscriptionId: string; page: { before: number; limit: number } }
  | { op: 'deadLetters'; subscriptionId: string; page: { after: number; limit: number } }
  | { op: 'redeliver'; subscriptionId: string; ids: string[] | undefined }
  | { op: 'deleteDeadLetter'; subscriptionId: string; deadLetterId: string }
  | { op: 'callback'; deliveryId: string; action: CallbackAction; arg: { delayMs?: number; ms?: number; reason?: string } };

/** What each call answers. */
export interface CallResults {
  add: void;
  update: void;
  resume: void;
  remove: void;
  seek: { generation: number };
  stats: DeliveryStats;
  attempts: (AttemptRow & { id: string })[];
  deadLetters: DeadLetterRow[];
  redeliver: number;
  deleteDeadLetter: boolean;
  callback: CallbackAnswer;
}

export type CallOp = DeliveryCall['op'];

/** An error crossing the thread boundary: an `AppError`'s fields (`code` undefined: anything else, a 500). */
export interface WireError {
  code?: ErrorCode;
  message: string;
  details?: Violation[];
  totalErrors?: number;
  retryAfter?: number;
}

/** An `AppError` as it crosses the thread boundary (`fromWire` makes it again on the other side). */
export function toWire(err: AppError): WireError {
  return { code: err.code, message: err.message, details: err.details, totalErrors: err.totalErrors, retryAfter: err.retryAfter };
}

export function fromWire(error: WireError): Error {
  if (error.code === undefined) return new Error(error.message);
  return new AppError(error.code, error.message, { details: error.details, totalErrors: error.totalErrors, retryAfter: error.retryAfter });
}

export type ToDelivery =
  | { type: 'call'; id: number; call: DeliveryCall }
  /** Groups committed to the log since the last message, in log order (one message a turn of the main thread's loop). */
  | { type: 'committed'; groups: GroupPositions[] }
  /** Every record before `through` is in index.db. */
  | { type: 'indexed'; through: number }
  /** Retention will delete everything before `through`; answered with `retire-ready` once nothing below is read. */
  | { type: 'retire'; id: number; through: number; firstOffsets: number[] }
  /** A shutdown begins: start no attempt any more (open requests go on; `close` follows). */
  | { type: 'quiesce' }
  /** Stop pulling, let open requests finish until `deadline` (ms since the epoch), persist everything, exit. */
  | { type: 'close'; deadline: number };

/** What one subscription's deliveries added to the metrics since the last message (see `tally.ts`). */
export interface Observed {
  subscriptionId: string;
  tally: DeliveryTally;
  /** Filter evaluations that failed or ran out of budget. */
  filterErrors: number;
}

export type FromDelivery =
  /** The thread has opened its database and log view and takes calls. */
  | { type: 'ready' }
  | { type: 'answer'; id: number; ok: true; value: CallResults[CallOp] }
  | { type: 'answer'; id: number; ok: false; error: WireError }
  | { type: 'retire-ready'; id: number }
  /** The receiver answered 410: the service pauses the subscription with reason `gone`. */
  | { type: 'gone'; subscriptionId: string }
  /** Every attempt failed for `disableAfterFailingMs`: the service pauses it with reason `failing`. */
  | { type: 'failing'; subscriptionId: string; detail: { failingSince: number; lastError: string } }
  | { type: 'observed'; subscriptions: Observed[] }
  /** The thread's reads found index.db damaged (the main thread stops ingest and reads too, see `LogFeed.indexDamaged`). */
  | { type: 'index-damaged'; detail: string }
  /** One log line (pino JSON) for the main thread's logger. */
  | { type: 'log'; line: string }
  /** herald.db's delivery state cannot be written now (`failing`, the error), or can again (undefined). */
  | { type: 'state-writes'; failing: string | undefined }
  /** Everything is persisted and closed; the thread exits next. */
  | { type: 'closed' };

export interface DeliveryWorkerData {
  dbFile: string;
  log: LogSnapshot;
  logLevel: string;
  enabled: boolean;
  sinkAllowPrivate: boolean;
  ackUrlBase: string;
  /** HERALD_BACKLOG_NICE: the thread's nice value while it drains a backlog under ingest (0: never changed). */
  backlogNice: number;
  /** Tests: milliseconds added to the wall clock (index 0), shared with the main thread. */
  clockSkew?: Float64Array;
  /** Tests: the thread throws (an uncaught error) after this many delivery attempts were answered. */
  crashAfterAnswers?: number;
  /** store/checkpoint-signal.ts's buffer: when herald.db's own checkpointer held its write lock. */
  checkpointSignal?: SharedArrayBuffer;
}

/**
 * How long a statement of the delivery thread waits for herald.db's write lock (SQLite's busy_timeout; the
 * gateway's other connections wait 5 s). A write-behind flush that fails is retried 50 ms later with its buffer
 * kept, so a short wait loses nothing, and the thread is never blocked long: a shutdown that has to end it waits
 * for its statements instead of terminating it inside SQLite (which aborts the process).
 */
export const DELIVERY_BUSY_TIMEOUT_MS = 1_000;
