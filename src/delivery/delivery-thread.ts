import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { AppError } from '../errors';
import type { Db } from '../store/db';
import { createDeliveryStateRepo } from '../store/delivery-state-repo';
import type { SubscriptionRecord } from '../subscriptions/record';
import type { DeliveryControl, SubscriptionEvents } from '../subscriptions/delivery-control';
import type { LogReader } from '../wal/event-store';
import type { GroupPositions, LogFeed } from '../wal/log-feed';
import {
  DELIVERY_BUSY_TIMEOUT_MS,
  fromWire,
  type CallOp,
  type CallResults,
  type DeliveryCall,
  type DeliveryWorkerData,
  type FromDelivery,
  type Observed,
  type ToDelivery,
} from './delivery-protocol';
import type { CallbackAction, CallbackAnswer } from './dispatcher';
import { writeInitialOffsets } from './initial-offsets';
import type { DeliveryTally } from './tally';
import { canRestorePriority } from '../thread-priority';

export interface DeliveryThreadOptions {
  /** herald.db: the thread opens its own connection; `db` is the main thread's (for `initOffsets`). */
  dbFile: string;
  db: Db;
  store: Pick<LogReader, 'heads' | 'firstOffsets' | 'partitions'>;
  feed: LogFeed;
  log: Logger;
  enabled: boolean;
  sinkAllowPrivate: boolean;
  /** HERALD_BACKLOG_NICE (see `backlog-priority.ts`); 0 leaves the thread's priority alone. */
  backlogNice?: number;
  /** What a subscription's deliveries added to the metrics (counted on the thread, sent now and then). */
  observer: { tally(subscriptionId: string, tally: DeliveryTally): void };
  /** Tests: milliseconds added to the wall clock, shared with the thread (a `SharedArrayBuffer`'s view). */
  clockSkew?: Float64Array;
  /** Tests: the first thread throws after this many answered attempts (see `delivery-worker.ts`). */
  crashAfterAnswers?: number;
  /** store/checkpoint-signal.ts's buffer, handed to the thread: when herald.db's own checkpointer held its write lock. */
  checkpointSignal?: SharedArrayBuffer;
  /** The thread died too often (`maxRestarts` within `restartWindowMs`): the process should exit non-zero. */
  onFatal: (err: Error) => void;
  maxRestarts?: number;
  restartWindowMs?: number;
}

/** A call unanswered this long is answered 503 (a thread stuck in a loop must not hang requests). */
const CALL_TIMEOUT_MS = 30_000;
/** Retention waits at most this long for the thread to let go of the segments it deletes. */
const RETIRE_TIMEOUT_MS = 10_000;
/**
 * Past the deadline, the thread is terminated only after this grace. It covers the statements it may be blocked in
 * (one it was in when told to close, then its last flush, tried again while busy until a busy timeout past the
 * deadline, and the attempt log's: each waits up to the busy timeout) with a second to spare: terminating a
 * thread inside SQLite aborts the whole process.
 */
const CLOSE_GRACE_MS = 3 * DELIVERY_BUSY_TIMEOUT_MS + 1_000;
const DEFAULT_MAX_RESTARTS = 3;
const DEFAULT_RESTART_WINDOW_MS = 60_000;

/** The built worker (see `wal/indexer.ts`: tests run `src/` with ts-jest, a thread needs JavaScript). */
function workerFile(): string {
  return __filename.endsWith('.ts')
    ? path.resolve(__dirname, '..', '..', 'dist', 'delivery', 'delivery-worker.js')
    : path.join(__dirname, 'delivery-worker.js');
}

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;
const isLevel = (label: string | undefined): label is (typeof LEVELS)[number] => LEVELS.some((l) => l === label);

const unavailable = (why: string) => new AppError('unavailable', `delivery is unavailable: ${why}; retry shortly`, { retryAfter: 1 });

