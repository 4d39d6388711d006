//! Postgres, for when one machine is not enough: several instances share one
//! database, and with it the outbox, rate limits and session revocations.
//!
//! Postgres takes concurrent writers itself, so `writer` and `reader` are the same
//! pool; they stay separate fields so that a read replica can be slotted in later
//! without touching the shared SQL in `portable.rs`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::api_keys::{KeyMemberRow, fold_key, impl_api_key_store, key_member_columns};
use super::audit::impl_audit_store;
use super::cache::Freshness;
use super::change_notices::ChangeNotices;
use super::coalesce::{Coalescer, Fetch};
use super::members_sql::impl_member_store;
use super::portable::{
    MemberRoleRow, fold_member, impl_store, insert_audit, load_member, revoke_session_in,
};
use super::roster_sql::impl_roster_store;
use super::*;
use crate::domain::{MemberStatus, Role};

impl_member_store!(PostgresStore);
impl_roster_store!(
    PostgresStore,
    write_import_chunk_unnest,
    super::roster::IMPORT_CHUNK,
    lock_roster_writers
);
impl_api_key_store!(PostgresStore);
impl_audit_store!(PostgresStore);

/// How long a request waits for a connection before it gets a 503. Short, so that
/// a database outage answers quickly instead of piling up hanging requests;
/// long enough to ride out a burst that has every connection busy.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Idle connections are closed after this, so a quiet instance does not hold
/// connections that other instances could use.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

