//! The store contract: every method of the store traits, called directly (no
//! HTTP), with the same test bodies on each store a deployment can run on —
//! SQLite, Postgres, and each behind the read cache (`CachedStore`, which is
//! what `gatehouse::store::connect` returns).
//!
//! Time is a parameter of every store method, so the tests pass fixed `now`
//! values and never sleep. Which store a test runs on is decided in one place,
//! [`open`]; what a refusal looks like is decided in the `is_*` predicates
//! below, so that a change of constructor or error type is one edit here.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse::config::DatabaseUrl;
use gatehouse::domain::{Conflict, Email, Member, MemberId, Role, TokenHash};
use gatehouse::store::{
    AuditEntry, AuditFilter, AuditRow, DynStore, EligibleEntry, ImportChunk, ImportTotals,
    NewMagicLink, NewMail, NewRefreshToken, NewSession, PostgresStore, RoleGrant, RosterImport,
    SqliteStore, Store, StoreError, UpsertCounts,
};

/// Generates one `#[tokio::test]` per [`StoreUnderTest`] for each named
/// `async fn(StoreUnderTest)`. Defined before the area modules, which use it.
macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        store_tests!(@kind sqlite, Sqlite; $($name),*);
        store_tests!(@kind postgres, Postgres; $($name),*);
        store_tests!(@kind cached_sqlite, CachedSqlite; $($name),*);
        store_tests!(@kind cached_postgres, CachedPostgres; $($name),*);
    };
    (@kind $module:ident, $kind:ident; $($name:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::store::StoreUnderTest::$kind).await
                }
            )*
        }
    };
}

mod api_keys;
mod audit;
mod bootstrap;
mod console;
mod grants;
mod health;
mod hooks;
mod housekeeping;
mod members;
mod outbox;
mod rate_limits;
mod roles;
mod roster;
mod sessions;
mod sign_in;
mod signing_keys;
mod webhooks;

/// The stores every contract test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreUnderTest {
    Sqlite,
    Postgres,
    /// `CachedStore` in front of SQLite, as `gatehouse::store::connect` builds it.
    CachedSqlite,
    /// `CachedStore` in front of Postgres, as `gatehouse::store::connect` builds it.
    CachedPostgres,
}

impl StoreUnderTest {
    pub fn is_postgres(self) -> bool {
        matches!(self, Self::Postgres | Self::CachedPostgres)
    }
}

/// Keeps a test's database alive for as long as the test holds it: the
/// directory of the SQLite file (a Postgres database lives as long as the
/// tests' cluster).
pub struct Guard {
    _dir: tempfile::TempDir,
}

/// Connections per store: enough for the concurrency tests, small enough for
/// many tests at once on one Postgres cluster.
const POOL: u32 = 4;

/// A fresh, migrated, empty database behind the store `kind`. Every store is
/// built here and nowhere else.
pub async fn open(kind: StoreUnderTest) -> (Guard, DynStore) {
    let (guard, url) = fresh_database(kind.is_postgres()).await;
    let store: DynStore = match kind {
        StoreUnderTest::Sqlite => {
            Arc::new(SqliteStore::connect(&url, POOL).await.expect("open SQLite"))
        }
        StoreUnderTest::Postgres => Arc::new(
            PostgresStore::connect(&url, POOL)
                .await
                .expect("open Postgres"),
        ),
        StoreUnderTest::CachedSqlite | StoreUnderTest::CachedPostgres => {
            gatehouse::store::connect(&DatabaseUrl::new(url.clone()), POOL)
                .await
                .expect("open cached store")
        }
    };
    store.migrate().await.expect("migrate");
    if kind == StoreUnderTest::CachedPostgres {
        wait_until_caching(&url, &store).await;
    }
    (guard, store)
}

/// A fresh, migrated SQLite store as its concrete type, for tests of the
/// backend's own hooks.
pub async fn open_sqlite() -> (Guard, Arc<SqliteStore>) {
    let (guard, url) = fresh_database(false).await;
    let store = SqliteStore::connect(&url, POOL).await.expect("open SQLite");
    store.migrate().await.expect("migrate");
    (guard, Arc::new(store))
}

