-- Change notices for the per-instance read cache (src/store/cache.rs).
--
-- Each instance caches, for at most a second, the two lookups every
-- authenticated request makes: the session behind an access token and the
-- record behind an API key. A write that changes one of those answers must
-- reach every instance's cache, including writes by other instances and by an
-- operator at a psql prompt. So the tables themselves announce such changes:
-- the triggers below queue a notification on channel `gatehouse_auth_changed`,
-- which Postgres delivers to every listening instance when (and only if) the
-- writing transaction commits.
--
-- Only changes that can alter a cached answer notify. In particular sign-ins
-- (a new session, `last_login_at`) and API-key use (`last_used_at`) do not:
-- notifying transactions take a database-wide lock through their commit, and
-- those writes are the hot path.

CREATE FUNCTION gatehouse_auth_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('gatehouse_auth_changed', '');
    RETURN NULL;
END;
$$;

-- A session is revoked (logout, refresh-token reuse, admin) or removed.
CREATE TRIGGER sessions_revoked
    AFTER UPDATE OF revoked_at ON sessions
    FOR EACH ROW WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at)
    EXECUTE FUNCTION gatehouse_auth_changed();
CREATE TRIGGER sessions_deleted
    AFTER DELETE OR TRUNCATE ON sessions
    FOR EACH STATEMENT EXECUTE FUNCTION gatehouse_auth_changed();

-- A member is suspended, reinstated, deleted or renamed.
CREATE TRIGGER members_changed
    AFTER UPDATE ON members
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.email IS DISTINCT FROM NEW.email)
    EXECUTE FUNCTION gatehouse_auth_changed();
CREATE TRIGGER members_deleted
    AFTER DELETE OR TRUNCATE ON members
    FOR EACH STATEMENT EXECUTE FUNCTION gatehouse_auth_changed();

-- Any role grant, change or revocation (one notice per statement, however
-- many rows it touches).
CREATE TRIGGER member_roles_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON member_roles
    FOR EACH STATEMENT EXECUTE FUNCTION gatehouse_auth_changed();

-- An API key is revoked, re-scoped, given another expiry or owner, or removed.
CREATE TRIGGER api_keys_changed
    AFTER UPDATE ON api_keys
    FOR EACH ROW WHEN (
        OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
        OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
        OR OLD.roles IS DISTINCT FROM NEW.roles
        OR OLD.member_id IS DISTINCT FROM NEW.member_id
        OR OLD.secret_hash IS DISTINCT FROM NEW.secret_hash)
    EXECUTE FUNCTION gatehouse_auth_changed();
CREATE TRIGGER api_keys_deleted
    AFTER DELETE OR TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION gatehouse_auth_changed();
