-- The seek generation a dead letter's event was delivered under, so its redelivery keeps that webhook-id
-- (a seek between the dead-lettering and the redelivery gave the redelivery the replay's id: soak probe).
-- NULL for dead letters stored before: their redelivery takes the partition's generation, as before.
ALTER TABLE dead_letters ADD COLUMN seek_generation INTEGER;
