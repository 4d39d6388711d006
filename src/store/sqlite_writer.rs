//! SQLite's one writer connection, and the two ways it is kept short of round trips.
//!
//! Every statement sent to a sqlx SQLite connection is a round trip to that
//! connection's own thread, and on the single writer those round trips (with
//! each transaction's WAL pages) are what every other write waits behind. So:
//!
//! - **Scripts.** A business operation sends its statements as one script,
//!   `BEGIN` and `COMMIT` included: one round trip instead of one per statement
//!   ([`Writer::script`]).
//! - **Group commit.** The busiest writes (sign-in link requests, rate-limit
//!   hits, and links redeemed by returning members) are queued and committed
//!   many to a transaction by a flusher task ([`Writer::insert_magic_link`],
//!   [`Writer::hit_rate_limit`], [`Writer::redeem_for_returning_member`]): one
//!   round trip and one set of WAL pages for the whole queue, instead of one each.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::sqlite::{SqliteArguments, SqliteConnection, SqliteRow};
use sqlx::{Either, Sqlite};
use tokio::sync::{Mutex, MutexGuard};

use super::coalesce::Waiting;
use super::sqlite_groups::{Hit, NewLink, Redemption};
use super::{AuditEntry, NewMagicLink, NewMail, RateWindow, StoreError, StoreResult};

/// How long a write waits for the writer before the request gets a 503.
const WRITER_TIMEOUT: Duration = Duration::from_secs(10);

/// Jobs committed in one transaction at most; bounds a script's size (a link
/// takes 22 parameters, far below SQLite's limit of 32,766) and the statements
/// cached for it (one per batch size).
const MAX_BATCH: usize = 64;

/// The rows each statement of a script returned, in statement order.
pub(super) type ScriptRows = Vec<Vec<SqliteRow>>;

/// The first row statement `index` of a script returned, decoded.
pub(super) fn first_row<T>(rows: &ScriptRows, index: usize) -> StoreResult<Option<T>>
where
    T: for<'r> sqlx::FromRow<'r, SqliteRow>,
{
    Ok(rows
        .get(index)
        .and_then(|rows| rows.first())
        .map(T::from_row)
        .transpose()?)
}

pub(super) struct Writer {
    conn: Mutex<SqliteConnection>,
    /// Set while a script's transaction may be open. Only touched with `conn`
    /// locked; still set when the next write takes the lock means the request
    /// running the script was cancelled midway.
    script_open: AtomicBool,
    pub(super) links: Queue<NewLink>,
    pub(super) hits: Queue<Hit>,
    pub(super) redemptions: Queue<Redemption>,
}

impl Writer {
    pub fn new(conn: SqliteConnection) -> Arc<Self> {
        Arc::new(Self {
            conn: Mutex::new(conn),
            script_open: AtomicBool::new(false),
            links: Queue::default(),
            hits: Queue::default(),
            redemptions: Queue::default(),
        })
    }

