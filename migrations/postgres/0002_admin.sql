-- Admin API: API keys, withdrawn batches, and indexes for the admin lists.

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    member_id    TEXT NOT NULL REFERENCES members (id),
    name         TEXT NOT NULL,
    secret_hash  TEXT NOT NULL,
    roles        TEXT NOT NULL DEFAULT '',
    created_by   TEXT,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT,
    last_used_at BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX api_keys_member ON api_keys (member_id);

ALTER TABLE import_batches ADD COLUMN withdrawn_at BIGINT;
ALTER TABLE import_batches ADD COLUMN withdrawn BIGINT NOT NULL DEFAULT 0;

CREATE INDEX members_status ON members (status);
CREATE INDEX eligible_emails_claimed ON eligible_emails (claimed_by);
CREATE INDEX audit_log_actor ON audit_log (actor);
CREATE INDEX audit_log_action ON audit_log (action);
CREATE INDEX audit_log_target ON audit_log (target);
