-- gatehouse schema, Postgres dialect. Ids are UUID text, times unix seconds.
-- Every integer is BIGINT: the Rust side decodes i64 everywhere (INTEGER would
-- arrive as i32 and fail to decode). Flags are BOOLEAN. Keep in step with
-- migrations/sqlite (same numbering, same tables and columns).

CREATE TABLE roles (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    builtin     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT NOT NULL
);
INSERT INTO roles (name, description, builtin, created_at) VALUES
    ('member', 'Every member has it', TRUE, 0),
    ('active', 'An active member', TRUE, 0),
    ('sustainer', 'A sustaining (paying) member', TRUE, 0),
    ('admin', 'Manages the allowlist, members, roles and API keys', TRUE, 0);

CREATE TABLE members (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    status        TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'deleted')),
    created_at    BIGINT NOT NULL,
    last_login_at BIGINT
);

CREATE TABLE member_roles (
    member_id  TEXT NOT NULL REFERENCES members (id),
    role       TEXT NOT NULL REFERENCES roles (name),
    granted_by TEXT,
    granted_at BIGINT NOT NULL,
    expires_at BIGINT,
    PRIMARY KEY (member_id, role)
);
CREATE INDEX member_roles_role ON member_roles (role);

CREATE TABLE import_batches (
    id         TEXT PRIMARY KEY,
    source     TEXT NOT NULL,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    rows       BIGINT NOT NULL DEFAULT 0,
    added      BIGINT NOT NULL DEFAULT 0,
    updated    BIGINT NOT NULL DEFAULT 0,
    duplicates BIGINT NOT NULL DEFAULT 0,
    invalid    BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE eligible_emails (
    email      TEXT PRIMARY KEY,
    batch_id   TEXT,
    roles      TEXT NOT NULL DEFAULT '',
    added_by   TEXT,
    created_at BIGINT NOT NULL,
    claimed_by TEXT
);
CREATE INDEX eligible_emails_batch ON eligible_emails (batch_id);

CREATE TABLE magic_links (
    token_hash  TEXT PRIMARY KEY,
    email       TEXT NOT NULL,
    code_hash   TEXT NOT NULL,
    redirect_to TEXT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    consumed_at BIGINT,
    attempts    BIGINT NOT NULL DEFAULT 0,
    ip          TEXT
);
CREATE INDEX magic_links_email ON magic_links (email, expires_at);

CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    member_id  TEXT NOT NULL REFERENCES members (id),
    created_at BIGINT NOT NULL,
    revoked_at BIGINT,
    ip         TEXT
);
CREATE INDEX sessions_member ON sessions (member_id);

CREATE TABLE refresh_tokens (
    id          TEXT PRIMARY KEY,
    family_id   TEXT NOT NULL REFERENCES sessions (id),
    member_id   TEXT NOT NULL REFERENCES members (id),
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    replaced_by TEXT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

CREATE TABLE outbox (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    sealed_body     TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('queued', 'sent', 'failed', 'expired')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    expires_at      BIGINT,
    sent_at         BIGINT,
    last_error      TEXT
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);

CREATE TABLE audit_log (
    id      TEXT PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT,
    action  TEXT NOT NULL,
    target  TEXT,
    details TEXT NOT NULL DEFAULT '{}',
    ip      TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE TABLE rate_limits (
    bucket       TEXT PRIMARY KEY,
    window_start BIGINT NOT NULL,
    hits         BIGINT NOT NULL
);
