//! Postgres, for when one machine is not enough: several instances share one
//! database, and with it the outbox, rate limits and session revocations.
//!
//! Postgres takes concurrent writers itself, so reads and writes share one
//! pool. Its extended protocol takes one statement per message, so the hot
//! paths are each one statement of data-modifying CTEs (one round trip,
//! atomic on its own), and the per-request lookups of concurrent requests are
//! folded into one query (`coalesce.rs`).

mod change_notices;
mod coalesce;
mod executor;
mod lookups;

use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use sqlx::Connection;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use self::change_notices::ChangeNotices;
use self::coalesce::Coalescer;
use self::lookups::{keys_with_members, live_sessions};
use super::audit::AUDIT_COLUMNS;
use super::backend::{Backend, LinkAudit, Redeemed, SqlStore};
use super::cache::Freshness;
use super::outbox::OUTBOX_INSERT_COLUMNS;
use super::roster::IMPORT_CHUNK;
use super::schema;
use super::sessions::{CLAIM_REFRESH, insert_next_refresh};
use super::sign_in::sign_in_details;
use super::{
    ApiKeyRecord, EligibleEntry, NewMagicLink, NewMail, NewRefreshToken, NewSession, RateWindow,
    RosterImport, StoreError, StoreResult, UpsertCounts,
};
use crate::domain::{Member, MemberId, Role, TokenHash};

pub type PostgresStore = SqlStore<Postgres>;

/// How long a request waits for a connection before it gets a 503. Short, so that
/// a database outage answers quickly instead of piling up hanging requests;
/// long enough to ride out a burst that has every connection busy.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Idle connections are closed after this, so a quiet instance does not hold
/// connections that other instances could use.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The advisory lock Postgres imports hold for their whole transaction: one
/// import writes to the allowlist at a time, which keeps `added` exact and
/// lets chunks be inserted without `ON CONFLICT`.
const ROSTER_LOCK: i64 = 0x6761_7465_686f_7573; // "gatehous"

/// The advisory lock an instance holds for a housekeeping round, so that one
/// instance prunes at a time and the others skip the round.
pub const HOUSEKEEPING_LOCK: i64 = 0x6761_7465_6b65_6570; // "gatekeep"

pub struct Postgres {
    pool: PgPool,
    /// How to connect, for the housekeeping lock's own connection.
    options: PgConnectOptions,
    /// Connections with `synchronous_commit = off`, for rate-limit counters only.
    /// Every request from one address updates the same row, and a durable commit
    /// holds that row's lock through a WAL flush, so durable counting would
    /// serialise all of that address's requests on the disk. A crash may forget
    /// the last moments of hits, which only makes a limit briefly more lenient.
    counters: PgPool,
    /// Session checks of concurrent requests, sent as one query.
    sessions: Arc<Coalescer<SessionKey, Option<Member>>>,
    /// API-key lookups of concurrent requests, sent as one query.
    keys: Arc<Coalescer<(String, i64), Option<ApiKeyRecord>>>,
    /// What the read cache in front of this store may serve, kept up to date
    /// by `_notices` with the changes other instances commit.
    freshness: Arc<Freshness>,
    /// Held for its `Drop`: listening stops with the store.
    _notices: ChangeNotices,
}

/// A session check: member id, session id, and the time roles are live at.
pub type SessionKey = (String, String, i64);

/// The Postgres migrations.
///
/// Several instances may start at once and each runs the migrator. That is safe
/// without a lock of our own: sqlx-core 0.8.6's `Migrator::run_direct` (with
/// `locking: true`, the default) calls `Migrate::lock` before it even creates
/// `_sqlx_migrations`, and sqlx-postgres implements `lock` as
/// `SELECT pg_advisory_lock($1)` with an id derived from the database name, and
/// releases it with `pg_advisory_unlock` when done. The second instance waits,
/// then finds every migration applied (checksums compared) and does nothing.
/// On a failed migration the lock stays with that session until its connection
/// closes, which start-up failure does promptly.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl PostgresStore {
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)?.application_name("gatehouse");
        let counters = PgPoolOptions::new()
            .max_connections(max_connections.clamp(1, 4))
            .min_connections(0)
            .test_before_acquire(false)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(IDLE_TIMEOUT)
            .connect_lazy_with(options.clone().options([("synchronous_commit", "off")]));
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .min_connections(0)
            // A dead pooled connection costs one 503 and is dropped on release
            // (sqlx pings connections when they return to the pool); testing on
            // every acquire would add a round trip to every request instead.
            .test_before_acquire(false)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(IDLE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        let freshness = Freshness::shared();
        Ok(SqlStore::new(Postgres {
            _notices: ChangeNotices::start(options.clone(), freshness.clone()),
            options,
            freshness,
            sessions: Coalescer::new(live_sessions(pool.clone())),
            keys: Coalescer::new(keys_with_members(pool.clone())),
            pool,
            counters,
        }))
    }

    /// What a read cache in front of this store may serve.
    pub fn freshness(&self) -> Arc<Freshness> {
        self.backend.freshness.clone()
    }
}

