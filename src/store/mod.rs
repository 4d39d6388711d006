//! Persistence. One [`Store`] trait, implemented for SQLite and Postgres; the
//! backend is chosen once, from the database URL's scheme, at start-up.
//!
//! Store methods are whole business operations (redeem a link, rotate a refresh
//! token), each its own transaction, so no transaction or SQL type leaks upward.
//! Times are unix seconds (`i64`) and ids are UUID text on both backends, so one
//! SQL text serves both where the dialects agree (see `portable.rs`).

mod api_keys;
mod audit;
mod cache;
mod change_notices;
mod coalesce;
mod members;
mod members_sql;
mod outbox;
mod portable;
mod postgres;
mod roster;
mod roster_sql;
mod sign_in;
mod sqlite;
mod sqlite_groups;
mod sqlite_writer;
mod types;

use std::sync::Arc;

pub use api_keys::{ApiKeyInfo, ApiKeyRecord, ApiKeyStore, NewApiKey};
pub use audit::{AuditFilter, AuditRow, AuditStore};
pub use cache::{CachedStore, Freshness};
pub use members::{MemberFilter, MemberStore, RoleGrant, RoleInfo};
pub use postgres::PostgresStore;
pub use roster::{
    BatchRow, EligibleFilter, EligibleRow, IMPORT_CHUNK, ImportChunk, ImportTotals, RosterImport,
    RosterStore,
};
pub use sqlite::SqliteStore;
pub use types::*;

use crate::config::DatabaseUrl;
use crate::domain::{Email, Member, MemberId, TokenHash};

pub type DynStore = Arc<dyn Store>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is too busy; the request may be retried.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("unknown role `{0}`")]
    UnknownRole(String),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Database(String),
    #[error("unreadable row: {0}")]
    Corrupt(String),
    #[error("unsupported database URL `{0}`: use sqlite:// or postgres://")]
    UnsupportedUrl(String),
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// The change would leave no active member with the `admin` role.
    #[error("the last active admin cannot lose the admin role")]
    LastAdmin,
    #[error("`{0}` is a built-in role")]
    BuiltinRole(String),
    #[error("the role `{role}` is granted {grants} time(s)")]
    RoleInUse { role: String, grants: i64 },
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => Self::Unavailable(err.to_string()),
            sqlx::Error::Database(db) if is_transient(db.code().as_deref(), db.message()) => {
                Self::Unavailable(err.to_string())
            }
            _ => Self::Database(err.to_string()),
        }
    }
}

