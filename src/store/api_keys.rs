//! API keys at rest: the public id, an Argon2id PHC hash of the secret, the
//! roles the key is limited to, and its life (expiry, last use, revocation).

use crate::domain::{Member, MemberId, Role};
use crate::store::portable::{MemberRoleRow, fold_member};
use crate::store::{AuditEntry, StoreError, StoreResult};

#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// The public id (the `<public id>` of `gh_<public id>_<secret>`).
    pub id: String,
    pub name: String,
    /// Argon2id PHC string of the secret.
    pub secret_hash: String,
    pub roles: Vec<Role>,
    pub created_by: Option<String>,
    pub expires_at: Option<i64>,
}

/// A stored key with its member (live roles), for authentication.
#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: String,
    pub member: Member,
    pub secret_hash: String,
    pub roles: Vec<Role>,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// The columns of a key joined with its member and one of the member's live
/// roles: the SELECT list for [`KeyMemberRow`].
macro_rules! key_member_columns {
    () => {
        "k.secret_hash, k.roles AS key_roles, k.expires_at AS key_expires_at, k.last_used_at, k.revoked_at, \
         m.id, m.email, m.status, m.created_at, m.last_login_at, r.role"
    };
}
pub(crate) use key_member_columns;

/// One row of a key lookup: the key, its member, one live role of the member.
#[derive(sqlx::FromRow)]
pub(crate) struct KeyMemberRow {
    pub secret_hash: String,
    pub key_roles: String,
    pub key_expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    #[sqlx(flatten)]
    pub member: MemberRoleRow,
}

/// Folds the rows of one key (one per role of its member) into its record.
pub(crate) fn fold_key(id: &str, rows: Vec<KeyMemberRow>) -> StoreResult<Option<ApiKeyRecord>> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let (secret_hash, roles) = (first.secret_hash.clone(), first.key_roles.clone());
    let (expires_at, last_used_at, revoked_at) =
        (first.key_expires_at, first.last_used_at, first.revoked_at);
    let member = fold_member(rows.into_iter().map(|row| row.member).collect())?
        .ok_or_else(|| StoreError::Corrupt(format!("api key {id} without member")))?;
    let roles =
        Role::parse_list(&roles).map_err(|_| StoreError::Corrupt(format!("api key {id} roles")))?;
    Ok(Some(ApiKeyRecord {
        id: id.to_owned(),
        member,
        secret_hash,
        roles,
        expires_at,
        last_used_at,
        revoked_at,
    }))
}

/// A key as admins list it: never the secret, nor its hash.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyInfo {
    pub id: String,
    pub member_id: String,
    pub email: String,
    pub name: String,
    pub roles: String,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

#[async_trait::async_trait]
pub trait ApiKeyStore {
    /// Stores a key for an active member; false when there is no such member.
    async fn create_api_key(
        &self,
        member: &MemberId,
        key: NewApiKey,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool>;

    async fn api_key(&self, id: &str, now: i64) -> StoreResult<Option<ApiKeyRecord>>;

    /// Keys newest first, optionally of one member, after the key `before`.
    async fn list_api_keys(
        &self,
        member: Option<&MemberId>,
        before: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<ApiKeyInfo>>;

    /// Revokes a live key; false when unknown or already revoked.
    async fn revoke_api_key(&self, id: &str, audit: AuditEntry, now: i64) -> StoreResult<bool>;

    async fn touch_api_key(&self, id: &str, now: i64) -> StoreResult<()>;

    /// Hits counted so far in the current window of `bucket`, without counting one.
    async fn rate_limit_hits(&self, bucket: &str, window_secs: i64, now: i64) -> StoreResult<i64>;
}

/// Inserts a key for `$member_id` inside an open transaction.
macro_rules! insert_api_key {
    ($tx:expr, $key:expr, $member_id:expr, $now:expr) => {{
        let key = $key;
        sqlx::query(
            "INSERT INTO api_keys (id, member_id, name, secret_hash, roles, created_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&key.id)
        .bind($member_id)
        .bind(&key.name)
        .bind(&key.secret_hash)
        .bind(Role::join(&key.roles))
        .bind(key.created_by.as_deref())
        .bind($now)
        .bind(key.expires_at)
        .execute(&mut *$tx)
        .await?;
    }};
}
pub(crate) use insert_api_key;

/// Implements [`crate::store::ApiKeyStore`] for `$store`.
macro_rules! impl_api_key_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::ApiKeyStore for $store {
            async fn create_api_key(&self, member: &MemberId, key: NewApiKey, audit: AuditEntry, now: i64) -> StoreResult<bool> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                let live: Option<(String,)> = sqlx::query_as("SELECT id FROM members WHERE id = $1 AND status = 'active'")
                    .bind(member.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                if live.is_none() {
                    return Ok(false);
                }
                $crate::store::api_keys::insert_api_key!(tx, key, member.as_str(), now);
                insert_audit!(tx, audit, now);
                tx.commit().await?;
                Ok(true)
            }

            async fn api_key(&self, id: &str, now: i64) -> StoreResult<Option<ApiKeyRecord>> {
                self.api_key_record(id, now).await
            }

            async fn list_api_keys(&self, member: Option<&MemberId>, before: Option<&str>, limit: i64) -> StoreResult<Vec<ApiKeyInfo>> {
                Ok(sqlx::query_as(
                    "SELECT k.id, k.member_id, m.email, k.name, k.roles, k.created_by, k.created_at, k.expires_at, \
                       k.last_used_at, k.revoked_at FROM api_keys k JOIN members m ON m.id = k.member_id \
                     WHERE ($1 IS NULL OR k.member_id = $1) AND ($2 IS NULL OR (k.created_at, k.id) < \
                       (SELECT c.created_at, c.id FROM api_keys c WHERE c.id = $2)) \
                     ORDER BY k.created_at DESC, k.id DESC LIMIT $3",
                )
                .bind(member.map(MemberId::as_str))
                .bind(before)
                .bind(limit)
                .fetch_all(&self.reader)
                .await?)
            }

            async fn revoke_api_key(&self, id: &str, audit: AuditEntry, now: i64) -> StoreResult<bool> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                let revoked = sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                    .bind(id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if revoked == 0 {
                    return Ok(false);
                }
                insert_audit!(tx, audit, now);
                tx.commit().await?;
                Ok(true)
            }

            async fn touch_api_key(&self, id: &str, now: i64) -> StoreResult<()> {
                sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
                    .bind(id)
                    .bind(now)
                    .execute(&mut *self.write().await?)
                    .await?;
                Ok(())
            }

            async fn rate_limit_hits(&self, bucket: &str, window_secs: i64, now: i64) -> StoreResult<i64> {
                let row: Option<(i64,)> = sqlx::query_as(
                    "SELECT hits FROM rate_limits WHERE bucket = $1 AND window_start > $2",
                )
                .bind(bucket)
                .bind(now - window_secs)
                .fetch_optional(&self.reader)
                .await?;
                Ok(row.map(|(hits,)| hits).unwrap_or(0))
            }
        }
    };
}
pub(crate) use impl_api_key_store;
