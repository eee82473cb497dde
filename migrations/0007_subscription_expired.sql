-- Retention: per (subscription, partition), how many events were deleted by retention before this
-- subscription finished them (it moved past them). A running total: it only grows (a seek keeps it).
ALTER TABLE subscription_offsets ADD COLUMN expired INTEGER NOT NULL DEFAULT 0;
