//! Signing keys at rest: the public JWK, the sealed private key, and the times
//! that make up a key's life (created, activates, revoked). States (next,
//! current, retiring, retired, revoked) are derived from these times by the
//! auth service, so nothing here changes as time passes.

use super::audit::insert_audit;
use super::backend::{Backend, SqlStore};
use super::sql::{Executor, query};
use super::{AuditEntry, StoreResult};

/// A key as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SigningKeyRow {
    pub kid: String,
    /// `ES256`, `EdDSA` or `HS256`.
    pub alg: String,
    /// The public JWK (JSON text); `None` for HS256.
    pub public_jwk: Option<String>,
    /// The sealed PKCS#8 private key; `None` for HS256 (the server secret signs).
    pub private_sealed: Option<String>,
    pub created_by: Option<String>,
    pub created_at: i64,
    /// When the key starts signing; until then it is only published.
    pub activates_at: i64,
    pub revoked_at: Option<i64>,
}

/// A key to store.
#[derive(Debug, Clone)]
pub struct NewSigningKey {
    pub kid: String,
    pub alg: String,
    pub public_jwk: Option<String>,
    pub private_sealed: Option<String>,
    pub created_by: Option<String>,
    pub activates_at: i64,
}

#[async_trait::async_trait]
pub trait SigningKeyStore {
    /// Every key, revoked and retired ones included, oldest activation first.
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRow>>;

    /// Stores `key` with its audit row; false (and nothing written) when a key
    /// with its `kid` exists.
    async fn add_signing_key(
        &self,
        key: NewSigningKey,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool>;

    /// Revokes the live key `kid` and, in the same transaction, stores
    /// `replacement` (the key that signs instead, when `kid` was signing).
    /// False (and nothing written) when `kid` is unknown or already revoked.
    async fn revoke_signing_key(
        &self,
        kid: &str,
        replacement: Option<NewSigningKey>,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool>;

    /// Ticks whenever the signing keys may have changed: on every change made
    /// through this process and, on Postgres, every change another client
    /// commits. `None` when this store cannot tell (the undecorated stores);
    /// readers then rely on reloading now and then.
    fn signing_key_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>>;
}

async fn insert_key(db: &mut impl Executor, key: &NewSigningKey, now: i64) -> StoreResult<u64> {
    query(
        "INSERT INTO signing_keys (kid, alg, public_jwk, private_sealed, created_by, created_at, activates_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (kid) DO NOTHING",
    )
    .bind(&key.kid)
    .bind(&key.alg)
    .bind(key.public_jwk.as_deref())
    .bind(key.private_sealed.as_deref())
    .bind(key.created_by.as_deref())
    .bind(now)
    .bind(key.activates_at)
    .execute(db)
    .await
}

#[async_trait::async_trait]
impl<B: Backend> SigningKeyStore for SqlStore<B> {
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRow>> {
        query(
            "SELECT kid, alg, public_jwk, private_sealed, created_by, created_at, activates_at, revoked_at \
             FROM signing_keys ORDER BY activates_at, created_at, kid",
        )
        .fetch_all(&mut self.backend.reader())
        .await
    }

    async fn add_signing_key(
        &self,
        key: NewSigningKey,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.backend.begin().await?;
        if insert_key(&mut *tx, &key, now).await? == 0 {
            return Ok(false);
        }
        insert_audit(&mut *tx, audit, now).await?;
        B::commit(tx).await?;
        Ok(true)
    }

    async fn revoke_signing_key(
        &self,
        kid: &str,
        replacement: Option<NewSigningKey>,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.backend.begin().await?;
        let revoked =
            query("UPDATE signing_keys SET revoked_at = $2 WHERE kid = $1 AND revoked_at IS NULL")
                .bind(kid)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        if revoked == 0 {
            return Ok(false);
        }
        if let Some(replacement) = &replacement {
            insert_key(&mut *tx, replacement, now).await?;
        }
        insert_audit(&mut *tx, audit, now).await?;
        B::commit(tx).await?;
        Ok(true)
    }

    fn signing_key_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}
