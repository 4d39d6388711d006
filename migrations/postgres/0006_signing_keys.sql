-- Signing keys for access tokens (src/auth/signing_keys.rs).
--
-- A key's state is derived from its times, never stored: `next` until
-- `activates_at`, then `current` until a later key activates, then `retiring`
-- (published, no longer signing) until every token it signed has expired, then
-- `retired`; `revoked` as soon as `revoked_at` is set.
--
-- `public_jwk` is the public JWK (JSON) of an ES256 or EdDSA key; an HS256 key
-- has none: its secret is the server secret, and `kid` is derived from it.
-- `private_sealed` is the PKCS#8 private key, sealed (XChaCha20-Poly1305) with
-- a key derived from the server secret, so a copy of the database alone cannot
-- sign a token.
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    alg TEXT NOT NULL,
    public_jwk TEXT,
    private_sealed TEXT,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    activates_at BIGINT NOT NULL,
    revoked_at BIGINT
);

-- Every instance keeps the keys decoded in memory; any change to them (a
-- rotation, a revocation, from any instance or a psql prompt) notifies them
-- all on the change-notice channel, with a payload that names the table, so
-- that they reload the keys at once (src/store/postgres/change_notices.rs).
CREATE FUNCTION gatehouse_signing_keys_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('gatehouse_auth_changed', 'signing_keys');
    RETURN NULL;
END;
$$;

CREATE TRIGGER signing_keys_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON signing_keys
    FOR EACH STATEMENT EXECUTE FUNCTION gatehouse_signing_keys_changed();
