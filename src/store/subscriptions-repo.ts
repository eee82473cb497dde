import type { DeliveryOptions } from '../subscriptions/schema';
import type { Db } from './db';

export interface SubscriptionRecord {
  id: string;
  sink: string;
  filters: unknown[];
  delivery: DeliveryOptions;
  startAt: 'latest' | 'earliest';
  state: 'active' | 'paused';
  stateReason: string | null;
  secret: string;
  /** The secret the last rotation replaced, still signing (after the new one) until `previousSecretExpiresAt`. */
  previousSecret: string | null;
  /** Epoch ms; null when there is no overlap. */
  previousSecretExpiresAt: number | null;
  createdAt: number;
  updatedAt: number;
}

interface Row {
  id: string;
  sink: string;
  filters: string;
  delivery: string;
  start_at: 'latest' | 'earliest';
  state: 'active' | 'paused';
  state_reason: string | null;
  secret: string;
  previous_secret: string | null;
  previous_secret_expires_at: number | null;
  created_at: number;
  updated_at: number;
}

const fromRow = (r: Row): SubscriptionRecord => ({
  id: r.id,
  sink: r.sink,
  filters: JSON.parse(r.filters),
  delivery: JSON.parse(r.delivery),
  startAt: r.start_at,
  state: r.state,
  stateReason: r.state_reason,
  secret: r.secret,
  previousSecret: r.previous_secret,
  previousSecretExpiresAt: r.previous_secret_expires_at,
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

/** `subscriptions`. Owned by the subscriptions service. */
export function createSubscriptionsRepo(db: Db) {
  const insert = db.prepare(
    `INSERT INTO subscriptions (id, sink, filters, delivery, start_at, state, state_reason, secret, previous_secret,
       previous_secret_expires_at, created_at, updated_at)
     VALUES (@id, @sink, @filters, @delivery, @startAt, @state, @stateReason, @secret, @previousSecret,
       @previousSecretExpiresAt, @createdAt, @updatedAt)`,
  );
  const update = db.prepare(
    `UPDATE subscriptions SET sink = @sink, filters = @filters, delivery = @delivery, state = @state,
       state_reason = @stateReason, secret = @secret, previous_secret = @previousSecret,
       previous_secret_expires_at = @previousSecretExpiresAt, updated_at = @updatedAt WHERE id = @id`,
  );
  const get = db.prepare<[string], Row>('SELECT * FROM subscriptions WHERE id = ?');
  const all = db.prepare<[], Row>('SELECT * FROM subscriptions ORDER BY created_at, id');
  const remove = db.prepare<[string]>('DELETE FROM subscriptions WHERE id = ?');
  const toParams = (s: SubscriptionRecord) => ({ ...s, filters: JSON.stringify(s.filters), delivery: JSON.stringify(s.delivery) });
  return {
    insert(s: SubscriptionRecord): void {
      insert.run(toParams(s));
    },
    update(s: SubscriptionRecord): void {
      update.run(toParams(s));
    },
    get(id: string): SubscriptionRecord | undefined {
      const row = get.get(id);
      return row && fromRow(row);
    },
    all(): SubscriptionRecord[] {
      return all.all().map(fromRow);
    },
    remove(id: string): boolean {
      return remove.run(id).changes > 0;
    },
  };
}
export type SubscriptionsRepo = ReturnType<typeof createSubscriptionsRepo>;