/// [`open_sqlite`] for Postgres.
pub async fn open_postgres() -> (Guard, Arc<PostgresStore>) {
    let (guard, url) = fresh_database(true).await;
    let store = PostgresStore::connect(&url, POOL)
        .await
        .expect("open Postgres");
    store.migrate().await.expect("migrate");
    (guard, Arc::new(store))
}

/// A new, empty database and its URL.
async fn fresh_database(postgres: bool) -> (Guard, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = if postgres {
        crate::pg::fresh_database_url().await
    } else {
        format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("store.db").display()
        )
    };
    (Guard { _dir: dir }, url)
}

/// On Postgres the cache serves nothing until its change listener has
/// connected, so a cached test run before then would prove nothing about the
/// cache. Waits until a session check is answered from the cache, which shows
/// as a change that sends no notice (`last_login_at`, written by an operator
/// connection) going unseen. The scratch member is removed again.
async fn wait_until_caching(url: &str, store: &DynStore) {
    use sqlx::Connection;
    let mut operator = sqlx::PgConnection::connect(url)
        .await
        .expect("operator connection");
    let (member, session) = (MemberId::new(), new_id());
    let run = async |operator: &mut sqlx::PgConnection, statement: &str| {
        sqlx::query(statement)
            .bind(member.as_str())
            .bind(&session)
            .execute(operator)
            .await
            .expect("probe statement");
    };
    run(
        &mut operator,
        "INSERT INTO members (id, email, status, created_at, last_login_at) \
         SELECT $1, 'cache-probe@example.org', 'active', 0, 0 WHERE $2 <> ''",
    )
    .await;
    run(
        &mut operator,
        "INSERT INTO sessions (id, member_id, created_at) VALUES ($2, $1, 0)",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let login = async || {
            store
                .session_member(&member, &session, 0)
                .await
                .expect("probe session check")
                .expect("probe session live")
                .last_login_at
        };
        let before = login().await;
        run(
            &mut operator,
            "UPDATE members SET last_login_at = last_login_at + 1 WHERE id = $1 AND $2 <> ''",
        )
        .await;
        if login().await == before {
            break;
        }
        assert!(Instant::now() < deadline, "the cache never came on");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    run(
        &mut operator,
        "DELETE FROM sessions WHERE id = $2 AND $1 <> ''",
    )
    .await;
    run(
        &mut operator,
        "DELETE FROM members WHERE id = $1 AND $2 <> ''",
    )
    .await;
}

// ---------------------------------------------------------------------------
// Refusals. One predicate per kind, so that a new error type means editing
// these lines only.

/// The error of a call that must fail.
pub fn refused<T: Debug, E: Debug>(result: Result<T, E>) -> E {
    result.expect_err("the store refused")
}

/// The change would leave no active admin.
pub fn is_last_admin(e: &StoreError) -> bool {
    matches!(e, StoreError::Conflict(Conflict::LastAdmin))
}

/// The thing exists already (a member, a role), or is deleted for good.
pub fn is_conflict(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Conflict(
            Conflict::AlreadyMember(_) | Conflict::RoleExists(_) | Conflict::MemberDeleted
        )
    )
}

/// A role that was named does not exist.
pub fn is_unknown_role(e: &StoreError) -> bool {
    matches!(e, StoreError::Conflict(Conflict::UnknownRole(_)))
}

/// A built-in role cannot be deleted.
pub fn is_builtin_role(e: &StoreError) -> bool {
    matches!(e, StoreError::Conflict(Conflict::BuiltinRole(_)))
}

/// A role still granted needs `force` to be deleted.
pub fn is_role_in_use(e: &StoreError) -> bool {
    matches!(e, StoreError::Conflict(Conflict::RoleInUse { .. }))
}

