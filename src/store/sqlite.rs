//! The embedded default: one SQLite file in WAL mode.
//!
//! Writes go through exactly one connection, held for good behind a fair async
//! mutex: SQLite has a single writer anyway, and queueing in-process is far
//! cheaper than `SQLITE_BUSY` retries. Not a pool of one: sqlx pings a pooled
//! connection every time it is released, and on SQLite that ping is one more
//! round trip to the connection's thread, on the one writer everything waits for.
//! Reads use a pool and run concurrently with the writer (WAL). How writes
//! avoid round trips on that one connection: `sqlite_writer.rs`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use tokio::sync::MutexGuard;

use super::api_keys::{KeyMemberRow, fold_key, impl_api_key_store, key_member_columns};
use super::audit::impl_audit_store;
use super::members_sql::impl_member_store;
use super::portable::{impl_store, insert_audit, load_member, revoke_session_in};
use super::roster_sql::impl_roster_store;
use super::sqlite_writer::Writer;
use super::*;
use crate::domain::{MemberStatus, Role};

impl_member_store!(SqliteStore);
impl_roster_store!(
    SqliteStore,
    write_import_chunk,
    super::roster::SQLITE_ROWS_PER_STATEMENT,
    sqlite_writes_one_at_a_time
);
impl_api_key_store!(SqliteStore);
impl_audit_store!(SqliteStore);

pub struct SqliteStore {
    pub(super) writer: Arc<Writer>,
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
        // Room for the batched link statements (one per batch size) beside the rest.
        let writer = Writer::new(
            options
                .clone()
                .statement_cache_capacity(400)
                .connect()
                .await?,
        );
        let reader = SqlitePoolOptions::new()
            .max_connections(max_readers.max(1))
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { writer, reader })
    }

    /// Counts a request's hits, each bucket once, in the writer's next group commit.
    pub(super) async fn count_hits(
        &self,
        buckets: &[&str],
        window_secs: i64,
        now: i64,
    ) -> StoreResult<Vec<RateWindow>> {
        let mut distinct: Vec<&str> = buckets.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let windows = futures_util::future::try_join_all(
            distinct
                .iter()
                .map(|bucket| self.writer.hit_rate_limit(bucket, window_secs, now)),
        )
        .await?;
        buckets
            .iter()
            .map(|bucket| {
                distinct
                    .iter()
                    .position(|d| d == bucket)
                    .map(|i| windows[i])
                    .ok_or_else(|| StoreError::Corrupt(format!("rate limit bucket {bucket}")))
            })
            .collect()
    }

    /// The member behind a live session (SQLite's answers are cached in front,
    /// see `cache.rs`).
    pub(super) async fn live_session_member(
        &self,
        member_id: &MemberId,
        session_id: &str,
        now: i64,
    ) -> StoreResult<Option<Member>> {
        let rows: Vec<super::portable::MemberRoleRow> = sqlx::query_as(concat!(
            super::portable::member_select!("$3"),
            "JOIN sessions s ON s.member_id = m.id ",
            "WHERE m.id = $1 AND s.id = $2 AND s.revoked_at IS NULL AND m.status = 'active' ORDER BY r.role"
        ))
        .bind(member_id.as_str())
        .bind(session_id)
        .bind(now)
        .fetch_all(&self.reader)
        .await?;
        super::portable::fold_member(rows)
    }

    /// A key with its member, in one query (cached in front, see `cache.rs`).
    pub(super) async fn api_key_record(
        &self,
        id: &str,
        now: i64,
    ) -> StoreResult<Option<ApiKeyRecord>> {
        let rows: Vec<KeyMemberRow> = sqlx::query_as(concat!(
            "SELECT ",
            key_member_columns!(),
            " FROM api_keys k JOIN members m ON m.id = k.member_id ",
            "LEFT JOIN member_roles r ON r.member_id = m.id AND (r.expires_at IS NULL OR r.expires_at > $2) ",
            "WHERE k.id = $1 ORDER BY r.role"
        ))
        .bind(id)
        .bind(now)
        .fetch_all(&self.reader)
        .await?;
        fold_key(id, rows)
    }

    /// The writer connection, once every earlier write is done.
    pub(super) async fn write(&self) -> StoreResult<MutexGuard<'_, SqliteConnection>> {
        self.writer.lock().await
    }
}

impl_store!(SqliteStore, {
    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR.run_direct(&mut *self.write().await?).await?;
        Ok(())
    }

    async fn claim_due_mail(
        &self,
        now: i64,
        lease_secs: i64,
        limit: i64,
    ) -> StoreResult<Vec<OutboxMail>> {
        let claimed: Vec<OutboxMail> = sqlx::query_as(
            "UPDATE outbox SET next_attempt_at = $2 WHERE id IN ( \
               SELECT id FROM outbox WHERE status = 'queued' AND next_attempt_at <= $1 \
               ORDER BY next_attempt_at LIMIT $3) \
             RETURNING id, kind, recipient, subject, sealed_body, attempts, created_at, expires_at",
        )
        .bind(now)
        .bind(now + lease_secs)
        .bind(limit)
        .fetch_all(&mut *self.write().await?)
        .await?;
        Ok(claimed)
    }
});
