-- A receiver's Retry-After (on 429 and 503) holds every request of its subscription until held_until
-- (epoch ms). Kept here so that a restart does not end it. No row, or a time passed: no hold.
CREATE TABLE delivery_holds (
  subscription_id TEXT    PRIMARY KEY REFERENCES subscriptions (id) ON DELETE CASCADE,
  held_until      INTEGER NOT NULL
) WITHOUT ROWID;
