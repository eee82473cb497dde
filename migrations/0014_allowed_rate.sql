-- The rate a sink granted with its consent to the validation handshake (WebHook-Allowed-Rate), in attempts a
-- second; NULL: no grant. It caps delivery.rateLimit and never raises it. Subscriptions consented before this
-- column kept the grant as their delivery.rateLimit (it replaced the operator's): that value stays.
ALTER TABLE subscriptions ADD COLUMN allowed_rate REAL;
