//! The audit log: written by every other operation, in that operation's own
//! transaction (through [`insert_audit`]), and read by admins.

use super::backend::{Backend, SqlStore};
use super::sql::{Executor, query};
use super::{AuditEntry, StoreResult};

/// The columns an audit row is inserted with, in the order of [`AuditRow`].
pub const AUDIT_COLUMNS: &str = "id, at, actor, action, target, details, ip";

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
    /// Writes one row on its own, for events that change nothing else.
    async fn record_audit(&self, entry: AuditEntry, now: i64) -> StoreResult<()>;

    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRow>>;
}

/// Writes `entry` through `db`: inside a transaction, it commits or rolls back
/// with the change it records.
pub async fn insert_audit(db: &mut impl Executor, entry: AuditEntry, now: i64) -> StoreResult<()> {
    query(INSERT_AUDIT)
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(now)
        .bind(entry.actor)
        .bind(entry.action)
        .bind(entry.target)
        .bind(entry.details.to_string())
        .bind(entry.ip)
        .execute(db)
        .await?;
    Ok(())
}

const INSERT_AUDIT: &str = "INSERT INTO audit_log (id, at, actor, action, target, details, ip) \
                            VALUES ($1, $2, $3, $4, $5, $6, $7)";

#[async_trait::async_trait]
impl<B: Backend> AuditStore for SqlStore<B> {
    async fn record_audit(&self, entry: AuditEntry, now: i64) -> StoreResult<()> {
        insert_audit(&mut *self.backend.write().await?, entry, now).await
    }

    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRow>> {
        query(
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
        .fetch_all(&mut self.backend.reader())
        .await
    }
}
