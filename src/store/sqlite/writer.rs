//! SQLite's one writer connection, and the two ways it is kept short of round trips.
//!
//! Every statement sent to a sqlx SQLite connection is a round trip to that
//! connection's own thread, and on the single writer those round trips (with
//! each transaction's WAL pages) are what every other write waits behind. So:
//!
//! - **Scripts.** A hot operation sends its statements as one script, `BEGIN`
//!   and `COMMIT` included: one round trip instead of one per statement
//!   ([`Writer::script`]).
//! - **Group commit.** The busiest writes (sign-in link requests, rate-limit
//!   hits, and links redeemed by returning members) are queued as [`Job`]s and
//!   committed many to a transaction by a flusher task: one round trip and one
//!   set of WAL pages for the whole queue, instead of one each. What each kind
//!   of job writes is in `jobs.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::Either;
use sqlx::sqlite::SqliteConnection;
use tokio::sync::{Mutex, MutexGuard};

use super::jobs::{Grouped, Hit, LinkRequest, Redemption};
use super::script::{Script, ScriptRows};
use crate::store::backend::Redeemed;
use crate::store::batching::{Reply, Waiting, answer_all, reply};
use crate::store::{RateWindow, StoreError, StoreResult};

/// How long a write waits for the writer before the request gets a 503.
const WRITER_TIMEOUT: Duration = Duration::from_secs(10);

/// Jobs committed in one flush at most; bounds a script's size (a link
/// request takes 24 parameters, far below SQLite's limit of 32,766) and the
/// statements cached for it (one per kind and batch size).
const MAX_BATCH: usize = 64;

/// Counts one waiting write for as long as it lives (also when the wait is cancelled).
struct Waiter<'a>(&'a AtomicU32);

impl<'a> Waiter<'a> {
    fn new(count: &'a AtomicU32) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A write waiting for the next group commit, with where its answer goes.
pub enum Job {
    /// Boxed: a link request is several times the size of the others.
    Link(Box<LinkRequest>, Reply<bool>),
    Hit(Hit, Reply<RateWindow>),
    Redemption(Redemption, Reply<Option<Redeemed>>),
}

pub struct Writer {
    conn: Mutex<SqliteConnection>,
    /// Set while a transaction may be open. Only touched with `conn` locked;
    /// still set when the next write takes the lock means the request that
    /// opened it was cancelled midway, or dropped it unfinished.
    open: AtomicBool,
    waiting: Waiting<Job>,
    /// Writes waiting for the connection, for the pool gauges.
    waiters: AtomicU32,
}

impl Writer {
    pub fn new(conn: SqliteConnection) -> Arc<Self> {
        Arc::new(Self {
            conn: Mutex::new(conn),
            open: AtomicBool::new(false),
            waiting: Waiting::default(),
            waiters: AtomicU32::new(0),
        })
    }

    /// The connection, once every earlier write is done.
    pub async fn lock(&self) -> StoreResult<MutexGuard<'_, SqliteConnection>> {
        let waiting = Waiter::new(&self.waiters);
        let locked = tokio::time::timeout(WRITER_TIMEOUT, self.conn.lock()).await;
        drop(waiting);
        let mut conn =
            locked.map_err(|_| StoreError::Unavailable("the database writer is busy".into()))?;
        if self.open.swap(false, Ordering::Relaxed) {
            // An abandoned transaction (or none, when it was abandoned after
            // COMMIT: then this fails, harmlessly).
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        }
        Ok(conn)
    }

    /// Whether the connection is in use, and how many writes wait for it.
    pub fn stats(&self) -> (bool, u32) {
        (
            self.conn.try_lock().is_err(),
            self.waiters.load(Ordering::Relaxed),
        )
    }

    /// Marks a transaction open on the locked connection: if its guard is
    /// dropped before [`Writer::closed`], the next [`Writer::lock`] rolls it back.
    pub fn opened(&self) {
        self.open.store(true, Ordering::Relaxed);
    }

    /// The transaction opened on the locked connection has ended.
    pub fn closed(&self) {
        self.open.store(false, Ordering::Relaxed);
    }

    /// Runs `script`, several `;`-separated statements, in one round trip to the
    /// writer's thread, and returns each statement's rows.
    ///
    /// A script is one part of a transaction: it may `BEGIN`, end with `COMMIT`,
    /// or both; `leaves_open` says whether the transaction is still open after it
    /// succeeded. On any error the transaction is rolled back, so a failed script
    /// changes nothing.
    pub async fn script<'q>(
        &self,
        conn: &mut SqliteConnection,
        script: Script<'q>,
        leaves_open: bool,
    ) -> StoreResult<ScriptRows> {
        self.opened();
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
                self.open.store(leaves_open, Ordering::Relaxed);
                Ok(statements)
            }
            Err(e) => {
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                self.closed();
                Err(e.into())
            }
        }
    }

    /// Queues `job` for the next group commit and waits for its answer.
    pub async fn submit<V>(self: &Arc<Self>, job: impl FnOnce(Reply<V>) -> Job) -> StoreResult<V> {
        let (reply, answer) = reply();
        if self.waiting.push(job(reply)) {
            tokio::spawn(self.clone().flush());
        }
        answer.get().await
    }

    /// Commits waiting jobs, each kind in a transaction of its own, until none
    /// wait. The writer is taken first, so a flush holds everything queued meanwhile.
    async fn flush(self: Arc<Self>) {
        loop {
            let conn = self.lock().await;
            let Some(jobs) = self.waiting.take(MAX_BATCH) else {
                return;
            };
            let (mut links, mut hits, mut redemptions) = (Vec::new(), Vec::new(), Vec::new());
            for job in jobs {
                match job {
                    Job::Link(job, reply) => links.push((*job, reply)),
                    Job::Hit(job, reply) => hits.push((job, reply)),
                    Job::Redemption(job, reply) => redemptions.push((job, reply)),
                }
            }
            match conn {
                Ok(mut conn) => {
                    self.commit_group(&mut conn, links).await;
                    self.commit_group(&mut conn, hits).await;
                    self.commit_group(&mut conn, redemptions).await;
                }
                Err(error) => {
                    fail_group(links, &error);
                    fail_group(hits, &error);
                    fail_group(redemptions, &error);
                }
            }
        }
    }

    /// Commits one kind's jobs in one script and answers each. A failed script
    /// fails every job in it: grouped jobs cannot fail on their own (fresh
    /// random keys, upserts), so a failure is the database's.
    async fn commit_group<J: Grouped>(
        &self,
        conn: &mut SqliteConnection,
        group: Vec<(J, Reply<J::Output>)>,
    ) {
        if group.is_empty() {
            return;
        }
        let (jobs, replies): (Vec<J>, Vec<_>) = group.into_iter().unzip();
        let sql = J::script(jobs.len());
        let script = J::bind(&jobs, sqlx::query(&sql));
        let outcome = match self.script(conn, script, false).await {
            Ok(rows) => J::outputs(&jobs, rows),
            Err(error) => Err(error),
        };
        answer_all(replies, outcome);
    }
}

