-- CloudEvents webhook validation handshake (issue 12 §4). validation: 'none' or 'cloudevents'.
-- While state = 'validating': validation_token authorises the callback URL and validation_deadline
-- (epoch ms) is when the wait ends (paused with 'validation_failed'). validated_at: when the sink consented.
ALTER TABLE subscriptions ADD COLUMN validation TEXT NOT NULL DEFAULT 'none';
ALTER TABLE subscriptions ADD COLUMN validation_token TEXT;
ALTER TABLE subscriptions ADD COLUMN validation_deadline INTEGER;
ALTER TABLE subscriptions ADD COLUMN validated_at INTEGER;