    /// The connection, once every earlier write is done.
    pub async fn lock(&self) -> StoreResult<MutexGuard<'_, SqliteConnection>> {
        let mut conn = tokio::time::timeout(WRITER_TIMEOUT, self.conn.lock())
            .await
            .map_err(|_| StoreError::Unavailable("the database writer is busy".into()))?;
        if self.script_open.swap(false, Ordering::Relaxed) {
            // A cancelled request left its script's transaction open (or did not,
            // when it was cancelled after COMMIT: then this fails, harmlessly).
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        }
        Ok(conn)
    }

    /// Runs `script`, several `;`-separated statements, in one round trip to the
    /// writer's thread, and returns each statement's rows.
    ///
    /// A script is one part of a transaction: it may `BEGIN`, end with `COMMIT`,
    /// or both; `leaves_open` says whether the transaction is still open after it
    /// succeeded. On any error the transaction is rolled back, so a failed script
    /// changes nothing. `$N` parameters are numbered across the whole script,
    /// and `?` parameters take the arguments in order across it.
    pub async fn script<'q>(
        &self,
        conn: &mut SqliteConnection,
        script: sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>,
        leaves_open: bool,
    ) -> StoreResult<ScriptRows> {
        self.script_open.store(true, Ordering::Relaxed);
        let mut statements = ScriptRows::new();
        let mut rows = Vec::new();
        // Through `Executor` rather than the deprecated `Query::fetch_many`: the
        // behaviour relied on (sqlx-sqlite prepares every statement of the string
        // and binds parameters across them) is the SQLite driver's own, which its
        // migrations use too. The sign-in tests fail if it ever changes.
        let mut results = sqlx::Executor::fetch_many(&mut *conn, script);
        // A statement's rows arrive first, then its result.
        let outcome = loop {
            match results.try_next().await {
                Ok(Some(Either::Right(row))) => rows.push(row),
                Ok(Some(Either::Left(_done))) => statements.push(std::mem::take(&mut rows)),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        drop(results);
        match outcome {
            Ok(()) => {
                self.script_open.store(leaves_open, Ordering::Relaxed);
                Ok(statements)
            }
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                self.script_open.store(false, Ordering::Relaxed);
                Err(e.into())
            }
        }
    }

    /// Stores a sign-in link with its mail and audit row, committed together
    /// with whichever other links are waiting for the writer.
    pub async fn insert_magic_link(
        self: &Arc<Self>,
        link: NewMagicLink,
        mail: NewMail,
        audit: AuditEntry,
    ) -> StoreResult<()> {
        self.submit(NewLink { link, mail, audit }).await
    }

    /// Counts one hit against a rate-limit bucket, committed together with the
    /// other hits waiting for the writer; the bucket's window after the hit.
    pub async fn hit_rate_limit(
        self: &Arc<Self>,
        bucket: &str,
        window_secs: i64,
        now: i64,
    ) -> StoreResult<RateWindow> {
        self.submit(Hit {
            bucket: bucket.to_owned(),
            window_secs,
            now,
        })
        .await
    }

    /// Redeems a link of a returning, active member, committed together with the
    /// other redemptions waiting for the writer: consumes the link, stamps the
    /// member and opens the session. `None` when the link is not one of those
    /// (unknown, used, expired, or its member is new or may not sign in): then
    /// nothing was changed and the caller takes the general path.
    pub async fn redeem_for_returning_member(
        self: &Arc<Self>,
        redemption: Redemption,
    ) -> StoreResult<Option<(String, Option<String>)>> {
        self.submit(redemption).await
    }

    /// Queues `job` and waits for the transaction that commits it.
    ///
    /// The commit runs on a flusher task, not on the caller, so a request that is
    /// cancelled while waiting neither loses nor half-writes anyone's job. A
    /// failed batch fails every job in it: grouped jobs cannot fail on their own
    /// (fresh random keys, upserts), so a failure is the database's.
    async fn submit<J: Grouped>(self: &Arc<Self>, job: J) -> StoreResult<J::Output> {
        let (committed, start_flusher) = J::queue(self).push(job);
        if start_flusher {
            tokio::spawn(self.clone().flush::<J>());
        }
        committed.get().await
    }

    /// Commits waiting jobs of one kind, a batch per transaction, until none wait.
    /// The writer is taken first, so a batch holds everything queued meanwhile.
    async fn flush<J: Grouped>(self: Arc<Self>) {
        loop {
            let conn = self.lock().await;
            let Some((jobs, replies)) = J::queue(&self).take(MAX_BATCH) else {
                return;
            };
            let outcome = match conn {
                Ok(mut conn) => {
                    let sql = J::script(jobs.len());
                    let script = J::bind(&jobs, sqlx::query(&sql));
                    match self.script(&mut conn, script, false).await {
                        Ok(rows) => J::outputs(&jobs, rows),
                        Err(error) => Err(error),
                    }
                }
                Err(error) => Err(error),
            };
            replies.send(outcome);
        }
    }
}