/// The thing named does not exist.
pub fn is_not_found(e: &StoreError) -> bool {
    matches!(e, StoreError::NotFound(_))
}

// ---------------------------------------------------------------------------
// Time and values.

/// A fixed "now", far from the real clock, so nothing expires on its own.
pub const NOW: i64 = 1_900_000_000;
pub const MINUTE: i64 = 60;
pub const HOUR: i64 = 3_600;
pub const DAY: i64 = 86_400;
/// How long test links live.
pub const LINK_TTL: i64 = 10 * MINUTE;
/// How long test refresh tokens live.
pub const REFRESH_TTL: i64 = 30 * DAY;

pub fn email(text: &str) -> Email {
    Email::parse(text).expect("valid email")
}

pub fn role(name: &str) -> Role {
    Role::parse(name).expect("valid role")
}

pub fn roles(names: &[&str]) -> Vec<Role> {
    names.iter().copied().map(role).collect()
}

/// The names of a member's roles in force, sorted.
pub fn role_names(member: &Member) -> Vec<&str> {
    let mut names: Vec<&str> = member.roles.iter().map(Role::as_str).collect();
    names.sort_unstable();
    names
}

/// An audit entry as an admin's action writes it.
pub fn audit(action: &'static str) -> AuditEntry {
    AuditEntry::new(action).actor("admin-under-test")
}

/// A fresh random token hash (links, refresh tokens, codes).
pub fn token() -> TokenHash {
    TokenHash::of(uuid::Uuid::new_v4().as_bytes())
}

/// A fresh time-ordered id, as the service makes them.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

// ---------------------------------------------------------------------------
// The allowlist.

pub fn entry(address: &str, role_list: &[&str]) -> EligibleEntry {
    EligibleEntry {
        email: email(address),
        roles: roles(role_list),
    }
}

/// Streams `entries` to `import_roster` as one batch (in chunks of two, so
/// that several chunks are exercised), then `Finish`.
pub async fn import(
    store: &DynStore,
    batch_id: &str,
    entries: Vec<EligibleEntry>,
    dry_run: bool,
    now: i64,
) -> Option<UpsertCounts> {
    let (sender, receiver) = tokio::sync::mpsc::channel(entries.len() + 2);
    let rows = entries.len() as u64;
    for chunk in entries.chunks(2) {
        sender
            .send(ImportChunk::Rows(chunk.to_vec()))
            .await
            .expect("send rows");
    }
    sender
        .send(ImportChunk::Finish(ImportTotals {
            rows,
            duplicates: 0,
            invalid: 0,
            audit: audit("allowlist.import"),
        }))
        .await
        .expect("send finish");
    drop(sender);
    store
        .import_roster(
            RosterImport {
                batch_id: batch_id.to_owned(),
                source: "csv",
                added_by: Some("admin-under-test".into()),
                dry_run,
                now,
            },
            receiver,
        )
        .await
        .expect("import")
}

/// Allowlists one address with `role_list` preassigned, in a batch of its own.
pub async fn allowlist(store: &DynStore, address: &str, role_list: &[&str]) {
    let counts = import(
        store,
        &new_id(),
        vec![entry(address, role_list)],
        false,
        NOW - DAY,
    )
    .await
    .expect("import finished");
    assert_eq!(counts.added + counts.updated + counts.unchanged, 1);
}

// ---------------------------------------------------------------------------
// Members and sign-in.

/// Makes an active member directly (admin onboarding), with `member` plus `role_list`.
pub async fn onboard(store: &DynStore, address: &str, role_list: &[&str]) -> Member {
    store
        .onboard_member(
            &email(address),
            &roles(role_list),
            None,
            audit("member.onboard"),
            NOW - DAY,
        )
        .await
        .expect("onboard")
}

/// A link for `address` as the sign-in service builds it, with its mail.
pub struct LinkRequest {
    pub link: NewMagicLink,
    pub mail: NewMail,
}

