//! The embedded default: one SQLite file in WAL mode.
//!
//! Writes go through a pool of exactly one connection: SQLite has a single writer
//! anyway, and queueing in-process is far cheaper than `SQLITE_BUSY` retries.
//! Reads use a separate pool and run concurrently with the writer (WAL).

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::api_keys::impl_api_key_store;
use super::audit::impl_audit_store;
use super::members_sql::impl_member_store;
use super::portable::{impl_store, insert_audit, load_member, revoke_session_in};
use super::roster_sql::impl_roster_store;
use super::*;
use crate::domain::{MemberStatus, Role};

impl_member_store!(SqliteStore);
impl_roster_store!(SqliteStore);
impl_api_key_store!(SqliteStore);
impl_audit_store!(SqliteStore);

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

impl SqliteStore {
    pub async fn connect(url: &str, max_readers: u32) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode cannot corrupt the database; a power cut may lose
            // the last transactions, which the mail outbox and clients retry.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(max_readers.max(1))
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { writer, reader })
    }
}

impl_store!(SqliteStore, {
    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR.run(&self.writer).await?;
        Ok(())
    }

    async fn claim_due_mail(
        &self,
        now: i64,
        lease_secs: i64,
        limit: i64,
    ) -> StoreResult<Vec<OutboxMail>> {
        let rows: Vec<(
            String,
            String,
            String,
            String,
            String,
            i64,
            i64,
            Option<i64>,
        )> = sqlx::query_as(
            "UPDATE outbox SET next_attempt_at = $2 WHERE id IN ( \
               SELECT id FROM outbox WHERE status = 'queued' AND next_attempt_at <= $1 \
               ORDER BY next_attempt_at LIMIT $3) \
             RETURNING id, kind, recipient, subject, sealed_body, attempts, created_at, expires_at",
        )
        .bind(now)
        .bind(now + lease_secs)
        .bind(limit)
        .fetch_all(&self.writer)
        .await?;
        Ok(rows.into_iter().map(super::outbox_mail).collect())
    }
});