impl Backend for Postgres {
    type Conn = PgConnection;
    type Reader = PgPool;
    type Tx<'a> = sqlx::Transaction<'static, sqlx::Postgres>;
    type Writer<'a> = PoolConnection<sqlx::Postgres>;

    fn reader(&self) -> PgPool {
        self.pool.clone()
    }

    async fn begin(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Postgres>> {
        Ok(self.pool.begin().await?)
    }

    async fn commit<'a>(tx: Self::Tx<'a>) -> StoreResult<()> {
        Ok(tx.commit().await?)
    }

    async fn rollback<'a>(tx: Self::Tx<'a>) -> StoreResult<()> {
        Ok(tx.rollback().await?)
    }

    async fn write(&self) -> StoreResult<PoolConnection<sqlx::Postgres>> {
        Ok(self.pool.acquire().await?)
    }

    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    fn pool_stats(&self) -> Vec<crate::metrics::PoolStats> {
        vec![
            super::backend::sqlx_pool_stats("main", &self.pool),
            super::backend::sqlx_pool_stats("counters", &self.counters),
        ]
    }

    /// Concurrent claims from several instances take disjoint rows: a row
    /// another worker is leasing is skipped, and a row leased a moment ago is
    /// re-checked against `next_attempt_at` once its lock is free (Postgres
    /// re-evaluates the WHERE clause on the newest version), so no mail is
    /// claimed, and sent, twice.
    const CLAIM_LOCK: &'static str = "FOR UPDATE SKIP LOCKED";

    /// A chunk is one `UNNEST` statement, whatever its size.
    const IMPORT_ROWS_PER_STATEMENT: usize = IMPORT_CHUNK;

    /// A session-level advisory lock, on a connection of its own outside the
    /// pool: the round's batches are separate transactions, so the lock must
    /// outlive each of them, and a pooled connection returned still holding
    /// it would keep every instance from pruning. A round that fails drops
    /// the connection, and the server ends the session with its lock.
    type HousekeepingLock = PgConnection;

    async fn try_lock_housekeeping(&self) -> StoreResult<Option<PgConnection>> {
        let mut conn = PgConnection::connect_with(&self.options).await?;
        let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(HOUSEKEEPING_LOCK)
            .fetch_one(&mut conn)
            .await?;
        if locked {
            return Ok(Some(conn));
        }
        conn.close().await?;
        Ok(None)
    }

    /// Unlocks before closing: the server ends a closed session's locks only
    /// once its process has noticed, and the next round may come sooner.
    async fn unlock_housekeeping(mut lock: PgConnection) -> StoreResult<()> {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(HOUSEKEEPING_LOCK)
            .execute(&mut lock)
            .await?;
        lock.close().await?;
        Ok(())
    }

    /// An advisory lock held until the import's transaction ends.
    async fn lock_roster(tx: &mut PgConnection) -> StoreResult<()> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(ROSTER_LOCK)
            .execute(tx)
            .await?;
        Ok(())
    }

    /// The addresses and roles travel as two arrays and `UNNEST` turns them
    /// into rows, so a chunk costs two parameters instead of two per row to
    /// parse and plan. New addresses go in first (their count is `added`); only
    /// when some were already listed does a second statement update those whose
    /// roles the upload changes. A fresh roster is therefore one statement per chunk.
    ///
    /// The insert is a plain `INSERT … WHERE NOT EXISTS`, not `ON CONFLICT DO
    /// NOTHING`: Postgres' speculative insertion costs about a third more per row
    /// (1M rows: 6.5 s against 4.8 s, measured in psql). That is safe because
    /// imports hold [`ROSTER_LOCK`], so no other import adds addresses
    /// meanwhile. The rare insert from elsewhere (onboarding, a starting
    /// instance's bootstrap admins) that races an import makes it fail with a
    /// unique violation, which is answered as "try again": nothing of the
    /// import is kept. Rows go in sorted by address (sorted here, off the
    /// database's critical path), so consecutive inserts land on the same pages
    /// of the primary-key index.
    async fn write_import_chunk(
        tx: &mut PgConnection,
        entries: &[EligibleEntry],
        import: &RosterImport,
    ) -> StoreResult<UpsertCounts> {
        let mut sorted: Vec<&EligibleEntry> = entries.iter().collect();
        sorted.sort_unstable_by(|a, b| a.email.as_str().cmp(b.email.as_str()));
        let emails: Vec<&str> = sorted.iter().map(|entry| entry.email.as_str()).collect();
        let roles: Vec<String> = sorted
            .iter()
            .map(|entry| Role::join(&entry.roles))
            .collect();
        let added = sqlx::query(
            "INSERT INTO eligible_emails (email, batch_id, roles, added_by, created_at) \
             SELECT u.email, $3, u.roles, $4, $5 FROM UNNEST($1::text[], $2::text[]) AS u(email, roles) \
             WHERE NOT EXISTS (SELECT 1 FROM eligible_emails e WHERE e.email = u.email)",
        )
        .bind(&emails)
        .bind(&roles)
        .bind(&import.batch_id)
        .bind(import.added_by.as_deref())
        .bind(import.now)
        .execute(&mut *tx)
        .await
        .map_err(raced_insert)?
        .rows_affected();
        let mut counts = UpsertCounts {
            added,
            ..UpsertCounts::default()
        };
        let listed = entries.len() as u64 - added;
        if listed > 0 {
            // The rows just inserted already hold their roles, so they do not match.
            let updated = sqlx::query(
                "UPDATE eligible_emails SET roles = u.roles \
                 FROM UNNEST($1::text[], $2::text[]) AS u(email, roles) \
                 WHERE eligible_emails.email = u.email AND u.roles <> '' AND eligible_emails.roles <> u.roles",
            )
            .bind(&emails)
            .bind(&roles)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            counts.updated = updated;
            counts.unchanged = listed - updated;
        }
        Ok(counts)
    }

    /// One multi-row upsert for all of a request's buckets, on the counters pool.
    async fn hit_rate_limits(
        &self,
        buckets: &[&str],
        window_secs: i64,
        now: i64,
    ) -> StoreResult<Vec<RateWindow>> {
        if buckets.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<String> = (0..buckets.len())
            .map(|i| format!("(${}, $1, 1)", i + 3))
            .collect();
        let sql = format!(
            "INSERT INTO rate_limits (bucket, window_start, hits) VALUES {} \
             ON CONFLICT (bucket) DO UPDATE SET \
               hits = CASE WHEN rate_limits.window_start <= $2 THEN 1 ELSE rate_limits.hits + 1 END, \
               window_start = CASE WHEN rate_limits.window_start <= $2 THEN $1 ELSE rate_limits.window_start END \
             RETURNING bucket, window_start, hits",
            values.join(", ")
        );
        let query = buckets.iter().fold(
            sqlx::query_as::<_, (String, i64, i64)>(&sql)
                .bind(now)
                .bind(now - window_secs),
            |query, bucket| query.bind(*bucket),
        );
        let rows = query.fetch_all(&self.counters).await?;
        buckets
            .iter()
            .map(|bucket| {
                rows.iter()
                    .find(|(name, _, _)| name == bucket)
                    .map(|&(_, window_start, hits)| RateWindow {
                        count: hits,
                        resets_at: window_start + window_secs,
                    })
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!("rate limit bucket {bucket} not returned"))
                    })
            })
            .collect()
    }

    /// One statement: the eligibility check, the link and its mail (only if
    /// eligible), and the audit row.
    async fn request_link(
        &self,
        link: NewMagicLink,
        mail: NewMail,
        audit: LinkAudit,
    ) -> StoreResult<bool> {
        // `$1..$7` the link, `$8..$14` its mail, `$15..$21` the audit row (`$19`
        // its details if eligible, `$21` if not), `$22` the link's device.
        static STATEMENT: LazyLock<String> = LazyLock::new(|| {
            format!(
                "WITH eligible AS (SELECT {} AS yes), link AS ( \
                   INSERT INTO magic_links (token_hash, email, code_hash, redirect_to, created_at, expires_at, ip, device) \
                   SELECT $1, $2, $3, $4, $5, $6, $7, $22 FROM eligible WHERE yes RETURNING token_hash \
                 ), mail AS ( \
                   INSERT INTO outbox ({OUTBOX_INSERT_COLUMNS}) \
                   SELECT $8, $9, $10, $11, $12, 'queued', $13, $13, $14 FROM link \
                 ), audit AS ( \
                   INSERT INTO audit_log ({AUDIT_COLUMNS}) \
                   SELECT $15, $5, $16, $17, $18, CASE WHEN yes THEN $19 ELSE $21 END, $20 FROM eligible \
                 ) SELECT yes FROM eligible",
                schema::eligible("$2"),
            )
        });
        let LinkAudit {
            entry,
            refused_details,
        } = audit;
        let (yes,): (bool,) = sqlx::query_as(&STATEMENT)
            .bind(link.token_hash.as_str())
            .bind(link.email.as_str())
            .bind(link.code_hash.as_str())
            .bind(link.redirect_to.as_deref())
            .bind(link.created_at)
            .bind(link.expires_at)
            .bind(link.ip.as_deref())
            .bind(&mail.id)
            .bind(mail.kind)
            .bind(&mail.recipient)
            .bind(&mail.subject)
            .bind(&mail.sealed_body)
            .bind(mail.created_at)
            .bind(mail.expires_at)
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(entry.actor.as_deref())
            .bind(entry.action)
            .bind(entry.target.as_deref())
            .bind(entry.details.to_string())
            .bind(entry.ip.as_deref())
            .bind(refused_details.to_string())
            .bind(link.device.as_deref())
            .fetch_one(&self.pool)
            .await?;
        Ok(yes)
    }

    /// One statement: consume the link if its member is active, stamp the
    /// member, open the session with its first refresh token, audit.
    async fn redeem_for_returning_member(
        &self,
        token_hash: &TokenHash,
        session: &NewSession,
        now: i64,
    ) -> StoreResult<Option<Redeemed>> {
        // `$1` the token hash, `$2` now, `$3` the session, `$4` the IP, `$5..$7`
        // the refresh token, `$8..$9` the audit row.
        static STATEMENT: LazyLock<String> = LazyLock::new(|| {
            format!(
                "WITH link AS ( \
                   UPDATE magic_links SET consumed_at = $2 WHERE token_hash = $1 AND {} \
                     AND EXISTS (SELECT 1 FROM members m WHERE m.email = magic_links.email AND {}) \
                   RETURNING email, redirect_to \
                 ), member AS ( \
                   UPDATE members SET last_login_at = $2 FROM link WHERE members.email = link.email \
                   RETURNING members.id \
                 ), session AS ( \
                   INSERT INTO sessions (id, member_id, created_at, ip, device) SELECT $3, id, $2, $4, $10 FROM member \
                 ), refresh AS ( \
                   INSERT INTO refresh_tokens (id, family_id, member_id, token_hash, created_at, expires_at) \
                   SELECT $5, $3, id, $6, $2, $7 FROM member \
                 ), audit AS ( \
                   INSERT INTO audit_log ({AUDIT_COLUMNS}) \
                   SELECT $8, $2, id, 'auth.signed_in', id, $9, $4 FROM member \
                 ) SELECT member.id, link.redirect_to FROM link, member",
                schema::live_link("magic_links", "$2"),
                schema::active("m"),
            )
        });
        let signed_in: Option<(String, Option<String>)> = sqlx::query_as(&STATEMENT)
            .bind(token_hash.as_str())
            .bind(now)
            .bind(&session.id)
            .bind(session.ip.as_deref())
            .bind(&session.refresh.id)
            .bind(session.refresh.token_hash.as_str())
            .bind(session.refresh.expires_at)
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(sign_in_details(session, false).to_string())
            .bind(session.device.as_deref())
            .fetch_optional(&self.pool)
            .await?;
        Ok(signed_in.map(|(member_id, redirect_to)| Redeemed {
            member_id,
            redirect_to,
            created: false,
        }))
    }

    /// As on SQLite, in one statement.
    async fn claim_refresh_token(
        &self,
        presented: &TokenHash,
        next: &NewRefreshToken,
        now: i64,
    ) -> StoreResult<Option<(String, String)>> {
        static STATEMENT: LazyLock<String> = LazyLock::new(|| {
            format!(
                "WITH claimed AS ({}) {} RETURNING family_id, member_id",
                *CLAIM_REFRESH,
                insert_next_refresh("claimed")
            )
        });
        Ok(sqlx::query_as(&STATEMENT)
            .bind(presented.as_str())
            .bind(&next.id)
            .bind(now)
            .bind(next.token_hash.as_str())
            .bind(next.expires_at)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Looked up together with the other requests' sessions (`coalesce.rs`).
    async fn session_member(
        &self,
        member_id: &MemberId,
        session_id: &str,
        now: i64,
    ) -> StoreResult<Option<Member>> {
        self.sessions
            .get((member_id.as_str().to_owned(), session_id.to_owned(), now))
            .await
    }

    /// Looked up together with the other requests' keys (`coalesce.rs`).
    async fn api_key(&self, id: &str, now: i64) -> StoreResult<Option<ApiKeyRecord>> {
        self.keys.get((id.to_owned(), now)).await
    }
}

/// A chunk insert that lost a race with an insert from outside the imports
/// (see [`Postgres::write_import_chunk`]): the upload may simply be sent again.
fn raced_insert(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Unavailable("the allowlist changed during the import; send it again".into())
        }
        _ => error.into(),
    }
}
