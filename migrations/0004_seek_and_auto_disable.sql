-- Seek (issue 12 §2): the seek generation a partition's position was last set by. webhook-id is derived
-- from (subscription, generation, partition, offset), so a replay after a seek carries new ids while
-- retries of one delivery keep theirs; generation 0 (never sought) gives the ids of before.
ALTER TABLE subscription_offsets ADD COLUMN seek_generation INTEGER NOT NULL DEFAULT 0;

-- Auto-disable (issue 12 §5): since when (epoch ms) every attempt to a subscription has failed with
-- no success between. No row: the last attempt succeeded (or none failed yet).
CREATE TABLE delivery_failures (
  subscription_id TEXT    PRIMARY KEY REFERENCES subscriptions (id) ON DELETE CASCADE,
  failing_since   INTEGER NOT NULL
) WITHOUT ROWID;