fn fail_group<J: Grouped>(group: Vec<(J, Reply<J::Output>)>, error: &StoreError) {
    for (_, reply) in group {
        let _ = reply.send(Err(error.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{SignInStore, Store};

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
        let writer = &store.backend().writer;
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
        let writer = &store.backend().writer;
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

    #[tokio::test]
    async fn a_transaction_dropped_without_commit_is_rolled_back_by_the_next_write() {
        use crate::store::Backend;
        let (_dir, store) = store().await;
        let backend = store.backend();
        let mut tx = backend.begin().await.unwrap();
        sqlx::query("INSERT INTO rate_limits (bucket, window_start, hits) VALUES ('a', 0, 1)")
            .execute(&mut *tx)
            .await
            .unwrap();
        drop(tx);
        assert_eq!(buckets(&backend.writer).await, vec![]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grouped_hits_on_one_bucket_count_one_by_one() {
        let (_dir, store) = store().await;
        let hits = futures_util::future::try_join_all(
            (0..200).map(|_| store.hit_rate_limit("ip:192.0.2.1", 60, 1_000)),
        )
        .await
        .unwrap();
        let mut counts: Vec<i64> = hits.iter().map(|w| w.count).collect();
        counts.sort_unstable();
        assert_eq!(counts, (1..=200).collect::<Vec<_>>());
        assert!(hits.iter().all(|w| w.resets_at == 1_060));
        assert_eq!(
            buckets(&store.backend().writer).await,
            vec![("ip:192.0.2.1".to_owned(), 200)]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grouped_link_requests_store_links_only_for_eligible_addresses_each_answered_alone() {
        use crate::domain::{Email, TokenHash};
        use crate::store::{AuditEntry, AuditFilter, AuditStore, NewMagicLink, NewMail};
        let (_dir, store) = store().await;
        sqlx::query(
            "INSERT INTO eligible_emails (email, batch_id, roles, created_at) \
             SELECT 'in' || value || '@example.org', 't', '', 0 FROM json_each('[0,1,2,3,4,5,6,7,8,9]')",
        )
        .execute(&mut *store.backend().writer.lock().await.unwrap())
        .await
        .unwrap();
        let request = |address: String, i: usize| {
            let email = Email::parse(&address).unwrap();
            let token = TokenHash::of(format!("token {i}").as_bytes());
            let link = NewMagicLink {
                token_hash: token.clone(),
                email: email.clone(),
                code_hash: TokenHash::of(b"code"),
                redirect_to: None,
                created_at: 100,
                expires_at: 700,
                ip: None,
                device: None,
            };
            let mail = NewMail {
                id: format!("mail-{i}"),
                kind: "sign_in",
                recipient: address.clone(),
                subject: "Sign in".into(),
                sealed_body: "sealed".into(),
                created_at: 100,
                expires_at: Some(700),
            };
            let audit = AuditEntry::new("auth.link_requested").target(address);
            store.create_magic_link(link, mail, audit)
        };
        let answers = futures_util::future::try_join_all((0..20).map(|i| {
            let address = if i % 2 == 0 {
                format!("in{}@example.org", i / 2)
            } else {
                format!("out{i}@example.org")
            };
            request(address, i)
        }))
        .await
        .unwrap();
        let expected: Vec<bool> = (0..20).map(|i| i % 2 == 0).collect();
        assert_eq!(answers, expected);
        let mut conn = store.backend().writer.lock().await.unwrap();
        let (links,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM magic_links")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        let (mails,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE recipient LIKE 'in%'")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        let (stray,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE recipient LIKE 'out%'")
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        drop(conn);
        assert_eq!((links, mails, stray), (10, 10, 0));
        let filter = AuditFilter {
            action: Some("auth.link_requested".into()),
            limit: 100,
            ..AuditFilter::default()
        };
        let rows = store.list_audit(&filter).await.unwrap();
        assert_eq!(rows.len(), 20);
        for row in rows {
            let details: serde_json::Value = serde_json::from_str(&row.details).unwrap();
            let eligible = row.target.as_deref().unwrap().starts_with("in");
            assert_eq!(details["eligible"], eligible, "{row:?}");
        }
    }
}
