-- Webhook subscriptions. filters and delivery are JSON documents validated by the API.
CREATE TABLE subscriptions (
  id           TEXT PRIMARY KEY,
  sink         TEXT    NOT NULL,
  filters      TEXT    NOT NULL,
  delivery     TEXT    NOT NULL,
  start_at     TEXT    NOT NULL,
  state        TEXT    NOT NULL,
  state_reason TEXT,
  secret       TEXT    NOT NULL,
  created_at   INTEGER NOT NULL,
  updated_at   INTEGER NOT NULL
);

-- Per (subscription, partition): every offset below committed_offset is finished (delivered, filtered out or dead-lettered).
-- last_matched_offset is the last matching offset below it, the herald-previous-offset of the next matching event.
CREATE TABLE subscription_offsets (
  subscription_id     TEXT    NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
  partition           INTEGER NOT NULL,
  committed_offset    INTEGER NOT NULL,
  last_matched_offset INTEGER,
  PRIMARY KEY (subscription_id, partition)
) WITHOUT ROWID;

-- Events started and not finished: attempts, leases and retry times survive a restart.
CREATE TABLE pending_deliveries (
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
  PRIMARY KEY (subscription_id, partition, "offset")
) WITHOUT ROWID;

CREATE TABLE dead_letters (
  id              INTEGER PRIMARY KEY AUTOINCREMENT,
  subscription_id TEXT    NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
  partition       INTEGER NOT NULL,
  "offset"        INTEGER NOT NULL,
  attempts        INTEGER NOT NULL,
  last_status     INTEGER,
  last_error      TEXT,
  reason          TEXT    NOT NULL,
  dead_at         INTEGER NOT NULL
);
CREATE INDEX dead_letters_by_subscription ON dead_letters (subscription_id, id);
