-- Secret rotation with overlap: the secret a rotation replaced keeps signing (next to the new one)
-- until previous_secret_expires_at (epoch ms). Both NULL when there is no overlap.
ALTER TABLE subscriptions ADD COLUMN previous_secret TEXT;
ALTER TABLE subscriptions ADD COLUMN previous_secret_expires_at INTEGER;
