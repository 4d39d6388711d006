//! Postgres goes away and comes back while requests run: clients get 503s with a
//! problem body (retry later), never a 500, and the service heals by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{ADMIN, Backend, TestApp, assert_problem};
use crate::pg::Cluster;

/// Requests of every kind (readiness, an authenticated read, a rate-limited
/// write) until `stop`; returns every status seen.
async fn load(app: &TestApp, access: &str, stop: &AtomicBool, sent: &AtomicUsize) -> Vec<u16> {
    let mut statuses = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let n = sent.fetch_add(1, Ordering::SeqCst);
        let responses = [
            app.client.get(app.url("/readyz")).send().await,
            app.client
                .get(app.url("/v1/me"))
                .bearer_auth(access)
                .send()
                .await,
            app.client
                .post(app.url("/v1/auth/magic-link"))
                .json(&json!({ "email": format!("load{n}@example.org") }))
                .send()
                .await,
        ];
        statuses.extend(
            responses
                .into_iter()
                .map(|r| r.expect("response").status().as_u16()),
        );
    }
    statuses
}

async fn blocking(cluster: &Arc<Cluster>, step: fn(&Cluster)) {
    let cluster = cluster.clone();
    tokio::task::spawn_blocking(move || step(&cluster))
        .await
        .expect("cluster step");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_gives_503_not_500_and_the_service_recovers() {
    let cluster = Arc::new(
        tokio::task::spawn_blocking(Cluster::start)
            .await
            .expect("own cluster"),
    );
    let url = cluster.url("postgres");
    let app = TestApp::spawn_with(Backend::Postgres, &[("database_url", &url)]).await;
    let session = app.sign_in(ADMIN).await;
    let access = session["access_token"].as_str().expect("access token");

    let stop = AtomicBool::new(false);
    let sent = AtomicUsize::new(0);
    let outage = async {
        while sent.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        blocking(&cluster, Cluster::stop).await;

        let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
        assert_problem(ready, 503).await;
        assert_problem(app.get_as("/v1/me", access).await, 503).await;

        blocking(&cluster, Cluster::run_server).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
            if ready.status() == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "not ready again within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stop.store(true, Ordering::SeqCst);
    };
    let (statuses, ()) = tokio::join!(load(&app, access, &stop, &sent), outage);

    let unexpected: Vec<_> = statuses
        .iter()
        .filter(|s| !(200..300).contains(*s) && **s != 503)
        .collect();
    assert!(
        unexpected.is_empty(),
        "statuses other than 2xx/503: {unexpected:?}"
    );
    // Healed without a restart of the app: reads, writes and the mail worker work.
    assert_eq!(app.get_as("/v1/me", access).await.status(), 200);
    app.sign_in(ADMIN).await;
}
