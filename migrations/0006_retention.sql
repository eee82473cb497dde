-- Retention (storage engine v2): the idempotency records of deleted segments go with them, found by
-- (partition, offset); recovery's roll-back of a lost tail uses the same index.
CREATE INDEX idempotency_by_offset ON idempotency (partition, "offset");
