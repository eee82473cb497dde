-- With "ordering": "none" the committed offset is the low-water mark of finished offsets: events finished above it
-- (answered 2xx, acked, dead-lettered) were known only in memory, so every restart delivered them again. A graceful
-- close writes them here; the next start reads them into the partition's cursor and deletes the rows. A crash
-- still delivers them again (at least once).
CREATE TABLE finished_deliveries (
  subscription_id TEXT    NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
  partition       INTEGER NOT NULL,
  "offset"        INTEGER NOT NULL,
  matched         INTEGER NOT NULL,
  PRIMARY KEY (subscription_id, partition, "offset")
) WITHOUT ROWID;
