-- The admin outbox view lists mails newest first, optionally of one status,
-- with keyset pagination on the (time-ordered, UUIDv7) id.
CREATE INDEX outbox_status_id ON outbox (status, id);
