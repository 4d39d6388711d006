//! The embedded default: one SQLite file in WAL mode.
//!
//! Writes go through exactly one connection, held for good behind a fair async
//! mutex (`writer.rs`): SQLite has a single writer anyway, and queueing
//! in-process is far cheaper than `SQLITE_BUSY` retries. Not a pool of one:
//! sqlx pings a pooled connection every time it is released, and on SQLite
//! that ping is one more round trip to the connection's thread, on the one
//! writer everything waits for. Reads use a pool and run concurrently with the
//! writer (WAL).

mod executor;
mod jobs;
mod script;
mod writer;

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use tokio::sync::MutexGuard;

use self::jobs::{Hit, LinkRequest, Redemption};
use self::script::first_row;
use self::writer::{Job, Writer};
use super::backend::{Backend, LinkAudit, Redeemed, SqlStore};
use super::sessions::{CLAIM_REFRESH, insert_next_refresh};
use super::sign_in::sign_in_details;
use super::{
    EligibleEntry, NewMagicLink, NewMail, NewRefreshToken, NewSession, RateWindow, RosterImport,
    StoreError, StoreResult, UpsertCounts, schema,
};
use crate::domain::{Role, TokenHash};
use crate::metrics::PoolStats;
use crate::store::backend::sqlx_pool_stats;

pub type SqliteStore = SqlStore<Sqlite>;

pub struct Sqlite {
    writer: Arc<Writer>,
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
        // Room for the grouped scripts (one per kind and batch size) beside the rest.
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
        Ok(SqlStore::new(Sqlite { writer, reader }))
    }
}

/// A transaction on the writer. Dropped unfinished, it is rolled back by the
/// next write (see [`Writer::lock`]).
pub struct WriteTx<'a> {
    conn: MutexGuard<'a, SqliteConnection>,
    writer: &'a Writer,
}

impl Deref for WriteTx<'_> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl DerefMut for WriteTx<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

impl Backend for Sqlite {
    type Conn = SqliteConnection;
    type Reader = SqlitePool;
    type Tx<'a> = WriteTx<'a>;
    type Writer<'a> = MutexGuard<'a, SqliteConnection>;

    fn reader(&self) -> SqlitePool {
        self.reader.clone()
    }

