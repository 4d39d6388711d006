//! Mail delivery that loses nothing: a real SMTP server that is down, refuses
//! or stalls; crashes between enqueue and send; templates and header safety.

use std::time::Duration;

use gatehouse::auth::LinkRequest;
use gatehouse::config::Settings;
use gatehouse::domain::Email;
use gatehouse::store::MailStatus;
use serde_json::Value;

use crate::backend_tests;
use crate::helpers::{ADMIN, Backend, TestApp, assert_problem};
use crate::mail_support::{
    Fault, Inbox, admin_token_via, as_refs, reserve_port, sign_in_via, smtp_settings,
    wait_for_outbox, wait_for_status,
};

const BOB: &str = "bob@example.org";

async fn smtp_app(backend: Backend, url: &str, extra: &[(&str, &str)]) -> TestApp {
    let settings = smtp_settings(url);
    let mut overrides = as_refs(&settings);
    overrides.extend_from_slice(extra);
    TestApp::spawn_with(backend, &overrides).await
}

async fn delivered_mail_is_listed_as_sent_and_counted_in_metrics(backend: Backend) {
    let (inbox, addr) = Inbox::start();
    let app = smtp_app(backend, &format!("smtp://{addr}"), &[]).await;
    let admin = admin_token_via(&app, &inbox).await;
    let sent = wait_for_status(&app, ADMIN, MailStatus::Sent).await;
    assert_eq!(sent.attempts, 1);
    assert!(sent.sent_at.is_some());

    let page: Value = app
        .get_as("/v1/admin/outbox?status=sent", &admin)
        .await
        .json()
        .await
        .unwrap();
    let item = &page["items"][0];
    assert_eq!(item["id"], sent.id.as_str());
    assert_eq!(item["recipient"], ADMIN);
    assert_eq!(item["kind"], "sign_in");
    assert_eq!(item["status"], "sent");
    assert!(item.get("sealed_body").is_none() && item.get("text").is_none());
    assert_eq!(page["counts"]["sent"], 1);

    // A second mail, then the list page by page, newest first.
    assert_eq!(app.request_link(ADMIN).await.status(), 202);
    wait_for_outbox(&app, ADMIN, |e| {
        e.id != sent.id && e.status == MailStatus::Sent
    })
    .await;
    let first: Value = app
        .get_as("/v1/admin/outbox?limit=1", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    assert_ne!(first["items"][0]["id"], sent.id.as_str());
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second: Value = app
        .get_as(&format!("/v1/admin/outbox?limit=1&cursor={cursor}"), &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["items"][0]["id"], sent.id.as_str());
    let last: Value = app
        .get_as(
            &format!("/v1/admin/outbox?limit=1&cursor={}", sent.id),
            &admin,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(last["items"].as_array().unwrap().len(), 0);
    assert!(last["next_cursor"].is_null());
    for bad in ["status=lost", "cursor=not-an-id", "limit=0"] {
        let response = app.get_as(&format!("/v1/admin/outbox?{bad}"), &admin).await;
        assert_eq!(response.status(), 400, "{bad}");
    }

    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("gatehouse_mail_sent_total 2"), "{text}");
    assert!(text.contains("gatehouse_outbox_queued 0"), "{text}");
    assert!(
        text.contains("gatehouse_mail_delivery_seconds_count 2"),
        "{text}"
    );
}

async fn mail_waits_for_a_server_that_is_down_and_arrives_once_it_is_up(backend: Backend) {
    let addr = reserve_port();
    let app = smtp_app(backend, &format!("smtp://{addr}"), &[]).await;
    assert_eq!(app.request_link(ADMIN).await.status(), 202);
    let failed_once = wait_for_outbox(&app, ADMIN, |e| e.attempts >= 1).await;
    assert_eq!(failed_once.status, MailStatus::Queued);
    assert!(failed_once.last_error.is_some());

    let inbox = Inbox::start_on(addr);
    let sent = wait_for_status(&app, ADMIN, MailStatus::Sent).await;
    let messages = inbox.wait_for(1).await;
    assert!(messages[0].contains("To: admin@example.org"));
    assert!(sent.attempts >= 2);
    assert_eq!(inbox.count(), 1, "delivered exactly once");
}

async fn a_451_reply_is_retried_until_the_mail_is_delivered(backend: Backend) {
    let (inbox, addr) = Inbox::start();
    inbox.inject(Fault::Reply(451));
    let app = smtp_app(backend, &format!("smtp://{addr}"), &[]).await;
    assert_eq!(app.request_link(ADMIN).await.status(), 202);
    let sent = wait_for_status(&app, ADMIN, MailStatus::Sent).await;
    inbox.wait_for(1).await;
    assert_eq!(sent.attempts, 2);
    assert_eq!(inbox.count(), 1);
}

async fn a_550_reply_fails_the_mail_and_an_admin_can_send_it_again(backend: Backend) {
    let (inbox, addr) = Inbox::start();
    let app = smtp_app(backend, &format!("smtp://{addr}"), &[]).await;
    let admin = admin_token_via(&app, &inbox).await;
    app.allowlist(&admin, BOB, &[]).await;
    inbox.inject(Fault::Reply(550));
    assert_eq!(app.request_link(BOB).await.status(), 202);
    let failed = wait_for_status(&app, BOB, MailStatus::Failed).await;
    assert_eq!(failed.attempts, 1, "a permanent refusal is not retried");

    let page: Value = app
        .get_as("/v1/admin/outbox?status=failed", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["counts"]["failed"], 1);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], failed.id.as_str());
    assert_eq!(items[0]["recipient"], BOB);
    assert!(
        items[0]["last_error"].as_str().unwrap().contains("550"),
        "{page}"
    );

    let path = format!("/v1/admin/outbox/{}/retry", failed.id);
    let retried = app.post_json_as(&path, &admin, Value::Null).await;
    assert_eq!(retried.status(), 200);
    let retried: Value = retried.json().await.unwrap();
    assert_eq!(retried["status"], "queued");
    assert_eq!(retried["attempts"], 0);

    let messages = inbox.wait_for(2).await;
    assert!(messages[1].contains("To: bob@example.org"));
    wait_for_status(&app, BOB, MailStatus::Sent).await;
    assert_problem(app.post_json_as(&path, &admin, Value::Null).await, 409).await;
    let unknown = "/v1/admin/outbox/0190f7a0-0000-7000-8000-000000000000/retry";
    assert_problem(app.post_json_as(unknown, &admin, Value::Null).await, 404).await;
    let member = sign_in_via(&app, &inbox, BOB).await;
    assert_problem(app.get_as("/v1/admin/outbox", &member).await, 403).await;
}

