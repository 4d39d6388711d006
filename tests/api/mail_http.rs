//! HTTP mail providers against a local stand-in that checks the exact request
//! and answers as the provider would, errors included.

use gatehouse::store::MailStatus;
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::backend_tests;
use crate::helpers::{ADMIN, Backend, SentMail, TestApp};
use crate::mail_support::wait_for_status;

async fn provider_app(backend: Backend, provider: &str, server: &MockServer) -> TestApp {
    TestApp::spawn_with(
        backend,
        &[
            ("mail_transport", provider),
            ("mail_api_key", "test-key"),
            ("mail_api_url", &server.uri()),
            ("mail_from", "Club <club@example.org>"),
            ("mail_retry_base_ms", "50"),
        ],
    )
    .await
}

/// The JSON bodies the provider received, oldest first.
async fn received(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| r.body_json().expect("JSON body"))
        .collect()
}

/// Redeems the link in a provider's text body: the mail it sent is usable.
async fn sign_in_with(app: &TestApp, text: &str) {
    let mail = SentMail::parse(text.to_owned());
    let response = app
        .post_json("/v1/auth/verify", json!({ "token": mail.token }))
        .await;
    assert_eq!(response.status(), 200);
}

async fn postmark_gets_its_request_shape(backend: Backend) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/email"))
        .and(header("X-Postmark-Server-Token", "test-key"))
        .and(header("content-type", "application/json"))
        .and(body_partial_json(json!({
            "From": "Club <club@example.org>",
            "To": ADMIN,
            "MessageStream": "outbound",
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "ErrorCode": 0 })))
        .expect(1)
        .mount(&server)
        .await;
    let app = provider_app(backend, "postmark", &server).await;
    assert_eq!(app.request_link(ADMIN).await.status(), 202);
    wait_for_status(&app, ADMIN, MailStatus::Sent).await;

    let bodies = received(&server).await;
    let body = &bodies[0];
    assert_eq!(body["Subject"], "Your sign-in link for gatehouse");
    let text = body["TextBody"].as_str().unwrap();
    assert!(body["HtmlBody"].as_str().unwrap().contains("<a href="));
    sign_in_with(&app, text).await;
}

async fn resend_gets_its_request_shape(backend: Backend) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/emails"))
        .and(header("authorization", "Bearer test-key"))
        .and(body_partial_json(json!({
            "from": "Club <club@example.org>",
            "to": [ADMIN],
            "subject": "Your sign-in link for gatehouse",
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "id": "re_1" })))
        .expect(1)
        .mount(&server)
        .await;
    let app = provider_app(backend, "resend", &server).await;
    assert_eq!(app.request_link(ADMIN).await.status(), 202);
    let sent = wait_for_status(&app, ADMIN, MailStatus::Sent).await;

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests[0].headers["idempotency-key"], sent.id.as_str());
    let body: Value = requests[0].body_json().unwrap();
    assert!(body["html"].as_str().unwrap().contains("<a href="));
    sign_in_with(&app, body["text"].as_str().unwrap()).await;
}

async fn provider_5xx_and_429_are_retried_until_accepted(backend: Backend) {
    let server = MockServer::start().await;
    let endpoint = || Mock::given(method("POST")).and(path("/email"));
    endpoint()
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    endpoint()
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&server)
        .await;
    endpoint()
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "ErrorCode": 0 })))
        .with_priority(3)
        .mount(&server)
        .await;
    let app = provider_app(backend, "postmark", &server).await;
    assert_eq!(app.request_link(ADMIN).await.status(), 202);
    let sent = wait_for_status(&app, ADMIN, MailStatus::Sent).await;
    assert_eq!(sent.attempts, 3);
    assert_eq!(received(&server).await.len(), 3, "one request per attempt");
}

async fn provider_400_fails_the_mail_without_retrying(backend: Backend) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/emails"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "statusCode": 400,
            "message": "Invalid `to` field",
        })))
        .mount(&server)
        .await;
    let app = provider_app(backend, "resend", &server).await;
    assert_eq!(app.request_link(ADMIN).await.status(), 202);
    let failed = wait_for_status(&app, ADMIN, MailStatus::Failed).await;
    assert_eq!(failed.attempts, 1);
    let error = failed.last_error.unwrap();
    assert!(
        error.contains("400") && error.contains("Invalid `to` field"),
        "{error}"
    );
    assert_eq!(received(&server).await.len(), 1);
}

backend_tests!(
    postmark_gets_its_request_shape,
    resend_gets_its_request_shape,
    provider_5xx_and_429_are_retried_until_accepted,
    provider_400_fails_the_mail_without_retrying,
);
