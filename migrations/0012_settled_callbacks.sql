-- What each receiver callback (ack, nack, reject) settled, so that repeating it after a restart is still answered
-- 200 (`repeated`) or 409, as it is before one, rather than 404. Written in the same transaction as the delivery
-- state the callback changed; only the newest 100,000 are kept (the dispatcher trims older ones as it writes).
CREATE TABLE settled_callbacks (
  id          INTEGER PRIMARY KEY, -- grows with each write: the trim keeps the highest ids
  delivery_id TEXT    NOT NULL UNIQUE,
  outcome     TEXT    NOT NULL
);