    async fn begin(&self) -> StoreResult<WriteTx<'_>> {
        let mut conn = self.writer.lock().await?;
        self.writer.opened();
        sqlx::query("BEGIN").execute(&mut *conn).await?;
        Ok(WriteTx {
            conn,
            writer: &self.writer,
        })
    }

    async fn commit<'a>(mut tx: Self::Tx<'a>) -> StoreResult<()> {
        // A failed COMMIT leaves the transaction marked open: the next write
        // rolls it back.
        sqlx::query("COMMIT").execute(&mut *tx.conn).await?;
        tx.writer.closed();
        Ok(())
    }

    async fn rollback<'a>(mut tx: Self::Tx<'a>) -> StoreResult<()> {
        sqlx::query("ROLLBACK").execute(&mut *tx.conn).await?;
        tx.writer.closed();
        Ok(())
    }

    async fn write(&self) -> StoreResult<MutexGuard<'_, SqliteConnection>> {
        self.writer.lock().await
    }

    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR.run_direct(&mut *self.writer.lock().await?).await?;
        Ok(())
    }

    fn pool_stats(&self) -> Vec<PoolStats> {
        let (writing, waiting) = self.writer.stats();
        vec![
            PoolStats {
                pool: "writer",
                in_use: u32::from(writing),
                idle: u32::from(!writing),
                max: 1,
                waiting: Some(waiting),
            },
            sqlx_pool_stats("reader", &self.reader),
        ]
    }

    /// The single writer makes every claim alone.
    const CLAIM_LOCK: &'static str = "";

    /// 2 bound values per row plus 3 shared, far below SQLite's limit on
    /// bound parameters.
    const IMPORT_ROWS_PER_STATEMENT: usize = 500;

    /// The single writer runs one import at a time already.
    async fn lock_roster(_tx: &mut SqliteConnection) -> StoreResult<()> {
        Ok(())
    }

    /// One process owns the file; its one housekeeping job never overlaps
    /// itself, and the writer serialises the deletes anyway.
    type HousekeepingLock = ();

    async fn try_lock_housekeeping(&self) -> StoreResult<Option<()>> {
        Ok(Some(()))
    }

    async fn unlock_housekeeping(_lock: ()) -> StoreResult<()> {
        Ok(())
    }

    /// One SELECT of the entries already listed, one multi-row INSERT of the
    /// new ones, one UPDATE per listed entry whose roles change.
    async fn write_import_chunk(
        tx: &mut SqliteConnection,
        entries: &[EligibleEntry],
        import: &RosterImport,
    ) -> StoreResult<UpsertCounts> {
        let mut counts = UpsertCounts::default();
        let listed = format!(
            "SELECT email, roles FROM eligible_emails WHERE email IN ({})",
            schema::placeholders(1, entries.len())
        );
        let mut select = sqlx::query_as::<_, (String, String)>(&listed);
        for entry in entries {
            select = select.bind(entry.email.as_str());
        }
        let listed: HashMap<String, String> =
            select.fetch_all(&mut *tx).await?.into_iter().collect();
        let mut fresh = Vec::new();
        for entry in entries {
            let roles = Role::join(&entry.roles);
            match listed.get(entry.email.as_str()) {
                None => fresh.push((entry.email.as_str(), roles)),
                Some(old) if !entry.roles.is_empty() && *old != roles => {
                    sqlx::query("UPDATE eligible_emails SET roles = $2 WHERE email = $1")
                        .bind(entry.email.as_str())
                        .bind(roles)
                        .execute(&mut *tx)
                        .await?;
                    counts.updated += 1;
                }
                Some(_) => counts.unchanged += 1,
            }
        }
        if !fresh.is_empty() {
            let values = (0..fresh.len())
                .map(|i| format!("(${}, $1, ${}, $2, $3)", 4 + 2 * i, 5 + 2 * i))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO eligible_emails (email, batch_id, roles, added_by, created_at) \
                 VALUES {values} ON CONFLICT (email) DO NOTHING"
            );
            let mut insert = sqlx::query(&sql)
                .bind(import.batch_id.as_str())
                .bind(import.added_by.as_deref())
                .bind(import.now);
            for (email, roles) in fresh {
                insert = insert.bind(email).bind(roles);
            }
            counts.added += insert.execute(&mut *tx).await?.rows_affected();
        }
        Ok(counts)
    }

    /// One job per bucket, in the writer's next group commit.
    async fn hit_rate_limits(
        &self,
        buckets: &[&str],
        window_secs: i64,
        now: i64,
    ) -> StoreResult<Vec<RateWindow>> {
        futures_util::future::try_join_all(buckets.iter().map(|bucket| {
            let hit = Hit {
                bucket: (*bucket).to_owned(),
                window_secs,
                now,
            };
            self.writer.submit(|reply| Job::Hit(hit, reply))
        }))
        .await
    }

    /// In the writer's next group commit, eligibility checked inside it.
    async fn request_link(
        &self,
        link: NewMagicLink,
        mail: NewMail,
        audit: LinkAudit,
    ) -> StoreResult<bool> {
        let request = Box::new(LinkRequest { link, mail, audit });
        self.writer.submit(|reply| Job::Link(request, reply)).await
    }

    /// In the writer's next group commit.
    async fn redeem_for_returning_member(
        &self,
        token_hash: &TokenHash,
        session: &NewSession,
        now: i64,
    ) -> StoreResult<Option<Redeemed>> {
        let redemption = Redemption {
            token_hash: token_hash.as_str().to_owned(),
            now,
            session_id: session.id.clone(),
            ip: session.ip.clone(),
            device: session.device.clone(),
            refresh_id: session.refresh.id.clone(),
            refresh_hash: session.refresh.token_hash.as_str().to_owned(),
            refresh_expires_at: session.refresh.expires_at,
            audit_details: sign_in_details(session, false).to_string(),
        };
        self.writer
            .submit(|reply| Job::Redemption(redemption, reply))
            .await
    }

    /// One script: claim, insert the successor, commit.
    async fn claim_refresh_token(
        &self,
        presented: &TokenHash,
        next: &NewRefreshToken,
        now: i64,
    ) -> StoreResult<Option<(String, String)>> {
        static SCRIPT: LazyLock<String> = LazyLock::new(|| {
            format!(
                "BEGIN; {}; {}; COMMIT",
                *CLAIM_REFRESH,
                insert_next_refresh("refresh_tokens WHERE token_hash = $1 AND replaced_by = $2")
            )
        });
        let script = sqlx::query(&SCRIPT)
            .bind(presented.as_str())
            .bind(next.id.as_str())
            .bind(now)
            .bind(next.token_hash.as_str())
            .bind(next.expires_at);
        let mut conn = self.writer.lock().await?;
        let rows = self.writer.script(&mut conn, script, false).await?;
        // Statement 0 is BEGIN.
        first_row(&rows, 1)
    }
}
