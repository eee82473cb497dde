import fs from 'node:fs';
import path from 'node:path';
import { makeDirs } from './durable-fs';
import { checkExposure, createAuthorizer, parseApiKeys } from './api/auth';
import { createHealthRouter } from './api/health-router';
import { gatewayHandlers, logListening } from './api/gateway-http';
import { createHttpServer } from './api/http-server';
import { createConsoleRouter } from './api/console-router';
import { createMetrics, subscriptionHooks, type Metrics } from './metrics';
import { shutdownSteps, untilDeadline } from './shutdown-steps';
import type { Config } from './config';
import { createDeliveryThread, type DeliveryThread } from './delivery/delivery-thread';
import { createProbeSender } from './delivery/probe-sender';
import type { EventStore } from './wal/event-store';
import { openLocalEventStore, type LocalEventStoreOptions } from './wal/local-event-store';
import { createLogger, throttledLine, type Logger } from './logger';
import { startCheckpointerOnDemand } from './store/checkpointer';
import { createCheckpointSignal } from './store/checkpoint-signal';
import { noWaitWhileCheckpointing } from './store/main-busy';
import { CHECKPOINT_INTERVAL_MS, checkpoint, openDatabase, type Db } from './store/db';
import { lockDataDir, refusePartitionChange, refuseUnfinishedRestore, unusable } from './store/data-dir';
import { isCorruptDatabase } from './store/index-db';
import { createDeliveryStateRepo } from './store/delivery-state-repo';
import { StartupError } from './errors';
import { createSubscriptionsService, type SubscriptionsService } from './subscriptions/service';
import { createSqliteSubscriptionStore } from './store/subscriptions-store';
import { createSinkPolicy } from './subscriptions/sink-policy';
import { createHandshakes } from './subscriptions/handshake';

export interface Gateway {
  url: string;
  port: number;
  store: EventStore;
  db: Db;
  /** Delivery, run by its own thread: this is the main thread's side of it (the port, callbacks). */
  dispatcher: DeliveryThread;
  subscriptions: SubscriptionsService;
  log: Logger;
  metrics: Metrics;
  close(): Promise<void>;
}

/**
 * Takes the data dir's lock, then opens SQLite and the log. Anything the OS refuses (a read-only
 * or missing dir, a file where the dir should be) is a one-line StartupError, not a stack trace.
 */
function openStorage(config: Readonly<Config>, log: Logger, onGroupCommitted: LocalEventStoreOptions['onGroupCommitted']) {
  try {
    makeDirs(config.dataDir); // not mkdirSync's recursive mode, which loops for ever under /proc (a probe: a core at 100 %, signals unheard)
    fs.accessSync(config.dataDir, fs.constants.R_OK | fs.constants.W_OK | fs.constants.X_OK);
  } catch (err) {
    throw unusable(config.dataDir, err);
  }
  const lock = lockDataDir(config.dataDir);
  const dbFile = path.join(config.dataDir, 'herald.db');
  let db: Db | undefined;
  try {
    refuseUnfinishedRestore(config.dataDir);
    refusePartitionChange(config.dataDir, config.partitions);
    db = openHeraldDb(dbFile);
    const store = openLocalEventStore({
      dataDir: config.dataDir,
      db,
      log,
      partitions: config.partitions,
      fsync: config.fsync,
      fsyncIntervalMs: config.fsyncIntervalMs,
      segmentBytes: config.segmentBytes,
      idempotencyWindowMs: config.idempotencyWindowMs,
      retentionMs: config.retentionMs,
      maxLogBytes: config.maxLogBytes,
      minFreeBytes: config.minFreeBytes,
      recovery: config.recovery,
      onGroupCommitted,
    });
    // After `herald restore`, before anything is ingested: the backup's offsets keep their webhook-ids.
    createDeliveryStateRepo(db).keepRestoredIds(store.heads());
    return { db, store, lock, dbFile };
  } catch (err) {
    if (db?.open) db.close();
    lock.release();
    if (err instanceof StartupError) throw err;
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string' && /^(E[A-Z]+|SQLITE_(CANTOPEN|READONLY|IOERR|FULL|PERM|NOTADB|CORRUPT)\w*)$/.test(code))
      throw unusable(config.dataDir, err);
    throw err;
  }
}

/**
 * herald.db, opened and migrated; a file SQLite finds damaged is named as herald.db (re-probe: a truncated one
 * said only that the data dir was not usable), with what can be done: it alone holds the subscriptions.
 */
function openHeraldDb(dbFile: string): Db {
  try {
    return openDatabase(dbFile, { check: true });
  } catch (err) {
    if (!isCorruptDatabase(err)) throw err;
    throw new StartupError(
      `${dbFile} is damaged (${(err as { code: string }).code}: ${(err as Error).message}). It alone holds the subscriptions, their offsets and ` +
        'dead letters: restore it from a backup, or move it aside and start with HERALD_RECOVERY=rebuild-events-only to go on without them.',
    );
  }
}

