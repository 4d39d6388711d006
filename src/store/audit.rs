//! Reading the audit log (rows are written by every other operation, in its own transaction).

use crate::store::StoreResult;

/// Filters and keyset position for the audit log, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    /// Unix seconds, inclusive.
    pub since: Option<i64>,
    /// Unix seconds, exclusive.
    pub until: Option<i64>,
    /// Only rows older than the row with this id (ids are UUIDv7, so they sort by time).
    pub before: Option<String>,
    pub limit: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub id: String,
    pub at: i64,
    pub actor: Option<String>,
    pub action: String,
    pub target: Option<String>,
    /// A JSON object.
    pub details: String,
    pub ip: Option<String>,
}

#[async_trait::async_trait]
pub trait AuditStore {
    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRow>>;
}

/// Implements [`crate::store::AuditStore`] for `$store`.
macro_rules! impl_audit_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::AuditStore for $store {
            async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRow>> {
                Ok(sqlx::query_as(
                    "SELECT id, at, actor, action, target, details, ip FROM audit_log \
                     WHERE ($1 IS NULL OR actor = $1) AND ($2 IS NULL OR action = $2) AND ($3 IS NULL OR target = $3) \
                       AND ($4 IS NULL OR at >= $4) AND ($5 IS NULL OR at < $5) AND ($6 IS NULL OR id < $6) \
                     ORDER BY id DESC LIMIT $7",
                )
                .bind(filter.actor.as_deref())
                .bind(filter.action.as_deref())
                .bind(filter.target.as_deref())
                .bind(filter.since)
                .bind(filter.until)
                .bind(filter.before.as_deref())
                .bind(filter.limit)
                .fetch_all(&self.reader)
                .await?)
            }
        }
    };
}
pub(crate) use impl_audit_store;
