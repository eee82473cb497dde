-- A dead letter's redelivery and the partition's own delivery of the same offset (a seek back replays it) are two
-- deliveries: each keeps its own row. Keyed by offset alone, the replay's row overwrote the redelivery's, and the
-- next seek (which drops the partition's own rows, never redeliveries) deleted it: the redelivery was lost.
CREATE TABLE pending_deliveries_by_kind (
  subscription_id TEXT    NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
  partition       INTEGER NOT NULL,
  "offset"        INTEGER NOT NULL,
  attempt         INTEGER NOT NULL,
  state           TEXT    NOT NULL,
  delivery_id     TEXT,
  previous_offset INTEGER,
  next_attempt_at INTEGER,
  lease_until     INTEGER,
  redrive         INTEGER NOT NULL DEFAULT 0,
  last_status     INTEGER,
  last_error      TEXT,
  PRIMARY KEY (subscription_id, partition, "offset", redrive)
) WITHOUT ROWID;

INSERT INTO pending_deliveries_by_kind (subscription_id, partition, "offset", attempt, state, delivery_id, previous_offset,
  next_attempt_at, lease_until, redrive, last_status, last_error)
SELECT subscription_id, partition, "offset", attempt, state, delivery_id, previous_offset,
  next_attempt_at, lease_until, redrive, last_status, last_error
FROM pending_deliveries;

DROP TABLE pending_deliveries;
ALTER TABLE pending_deliveries_by_kind RENAME TO pending_deliveries;