pub struct PostgresStore {
    writer: PgPool,
    reader: PgPool,
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
type SessionKey = (String, String, i64);

#[derive(sqlx::FromRow)]
struct NumberedMemberRow {
    i: i64,
    #[sqlx(flatten)]
    row: MemberRoleRow,
}

#[derive(sqlx::FromRow)]
struct NumberedKeyRow {
    i: i64,
    #[sqlx(flatten)]
    row: KeyMemberRow,
}

/// A batch of keys with their members, `None` for each unknown id.
fn keys_with_members(pool: PgPool) -> Fetch<(String, i64), Option<ApiKeyRecord>> {
    Box::new(move |keys: Vec<(String, i64)>| {
        let pool = pool.clone();
        Box::pin(async move {
            let (ids, nows): (Vec<String>, Vec<i64>) = keys.into_iter().unzip();
            let rows: Vec<NumberedKeyRow> = sqlx::query_as(concat!(
                "SELECT q.i, ",
                key_member_columns!(),
                " FROM UNNEST($1::text[], $2::bigint[]) WITH ORDINALITY AS q(key_id, now, i) ",
                "JOIN api_keys k ON k.id = q.key_id JOIN members m ON m.id = k.member_id ",
                "LEFT JOIN member_roles r ON r.member_id = m.id AND (r.expires_at IS NULL OR r.expires_at > q.now) ",
                "ORDER BY q.i, r.role"
            ))
            .bind(&ids)
            .bind(&nows)
            .fetch_all(&pool)
            .await?;
            let mut grouped: Vec<Vec<KeyMemberRow>> = ids.iter().map(|_| Vec::new()).collect();
            for NumberedKeyRow { i, row } in rows {
                numbered_slot(&mut grouped, i)?.push(row);
            }
            ids.iter()
                .zip(grouped)
                .map(|(id, rows)| fold_key(id, rows))
                .collect()
        })
    })
}

/// The slot of row number `i` (1-based, from `WITH ORDINALITY`).
fn numbered_slot<T>(slots: &mut [Vec<T>], i: i64) -> StoreResult<&mut Vec<T>> {
    usize::try_from(i - 1)
        .ok()
        .and_then(|i| slots.get_mut(i))
        .ok_or_else(|| StoreError::Corrupt(format!("batched lookup row {i}")))
}

/// The members behind a batch of sessions, `None` for each that is not live
/// (revoked, unknown, or its member not active).
fn live_sessions(pool: PgPool) -> Fetch<SessionKey, Option<Member>> {
    Box::new(move |keys: Vec<SessionKey>| {
        let pool = pool.clone();
        Box::pin(async move {
            let n = keys.len();
            let (mut members, mut sessions, mut nows) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for (member, session, now) in keys {
                members.push(member);
                sessions.push(session);
                nows.push(now);
            }
            let rows: Vec<NumberedMemberRow> = sqlx::query_as(
                "SELECT q.i, m.id, m.email, m.status, m.created_at, m.last_login_at, r.role \
                 FROM UNNEST($1::text[], $2::text[], $3::bigint[]) WITH ORDINALITY AS q(member_id, session_id, now, i) \
                 JOIN sessions s ON s.id = q.session_id AND s.member_id = q.member_id AND s.revoked_at IS NULL \
                 JOIN members m ON m.id = q.member_id AND m.status = 'active' \
                 LEFT JOIN member_roles r ON r.member_id = m.id AND (r.expires_at IS NULL OR r.expires_at > q.now) \
                 ORDER BY q.i, r.role",
            )
            .bind(&members)
            .bind(&sessions)
            .bind(&nows)
            .fetch_all(&pool)
            .await?;
            let mut grouped: Vec<Vec<MemberRoleRow>> = (0..n).map(|_| Vec::new()).collect();
            for NumberedMemberRow { i, row } in rows {
                numbered_slot(&mut grouped, i)?.push(row);
            }
            grouped.into_iter().map(fold_member).collect()
        })
    })
}

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
        Ok(Self {
            _notices: ChangeNotices::start(options, freshness.clone()),
            freshness,
            sessions: Coalescer::new(live_sessions(pool.clone())),
            keys: Coalescer::new(keys_with_members(pool.clone())),
            writer: pool.clone(),
            reader: pool,
            counters,
        })
    }

    /// What a read cache in front of this store may serve.
    pub fn freshness(&self) -> Arc<Freshness> {
        self.freshness.clone()
    }

    /// The member behind a live session, looked up together with the other
    /// requests' sessions (`coalesce.rs`).
    pub(super) async fn live_session_member(
        &self,
        member_id: &MemberId,
        session_id: &str,
        now: i64,
    ) -> StoreResult<Option<Member>> {
        self.sessions
            .get((member_id.as_str().to_owned(), session_id.to_owned(), now))
            .await
    }

    /// A key with its member, looked up together with the other requests' keys.
    pub(super) async fn api_key_record(
        &self,
        id: &str,
        now: i64,
    ) -> StoreResult<Option<ApiKeyRecord>> {
        self.keys.get((id.to_owned(), now)).await
    }

    /// One multi-row upsert for all of a request's buckets: one round trip.
    /// A bucket named twice is counted once (Postgres refuses to update one row
    /// twice in a statement).
    pub(super) async fn count_hits(
        &self,
        buckets: &[&str],
        window_secs: i64,
        now: i64,
    ) -> StoreResult<Vec<RateWindow>> {
        if buckets.is_empty() {
            return Ok(Vec::new());
        }
        let mut distinct: Vec<&str> = buckets.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        let values: Vec<String> = (0..distinct.len())
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
        let mut query = sqlx::query_as::<_, (String, i64, i64)>(&sql)
            .bind(now)
            .bind(now - window_secs);
        for bucket in &distinct {
            query = query.bind(*bucket);
        }
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

    /// A connection for writing: any of the pool's, as Postgres takes concurrent writers.
    pub(super) async fn write(&self) -> StoreResult<sqlx::pool::PoolConnection<sqlx::Postgres>> {
        Ok(self.writer.acquire().await?)
    }
}

impl_store!(PostgresStore, {
    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR.run(&self.writer).await?;
        Ok(())
    }

    /// `FOR UPDATE SKIP LOCKED` makes concurrent claims from several instances
    /// take disjoint rows: a row another worker is leasing is skipped, and a row
    /// leased a moment ago is re-checked against `next_attempt_at` once its lock
    /// is free (Postgres re-evaluates the WHERE clause on the newest version), so
    /// no mail is claimed, and sent, twice.
    async fn claim_due_mail(
        &self,
        now: i64,
        lease_secs: i64,
        limit: i64,
    ) -> StoreResult<Vec<OutboxMail>> {
        let claimed: Vec<OutboxMail> = sqlx::query_as(
            "UPDATE outbox SET next_attempt_at = $2 WHERE id IN ( \
               SELECT id FROM outbox WHERE status = 'queued' AND next_attempt_at <= $1 \
               ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
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