impl LinkRequest {
    pub fn new(address: &str, now: i64) -> Self {
        let mail_id = new_id();
        Self {
            link: NewMagicLink {
                token_hash: token(),
                email: email(address),
                code_hash: token(),
                redirect_to: Some("https://app.example.org/welcome".into()),
                created_at: now,
                expires_at: now + LINK_TTL,
                ip: Some("192.0.2.7".into()),
                device: Some("Firefox on Linux".into()),
            },
            mail: NewMail {
                id: mail_id,
                kind: "sign_in",
                recipient: address.to_owned(),
                subject: "Your sign-in link".into(),
                sealed_body: "sealed:body".into(),
                created_at: now,
                expires_at: Some(now + LINK_TTL),
            },
        }
    }

    /// Asks the store to keep it; whether the address was eligible.
    pub async fn send(&self, store: &DynStore) -> bool {
        store
            .create_magic_link(
                self.link.clone(),
                self.mail.clone(),
                AuditEntry::new("auth.link_requested")
                    .ip(self.link.ip.clone())
                    .details(serde_json::json!({ "redirect": true })),
            )
            .await
            .expect("create magic link")
    }
}

/// Requests a link for an address that must be eligible; returns its token hash.
pub async fn link_for(store: &DynStore, address: &str, now: i64) -> TokenHash {
    let request = LinkRequest::new(address, now);
    assert!(request.send(store).await, "{address} is eligible");
    request.link.token_hash
}

/// A new session as the sign-in service opens it, and its first refresh token.
pub fn new_session(now: i64) -> NewSession {
    NewSession {
        id: new_id(),
        refresh: new_refresh(now),
        ip: Some("192.0.2.7".into()),
        device: Some("Firefox on Linux".into()),
    }
}

pub fn new_refresh(now: i64) -> NewRefreshToken {
    NewRefreshToken {
        id: new_id(),
        token_hash: token(),
        expires_at: now + REFRESH_TTL,
    }
}

/// A member signed in: who, their session and its current refresh token.
pub struct Session {
    pub member: Member,
    pub id: String,
    pub refresh: TokenHash,
}

/// Signs in an eligible address by link at `now`.
pub async fn sign_in(store: &DynStore, address: &str, now: i64) -> Session {
    let link = link_for(store, address, now).await;
    let session = new_session(now);
    let refresh = session.refresh.token_hash.clone();
    let signed_in = store
        .redeem_magic_link(&link, session, now)
        .await
        .expect("redeem")
        .expect("signed in");
    Session {
        member: signed_in.member,
        id: signed_in.session_id,
        refresh,
    }
}

/// Whether the session still authenticates its member at `now`.
pub async fn session_live(store: &DynStore, member: &MemberId, session: &str, now: i64) -> bool {
    store
        .session_member(member, session, now)
        .await
        .expect("session check")
        .is_some()
}

/// Grants `name` to a known member at `now`, ending at `expires_at`.
pub async fn grant(store: &DynStore, id: &MemberId, name: &str, expires_at: Option<i64>, now: i64) {
    store
        .grant_member_role(
            id,
            &RoleGrant {
                role: role(name),
                expires_at,
            },
            audit("role.grant"),
            now,
        )
        .await
        .expect("grant")
        .expect("known member");
}

pub async fn member_by_id(store: &DynStore, id: &MemberId, now: i64) -> Member {
    store
        .member_by_id(id, now)
        .await
        .expect("member by id")
        .expect("member exists")
}

// ---------------------------------------------------------------------------
// The audit log.

/// Every audit row with `action`, newest first.
pub async fn audit_rows(store: &DynStore, action: &str) -> Vec<AuditRow> {
    store
        .list_audit(&AuditFilter {
            action: Some(action.to_owned()),
            limit: 1_000,
            ..Default::default()
        })
        .await
        .expect("list audit")
}

/// The details of an audit row, parsed.
pub fn details(row: &AuditRow) -> serde_json::Value {
    serde_json::from_str(&row.details).expect("audit details are JSON")
}