async fn a_slow_server_times_out_and_the_mail_is_retried(backend: Backend) {
    let (inbox, addr) = Inbox::start();
    inbox.inject(Fault::Delay(Duration::from_secs(3)));
    let app = smtp_app(
        backend,
        &format!("smtp://{addr}"),
        &[("mail_timeout_secs", "1")],
    )
    .await;
    assert_eq!(app.request_link(ADMIN).await.status(), 202);
    let sent = wait_for_status(&app, ADMIN, MailStatus::Sent).await;
    inbox.wait_for(1).await;
    assert_eq!(sent.attempts, 2, "the stalled attempt counted as a failure");
    assert_eq!(inbox.count(), 1);
}

/// What a process killed after committing a sign-in request leaves behind: an
/// outbox row no worker has touched.
async fn enqueue_while_stopped(app: &mut TestApp, email: &str) {
    app.shutdown().await;
    app.state
        .auth
        .sign_in()
        .request_link(LinkRequest {
            email: Email::parse(email).unwrap(),
            redirect_to: None,
            client: Default::default(),
        })
        .await
        .expect("enqueued");
}

async fn mail_enqueued_before_a_crash_is_delivered_once_after_restart(backend: Backend) {
    let mut app = TestApp::spawn(backend).await;
    enqueue_while_stopped(&mut app, ADMIN).await;
    assert!(app.mail_files_to(ADMIN).is_empty());

    let app = app.restart_with(&[]).await;
    let mail = app.next_mail_to(ADMIN).await;
    assert!(mail.link.contains("/auth/confirm?token="));
    let sent = wait_for_status(&app, ADMIN, MailStatus::Sent).await;
    assert_eq!(sent.attempts, 1);
    assert_eq!(app.mail_files_to(ADMIN).len(), 1, "delivered exactly once");
}

