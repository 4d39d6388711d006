//! API keys at rest: the public id, an Argon2id PHC hash of the secret, the
//! roles the key is limited to, and its life (expiry, last use, revocation).

use std::sync::LazyLock;

use super::audit::insert_audit;
use super::backend::{Backend, SqlStore};
use super::schema::{self, MemberRoleRow};
use super::sql::{Executor, query};
use super::webhooks::{api_key_data, record_event};
use super::{AuditEntry, StoreError, StoreResult};
use crate::domain::{EventType, Member, MemberId, Role};

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

/// The columns of [`KeyMemberRow`] from keys aliased `k`, after which come
/// the member's ([`schema::MEMBER_COLUMNS`], `r.role`).
pub const KEY_COLUMNS: &str = "k.secret_hash, k.roles AS key_roles, k.expires_at AS key_expires_at, \
                               k.last_used_at, k.revoked_at";

/// One row of a key lookup: the key, its member, one live role of the member.
#[derive(sqlx::FromRow)]
pub struct KeyMemberRow {
    pub secret_hash: String,
    pub key_roles: String,
    pub key_expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    #[sqlx(flatten)]
    pub member: MemberRoleRow,
}

/// Folds the rows of one key (one per role of its member) into its record.
pub fn fold_key(id: &str, rows: Vec<KeyMemberRow>) -> StoreResult<Option<ApiKeyRecord>> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let (secret_hash, roles) = (first.secret_hash.clone(), first.key_roles.clone());
    let (expires_at, last_used_at, revoked_at) =
        (first.key_expires_at, first.last_used_at, first.revoked_at);
    let member = schema::fold_member(rows.into_iter().map(|row| row.member).collect())?
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

/// The columns of [`ApiKeyInfo`], from keys `k` joined with their members `m`.
const KEY_INFO_COLUMNS: &str = "k.id, k.member_id, m.email, k.name, k.roles, k.created_by, \
                                k.created_at, k.expires_at, k.last_used_at, k.revoked_at";

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

/// The key `id` with its member and the member's roles in force at `now`.
pub async fn read_key(
    db: &mut impl Executor,
    id: &str,
    now: i64,
) -> StoreResult<Option<ApiKeyRecord>> {
    static KEY: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {KEY_COLUMNS}, {}, r.role FROM api_keys k JOIN members m ON m.id = k.member_id \
             LEFT JOIN member_roles r ON r.member_id = m.id AND {} \
             WHERE k.id = $2 ORDER BY r.role",
            schema::MEMBER_COLUMNS,
            schema::live_grant("r", "$1"),
        )
    });
    let rows = query(&KEY).bind(now).bind(id).fetch_all(db).await?;
    fold_key(id, rows)
}

/// Stores `key` for `member_id`.
pub async fn insert_api_key(
    db: &mut impl Executor,
    key: &NewApiKey,
    member_id: &str,
    now: i64,
) -> StoreResult<()> {
    query(
        "INSERT INTO api_keys (id, member_id, name, secret_hash, roles, created_by, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&key.id)
    .bind(member_id)
    .bind(&key.name)
    .bind(&key.secret_hash)
    .bind(Role::join(&key.roles))
    .bind(key.created_by.as_deref())
    .bind(now)
    .bind(key.expires_at)
    .execute(db)
    .await?;
    Ok(())
}

#[async_trait::async_trait]
impl<B: Backend> ApiKeyStore for SqlStore<B> {
    async fn create_api_key(
        &self,
        member: &MemberId,
        key: NewApiKey,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool> {
        static ACTIVE_MEMBER: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT m.id FROM members m WHERE m.id = $1 AND {}",
                schema::active("m")
            )
        });
        let mut tx = self.backend.begin().await?;
        let active: Option<(String,)> = query(&ACTIVE_MEMBER)
            .bind(member.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if active.is_none() {
            return Ok(false);
        }
        insert_api_key(&mut *tx, &key, member.as_str(), now).await?;
        insert_audit(&mut *tx, audit, now).await?;
        let roles: Vec<String> = key.roles.iter().map(|r| r.as_str().to_owned()).collect();
        let data = api_key_data(&key.id, &key.name, member.as_str(), &roles, key.expires_at);
        let data = serde_json::json!({ "api_key": data });
        record_event(&mut *tx, EventType::ApiKeyCreated, data, now).await?;
        B::commit(tx).await?;
        Ok(true)
    }

    async fn api_key(&self, id: &str, now: i64) -> StoreResult<Option<ApiKeyRecord>> {
        self.backend.api_key(id, now).await
    }

    async fn list_api_keys(
        &self,
        member: Option<&MemberId>,
        before: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<ApiKeyInfo>> {
        static LIST: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT {KEY_INFO_COLUMNS} FROM api_keys k JOIN members m ON m.id = k.member_id \
                 WHERE ($1 IS NULL OR k.member_id = $1) AND ($2 IS NULL OR (k.created_at, k.id) < \
                   (SELECT c.created_at, c.id FROM api_keys c WHERE c.id = $2)) \
                 ORDER BY k.created_at DESC, k.id DESC LIMIT $3"
            )
        });
        query(&LIST)
            .bind(member.map(MemberId::as_str))
            .bind(before)
            .bind(limit)
            .fetch_all(&mut self.backend.reader())
            .await
    }

    async fn revoke_api_key(&self, id: &str, audit: AuditEntry, now: i64) -> StoreResult<bool> {
        let mut tx = self.backend.begin().await?;
        let revoked: Option<(String, String, String, Option<i64>)> = query(
            "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL \
             RETURNING member_id, name, roles, expires_at",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((member_id, name, roles, expires_at)) = revoked else {
            return Ok(false);
        };
        insert_audit(&mut *tx, audit, now).await?;
        let roles: Vec<String> = roles
            .split(',')
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect();
        let data = api_key_data(id, &name, &member_id, &roles, expires_at);
        let data = serde_json::json!({ "api_key": data, "reason": "revoked" });
        record_event(&mut *tx, EventType::ApiKeyRevoked, data, now).await?;
        B::commit(tx).await?;
        Ok(true)
    }

    async fn touch_api_key(&self, id: &str, now: i64) -> StoreResult<()> {
        query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&mut *self.backend.write().await?)
            .await?;
        Ok(())
    }

    async fn rate_limit_hits(&self, bucket: &str, window_secs: i64, now: i64) -> StoreResult<i64> {
        let hits: Option<(i64,)> =
            query("SELECT hits FROM rate_limits WHERE bucket = $1 AND window_start > $2")
                .bind(bucket)
                .bind(now - window_secs)
                .fetch_optional(&mut self.backend.reader())
                .await?;
        Ok(hits.map_or(0, |(hits,)| hits))
    }
}
