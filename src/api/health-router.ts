import type { Router } from 'express';
import { isDatabaseBusy } from '../errors';
import type { CheckpointSignal } from '../store/checkpoint-signal';
import type { Db } from '../store/db';
import type { EventLog } from '../wal/event-store';
import { newRouter, requireScope } from './routing';

/**
 * `/healthz`: the process answers. `/readyz`: the log (local files, or the JetStream cluster) and the
 * database can be written. The JetStream engine has no database (`db` absent): no `database` check.
 */
export function createHealthRouter(deps: {
  store: EventLog;
  db?: Db;
  deliveryEnabled?: boolean;
  /** Why delivery cannot write its state to the database now (its flushes fail), if it cannot. */
  deliveryWrites?: () => string | undefined;
  /** When herald.db's own checkpointer held its write lock: the lock held is then not another process's. */
  ownCheckpoint?: CheckpointSignal;
}): Router {
  const router = newRouter();
  router.get('/healthz', requireScope('none'), (_req, res) => {
    res.json({ status: 'ok' });
  });
  router.get('/readyz', requireScope('none'), async (_req, res) => {
    const checks: Record<string, string> = {};
    const storeHealth = deps.store.health();
    checks.log = storeHealth.writable ? (storeHealth.unready ?? 'ok') : (storeHealth.reason ?? 'not writable');
    if (deps.db) {
      // The lock probe writes nothing: a full disk (HERALD_MIN_FREE_BYTES=0) or a damaged page shows in delivery's flushes.
      const failing = deps.deliveryWrites?.();
      // Behind the gateway's own checkpoint, slow on this disk: said, so that no other process is looked for (re-probe).
      const behindOwn = failing && /locked|busy/i.test(failing) && deps.ownCheckpoint?.heldSince(Date.now() - OWN_HOLD_RECENT_MS);
      checks.database = failing
        ? `delivery state cannot be written: ${failing}${behindOwn ? " (herald.db's write lock is held by its own checkpoint, slow on this disk)" : ''}`
        : await databaseCheck(deps.db, deps.ownCheckpoint);
    }
    const ready = Object.values(checks).every((v) => v === 'ok');
    // Delivery switched off on purpose (HERALD_DELIVERY=off) is reported, not a reason to be unready.
    if (deps.deliveryEnabled === false) checks.delivery = 'off';
    res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : 'unavailable', checks });
  });
  return router;
}

/** A hold of the lock by the own checkpoint this recent can still be what delivery's last failed flush waited behind. */
const OWN_HOLD_RECENT_MS = 2000;

/** Tries at herald.db's write lock, apart: the delivery thread holds it for milliseconds at a time, another process for good. */
const LOCK_TRIES = 5;
const LOCK_TRY_GAP_MS = 100;

/**
 * Whether herald.db can be written now: its write lock is taken and given back at once (`BEGIN
 * IMMEDIATE`, then `ROLLBACK`) without waiting in SQLite (the event loop never blocks), tried
 * {@link LOCK_TRIES} times {@link LOCK_TRY_GAP_MS} apart, so another process holding it (an operator's
 * `sqlite3` shell) makes the gateway unready instead of `SELECT 1` calling it fine.
 */
async function databaseCheck(db: Db, ownCheckpoint?: CheckpointSignal): Promise<string> {
  let last = '';
  const began = Date.now();
  for (let tries = 0; tries < LOCK_TRIES; tries++) {
    if (tries > 0) await new Promise((r) => setTimeout(r, LOCK_TRY_GAP_MS));
    if (!db.open || db.readonly) return 'not writable';
    if (db.inTransaction) return 'ok'; // this thread is writing it: nothing to probe
    last = tryWriteLock(db);
    if (last === 'ok' || !last.startsWith('herald.db is locked')) return last;
  }
  // The gateway's own checkpoint, slow on this disk, held it: no other process to look for (slow-disk probe).
  if (ownCheckpoint?.heldSince(began))
    return "herald.db's write lock is held by its own checkpoint (emptying its WAL), slow on this disk: changes to subscriptions and delivery state wait";
  return last;
}

function tryWriteLock(db: Db): string {
  const timeout = db.pragma('busy_timeout', { simple: true }) as number;
  try {
    db.pragma('busy_timeout = 0');
    db.exec('BEGIN IMMEDIATE');
    db.exec('ROLLBACK');
    return 'ok';
  } catch (err) {
    return isDatabaseBusy(err)
      ? 'herald.db is locked by another process (its write lock is held): changes to subscriptions and delivery state wait'
      : (err as Error).message;
  } finally {
    db.pragma(`busy_timeout = ${timeout}`);
  }
}