/// SQLite's busy/locked and Postgres' connection-class (08), shutdown (57P),
/// insufficient-resources (53, e.g. too many connections) and serialization or
/// deadlock (40001, 40P01) errors are transient: they say "try later", not
/// "your request is wrong". Postgres codes are five-character SQLSTATEs, SQLite's
/// are numbers (531 is a SQLite constraint error, not class 53), hence the length test.
fn is_transient(code: Option<&str>, message: &str) -> bool {
    match code {
        Some(sqlstate) if sqlstate.len() == 5 => {
            ["08", "57P", "53"]
                .iter()
                .any(|class| sqlstate.starts_with(class))
                || matches!(sqlstate, "40001" | "40P01")
        }
        Some("5" | "6" | "261" | "517") => true,
        _ => message.contains("database is locked"),
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Every operation of the service. The admin areas live in their own traits
/// (members, roster, API keys, audit), each implemented by a macro of portable SQL.
#[async_trait::async_trait]
pub trait Store:
    MemberStore + RosterStore + ApiKeyStore + AuditStore + Send + Sync + 'static
{
    /// Applies pending migrations (safe to call from several instances at once).
    async fn migrate(&self) -> StoreResult<()>;

    /// A cheap round trip, for readiness checks.
    async fn ping(&self) -> StoreResult<()>;

    /// Counts one hit in the fixed window of each of `buckets` and returns each
    /// window's state, in the order given. All buckets in one statement, because
    /// every write round trip queues on SQLite's single writer.
    async fn hit_rate_limits(
        &self,
        buckets: &[&str],
        window_secs: i64,
        now: i64,
    ) -> StoreResult<Vec<RateWindow>>;

    /// [`Store::hit_rate_limits`] for a single bucket.
    async fn hit_rate_limit(
        &self,
        bucket: &str,
        window_secs: i64,
        now: i64,
    ) -> StoreResult<RateWindow> {
        self.hit_rate_limits(&[bucket], window_secs, now)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt(format!("rate limit bucket {bucket} not returned")))
    }

    /// The names of all roles, built-in and custom.
    async fn role_names(&self) -> StoreResult<Vec<String>>;

    /// True when `email` may receive a sign-in link: an active member, or an
    /// allowlisted address that is not (yet) a member.
    async fn is_eligible(&self, email: &Email) -> StoreResult<bool>;

    /// Stores a sign-in link and the mail that carries it, atomically, if
    /// `link.email` may sign in (as [`Store::is_eligible`] decides); records
    /// `audit` either way, with `eligible` added to its details. True when the
    /// link was stored. One operation, so that on Postgres a link request is
    /// one round trip.
    async fn create_magic_link(
        &self,
        link: NewMagicLink,
        mail: NewMail,
        audit: AuditEntry,
    ) -> StoreResult<bool>;

    /// Spends one code attempt on every live link of `email` and returns their
    /// `(token hash, code hash)` pairs, so the caller can compare the typed code.
    async fn spend_code_attempt(
        &self,
        email: &Email,
        now: i64,
        max_attempts: i64,
    ) -> StoreResult<Vec<(TokenHash, TokenHash)>>;

    /// Consumes a live link and signs its owner in, in one transaction: creates
    /// the member on first sign-in (with `member` plus the pre-assigned roles),
    /// opens a session and stores its first refresh token. `None` when the link is
    /// unknown, used, expired, or its owner may not sign in.
    async fn redeem_magic_link(
        &self,
        token_hash: &TokenHash,
        session: NewSession,
        now: i64,
    ) -> StoreResult<Option<SignedIn>>;

    /// Rotates a refresh token; a token that was already rotated revokes its family.
    async fn rotate_refresh_token(
        &self,
        presented: &TokenHash,
        next: NewRefreshToken,
        now: i64,
    ) -> StoreResult<RefreshOutcome>;

    /// Revokes a session and all its refresh tokens. Returns false if it was unknown.
    async fn revoke_session(
        &self,
        session_id: &str,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool>;

    /// The member behind an access token, if the member is active and the session live.
    async fn session_member(
        &self,
        member_id: &MemberId,
        session_id: &str,
        now: i64,
    ) -> StoreResult<Option<Member>>;

    async fn member_by_id(&self, id: &MemberId, now: i64) -> StoreResult<Option<Member>>;

    /// Soft-deletes a member and revokes every session and API key. Returns false
    /// if unknown; [`StoreError::LastAdmin`] if they are the last active admin.
    async fn delete_member(&self, id: &MemberId, audit: AuditEntry, now: i64) -> StoreResult<bool>;

    /// Allowlists the addresses with `admin` pre-assigned, and grants `admin` to
    /// those that are members already.
    async fn bootstrap_admins(&self, emails: &[Email], now: i64) -> StoreResult<()>;

    async fn record_audit(&self, entry: AuditEntry, now: i64) -> StoreResult<()>;

    /// Leases up to `limit` due mails for `lease_secs`: a worker that dies while
    /// holding them lets them come due again, so nothing is lost.
    async fn claim_due_mail(
        &self,
        now: i64,
        lease_secs: i64,
        limit: i64,
    ) -> StoreResult<Vec<OutboxMail>>;

    /// Records the outcome of a delivery attempt. Only a `queued` mail changes, so
    /// a final state, once written, is never overwritten.
    async fn finish_mail(&self, id: &str, result: MailResult, now: i64) -> StoreResult<()> {
        self.finish_mails(&[(id.to_owned(), result)], now).await
    }

    /// [`Store::finish_mail`] for several mails (`(id, outcome)` pairs) in as few
    /// statements as the outcomes allow, so the worker takes SQLite's single
    /// writer once per batch rather than once per mail.
    async fn finish_mails(&self, outcomes: &[(String, MailResult)], now: i64) -> StoreResult<()>;

    /// A page of the outbox, newest first, without bodies.
    async fn outbox_page(&self, query: OutboxQuery<'_>) -> StoreResult<Vec<OutboxEntry>>;

    /// How many mails are in each state.
    async fn outbox_counts(&self) -> StoreResult<OutboxCounts>;

    /// Sends a `failed` mail back to `queued`, due at `now`, with a fresh budget
    /// of attempts; writes `audit` in the same transaction.
    async fn requeue_failed_mail(
        &self,
        id: &str,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<RequeueOutcome>;

    /// Deletes expired links, rate-limit windows and long-dead refresh tokens.
    async fn purge_expired(&self, now: i64) -> StoreResult<u64>;
}

/// Opens the store named by `url`.
pub async fn connect(url: &DatabaseUrl, max_connections: u32) -> StoreResult<DynStore> {
    let text = url.expose();
    if text.starts_with("sqlite:") {
        let sqlite: DynStore = Arc::new(SqliteStore::connect(text, max_connections).await?);
        Ok(Arc::new(CachedStore::new(sqlite, Freshness::local())))
    } else if text.starts_with("postgres:") || text.starts_with("postgresql:") {
        let postgres = PostgresStore::connect(text, max_connections).await?;
        let freshness = postgres.freshness();
        Ok(Arc::new(CachedStore::new(Arc::new(postgres), freshness)))
    } else {
        Err(StoreError::UnsupportedUrl(
            text.split(':').next().unwrap_or_default().to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::is_transient;

    #[test]
    fn outages_are_transient_and_bad_requests_are_not() {
        for sqlstate in [
            "08006", "08001", "57P01", "57P03", "53300", "40001", "40P01",
        ] {
            assert!(is_transient(Some(sqlstate), ""), "{sqlstate}");
        }
        for sqlstate in ["23505", "42P01", "22P02"] {
            assert!(!is_transient(Some(sqlstate), ""), "{sqlstate}");
        }
        assert!(is_transient(Some("5"), "database is locked"));
        assert!(is_transient(Some("517"), ""));
        assert!(!is_transient(Some("531"), "constraint failed"));
        assert!(!is_transient(Some("2067"), "UNIQUE constraint failed"));
    }
}
