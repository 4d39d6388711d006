//! Work in flight and leases: a worker keeps renewing the lease of a mail it is
//! sending, however long the receiver stalls, so no other worker (on Postgres,
//! no other instance) takes it, even long past the end of the first lease. The
//! moved clock stands in for the wait. What a crash leaves behind is resumed
//! within a lease; `tests/cli.rs` kills the real binary to show it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gatehouse::store::{DeliveryStatus, LeaseToken, MailStatus, OutboxEntry, WebhookDelivery};
use serde_json::json;
use tokio::sync::oneshot;

use crate::backend_tests;
use crate::helpers::{ADMIN, Backend, SentMail, TestApp};
use crate::mail_support::{Fault, Inbox, as_refs, smtp_settings, wait_for_outbox};

/// The workers' lease (`gatehouse::delivery::LEASE_SECS`).
const LEASE: i64 = gatehouse::delivery::LEASE_SECS;
/// How far the clock moves at a time: well inside what a renewal leaves.
const STEP: i64 = LEASE / 4;

async fn newest_to(app: &TestApp, recipient: &str) -> OutboxEntry {
    wait_for_outbox(app, recipient, |_| true).await
}

async fn a_live_lease_is_renewed_and_never_taken(backend: Backend) {
    let (inbox, addr) = Inbox::start();
    inbox.inject(Fault::Hold);
    let mut settings = smtp_settings(&format!("smtp://{addr}"));
    // The attempt is held as long as the test wants, never cut short.
    settings.push(("mail_timeout_secs", "600".into()));
    let app = TestApp::spawn_with(backend, &as_refs(&settings)).await;
    // On Postgres, a second instance on the same database and the same clock:
    // its worker looks for due mail each time the clock moves.
    let _twin = match backend {
        Backend::Postgres => {
            let mut twin = as_refs(&settings);
            twin.push(("database_url", app.setting("database_url")));
            Some(TestApp::spawn_at(backend, &twin, app.clock().clone()).await)
        }
        Backend::Sqlite => None,
    };

    assert_eq!(app.request_link(ADMIN).await.status(), 202);
    inbox.wait_for_data_commands(1).await;
    let first_lease_end = newest_to(&app, ADMIN).await.next_attempt_at;

    // Past the first lease's end, twice over, a step at a time.
    while app.clock().now() < first_lease_end + LEASE {
        let held_until = newest_to(&app, ADMIN).await.next_attempt_at;
        app.clock().advance(Duration::from_secs(STEP as u64));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let entry = newest_to(&app, ADMIN).await;
            assert_eq!(
                (entry.status, entry.attempts),
                (MailStatus::Queued, 0),
                "the attempt is still in flight"
            );
            if entry.next_attempt_at >= held_until + STEP {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the lease was not renewed after the clock moved: {entry:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let taken = app
            .state
            .store
            .claim_due_mail(&LeaseToken::generate(), app.clock().now(), LEASE, 10)
            .await
            .expect("claim");
        assert!(taken.is_empty(), "another claimer took a live lease");
        assert_eq!(inbox.data_commands(), 1, "nobody else attempted it");
    }

    inbox.release();
    let sent = wait_for_outbox(&app, ADMIN, |e| e.status == MailStatus::Sent).await;
    assert_eq!(sent.attempts, 1, "the held attempt is the one that counted");
    let messages = inbox.wait_for(1).await;
    assert!(SentMail::parse(messages[0].clone()).link.contains("token="));
    assert_eq!(inbox.data_commands(), 1, "sent once");
}

/// A webhook receiver that accepts connections and never answers, until
/// released: then it hangs up on them all.
struct HungReceiver {
    url: String,
    accepted: Arc<AtomicUsize>,
    release: Option<oneshot::Sender<()>>,
}

impl HungReceiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (release, mut released) = oneshot::channel();
        let counter = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                tokio::select! {
                    _ = &mut released => return,
                    Ok((stream, _)) = listener.accept() => {
                        counter.fetch_add(1, Ordering::SeqCst);
                        held.push(stream);
                    }
                }
            }
        });
        Self {
            url,
            accepted,
            release: Some(release),
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn release(&mut self) {
        if let Some(release) = self.release.take() {
            let _ = release.send(());
        }
    }
}

async fn delivery(app: &TestApp, hook: &str) -> WebhookDelivery {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = app
            .state
            .store
            .webhook_deliveries(hook, None, 10)
            .await
            .expect("deliveries");
        if let Some(first) = found.into_iter().next() {
            return first;
        }
        assert!(Instant::now() < deadline, "no delivery for {hook}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The webhook queue runs on the same worker: a delivery whose receiver
/// hangs keeps its lease past the first one's end, and nobody else posts it.
async fn a_live_webhook_lease_is_renewed_and_never_taken(backend: Backend) {
    let mut receiver = HungReceiver::start().await;
    let settings = [
        ("webhooks_allow_insecure", "true"),
        ("webhooks_timeout_secs", "600"),
        ("webhooks_retry_base_ms", "60000"),
    ];
    let app = TestApp::spawn_with(backend, &settings).await;
    let data_dir = app.dir.path().display().to_string();
    let _twin = match backend {
        Backend::Postgres => {
            let mut twin = settings.to_vec();
            twin.push(("database_url", app.setting("database_url")));
            // Sign-in mail either instance sends lands where the test reads it.
            twin.push(("data_dir", &data_dir));
            Some(TestApp::spawn_at(backend, &twin, app.clock().clone()).await)
        }
        Backend::Sqlite => None,
    };
    let (_, admin) = app.admin().await;
    let hook = TestApp::json_ok(
        app.post_json_as(
            "/v1/admin/webhooks",
            &admin,
            json!({ "url": receiver.url, "events": ["allowlist.imported"] }),
        )
        .await,
        201,
    )
    .await;
    let hook = hook["id"].as_str().expect("id").to_owned();
    app.allowlist(&admin, "ann@example.org", &[]).await;

    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.accepted() == 0 {
        assert!(
            Instant::now() < deadline,
            "the delivery was never attempted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_lease_end = delivery(&app, &hook).await.next_attempt_at;
    while app.clock().now() < first_lease_end + LEASE {
        let held_until = delivery(&app, &hook).await.next_attempt_at;
        app.clock().advance(Duration::from_secs(STEP as u64));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let current = delivery(&app, &hook).await;
            assert_eq!(
                (current.status, current.attempts),
                (DeliveryStatus::Pending, 0),
                "the attempt is still in flight"
            );
            if current.next_attempt_at >= held_until + STEP {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the lease was not renewed after the clock moved: {current:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let taken = app
            .state
            .store
            .claim_due_webhooks(&LeaseToken::generate(), app.clock().now(), LEASE, 10)
            .await
            .expect("claim");
        assert!(taken.is_empty(), "another claimer took a live lease");
        assert_eq!(receiver.accepted(), 1, "nobody else posted it");
    }

    // Hung up on: the attempt fails and waits a minute (real backoff) to retry.
    receiver.release();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let current = delivery(&app, &hook).await;
        if current.attempts == 1 {
            assert_eq!(current.status, DeliveryStatus::Pending);
            assert!(current.last_error.is_some(), "{current:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the outcome was never recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(receiver.accepted(), 1, "attempted once");
}

backend_tests!(
    a_live_lease_is_renewed_and_never_taken,
    a_live_webhook_lease_is_renewed_and_never_taken
);
