import { SUBSCRIPTION_STATES, type SubscriptionRecord, type SubscriptionState } from '../subscriptions/record';
import { AppError } from '../errors';
import type { Db } from './db';

interface Row {
  id: string;
  sink: string;
  filters: string;
  delivery: string;
  start_at: 'latest' | 'earliest';
  state: SubscriptionState;
  state_reason: string | null;
  secret: string;
  previous_secret: string | null;
  previous_secret_expires_at: number | null;
  validation: 'none' | 'cloudevents';
  validation_token: string | null;
  validation_deadline: number | null;
  validated_at: number | null;
  allowed_rate: number | null;
  created_at: number;
  updated_at: number;
}

/** A JSON column of a stored row, as Herald writes it: anything else was written behind its back (or damaged). */
function jsonColumn<T>(r: Row, name: 'filters' | 'delivery', isValid: (v: unknown) => boolean): T {
  let value: unknown;
  try {
    value = JSON.parse(r[name]);
  } catch {
    value = undefined;
  }
  if (!isValid(value))
    throw new AppError('corrupt_record', `subscription ${r.id} in herald.db: its ${name} column is not what Herald writes`);
  return value as T;
}

function knownState(r: Row): SubscriptionState {
  if (!(SUBSCRIPTION_STATES as readonly string[]).includes(r.state))
    throw new AppError('corrupt_record', `subscription ${r.id} in herald.db: its state column is not what Herald writes`);
  return r.state;
}

/** @throws AppError `corrupt_record` for a row Herald did not write (its JSON or its state) */
const fromRow = (r: Row): SubscriptionRecord => ({
  id: r.id,
  sink: r.sink,
  filters: jsonColumn(r, 'filters', Array.isArray),
  delivery: jsonColumn(r, 'delivery', (v) => typeof v === 'object' && v !== null && !Array.isArray(v)),
  startAt: r.start_at,
  state: knownState(r),
  stateReason: r.state_reason,
  secret: r.secret,
  previousSecret: r.previous_secret,
  previousSecretExpiresAt: r.previous_secret_expires_at,
  validation: r.validation,
  validationToken: r.validation_token,
  validationDeadline: r.validation_deadline,
  validatedAt: r.validated_at,
  allowedRate: r.allowed_rate === null ? null : { perSecond: r.allowed_rate },
  createdAt: r.created_at,
  updatedAt: r.updated_at,
});

/** `subscriptions`. Owned by the subscriptions service. */
export function createSubscriptionsRepo(db: Db) {
  const insert = db.prepare(
    `INSERT INTO subscriptions (id, sink, filters, delivery, start_at, state, state_reason, secret, previous_secret,
       previous_secret_expires_at, validation, validation_token, validation_deadline, validated_at, allowed_rate, created_at, updated_at)
     VALUES (@id, @sink, @filters, @delivery, @startAt, @state, @stateReason, @secret, @previousSecret,
       @previousSecretExpiresAt, @validation, @validationToken, @validationDeadline, @validatedAt, @allowedRate, @createdAt, @updatedAt)`,
  );
  const update = db.prepare(
    `UPDATE subscriptions SET sink = @sink, filters = @filters, delivery = @delivery, state = @state,
       state_reason = @stateReason, secret = @secret, previous_secret = @previousSecret,
       previous_secret_expires_at = @previousSecretExpiresAt, validation = @validation, validation_token = @validationToken,
       validation_deadline = @validationDeadline, validated_at = @validatedAt, allowed_rate = @allowedRate,
       updated_at = @updatedAt WHERE id = @id`,
  );
  const get = db.prepare<[string], Row>('SELECT * FROM subscriptions WHERE id = ?');
  const all = db.prepare<[], Row>('SELECT * FROM subscriptions ORDER BY created_at, id');
  const remove = db.prepare<[string]>('DELETE FROM subscriptions WHERE id = ?');
  const toParams = (s: SubscriptionRecord) => ({
    ...s,
    filters: JSON.stringify(s.filters),
    delivery: JSON.stringify(s.delivery),
    allowedRate: s.allowedRate?.perSecond ?? null,
  });
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
