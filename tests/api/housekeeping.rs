//! The housekeeping job in the running application: once the clock has moved
//! past the retentions, the scheduled round deletes the ended session, the
//! used link and the sent mail, and says so in `/metrics`; on Postgres, a round
//! is skipped, not queued, while another holds the housekeeping lock.

use std::time::{Duration, Instant};

use gatehouse::store::HOUSEKEEPING_LOCK;
use serde_json::json;
use sqlx::Connection;

use crate::backend_tests;
use crate::helpers::{ADMIN, Backend, TestApp};
use crate::scale_out::three_instances;

const WEEK_AND_A_DAY: Duration = Duration::from_secs(8 * 86_400);

/// The value of one series in `/metrics` (0 when it is not there yet).
async fn metric(app: &TestApp, series: &str) -> u64 {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

async fn rounds(app: &TestApp, outcome: &str) -> u64 {
    metric(
        app,
        &format!("gatehouse_housekeeping_rounds_total{{outcome=\"{outcome}\"}}"),
    )
    .await
}

async fn pruned(app: &TestApp, kind: &str) -> u64 {
    metric(
        app,
        &format!("gatehouse_housekeeping_pruned_rows_total{{kind=\"{kind}\"}}"),
    )
    .await
}

/// Waits until `app` has counted a round with `outcome`.
async fn until_a_round(app: &TestApp, outcome: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while rounds(app, outcome).await == 0 {
        assert!(Instant::now() < deadline, "no {outcome} round within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Signs the admin in and out through `app`, and waits until the sign-in mail
/// is recorded as sent: one ended session, one used link, one sent mail.
async fn a_session_that_ended(app: &TestApp) {
    let session = app.sign_in(ADMIN).await;
    let access = session["access_token"].as_str().unwrap();
    let logout = app.post_json_as("/v1/auth/logout", access, json!({})).await;
    assert_eq!(logout.status(), 204);
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.state.store.outbox_counts().await.unwrap().sent != 1 {
        assert!(Instant::now() < deadline, "the sign-in mail was never sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn the_scheduled_round_prunes_once_the_clock_passes_the_retention(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    a_session_that_ended(&app).await;
    assert_eq!(rounds(&app, "pruned").await, 0, "not due yet");

    app.clock().advance(WEEK_AND_A_DAY);
    until_a_round(&app, "pruned").await;

    assert_eq!(pruned(&app, "sessions").await, 1);
    assert_eq!(pruned(&app, "links").await, 1);
    assert_eq!(pruned(&app, "sent_mail").await, 1);
    assert_eq!(
        pruned(&app, "audit_log").await,
        0,
        "kept forever by default"
    );
    let counts = app.state.store.outbox_counts().await.unwrap();
    assert_eq!((counts.sent, counts.queued), (0, 0), "{counts:?}");
    // The admin signs in again afterwards as before.
    app.sign_in(ADMIN).await;
}

backend_tests!(the_scheduled_round_prunes_once_the_clock_passes_the_retention);

/// While another session holds the housekeeping lock (here an operator's, so
/// that it is held for as long as the test needs), every instance's round is
/// skipped and prunes nothing; once it is released, the next rounds prune it
/// all, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_rounds_are_skipped_while_another_holds_the_lock() {
    let apps = three_instances(&[]).await;
    a_session_that_ended(&apps[0]).await;
    let mut operator = sqlx::PgConnection::connect(apps[0].setting("database_url"))
        .await
        .expect("operator connection");
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(HOUSEKEEPING_LOCK)
        .execute(&mut operator)
        .await
        .unwrap();

    for app in &apps {
        app.clock().advance(WEEK_AND_A_DAY);
    }
    for app in &apps {
        until_a_round(app, "skipped").await;
        assert_eq!(rounds(app, "pruned").await, 0);
    }
    assert_eq!(
        apps[0].state.store.outbox_counts().await.unwrap().sent,
        1,
        "nothing pruned"
    );

    operator.close().await.unwrap();
    for app in &apps {
        app.clock().advance(Duration::from_secs(601));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut sessions = 0;
        for app in &apps {
            sessions += pruned(app, "sessions").await;
        }
        if sessions > 0 {
            assert_eq!(sessions, 1, "one instance pruned it");
            break;
        }
        assert!(Instant::now() < deadline, "no instance pruned within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(apps[0].state.store.outbox_counts().await.unwrap().sent, 0);
}