interface Waiting {
  resolve: (value: CallResults[CallOp]) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * HERALD_BACKLOG_NICE, when this process may also take it back (else a drained backlog would leave
 * delivery at the lower priority for good): 0 and one log line otherwise.
 */
function backlogNiceAllowed(opts: DeliveryThreadOptions): number {
  const nice = opts.backlogNice ?? 0;
  if (nice === 0 || canRestorePriority()) return nice;
  opts.log.info(
    { backlogNice: nice },
    'delivery keeps the gateway priority while backlogs drain: returning to it afterwards needs RLIMIT_NICE >= 20 (ulimit -e 20; docker run --ulimit nice=20) or CAP_SYS_NICE',
  );
  return 0;
}

/**
 * The main thread's side of delivery: the subscriptions service's `DeliveryControl` and the
 * deliveries router's callbacks, each call a message to the delivery thread answered by message. It
 * forwards the log's feed (committed groups, the indexer's progress, retention, which waits for the
 * thread) and relays what the thread reports (410s, auto-disable, metrics, log lines).
 *
 * If the thread dies it is started again at once, from what it persisted in herald.db (at least
 * once: the attempts it had open are made again, same webhook-id); calls it had not answered are
 * answered 503 with `Retry-After`. More than `maxRestarts` deaths within `restartWindowMs` is fatal.
 */
export function createDeliveryThread(opts: DeliveryThreadOptions) {
  const stateRepo = createDeliveryStateRepo(opts.db);
  /** The subscriptions delivery runs for, as last sent: a new thread is given them all again. */
  const subscribed = new Map<string, { record: SubscriptionRecord; events: SubscriptionEvents }>();
  const waiting = new Map<number, Waiting>();
  const retiring = new Map<number, () => void>();
  let nextId = 1;
  let worker: Worker | undefined;
  let ackUrlBase = '';
  let incarnation = 0;
  const deaths: number[] = [];
  let fatal: Error | undefined;
  let closing: Promise<void> | undefined;
  let quiescing = false;
  /** What the thread last said about writing its state: the error while its flushes fail. */
  let stateWritesFailing: string | undefined;
  /** First offsets retention has announced; a thread started meanwhile must not read below them. */
  let announced: readonly number[] = [];
  const backlogNice = backlogNiceAllowed(opts);

  function spawn(): void {
    committedGroups = []; // the snapshot holds them: every committed group is in its tail or in index.db
    const snapshot = opts.feed.snapshot();
    snapshot.firstOffsets = snapshot.firstOffsets.map((first, p) => Math.max(first, announced[p] ?? 0));
    const data: DeliveryWorkerData = {
      dbFile: opts.dbFile,
      log: snapshot,
      logLevel: opts.log.level,
      enabled: opts.enabled,
      sinkAllowPrivate: opts.sinkAllowPrivate,
      ackUrlBase,
      backlogNice,
      clockSkew: opts.clockSkew,
      crashAfterAnswers: incarnation === 0 ? opts.crashAfterAnswers : undefined,
      checkpointSignal: opts.checkpointSignal,
    };
    incarnation++;
    const w = new Worker(workerFile(), { workerData: data });
    w.unref(); // close() waits for it; a gateway never closed must not keep the process alive
    worker = w;
    w.on('message', (m: FromDelivery) => onMessage(m));
    w.on('error', (err) => opts.log.error({ err }, 'delivery thread failed'));
    w.on('exit', (code) => onExit(w, code));
    // A thread started again during a shutdown starts no attempt either.
    if (quiescing) send({ type: 'quiesce' });
    for (const { record } of subscribed.values()) send({ type: 'call', id: 0, call: { op: 'add', record } });
  }

  function onExit(w: Worker, code: number): void {
    if (w !== worker) return;
    worker = undefined;
    stateWritesFailing = undefined; // a new thread says again
    failWaiting(unavailable('the delivery thread stopped'));
    if (closing) return;
    const now = performance.now();
    deaths.push(now);
    while (deaths.length > 0 && deaths[0]! < now - (opts.restartWindowMs ?? DEFAULT_RESTART_WINDOW_MS)) deaths.shift();
    if (deaths.length > (opts.maxRestarts ?? DEFAULT_MAX_RESTARTS)) {
      fatal = new Error(`the delivery thread died ${deaths.length} times within ${opts.restartWindowMs ?? DEFAULT_RESTART_WINDOW_MS} ms`);
      opts.log.fatal({ code, deaths: deaths.length }, 'delivery thread keeps dying; giving up so a supervisor restarts the gateway');
      opts.onFatal(fatal);
      return;
    }
    opts.log.error(
      { code, subscriptions: subscribed.size },
      'delivery thread exited; restarting it from the persisted delivery state (open attempts are made again)',
    );
    spawn();
  }

  function failWaiting(err: Error): void {
    for (const [id, w] of waiting) {
      clearTimeout(w.timer);
      w.reject(err);
      waiting.delete(id);
    }
    for (const resolve of retiring.values()) resolve();
    retiring.clear();
  }

  /**
   * Committed groups not sent yet: one message a turn of the event loop rather than one a group (at
   * high rates groups are small, and a message per group was 8 % of the ingest thread's time).
   */
  let committedGroups: GroupPositions[] = [];

  function committed(group: GroupPositions): void {
    if (committedGroups.push(group) === 1) setImmediate(sendCommitted);
  }

  function sendCommitted(): void {
    if (committedGroups.length === 0) return;
    const groups = committedGroups;
    committedGroups = [];
    worker?.postMessage({ type: 'committed', groups } satisfies ToDelivery);
  }

  /** Every other message goes after the groups committed before it (the thread reads them in order). */
  function send(message: ToDelivery): void {
    sendCommitted();
    worker?.postMessage(message);
  }

  function onMessage(m: FromDelivery): void {
    switch (m.type) {
      case 'answer': {
        const w = waiting.get(m.id);
        if (!w) return;
        waiting.delete(m.id);
        clearTimeout(w.timer);
        if (m.ok) w.resolve(m.value);
        else w.reject(fromWire(m.error));
        return;
      }
      case 'retire-ready':
        retiring.get(m.id)?.();
        retiring.delete(m.id);
        return;
      case 'gone':
        subscribed.get(m.subscriptionId)?.events.onGone();
        return;
      case 'failing':
        subscribed.get(m.subscriptionId)?.events.onFailing?.(m.detail);
        return;
      case 'observed':
        for (const o of m.subscriptions) observed(o);
        return;
      case 'index-damaged':
        opts.feed.indexDamaged(m.detail);
        return;
      case 'log':
        relayLog(m.line);
        return;
      case 'state-writes':
        stateWritesFailing = m.failing;
        return;
      case 'ready':
      case 'closed':
        return;
    }
  }

  function observed(o: Observed): void {
    const subscription = subscribed.get(o.subscriptionId);
    if (!subscription) return; // deleted meanwhile: its series are gone and stay gone
    opts.observer.tally(o.subscriptionId, o.tally);
    for (let i = 0; i < o.filterErrors; i++) subscription.events.onFilterError?.();
  }

  /** The thread's log line, written by the main thread's logger (its level, redaction and destination). */
  function relayLog(line: string): void {
    let parsed: { level?: number; msg?: string } & Record<string, unknown>;
    try {
      parsed = JSON.parse(line) as typeof parsed;
    } catch {
      return;
    }
    const { level, msg, ...fields } = parsed;
    const label = opts.log.levels.labels[level ?? 30];
    if (isLevel(label)) opts.log[label](fields, msg);
  }

  function call<O extends CallOp>(c: Extract<DeliveryCall, { op: O }>): Promise<CallResults[O]> {
    if (fatal) return Promise.reject(unavailable('the delivery thread keeps failing'));
    if (closing) return Promise.reject(unavailable('the gateway is shutting down'));
    if (!worker) return Promise.reject(unavailable('the delivery thread is not running'));
    const id = nextId++;
    return new Promise<CallResults[O]>((resolve, reject) => {
      const timer = setTimeout(() => {
        waiting.delete(id);
        reject(unavailable(`the delivery thread did not answer within ${CALL_TIMEOUT_MS} ms`));
      }, CALL_TIMEOUT_MS);
      timer.unref();
      // The answer to a call of op O is CallResults[O] (the thread's `run` returns it).
      waiting.set(id, { resolve: (value) => resolve(value as CallResults[O]), reject, timer });
      send({ type: 'call', id, call: c });
    });
  }

  /** Retention waits for the thread to stop reading what it deletes (bounded; a dead thread waits for nothing). */
  function retire(through: number, firstOffsets: readonly number[]): Promise<void> {
    announced = firstOffsets.map((first, p) => Math.max(first, announced[p] ?? 0));
    if (!worker) return Promise.resolve();
    const id = nextId++;
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        retiring.delete(id);
        opts.log.warn({ through }, 'the delivery thread did not confirm retention in time; deleting anyway');
        resolve();
      }, RETIRE_TIMEOUT_MS);
      timer.unref();
      retiring.set(id, () => {
        clearTimeout(timer);
        resolve();
      });
      send({ type: 'retire', id, through, firstOffsets: [...firstOffsets] });
    });
  }

  const control: DeliveryControl = {
    add(record, events) {
      subscribed.set(record.id, { record, events });
      return call({ op: 'add', record });
    },
    update(record) {
      const entry = subscribed.get(record.id);
      if (entry) entry.record = record;
      return call({ op: 'update', record });
    },
    initOffsets(subscriptionId, startAt) {
      writeInitialOffsets(stateRepo, opts.store, subscriptionId, startAt);
    },
    resume: (subscriptionId) => call({ op: 'resume', subscriptionId }),
    async remove(subscriptionId) {
      await call({ op: 'remove', subscriptionId });
      subscribed.delete(subscriptionId);
    },
    seek: (subscriptionId, target) => call({ op: 'seek', subscriptionId, target }),
    stats: (subscriptionId) => call({ op: 'stats', subscriptionId }),
    attempts: (subscriptionId, page) => call({ op: 'attempts', subscriptionId, page }),
    deadLetters: (subscriptionId, page) => call({ op: 'deadLetters', subscriptionId, page }),
    redeliver: (subscriptionId, ids) => call({ op: 'redeliver', subscriptionId, ids }),
    deleteDeadLetter: (subscriptionId, deadLetterId) => call({ op: 'deleteDeadLetter', subscriptionId, deadLetterId }),
  };

  let unlisten: (() => void) | undefined;

  return {
    ...control,
    /** Why delivery state cannot be written now (its flushes fail), or undefined (`/readyz`'s database check). */
    stateWrites: (): string | undefined => stateWritesFailing,
    /** Starts the thread (once the gateway listens: `ackUrlBase` is its public URL). */
    start(publicUrl: string): void {
      ackUrlBase = publicUrl;
      unlisten = opts.feed.listen({
        committed,
        indexed: (through) => send({ type: 'indexed', through }),
        retiring: retire,
      });
      spawn();
    },
    /** A receiver's callback: a round trip to the thread. */
    callback(
      deliveryId: string,
      action: CallbackAction,
      arg: { delayMs?: number; ms?: number; reason?: string } = {},
    ): Promise<CallbackAnswer> {
      return call({ op: 'callback', deliveryId, action, arg });
    },
    /** A shutdown begins: the thread starts no attempt any more (see the dispatcher's `quiesce`). */
    quiesce(): void {
      quiescing = true;
      send({ type: 'quiesce' });
    },
    /** Whether a thread runs now (tests, health). */
    running: () => worker !== undefined,
    /**
     * Asks the thread to stop pulling, give open requests until `deadline`, persist everything and
     * exit; resolves when it has (or, past the deadline and a grace, after terminating it).
     */
    close(options: { deadline?: number } = {}): Promise<void> {
      closing ??= (async () => {
        unlisten?.();
        const w = worker;
        if (!w) return;
        const deadline = options.deadline ?? Date.now();
        const exited = new Promise<void>((resolve) => w.once('exit', () => resolve()));
        const timer = setTimeout(
          () => {
            opts.log.error('delivery thread did not stop in time; terminating it (its unsaved progress is delivered again)');
            void w.terminate();
          },
          Math.max(0, deadline - Date.now()) + CLOSE_GRACE_MS,
        );
        send({ type: 'close', deadline });
        await exited;
        clearTimeout(timer);
      })();
      return closing;
    },
  };
}

export type DeliveryThread = ReturnType<typeof createDeliveryThread>;