/** Options of {@link startGateway} beside the configuration (tests and the entry point). */
export interface GatewayOptions {
  log?: Logger;
  metrics?: Metrics;
  /**
   * Tests only: milliseconds added to the time delivery and subscriptions see (retries, leases,
   * auto-disable), at index 0 of a view of a `SharedArrayBuffer` so the delivery thread sees every
   * change at once; the log and HTTP keep the real time.
   */
  clockSkew?: Float64Array;
  /** Tests only: the (first) delivery thread throws after this many answered attempts. */
  deliveryCrashAfterAnswers?: number;
  /** How often the delivery thread may die and be restarted (default 3 times within 60 s) before `onFatal`. */
  deliveryRestarts?: { max: number; windowMs: number };
  /**
   * The delivery thread died too often to go on restarting it. Default: log and exit the process
   * non-zero (70) so a supervisor restarts the gateway; nothing acknowledged is lost either way.
   */
  onFatal?: (err: Error) => void;
}

/** Composition root: opens storage, wires the modules and listens. */
export async function startGateway(config: Readonly<Config>, opts: GatewayOptions = {}): Promise<Gateway> {
  const log = opts.log ?? createLogger(config.logLevel);
  const apiKeys = parseApiKeys(config.apiKeysRaw);
  checkExposure(config.host, apiKeys, config.allowUnauthenticated);
  const authorize = createAuthorizer(apiKeys);
  const metrics = opts.metrics ?? createMetrics();
  const { db, store, lock, dbFile } = openStorage(config, log, (events, fsyncMs) => {
    metrics.walGroupEvents.observe(events);
    if (fsyncMs !== undefined) metrics.walFsync.observe(fsyncMs / 1000);
  });
  // Opening storage holds the loop (recovery, an index rebuild: minutes for a large log). A SIGTERM that came
  // meanwhile is heard here, before anything listens or delivers (start-up probe: it listened, started
  // delivery, then shut down).
  await new Promise<void>((resolve) => setImmediate(resolve));
  let publicUrl = config.publicUrl ?? '';
  const skew = opts.clockSkew;
  const clock = skew ? () => Date.now() + (skew[0] ?? 0) : Date.now;
  const sender = createProbeSender({ allowPrivate: config.sinkAllowPrivate });
  const handshakes = createHandshakes({
    probe: sender.probe,
    publicUrl: () => publicUrl,
    clock: Date.now,
    log,
    enabled: config.deliveryEnabled,
  });
  // When herald.db's checkpointer thread holds the write lock: its writers tell it from another process's (slow-disk probe).
  const ownCheckpoint = createCheckpointSignal();
  const waitAgain = noWaitWhileCheckpointing(db, ownCheckpoint);
  const dispatcher = createDeliveryThread({
    dbFile,
    db,
    store,
    feed: store.feed,
    log,
    enabled: config.deliveryEnabled,
    sinkAllowPrivate: config.sinkAllowPrivate,
    backlogNice: config.backlogNice,
    clockSkew: skew,
    crashAfterAnswers: opts.deliveryCrashAfterAnswers,
    checkpointSignal: ownCheckpoint.buffer,
    maxRestarts: opts.deliveryRestarts?.max,
    restartWindowMs: opts.deliveryRestarts?.windowMs,
    onFatal:
      opts.onFatal ??
      ((err) => {
        log.fatal({ err }, 'exiting: delivery cannot run');
        process.exit(70);
      }),
    observer: { tally: (subscription, tally) => metrics.delivery.add(subscription, tally) },
  });
  const subscriptions = createSubscriptionsService({
    records: createSqliteSubscriptionStore({ db, initOffsets: (id, startAt) => dispatcher.initOffsets(id, startAt) }),
    store,
    delivery: dispatcher,
    log,
    sinkPolicy: createSinkPolicy({ allowPrivate: config.sinkAllowPrivate }),
    handshakes,
    clock,
    hooks: subscriptionHooks(metrics),
  });
  metrics.setSources({
    log: () => store.logStats(),
    writable: () => store.health().writable,
    heads: () => store.heads(),
    subscriptions: () => subscriptions.metricsSnapshot(),
  });

  const handlers = gatewayHandlers({
    config,
    log,
    metrics,
    authorize,
    store,
    subscriptions,
    deliveries: dispatcher,
    health: createHealthRouter({
      store,
      db,
      deliveryEnabled: config.deliveryEnabled,
      deliveryWrites: dispatcher.stateWrites,
      ownCheckpoint,
    }),
    extra: [createConsoleRouter()],
  });
  const httpServer = createHttpServer({ log, handlers });
  let checkpointer: ReturnType<typeof startCheckpointerOnDemand> | undefined;

  let closing: Promise<void> | undefined;
  async function close(): Promise<void> {
    closing ??= (async () => {
      // One deadline for the whole shutdown (HERALD_SHUTDOWN_TIMEOUT_MS): requests get most of it, then
      // open connections are destroyed; delivery's open requests are destroyed by its own share of it.
      const deadline = Date.now() + config.shutdownTimeoutMs;
      // No delivery starts while the HTTP server waits for its open requests: its ack URL would take no callbacks.
      dispatcher.quiesce();
      // Nor does a checkpoint of herald.db: one begun while the shutdown runs is waited out by it (see below).
      checkpointer?.quiesce();
      await httpServer.close(config.shutdownTimeoutMs);
      // Every step runs even if one fails (a failing disk at shutdown), so SQLite is always closed cleanly.
      const { step, rethrow } = shutdownSteps(log);
      handshakes.close();
      subscriptions.close();
      // The delivery thread stops pulling, lets open requests finish within its share of the deadline,
      // writes everything it holds and exits; only then does the log close under it.
      await step('writing delivery state', () => dispatcher.close({ deadline: deadline - 1000 }));
      await step('closing the handshake sender', () => sender.close(Date.now()));
      await step('flushing the log', () => store.close({ deadline }));
      // herald.db's checkpoints are synchronous calls that a slow disk stretches to seconds per fsync, and no timer of
      // this thread fires while one runs (slow-disk probe: a SIGTERM during the checkpointer's checkpoint through a 10 s
      // fsync exited after 25 s of a 15 s budget: the stop waited for it, then the checkpoint below took 10 s more).
      // The checkpointer's is waited for until the deadline; past it, none is started here: what is committed is in the
      // WAL, which the next open replays (a close while the checkpointer's connection is still open checkpoints nothing).
      let checkpointerStopped = false;
      await step('stopping the checkpointer', () =>
        untilDeadline(
          (checkpointer?.stop() ?? Promise.resolve()).then(() => {
            checkpointerStopped = true;
          }),
          deadline,
        ),
      );
      // Whether the stop ended, not the clock alone: the deadline's timer runs on the loop's monotonic clock and may fire
      // a millisecond before Date.now() reaches the deadline, and a close of this connection while the checkpointer's
      // is still open makes that one the last: its close (once its slow checkpoint returns) checkpointed again, through
      // another slow fsync (re-probe: 6 of 40 runs of shutdown-slow-checkpoint under CPU load exited after 2 × the delay).
      waitAgain();
      // A closing checkpoint only when one like the checkpointer's longest of the last minute fits before the deadline: a synchronous call
      // cannot be cut off (re-probe: with 1.7 s left after a TRUNCATE that took 6 s, the main thread's own checkpoint
      // exited 4.4 s past the deadline, with no warn line).
      const fits = Date.now() + ownCheckpoint.longestCheckpointMs() < deadline;
      if (checkpointerStopped && fits) {
        await step('checkpointing SQLite', () => checkpoint(db));
        db.close();
      } else {
        // Not closed either: the last connection to close checkpoints, and the process ends once the checkpointer's
        // checkpoint in progress returns (Node waits for its thread), with no other one after it.
        // Past the deadline with no checkpoint running is the earlier steps' doing (another process holding herald.db's
        // write lock lets delivery's last write try until a second past it): not a slow disk's checkpoint.
        const why = !checkpointerStopped
          ? 'past the deadline, a checkpoint still running: a slow disk'
          : Date.now() < deadline
            ? `the longest checkpoint of the last minute took ${Math.round(ownCheckpoint.longestCheckpointMs())} ms, more than is left before the deadline: a slow disk`
            : 'past the deadline: the steps before it took the time';
        log.warn(
          { timeoutMs: config.shutdownTimeoutMs, checkpointRunning: !checkpointerStopped },
          `shutdown: herald.db not checkpointed or closed (${why}); nothing committed is lost, the next start replays its WAL`,
        );
      }
      lock.release();
      rethrow();
      // Only a gateway that served says it stopped: after a failed start the error is the news (ops probe:
      // a log monitor read "herald stopped" at info as a normal run).
      if (started) log.info('herald stopped');
    })();
    return closing;
  }

  let started = false;
  let listening: { url: string; port: number };
  try {
    listening = await httpServer.listen(config.port, config.host);
    publicUrl ||= listening.url;
    dispatcher.start(publicUrl);
    await subscriptions.startAll();
    const checkpointerFailed = throttledLine(60_000);
    const checkpointFailed = throttledLine(60_000);
    checkpointer = startCheckpointerOnDemand(
      dbFile,
      CHECKPOINT_INTERVAL_MS,
      undefined,
      {
        failed: (err) =>
          checkpointerFailed((suppressed) =>
            log.error({ err, suppressed }, 'herald.db checkpointer thread failed; starting it again once the WAL grows'),
          ),
        checkpointFailed: (error) =>
          checkpointFailed((suppressed) =>
            log.error({ err: error, suppressed }, 'herald.db checkpoint failed; tried again every interval (logged once a minute)'),
          ),
      },
      ownCheckpoint.buffer,
    );
  } catch (err) {
    // A failed start lets go of all it took (the lock, the threads, the port): a caller embedding the
    // gateway can start it again in the same process once the cause is fixed.
    await close().catch(() => undefined);
    throw err;
  }
  const { url, port } = listening;
  started = true;
  logListening(log, config, url, apiKeys);

  return { url, port, store, db, dispatcher, subscriptions, log, metrics, close };
}