async fn a_link_mail_that_expired_while_queued_is_never_sent(backend: Backend) {
    let mut app = TestApp::spawn_with(backend, &[("link_ttl_secs", "1")]).await;
    enqueue_while_stopped(&mut app, ADMIN).await;
    // Let the link expire while no worker runs.
    app.clock().advance(Duration::from_secs(2));
    let app = app.restart_with(&[]).await;
    let expired = wait_for_status(&app, ADMIN, MailStatus::Expired).await;
    assert_eq!(expired.attempts, 0);
    assert!(expired.sent_at.is_none());
    assert!(app.mail_files_to(ADMIN).is_empty());
}

async fn a_templates_dir_overrides_the_subject(backend: Backend) {
    let templates = tempfile::tempdir().unwrap();
    let dir = templates.path().join("email/sign_in");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("subject.txt"), "Welcome back to {{ org_name }}\n").unwrap();
    let app = TestApp::spawn_with(
        backend,
        &[
            ("templates_dir", templates.path().to_str().unwrap()),
            ("org_name", "Chess Club"),
        ],
    )
    .await;
    assert_eq!(app.request_link(ADMIN).await.status(), 202);
    let mail = app.next_mail_to(ADMIN).await;
    assert!(
        mail.raw.contains("Subject: Welcome back to Chess Club\r\n"),
        "{}",
        mail.raw
    );
}

/// The header block of a raw message, unfolded: continuation lines joined.
fn headers(raw: &str) -> Vec<String> {
    let block = raw.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines: Vec<String> = Vec::new();
    for line in block.split("\r\n") {
        match lines.last_mut() {
            Some(last) if line.starts_with([' ', '\t']) => last.push_str(line),
            _ => lines.push(line.to_owned()),
        }
    }
    lines
}

async fn no_input_can_add_a_header_to_a_mail(backend: Backend) {
    let injected = "\r\nBcc: eve@evil.test\r\nX-Evil: 1";
    let reject = |key: &str, value: String| {
        let raw = [(key.to_owned(), value)].into_iter().collect();
        assert!(
            Settings::from_map(&raw).is_err(),
            "{key} with CR/LF accepted"
        );
    };
    reject("mail_from", format!("Club{injected} <club@example.org>"));
    reject("support_email", format!("help@example.org{injected}"));

    let templates = tempfile::tempdir().unwrap();
    let dir = templates.path().join("email/sign_in");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("subject.txt"),
        "Sign in to {{ org_name }}\r\nBcc: eve@evil.test\r\n\r\nbody\n",
    )
    .unwrap();
    let org = format!("Club{injected}");
    let app = TestApp::spawn_with(
        backend,
        &[
            ("templates_dir", templates.path().to_str().unwrap()),
            ("org_name", &org),
            ("mail_from", "Club <club@example.org>"),
        ],
    )
    .await;
    assert_eq!(app.request_link(ADMIN).await.status(), 202);
    let mail = app.next_mail_to(ADMIN).await;
    let headers = headers(&mail.raw);
    for header in &headers {
        let name = header
            .split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(
            name != "bcc" && name != "x-evil",
            "injected header: {header}"
        );
    }
    let subjects: Vec<_> = headers
        .iter()
        .filter(|h| h.starts_with("Subject:"))
        .collect();
    assert_eq!(subjects.len(), 1, "{headers:?}");
}

backend_tests!(
    delivered_mail_is_listed_as_sent_and_counted_in_metrics,
    mail_waits_for_a_server_that_is_down_and_arrives_once_it_is_up,
    a_451_reply_is_retried_until_the_mail_is_delivered,
    a_550_reply_fails_the_mail_and_an_admin_can_send_it_again,
    a_slow_server_times_out_and_the_mail_is_retried,
    mail_enqueued_before_a_crash_is_delivered_once_after_restart,
    a_link_mail_that_expired_while_queued_is_never_sent,
    a_templates_dir_overrides_the_subject,
    no_input_can_add_a_header_to_a_mail,
);
