use serde_json::json;

use crate::backend_tests;
use crate::helpers::{ADMIN, Backend, TestApp, assert_problem};

async fn malformed_requests_get_problem_documents(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bad_json = app
        .client
        .post(app.url("/v1/auth/magic-link"))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_problem(bad_json, 400).await;

    let wrong_type = app
        .client
        .post(app.url("/v1/auth/magic-link"))
        .header("content-type", "text/plain")
        .body("admin@example.org")
        .send()
        .await
        .unwrap();
    assert_problem(wrong_type, 415).await;

    let huge = "x".repeat(200 * 1024);
    let too_large = app
        .post_json("/v1/auth/magic-link", json!({ "email": huge }))
        .await;
    assert_problem(too_large, 413).await;

    let bad_email = app
        .post_json("/v1/auth/magic-link", json!({ "email": "not an email" }))
        .await;
    let problem = assert_problem(bad_email, 422).await;
    assert_eq!(problem["code"], "invalid_email");
    assert!(problem["detail"].as_str().unwrap().contains("space"));

    let injected = app
        .post_json(
            "/v1/auth/magic-link",
            json!({ "email": "a@example.org\r\nBcc: eve@evil.test" }),
        )
        .await;
    assert_problem(injected, 422).await;

    let neither = app.post_json("/v1/auth/verify", json!({})).await;
    assert_eq!(assert_problem(neither, 400).await["code"], "invalid_body");

    assert_problem(
        app.client.get(app.url("/v1/nowhere")).send().await.unwrap(),
        404,
    )
    .await;
    assert!(app.mail_files_to(ADMIN).is_empty(), "nothing was mailed");
}

async fn admin_paths_refuse_members_and_strangers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    app.allowlist(&admin, "plain@example.org", &[]).await;
    let member = app.sign_in("plain@example.org").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for (path, body) in [
        (
            "/v1/admin/eligible-emails",
            json!({ "email": "x@example.org" }),
        ),
        (
            "/v1/admin/eligible-emails/bulk",
            json!({ "emails": ["x@example.org"] }),
        ),
    ] {
        assert_problem(app.post_json_as(path, &member, body.clone()).await, 403).await;
        assert_problem(app.post_json(path, body).await, 401).await;
    }
}

async fn bulk_allowlisting_reports_every_row_and_is_idempotent(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let body = json!({ "emails": ["a@example.org", "B@example.org", "b@example.org", "not-an-email", "c@example.org"], "batch_id": "spring-2026" });
    let report: serde_json::Value = app
        .post_json_as("/v1/admin/eligible-emails/bulk", &admin, body.clone())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["batch_id"], "spring-2026");
    assert_eq!(report["rows"], 5);
    assert_eq!(report["added"], 3);
    assert_eq!(report["duplicates"], 1);
    assert_eq!(report["invalid_total"], 1);
    assert_eq!(report["invalid"][0]["line"], 4);
    assert_eq!(report["invalid"][0]["value"], "not-an-email");
    let again: serde_json::Value = app
        .post_json_as("/v1/admin/eligible-emails/bulk", &admin, body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["added"], 0);
    assert_eq!(again["unchanged"], 3);
    let unknown_role = app
        .post_json_as(
            "/v1/admin/eligible-emails",
            &admin,
            json!({ "email": "d@example.org", "roles": ["wizard"] }),
        )
        .await;
    assert_eq!(
        assert_problem(unknown_role, 409).await["code"],
        "unknown_role"
    );
}

async fn health_spec_and_docs_are_served(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for path in ["/healthz", "/readyz", "/openapi.json", "/docs"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let spec = app.spec().await;
    for path in [
        "/v1/auth/magic-link",
        "/v1/auth/verify",
        "/v1/auth/refresh",
        "/v1/auth/logout",
        "/v1/me",
        "/v1/admin/eligible-emails/bulk",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} in spec");
    }
    assert!(spec["components"]["schemas"]["Problem"].is_object());
}

backend_tests!(
    malformed_requests_get_problem_documents,
    admin_paths_refuse_members_and_strangers,
    bulk_allowlisting_reports_every_row_and_is_idempotent,
    health_spec_and_docs_are_served,
);
