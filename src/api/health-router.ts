import type { Router } from 'express';
import type { Db } from '../store/db';
import type { EventLog } from '../wal/event-store';
import { newRouter, requireScope } from './routing';

/**
 * `/healthz`: the process answers. `/readyz`: the log (local files, or the JetStream cluster) and the
 * database can be written. The JetStream engine has no database (`db` absent): no `database` check.
 */
export function createHealthRouter(deps: { store: EventLog; db?: Db; deliveryEnabled?: boolean }): Router {
  const router = newRouter();
  router.get('/healthz', requireScope('none'), (_req, res) => {
    res.json({ status: 'ok' });
  });
  router.get('/readyz', requireScope('none'), (_req, res) => {
    const checks: Record<string, string> = {};
    const storeHealth = deps.store.health();
    checks.log = storeHealth.writable ? 'ok' : (storeHealth.reason ?? 'not writable');
    if (deps.db) checks.database = databaseCheck(deps.db);
    const ready = Object.values(checks).every((v) => v === 'ok');
    // Delivery switched off on purpose (HERALD_DELIVERY=off) is reported, not a reason to be unready.
    if (deps.deliveryEnabled === false) checks.delivery = 'off';
    res.status(ready ? 200 : 503).json({ status: ready ? 'ready' : 'unavailable', checks });
  });
  return router;
}

function databaseCheck(db: Db): string {
  try {
    db.prepare('SELECT 1').get();
    return db.open && !db.readonly ? 'ok' : 'not writable';
  } catch (err) {
    return (err as Error).message;
  }
}
