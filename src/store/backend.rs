//! The seam between the operations, written once in the area modules
//! (`sign_in.rs`, `sessions.rs`, `members.rs`, …), and the two databases.
//!
//! [`SqlStore`] is the store: every operation is a method of it, generic over a
//! [`Backend`]. A backend supplies connections and transactions, and the few
//! things that differ between SQLite and Postgres, each a named hook below:
//! claiming rows other workers hold, writing a chunk of an import, running
//! housekeeping on one instance at a time, and the hot paths, which each
//! backend does in one round trip its own way (SQLite queues them for the
//! writer's group commit, Postgres sends one statement of data-modifying CTEs
//! or folds concurrent lookups into one query).

use std::ops::DerefMut;
use std::sync::LazyLock;

use super::schema::{self, MemberRoleRow};
use super::sql::{Executor, query};
use super::{
    ApiKeyRecord, AuditEntry, EligibleEntry, NewMagicLink, NewMail, NewRefreshToken, NewSession,
    RateWindow, RosterImport, StoreResult, UpsertCounts,
};
use crate::domain::{Member, MemberId, TokenHash};
use crate::metrics::PoolStats;

/// The store: the operations of every area, over one backend.
pub struct SqlStore<B> {
    pub(super) backend: B,
}

impl<B: Backend> SqlStore<B> {
    pub fn new(backend: B) -> Self {
        Self { backend }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }
}

/// A sqlx pool's connections: open ones not idle are in use. sqlx does not
/// tell how many callers wait for one.
pub(super) fn sqlx_pool_stats<DB: sqlx::Database>(
    pool: &'static str,
    sqlx_pool: &sqlx::Pool<DB>,
) -> PoolStats {
    let size = sqlx_pool.size();
    let idle = u32::try_from(sqlx_pool.num_idle())
        .unwrap_or(u32::MAX)
        .min(size);
    PoolStats {
        pool,
        in_use: size - idle,
        idle,
        max: sqlx_pool.options().get_max_connections(),
        waiting: None,
    }
}

/// A link redeemed: the member it signed in, where to send them, and whether
/// this sign-in created the member.
#[derive(Debug, Clone)]
pub struct Redeemed {
    pub member_id: String,
    pub redirect_to: Option<String>,
    pub created: bool,
}

/// A link request's audit row. Its details depend on whether the address may
/// sign in, which the backend learns in the same step that writes the row, so
/// both versions come prepared (and both answers cost the same).
#[derive(Debug, Clone)]
pub struct LinkAudit {
    /// The row, with the details for an address that may sign in.
    pub entry: AuditEntry,
    /// The details instead, for an address that may not.
    pub refused_details: serde_json::Value,
}