/// Jobs of one kind waiting for the writer.
pub(super) type Queue<J> = Waiting<J, <J as Grouped>::Output>;

/// A kind of write that is committed in groups.
pub(super) trait Grouped: Sized + Send + 'static {
    type Output: Send + 'static;
    fn queue(writer: &Writer) -> &Queue<Self>;
    /// The script for `n` jobs, `BEGIN` to `COMMIT`, with `?` parameters.
    fn script(n: usize) -> String;
    fn bind<'q>(batch: &'q [Self], script: Script<'q>) -> Script<'q>;
    /// Each job's result, in order, from the script's rows.
    fn outputs(batch: &[Self], rows: ScriptRows) -> StoreResult<Vec<Self::Output>>;
}

pub(super) type Script<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SqliteStore, Store};

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        let store = SqliteStore::connect(&url, 2).await.unwrap();
        store.migrate().await.unwrap();
        (dir, store)
    }

    async fn buckets(writer: &Writer) -> Vec<(String, i64)> {
        sqlx::query_as("SELECT bucket, hits FROM rate_limits ORDER BY bucket")
            .fetch_all(&mut *writer.lock().await.unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_failing_script_changes_nothing_and_leaves_no_transaction_open() {
        let (_dir, store) = store().await;
        let writer = &store.writer;
        let mut conn = writer.lock().await.unwrap();
        let failing = sqlx::query(
            "BEGIN; INSERT INTO rate_limits (bucket, window_start, hits) VALUES ('a', 0, 1); \
             INSERT INTO rate_limits (bucket, window_start, hits) VALUES ('a', 0, 1); COMMIT",
        );
        assert!(writer.script(&mut conn, failing, false).await.is_err());
        let next = sqlx::query(
            "BEGIN; INSERT INTO rate_limits (bucket, window_start, hits) VALUES ('b', 0, 1); COMMIT",
        );
        writer.script(&mut conn, next, false).await.unwrap();
        drop(conn);
        assert_eq!(buckets(writer).await, vec![("b".to_owned(), 1)]);
    }

    #[tokio::test]
    async fn a_transaction_abandoned_between_scripts_is_rolled_back_by_the_next_write() {
        let (_dir, store) = store().await;
        let writer = &store.writer;
        let mut conn = writer.lock().await.unwrap();
        let opening = sqlx::query(
            "BEGIN; INSERT INTO rate_limits (bucket, window_start, hits) VALUES ('a', 0, 1)",
        );
        writer.script(&mut conn, opening, true).await.unwrap();
        // The request is cancelled here: its guard goes, its COMMIT never comes.
        drop(conn);
        assert_eq!(buckets(writer).await, vec![]);
        let mut conn = writer.lock().await.unwrap();
        let next = sqlx::query(
            "BEGIN; INSERT INTO rate_limits (bucket, window_start, hits) VALUES ('b', 0, 1); COMMIT",
        );
        writer.script(&mut conn, next, false).await.unwrap();
        drop(conn);
        assert_eq!(buckets(writer).await, vec![("b".to_owned(), 1)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grouped_hits_on_one_bucket_count_one_by_one() {
        let (_dir, store) = store().await;
        let hits = futures_util::future::try_join_all(
            (0..200).map(|_| store.writer.hit_rate_limit("ip:192.0.2.1", 60, 1_000)),
        )
        .await
        .unwrap();
        let mut counts: Vec<i64> = hits.iter().map(|w| w.count).collect();
        counts.sort_unstable();
        assert_eq!(counts, (1..=200).collect::<Vec<_>>());
        assert!(hits.iter().all(|w| w.resets_at == 1_060));
        assert_eq!(
            buckets(&store.writer).await,
            vec![("ip:192.0.2.1".to_owned(), 200)]
        );
    }
}
