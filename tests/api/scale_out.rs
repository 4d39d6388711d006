//! Several instances on one Postgres database, as behind a load balancer: the
//! outbox, session revocations and rate limits are shared through the database.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use gatehouse::clock::Clock;
use gatehouse::config::DatabaseUrl;
use gatehouse::domain::{Email, OpaqueToken};
use gatehouse::store::{AuditEntry, DynStore, LeaseToken, NewMagicLink, NewMail};
use serde_json::json;
use sqlx::Connection;

use crate::helpers::{ADMIN, Backend, TestApp};

/// Three apps on one fresh database, configured alike as behind one load
/// balancer: the same public URL (hence JWT issuer) and secret. They share the
/// first one's data dir, so every mail lands in `apps[0]`'s mail dir.
pub(crate) async fn three_instances(overrides: &[(&str, &str)]) -> Vec<TestApp> {
    let mut overrides = overrides.to_vec();
    overrides.push(("public_url", "https://id.example.org"));
    let first = TestApp::spawn_with(Backend::Postgres, &overrides).await;
    let database_url = first.setting("database_url").to_owned();
    let data_dir = first.dir.path().display().to_string();
    let mut twin_overrides = overrides.to_vec();
    twin_overrides.push(("database_url", &database_url));
    twin_overrides.push(("data_dir", &data_dir));
    let twins = join_all((0..2).map(|_| TestApp::spawn_with(Backend::Postgres, &twin_overrides)));
    std::iter::once(first).chain(twins.await).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_requested_through_three_instances_are_each_mailed_once() {
    let mut apps = three_instances(&[]).await;
    let admin = apps[0].admin_token().await;
    let emails: Vec<String> = (0..12).map(|i| format!("m{i}@example.org")).collect();
    for email in &emails {
        apps[0].allowlist(&admin, email, &[]).await;
    }

    let requests = emails
        .iter()
        .enumerate()
        .map(|(i, email)| apps[i % 3].request_link(email));
    for response in join_all(requests).await {
        assert_eq!(response.status(), 202);
    }
    // Each link signs in through an instance other than the one that sent it.
    for (i, email) in emails.iter().enumerate() {
        let mail = apps[0].next_mail_to(email).await;
        let verified = apps[(i + 1) % 3]
            .post_json("/v1/auth/verify", json!({ "token": mail.token }))
            .await;
        assert_eq!(verified.status(), 200, "{email}");
    }

    // Shutting down drains every worker, so a second delivery would be on disk now.
    for app in &mut apps {
        app.shutdown().await;
    }
    for email in &emails {
        assert_eq!(apps[0].mail_files_to(email).len(), 1, "mails to {email}");
    }
}

/// The instance that logs out refuses the token at once; the others as soon as
/// the database's change notice reaches them (`cache_across_instances.rs`
/// tests that path with the clock held still).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_through_one_instance_is_refused_by_every_instance() {
    let apps = three_instances(&[]).await;
    let session = apps[0].sign_in(ADMIN).await;
    let access = session["access_token"].as_str().expect("access token");
    for app in &apps {
        assert_eq!(app.get_as("/v1/me", access).await.status(), 200);
    }

    let logout = apps[1]
        .post_json_as("/v1/auth/logout", access, json!({}))
        .await;
    assert_eq!(logout.status(), 204);
    assert_eq!(apps[1].get_as("/v1/me", access).await.status(), 401);
    let deadline = Instant::now() + Duration::from_secs(10);
    for app in &apps {
        while app.get_as("/v1/me", access).await.status() != 401 {
            assert!(
                Instant::now() < deadline,
                "an instance still serves the session"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let refresh = apps[2]
        .post_json(
            "/v1/auth/refresh",
            json!({ "refresh_token": session["refresh_token"] }),
        )
        .await;
    assert_eq!(refresh.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_hold_across_instances() {
    let apps = three_instances(&[("rate_limit_per_email", "5")]).await;
    for i in 0..5 {
        assert_eq!(apps[i % 3].request_link(ADMIN).await.status(), 202);
    }
    for app in &apps {
        let limited = app.request_link(ADMIN).await;
        assert_eq!(limited.status(), 429);
        assert!(limited.headers().contains_key("retry-after"));
    }
}

/// Instances starting together on a fresh database each migrate and allowlist
/// the bootstrap admins; all of them must come up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_starting_together_on_a_fresh_database_all_come_up() {
    let url = DatabaseUrl::new(crate::pg::fresh_database_url().await);
    let admins = [Email::parse(ADMIN).expect("email")];
    // Lined up after migrating, so that the bootstrap writes really race.
    let line_up = tokio::sync::Barrier::new(3);
    let started = join_all((0..3).map(|_| async {
        let store = gatehouse::store::connect(&url, 2).await?;
        store.migrate().await?;
        line_up.wait().await;
        store.bootstrap_admins(&admins, Clock::system().now()).await
    }))
    .await;
    for result in started {
        result.expect("instance starts");
    }
}

/// The outbox guarantee itself, without the workers' pacing in the way: three
/// stores on one database (migrating at the same moment, as instances starting
/// together do) claim a backlog concurrently, and no mail is claimed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_outbox_claims_never_take_one_mail_twice() {
    let url = DatabaseUrl::new(crate::pg::fresh_database_url().await);
    let stores: Vec<DynStore> = join_all((0..3).map(|_| async {
        let store = gatehouse::store::connect(&url, 4).await.expect("connect");
        store.migrate().await.expect("concurrent migrations");
        store
    }))
    .await;

    const BACKLOG: usize = 90;
    let now = Clock::system().now();
    let mut operator = sqlx::PgConnection::connect(url.expose())
        .await
        .expect("operator connection");
    sqlx::query(
        "INSERT INTO eligible_emails (email, created_at) \
         SELECT 'q' || i || '@example.org', 0 FROM generate_series(0, $1 - 1) AS i",
    )
    .bind(BACKLOG as i64)
    .execute(&mut operator)
    .await
    .expect("allowlist the backlog's addresses");
    for i in 0..BACKLOG {
        let email = Email::parse(&format!("q{i}@example.org")).expect("email");
        let link = NewMagicLink {
            token_hash: OpaqueToken::generate().hash(),
            email: email.clone(),
            code_hash: OpaqueToken::generate().hash(),
            redirect_to: None,
            created_at: now,
            expires_at: now + 600,
            ip: None,
            device: None,
        };
        let mail = NewMail {
            id: uuid::Uuid::new_v4().to_string(),
            kind: "magic_link",
            recipient: email.as_str().to_owned(),
            subject: "Sign in".into(),
            sealed_body: "sealed".into(),
            created_at: now,
            expires_at: Some(now + 600),
        };
        let stored = stores[i % 3]
            .create_magic_link(link, mail, AuditEntry::new("test.queue"))
            .await
            .expect("queue mail");
        assert!(stored, "q{i} is allowlisted");
    }

    let claimers = stores.iter().cloned().map(|store| {
        tokio::spawn(async move {
            let mut claimed = Vec::new();
            loop {
                let batch = store
                    .claim_due_mail(&LeaseToken::generate(), Clock::system().now(), 120, 3)
                    .await
                    .expect("claim");
                if batch.is_empty() {
                    return claimed;
                }
                claimed.extend(batch.into_iter().map(|mail| mail.id));
            }
        })
    });
    let mut all = Vec::new();
    for claimed in join_all(claimers).await {
        all.extend(claimed.expect("claimer task"));
    }
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "a mail was claimed twice");
    assert_eq!(all.len(), BACKLOG);
}