pub trait Backend: Send + Sync + Sized + 'static {
    /// A connection (what a transaction dereferences to).
    type Conn: Executor;
    /// Where reads go: a pool that runs beside the writer.
    type Reader: Executor;
    /// An open transaction; dropped without [`Backend::commit`], it rolls back.
    type Tx<'a>: DerefMut<Target = Self::Conn> + Send
    where
        Self: 'a;
    /// A connection for a single statement that needs no transaction.
    type Writer<'a>: DerefMut<Target = Self::Conn> + Send
    where
        Self: 'a;

    fn reader(&self) -> Self::Reader;
    fn begin(&self) -> impl Future<Output = StoreResult<Self::Tx<'_>>> + Send;
    fn commit<'a>(tx: Self::Tx<'a>) -> impl Future<Output = StoreResult<()>> + Send + 'a;
    fn rollback<'a>(tx: Self::Tx<'a>) -> impl Future<Output = StoreResult<()>> + Send + 'a;
    fn write(&self) -> impl Future<Output = StoreResult<Self::Writer<'_>>> + Send;
    /// Applies pending migrations (safe to call from several instances at once).
    fn migrate(&self) -> impl Future<Output = StoreResult<()>> + Send;
    /// This process's connection pools, for the metrics (no I/O).
    fn pool_stats(&self) -> Vec<PoolStats>;

    /// What follows a `SELECT` of rows to claim so that concurrent claimers
    /// (several instances' mail workers) take disjoint rows.
    const CLAIM_LOCK: &'static str;

    /// Allowlist entries per statement when writing an import chunk.
    const IMPORT_ROWS_PER_STATEMENT: usize;

    /// Held by the one instance running a housekeeping round.
    type HousekeepingLock: Send;

    /// Takes the housekeeping lock if no other instance holds it, without
    /// waiting: `None` when one does, and this round is theirs.
    fn try_lock_housekeeping(
        &self,
    ) -> impl Future<Output = StoreResult<Option<Self::HousekeepingLock>>> + Send;

    /// Gives the housekeeping lock back. (Dropped instead, on an error, it is
    /// released all the same.)
    fn unlock_housekeeping(
        lock: Self::HousekeepingLock,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// Makes imports run one at a time, until `tx` ends.
    fn lock_roster(tx: &mut Self::Conn) -> impl Future<Output = StoreResult<()>> + Send;

    /// Writes one chunk of an import (addresses distinct, at most
    /// [`Backend::IMPORT_ROWS_PER_STATEMENT`]): new addresses are added with
    /// their roles, listed ones get the chunk's roles when it names some.
    fn write_import_chunk(
        tx: &mut Self::Conn,
        entries: &[EligibleEntry],
        import: &RosterImport,
    ) -> impl Future<Output = StoreResult<UpsertCounts>> + Send;

    /// Counts one hit in the fixed window of each of `buckets` (distinct) and
    /// returns each window's state, in the order given.
    fn hit_rate_limits(
        &self,
        buckets: &[&str],
        window_secs: i64,
        now: i64,
    ) -> impl Future<Output = StoreResult<Vec<RateWindow>>> + Send;

    /// In one atomic step: if `link.email` may sign in ([`schema::eligible`]),
    /// stores the link and the mail that carries it and writes
    /// `audit.entry`; otherwise writes only the entry with `audit.refused_details`. True when
    /// the link was stored.
    fn request_link(
        &self,
        link: NewMagicLink,
        mail: NewMail,
        audit: LinkAudit,
    ) -> impl Future<Output = StoreResult<bool>> + Send;

    /// The common sign-in in one round trip: a live link of an existing,
    /// active member is consumed, the member stamped, the session opened with
    /// its first refresh token and the sign-in audited. `None` when the link is
    /// not such a link; then nothing changed and the general path
    /// (`SqlStore::redeem_magic_link`) decides.
    fn redeem_for_returning_member(
        &self,
        token_hash: &TokenHash,
        session: &NewSession,
        now: i64,
    ) -> impl Future<Output = StoreResult<Option<Redeemed>>> + Send;

    /// Claims the live refresh token `presented` (unused, unrevoked, unexpired,
    /// its session live and member active) and stores `next` in its family, in
    /// one round trip. The family (the session id) and member of the claimed
    /// token, or `None` when it could not be claimed; then nothing changed.
    fn claim_refresh_token(
        &self,
        presented: &TokenHash,
        next: &NewRefreshToken,
        now: i64,
    ) -> impl Future<Output = StoreResult<Option<(String, String)>>> + Send;

    /// The member behind a live session of an active member. One query on a
    /// reader; Postgres folds concurrent calls into one.
    fn session_member(
        &self,
        member_id: &MemberId,
        session_id: &str,
        now: i64,
    ) -> impl Future<Output = StoreResult<Option<Member>>> + Send {
        async move {
            let rows: Vec<MemberRoleRow> = query(&SESSION_MEMBER)
                .bind(now)
                .bind(member_id.as_str())
                .bind(session_id)
                .fetch_all(&mut self.reader())
                .await?;
            schema::fold_member(rows)
        }
    }

    /// A key with its member and the member's roles. One query on a reader;
    /// Postgres folds concurrent calls into one.
    fn api_key(
        &self,
        id: &str,
        now: i64,
    ) -> impl Future<Output = StoreResult<Option<ApiKeyRecord>>> + Send {
        async move { super::api_keys::read_key(&mut self.reader(), id, now).await }
    }
}

/// `$1` now, `$2` the member, `$3` the session.
static SESSION_MEMBER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} JOIN sessions s ON s.member_id = m.id \
         WHERE m.id = $2 AND s.id = $3 AND {} AND {} ORDER BY r.role",
        schema::members_with_roles("$1"),
        schema::live_session("s"),
        schema::active("m"),
    )
});
