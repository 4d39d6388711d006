-- A roster file an admin uploaded in the console, kept between its dry run and
-- the import (or until the janitor removes it a day later). Kept in the
-- database, not on disk, so that any instance can take the next step.
CREATE TABLE staged_uploads (
    id         TEXT PRIMARY KEY,
    created_by TEXT NOT NULL,
    filename   TEXT NOT NULL,
    body       BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
