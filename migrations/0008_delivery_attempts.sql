-- The attempt log (issue 13 §1): one row per HTTP request sent to a sink, the newest 1,000 per
-- subscription kept (the dispatcher trims older ones as it writes), all of them gone with the subscription.
CREATE TABLE delivery_attempts (
  id              INTEGER PRIMARY KEY, -- a subscription's new rows always get higher ids (its old ones are trimmed, never its newest)
  subscription_id TEXT    NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
  delivery_id     TEXT    NOT NULL,
  partition       INTEGER NOT NULL,
  "offset"        INTEGER NOT NULL,
  attempt         INTEGER NOT NULL,
  status          INTEGER,
  error           TEXT,
  duration_ms     INTEGER NOT NULL,
  started_at      INTEGER NOT NULL,
  outcome         TEXT    NOT NULL
);
CREATE INDEX delivery_attempts_by_subscription ON delivery_attempts (subscription_id, id);
