-- Facts about the data dir itself (partition count, how far the log is indexed).
CREATE TABLE meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;

-- source+id → where the event was stored. Rebuilt from the log at start-up; pruned after the idempotency window.
CREATE TABLE idempotency (
  source    TEXT    NOT NULL,
  id        TEXT    NOT NULL,
  partition INTEGER NOT NULL,
  "offset"  INTEGER NOT NULL,
  stored_at INTEGER NOT NULL,
  PRIMARY KEY (source, id)
) WITHOUT ROWID;
CREATE INDEX idempotency_by_stored_at ON idempotency (stored_at);

-- (partition, offset) → byte range of the record in the global log. Rebuilt from the log at start-up.
CREATE TABLE log_index (
  partition INTEGER NOT NULL,
  "offset"  INTEGER NOT NULL,
  position  INTEGER NOT NULL,
  length    INTEGER NOT NULL,
  PRIMARY KEY (partition, "offset")
) WITHOUT ROWID;

-- Next offset each partition will assign.
CREATE TABLE partition_heads (
  partition   INTEGER PRIMARY KEY,
  head_offset INTEGER NOT NULL
);
