-- A redelivery keeps the seek generation it started under (its webhook-id is derived from it), and a seek leaves it
-- alone. Kept only in memory, a restart after a seek gave the redelivery's next attempt the partition's new
-- generation, so a new webhook-id. NULL: a partition's own delivery (it takes the partition's generation).
ALTER TABLE pending_deliveries ADD COLUMN seek_generation INTEGER;
