//! The per-instance auth cache on Postgres: a change committed anywhere (another
//! instance, an operator at a psql prompt) reaches every instance's cache, and a
//! lost notification connection turns the cache off instead of leaving it stale.
//!
//! These talk to the stores directly with a fixed `now`, so the cache's
//! one-second lifetime never runs out during a test: every refusal seen here
//! comes from a change notice (or from the cache being off), not from expiry.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use gatehouse::config::DatabaseUrl;
use gatehouse::domain::{MemberId, Role};
use gatehouse::store::{AuditEntry, DynStore, NewApiKey};
use sqlx::Connection;

/// Far enough from the real clock that no role or key expires on its own.
const NOW: i64 = 4_000_000_000;
const PATIENCE: Duration = Duration::from_secs(10);

struct Instances {
    /// The instance the test changes things through.
    a: DynStore,
    /// The instance whose cache must hear about it.
    b: DynStore,
    /// A plain connection, as an operator's psql session.
    operator: sqlx::PgConnection,
    member: MemberId,
    session: String,
}

/// Polls `done` until it holds; fails, saying what never happened, after [`PATIENCE`].
async fn eventually(never: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done().await {
        assert!(Instant::now() < deadline, "{never} within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Two stores on one fresh database, one active member with a live session.
async fn instances() -> Instances {
    let url = crate::pg::fresh_database_url().await;
    let database = DatabaseUrl::new(url.clone());
    let mut stores: Vec<DynStore> = join_all((0..2).map(|_| async {
        let store = gatehouse::store::connect(&database, 4)
            .await
            .expect("connect");
        store.migrate().await.expect("migrate");
        store
    }))
    .await;
    let mut operator = sqlx::PgConnection::connect(&url)
        .await
        .expect("operator connection");
    let member = MemberId::new();
    let session = uuid::Uuid::new_v4().to_string();
    for statement in [
        "INSERT INTO members (id, email, status, created_at) VALUES ($1, 'm@example.org', 'active', 0)",
        "INSERT INTO member_roles (member_id, role, granted_at) VALUES ($1, 'member', 0)",
        "INSERT INTO sessions (id, member_id, created_at) VALUES ($2, $1, 0)",
    ] {
        sqlx::query(statement)
            .bind(member.as_str())
            .bind(&session)
            .execute(&mut operator)
            .await
            .expect("seed");
    }
    let b = stores.pop().expect("b");
    let a = stores.pop().expect("a");
    Instances {
        a,
        b,
        operator,
        member,
        session,
    }
}

impl Instances {
    /// Waits until `b` answers session checks from its cache: a change that
    /// sends no notice (`last_login_at`) is then not seen.
    async fn b_is_caching(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let before = self.b_session().await.expect("live session");
            sqlx::query(
                "UPDATE members SET last_login_at = COALESCE(last_login_at, 0) + 1 WHERE id = $1",
            )
            .bind(self.member.as_str())
            .execute(&mut self.operator)
            .await
            .expect("stamp");
            let after = self.b_session().await.expect("live session");
            if after.last_login_at == before.last_login_at {
                return;
            }
            assert!(Instant::now() < deadline, "b never served from its cache");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn b_session(&self) -> Option<gatehouse::domain::Member> {
        self.b
            .session_member(&self.member, &self.session, NOW)
            .await
            .expect("session check")
    }

    /// Waits until `b`'s session check gives `None`.
    async fn b_refuses_the_session(&self) {
        eventually("b did not refuse the session", async || {
            self.b_session().await.is_none()
        })
        .await;
    }

    async fn operator_runs(&mut self, statement: &str) {
        sqlx::query(statement)
            .bind(self.member.as_str())
            .execute(&mut self.operator)
            .await
            .expect("operator statement");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_one_instance_reaches_the_others_cache() {
    let mut it = instances().await;
    it.b_is_caching().await;
    assert!(
        it.a.session_member(&it.member, &it.session, NOW)
            .await
            .expect("check")
            .is_some()
    );

    let revoked =
        it.a.revoke_session(&it.session, AuditEntry::new("test.logout"), NOW)
            .await
            .expect("revoke");
    assert!(revoked);
    // The instance that revoked refuses at once; the other once the notice lands.
    assert!(
        it.a.session_member(&it.member, &it.session, NOW)
            .await
            .expect("check")
            .is_none()
    );
    it.b_refuses_the_session().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_sql_reaches_every_cache() {
    let mut it = instances().await;
    it.b_is_caching().await;
    it.operator_runs("UPDATE members SET status = 'suspended' WHERE id = $1")
        .await;
    it.b_refuses_the_session().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_granted_elsewhere_shows_in_every_cache() {
    let mut it = instances().await;
    it.b_is_caching().await;
    let sustainer = Role::parse("sustainer").expect("role");
    assert!(
        !it.b_session()
            .await
            .expect("live")
            .roles
            .contains(&sustainer)
    );

    it.operator_runs(
        "INSERT INTO member_roles (member_id, role, granted_at) VALUES ($1, 'sustainer', 0)",
    )
    .await;
    eventually("b did not see the new role", async || {
        let member = it.b_session().await.expect("live");
        member.roles.contains(&sustainer)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_revoked_on_one_instance_is_refused_by_the_others() {
    let mut it = instances().await;
    let key = NewApiKey {
        id: "cachetest".into(),
        name: "test".into(),
        secret_hash: "$argon2id$unused".into(),
        roles: Vec::new(),
        created_by: None,
        expires_at: None,
    };
    assert!(
        it.a.create_api_key(&it.member, key, AuditEntry::new("test.key"), NOW)
            .await
            .expect("create key")
    );
    it.b_is_caching().await;
    let live = it.b.api_key("cachetest", NOW).await.expect("lookup");
    assert_eq!(live.expect("key").revoked_at, None);

    assert!(
        it.a.revoke_api_key("cachetest", AuditEntry::new("test.revoke"), NOW)
            .await
            .expect("revoke")
    );
    eventually("b did not see the key revoked", async || {
        let seen = it.b.api_key("cachetest", NOW).await.expect("lookup");
        seen.expect("key").revoked_at.is_some()
    })
    .await;
}

/// Notices sent while an instance is not listening are lost; the instance must
/// not serve what they would have invalidated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_notice_connection_turns_the_cache_off_not_stale() {
    let mut it = instances().await;
    it.b_is_caching().await;

    let listeners: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'gatehouse-notices'",
    )
    .fetch_all(&mut it.operator)
    .await
    .expect("listener pids");
    assert_eq!(listeners.len(), 2, "one listener per instance");
    sqlx::query("SELECT pg_terminate_backend(pid) FROM UNNEST($1::int[]) AS pid")
        .bind(&listeners)
        .execute(&mut it.operator)
        .await
        .expect("terminate the listeners");
    eventually("the listeners did not go away", async || {
        let alive: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])")
                .bind(&listeners)
                .fetch_one(&mut it.operator)
                .await
                .expect("count");
        alive == 0
    })
    .await;

    // Very likely before the instances listen again: this notice reaches nobody.
    it.operator_runs("UPDATE sessions SET revoked_at = 1 WHERE member_id = $1")
        .await;
    it.b_refuses_the_session().await;

    // Once listening again, b caches and hears notices as before.
    sqlx::query("UPDATE sessions SET revoked_at = NULL WHERE member_id = $1")
        .bind(it.member.as_str())
        .execute(&mut it.operator)
        .await
        .expect("restore the session");
    eventually("b did not see the restored session", async || {
        it.b_session().await.is_some()
    })
    .await;
    it.b_is_caching().await;
    it.operator_runs("UPDATE members SET status = 'suspended' WHERE id = $1")
        .await;
    it.b_refuses_the_session().await;
}
