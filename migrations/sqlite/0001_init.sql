-- gatehouse schema, SQLite dialect. Ids are UUID text, times unix seconds.

CREATE TABLE roles (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    builtin     INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);
INSERT INTO roles (name, description, builtin, created_at) VALUES
    ('member', 'Every member has it', 1, 0),
    ('active', 'An active member', 1, 0),
    ('sustainer', 'A sustaining (paying) member', 1, 0),
    ('admin', 'Manages the allowlist, members, roles and API keys', 1, 0);

CREATE TABLE members (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    status        TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'deleted')),
    created_at    INTEGER NOT NULL,
    last_login_at INTEGER
);

CREATE TABLE member_roles (
    member_id  TEXT NOT NULL REFERENCES members (id),
    role       TEXT NOT NULL REFERENCES roles (name),
    granted_by TEXT,
    granted_at INTEGER NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (member_id, role)
);
CREATE INDEX member_roles_role ON member_roles (role);

CREATE TABLE import_batches (
    id         TEXT PRIMARY KEY,
    source     TEXT NOT NULL,
    created_by TEXT,
    created_at INTEGER NOT NULL,
    rows       INTEGER NOT NULL DEFAULT 0,
    added      INTEGER NOT NULL DEFAULT 0,
    updated    INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    invalid    INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE eligible_emails (
    email      TEXT PRIMARY KEY,
    batch_id   TEXT,
    roles      TEXT NOT NULL DEFAULT '',
    added_by   TEXT,
    created_at INTEGER NOT NULL,
    claimed_by TEXT
);
CREATE INDEX eligible_emails_batch ON eligible_emails (batch_id);

CREATE TABLE magic_links (
    token_hash  TEXT PRIMARY KEY,
    email       TEXT NOT NULL,
    code_hash   TEXT NOT NULL,
    redirect_to TEXT,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    consumed_at INTEGER,
    attempts    INTEGER NOT NULL DEFAULT 0,
    ip          TEXT
);
CREATE INDEX magic_links_email ON magic_links (email, expires_at);

CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    member_id  TEXT NOT NULL REFERENCES members (id),
    created_at INTEGER NOT NULL,
    revoked_at INTEGER,
    ip         TEXT
);
CREATE INDEX sessions_member ON sessions (member_id);

CREATE TABLE refresh_tokens (
    id          TEXT PRIMARY KEY,
    family_id   TEXT NOT NULL REFERENCES sessions (id),
    member_id   TEXT NOT NULL REFERENCES members (id),
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER,
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
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    expires_at      INTEGER,
    sent_at         INTEGER,
    last_error      TEXT
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);

CREATE TABLE audit_log (
    id      TEXT PRIMARY KEY,
    at      INTEGER NOT NULL,
    actor   TEXT,
    action  TEXT NOT NULL,
    target  TEXT,
    details TEXT NOT NULL DEFAULT '{}',
    ip      TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE TABLE rate_limits (
    bucket       TEXT PRIMARY KEY,
    window_start INTEGER NOT NULL,
    hits         INTEGER NOT NULL
);
