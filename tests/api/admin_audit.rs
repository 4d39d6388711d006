use reqwest::Method;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, assert_problem};

/// Every admin operation in the spec: a non-admin gets 403, a stranger 401.
async fn every_admin_operation_refuses_non_admins(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.admin().await;
    let (_, member) = app.member(&admin, "plain@example.org", &[]).await;
    let spec = app.spec().await;
    let mut checked = 0;
    for (path, operations) in spec["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/admin") {
            continue;
        }
        let concrete = path
            .replace("{id}", &uuid::Uuid::now_v7().to_string())
            .replace("{email}", "x@example.org")
            .replace("{role}", "member")
            .replace("{name}", "board");
        for method in operations.as_object().unwrap().keys() {
            let method: Method = method.to_uppercase().parse().unwrap();
            for (token, status) in [(Some(member.as_str()), 403), (None, 401)] {
                let mut request = app
                    .client
                    .request(method.clone(), app.url(&concrete))
                    .json(&json!({}));
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), status, "{method} {path}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} admin operations in the spec");
}

async fn audit_rows(app: &TestApp, admin: &str, query: &str) -> Vec<Value> {
    TestApp::json_ok(
        app.get_as(&format!("/v1/admin/audit?limit=500&{query}"), admin)
            .await,
        200,
    )
    .await["items"]
        .as_array()
        .unwrap()
        .clone()
}

async fn every_admin_action_writes_one_audit_row(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (me, admin) = app.admin().await;
    let (id, _) = app.member(&admin, "m@example.org", &[]).await;
    let member = format!("/v1/admin/members/{id}");
    let key = TestApp::json_ok(
        app.post_json_as(
            &format!("{member}/api-keys"),
            &admin,
            json!({ "name": "k" }),
        )
        .await,
        201,
    )
    .await;
    let steps: Vec<(Method, String, Option<Value>, &str)> = vec![
        (
            Method::PATCH,
            member.clone(),
            Some(json!({ "status": "suspended" })),
            "member.status_changed",
        ),
        (
            Method::PUT,
            format!("{member}/roles"),
            Some(json!({ "roles": ["member", "active"] })),
            "member.roles_set",
        ),
        (
            Method::POST,
            format!("{member}/roles"),
            Some(json!({ "role": "sustainer" })),
            "member.role_granted",
        ),
        (
            Method::DELETE,
            format!("{member}/roles/sustainer"),
            None,
            "member.role_revoked",
        ),
        (
            Method::POST,
            format!("{member}/sessions/revoke"),
            None,
            "member.sessions_revoked",
        ),
        (
            Method::DELETE,
            format!("/v1/admin/api-keys/{}", key["id"].as_str().unwrap()),
            None,
            "apikey.revoked",
        ),
        (
            Method::POST,
            "/v1/admin/roles".into(),
            Some(json!({ "name": "board" })),
            "role.created",
        ),
        (
            Method::DELETE,
            "/v1/admin/roles/board".into(),
            None,
            "role.deleted",
        ),
        (
            Method::POST,
            "/v1/admin/members".into(),
            Some(json!({ "email": "o@example.org" })),
            "member.onboarded",
        ),
        (
            Method::DELETE,
            "/v1/admin/eligible-emails/o@example.org".into(),
            None,
            "allowlist.removed",
        ),
        (
            Method::POST,
            "/v1/admin/eligible-emails/bulk".into(),
            Some(json!({ "emails": ["z@example.org"], "batch_id": "b1" })),
            "allowlist.import",
        ),
        (
            Method::DELETE,
            "/v1/admin/batches/b1".into(),
            None,
            "batch.withdrawn",
        ),
        (Method::DELETE, member.clone(), None, "member.deleted"),
    ];
    for (method, path, body, action) in steps {
        let before = audit_rows(&app, &admin, &format!("action={action}"))
            .await
            .len();
        let response = app.send_as(method.clone(), &path, &admin, body).await;
        assert!(
            response.status().is_success(),
            "{method} {path}: {}",
            response.status()
        );
        let rows = audit_rows(&app, &admin, &format!("action={action}")).await;
        assert_eq!(rows.len(), before + 1, "{action}");
        assert_eq!(rows[0]["actor"], me.as_str(), "{action}");
        assert!(rows[0]["ip"].is_string());
    }
    let issued = audit_rows(
        &app,
        &admin,
        &format!("action=apikey.created&actor={me}&target={id}"),
    )
    .await;
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0]["details"]["key"], key["prefix"]);

    let newest = audit_rows(&app, &admin, "limit=2").await;
    let page = TestApp::json_ok(app.get_as("/v1/admin/audit?limit=2", &admin).await, 200).await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let next = TestApp::json_ok(
        app.get_as(&format!("/v1/admin/audit?limit=2&cursor={cursor}"), &admin)
            .await,
        200,
    )
    .await;
    assert_ne!(next["items"][0]["id"], newest[0]["id"]);
    assert!(next["items"][0]["id"].as_str() < newest[1]["id"].as_str());
    let future = audit_rows(&app, &admin, "since=2999-01-01T00:00:00Z").await;
    assert!(future.is_empty());
    assert_problem(
        app.get_as("/v1/admin/audit?since=yesterday", &admin).await,
        400,
    )
    .await;
}

async fn exports_never_hand_a_spreadsheet_a_formula(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.admin().await;
    let risky = ["=cmd@example.org", "+1@example.org", "-x@example.org"];
    app.post_json_as(
        "/v1/admin/eligible-emails/bulk",
        &admin,
        json!({ "emails": risky, "batch_id": "risky" }),
    )
    .await;
    app.post_json_as(
        "/v1/admin/members",
        &admin,
        json!({ "email": "-x@example.org" }),
    )
    .await;
    for path in [
        "/v1/admin/eligible-emails/export",
        "/v1/admin/members/export",
        "/v1/admin/audit/export",
    ] {
        let response = app.get_as(path, &admin).await;
        assert_eq!(response.status(), 200, "{path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/csv")
        );
        let body = response.text().await.unwrap();
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(body.as_bytes());
        let mut cells = 0;
        for record in reader.records() {
            for cell in record.unwrap().iter() {
                cells += 1;
                assert!(
                    !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                    "{path}: {cell:?}"
                );
            }
        }
        assert!(cells > 0, "{path} is empty");
        if !path.contains("audit") {
            assert!(body.contains("'-x@example.org"), "{path}");
        }
    }
    let allowlist = app
        .get_as("/v1/admin/eligible-emails/export", &admin)
        .await
        .text()
        .await
        .unwrap();
    assert!(allowlist.contains("'=cmd@example.org") && allowlist.contains("'+1@example.org"));
}

backend_tests!(
    every_admin_operation_refuses_non_admins,
    every_admin_action_writes_one_audit_row,
    exports_never_hand_a_spreadsheet_a_formula,
);
