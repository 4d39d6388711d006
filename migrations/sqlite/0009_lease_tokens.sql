-- Crash recovery: a claim writes its own token (a fresh UUID) on the rows it
-- leases. The worker renews its lease by token while attempts run, and an
-- outcome is recorded only where the token still holds the lease, so a short
-- lease (20 s) is safe: a dead process stops renewing and its work comes due
-- within seconds, a live one keeps it. NULL when nobody holds the row.
ALTER TABLE outbox ADD COLUMN lease_token TEXT;
ALTER TABLE webhook_deliveries ADD COLUMN lease_token TEXT;
-- Renewals find a claim's rows by token; only leased rows carry one.
CREATE INDEX outbox_lease_token ON outbox (lease_token) WHERE lease_token IS NOT NULL;
CREATE INDEX webhook_deliveries_lease_token ON webhook_deliveries (lease_token)
    WHERE lease_token IS NOT NULL;
