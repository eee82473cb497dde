-- `herald restore` (README: "Backup and restore"): a restored gateway hands out again the offsets the
-- backed-up one gave after the backup, so every partition moves to a new seek generation (new webhook-ids). Events
-- the backup holds are the same events at the same offsets, though: their redeliveries keep the ids they had.
-- kept_generation: the generation offsets below kept_below keep. kept_below is NULL until the restored gateway's
-- first start sets it to the partition's head (before anything is ingested). Both NULL: no restore since the
-- last seek (a seek clears them).
ALTER TABLE subscription_offsets ADD COLUMN kept_generation INTEGER;
ALTER TABLE subscription_offsets ADD COLUMN kept_below INTEGER;
